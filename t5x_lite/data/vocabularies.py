"""Vocabularies: SentencePiece (trained on first use, cached) and bytes, with seqio-style sentinels.

Both reserve pad=0, eos=1, unk=2 and put `extra_ids` sentinel ids at the top of the vocabulary in
seqio's reverse order: `<extra_id_0>` is `vocab_size - 1`, `<extra_id_1>` is `vocab_size - 2`, ...
Span corruption uses them from the top down; BERT-style tasks use the three lowest extra ids as
[CLS], [SEP] and [MASK] (`cls_id`, `sep_id`, `mask_id`), so no vocabulary needs retraining for
them.
"""

from __future__ import annotations

import abc
import hashlib
import io
import itertools
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

from t5x_lite.data import DataError
from t5x_lite.data.sources import TextFileSource

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2

_EXTRA_ID = re.compile(r"<extra_id_(\d+)>")


class Vocabulary(abc.ABC):
  """Maps text to int ids and back; ids >= `base_vocab_size` are extra ids (sentinels)."""

  pad_id = PAD_ID
  eos_id = EOS_ID
  unk_id = UNK_ID

  def __init__(self, extra_ids: int):
    self.extra_ids = int(extra_ids)

  @property
  @abc.abstractmethod
  def base_vocab_size(self) -> int:
    """Ids below this are ordinary tokens (including pad/eos/unk)."""

  @property
  def vocab_size(self) -> int:
    """Total ids, extra ids included."""
    return self.base_vocab_size + self.extra_ids

  def sentinel_id(self, k: int) -> int:
    """Id of `<extra_id_k>` (seqio order: k = 0 is the highest id)."""
    if not 0 <= k < self.extra_ids:
      raise ValueError(f"<extra_id_{k}> does not exist: this vocabulary has {self.extra_ids}")
    return self.vocab_size - 1 - k

  def _lowest_extra_id(self, offset: int, name: str) -> int:
    if self.extra_ids < 3:
      raise ValueError(
        f"{name} needs at least 3 extra ids (BERT specials), this vocabulary has {self.extra_ids}"
      )
    return self.base_vocab_size + offset

  @property
  def cls_id(self) -> int:
    return self._lowest_extra_id(0, "[CLS]")

  @property
  def sep_id(self) -> int:
    return self._lowest_extra_id(1, "[SEP]")

  @property
  def mask_id(self) -> int:
    return self._lowest_extra_id(2, "[MASK]")

  @property
  def first_ordinary_id(self) -> int:
    """Ids in [first_ordinary_id, base_vocab_size) are text tokens (not pad/eos/unk)."""
    return 3

  @abc.abstractmethod
  def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

  @abc.abstractmethod
  def _decode_base(self, ids: list[int]) -> str: ...

  def encode(self, text: str) -> list[int]:
    return self._encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizes many texts at once -> (flat int32 ids [total], lengths int64 [len(texts)])."""
    pieces = self._encode_batch(list(texts))
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    flat = np.fromiter(itertools.chain.from_iterable(pieces), np.int32, int(lengths.sum()))
    return flat, lengths

  def decode(self, ids: Iterable[int], show_eos: bool = False) -> str:
    """Text of `ids`; padding dropped, sentinels shown as `<extra_id_k>`, EOS as `</s>`."""
    out, run = [], []

    def flush():
      if run:
        out.append(self._decode_base(run))
        run.clear()

    for i in (int(x) for x in ids):
      if i == self.pad_id:
        continue
      if i == self.eos_id:
        flush()
        if show_eos:
          out.append("</s>")
        continue
      if i >= self.base_vocab_size:
        flush()
        # Ids past the vocabulary come from a padded embedding (e.g. 32128 rows for 32100 ids).
        out.append(f"<extra_id_{self.vocab_size - 1 - i}>" if i < self.vocab_size else f"<id_{i}>")
        continue
      run.append(i)
    flush()
    return "".join(out)

  def special_token_names(self) -> dict[int, str]:
    """Ids with a display name for BERT-style tasks (`t5x-lite tasks show`)."""
    names = {self.pad_id: "<pad>", self.eos_id: "</s>", self.unk_id: "<unk>"}
    if self.extra_ids >= 3:
      names.update({self.cls_id: "[CLS]", self.sep_id: "[SEP]", self.mask_id: "[MASK]"})
    return names

  # --- Specials as sets, so that objectives need no fixed layout (issue 11) -------------------
  # The defaults describe this file's layout (pad/eos/unk below `first_ordinary_id`, sentinels
  # on top); a Hugging Face vocabulary answers them from its tokenizer.

  bos_id: int | None = None

  @property
  def sentinel_ids(self) -> np.ndarray:
    """Ids of `<extra_id_0>`, `<extra_id_1>`, ... [extra_ids] int64 (span corruption's)."""
    return self.vocab_size - 1 - np.arange(self.extra_ids, dtype=np.int64)

  @property
  def special_ids(self) -> np.ndarray:
    """Sorted ids that never stand for text: pad/eos/unk, [CLS]/[SEP]/[MASK], sentinels."""
    low = np.arange(self.first_ordinary_id, dtype=np.int64)
    return np.union1d(low, np.arange(self.base_vocab_size, self.vocab_size, dtype=np.int64))

  @property
  def ordinary_ids(self) -> np.ndarray:
    """Sorted ids of text tokens (MLM's random replacements are drawn from these)."""
    return np.setdiff1d(np.arange(self.vocab_size, dtype=np.int64), self.special_ids)

  def special_mask(self, tokens: np.ndarray) -> np.ndarray:
    """bool, shape of `tokens`: which are special ids (never masked or replaced by MLM)."""
    return np.isin(tokens, self.special_ids)

  def pieces(self) -> list[str]:
    """The tokenizer's string for every id (`▁`, `Ġ`, `##` markers kept) [vocab_size]."""
    raise NotImplementedError(f"{type(self).__name__} has no pieces")

  @property
  def word_boundary(self) -> tuple[str, str]:
    """How pieces mark words: ('starts', '▁') = a piece starting with '▁' starts a word;
    ('continues', '##') = one starting with '##' continues the previous word."""
    return ("starts", "▁")

  @property
  def fingerprint(self) -> str:
    """A short hash of everything that decides the ids (checkpoints store it)."""
    return f"{type(self).__name__}:{self.base_vocab_size}:{self.extra_ids}"


class ByteVocabulary(Vocabulary):
  """UTF-8 bytes: id = byte + 3; no training. 259 + extra_ids ids in all."""

  @property
  def base_vocab_size(self) -> int:
    return 259

  def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [list(np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + 3) for t in texts]

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = [t.encode("utf-8") for t in texts]
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    flat = np.frombuffer(b"".join(raw), np.uint8).astype(np.int32) + 3
    return flat, lengths

  def _decode_base(self, ids: list[int]) -> str:
    data = bytes(i - 3 for i in ids if 3 <= i < 259)
    return data.decode("utf-8", errors="replace")

  def pieces(self) -> list[str]:
    specials = ["<pad>", "</s>", "<unk>"]
    return (
      specials
      + [chr(b) for b in range(256)]
      + [f"<extra_id_{self.extra_ids - 1 - k}>" for k in range(self.extra_ids)]
    )

  @property
  def word_boundary(self) -> tuple[str, str]:
    return ("starts", " ")


class SentencePieceVocabulary(Vocabulary):
  """A SentencePiece model (pad=0, eos=1, unk=2, no bos) plus `extra_ids` sentinels on top."""

  def __init__(self, model: str | bytes, extra_ids: int = 100):
    """`model`: a path to a `.model` file or the serialized model proto."""
    super().__init__(extra_ids)
    import sentencepiece as spm

    where = "the serialized SentencePiece model"
    if isinstance(model, str):
      path = epath.Path(model)  # local or gs://
      if not path.exists():
        raise FileNotFoundError(f"SentencePiece model {model!r} does not exist")
      if path.is_dir():
        raise DataError(f"SentencePiece model {model} is a directory, expected a .model file")
      where = f"SentencePiece model {model}"
      model = path.read_bytes()
    self.model_proto = model
    try:
      self._processor = spm.SentencePieceProcessor(model_proto=model)
    except RuntimeError:  # the C++ parser's message names only its own source line
      raise DataError(
        f"{where} is not a valid SentencePiece model ({len(model)} bytes that do not parse): "
        "a corrupt or partial file, or another format"
      ) from None
    if self._processor.get_piece_size() == 0:
      raise DataError(
        f"{where} is not a valid SentencePiece model: it holds no pieces ({len(model)} bytes)"
      )
    found = (self._processor.pad_id(), self._processor.eos_id(), self._processor.unk_id())
    if found != (PAD_ID, EOS_ID, UNK_ID):
      raise DataError(
        f"{where} has (pad, eos, unk) ids {found}, expected (0, 1, 2) "
        "(train it with pad_id=0 eos_id=1 unk_id=2 bos_id=-1, or use `t5x-lite tokenizer train`)"
      )

  @property
  def base_vocab_size(self) -> int:
    return self._processor.get_piece_size()

  def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._processor.encode(list(texts))

  def _decode_base(self, ids: list[int]) -> str:
    return self._processor.decode(ids)

  def pieces(self) -> list[str]:
    base = [self._processor.id_to_piece(i) for i in range(self.base_vocab_size)]
    return base + [f"<extra_id_{self.extra_ids - 1 - k}>" for k in range(self.extra_ids)]

  @property
  def fingerprint(self) -> str:
    digest = hashlib.sha256(self.model_proto).hexdigest()[:16]
    return f"sentencepiece:{digest}:{self.extra_ids}"


def sentencepiece_training_error(
  message: str, sentences: int, vocab_size: int, extra_ids: int
) -> str:
  """SentencePiece's trainer error (`INTERNAL: src/trainer_interface.cc(744) [...] ...`) in our
  words: what is wrong with the input or the size, and what to change."""
  if sentences == 0:
    return "no text to train a vocabulary on: the input has no non-empty line"
  lines = f"{sentences} line{'s' if sentences != 1 else ''}"
  too_high = re.search(r"value <= (\d+)", message)
  if too_high:
    most = int(too_high.group(1))
    return (
      f"vocab_size={vocab_size} is too large for this text ({lines}): SentencePiece "
      f"finds at most {most} pieces in it, so use a vocab size of at most {most + extra_ids} "
      f"(with {extra_ids} extra ids) or train on more text"
    )
  detail = re.sub(r"^\w+: src/\S+ \[.*?\]\s*", "", message.strip().splitlines()[0])
  return f"SentencePiece could not train {vocab_size - extra_ids} pieces on {lines}: " + (
    detail or "the trainer gave no reason"
  )


def train_sentencepiece(
  texts: Iterable[str],
  vocab_size: int,
  extra_ids: int,
  model_path: str,
  max_sentences: int = 300_000,
  model_type: str = "unigram",
) -> SentencePieceVocabulary:
  """Trains a model of `vocab_size - extra_ids` pieces on `texts`; writes `model_path`.

  Texts are split into lines (SentencePiece's "sentences"); at most `max_sentences` are used so
  that first-use training takes seconds even on a large corpus.
  """
  import sentencepiece as spm

  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type={model_type!r}: expected 'unigram' or 'bpe'")
  base_size = vocab_size - extra_ids
  if base_size < 4:
    raise DataError(
      f"vocab_size={vocab_size} leaves {base_size} pieces after {extra_ids} extra ids"
    )

  count = 0  # sentences given to the trainer (its errors are explained with it)

  def sentences():
    nonlocal count
    for text in texts:
      for line in text.split("\n"):
        if line.strip():
          yield line
          count += 1
          if count >= max_sentences:
            return

  buffer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=sentences(),
      model_writer=buffer,
      vocab_size=base_size,
      model_type=model_type,
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      bos_id=-1,
      character_coverage=1.0,  # every character of the corpus (code needs "?", "{", ...)
      num_threads=2,
      minloglevel=2,  # no flood of trainer logs on stderr
    )
  except RuntimeError as e:
    raise DataError(sentencepiece_training_error(str(e), count, vocab_size, extra_ids)) from None
  path = epath.Path(model_path)  # local or gs:// (a workdir on a bucket)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f"{path.name}.tmp{os.getpid()}"
  temporary.write_bytes(buffer.getvalue())
  # Training is deterministic, so hosts that train at once write identical files; the rename
  # means a reader never sees a partial one.
  temporary.rename(path)
  return SentencePieceVocabulary(buffer.getvalue(), extra_ids)


