"""Document sources: random-access corpora of `{'id': str, 'text': str}` documents with splits.

`source.split(name)` returns a grain `RandomAccessDataSource` (`__len__`, `__getitem__`), so the
pipeline can shuffle globally and let each host read only its own documents. A source without
splits of its own puts each document in 'train' or 'validation' by a stable hash of its id, so
the split never depends on file order, host count or Python's hash seed.

`RecordSource` reads fine-tuning records (JSONL or CSV with a header row) and keeps the fields a
task names; each document's text is the JSON of those fields, so records travel through the
ordinary pipeline (shuffling, sharding, checkpointable state) and `preprocessors.parse_records`
turns them back into columns. Its splits come from separate files (`validation=`) or the id hash.
"""

from __future__ import annotations

import abc
import csv
import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.keys import mix64

SPLITS = ("train", "validation")


def validation_mask(ids: Sequence[str], validation_fraction: float) -> np.ndarray:
  """[len(ids)] bool: True for documents in the validation split (stable hash of the id).

  With two or more documents both splits are non-empty: if the hash leaves one empty, the
  document with the smallest (or largest) hash moves over, so a small corpus still evaluates.
  A single document always trains (which split it fell in must not depend on its path).
  """
  crc = np.fromiter((zlib.crc32(i.encode("utf-8")) for i in ids), np.uint64, count=len(ids))
  unit = (mix64(crc) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
  mask = unit < validation_fraction
  if len(ids) >= 2 and not mask.any():
    mask[np.argmin(unit)] = True
  if len(ids) >= 2 and mask.all():
    mask[np.argmax(unit)] = False
  if len(ids) == 1:
    mask[0] = False
  return mask


class DocumentSplit:
  """The documents of one split: a grain RandomAccessDataSource over a parent's index list."""

  def __init__(self, read, indices: np.ndarray, name: str):
    self._read = read
    self._indices = indices
    self.name = name

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict[str, str]:
    return self._read(int(self._indices[index]))

  def __repr__(self) -> str:
    return f"<{self.name}: {len(self)} documents>"


class DocumentSource(abc.ABC):
  """A corpus of documents; subclasses say how to count, name and read them."""

  def __init__(self, validation_fraction: float = 0.05):
    if not 0.0 < validation_fraction < 1.0:
      raise ValueError(f"validation_fraction={validation_fraction}: expected in (0, 1)")
    self.validation_fraction = validation_fraction
    self._masks: np.ndarray | None = None

  @abc.abstractmethod
  def _ids(self) -> list[str]:
    """Stable ids of all documents (the hash split uses them)."""

  @abc.abstractmethod
  def _read(self, index: int) -> dict[str, str]:
    """Document `index` of the whole corpus."""

  @property
  def splits(self) -> tuple[str, ...]:
    return SPLITS

  def num_documents(self) -> int:
    """Documents in the whole corpus (all splits)."""
    return len(self._ids())

  def document(self, index: int) -> dict[str, str]:
    """Document `index` of the whole corpus, whatever its split."""
    return self._read(index)

  def split(self, name: str) -> DocumentSplit:
    """Random-access documents of split `name` ('train' | 'validation')."""
    if name not in self.splits:
      raise ValueError(f"{self!r} has no split {name!r}; splits: {', '.join(self.splits)}")
    if self._masks is None:
      ids = self._ids()
      if not ids:
        raise DataError(f"{self!r} has no documents (empty files or no matching records)")
      self._masks = validation_mask(ids, self.validation_fraction)
    indices = np.flatnonzero(self._masks if name == "validation" else ~self._masks)
    if len(indices) == 0:
      hint = ""
      if len(self._masks) == 1:
        hint = "; the corpus is one document, which trains: give more files, or split it by line or paragraph"
      raise DataError(
        f"{self!r}: split {name!r} is empty (validation_fraction={self.validation_fraction}){hint}"
      )
    return DocumentSplit(self._read, indices, f"{self!r}[{name}]")


class InMemorySource(DocumentSource):
  """Documents given as a list of texts (tests, examples); ids are 'doc<i>' unless given."""

  def __init__(
    self, texts: Sequence[str], ids: Sequence[str] | None = None, validation_fraction=0.05
  ):
    super().__init__(validation_fraction)
    self.texts = list(texts)
    self.ids = list(ids) if ids is not None else [f"doc{i}" for i in range(len(self.texts))]

  def _ids(self) -> list[str]:
    return self.ids

  def _read(self, index: int) -> dict[str, str]:
    return {"id": self.ids[index], "text": self.texts[index]}

  def __repr__(self) -> str:
    return f"InMemorySource({len(self.texts)} documents)"


_HEADING_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")


def split_into_sections(text: str) -> list[str]:
  """Splits reStructuredText-like text at headings (a line underlined by ===, ---, *** ...)."""
  lines = text.split("\n")
  starts = [0]
  for i in range(1, len(lines)):
    line = lines[i].strip()
    if _HEADING_UNDERLINE.match(line) and lines[i - 1].strip() and i - 1 > starts[-1]:
      starts.append(i - 1)
  starts.append(len(lines))
  sections = ["\n".join(lines[a:b]).strip() for a, b in zip(starts[:-1], starts[1:])]
  return [s for s in sections if s]


class PydocSource(DocumentSource):
  """The default corpus: Python's bundled documentation (`pydoc_data.topics`), no download.

  Each topic is split at its section headings; ids are `topic/section-number`.
  """

  def __init__(self, validation_fraction: float = 0.1):
    super().__init__(validation_fraction)
    from pydoc_data import topics

    self._docs = []
    for topic in sorted(topics.topics):
      for k, section in enumerate(split_into_sections(topics.topics[topic])):
        self._docs.append((f"{topic}/{k}", section))

  def _ids(self) -> list[str]:
    return [i for i, _ in self._docs]

  def _read(self, index: int) -> dict[str, str]:
    doc_id, text = self._docs[index]
    return {"id": doc_id, "text": text}

  def __repr__(self) -> str:
    return "PydocSource()"


def expand_patterns(patterns: str | Sequence[str]) -> list[str]:
  """Sorted files matching glob patterns; an error names a pattern that matches nothing."""
  if isinstance(patterns, str):
    patterns = [patterns]
  files = []
  for pattern in patterns:
    matched = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    matched = [m for m in matched if os.path.isfile(m)]
    if not matched:
      raise FileNotFoundError(f"no files match {pattern!r}")
    files.extend(matched)
  return files


def _open_bytes(path: str):
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"
  return gzip.open(path, "rb") if gzipped else open(path, "rb")


# What a truncated or corrupt gzip member raises while it is read.
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def read_lines(path: str):
  """(line number from 1, text) of a UTF-8 text file, gzip read transparently.

  A corpus error is a `DataError` naming the file and line: invalid UTF-8 (with the byte's
  offset in the line) or a truncated / corrupt gzip stream; never a codec traceback.
  """
  n = 0
  try:
    with _open_bytes(path) as f:
      for n, raw in enumerate(f, start=1):
        try:
          yield n, raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(
            f"{path}:{n}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
            "re-encode the file as UTF-8"
          ) from None
  except _GZIP_ERRORS as e:
    raise DataError(f"{path}: truncated or corrupt gzip after line {n} ({e})") from None


def read_text(path: str) -> str:
  """The whole UTF-8 text of a file (gzip read transparently); errors as `read_lines`."""
  return "".join(line for _, line in read_lines(path))


class TextFileSource(DocumentSource):
  """Plain text files (gzip read transparently) matched by glob patterns.

  `mode`: 'file' (one document per file, read on access), 'line' (one per non-empty line) or
  'paragraph' (split on blank lines). Ids are `path` or `path:k`.
  """

  MODES = ("file", "line", "paragraph")

  def __init__(self, patterns: str | Sequence[str], mode: str = "file", validation_fraction=0.05):
    super().__init__(validation_fraction)
    if mode not in self.MODES:
      raise ValueError(f"TextFileSource mode={mode!r}: expected one of {', '.join(self.MODES)}")
    self.patterns = patterns
    self.mode = mode
    # Empty files are no documents (a corpus of only empty files is an error at split()).
    self._files = [f for f in expand_patterns(patterns) if os.path.getsize(f) > 0]
    self._docs: list[tuple[str, str]] | None = None

  def _load(self) -> list[tuple[str, str]]:
    if self._docs is None:
      docs = []
      for path in self._files:
        text = read_text(path)
        if self.mode == "line":
          parts = [line for line in text.split("\n") if line.strip()]
        else:
          parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        docs.extend((f"{path}:{k}", part) for k, part in enumerate(parts))
      self._docs = docs
    return self._docs

  def _ids(self) -> list[str]:
    if self.mode == "file":
      return list(self._files)
    return [i for i, _ in self._load()]

  def _read(self, index: int) -> dict[str, str]:
    if self.mode == "file":
      path = self._files[index]
      return {"id": path, "text": read_text(path)}
    doc_id, text = self._load()[index]
    return {"id": doc_id, "text": text}

  def __repr__(self) -> str:
    return f"TextFileSource({self.patterns!r}, mode={self.mode!r})"


class JsonlSource(DocumentSource):
  """JSON-lines files (gzip read transparently): one document per line, text in `text_field`.

  Ids come from `id_field` when given, else `path:line`. The files are read once into memory;
  use ArrayRecord for corpora that do not fit.
  """

  def __init__(
    self,
    patterns: str | Sequence[str],
    text_field: str = "text",
    id_field: str | None = None,
    validation_fraction: float = 0.05,
  ):
    super().__init__(validation_fraction)
    self.patterns = patterns
    self.text_field = text_field
    self.id_field = id_field
    self._files = expand_patterns(patterns)
    self._docs: list[tuple[str, str]] | None = None

  def _load(self) -> list[tuple[str, str]]:
    if self._docs is None:
      docs = []
      for path in self._files:
        for line_number, line in read_lines(path):
          if not line.strip():
            continue
          where = f"{path}:{line_number}"
          record = _json_object(line, where)
          for field in (self.text_field, self.id_field):
            if field and field not in record:
              raise DataError(
                f"{where}: no field {field!r} (fields: {', '.join(map(str, record))})"
              )
          text = record[self.text_field]
          if not isinstance(text, str):
            raise DataError(
              f"{where}: field {self.text_field!r} is a {type(text).__name__}, expected a string"
            )
          doc_id = str(record[self.id_field]) if self.id_field else f"{path}:{line_number - 1}"
          docs.append((doc_id, text))
      self._docs = docs
    return self._docs

  def _ids(self) -> list[str]:
    return [i for i, _ in self._load()]

  def _read(self, index: int) -> dict[str, str]:
    doc_id, text = self._load()[index]
    return {"id": doc_id, "text": text}

  def __repr__(self) -> str:
    return f"JsonlSource({self.patterns!r}, text_field={self.text_field!r})"


def _json_object(line: str, where: str) -> dict[str, Any]:
  """The JSON object on one line; a `DataError` naming `where` for bad JSON or a non-object."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{where}: not valid JSON: {e}") from None
  if not isinstance(record, dict):
    raise DataError(f"{where}: expected a JSON object, found a {type(record).__name__}")
  return record


def _record_text(record: Any, text_field: str | None, where: str) -> str:
  if isinstance(record, dict):
    if text_field not in record:
      raise DataError(f"{where}: no field {text_field!r} (fields: {', '.join(map(str, record))})")
    record = record[text_field]
  if isinstance(record, np.ndarray):
    record = record.item()
  if isinstance(record, bytes):
    return record.decode("utf-8")
  return str(record)


class ArrayRecordSource(DocumentSource):
  """ArrayRecord files: truly random access, for corpora larger than memory.

  `record_format`: 'text' (each record is UTF-8 text) or 'json' (a JSON object with
  `text_field`). Ids are `file-name:record-index`.
  """

  def __init__(
    self,
    patterns: str | Sequence[str],
    record_format: str = "text",
    text_field: str = "text",
    validation_fraction: float = 0.05,
  ):
    super().__init__(validation_fraction)
    if record_format not in ("text", "json"):
      raise ValueError(f"ArrayRecordSource record_format={record_format!r}: expected text | json")
    self.patterns = patterns
    self.record_format = record_format
    self.text_field = text_field
    self._files = expand_patterns(patterns)
    self._source = None

  def _records(self):
    if self._source is None:
      import grain

      self._source = grain.sources.ArrayRecordDataSource(self._files)
    return self._source

  def _ids(self) -> list[str]:
    # Per-file record counts come from the ArrayRecord index: no record is read here.
    from array_record.python import array_record_module

    ids = []
    for path in self._files:
      reader = array_record_module.ArrayRecordReader(path)
      name = os.path.basename(path)
      ids.extend(f"{name}:{k}" for k in range(reader.num_records()))
      reader.close()
    return ids

  def _read(self, index: int) -> dict[str, str]:
    raw = self._records()[index]
    where = f"{self!r} record {index}"
    if self.record_format == "json":
      text = _record_text(json.loads(raw), self.text_field, where)
    else:
      text = raw.decode("utf-8")
    return {"id": str(index), "text": text}

  def __repr__(self) -> str:
    return f"ArrayRecordSource({self.patterns!r})"


class TfdsSource(DocumentSource):
  """A TFDS dataset read with `tfds.data_source` (ArrayRecord underneath; no TensorFlow needed).

  The dataset must already be prepared in `data_dir` (this never downloads at run time).
  `split_names` maps our splits to TFDS splits; a missing 'validation' is carved out of the
  TFDS train split by hashing record indices.
  """

  def __init__(
    self,
    name: str,
    data_dir: str | None = None,
    text_field: str = "text",
    split_names: dict[str, str] | None = None,
    validation_fraction: float = 0.01,
    data_source_fn=None,
  ):
    """`data_source_fn(name, split, data_dir)`: defaults to `tfds.data_source` (for tests)."""
    super().__init__(validation_fraction)
    self.name = name
    self.data_dir = data_dir
    self.text_field = text_field
    self.split_names = dict(split_names or {"train": "train", "validation": "validation"})
    self._data_source_fn = data_source_fn
    self._opened: dict[str, Any] = {}

  def _open(self, tfds_split: str):
    if tfds_split not in self._opened:
      fn = self._data_source_fn
      if fn is None:
        try:
          import tensorflow_datasets as tfds
        except ImportError as e:
          raise ImportError(
            f"TfdsSource({self.name!r}) needs tensorflow-datasets: pip install 't5x-lite[tfds]'"
          ) from e
        fn = lambda name, split, data_dir: tfds.data_source(name, split=split, data_dir=data_dir)  # noqa: E731
      try:
        self._opened[tfds_split] = fn(self.name, tfds_split, self.data_dir)
      except Exception as e:
        if type(e).__name__ != "DatasetNotFoundError":  # tfds.core.registered's (a ValueError)
          raise
        raise DataError(self.not_prepared_message()) from None
    return self._opened[tfds_split]

  def not_prepared_message(self) -> str:
    """One line: which dataset is missing where, and the command that prepares it."""
    data_dir = self.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    flag = f" --data_dir={self.data_dir}" if self.data_dir else ""
    return (
      f"TFDS dataset {self.name!r} is not prepared in {data_dir} (this never downloads): prepare "
      f"it with `tfds build {self.name}{flag}`, or point TFDS_DATA_DIR (or the source's "
      "data_dir) at a directory or gs:// bucket that holds it"
    )

  def _has_split(self, tfds_split: str) -> bool:
    try:
      self._open(tfds_split)
      return True
    except DataError:  # the dataset itself is missing: not a question of this split
      raise
    except (ValueError, KeyError):
      return False

  def _ids(self) -> list[str]:
    count = len(self._open(self.split_names["train"]))
    return [str(k) for k in range(count)]

  def _read(self, index: int) -> dict[str, str]:
    record = self._open(self.split_names["train"])[index]
    return {"id": str(index), "text": _record_text(record, self.text_field, repr(self))}

  def split(self, name: str) -> DocumentSplit:
    if name not in self.splits:
      raise ValueError(f"{self!r} has no split {name!r}; splits: {', '.join(self.splits)}")
    tfds_validation = self.split_names.get("validation")
    if not (tfds_validation and self._has_split(tfds_validation)):
      return super().split(name)  # carve validation out of train by hashing record indices
    tfds_split = self.split_names[name]
    records = self._open(tfds_split)

    def read(index: int) -> dict[str, str]:
      text = _record_text(records[index], self.text_field, repr(self))
      return {"id": f"{tfds_split}:{index}", "text": text}

    return DocumentSplit(read, np.arange(len(records)), f"{self!r}[{name}]")

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r})"


def read_records(path: str, fields: Sequence[str]) -> list[dict[str, Any]]:
  """The records of one .jsonl / .csv file (gzip allowed), keeping `fields`; errors name the line."""
  is_csv = path.removesuffix(".gz").endswith((".csv", ".tsv"))
  records = []
  lines = read_lines(path)
  if is_csv:
    delimiter = "\t" if path.removesuffix(".gz").endswith(".tsv") else ","
    texts = (line for _, line in lines)
    rows = enumerate(csv.DictReader(texts, delimiter=delimiter), start=2)  # line 1: the header
  else:
    rows = ((n, line) for n, line in lines if line.strip())
  for line, row in rows:
    if not is_csv:
      row = _json_object(row, f"{path}:{line}")
    missing = [name for name in fields if name not in row or row[name] is None]
    if missing:
      raise DataError(
        f"{path}:{line}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})"
      )
    records.append({name: row[name] for name in fields})
  return records


class RecordSource(DocumentSource):
  """JSONL/CSV records; a document is {'id', 'text': JSON of the kept fields}.

  `train`, `validation`: file patterns. Without `validation` files, a hash of each record's id
  (`id_field`, else file:line) sends `validation_fraction` of the records to validation.
  """

  def __init__(
    self,
    train: str | Sequence[str],
    validation: str | Sequence[str] | None = None,
    *,
    fields: Sequence[str],
    id_field: str | None = None,
    validation_fraction: float = 0.1,
  ):
    super().__init__(validation_fraction)
    self.train_patterns, self.validation_patterns = train, validation
    self.fields = tuple(fields) + ((id_field,) if id_field and id_field not in fields else ())
    self.id_field = id_field
    self._docs: dict[str, list[dict[str, str]]] | None = None

  def _load_files(self, patterns) -> list[dict[str, str]]:
    docs = []
    for path in expand_patterns(patterns):
      for n, record in enumerate(read_records(path, self.fields)):
        doc_id = str(record[self.id_field]) if self.id_field else f"{path}:{n}"
        docs.append({"id": doc_id, "text": json.dumps(record)})
    return docs

  def _load(self) -> dict[str, list[dict[str, str]]]:
    if self._docs is None:
      self._docs = {"train": self._load_files(self.train_patterns)}
      if self.validation_patterns:
        self._docs["validation"] = self._load_files(self.validation_patterns)
    return self._docs

  def _ids(self) -> list[str]:
    return [d["id"] for d in self._load()["train"]]

  def _read(self, index: int) -> dict[str, str]:
    return self._load()["train"][index]

  def split(self, name: str) -> DocumentSplit:
    if not self.validation_patterns:
      return super().split(name)
    if name not in self.splits:
      raise ValueError(f"{self!r} has no split {name!r}; splits: {', '.join(self.splits)}")
    docs = self._load()[name]
    if not docs:
      raise DataError(f"{self!r}: split {name!r} has no records")
    return DocumentSplit(docs.__getitem__, np.arange(len(docs)), f"{self!r}[{name}]")

  def __repr__(self) -> str:
    return f"RecordSource({self.train_patterns!r}, validation={self.validation_patterns!r})"
