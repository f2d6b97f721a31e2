"""The global batch of one host, assembled from its logical data shards (was training/loop.py).

Logical shards make the global stream independent of the number of processes: shard k of
`num_shards` is one pipeline iterator, and process p reads the contiguous shards
[p·K/P, (p+1)·K/P). A run saved by 2 processes resumes on 1 with the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from t5x_lite.data import DataError, pipeline
from t5x_lite.data.feature_converters import FeatureConverter
from t5x_lite.data.vocabularies import Vocabulary


class HostBatchStream:
  """The global batch, assembled from this process's logical data shards.

  Shard k of `num_shards` is one pipeline iterator (`shard_index=k`) giving
  batch_size / num_shards rows; process p reads the contiguous shards
  [p·K/P, (p+1)·K/P), so the global batch is shards 0..K-1 in order on any process count.
  """

  def __init__(
    self,
    config,
    vocabulary: Vocabulary,
    feature_converter: FeatureConverter,
    *,
    split: str,
    num_shards: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    """`process_index` / `process_count`: this host among all (jax.process_index/count())."""
    if num_shards % process_count:
      raise DataError(
        f"data.num_shards={num_shards} is not divisible by the {process_count} "
        "processes: resume with a process count that divides it"
      )
    if config.train.batch_size % num_shards:
      raise DataError(
        f"train.batch_size={config.train.batch_size} is not divisible by "
        f"data.num_shards={num_shards}"
      )
    per_process = num_shards // process_count
    self.split = split
    self.num_shards = num_shards
    self.shards = tuple(range(process_index * per_process, (process_index + 1) * per_process))
    rows = config.train.batch_size // num_shards
    self.iterators = {
      k: pipeline.make_iterator(
        config,
        vocabulary,
        feature_converter,
        split=split,
        batch_size=rows,
        shard_index=k,
        shard_count=num_shards,
      )
      for k in self.shards
    }

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(self.iterators[k]) for k in self.shards]
    if len(parts) == 1:
      return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

  def __iter__(self):
    return self

  def get_state(self) -> dict[int, Any]:
    return {k: it.get_state() for k, it in self.iterators.items()}

  def set_state(self, states: dict[int, Any]) -> None:
    for k, state in states.items():
      self.iterators[int(k)].set_state(state)


def host_validation_batches(
  config,
  vocabulary: Vocabulary,
  feature_converter: FeatureConverter,
  *,
  num_shards: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's part of each global validation batch, every example exactly once.

  The host's logical shards as in `HostBatchStream`, each a `pipeline.validation_batches` pass;
  a shard that runs out first contributes all-zero rows (weight 0) until the longest ends.
  Hosts of a multi-process run must see the same number of batches: their shards are the
  same size to within one block, so this holds when the split divides evenly (not enforced).
  """
  per_process = num_shards // process_count
  shards = range(process_index * per_process, (process_index + 1) * per_process)
  rows = config.train.batch_size // num_shards
  iterators = [
    pipeline.validation_batches(config, vocabulary, feature_converter, rows, k, num_shards)
    for k in shards
  ]
  template = None
  while True:
    parts = [next(it, None) for it in iterators]
    if all(p is None for p in parts):
      return
    template = template or next(p for p in parts if p is not None)
    parts = [
      p if p is not None else {k: np.zeros_like(v) for k, v in template.items()} for p in parts
    ]
    if len(parts) == 1:
      yield parts[0]
    else:
      yield {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
