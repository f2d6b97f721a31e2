"""The grain data pipeline: per-host shard -> shuffle(seed) -> preprocess -> convert -> mix -> batch.

Per task, documents form a grain `MapDataset`: shuffled with a new permutation every epoch,
repeated forever, and sharded by stride over hosts (host h of n reads global positions
h, h + n, ...; within an epoch the hosts' documents are disjoint and cover the split). Documents
are grouped into blocks; a block is preprocessed and converted (packed) at once with numpy, a
pure function of (config, block index). The iterator's state is therefore tiny and exact:
per task the block index and the next row in it, plus the mixture counts. Restoring it
recomputes one block and continues the very same stream.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from etils import epath

from t5x_lite.data import DataError, objectives, registry
from t5x_lite.data.feature_converters import FeatureConverter
from t5x_lite.data.hf_vocabulary import has_tokenizer, load_vocabulary, load_vocabulary_path
from t5x_lite.data.keys import derive_keys, mix64
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY
from t5x_lite.data.tokenizer_training import train_vocabulary
from t5x_lite.data.vocabularies import (
  ByteVocabulary,
  SentencePieceVocabulary,
  Vocabulary,
  cache_key,
  train_sentencepiece,
)

ROWS_PER_BLOCK = 64  # a block holds about this many rows' worth of tokens (packing quality)
_CHARS_PER_TOKEN = 4  # rough, vocabulary-free estimate: block sizing must not need the vocabulary
VOCAB_TRAINING_CHARS = 20_000_000  # enough text for a good vocabulary, a few seconds to train
_MAX_EMPTY_BLOCKS = 100
_STATE_VERSION = 1

# The built-in registry files (`data/tasks/`), imported with the config's own task_modules.
BUILTIN_TASK_MODULES = ("t5x_lite.data.tasks.pydoc", "t5x_lite.data.tasks.tfds")

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Tasks: the one place that imports registry files.


def import_tasks(task_modules: Sequence[str] = ()) -> None:
  """Registers the built-in tasks and those of `task_modules` (module names or .py paths)."""
  registry.import_task_modules(BUILTIN_TASK_MODULES + tuple(task_modules))


def resolve_tasks(config, split: str = "train") -> tuple[list[registry.Task], list[float]]:
  """The tasks (and normalized rates) a config reads: `data.task`, or `data.eval_task` for the
  validation split when set; the built-in and `data.task_modules` registry files first."""
  data = config.data
  import_tasks(tuple(data.task_modules))
  name = data.eval_task if split == "validation" and data.eval_task else data.task
  return registry.tasks_of(name)


def get_task(config, name: str) -> registry.Task | registry.Mixture:
  """The registered Task or Mixture `name`, after importing the config's registry files."""
  import_tasks(tuple(config.data.task_modules))
  return registry.get_task_or_mixture(name)


# ---------------------------------------------------------------------------------------------
# Vocabulary.


def get_vocabulary(config, workdir: str, save: bool = True) -> Vocabulary:
  """The run's vocabulary: bytes, `data.vocab_path`, or SentencePiece trained on first use.

  A trained model is cached in `workdir/vocab/` (`vocabulary_cache_path`), keyed by the task(s)
  it was trained on and its size, so reruns and resumes reuse it (and get exactly the same ids).
  With `save=False` (`tasks show`, which must be read-only) a cached one is still read, but one
  that is not is trained in a temporary directory and nothing is written under `workdir`
  (training is deterministic: it is the vocabulary `train` would cache).
  """
  data = config.data
  if data.vocab == "byte":
    return ByteVocabulary(data.extra_ids)
  if data.vocab_path:
    return load_vocabulary_path(data.vocab_path, data.extra_ids)
  tasks, _ = resolve_tasks(config, "train")
  names = sorted(t.name for t in tasks)
  vocab_type = data.get("vocab_type", "unigram")
  path = vocabulary_cache_path(config, workdir)
  cached = has_tokenizer(path) if vocab_type != "unigram" else epath.Path(path).exists()
  if not cached and not save:
    with tempfile.TemporaryDirectory(prefix="t5x_lite_vocab_") as scratch:
      logger.info("Not cached in %s: training it in memory for this command (not saved)", workdir)
      return get_vocabulary(config, scratch)
  if vocab_type != "unigram":  # a tokenizer folder (tokenizers types, SentencePiece BPE)
    if "://" in str(workdir):
      raise DataError(
        f"data.vocab_type={vocab_type!r} is trained into a local workdir; for {workdir}, train it "
        "with `t5x-lite tokenizer train` and copy it where every host can read it (data.vocab_path)"
      )
    if cached:
      return load_vocabulary(path)
    logger.info("Training a %d-id %s vocabulary on %s -> %s", data.vocab_size, vocab_type, names,
                path)  # fmt: skip
    return train_vocabulary(
      _training_texts(tasks), vocab_type, data.vocab_size, data.extra_ids, path
    )
  if cached:
    return SentencePieceVocabulary(epath.Path(path).read_bytes(), data.extra_ids)
  logger.info("Training a %d-id SentencePiece vocabulary on %s -> %s", data.vocab_size, names, path)
  return train_sentencepiece(_training_texts(tasks), data.vocab_size, data.extra_ids, path)


