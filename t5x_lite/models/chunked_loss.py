"""Cross-entropy of the output projection, chunked over tokens: never the whole [tokens, vocab].

The plain path materializes float32 logits [tokens, vocab] (gpt2_small, 8 × 1024 tokens: 1.6 GB)
and autodiff keeps them, the softmax and their gradient alive together. Here the projection
h·Wᵀ, the log-softmax and their gradient run over `chunk` tokens at a time (a `lax.scan`), as
Liger-Kernel's fused linear cross-entropy and MaxText's vocabulary tiling do:

  - evaluation (no gradient): each chunk's logits give its log-partition, target logit and max;
  - training (the custom VJP's forward): each chunk's logits also give dlogits = p - onehot at
    once (softmax minus the smoothed target, plus the z-loss term), contracted right away into
    dh (chunk) and dW (accumulated); the backward only scales them by the incoming cotangent.
    Same FLOPs as the plain path (no recompute of the logits), one pass over each chunk of them.

Only the loss sum is differentiable; the metric outputs (z-loss sum, correct count) come back
under stop_gradient. Matmuls take operands in the compute dtype and accumulate in float32, as
`layers.matmul` (the weight gradient stays float32).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _logits(h: Array, w: Array, transposed: bool, dtype: Any) -> Array:
  """[C, d] x W ([V, d] if transposed else [d, V]) -> float32 [C, V]."""
  dims = (((1,), (1 if transposed else 0,)), ((), ()))
  return lax.dot_general(h.astype(dtype), w.astype(dtype), dims, preferred_element_type=jnp.float32)


def _smoothing(label_smoothing: float, vocab: int) -> tuple[float, float, float]:
  """(confidence, low, normalizing) of t5x's smoothed target distribution."""
  if label_smoothing <= 0:
    return 1.0, 0.0, 0.0
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  normalizing = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low + 1e-20))
  return confidence, low, normalizing


