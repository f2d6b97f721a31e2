"""Shared transformer layers: every parameter carries logical axis names.

Logical axes: batch, length, embed, mlp, heads, kv, vocab, layers (DESIGN.md "Sharding").
Parameters are float32; `dtype` is the compute dtype. Every matmul takes operands in the compute
dtype and accumulates in float32 (`preferred_element_type`): on CPUs and TPUs a bfloat16 matmul
with float32 accumulation is both faster and more exact than one with a bfloat16 result.
Softmax, norms and losses run in float32.

Reference conventions the layers follow (so that HF weights load exactly):
  - attention scale 1/sqrt(head_dim) (GPT-2, BERT) or none (T5: folded into the init);
  - LayerNorm with mean and bias, or T5's RMSNorm (no mean subtraction, no bias);
  - MLP activations 'gelu' (erf, BERT), 'gelu_new' (tanh approximation, GPT-2), 'relu'
    (T5 v1.0), 'gated-gelu' (gelu_new(x·W0) * (x·W1), T5 v1.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from t5x_lite.models.config import INIT_SCHEMES, ModelConfig
from t5x_lite.partitioning import BATCH, EMBED, HEADS, KV, LENGTH, VOCAB
from t5x_lite.partitioning import MLP as MLP_AXIS  # the class MLP below is the layer

Array = jax.Array
Initializer = Any

# Additive bias of a masked attention logit. Finite (unlike finfo.min) so that a fully masked
# row (a padding query) gives a uniform softmax instead of NaN; exp(-1e10) is exactly 0 in f32.
MASK_VALUE = -1e10
MATMUL = "low_precision_matmul"  # checkpoint name of the bf16 dense outputs (see matmul)


def compute_dtype(config: ModelConfig) -> jnp.dtype:
  return jnp.dtype(config.dtype)


def head_dim(config: ModelConfig) -> int:
  return config.head_dim or config.d_model // config.num_heads


def param_with_axes(
  module: nn.Module, name: str, init: Initializer, shape: Sequence[int], axes: Sequence[str]
) -> Array:
  """A float32 parameter boxed with logical axis names (nn.LogicallyPartitioned)."""
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _low_precision_matmul(x: Array, w: Array, dtype: Any, w_transposed: bool) -> Array:
  """[M, K] x [K, N] (or [N, K] if w_transposed) -> float32 [M, N], operands cast to `dtype`."""
  return lax.dot_general(
    x.astype(dtype), w.astype(dtype), (((1,), (int(w_transposed),)), ((), ())),
    preferred_element_type=jnp.float32,
  )  # fmt: skip


def _low_precision_matmul_fwd(x, w, dtype, w_transposed):
  return _low_precision_matmul(x, w, dtype, w_transposed), (x, w)


def _physical_transpose(a: Array) -> Array:
  """aᵀ [N, M] of a [M, N], materialized row-major.

  XLA folds a plain transpose into the dot as a transposed-lhs contraction, which its CPU
  backend only runs in float32 (it upcasts both bf16 operands). Splitting an axis by 8 makes the
  transpose a real copy, and the barrier keeps it from being folded back.
  """
  rows, cols = a.shape
  if rows % 8 == 0:
    t = jnp.transpose(a.reshape(rows // 8, 8, cols), (2, 0, 1))
  elif cols % 8 == 0:
    t = jnp.transpose(a.reshape(rows, cols // 8, 8), (1, 2, 0))
  else:
    t = jnp.transpose(a)
  return lax.optimization_barrier(t.reshape(cols, rows))


def _low_precision_matmul_bwd(dtype, w_transposed, residuals, g):
  # Autodiff of a bf16 x bf16 -> f32 dot would contract the f32 cotangent with a bf16 operand,
  # which XLA runs as an f32 matmul (~2-3x slower on CPU). Here the two backward matmuls also
  # take `dtype` operands and accumulate in f32; the weight gradient stays float32.
  x, w = residuals
  g, xc, wc = g.astype(dtype), x.astype(dtype), w.astype(dtype)
  f32 = jnp.float32
  standard = (((1,), (0,)), ((), ()))
  if w_transposed:  # y = x · wᵀ, w [N, K]
    dx = lax.dot_general(g, wc, standard, preferred_element_type=f32)
    dw = lax.dot_general(_physical_transpose(g), xc, standard, preferred_element_type=f32)
  else:  # y = x · w, w [K, N]
    dx = lax.dot_general(g, wc, (((1,), (1,)), ((), ())), preferred_element_type=f32)
    dw = lax.dot_general(_physical_transpose(xc), g, standard, preferred_element_type=f32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_low_precision_matmul.defvjp(_low_precision_matmul_fwd, _low_precision_matmul_bwd)


def matmul(
  x: Array, kernel: Array, contract: int, dtype: jnp.dtype, kernel_transposed: bool = False
) -> Array:
  """Contracts the last `contract` axes of x with the first of kernel (its last when
  `kernel_transposed`, for a tied embedding [vocab, embed]); float32 result and accumulation.

  float32: a plain dot_general. Lower precision: operands in `dtype` in the backward pass too.
  """
  if jnp.dtype(dtype) == jnp.float32:
    kernel_axes = tuple(range(kernel.ndim - contract, kernel.ndim)) if kernel_transposed else (
      tuple(range(contract))
    )  # fmt: skip
    dims = ((tuple(range(x.ndim - contract, x.ndim)), kernel_axes), ((), ()))
    return lax.dot_general(
      x.astype(dtype), kernel.astype(dtype), dims, preferred_element_type=jnp.float32
    )
  batch_shape = x.shape[: x.ndim - contract]
  if kernel_transposed:
    out_shape, k = kernel.shape[: kernel.ndim - contract], kernel.shape[kernel.ndim - contract :]
  else:
    k, out_shape = kernel.shape[:contract], kernel.shape[contract:]
  size = int(np.prod(k))
  x2 = x.reshape(-1, size)
  w2 = kernel.reshape(-1, size) if kernel_transposed else kernel.reshape(size, -1)
  # Named so that remat 'minimal' can save it: a custom_vjp hides the dot from the policy.
  y = checkpoint_name(_low_precision_matmul(x2, w2, jnp.dtype(dtype), kernel_transposed), MATMUL)
  return y.reshape(batch_shape + tuple(out_shape))


def normal(stddev: float) -> Initializer:
  return nn.initializers.normal(stddev=stddev)


class DenseGeneral(nn.Module):
  """y = x·W (+ b) contracting the last len(in_axes) axes of x; output in the compute dtype.

  `in_shape`/`in_axes` describe the contracted input axes, `features`/`out_axes` the output ones,
  e.g. a query projection: in ('embed',) -> out ('heads', 'kv').
  """

  features: tuple[int, ...]
  out_axes: tuple[str, ...]
  in_axes: tuple[str, ...] = (EMBED,)
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Initializer = normal(0.02)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    contract = len(self.in_axes)
    in_shape = x.shape[x.ndim - contract :]
    kernel = param_with_axes(
      self, "kernel", self.kernel_init, in_shape + self.features, self.in_axes + self.out_axes
    )
    y = matmul(x, kernel, contract, self.dtype)
    if self.use_bias:
      bias = param_with_axes(self, "bias", nn.initializers.zeros, self.features, self.out_axes)
      y = y + bias
    return y.astype(self.dtype)


class Embed(nn.Module):
  """Token (or position / token-type) embedding table [num_embeddings, embed]."""

  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  embedding_init: Initializer = normal(0.02)
  axes: tuple[str, str] = (VOCAB, EMBED)

  def setup(self):
    self.embedding = param_with_axes(
      self, "embedding", self.embedding_init, (self.num_embeddings, self.features), self.axes
    )

  def __call__(self, ids: Array) -> Array:
    # [batch, length] -> [batch, length, embed]
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """Tied output projection x·Eᵀ in float32: [..., embed] -> [..., vocab]."""
    return matmul(x, self.embedding, 1, self.dtype, kernel_transposed=True)


class LayerNorm(nn.Module):
  """LayerNorm (mean, variance, scale, bias) or T5's RMSNorm (`rms=True`: no mean, no bias)."""

  epsilon: float = 1e-5
  rms: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    x = x.astype(jnp.float32)
    if self.rms:
      variance = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
      y = x * lax.rsqrt(variance + self.epsilon)
    else:
      mean = jnp.mean(x, axis=-1, keepdims=True)
      variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
      y = (x - mean) * lax.rsqrt(variance + self.epsilon)
    scale = param_with_axes(self, "scale", nn.initializers.ones, (features,), (EMBED,))
    y = y * scale
    if not self.rms:
      y = y + param_with_axes(self, "bias", nn.initializers.zeros, (features,), (EMBED,))
    return y.astype(self.dtype)


