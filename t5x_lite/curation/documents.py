"""Readers: every input format becomes a stream of documents `{id, text, source, url, metadata}`.

Formats: plain text (one document per file, line or paragraph), JSON lines (plain, .gz, .zst),
Parquet, WARC (warcio; HTML main text by trafilatura, WET conversion records as they are) and
HTML files. Compression is detected from the file's magic bytes, not its name.

Ids are stable: the record's own id (`reader.id_field`, the WARC-Record-ID) when there is one,
else `<file name>:<record index>`, where the index counts every record of the file (bad ones
too), so an id never depends on which other records were readable.

Bad input never stops a run: an unreadable record or file is skipped and counted in `bad`
(a `collections.Counter` of reason -> count) under one of `BAD_INPUT_REASONS`. Memory stays
bounded: a line or document longer than `reader.max_document_bytes` is skipped without being
held in memory whole.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any, BinaryIO

FORMATS = ("auto", "text", "jsonl", "parquet", "warc", "html")
TEXT_MODES = ("file", "line", "paragraph")
BAD_INPUT_REASONS = (
  "empty_file",  # a file of 0 bytes (or only blank lines)
  "unreadable_file",  # the file cannot be opened or parsed at all
  "truncated_gzip",  # a .gz stream that ends early or is corrupt (records before it are kept)
  "truncated_zstd",  # the same for .zst
  "invalid_utf8",  # a record whose bytes are not UTF-8 (or JSON with lone surrogates)
  "invalid_json",  # a JSON line that does not parse, or is not an object
  "missing_text_field",  # a JSON/Parquet record without reader.text_field
  "text_not_a_string",  # the text field holds a number, list, null ...
  "document_too_long",  # over reader.max_document_bytes (e.g. a 50 MB single line)
  "empty_document",  # nothing but whitespace
  "no_main_text",  # an HTML page from which the extractor found no main text
  "warc_error",  # a WARC record that warcio cannot parse
  "processing_error",  # a document a stage failed on (logged with its id; a bug to report)
)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


def detect_format(path: str) -> str:
  """The reader for `path` from its name: jsonl | parquet | warc | html | text."""
  name = os.path.basename(path).lower()
  for suffix in (".gz", ".zst", ".zstd"):
    if name.endswith(suffix):
      name = name[: -len(suffix)]
  if name.endswith((".jsonl", ".json", ".ndjson")):
    return "jsonl"
  if name.endswith(".parquet"):
    return "parquet"
  if name.endswith((".warc", ".arc", ".wet")):
    return "warc"
  if name.endswith((".html", ".htm")):
    return "html"
  return "text"


def compression_of(path: str) -> str:
  """'gzip' | 'zstd' | '' from the first bytes of the file."""
  with open(path, "rb") as f:
    head = f.read(4)
  if head[:2] == _GZIP_MAGIC:
    return "gzip"
  if head == _ZSTD_MAGIC:
    return "zstd"
  return ""


def open_binary(path: str) -> tuple[BinaryIO, str]:
  """A buffered binary reader of the decompressed bytes of `path`, and its compression."""
  compression = compression_of(path)
  raw = open(path, "rb")
  if compression == "gzip":
    return gzip.GzipFile(fileobj=raw, mode="rb"), compression
  if compression == "zstd":
    return io.BufferedReader(_ZstdReader(raw), buffer_size=_CHUNK), compression
  return raw, compression


class _ZstdReader(io.RawIOBase):
  """Decompressed bytes of a (multi-frame) zstd file; EOFError when the last frame is cut
  short (zstandard's stream_reader returns a silent early EOF there)."""

  def __init__(self, raw: BinaryIO):
    import zstandard

    self._raw = raw
    self._new = zstandard.ZstdDecompressor().decompressobj
    self._obj = self._new()
    self._pending = b""
    self._done = False

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    while not self._pending and not self._done:
      chunk = self._raw.read(_CHUNK)
      if not chunk:
        self._done = True
        if not self._obj.eof and self._started:
          raise EOFError("zstd stream ends inside a frame")
        break
      self._started = True
      out = self._obj.decompress(chunk)
      while self._obj.eof and self._obj.unused_data:  # the next frame starts in this chunk
        rest = self._obj.unused_data
        self._obj = self._new()
        out += self._obj.decompress(rest)
      self._pending = out
    n = min(len(buffer), len(self._pending))
    buffer[:n] = self._pending[:n]
    self._pending = self._pending[n:]
    return n

  _started = False

  def close(self) -> None:
    self._raw.close()
    super().close()


def _stream_errors() -> tuple[type[BaseException], ...]:
  errors: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
  try:
    import zstandard

    errors.append(zstandard.ZstdError)
  except ImportError:
    pass
  return tuple(errors)


def bounded_lines(stream: BinaryIO, limit: int) -> Iterator[bytes | None]:
  """Lines of `stream` (without the newline); None for a line over `limit` bytes (skipped
  chunk by chunk, never held whole)."""
  while True:
    line = stream.readline(limit + 1)
    if not line:
      return
    if len(line) > limit and not line.endswith(b"\n"):
      while line and not line.endswith(b"\n"):
        line = stream.readline(_CHUNK)
      yield None
      continue
    yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


def _decode(data: bytes) -> str | None:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return None


def _jsonable(value: Any) -> Any:
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


class Reader:
  """Reads one input file into documents, counting what it must skip in `bad`.

  `config` is the `reader` section of the curation config (format, text_field, id_field,
  url_field, text_mode, max_document_bytes, html_include_tables).
  """

  def __init__(self, config: Any):
    self.format = config.format
    self.text_field = config.text_field
    self.id_field = config.id_field
    self.url_field = config.url_field
    self.text_mode = config.text_mode
    self.max_bytes = int(config.max_document_bytes)
    self.include_tables = bool(config.html_include_tables)

  def read(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    """Documents of `path` in file order; problems are counted in `bad` and skipped."""
    try:
      if os.path.getsize(path) == 0:
        bad["empty_file"] += 1
        return
      fmt = detect_format(path) if self.format == "auto" else self.format
      compression = compression_of(path)
    except OSError:
      bad["unreadable_file"] += 1
      return
    read = {
      "text": self._read_text,
      "jsonl": self._read_jsonl,
      "parquet": self._read_parquet,
      "warc": self._read_warc,
      "html": self._read_html,
    }[fmt]
    count, bad_before = 0, sum(bad.values())
    try:
      for doc in read(path, bad):
        count += 1
        yield doc
    except _stream_errors():
      bad["truncated_zstd" if compression == "zstd" else "truncated_gzip"] += 1
    except OSError:
      bad["unreadable_file"] += 1
    if count == 0 and sum(bad.values()) == bad_before:
      bad["empty_file"] += 1

  # -------------------------------------------------------------------------------------------

  def _document(
    self, bad: Counter, doc_id: str, text: Any, path: str, url=None, metadata=None
  ) -> dict[str, Any] | None:
    if not isinstance(text, str):
      bad["text_not_a_string"] += 1
      return None
    try:
      size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a JSON \ud800 escape
      bad["invalid_utf8"] += 1
      return None
    if size > self.max_bytes:
      bad["document_too_long"] += 1
      return None
    if not text.strip():
      bad["empty_document"] += 1
      return None
    return {
      "id": doc_id,
      "text": text,
      "source": path,
      "url": url,
      "metadata": metadata or {},
    }

  def _read_text(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    name = os.path.basename(path)
    stream, _ = open_binary(path)
    with stream:
      if self.text_mode == "file":
        data = stream.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
          bad["document_too_long"] += 1
          return
        text = _decode(data)
        if text is None:
          bad["invalid_utf8"] += 1
          return
        doc = self._document(bad, name, text, path)
        if doc:
          yield doc
        return
      if self.text_mode == "line":
        for k, line in enumerate(bounded_lines(stream, self.max_bytes)):
          if line is None:
            bad["document_too_long"] += 1
            continue
          if not line.strip():
            continue
          text = _decode(line)
          if text is None:
            bad["invalid_utf8"] += 1
            continue
          doc = self._document(bad, f"{name}:{k}", text, path)
          if doc:
            yield doc
        return
      # paragraphs: blank-line separated, each bounded by max_document_bytes
      k, lines, size, too_long = 0, [], 0, False
      for line in bounded_lines(stream, self.max_bytes):
        if line is None:
          too_long, lines = True, []
        elif line.strip():
          size += len(line) + 1
          if size > self.max_bytes:
            too_long, lines = True, []
          elif not too_long:
            lines.append(line)
        elif lines or too_long:  # a blank line ends a paragraph
          doc = self._paragraph(bad, name, k, lines, too_long, path)
          if doc:
            yield doc
          k, lines, size, too_long = k + 1, [], 0, False
      if lines or too_long:
        doc = self._paragraph(bad, name, k, lines, too_long, path)
        if doc:
          yield doc

  def _paragraph(self, bad, name, k, lines, too_long, path):
    if too_long:
      bad["document_too_long"] += 1
      return None
    text = _decode(b"\n".join(lines))
    if text is None:
      bad["invalid_utf8"] += 1
      return None
    return self._document(bad, f"{name}:{k}", text, path)

  def _read_jsonl(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    name = os.path.basename(path)
    stream, _ = open_binary(path)
    with stream:
      for k, line in enumerate(bounded_lines(stream, self.max_bytes)):
        if line is None:
          bad["document_too_long"] += 1
          continue
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except UnicodeDecodeError:
          bad["invalid_utf8"] += 1
          continue
        except ValueError:
          bad["invalid_json"] += 1
          continue
        doc = self._from_record(bad, record, f"{name}:{k}", path)
        if doc:
          yield doc

  def _from_record(self, bad: Counter, record: Any, default_id: str, path: str):
    if not isinstance(record, dict):
      bad["invalid_json"] += 1
      return None
    if self.text_field not in record:
      bad["missing_text_field"] += 1
      return None
    doc_id = record.get(self.id_field) if self.id_field else None
    doc_id = default_id if doc_id is None or doc_id == "" else str(doc_id)
    url = record.get(self.url_field) if self.url_field else None
    skip = {self.text_field, self.id_field, self.url_field}
    metadata = {k: _jsonable(v) for k, v in record.items() if k not in skip}
    return self._document(
      bad, doc_id, record[self.text_field], path, url=_jsonable(url), metadata=metadata
    )

  def _read_parquet(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    try:
      parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError):
      bad["unreadable_file"] += 1
      return
    k = 0
    try:
      for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
          doc = self._from_record(bad, record, f"{name}:{k}", path)
          k += 1
          if doc:
            yield doc
    except pa.ArrowException:
      bad["unreadable_file"] += 1

  def _extract_html(self, html: bytes, url: str | None) -> str | None:
    """Main text of a page (trafilatura); None when there is none or the page is unparsable."""
    import trafilatura

    try:
      return trafilatura.extract(
        html,
        url=url,
        include_comments=False,
        include_tables=self.include_tables,
        deduplicate=False,
        with_metadata=False,
      )
    except Exception:  # noqa: BLE001 - a malformed page is bad input, not a crash
      return None

  def _read_html(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    stream, _ = open_binary(path)
    with stream:
      data = stream.read(self.max_bytes + 1)
    if len(data) > self.max_bytes:
      bad["document_too_long"] += 1
      return
    text = self._extract_html(data, None)
    if not text:
      bad["no_main_text"] += 1
      return
    doc = self._document(bad, os.path.basename(path), text, path)
    if doc:
      yield doc

  def _read_warc(self, path: str, bad: Counter) -> Iterator[dict[str, Any]]:
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    name = os.path.basename(path)
    with open(path, "rb") as raw:
      records = iter(ArchiveIterator(raw))
      k = -1
      while True:
        try:
          record = next(records)
        except StopIteration:
          return
        except ArchiveLoadFailed:
          bad["warc_error"] += 1
          return
        k += 1
        kind = record.rec_type
        if kind not in ("response", "resource", "conversion"):
          continue
        headers = record.rec_headers
        content_type = (
          record.http_headers.get_header("Content-Type", "")
          if record.http_headers is not None
          else headers.get_header("Content-Type", "")
        ) or ""
        url = headers.get_header("WARC-Target-URI")
        doc_id = headers.get_header("WARC-Record-ID") or f"{name}:{k}"
        data = record.content_stream().read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
          bad["document_too_long"] += 1
          continue
        metadata = {"warc_date": headers.get_header("WARC-Date"), "content_type": content_type}
        if kind == "conversion" or content_type.startswith("text/plain"):
          text = _decode(data)
          if text is None:
            bad["invalid_utf8"] += 1
            continue
        elif "html" in content_type.lower():
          text = self._extract_html(data, url)
          if not text:
            bad["no_main_text"] += 1
            continue
        else:
          continue  # images, PDFs, redirects: not documents
        doc = self._document(bad, doc_id, text, path, url=url, metadata=metadata)
        if doc:
          yield doc
