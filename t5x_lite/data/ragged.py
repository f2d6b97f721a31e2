"""Ragged columns: variable-length rows of a block of examples, stored flat.

A block of examples is a dict of columns over the same rows: token features are `Ragged`
(flat values + row lengths), per-example scalars are 1-D arrays, and `KEY` holds each example's
random key (uint64, see `keys.py`). Everything here is vectorized numpy: Python never runs per
token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

KEY = "_key"  # per-example random key column (uint64)
EXAMPLE_KEY = KEY


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


def truncate(column: Ragged, limit: int) -> Ragged:
  """Every row cut to at most `limit` values (the same object when no row is longer)."""
  if len(column) == 0 or column.lengths.max(initial=0) <= limit:
    return column
  keep = positions_in_rows(column.lengths) < limit
  return Ragged(column.values[keep], np.minimum(column.lengths, limit))


def truncate_rows(column: Ragged, limits: np.ndarray) -> Ragged:
  """Row i cut to its first limits[i] values."""
  keep = positions_in_rows(column.lengths) < np.repeat(limits, column.lengths)
  return Ragged(column.values[keep], np.minimum(column.lengths, limits).astype(np.int64))