def vocabulary_cache_path(config, workdir: str) -> str:
  """Where `get_vocabulary` caches the trained vocabulary of `config` under `workdir` (local or
  gs://): `vocab/spm_<size>_<key>.model`, or a `vocab/<type>_<size>_<key>` tokenizer folder."""
  data = config.data
  tasks, _ = resolve_tasks(config, "train")
  names = sorted(t.name for t in tasks)
  vocab_type = data.get("vocab_type", "unigram")
  if vocab_type != "unigram":
    key = cache_key(tasks=names, vocab_size=data.vocab_size, extra_ids=data.extra_ids,
                    type=vocab_type, v=1)  # fmt: skip
    return os.path.join(workdir, "vocab", f"{vocab_type}_{data.vocab_size}_{key}")
  key = cache_key(tasks=names, vocab_size=data.vocab_size, extra_ids=data.extra_ids, v=1)
  return str(epath.Path(workdir) / "vocab" / f"spm_{data.vocab_size}_{key}.model")


def _training_texts(tasks: Sequence[registry.Task]):
  """Train-split texts of the tasks, in a fixed order, up to VOCAB_TRAINING_CHARS in all."""
  budget = VOCAB_TRAINING_CHARS // len(tasks)
  for task in tasks:
    documents = task.source.split("train")
    used = 0
    for i in range(len(documents)):
      text = documents[i]["text"]
      yield text
      used += len(text)
      if used >= budget:
        break


# ---------------------------------------------------------------------------------------------
# One task's stream of converted rows.


def block_size_for(documents, row_length: int, sample: int = 64) -> int:
  """Documents per block so that a block fills about ROWS_PER_BLOCK rows of `row_length`.

  Packing is done per block, so a block needs many examples (short documents: large blocks),
  while restoring recomputes one block (long documents: small blocks). Estimated from the first
  `sample` documents of the split in stored order: deterministic, so a restore agrees.
  """
  count = min(sample, len(documents))
  chars = sum(len(documents[i]["text"]) for i in range(count)) / max(count, 1)
  tokens = max(chars / _CHARS_PER_TOKEN, 1.0)
  return int(np.clip(round(ROWS_PER_BLOCK * row_length / tokens), 8, 4096))


def _task_seed(seed: int, name: str) -> int:
  return int(mix64(np.uint64(seed) ^ np.uint64(zlib.crc32(name.encode()))) >> np.uint64(33))


class TaskStream:
  """Blocks of converted rows of one task on one host; `block(b)` is a pure function of b."""

  def __init__(
    self,
    task: registry.Task,
    split: str,
    vocabulary: Vocabulary,
    converter: FeatureConverter,
    feature_lengths: Mapping[str, int],
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    documents_per_block: int | None = None,
    repeat: bool = True,
  ):
    """`documents_per_block`: None sizes blocks from the corpus (`blocks_size_for`).
    `repeat=False`: one pass over the split in stored order (no shuffle), `num_blocks` blocks:
    evaluation sees each example exactly once."""
    if not 0 <= shard_index < shard_count:
      raise ValueError(f"shard_index={shard_index} is not in [0, shard_count={shard_count})")
    self.task = task
    self.converter = converter
    self.feature_lengths = dict(feature_lengths)
    self.shard_index, self.shard_count = shard_index, shard_count
    self.task_seed = _task_seed(seed, task.name)
    documents = task.source.split(split)
    self.num_documents = len(documents)
    self.documents_per_block = documents_per_block or block_size_for(
      documents, max(self.feature_lengths.values())
    )
    stream = grain.MapDataset.source(documents)
    if repeat:
      stream = stream.shuffle(seed=self.task_seed).repeat()
    self.documents = stream[shard_index::shard_count]  # this host's share, in stream order
    self._blocks = self.documents.batch(self.documents_per_block, batch_fn=list)
    self.num_blocks = None if repeat else len(self._blocks)
    feature_vocabulary = next(
      (f.vocabulary for f in task.output_features.values() if f.vocabulary is not None), None
    )
    self.context = Context(
      vocabulary=feature_vocabulary or vocabulary,
      feature_lengths=self.feature_lengths,
      output_features=task.output_features,
    )
    objectives.check_preprocessors(task.preprocessors, self.context)

  def examples(self, block_index: int, stages: bool = False):
    """The task features of block `block_index` (and, with stages=True, every stage's output)."""
    documents = self._blocks[block_index]
    local = block_index * self.documents_per_block + np.arange(len(documents))
    global_position = local * self.shard_count + self.shard_index
    examples: dict[str, Any] = {
      "text": [d["text"] for d in documents],
      "id": [d["id"] for d in documents],
      KEY: derive_keys(np.uint64(self.task_seed), global_position),
    }
    history = [("source", examples)]
    for fn in self.task.preprocessors:
      name = getattr(getattr(fn, "func", fn), "__name__", repr(fn))
      try:
        examples = fn(examples, self.context)
      except Exception as e:
        e.add_note(f"in Task {self.task.name!r}, preprocessor {name}, block {block_index}")
        raise
      history.append((name, examples))
    missing = [
      name for name, f in self.task.output_features.items() if f.required and name not in examples
    ]
    if missing:
      raise DataError(
        f"Task {self.task.name!r}: required output features {missing} are missing after the "
        f"preprocessors (found {[n for n in examples if n != KEY]})"
      )
    return history if stages else examples

  def block(self, block_index: int) -> dict[str, np.ndarray]:
    """Converted rows of block `block_index`: {model feature: [rows, length]}."""
    examples = self.examples(block_index)
    shuffle_key = int(derive_keys(np.uint64(self.task_seed), np.uint64(block_index) + (1 << 62)))
    return self.converter.convert(examples, self.feature_lengths, shuffle_key)


