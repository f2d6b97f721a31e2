"""Near-duplicate detection: recall and precision of duplicate pairs on a synthetic corpus with
injected near duplicates; exact duplicates always go; keep-one is deterministic."""

import itertools
import random

import numpy as np
import pytest

from t5x_lite.curation.dedup import MinHasher, clusters, exact_key, ngram_hashes, word_hashes
from t5x_lite.curation.text import exact_key_text, simplify

_letters = random.Random(42)
# Letters only: the dedup text form maps every digit to 0.
VOCAB = sorted(
  {
    "".join(_letters.choices("abcdefghijklmnopqrstuvwxyz", k=_letters.randint(2, 9)))
    for _ in range(3000)
  }
)


def edit(words, rate, rng):
  """Random word edits (substitute, insert, delete) at `rate` of the words."""
  out = list(words)
  for _ in range(max(1, round(rate * len(words)))):
    kind, at = rng.random(), rng.randrange(len(out))
    if kind < 0.6:
      out[at] = rng.choice(VOCAB)
    elif kind < 0.8:
      out.insert(at, rng.choice(VOCAB))
    else:
      del out[at]
  return out


def corpus(rate_low, rate_high, seed=0, originals=300, copies=150, exact=40):
  """(texts, true duplicate pairs): originals of 150-300 random words; near copies of some
  with random word edits at a rate in [rate_low, rate_high]; exact copies (case/space changed)."""
  rng = random.Random(seed)
  texts = [" ".join(rng.choices(VOCAB, k=rng.randint(150, 300))) for _ in range(originals)]
  pairs = set()
  for source in rng.sample(range(originals), copies):
    texts.append(" ".join(edit(texts[source].split(), rng.uniform(rate_low, rate_high), rng)))
    pairs.add((source, len(texts) - 1))
  for source in rng.sample(range(originals), exact):
    texts.append("  " + texts[source].upper() + "\n")
    pairs.add((source, len(texts) - 1))
  # copies of the same original are duplicates of each other too
  groups = {}
  for a, b in pairs:
    groups.setdefault(a, {a}).add(b)
  truth = {pair for group in groups.values() for pair in itertools.combinations(sorted(group), 2)}
  return texts, truth, len(texts) - exact


def run_dedup(texts, bands, rows):
  hasher = MinHasher(ngram=5, bands=bands, rows=rows, seed=1)
  signatures = np.stack(
    [hasher.signature(ngram_hashes(word_hashes(simplify(t)), 5)) for t in texts]
  )
  keys = np.array([exact_key(exact_key_text(t)) for t in texts], np.uint64)
  return clusters(keys, hasher.band_keys(signatures))


def pair_scores(representative, truth):
  groups = {}
  for doc, rep in enumerate(representative.tolist()):
    groups.setdefault(rep, []).append(doc)
  found = {pair for g in groups.values() for pair in itertools.combinations(sorted(g), 2)}
  recall = len(found & truth) / len(truth)
  precision = len(found & truth) / max(len(found), 1)
  return recall, precision


@pytest.mark.parametrize(
  "rates,bands,rows",
  [
    # datatrove's defaults (threshold ~0.72): word edits at 1-2% leave 5-gram Jaccard >= 0.8
    ((0.01, 0.02), 14, 8),
    # 5-10% word edits leave 5-gram Jaccard ~0.4-0.6: LSH tuned to threshold (1/20)^(1/2) ~ 0.22
    ((0.05, 0.10), 20, 2),
  ],
)
def test_near_duplicate_recall_and_precision(rates, bands, rows):
  texts, truth, first_exact = corpus(*rates)
  decision, representative, size = run_dedup(texts, bands, rows)
  recall, precision = pair_scores(representative, truth)
  assert recall >= 0.95, recall
  assert precision >= 0.99, precision
  # Exact duplicates (same text up to case and whitespace) are always removed as such.
  assert (decision[first_exact:] == 1).all()
  # The kept document of every cluster is its first in input order; originals stay.
  assert (representative <= np.arange(len(texts))).all()
  assert (decision[:300] == 0).all()


def test_default_lsh_at_5_to_10_percent_edits_is_what_the_s_curve_says():
  """Documents the trade-off: 14 x 8 misses most 5-10% edited copies (Jaccard ~0.4-0.6)."""
  texts, truth, _ = corpus(0.05, 0.10)
  _, representative, _ = run_dedup(texts, 14, 8)
  recall, precision = pair_scores(representative, truth)
  assert precision >= 0.99
  assert recall < 0.9  # the exact copies are found, most edited ones are not


def test_clusters_union_find_and_reference():
  # docs 0-1 share band 0; 1-2 share band 1 -> one cluster {0, 1, 2} through 1; 3 alone.
  exact = np.array([[1, 0], [2, 0], [3, 0], [4, 0], [1, 0]], np.uint64)
  bands = np.array([[10, 20], [10, 21], [11, 21], [12, 22], [13, 23]], np.uint64)
  decision, representative, size = clusters(exact, bands)
  assert decision.tolist() == [0, 2, 2, 0, 1]
  assert representative.tolist() == [0, 0, 0, 3, 0]
  assert size.tolist() == [4, 4, 4, 1, 4]
  # The same with a reference corpus of one document sharing a band with doc 3 (row 0).
  ref_exact = np.array([[9, 9]], np.uint64)
  ref_bands = np.array([[99, 22]], np.uint64)
  decision, representative, _ = clusters(
    np.concatenate([ref_exact, exact]), np.concatenate([ref_bands, bands]), reference=1
  )
  assert decision.tolist() == [0, 0, 2, 2, 2, 1]
  assert representative.tolist()[4] == 0  # doc 3 goes: the reference holds its duplicate


def test_keys_are_deterministic_across_processes():
  """Band keys are a pure function of text and settings (no Python hash seed involved)."""
  import subprocess
  import sys

  code = (
    "from t5x_lite.curation.dedup import *; from t5x_lite.curation.text import simplify; "
    "h = MinHasher(); t = 'the quick brown fox jumps over the lazy dog again and again'; "
    "print(h.band_keys(h.signature(ngram_hashes(word_hashes(simplify(t)), 5))[None]).tolist())"
  )
  outs = {
    subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      env={"PYTHONHASHSEED": s, **_env()},
    ).stdout
    for s in ("1", "2")
  }
  assert len(outs) == 1 and outs.pop().startswith("[[")


def _env():
  import os

  return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
