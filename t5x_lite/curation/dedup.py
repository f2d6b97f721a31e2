"""Exact and near-duplicate detection: MinHash signatures -> LSH buckets -> clusters.

Two stages, so both the local runner and Beam can run them:
  1. per document (any worker, any order): `exact_key` (128-bit hash of the lower-cased,
     whitespace-collapsed text) and `band_keys` ([bands] uint64: MinHash over word 5-gram
     shingles of datatrove's simplified text, bands x rows permutations, each band's rows
     hashed to one key);
  2. global: documents sharing an exact key, or any band key, are linked; connected components
     (union-find) are the clusters; the document first in input order is kept.

Everything is numpy over all shingles of a document at once: words are hashed with xxh3
(`map` over the word list, no Python loop), shingles combine word hashes with a polynomial,
and the 112 permutations are `a * shingle + b` (uint64, wrapping) with a running minimum.
With 14 bands x 8 rows a pair of Jaccard similarity s shares a band with probability
1 - (1 - s^8)^14: 0.5 at s = 0.72, 0.92 at s = 0.8 (datatrove's defaults).
"""

from __future__ import annotations

import numpy as np
import xxhash
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

_P = np.uint64(0x100000001B3)
NO_SHINGLES = np.uint64(0)  # band key of a document too short to shingle: never linked
_CHUNK = 2048  # shingles per block of the [block, permutations] product


def mix64(values: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer, vectorised: uint64 -> well-mixed uint64."""
  z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def word_hashes(simplified: str) -> np.ndarray:
  """[words] uint64: xxh3-64 of each space-separated word of a simplified text."""
  if not simplified:
    return np.zeros(0, np.uint64)
  words = simplified.encode("utf-8").split(b" ")
  return np.fromiter(map(xxhash.xxh3_64_intdigest, words), np.uint64, len(words))


def ngram_hashes(words: np.ndarray, n: int) -> np.ndarray:
  """[max(words - n + 1, 0)] uint64 hashes of consecutive n-word windows."""
  count = len(words) - n + 1
  if count <= 0:
    return np.zeros(0, np.uint64)
  with np.errstate(over="ignore"):
    h = words[:count].copy()
    for k in range(1, n):
      h = h * _P + words[k : k + count]
  return mix64(h)


class MinHasher:
  """MinHash signatures and LSH band keys with `bands` x `rows` permutations."""

  def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1):
    self.ngram, self.bands, self.rows = ngram, bands, rows
    rng = np.random.RandomState(seed)
    num = bands * rows
    high = np.iinfo(np.int64).max
    self.a = (rng.randint(1, high, size=num, dtype=np.int64).astype(np.uint64)) | np.uint64(1)
    self.b = rng.randint(0, high, size=num, dtype=np.int64).astype(np.uint64)

  def signature(self, shingles: np.ndarray) -> np.ndarray:
    """[bands * rows] uint64 minimum of each permutation over the shingles."""
    sig = np.full(self.bands * self.rows, np.iinfo(np.uint64).max, np.uint64)
    with np.errstate(over="ignore"):
      for start in range(0, len(shingles), _CHUNK):
        block = shingles[start : start + _CHUNK, None]  # [block, 1]
        np.minimum(sig, (block * self.a + self.b).min(axis=0), out=sig)
    return sig

  def band_keys(self, signatures: np.ndarray) -> np.ndarray:
    """[docs, bands * rows] signatures -> [docs, bands] uint64 keys: xxh3 of each band's
    rows, seeded with the band number (equal rows in different bands never collide)."""
    width = self.rows * 8
    keys = np.empty((len(signatures), self.bands), np.uint64)
    for d, signature in enumerate(np.ascontiguousarray(signatures, np.uint64)):
      raw = signature.tobytes()
      keys[d] = [
        xxhash.xxh3_64_intdigest(raw[b * width : (b + 1) * width], seed=b)
        for b in range(self.bands)
      ]
    keys[keys == NO_SHINGLES] = 1  # 0 is reserved for "too short to shingle"
    return keys


def exact_key(text: str) -> tuple[int, int]:
  """128-bit xxh3 of the text, as two uint64 halves."""
  digest = xxhash.xxh3_128_intdigest(text.encode("utf-8"))
  return digest >> 64, digest & 0xFFFFFFFFFFFFFFFF


def clusters(
  exact: np.ndarray, bands: np.ndarray, reference: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cluster documents in input order; decide which to keep.

  exact: [docs, 2] uint64 exact keys; bands: [docs, bands] uint64 band keys (NO_SHINGLES for
  none). The first `reference` rows belong to an already curated corpus: they are never
  removed, and a new document in a cluster with one of them is.

  Returns (decision [docs] int8: 0 keep, 1 exact duplicate, 2 near duplicate;
  representative [docs] int64: the kept document of its cluster (itself if kept);
  cluster_size [docs] int64).
  """
  n = len(exact)
  decision = np.zeros(n, np.int8)
  rep_exact = np.arange(n)
  if n == 0:
    return decision, rep_exact, np.zeros(0, np.int64)
  # Exact: the first occurrence of each key represents it.
  _, first, inverse = np.unique(exact, axis=0, return_index=True, return_inverse=True)
  rep_exact = first[inverse.reshape(-1)]
  decision[rep_exact != np.arange(n)] = 1
  alive = np.flatnonzero(decision == 0)
  # Near: link alive documents sharing a band key (one edge to the first of each run).
  src, dst = [rep_exact], [np.arange(n)]
  for b in range(bands.shape[1]):
    keys = bands[alive, b]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = np.concatenate([[False], sorted_keys[1:] == sorted_keys[:-1]])
    same &= sorted_keys != NO_SHINGLES
    run_start = np.maximum.accumulate(np.where(same, 0, np.arange(len(keys))))
    src.append(alive[order[run_start[same]]])
    dst.append(alive[order[same]])
  rows, cols = np.concatenate(src), np.concatenate(dst)
  graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
  _, label = connected_components(graph, directed=False)
  # The kept document of a cluster: its first reference document, else its first document.
  root = np.full(label.max() + 1, n, np.int64)
  np.minimum.at(root, label, np.arange(n))
  representative = root[label]
  size = np.bincount(label)[label]
  near = (representative != np.arange(n)) & (decision == 0)
  decision[near] = 2
  if reference:
    decision[:reference] = 0
  return decision, representative, size
