"""Vocabulary padding (`model.vocab_pad_multiple`): embedding rows rounded up so that the vocab
axis shards evenly over `tensor` and the logits matmul has MXU-friendly shapes (GPT-2's 50257
ids -> 50304 rows with 128). The padded rows are never a target: their logits are set to a large
negative value before the softmax, and export strips them.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from t5x_lite.models.config import padded_vocab_size

__all__ = ["MASKED_LOGIT", "mask_padded_logits", "pad_rows", "padded_vocab_size", "strip_padding"]

# Large and finite: exp() of it is 0 in float32, and no inf - inf = nan appears in the loss.
MASKED_LOGIT = -1e9


def mask_padded_logits(logits: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
  """logits [..., padded] with entries >= `vocab_size` set to MASKED_LOGIT (same shape/dtype).

  A no-op when nothing is padded, so a model can call it unconditionally.
  """
  if logits.shape[-1] <= vocab_size:
    return logits
  valid = jnp.arange(logits.shape[-1]) < vocab_size  # [padded]
  return jnp.where(valid, logits, jnp.asarray(MASKED_LOGIT, logits.dtype))


def strip_padding(matrix: np.ndarray, vocab_size: int, axis: int = 0) -> np.ndarray:
  """The first `vocab_size` entries of `matrix` along `axis` (the embedding or output kernel)."""
  if matrix.shape[axis] < vocab_size:
    raise ValueError(
      f"a vocab axis of {matrix.shape[axis]} is shorter than vocab_size={vocab_size}"
    )
  return np.take(np.asarray(matrix), np.arange(vocab_size), axis=axis)


def pad_rows(matrix: np.ndarray, padded_size: int, axis: int = 0) -> np.ndarray:
  """`matrix` with zero entries appended along `axis` up to `padded_size` (importing weights)."""
  missing = padded_size - matrix.shape[axis]
  if missing < 0:
    raise ValueError(f"a vocab axis of {matrix.shape[axis]} is longer than {padded_size}")
  widths = [(0, 0)] * np.ndim(matrix)
  widths[axis] = (0, missing)
  return np.pad(np.asarray(matrix), widths)
