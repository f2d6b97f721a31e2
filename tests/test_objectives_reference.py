"""Objectives against their reference code: fairseq's DenoisingDataset (BART text infilling).

The reference below is fairseq's `add_whole_word_mask` (span-poisson, replace_length=1) and
`add_insertion_noise`, transcribed line by line with torch as it is written in
fairseq/data/denoising_dataset.py, so the statistics are compared with the definition itself.
"""

import math

import numpy as np
import pytest

from t5x_lite.data import denoising
from t5x_lite.data.keys import derive_keys
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.vocabularies import ByteVocabulary

torch = pytest.importorskip("torch")

VOCAB = ByteVocabulary(extra_ids=100)
BOS = 2  # fairseq rows are <s> tokens </s>; any id outside the text works for the reference


def fairseq_text_infilling(source, p, mask_idx, vocab_len, poisson_lambda, random_ratio):
  """fairseq DenoisingDataset.add_whole_word_mask + add_insertion_noise (no whole-word masks)."""
  lambda_to_the_k, e_to_the_minus_lambda, k_factorial, ps = 1, math.exp(-poisson_lambda), 1, []
  for k in range(0, 128):
    ps.append(e_to_the_minus_lambda * lambda_to_the_k / k_factorial)
    lambda_to_the_k *= poisson_lambda
    k_factorial *= k + 1
    if ps[-1] < 0.0000001:
      break
  mask_span_distribution = torch.distributions.Categorical(torch.FloatTensor(ps))
  is_word_start = torch.ones(source.size())
  is_word_start[0] = 0
  is_word_start[-1] = 0
  num_to_mask = int(math.ceil(is_word_start.float().sum() * p))
  lengths = mask_span_distribution.sample(sample_shape=(num_to_mask,))
  cum_length = torch.cumsum(lengths, 0)
  while cum_length[-1] < num_to_mask:
    lengths = torch.cat(
      [lengths, mask_span_distribution.sample(sample_shape=(num_to_mask,))], dim=0
    )
    cum_length = torch.cumsum(lengths, 0)
  i = 0
  while cum_length[i] < num_to_mask:
    i += 1
  lengths[i] = num_to_mask - (0 if i == 0 else cum_length[i - 1])
  num_to_mask = i + 1
  lengths = lengths[:num_to_mask]
  lengths = lengths[lengths > 0]
  num_inserts = num_to_mask - lengths.size(0)
  num_to_mask -= num_inserts
  word_starts = is_word_start.nonzero(as_tuple=False)
  indices = word_starts[torch.randperm(word_starts.size(0))[:num_to_mask]].squeeze(1)
  mask_random = torch.FloatTensor(num_to_mask).uniform_() < random_ratio
  to_keep = torch.ones(source.size(0), dtype=torch.bool)
  is_word_start[-1] = 255
  source[indices] = mask_idx
  source[indices[mask_random]] = torch.randint(1, vocab_len, size=(mask_random.sum(),))
  lengths -= 1
  while indices.size(0) > 0:
    lengths -= is_word_start[indices + 1].long()
    uncompleted = lengths >= 0
    indices = indices[uncompleted] + 1
    mask_random = mask_random[uncompleted]
    lengths = lengths[uncompleted]
    to_keep[indices] = 0
  source = source[to_keep]
  if num_inserts > 0:  # add_insertion_noise(source, num_inserts / source.size(0))
    num_tokens = len(source)
    n = int(math.ceil(num_tokens * (num_inserts / source.size(0))))
    noise_indices = torch.randperm(num_tokens + n - 2)[:n] + 1
    noise_mask = torch.zeros(size=(num_tokens + n,), dtype=torch.bool)
    noise_mask[noise_indices] = 1
    result = torch.LongTensor(n + len(source)).fill_(-1)
    num_random = int(math.ceil(n * random_ratio))
    result[noise_indices[num_random:]] = mask_idx
    result[noise_indices[:num_random]] = torch.randint(low=1, high=vocab_len, size=(num_random,))
    result[~noise_mask] = source
    source = result
  return source


def _statistics(rows, corrupted, mask_id):
  masks = np.mean([np.sum(c == mask_id) for c in corrupted])
  # Text tokens that survive, as a share of the row (BOS/EOS excluded on both sides).
  kept = np.mean(
    [
      (np.sum((c != mask_id) & (c != VOCAB.eos_id) & (c != BOS))) / len(r)
      for r, c in zip(rows, corrupted)
    ]
  )
  return masks, 1 - kept


@pytest.mark.parametrize("length, random_ratio", [(30, 0.0), (126, 0.0), (510, 0.0), (126, 0.1)])
def test_bart_text_infilling_matches_fairseq_statistics(length, random_ratio):
  torch.manual_seed(0)
  rng = np.random.default_rng(length)
  rows = [rng.integers(3, 259, length) for _ in range(4000 if length < 500 else 800)]
  mask = VOCAB.mask_id
  reference = [
    fairseq_text_infilling(
      torch.tensor(np.concatenate([[BOS], row, [VOCAB.eos_id]])), 0.3, mask, 259, 3.0, random_ratio
    ).numpy()
    for row in rows
  ]
  context = Context(VOCAB, {"inputs": length + 64, "targets": length + 1})
  examples = {
    "targets": Ragged.from_rows(rows),
    KEY: derive_keys(np.uint64(1), np.arange(len(rows))),
  }
  out = denoising.bart_denoise(
    examples, context, permute_sentences=False, random_ratio=random_ratio
  )
  ours = out["inputs"].rows()
  assert len(ours) == len(rows)
  ref_masks, ref_masked = _statistics(rows, reference, mask)
  our_masks, our_masked = _statistics(rows, ours, mask)
  # Each contiguous masked region is one [MASK] (a random token instead for `random_ratio` of
  # them): masks per row and the share of text tokens removed within 2% of fairseq's.
  assert our_masks == pytest.approx(ref_masks, rel=0.02)
  assert our_masked == pytest.approx(ref_masked, rel=0.02)
  if random_ratio == 0:
    assert 0.25 < our_masked < 0.31
