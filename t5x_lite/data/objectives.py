"""Pre-training objectives: causal LM, span corruption, prefix LM, MLM (+ NSP), BART denoising.

Preprocessors with the signature of `preprocessors.py` (`fn(examples, context, **params)`), kept
apart from the generic ones as SeqIO's `preprocessors.py` is from T5's. Their randomness comes
from the example keys (`keys.py`), never from global state. The reference facts they implement are
listed in DESIGN.md ("Objectives").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from t5x_lite.data.keys import derive_keys, numpy_generator, uniform, uniform_per_token
from t5x_lite.data.preprocessors import Context, split_rows
from t5x_lite.data.ragged import (
  KEY,
  Ragged,
  concat_rows,
  constant_rows,
  gather_index,
  take_examples,
)
from t5x_lite.data.vocabularies import Vocabulary


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


# ---------------------------------------------------------------------------------------------
# RoBERTa (issue 12).


def full_sentences(
  examples: dict[str, Any], context: Context, *, field: str = "targets"
) -> dict[str, Any]:
  """RoBERTa's FULL-SENTENCES inputs: [CLS] s1 s2 ... [SEP], whole sentences packed greedily.

  The block's documents are read in stream order as one sequence of sentences (a sentence ends
  after a token whose text ends in '.', '!' or '?', or at the end of its document); sentences
  are added to a row while it has room for inputs_length - 2 tokens, crossing document
  boundaries with one extra [SEP] between documents (Liu et al. 2019, section 4.2). A sentence
  longer than a row is cut. No NSP, one token type. Row keys derive from the block's first key,
  which is new every epoch, so `mlm` after this draws new masks every epoch (dynamic masking).
  """
  vocabulary = context.vocabulary
  room = context.length("inputs", "full_sentences") - 2
  column = examples[field]
  ends = sentence_end_ids(vocabulary)
  rows: list[np.ndarray] = []
  current: list[np.ndarray] = []
  used = 0

  def emit():
    nonlocal current, used
    if used:
      rows.append(np.concatenate(current))
    current, used = [], 0

  first_document = True
  for start, length in zip(column.offsets[:-1], column.lengths):
    tokens = column.values[start : start + length]
    if not len(tokens):
      continue
    cuts = np.flatnonzero(np.isin(tokens, ends)) + 1
    sentences = [s for s in np.split(tokens, cuts) if len(s)]
    if not first_document:  # the document separator leads the next document's first sentence
      sentences[0] = np.concatenate([[vocabulary.sep_id], sentences[0]]).astype(tokens.dtype)
    first_document = False
    for sentence in sentences:
      for piece in np.split(sentence, np.arange(room, len(sentence), room)):
        if used + len(piece) > room:
          emit()
        current.append(piece)
        used += len(piece)
  emit()
  count = len(rows)
  body = Ragged(
    np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32),
    np.array([len(r) for r in rows], np.int64),
  )
  inputs = concat_rows(
    [constant_rows(vocabulary.cls_id, count), body, constant_rows(vocabulary.sep_id, count)]
  )
  keys = examples[KEY]
  row_keys = derive_keys(keys[:1], np.arange(count)) if len(keys) else np.zeros(0, np.uint64)
  return {"inputs": inputs, KEY: row_keys}


# ---------------------------------------------------------------------------------------------
# ALBERT (issue 12).


def sop_pairs(
  examples: dict[str, Any], context: Context, *, field: str = "targets"
) -> dict[str, Any]:
  """ALBERT sentence-order pairs: inputs = [CLS] A [SEP] B [SEP], token_type_ids, nsp_label.

  Documents are cut into segments of (inputs_length - 3) // 2 tokens; each pair is segments
  2k and 2k + 1 of one document: in order (label 0), or, with probability 1/2, swapped (label
  1), as HF `AlbertForPreTraining`'s sentence_order_label. Both segments always come from the
  same document, so topic cannot give the answer (Lan et al. 2020, section 3.1). The labels are
  in `nsp_label`, read by the encoder's pooler head.
  """
  vocabulary = context.vocabulary
  segment_length = (context.length("inputs", "sop_pairs") - 3) // 2
  column = examples[field]
  segments = split_rows(examples, field, segment_length)
  document = np.repeat(np.arange(len(column)), -(-column.lengths // segment_length))
  index = np.arange(len(document))
  first_of_document = np.searchsorted(document, document, "left")
  end_of_document = np.searchsorted(document, document, "right")
  first = np.flatnonzero(((index - first_of_document) % 2 == 0) & (index + 1 < end_of_document))
  keys = segments[KEY][first]
  swapped = uniform(keys, 1, salt=8)[:, 0] < 0.5
  a = np.where(swapped, first + 1, first)
  b = np.where(swapped, first, first + 1)
  seg = segments[field]
  part_a, part_b = seg.take(a), seg.take(b)
  rows = len(first)
  cls_, sep = constant_rows(vocabulary.cls_id, rows), constant_rows(vocabulary.sep_id, rows)
  zeros = lambda n: Ragged(np.zeros(int(n.sum()), np.int32), n)  # noqa: E731
  ones = lambda n: Ragged(np.ones(int(n.sum()), np.int32), n)  # noqa: E731
  return {
    "inputs": concat_rows([cls_, part_a, sep, part_b, sep]),
    "token_type_ids": concat_rows([zeros(part_a.lengths + 2), ones(part_b.lengths + 1)]),
    "nsp_label": swapped.astype(np.int32),
    KEY: keys,
  }