def train_sentencepiece_from_files(
  input_patterns: str | Sequence[str],
  out: str,
  vocab_size: int = 32000,
  extra_ids: int = 100,
  model_type: str = "unigram",
) -> str:
  """`t5x-lite tokenizer train`: trains on text files (globs, gzip ok); writes `out`.model.

  Returns the path written. Use it with `config.data.vocab_path` (and the same extra_ids).
  """
  source = TextFileSource(input_patterns, mode="file")
  path = out if out.endswith(".model") else out + ".model"
  texts = (source.document(i)["text"] for i in range(source.num_documents()))
  train_sentencepiece(texts, vocab_size, extra_ids, path, model_type=model_type)
  return path


def cache_key(**settings) -> str:
  """A short stable hash of the settings a trained vocabulary depends on."""
  text = ",".join(f"{k}={settings[k]}" for k in sorted(settings))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def pretrained_vocab_path(workdir: str) -> str:
  """The SentencePiece model a run trained (workdir/vocab/*.model): fine-tuning from that run
  must set `data.vocab_path` to it, so that token ids mean the same thing."""
  directory = os.path.join(workdir, "vocab")
  models = (
    sorted(f for f in os.listdir(directory) if f.endswith(".model"))
    if os.path.isdir(directory)
    else []
  )
  if len(models) != 1:
    raise DataError(f"{directory}: expected one SentencePiece .model, found {models}")
  return os.path.join(directory, models[0])
