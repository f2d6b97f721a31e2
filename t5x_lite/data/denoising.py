"""BART's denoising (Lewis et al. 2019) as fairseq's `DenoisingDataset` builds it: text infilling
(Poisson span lengths, one mask token per masked region, zero-length spans insert one), sentence
permutation and random-token replacement. A preprocessor with the signature of
`preprocessors.py`; randomness from the example keys (`keys.py`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from t5x_lite.data.keys import numpy_generator
from t5x_lite.data.objectives import sentence_end_ids
from t5x_lite.data.preprocessors import Context, split_rows
from t5x_lite.data.ragged import KEY, Ragged, take_examples


def poisson_span_cdf(poisson_lambda: float) -> np.ndarray:
  """fairseq's span-length distribution: Poisson(λ) pmf over k = 0..127, cut where it is < 1e-7."""
  probabilities, power, factorial = [], 1.0, 1.0
  for k in range(128):
    probabilities.append(math.exp(-poisson_lambda) * power / factorial)
    power *= poisson_lambda
    factorial *= k + 1
    if probabilities[-1] < 1e-7:
      break
  cdf = np.cumsum(probabilities)
  return cdf / cdf[-1]


def _insertion_noise(tokens, ratio, rng, mask_id, random_ratio, random_low, random_high):
  """fairseq `add_insertion_noise`: ceil(len · ratio) masks / random tokens at random inner spots."""
  count = int(math.ceil(len(tokens) * ratio))
  if count == 0:
    return tokens
  total = len(tokens) + count
  noise_index = rng.permutation(total - 2)[:count] + 1
  result = np.empty(total, tokens.dtype)
  noise = np.zeros(total, bool)
  noise[noise_index] = True
  num_random = int(math.ceil(count * random_ratio))
  result[noise_index[num_random:]] = mask_id
  result[noise_index[:num_random]] = rng.integers(random_low, random_high, num_random)
  result[~noise] = tokens
  return result


def text_infilling(
  source: np.ndarray,
  rng: np.random.Generator,
  *,
  mask_id: int,
  mask_ratio: float,
  span_cdf: np.ndarray,
  random_ratio: float,
  random_low: int,
  random_high: int,
  has_bos: bool = False,
) -> np.ndarray:
  """fairseq `DenoisingDataset.add_whole_word_mask` (span-poisson, replace_length=1) on one row.

  `source` ends with EOS (never masked; also the first token when `has_bos`). The budget is
  ceil(maskable · ratio) tokens, drawn as Poisson span lengths trimmed to the budget; spans start
  at distinct random positions; each span's first token becomes [MASK] (a random token with
  probability `random_ratio`) and the rest of it is deleted, so overlapping spans merge into one
  [MASK]; zero-length spans become inserted [MASK]s.
  """
  source = source.copy()
  length = len(source)
  is_start = np.ones(length, bool)
  is_start[-1] = False
  if has_bos:
    is_start[0] = False
  budget = int(math.ceil(is_start.sum() * mask_ratio))
  if budget == 0:
    return source
  lengths = np.searchsorted(span_cdf, rng.random(budget), side="right")
  while lengths.sum() < budget:
    lengths = np.concatenate([lengths, np.searchsorted(span_cdf, rng.random(budget), "right")])
  cumulative = np.cumsum(lengths)
  last = int(np.searchsorted(cumulative, budget))  # first index where the budget is reached
  lengths = lengths[: last + 1].copy()
  lengths[last] = budget - (cumulative[last - 1] if last > 0 else 0)
  spans = lengths[lengths > 0]
  num_inserts = len(lengths) - len(spans)
  noise = dict(
    mask_id=mask_id, random_ratio=random_ratio, random_low=random_low, random_high=random_high
  )
  if len(spans) == 0:
    return _insertion_noise(source, num_inserts / length, rng, **noise)
  candidates = np.flatnonzero(is_start)
  starts = candidates[rng.permutation(len(candidates))[: len(spans)]]
  spans = spans[: len(starts)]
  use_random = rng.random(len(starts)) < random_ratio
  source[starts] = mask_id
  source[starts[use_random]] = rng.integers(random_low, random_high, int(use_random.sum()))
  # Each span deletes its tokens after the first, stopping before EOS.
  delete = np.zeros(length + 1, np.int64)
  ends = np.minimum(starts + spans, length - 1)  # exclusive
  np.add.at(delete, starts + 1, 1)
  np.add.at(delete, np.maximum(ends, starts + 1), -1)
  keep = np.cumsum(delete)[:length] <= 0
  source = source[keep]
  if num_inserts:
    source = _insertion_noise(source, num_inserts / len(source), rng, **noise)
  return source


def permute_sentence_order(tokens: np.ndarray, ends: np.ndarray, rng) -> np.ndarray:
  """fairseq `permute_sentences` (ratio 1): sentences (ended by a full stop) in random order."""
  boundaries = np.flatnonzero(np.isin(tokens[:-1], ends)) + 1
  sentences = np.split(tokens, boundaries)
  return np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])


def bart_denoise(
  examples: dict[str, Any],
  context: Context,
  *,
  field: str = "targets",
  mask_ratio: float = 0.3,
  poisson_lambda: float = 3.0,
  random_ratio: float = 0.1,
  permute_sentences: bool = True,
) -> dict[str, Any]:
  """BART pre-training noise as fairseq's `DenoisingDataset`; targets = the original piece + EOS.

  Pieces of at most min(inputs, targets) - 1 tokens; sentence permutation, then text infilling
  (`text_infilling`: Poisson(λ) spans over `mask_ratio` of the tokens, each span -> ONE [MASK],
  `random_ratio` of them a random token instead, zero-length spans insert a [MASK]).
  Per-example Python (spans are sequential), with a generator keyed by the example key.
  """
  vocabulary = context.vocabulary
  inputs_length = context.length("inputs", "bart_denoise")
  targets_length = context.length("targets", "bart_denoise")
  pieces = split_rows(examples, field, min(targets_length, inputs_length) - 1)
  pieces = take_examples(pieces, np.flatnonzero(pieces[field].lengths > 0))
  ends = sentence_end_ids(vocabulary)
  cdf = poisson_span_cdf(poisson_lambda)
  eos = vocabulary.eos_id
  inputs_rows, target_rows = [], []
  for tokens, key in zip(pieces[field].rows(), pieces[KEY]):
    rng = numpy_generator(key)
    target_rows.append(np.append(tokens, eos))
    if permute_sentences:
      tokens = permute_sentence_order(tokens, ends, rng)
    corrupted = text_infilling(
      np.append(tokens, eos),
      rng,
      mask_id=vocabulary.mask_id,
      mask_ratio=mask_ratio,
      span_cdf=cdf,
      random_ratio=random_ratio,
      random_low=vocabulary.first_ordinary_id,
      random_high=vocabulary.base_vocab_size,
    )
    if len(corrupted) > inputs_length:  # insertions can lengthen it; EOS stays last
      corrupted = np.append(corrupted[: inputs_length - 1], eos)
    inputs_rows.append(corrupted)
  return {
    "inputs": Ragged.from_rows(inputs_rows),
    "targets": Ragged.from_rows(target_rows),
    KEY: pieces[KEY],
  }