def _chunk_stats(h, w, targets, transposed, dtype, label_smoothing):
  """Per token of one chunk: (cross-entropy, log Z, correct) from its float32 logits."""
  logits = _logits(h, w, transposed, dtype)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
  target_log_prob = target_logit - log_z
  confidence, low, normalizing = _smoothing(label_smoothing, vocab)
  if low:
    sum_log_probs = jnp.sum(logits, axis=-1) - vocab * log_z
    ce = -(confidence * target_log_prob + low * (sum_log_probs - target_log_prob)) - normalizing
  else:
    ce = -target_log_prob
  correct = (target_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return logits, ce, log_z, correct


def _split(x: Array, chunk: int) -> Array:
  """[N, ...] -> [N / chunk, chunk, ...] (N padded before)."""
  return x.reshape((x.shape[0] // chunk, chunk) + x.shape[1:])


def _sums(h, w, targets, weights, chunk, transposed, dtype, z_loss, label_smoothing, grads):
  """(loss sum, z sum, correct sum), and with `grads` also (dh, dW) of the loss sum."""
  hs, ts, ws = _split(h, chunk), _split(targets, chunk), _split(weights, chunk)

  def body(carry, inputs):
    h_c, t_c, w_c = inputs
    logits, ce, log_z, correct = _chunk_stats(h_c, w, t_c, transposed, dtype, label_smoothing)
    z_term = z_loss * jnp.square(log_z)
    sums = (jnp.sum((ce + z_term) * w_c), jnp.sum(z_term * w_c), jnp.sum(correct * w_c))
    carry = jax.tree.map(jnp.add, carry[:3], sums) + carry[3:]
    if not grads:
      return carry, None
    # d(weight · (ce + z·logZ²)) / dlogits = weight · ((1 + 2z·logZ) · p - (conf - low) · onehot - low)
    confidence, low, _ = _smoothing(label_smoothing, logits.shape[-1])
    p = jnp.exp(logits - log_z[:, None])
    onehot = jax.nn.one_hot(t_c, logits.shape[-1], dtype=jnp.float32)
    dlogits = (1.0 + 2.0 * z_loss * log_z)[:, None] * p - (confidence - low) * onehot - low
    dlogits = (dlogits * w_c[:, None]).astype(dtype)
    dh = lax.dot_general(
      dlogits, w.astype(dtype), (((1,), (0 if transposed else 1,)), ((), ())),
      preferred_element_type=jnp.float32,
    )  # fmt: skip
    if transposed:  # W [V, d]: dW = dlogitsᵀ · h
      dw = lax.dot_general(dlogits, h_c.astype(dtype), (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)  # fmt: skip
    else:  # W [d, V]: dW = hᵀ · dlogits
      dw = lax.dot_general(h_c.astype(dtype), dlogits, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)  # fmt: skip
    return carry[:3] + (carry[3] + dw,), dh

  zero = jnp.zeros((), jnp.float32)
  init = (zero, zero, zero) + ((jnp.zeros(w.shape, jnp.float32),) if grads else ())
  carry, dh = lax.scan(body, init, (hs, ts, ws))
  if not grads:
    return carry
  return carry[:3], (dh.reshape(h.shape), carry[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _chunked(h, w, targets, weights, chunk, transposed, dtype, z_loss, label_smoothing):
  return _sums(h, w, targets, weights, chunk, transposed, dtype, z_loss, label_smoothing, False)


def _chunked_fwd(h, w, targets, weights, chunk, transposed, dtype, z_loss, label_smoothing):
  sums, (dh, dw) = _sums(
    h, w, targets, weights, chunk, transposed, dtype, z_loss, label_smoothing, True
  )
  return sums, (dh.astype(h.dtype), dw, targets, weights)


def _chunked_bwd(chunk, transposed, dtype, z_loss, label_smoothing, residuals, cotangents):
  del chunk, transposed, dtype, z_loss, label_smoothing
  dh, dw, targets, weights = residuals
  g = cotangents[0]  # the metric outputs are returned under stop_gradient: no cotangent
  return (
    (g * dh).astype(dh.dtype),
    g * dw,
    jnp.zeros(targets.shape, jax.dtypes.float0),
    jnp.zeros_like(weights),
  )


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_cross_entropy(
  hidden: Array,
  kernel: Array,
  targets: Array,
  weights: Array,
  *,
  chunk: int,
  transposed: bool,
  dtype: Any = jnp.float32,
  z_loss: float = 0.0,
  label_smoothing: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
  """Σ weight · (cross-entropy + z_loss · logZ²) of logits = hidden · kernel, `chunk` tokens at a
  time, and its metric sums.

  hidden [..., d] (any leading shape; flattened to tokens), kernel [V, d] when `transposed` (a
  tied embedding) else [d, V], targets [...] int, weights [...] float. Returns (loss sum, {'z_loss':
  Σ weight · z_loss · logZ², 'correct': Σ weight · [target logit is the max]}); the metrics carry
  no gradient. Equal to `base.weighted_lm_loss` on the full logits (up to float32 summation order).
  """
  d = hidden.shape[-1]
  h = hidden.reshape(-1, d)
  t = targets.reshape(-1).astype(jnp.int32)
  wt = weights.reshape(-1).astype(jnp.float32)
  chunk = max(1, min(int(chunk), h.shape[0]))
  pad = -h.shape[0] % chunk
  if pad:  # padding tokens have weight 0: no loss, no gradient
    h = jnp.pad(h, ((0, pad), (0, 0)))
    t = jnp.pad(t, (0, pad))
    wt = jnp.pad(wt, (0, pad))
  loss, z_sum, correct = _chunked(
    h, kernel, t, wt, chunk, bool(transposed), jnp.dtype(dtype), float(z_loss),
    float(label_smoothing),
  )  # fmt: skip
  return loss, {"z_loss": lax.stop_gradient(z_sum), "correct": lax.stop_gradient(correct)}
