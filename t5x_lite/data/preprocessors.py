"""Preprocessors: vectorized functions from a block of examples to a block of examples.

Every preprocessor has the same explicit signature, `fn(examples, context, **params) -> examples`;
a task binds its params with `functools.partial(fn, noise_density=0.15, ...)`. `examples` is a
dict of columns over the same rows: token features are `Ragged` (flat values + row lengths),
per-example scalars are 1-D arrays, and `KEY` holds each example's random key. Work is done
across all examples of a block at once with numpy, so Python never runs per token.

Randomness: an example's key is derived from (seed, task, global position of its document) by
the pipeline; a preprocessor that creates new examples derives their keys from their parents'
keys and their index, and draws all random numbers with `uniform(keys, ...)`, a counter-based
hash. No global random state, so the stream is a pure function of (config, position).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.vocabularies import Vocabulary

KEY = "_key"  # per-example random key column (uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------------------------------------
# Data structures.


@dataclasses.dataclass
class Ragged:
  """Variable-length rows stored flat: row i is values[offsets[i]:offsets[i + 1]]."""

  values: np.ndarray  # [total]
  lengths: np.ndarray  # [rows] int64

  @property
  def offsets(self) -> np.ndarray:  # [rows + 1]
    return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

  def __len__(self) -> int:
    return len(self.lengths)

  def row(self, i: int) -> np.ndarray:
    start = int(self.lengths[:i].sum())
    return self.values[start : start + int(self.lengths[i])]

  def rows(self) -> list[np.ndarray]:
    return np.split(self.values, np.cumsum(self.lengths)[:-1]) if len(self) else []

  @classmethod
  def from_rows(cls, rows: Sequence[Sequence[int]], dtype=np.int32) -> Ragged:
    lengths = np.array([len(r) for r in rows], np.int64)
    values = np.concatenate([np.asarray(r, dtype) for r in rows]) if rows else np.zeros(0, dtype)
    return cls(values.astype(dtype), lengths)

  @classmethod
  def from_dense(cls, array: np.ndarray) -> Ragged:  # [rows, length]
    rows, length = array.shape
    return cls(array.reshape(-1), np.full(rows, length, np.int64))

  def take(self, index: np.ndarray) -> Ragged:
    """Rows `index` (any order, repeats allowed)."""
    starts, lengths = self.offsets[:-1][index], self.lengths[index]
    return Ragged(self.values[gather_index(starts, lengths)], lengths)


def gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Flat indices of the ranges [starts[i], starts[i] + lengths[i]) concatenated."""
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, np.int64)
  row_offsets = np.cumsum(lengths) - lengths  # where each range begins in the output
  return np.repeat(starts - row_offsets, lengths) + np.arange(total)


def positions_in_rows(lengths: np.ndarray) -> np.ndarray:
  """[sum(lengths)] position of each value within its row."""
  total = int(lengths.sum())
  return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def concat_rows(parts: Sequence[Ragged]) -> Ragged:
  """Row-wise concatenation: row i = parts[0].row(i) + parts[1].row(i) + ..."""
  lengths = np.sum([p.lengths for p in parts], axis=0).astype(np.int64)
  out = np.empty(int(lengths.sum()), parts[0].values.dtype)
  row_starts = np.cumsum(lengths) - lengths
  before = np.zeros_like(lengths)
  for part in parts:
    out[np.repeat(row_starts + before, part.lengths) + positions_in_rows(part.lengths)] = (
      part.values
    )
    before = before + part.lengths
  return Ragged(out, lengths)


def constant_rows(value: int, rows: int, dtype=np.int32) -> Ragged:
  return Ragged(np.full(rows, value, dtype), np.ones(rows, np.int64))