# ---------------------------------------------------------------------------------------------
# The iterator.


class DataIterator(grain.DatasetIterator):
  """Batches of model features, mixed over tasks by rate; checkpointable with get/set_state.

  Mixing is deterministic: each row goes to the task furthest below its share
  (rate · rows so far − rows taken), so proportions are exact and need no random state.
  """

  def __init__(
    self,
    streams: Sequence[TaskStream],
    rates: Sequence[float],
    batch_size: int,
    num_workers: int = 0,
  ):
    super().__init__()
    if batch_size <= 0:
      raise ValueError(f"batch_size={batch_size}: expected a positive int")
    self._streams = list(streams)
    self._rates = np.asarray(rates, np.float64)
    self.batch_size = batch_size
    self._blocks = [0] * len(streams)
    self._rows = [0] * len(streams)
    self._counts = [0] * len(streams)
    self._cache: dict[tuple[int, int], Any] = {}
    self._executor = concurrent.futures.ThreadPoolExecutor(num_workers) if num_workers > 0 else None
    self._lookahead = num_workers

  # -- blocks, with optional read-ahead in threads (blocks are pure, so order is unaffected).
  def _block(self, task: int, index: int) -> dict[str, np.ndarray]:
    key = (task, index)
    if key not in self._cache:
      stream = self._streams[task]
      self._cache[key] = (
        self._executor.submit(stream.block, index) if self._executor else stream.block(index)
      )
    if self._executor:
      for ahead in range(index + 1, index + 1 + self._lookahead):
        if (task, ahead) not in self._cache:
          self._cache[(task, ahead)] = self._executor.submit(self._streams[task].block, ahead)
    for old in [k for k in self._cache if k[0] == task and k[1] < index]:
      del self._cache[old]
    value = self._cache[key]
    return value.result() if isinstance(value, concurrent.futures.Future) else value

  def _take(self, task: int, count: int) -> dict[str, np.ndarray]:
    """The next `count` rows of one task's stream."""
    parts, empty_blocks = [], 0
    while count > 0:
      block = self._block(task, self._blocks[task])
      rows = len(next(iter(block.values())))
      start = self._rows[task]
      take = min(count, rows - start)
      if take > 0:
        parts.append({name: value[start : start + take] for name, value in block.items()})
        count -= take
        self._rows[task] += take
        empty_blocks = 0
      if self._rows[task] >= rows:
        self._blocks[task] += 1
        self._rows[task] = 0
        if rows == 0:
          empty_blocks += 1
          if empty_blocks >= _MAX_EMPTY_BLOCKS:
            raise DataError(
              f"Task {self._streams[task].task.name!r} produced no examples in "
              f"{_MAX_EMPTY_BLOCKS} blocks: its preprocessors drop everything"
            )
    if len(parts) == 1:
      return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

  def __next__(self) -> dict[str, np.ndarray]:
    if len(self._streams) == 1:
      self._counts[0] += self.batch_size
      return self._take(0, self.batch_size)
    choices = np.empty(self.batch_size, np.int64)
    counts = np.asarray(self._counts, np.float64)
    for slot in range(self.batch_size):
      total = counts.sum()
      task = int(np.argmax(self._rates * (total + 1) - counts))
      choices[slot] = task
      counts[task] += 1
    self._counts = [int(c) for c in counts]
    parts = {t: self._take(t, int((choices == t).sum())) for t in np.unique(choices).tolist()}
    names = next(iter(parts.values())).keys()
    batch = {}
    for name in names:
      first = parts[int(choices[0])][name]
      out = np.empty((self.batch_size,) + first.shape[1:], first.dtype)
      for task, rows in parts.items():
        out[choices == task] = rows[name]
      batch[name] = out
    return batch

  def get_state(self) -> dict[str, Any]:
    return {
      "version": _STATE_VERSION,
      "tasks": [s.task.name for s in self._streams],
      "documents_per_block": [s.documents_per_block for s in self._streams],
      "blocks": list(self._blocks),
      "rows": list(self._rows),
      "counts": list(self._counts),
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    names = [s.task.name for s in self._streams]
    if state.get("version") != _STATE_VERSION or list(state.get("tasks", [])) != names:
      raise ValueError(
        f"data iterator state is for tasks {state.get('tasks')} (version {state.get('version')}), "
        f"this pipeline reads {names} (version {_STATE_VERSION})"
      )
    sizes = [s.documents_per_block for s in self._streams]
    if list(state["documents_per_block"]) != sizes:
      raise ValueError(
        f"data iterator state has blocks of {state['documents_per_block']} documents, this "
        f"pipeline makes blocks of {sizes}: the corpus or feature lengths changed since the "
        "checkpoint, so the stream cannot continue exactly"
      )
    self._blocks = [int(b) for b in state["blocks"]]
    self._rows = [int(r) for r in state["rows"]]
    self._counts = [int(c) for c in state["counts"]]
    self._cache.clear()

  def close(self) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)
      self._executor = None
    super().close()


