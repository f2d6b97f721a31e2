"""Counter-based randomness for preprocessors: keys derived from (seed, position), no global state.

An example's key is derived from (seed, task, global position of its document) by the pipeline;
a preprocessor that creates new examples derives their keys from their parents' keys and their
index, and draws all random numbers with `uniform(keys, ...)`, a counter-based hash. So the
stream is a pure function of (config, position).
"""

from __future__ import annotations

import numpy as np

from t5x_lite.data.ragged import positions_in_rows

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(values: np.ndarray | int) -> np.ndarray:
  """splitmix64 finalizer, vectorized over uint64 arrays (wrapping arithmetic is intended)."""
  values = np.asarray(values, dtype=np.uint64)
  z = values.reshape(-1) + GOLDEN  # 1-D: numpy warns on scalar overflow, never on arrays
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return (z ^ (z >> np.uint64(31))).reshape(values.shape)


def derive_keys(keys: np.ndarray, index: np.ndarray | int) -> np.ndarray:
  """Keys of children `index` of examples with `keys` (broadcasting)."""
  return mix64(np.asarray(keys, np.uint64) ^ mix64(np.asarray(index, np.uint64) + GOLDEN))


def uniform(keys: np.ndarray, width: int, salt: int) -> np.ndarray:
  """[len(keys), width] uniform floats in [0, 1): one stream per key (and per salt)."""
  base = mix64(np.asarray(keys, np.uint64) ^ mix64(np.uint64(salt)))
  counters = np.arange(width, dtype=np.uint64) * GOLDEN
  bits = mix64(base[:, None] + counters[None, :])
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def uniform_per_token(keys: np.ndarray, lengths: np.ndarray, salt: int) -> np.ndarray:
  """[sum(lengths)] uniform floats, token j of row i keyed by (keys[i], j)."""
  base = mix64(np.asarray(keys, np.uint64) ^ mix64(np.uint64(salt)))
  counters = positions_in_rows(lengths).astype(np.uint64) * GOLDEN
  bits = mix64(np.repeat(base, lengths) + counters)
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def numpy_generator(key: int | np.uint64) -> np.random.Generator:
  """A numpy Generator for per-example Python code (Philox keyed by the example key)."""
  return np.random.Generator(np.random.Philox(key=int(key)))