def take_examples(examples: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
  """Rows `index` of every column."""
  out = {}
  for name, column in examples.items():
    if isinstance(column, Ragged):
      out[name] = column.take(index)
    elif isinstance(column, np.ndarray):
      out[name] = column[index]
    else:
      out[name] = [column[i] for i in index]
  return out


def num_examples(examples: Mapping[str, Any]) -> int:
  return len(examples[KEY])


@dataclasses.dataclass(frozen=True)
class Context:
  """What every preprocessor may read besides the examples."""

  vocabulary: Vocabulary
  feature_lengths: Mapping[str, int]  # task feature lengths, e.g. {'inputs': 512, 'targets': 114}
  output_features: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # name -> Feature

  def length(self, feature: str, preprocessor: str) -> int:
    if feature not in self.feature_lengths:
      raise DataError(
        f"{preprocessor} needs data.feature_lengths[{feature!r}]; found {dict(self.feature_lengths)}"
      )
    return int(self.feature_lengths[feature])


# ---------------------------------------------------------------------------------------------
# Counter-based randomness.


def mix64(values: np.ndarray | int) -> np.ndarray:
  """splitmix64 finalizer, vectorized over uint64 arrays (wrapping arithmetic is intended)."""
  values = np.asarray(values, dtype=np.uint64)
  z = values.reshape(-1) + _GOLDEN  # 1-D: numpy warns on scalar overflow, never on arrays
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return (z ^ (z >> np.uint64(31))).reshape(values.shape)


def derive_keys(keys: np.ndarray, index: np.ndarray | int) -> np.ndarray:
  """Keys of children `index` of examples with `keys` (broadcasting)."""
  return mix64(np.asarray(keys, np.uint64) ^ mix64(np.asarray(index, np.uint64) + _GOLDEN))


def uniform(keys: np.ndarray, width: int, salt: int) -> np.ndarray:
  """[len(keys), width] uniform floats in [0, 1): one stream per key (and per salt)."""
  base = mix64(np.asarray(keys, np.uint64) ^ mix64(np.uint64(salt)))
  counters = np.arange(width, dtype=np.uint64) * _GOLDEN
  bits = mix64(base[:, None] + counters[None, :])
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def uniform_per_token(keys: np.ndarray, lengths: np.ndarray, salt: int) -> np.ndarray:
  """[sum(lengths)] uniform floats, token j of row i keyed by (keys[i], j)."""
  base = mix64(np.asarray(keys, np.uint64) ^ mix64(np.uint64(salt)))
  counters = positions_in_rows(lengths).astype(np.uint64) * _GOLDEN
  bits = mix64(np.repeat(base, lengths) + counters)
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def numpy_generator(key: int | np.uint64) -> np.random.Generator:
  """A numpy Generator for per-example Python code (Philox keyed by the example key)."""
  return np.random.Generator(np.random.Philox(key=int(key)))


# ---------------------------------------------------------------------------------------------
# Basic preprocessors.


def tokenize(
  examples: dict[str, Any],
  context: Context,
  *,
  text_field: str = "text",
  output_field: str = "targets",
) -> dict[str, Any]:
  """Text -> token ids (no EOS) with the run's vocabulary."""
  values, lengths = context.vocabulary.encode_batch(examples[text_field])
  out = {k: v for k, v in examples.items() if k != text_field}
  out[output_field] = Ragged(values, lengths)
  return out


def append_eos(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
  """Appends EOS to each row of `fields` (default: the output features with add_eos=True)."""
  if fields is None:
    fields = [n for n, f in context.output_features.items() if f.add_eos and n in examples]
  out = dict(examples)
  for name in fields:
    column = examples[name]
    values = np.insert(column.values, column.offsets[1:], context.vocabulary.eos_id)
    out[name] = Ragged(values.astype(column.values.dtype), column.lengths + 1)
  return out


def trim(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
  """Cuts rows to the feature lengths (default: every Ragged column with a feature length)."""
  if fields is None:
    fields = [
      n for n in examples if isinstance(examples[n], Ragged) and n in context.feature_lengths
    ]
  out = dict(examples)
  for name in fields:
    column = examples[name]
    limit = context.length(name, "trim")
    keep = positions_in_rows(column.lengths) < limit
    out[name] = Ragged(column.values[keep], np.minimum(column.lengths, limit))
  return out


def rekey(
  examples: dict[str, Any], context: Context, *, mapping: Mapping[str, str]
) -> dict[str, Any]:
  """Renames columns: `mapping` is {new name: old name}; other columns are kept."""
  del context
  missing = [old for old in mapping.values() if old not in examples]
  if missing:
    raise DataError(f"rekey: no column {missing} (columns: {', '.join(examples)})")
  renamed = set(mapping.values())
  out = {k: v for k, v in examples.items() if k not in renamed}
  out.update({new: examples[old] for new, old in mapping.items()})
  return out


def filter_empty(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] = ("targets",)
) -> dict[str, Any]:
  """Drops examples where any of `fields` has no tokens."""
  del context
  keep = np.ones(num_examples(examples), bool)
  for name in fields:
    keep &= examples[name].lengths > 0
  return take_examples(examples, np.flatnonzero(keep))


def split_rows(examples: dict[str, Any], field: str, max_length: int) -> dict[str, Any]:
  """Cuts each row of `field` into pieces of at most `max_length` (one example per piece).

  Other Ragged columns are dropped; scalar columns are repeated; keys are derived per piece.
  """
  column = examples[field]
  pieces = -(-column.lengths // max_length)  # ceil
  parent = np.repeat(np.arange(len(column)), pieces)
  piece_index = positions_in_rows(pieces)
  lengths = np.minimum(column.lengths[parent] - piece_index * max_length, max_length)
  out = {
    name: value[parent]
    for name, value in examples.items()
    if isinstance(value, np.ndarray) and name != KEY
  }
  out[field] = Ragged(column.values, lengths.astype(np.int64))  # pieces are contiguous
  out[KEY] = derive_keys(examples[KEY][parent], piece_index)
  return out


# ---------------------------------------------------------------------------------------------
# Objectives.


def causal_lm(
  examples: dict[str, Any], context: Context, *, field: str = "targets"
) -> dict[str, Any]:
  """GPT: documents (+EOS) cut into pieces of at most the targets length; nothing is lost.

  The feature converter packs the pieces (segment ids, positions, loss masked across them).
  """
  out = split_rows(examples, field, context.length("targets", "causal_lm"))
  return {k: v for k, v in out.items() if k in (field, KEY)}


def span_corruption_lengths(
  inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
  """(raw tokens per example, targets length) so that inputs are exactly `inputs_length`.

  T5's `random_spans_helper`: 512 -> (568, 114); 128 -> (141, 29); 256 -> (284, 58).
  """

  def lengths(raw: int) -> tuple[int, int]:
    noise = int(round(raw * noise_density))
    spans = int(round(noise / mean_noise_span_length))
    return raw - noise + spans + 1, noise + spans + 1

  raw = inputs_length - 1
  while lengths(raw + 1)[0] <= inputs_length:
    raw += 1
  return raw, lengths(raw)[1]


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float):
  num_noise = int(round(length * noise_density))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = max(1, int(round(num_noise / mean_noise_span_length)))
  return num_noise, num_spans


def _random_segmentation(
  keys: np.ndarray, num_items: int, num_segments: int, salt: int
) -> np.ndarray:
  """[rows, num_segments] positive lengths summing to num_items, a uniform random partition."""
  rows = len(keys)
  if num_segments == 1:
    return np.full((rows, 1), num_items, np.int64)
  # Choose num_segments - 1 distinct cut points among the num_items - 1 gaps.
  scores = uniform(keys, num_items - 1, salt)
  cuts = np.sort(np.argpartition(scores, num_segments - 2, axis=1)[:, : num_segments - 1], axis=1)
  bounds = np.concatenate(
    [np.zeros((rows, 1), np.int64), cuts + 1, np.full((rows, 1), num_items, np.int64)], axis=1
  )
  return np.diff(bounds, axis=1)


def random_spans_noise_mask(
  keys: np.ndarray,
  length: int,
  noise_density: float = 0.15,
  mean_noise_span_length: float = 3.0,
) -> np.ndarray:
  """[len(keys), length] bool noise masks with T5's exact rules.

  num_noise = round(length * density) clipped to [1, length - 1]; num_spans =
  max(1, round(num_noise / mean_span)); noise and non-noise runs are uniform random partitions;
  runs alternate starting with non-noise, so the first token is never noise and the last always is.
  """
  num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
  noise_lengths = _random_segmentation(keys, num_noise, num_spans, salt=1)
  nonnoise_lengths = _random_segmentation(keys, length - num_noise, num_spans, salt=2)
  interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=2).reshape(
    len(keys), 2 * num_spans
  )
  run_ids = np.tile(np.arange(2 * num_spans), len(keys))
  return (np.repeat(run_ids, interleaved.reshape(-1)) % 2 == 1).reshape(len(keys), length)


def span_corruption(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "targets",
  noise_density: float = 0.15,
  mean_noise_span_length: float = 3.0,
) -> dict[str, Any]:
  """T5 span corruption; inputs exactly `feature_lengths['inputs']`, targets exactly its pair.

  Documents of the block are concatenated and cut into raw chunks of the length that gives
  full inputs (568 for 512), so no input needs padding; the tail shorter than a chunk is dropped.
  Noise span k becomes sentinel `vocab_size - 1 - k` in the inputs; targets are sentinel k then
  span k, for every span, then EOS.
  """
  vocabulary = context.vocabulary
  inputs_length = context.length("inputs", "span_corruption")
  raw_length, targets_length = span_corruption_lengths(
    inputs_length, noise_density, mean_noise_span_length
  )
  column = examples[field]
  rows = len(column.values) // raw_length
  tokens = column.values[: rows * raw_length].reshape(rows, raw_length)  # [rows, raw_length]
  # A chunk's key: the key of the document it starts in, and its index in the block.
  starts_in = np.searchsorted(np.cumsum(column.lengths), np.arange(rows) * raw_length, "right")
  keys = derive_keys(examples[KEY][np.minimum(starts_in, len(column) - 1)], np.arange(rows))
  noise = random_spans_noise_mask(keys, raw_length, noise_density, mean_noise_span_length)
  previous_noise = np.pad(noise[:, :-1], ((0, 0), (1, 0)))
  first_noise = noise & ~previous_noise
  first_nonnoise = ~noise & np.pad(noise[:, :-1], ((0, 0), (1, 0)), constant_values=True)
  span_index = np.cumsum(first_noise, axis=1) - 1  # noise span k (valid on noise tokens)
  run_index = np.cumsum(first_nonnoise, axis=1) - 1  # non-noise run k (valid on non-noise)
  sentinel_base = vocabulary.vocab_size - 1
  inputs = np.where(first_noise, sentinel_base - span_index, tokens)[~(noise & previous_noise)]
  targets = np.where(first_nonnoise, sentinel_base - run_index, tokens)[noise | first_nonnoise]
  eos = np.full((rows, 1), vocabulary.eos_id, np.int32)
  inputs = np.concatenate([inputs.reshape(rows, inputs_length - 1).astype(np.int32), eos], axis=1)
  targets = np.concatenate(
    [targets.reshape(rows, targets_length - 1).astype(np.int32), eos], axis=1
  )
  return {"inputs": Ragged.from_dense(inputs), "targets": Ragged.from_dense(targets), KEY: keys}


def prefix_lm(
  examples: dict[str, Any], context: Context, *, field: str = "targets"
) -> dict[str, Any]:
  """Documents cut into pieces, each split at a random point: inputs = prefix, targets = rest.

  Pieces hold at most inputs_length + targets_length - 1 tokens (one is left for the targets'
  EOS); the split point is uniform over the points where both parts fit their lengths.
  """
  inputs_length = context.length("inputs", "prefix_lm")
  targets_length = context.length("targets", "prefix_lm")
  pieces = split_rows(examples, field, inputs_length + targets_length - 1)
  pieces = take_examples(pieces, np.flatnonzero(pieces[field].lengths >= 2))
  column, keys = pieces[field], pieces[KEY]
  lengths = column.lengths
  low = np.maximum(1, lengths - (targets_length - 1))
  high = np.minimum(lengths - 1, inputs_length)  # inclusive
  split = low + np.floor(uniform(keys, 1, salt=3)[:, 0] * (high - low + 1)).astype(np.int64)
  starts = column.offsets[:-1]
  inputs = Ragged(column.values[gather_index(starts, split)], split)
  targets = Ragged(column.values[gather_index(starts + split, lengths - split)], lengths - split)
  return {"inputs": inputs, "targets": targets, KEY: keys}


def _special_mask(tokens: np.ndarray, vocabulary: Vocabulary) -> np.ndarray:
  return (tokens < vocabulary.first_ordinary_id) | (tokens >= vocabulary.base_vocab_size)


def mlm(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "inputs",
  mask_rate: float = 0.15,
  mask_token_rate: float = 0.8,
  random_token_rate: float = 0.1,
) -> dict[str, Any]:
  """BERT masking of `field` in place; 'targets' = the original token where selected, else 0.

  Each non-special token is selected with probability `mask_rate`; a selected token becomes
  [MASK] (80%), a random ordinary token (10%) or stays (10%). The loss covers every selected
  position (the encoder converter's loss weights are targets > 0).
  """
  vocabulary = context.vocabulary
  column = examples[field]
  tokens = column.values
  keys = examples[KEY]
  selected = ~_special_mask(tokens, vocabulary)
  selected &= uniform_per_token(keys, column.lengths, salt=4) < mask_rate
  action = uniform_per_token(keys, column.lengths, salt=5)
  first, last = vocabulary.first_ordinary_id, vocabulary.base_vocab_size
  random_tokens = first + np.floor(
    uniform_per_token(keys, column.lengths, salt=6) * (last - first)
  ).astype(tokens.dtype)
  masked = np.where(selected & (action < mask_token_rate), vocabulary.mask_id, tokens)
  use_random = (
    selected & (action >= mask_token_rate) & (action < mask_token_rate + random_token_rate)
  )
  masked = np.where(use_random, random_tokens, masked)
  out = dict(examples)
  out[field] = Ragged(masked.astype(tokens.dtype), column.lengths)
  out["targets"] = Ragged(np.where(selected, tokens, 0).astype(tokens.dtype), column.lengths)
  return out


def nsp_pairs(
  examples: dict[str, Any], context: Context, *, field: str = "targets"
) -> dict[str, Any]:
  """BERT next-sentence pairs: inputs = [CLS] A [SEP] B [SEP], token_type_ids, nsp_label.

  Documents are cut into segments of (inputs_length - 3) // 2 tokens; A is segment 2k of a
  document and B is, with probability 1/2, segment 2k + 1 (nsp_label 0) or else a random segment
  of another document in the block (nsp_label 1, the Hugging Face convention). A segment with no
  successor in its document is not used as A.
  """
  vocabulary = context.vocabulary
  inputs_length = context.length("inputs", "nsp_pairs")
  segment_length = (inputs_length - 3) // 2
  column = examples[field]
  segments = split_rows(examples, field, segment_length)
  document = np.repeat(np.arange(len(column)), -(-column.lengths // segment_length))
  count = len(document)
  index = np.arange(count)
  first_of_document = np.searchsorted(document, document, "left")
  end_of_document = np.searchsorted(document, document, "right")
  is_a = ((index - first_of_document) % 2 == 0) & (index + 1 < end_of_document)
  a = np.flatnonzero(is_a)
  keys = segments[KEY][a]
  coin = uniform(keys, 2, salt=7)
  others = count - (end_of_document[a] - first_of_document[a])  # segments of other documents
  random_label = (coin[:, 0] < 0.5) & (others > 0)
  # A uniform segment outside A's document: draw among the others, then skip A's document.
  pick = np.floor(coin[:, 1] * np.maximum(others, 1)).astype(np.int64)
  pick = np.where(
    pick >= first_of_document[a], pick + (end_of_document[a] - first_of_document[a]), pick
  )
  b = np.where(random_label, pick, a + 1)
  seg = segments[field]
  part_a, part_b = seg.take(a), seg.take(b)
  rows = len(a)
  cls_, sep = constant_rows(vocabulary.cls_id, rows), constant_rows(vocabulary.sep_id, rows)
  inputs = concat_rows([cls_, part_a, sep, part_b, sep])
  zeros = lambda n: Ragged(np.zeros(int(n.sum()), np.int32), n)  # noqa: E731
  ones = lambda n: Ragged(np.ones(int(n.sum()), np.int32), n)  # noqa: E731
  type_ids = concat_rows([zeros(part_a.lengths + 2), ones(part_b.lengths + 1)])
  return {
    "inputs": inputs,
    "token_type_ids": type_ids,
    "nsp_label": random_label.astype(np.int32),
    KEY: keys,
  }


_SENTENCE_ENDS: dict[int, np.ndarray] = {}


def sentence_end_ids(vocabulary: Vocabulary) -> np.ndarray:
  """Sorted ids whose text ends a sentence ('.', '!' or '?'), computed once per vocabulary."""
  cached = _SENTENCE_ENDS.get(id(vocabulary))
  if cached is None:
    ids = range(vocabulary.first_ordinary_id, vocabulary.base_vocab_size)
    ends = [i for i in ids if vocabulary.decode([i]).rstrip().endswith((".", "!", "?"))]
    cached = _SENTENCE_ENDS[id(vocabulary)] = np.array(ends, np.int64)
  return cached


def bart_denoise(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "targets",
  mask_ratio: float = 0.3,
  poisson_lambda: float = 3.0,
  permute_sentences: bool = True,
) -> dict[str, Any]:
  """BART: sentence permutation then text infilling; targets = the original piece.

  Pieces of at most targets_length - 1 tokens; spans with Poisson(λ) lengths are replaced by one
  [MASK] each (a length-0 span inserts one) until `mask_ratio` of the tokens are masked.
  Per-example Python (spans are sequential), with a generator keyed by the example key.
  """
  vocabulary = context.vocabulary
  inputs_length = context.length("inputs", "bart_denoise")
  targets_length = context.length("targets", "bart_denoise")
  pieces = split_rows(examples, field, min(targets_length, inputs_length) - 1)
  pieces = take_examples(pieces, np.flatnonzero(pieces[field].lengths > 0))
  ends = sentence_end_ids(vocabulary)
  inputs_rows, target_rows = [], []
  for tokens, key in zip(pieces[field].rows(), pieces[KEY]):
    rng = numpy_generator(key)
    target_rows.append(np.append(tokens, vocabulary.eos_id))
    if permute_sentences:
      boundaries = np.flatnonzero(np.isin(tokens[:-1], ends)) + 1
      sentences = np.split(tokens, boundaries)
      tokens = np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])
    n = len(tokens)
    span_of = np.full(n, -1)
    insert_before: list[int] = []
    to_mask, masked, span = int(round(n * mask_ratio)), 0, 0
    while masked < to_mask:
      length = int(rng.poisson(poisson_lambda))
      start = int(rng.integers(n))
      if length == 0:
        insert_before.append(start)
        masked += 1  # an insertion counts toward the budget, so the loop always ends
        continue
      fresh = span_of[start : start + length] < 0
      span_of[start : start + length] = span
      masked += int(fresh.sum())
      span += 1
    is_mask = span_of >= 0
    first = is_mask & np.concatenate([[True], span_of[1:] != span_of[:-1]])
    corrupted = np.where(first, vocabulary.mask_id, tokens)[~is_mask | first]
    if insert_before:
      # Insertion points shift by the tokens removed before them.
      kept_before = np.cumsum(np.concatenate([[0], (~is_mask | first)]))
      corrupted = np.insert(corrupted, kept_before[np.array(insert_before)], vocabulary.mask_id)
    inputs_rows.append(np.append(corrupted[: inputs_length - 1], vocabulary.eos_id))
  return {
    "inputs": Ragged.from_rows(inputs_rows),
    "targets": Ragged.from_rows(target_rows),
    KEY: pieces[KEY],
  }