def make_streams(
  config,
  vocabulary: Vocabulary,
  feature_converter: FeatureConverter,
  split: str,
  shard_index: int = 0,
  shard_count: int = 1,
) -> tuple[list[TaskStream], list[float]]:
  """The task streams (and normalized rates) of config.data.task (or eval_task for validation)."""
  data = config.data
  tasks, rates = resolve_tasks(config, split)
  streams = [
    TaskStream(
      task,
      split,
      vocabulary,
      feature_converter,
      dict(data.feature_lengths),
      seed=int(data.seed),
      shard_index=shard_index,
      shard_count=shard_count,
    )
    for task in tasks
  ]
  return streams, rates


def make_iterator(
  config,
  vocabulary: Vocabulary,
  feature_converter: FeatureConverter,
  split: str = "train",
  batch_size: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
) -> DataIterator:
  """An endless iterator of per-host batches {model feature: [batch_size, length]}.

  Both splits repeat forever (a new shuffle each epoch); evaluation takes a fixed number of
  batches from a fresh iterator. `batch_size` defaults to config.train.batch_size // shard_count.
  """
  if batch_size is None:
    batch_size = config.train.batch_size // shard_count
  streams, rates = make_streams(
    config, vocabulary, feature_converter, split, shard_index, shard_count
  )
  return DataIterator(streams, rates, batch_size, num_workers=int(config.data.num_workers))


def validation_batches(
  config,
  vocabulary: Vocabulary,
  feature_converter: FeatureConverter,
  batch_size: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Every validation example of this shard exactly once, in batches of `batch_size` rows.

  The tasks of config.data.eval_task (or task) one after the other, each split in stored order
  (no shuffle, no repeat); the last batch is filled with all-zero rows (segment 0, weight 0),
  which no metric counts. Unlike `make_iterator`, the iterator ends.
  """
  tasks, _ = resolve_tasks(config, "validation")
  pending: list[dict[str, np.ndarray]] = []
  rows = 0
  for task in tasks:
    stream = TaskStream(
      task, "validation", vocabulary, feature_converter, dict(config.data.feature_lengths),
      seed=int(config.data.seed), shard_index=shard_index, shard_count=shard_count, repeat=False,
    )  # fmt: skip
    for index in range(stream.num_blocks):
      block = stream.block(index)
      pending.append(block)
      rows += len(next(iter(block.values())))
      while rows >= batch_size:
        merged = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
        yield {k: v[:batch_size] for k, v in merged.items()}
        pending = [{k: v[batch_size:] for k, v in merged.items()}]
        rows -= batch_size
  if rows:
    merged = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
    yield {
      k: np.concatenate([v, np.zeros((batch_size - rows,) + v.shape[1:], v.dtype)])
      for k, v in merged.items()
    }
