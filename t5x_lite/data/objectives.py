"""Pre-training objectives: causal LM, span corruption, prefix LM, MLM (+ NSP,
SOP), RoBERTa's full sentences; BART's denoising is in `denoising.py`.

Preprocessors with the signature of `preprocessors.py` (`fn(examples, context, **params)`), kept
apart from the generic ones as SeqIO's `preprocessors.py` is from T5's. Their randomness comes
from the example keys (`keys.py`), never from global state. The reference facts they implement are
listed in DESIGN.md ("Objectives").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data import whole_word as whole_word_lib
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
  """(raw tokens per example, targets length) so that inputs fill `inputs_length`.

  T5's `random_spans_helper`: 512 -> (568, 114); 128 -> (141, 29); 256 -> (284, 58). With
  noise density 0.5 the targets would be one longer than the inputs, and T5 takes one raw token
  less so that they are not (512 -> (766, 512)); the inputs may then be one token short.
  """
  raw = inputs_length - 1
  while _corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
    raw += 1
  targets_length = _corrupted_lengths(raw, noise_density, mean_noise_span_length)[1]
  if noise_density == 0.5 and targets_length > inputs_length:
    raw, targets_length = raw - 1, targets_length - 1
  return raw, targets_length


def _corrupted_lengths(raw: int, noise_density: float, mean_noise_span_length: float):
  """(inputs length, targets length) of a raw chunk, EOS included (T5's helper arithmetic)."""
  noise = int(round(raw * noise_density))
  spans = int(round(noise / mean_noise_span_length))
  return raw - noise + spans + 1, noise + spans + 1


def check_span_corruption(
  context: Context, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> None:
  """Raises DataError when an example can have more noise spans than the vocabulary sentinels.

  Span k is replaced by `<extra_id_k>`; past `extra_ids` spans the sentinel ids would fall into
  the real vocabulary and the targets could not be reconstructed.
  """
  inputs_length = context.length("inputs", "span_corruption")
  raw, _ = span_corruption_lengths(inputs_length, noise_density, mean_noise_span_length)
  _, spans = _noise_counts(raw, noise_density, mean_noise_span_length)
  extra_ids = context.vocabulary.extra_ids
  if spans > extra_ids:
    raise DataError(
      f"span_corruption: feature_lengths['inputs']={inputs_length} (noise_density="
      f"{noise_density}, mean_noise_span_length={mean_noise_span_length}) gives {spans} noise "
      f"spans per example, but the vocabulary has only {extra_ids} sentinels (data.extra_ids); "
      f"raise data.extra_ids to >= {spans} or shorten the inputs"
    )


def check_preprocessors(preprocessors, context: Context) -> None:
  """Checks what can be known before any data is read (today: span corruption's sentinels)."""
  for fn in preprocessors:
    if getattr(fn, "func", fn) is span_corruption:
      check_span_corruption(context, **getattr(fn, "keywords", {}))


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
  """T5 span corruption; inputs fill `feature_lengths['inputs']`, targets exactly its pair.

  Documents of the block are concatenated and cut into raw chunks of the length that gives
  full inputs (568 for 512), so no input needs padding (at noise density 0.5, one token may be
  left, as in T5); the tail shorter than a chunk is dropped.
  Noise span k becomes sentinel `<extra_id_k>` (`vocabulary.sentinel_ids[k]`; seqio's
  `vocab_size - 1 - k` in our own vocabularies) in the inputs; targets are sentinel k then span k,
  for every span, then EOS.
  """
  vocabulary = context.vocabulary
  check_span_corruption(context, noise_density, mean_noise_span_length)
  raw_length, _ = span_corruption_lengths(
    context.length("inputs", "span_corruption"), noise_density, mean_noise_span_length
  )
  inputs_length, targets_length = _corrupted_lengths(
    raw_length, noise_density, mean_noise_span_length
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
  # <extra_id_k> of the tokenizer, wherever they are (check_span_corruption: enough of them).
  sentinels = vocabulary.sentinel_ids
  sentinel = lambda k: sentinels[np.clip(k, 0, len(sentinels) - 1)]  # noqa: E731
  inputs = np.where(first_noise, sentinel(span_index), tokens)[~(noise & previous_noise)]
  targets = np.where(first_nonnoise, sentinel(run_index), tokens)[noise | first_nonnoise]
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


def mlm(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "inputs",
  mask_rate: float = 0.15,
  mask_token_rate: float = 0.8,
  random_token_rate: float = 0.1,
  whole_word: bool = False,
) -> dict[str, Any]:
  """BERT masking of `field` in place; 'targets' = the original token where selected, else 0.

  Each non-special token is selected with probability `mask_rate`; a selected token becomes
  [MASK] (80%), a random ordinary token (10%) or stays (10%). The loss covers every selected
  position (the encoder converter's loss weights are targets > 0). Special tokens are the
  vocabulary's own ([CLS], <s>, ...) and random replacements are drawn from its ordinary ids.
  `whole_word`: each word (WordPiece `##`, byte-BPE `Ġ`, SentencePiece `▁`) is selected with
  probability `mask_rate` as a whole (data/whole_word.py), as BERT's whole-word masking.
  """
  vocabulary = context.vocabulary
  column = examples[field]
  tokens = column.values
  keys = examples[KEY]
  special = vocabulary.special_mask(tokens)
  draw = uniform_per_token(keys, column.lengths, salt=4)
  if whole_word:
    words = whole_word_lib.word_ids(tokens, column.lengths, vocabulary)
    selected = whole_word_lib.select_whole_words(words, draw, special, mask_rate)
  else:
    selected = ~special & (draw < mask_rate)
  action = uniform_per_token(keys, column.lengths, salt=5)
  ordinary = vocabulary.ordinary_ids
  pick = np.floor(uniform_per_token(keys, column.lengths, salt=6) * len(ordinary)).astype(np.int64)
  random_tokens = ordinary[np.minimum(pick, len(ordinary) - 1)].astype(tokens.dtype)
  masked = np.where(selected & (action < mask_token_rate), vocabulary.mask_id, tokens)
  use_random = (
    selected & (action >= mask_token_rate) & (action < mask_token_rate + random_token_rate)
  )
  masked = np.where(use_random, random_tokens, masked)
  out = dict(examples)
  out[field] = Ragged(masked.astype(tokens.dtype), column.lengths)
  out["targets"] = Ragged(np.where(selected, tokens, 0).astype(tokens.dtype), column.lengths)
  return out


_SENTENCE_ENDS: dict[int, np.ndarray] = {}


def sentence_end_ids(vocabulary: Vocabulary) -> np.ndarray:
  """Sorted ids whose text ends a sentence ('.', '!' or '?'), computed once per vocabulary."""
  cached = _SENTENCE_ENDS.get(id(vocabulary))
  if cached is None:
    ids = vocabulary.ordinary_ids.tolist()
    ends = [i for i in ids if vocabulary.decode([i]).rstrip().endswith((".", "!", "?"))]
    cached = _SENTENCE_ENDS[id(vocabulary)] = np.array(ends, np.int64)
  return cached


def split_sentences(tokens: np.ndarray, ends: np.ndarray, max_length: int) -> list[np.ndarray]:
  """Sentences of a token row: cut after each sentence-end token, over-long ones in pieces."""
  boundaries = np.flatnonzero(np.isin(tokens[:-1], ends)) + 1
  sentences = []
  for sentence in np.split(tokens, boundaries):
    sentences.extend(np.split(sentence, np.arange(max_length, len(sentence), max_length)))
  return [s for s in sentences if len(s)]


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng) -> None:
  """BERT's `truncate_seq_pair`: trim the longer segment, from a random end, until both fit."""
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del trunc[0]
    else:
      trunc.pop()


def nsp_pairs(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "targets",
  short_seq_prob: float = 0.1,
  random_next_prob: float = 0.5,
) -> dict[str, Any]:
  """BERT next-sentence pairs: inputs = [CLS] A [SEP] B [SEP], token_type_ids, nsp_label.

  BERT's `create_instances_from_document`, document by document of the block: sentences (cut
  after tokens ending in '.', '!' or '?'; a sentence longer than the pair budget is cut into
  pieces) are gathered into a chunk until it reaches the target length (the full
  inputs_length - 3, or with probability `short_seq_prob` a uniform length in [2, that]); A is the
  chunk's first `a_end` sentences (a random split point), B is the rest (nsp_label 0) or, with
  probability 1/2 or when the chunk is one sentence, sentences of another document of the block
  from a random start (nsp_label 1, the Hugging Face convention), the unused sentences of the
  chunk going back to the document. `truncate_seq_pair` trims the longer segment from a random
  end. Every document of at least one token yields at least one pair (when the block has another
  document for a random B).
  """
  vocabulary = context.vocabulary
  max_num_tokens = context.length("inputs", "nsp_pairs") - 3
  if max_num_tokens < 2:
    raise ValueError(f"nsp_pairs needs feature_lengths['inputs'] >= 5, found {max_num_tokens + 3}")
  ends = sentence_end_ids(vocabulary)
  column = examples[field]
  documents = [split_sentences(row, ends, max_num_tokens) for row in column.rows()]
  nonempty = np.array([d for d, sentences in enumerate(documents) if sentences], np.int64)
  cls_, sep = vocabulary.cls_id, vocabulary.sep_id
  inputs, types, labels, keys = [], [], [], []
  for d, sentences in enumerate(documents):
    if not sentences:
      continue
    rng = numpy_generator(examples[KEY][d])
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
      target_length = int(rng.integers(2, max_num_tokens + 1))
    chunk: list[np.ndarray] = []
    chunk_length = 0
    i = 0
    while i < len(sentences):
      chunk.append(sentences[i])
      chunk_length += len(sentences[i])
      if i == len(sentences) - 1 or chunk_length >= target_length:
        a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
        tokens_a = [t for s in chunk[:a_end] for t in s.tolist()]
        tokens_b: list[int] = []
        others = nonempty[nonempty != d]
        random_next = len(chunk) == 1 or rng.random() < random_next_prob
        if random_next and len(others):
          target_b_length = target_length - len(tokens_a)
          other = documents[int(others[rng.integers(len(others))])]
          for sentence in other[int(rng.integers(len(other))) :]:
            tokens_b.extend(sentence.tolist())
            if len(tokens_b) >= target_b_length:
              break
          i -= len(chunk) - a_end  # the unused sentences go back to the document
        elif len(chunk) >= 2:
          random_next = False
          tokens_b = [t for s in chunk[a_end:] for t in s.tolist()]
        if tokens_b:
          truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
          inputs.append([cls_, *tokens_a, sep, *tokens_b, sep])
          types.append([0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1))
          labels.append(int(random_next))
          keys.append(derive_keys(examples[KEY][d], len(keys)))
        chunk, chunk_length = [], 0
      i += 1
  return {
    "inputs": Ragged.from_rows(inputs),
    "token_type_ids": Ragged.from_rows(types),
    "nsp_label": np.array(labels, np.int32),
    KEY: np.array(keys, np.uint64).reshape(-1),
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