def make_norm(config: ModelConfig, name: str) -> LayerNorm:
  return LayerNorm(
    epsilon=config.layer_norm_epsilon,
    rms=config.norm == "rmsnorm",
    dtype=compute_dtype(config),
    name=name,
  )


def activation_fn(name: str):
  if name in ("gelu_new", "gated-gelu"):
    return functools.partial(jax.nn.gelu, approximate=True)
  if name == "gelu":
    return functools.partial(jax.nn.gelu, approximate=False)
  if name == "relu":
    return jax.nn.relu
  raise ValueError(f"model.activation={name!r}: expected gelu, gelu_new, relu or gated-gelu")


# ---------------------------------------------------------------------------------------------
# Position encodings.


def relative_position_bucket(
  relative_position: Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
  """T5's bucket of (key position - query position), as in Mesh TensorFlow / HF T5.

  Half the buckets are exact small distances, the rest log-spaced up to `max_distance`; the
  bidirectional variant spends half of the buckets on each sign.
  """
  relative_buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    relative_buckets += (relative_position > 0).astype(jnp.int32) * num_buckets
    relative_position = jnp.abs(relative_position)
  else:
    relative_position = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = relative_position < max_exact
  # float32 as in the reference; the int cast truncates toward zero like torch's .to(long).
  safe = jnp.maximum(relative_position, 1).astype(jnp.float32)
  large = max_exact + (
    jnp.log(safe / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return relative_buckets + jnp.where(is_small, relative_position, large)


class RelativePositionBias(nn.Module):
  """T5 relative attention bias [batch|1, heads, q_len, k_len], shared by a stack's layers."""

  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  embedding_init: Initializer = normal(1.0)

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    # query_positions [batch|1, q_len], key_positions [batch|1, k_len]
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [batch|1, q, k]
    buckets = relative_position_bucket(
      relative, self.bidirectional, self.num_buckets, self.max_distance
    )
    table = param_with_axes(
      self, "rel_embedding", self.embedding_init, (self.num_buckets, self.num_heads),
      (None, HEADS),
    )  # fmt: skip
    bias = jnp.take(table, buckets, axis=0)  # [batch|1, q, k, heads]
    return jnp.transpose(bias, (0, 3, 1, 2)).astype(jnp.float32)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi head slopes (Press et al. 2022; BLOOM / HF `_get_alibi_slopes`), float32 [heads].

  The geometric sequence 2^(-8/n), 2^(-16/n), ... for the largest power of two n <= heads; the
  remaining heads take every other slope of the sequence for 2n (the paper's recipe for head
  counts that are not a power of two).
  """
  closest = 2 ** math.floor(math.log2(num_heads))
  base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
  slopes = base ** np.arange(1, 1 + closest, dtype=np.float32)
  if closest != num_heads:
    extra_base = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
    remaining = min(closest, num_heads - closest)
    extra = extra_base ** np.arange(1, 1 + 2 * remaining, 2, dtype=np.float32)
    slopes = np.concatenate([slopes, extra])
  return slopes.astype(np.float32)


def alibi_bias(num_heads: int, key_positions: Array) -> Array:
  """ALiBi bias [batch|1, heads, 1, k_len] = slope · key position (float32).

  The paper's -slope·(query - key) differs by -slope·query, a constant per query row that
  the softmax ignores (as HF BLOOM computes it); key_positions [batch|1, k_len].
  """
  slopes = jnp.asarray(alibi_slopes(num_heads))
  return slopes[None, :, None, None] * key_positions.astype(jnp.float32)[:, None, None, :]


def apply_rope(x: Array, positions: Array, max_wavelength: float = 10_000.0) -> Array:
  """Rotary position embedding (GPT-NeoX / LLaMA "rotate half" layout).

  x [batch, length, heads, head_dim], positions [batch, length].
  """
  dim = x.shape[-1]
  fraction = 2 * jnp.arange(dim // 2, dtype=jnp.float32) / dim
  inv_freq = max_wavelength**-fraction  # [head_dim / 2]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, length, head_dim / 2]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Attention and MLP.


def attention_bias(
  query_segment_ids: Array,
  key_segment_ids: Array,
  causal: bool,
  causal_attention: Array | None = None,
) -> Array:
  """Additive float32 bias [batch, 1, q_len, k_len]: 0 where a query may attend, else -1e10.

  A query attends to keys of its own segment only (packed documents never see each other);
  segment id 0 is padding and is never attended to. `causal` adds key index <= query index,
  except between two positions where `causal_attention` [batch, length] (self-attention only)
  is 1: a prefix LM's inputs attend to each other in both directions (T5X `make_decoder_mask`
  with SeqIO's `decoder_causal_attention`).
  """
  mask = query_segment_ids[:, :, None] == key_segment_ids[:, None, :]
  mask &= (key_segment_ids > 0)[:, None, :]
  if causal:
    q_len, k_len = query_segment_ids.shape[1], key_segment_ids.shape[1]
    allowed = (jnp.arange(q_len)[:, None] >= jnp.arange(k_len)[None, :])[None]
    if causal_attention is not None:
      prefix = causal_attention > 0
      allowed = allowed | (prefix[:, :, None] & prefix[:, None, :])
    mask &= allowed
  return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)[:, None]


def fused_attention(
  query: Array, key: Array, value: Array, bias: Array | None, scale_queries: bool, impl: str
) -> Array:
  """softmax(q·kᵀ·scale + bias)·v through `jax.nn.dot_product_attention`: [batch, q, heads, kv].

  impl 'dot_product': jax picks the implementation (XLA; cuDNN on GPUs where it applies);
  'cudnn': cuDNN fused (flash) attention on GPU (bf16/fp16, head_dim a multiple of 8), the XLA
  implementation on other backends, so that one config runs on a CPU test and a GPU run alike.
  `bias` is the additive float32 mask (segments, causality, T5's relative positions), broadcast
  to [batch, heads, q_len, k_len]. No dropout on the weights: the caller takes the plain path.
  """
  implementation = None
  if impl == "cudnn" and jax.default_backend() == "gpu":
    implementation = "cudnn"
  if bias is not None:
    bias = jnp.broadcast_to(
      bias, (query.shape[0], bias.shape[1], query.shape[1], key.shape[1])
    ).astype(jnp.float32 if implementation is None else query.dtype)
  scale = 1.0 / math.sqrt(query.shape[-1]) if scale_queries else 1.0
  return jax.nn.dot_product_attention(
    query, key, value, bias=bias, scale=scale, implementation=implementation
  )


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention (self or cross), optional RoPE and KV cache.

  Decoding (`decode=True`): the first call, made by `init` on the full [batch, max_length]
  shape, creates `cache/{cached_key, cached_value, cache_index}`; each later call writes its
  n new keys/values at cache_index, attends to cache positions <= cache_index + i, and advances
  cache_index by n (n = 1 for one token per step; n > 1 pre-fills a prompt).
  """

  config: ModelConfig
  kernel_inits: tuple[Initializer, Initializer, Initializer, Initializer]  # q, k, v, out
  scale_queries: bool = True  # 1/sqrt(head_dim) (GPT-2, BERT); T5 folds it into the init

  @nn.compact
  def __call__(
    self,
    inputs_q: Array,
    inputs_kv: Array,
    bias: Array | None = None,
    *,
    positions: Array | None = None,
    decode: bool = False,
    deterministic: bool = True,
  ) -> Array:
    """inputs_q [batch, q_len, embed], inputs_kv [batch, k_len, embed], bias broadcastable to
    [batch, heads, q_len, k_len] (float32, additive). Returns [batch, q_len, embed]."""
    config = self.config
    dtype = compute_dtype(config)
    heads, depth = config.num_heads, head_dim(config)
    q_init, k_init, v_init, o_init = self.kernel_inits
    projection = functools.partial(
      DenseGeneral, features=(heads, depth), out_axes=(HEADS, KV), use_bias=config.use_bias,
      dtype=dtype,
    )  # fmt: skip
    query = projection(kernel_init=q_init, name="query")(inputs_q)  # [batch, q, heads, kv]
    key = projection(kernel_init=k_init, name="key")(inputs_kv)  # [batch, k, heads, kv]
    value = projection(kernel_init=v_init, name="value")(inputs_kv)
    if config.position == "rope" and positions is not None:
      query = apply_rope(query, positions)
      key = apply_rope(key, positions)
    query = nn.with_logical_constraint(query, (BATCH, LENGTH, HEADS, KV))
    key = nn.with_logical_constraint(key, (BATCH, LENGTH, HEADS, KV))
    value = nn.with_logical_constraint(value, (BATCH, LENGTH, HEADS, KV))

    if decode:
      initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
      cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if initialized:
        index = cache_index.value
        key = lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
        value = lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
        cached_key.value, cached_value.value = key, value
        n, max_length = inputs_q.shape[1], key.shape[1]
        cache_index.value = index + n
        visible = jnp.arange(max_length)[None, :] <= index + jnp.arange(n)[:, None]  # [n, max]
        decode_bias = jnp.where(visible, 0.0, MASK_VALUE)[None, None]
        bias = decode_bias if bias is None else bias + decode_bias

    dropout = not deterministic and config.dropout_rate > 0
    if config.attention_impl != "xla" and not dropout:
      out = fused_attention(query, key, value, bias, self.scale_queries, config.attention_impl)
    else:  # the plain path; also the one with dropout on the attention weights
      if self.scale_queries:
        query = query / jnp.sqrt(depth).astype(query.dtype)
      # [batch, heads, q, k] in float32
      logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
      if bias is not None:
        logits = logits + bias
      weights = jax.nn.softmax(logits, axis=-1)
      if dropout:
        weights = nn.Dropout(config.dropout_rate)(weights, deterministic=False)
      # [batch, q, heads, kv]
      out = jnp.einsum(
        "bhqk,bkhd->bqhd", weights.astype(dtype), value, preferred_element_type=jnp.float32
      ).astype(dtype)
    out = nn.with_logical_constraint(out.astype(dtype), (BATCH, LENGTH, HEADS, KV))
    return DenseGeneral(
      features=(config.d_model,), out_axes=(EMBED,), in_axes=(HEADS, KV),
      use_bias=config.use_bias, dtype=dtype, kernel_init=o_init, name="out",
    )(out)  # fmt: skip


class MLP(nn.Module):
  """Position-wise MLP: wi -> activation -> wo, or gated: act(x·wi_0) * (x·wi_1) -> wo."""

  config: ModelConfig
  wi_init: Initializer
  wo_init: Initializer

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    config = self.config
    dtype = compute_dtype(config)
    dense = functools.partial(DenseGeneral, use_bias=config.use_bias, dtype=dtype)
    act = activation_fn(config.activation)
    if config.activation == "gated-gelu":
      gate = dense((config.d_ff,), (MLP_AXIS,), kernel_init=self.wi_init, name="wi_0")(x)
      linear = dense((config.d_ff,), (MLP_AXIS,), kernel_init=self.wi_init, name="wi_1")(x)
      h = act(gate.astype(jnp.float32)).astype(dtype) * linear
    else:
      h = act(dense((config.d_ff,), (MLP_AXIS,), kernel_init=self.wi_init, name="wi")(x))
    h = nn.with_logical_constraint(h, (BATCH, LENGTH, MLP_AXIS))
    if not deterministic and config.dropout_rate > 0 and "hidden" in config.dropout_placement:
      # T5 drops out the hidden activations too (GPT-2 and BERT only the MLP output).
      h = nn.Dropout(config.dropout_rate)(h, deterministic=False)
    return dense(
      (config.d_model,), (EMBED,), in_axes=(MLP_AXIS,), kernel_init=self.wo_init, name="wo"
    )(h)


def initializers(config: ModelConfig) -> dict[str, Initializer]:
  """Initializers of `config.init_scheme`, as the reference implementations (HF `_init_weights`).

  'gpt2' / 'bert': normal(0.02) (GPT-2's residual projections / sqrt(2 * layers)). 't5': normal
  with fan-in scaling, queries additionally by 1/sqrt(head_dim) because T5 attention has no
  1/sqrt(d) factor, embeddings normal(1).
  """
  if config.init_scheme not in INIT_SCHEMES:
    raise ValueError(f"model.init_scheme={config.init_scheme!r}: expected one of {INIT_SCHEMES}")
  if config.init_scheme != "t5":
    init = normal(0.02)
    # GPT-2 scales the residual output projections by 1/sqrt(2 * layers) (HF `c_proj`).
    residual = (
      normal(0.02 / math.sqrt(2 * config.num_layers)) if config.init_scheme == "gpt2" else init
    )
    return dict(q=init, k=init, v=init, o=residual, wi=init, wo=residual, embed=init, head=init)
  depth = head_dim(config)
  return dict(
    q=normal((config.d_model * depth) ** -0.5),
    k=normal(config.d_model**-0.5),
    v=normal(config.d_model**-0.5),
    o=normal((config.num_heads * depth) ** -0.5),
    wi=normal(config.d_model**-0.5),
    wo=normal(config.d_ff**-0.5),
    embed=normal(1.0),
    head=normal(config.d_model**-0.5),
  )


def dropout(config: ModelConfig, x: Array, deterministic: bool) -> Array:
  if deterministic or config.dropout_rate == 0:
    return x
  return nn.Dropout(config.dropout_rate)(x, deterministic=False)
