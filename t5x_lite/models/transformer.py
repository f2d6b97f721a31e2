"""The transformer block and the layer stack shared by all three families.

One `Block` serves GPT-2 (pre-LN, causal), BERT (post-LN, bidirectional), and the T5 encoder
(pre-LN RMSNorm) and decoder (+ cross-attention). `Stack` runs `num_layers` blocks either under
`nn.scan` (params stacked on a leading 'layers' axis: one compiled layer, fast compiles for deep
models) or as a Python loop (`layers_0`, `layers_1`, ...), optionally rematerialized:
  remat 'none'     keep every activation for the backward pass;
  remat 'minimal'  keep only matmul outputs without batch dimensions (the dense layers),
                   recompute the rest (attention scores, activations, norms);
  remat 'full'     keep only each layer's input.
All choices compute the same function (tests check loss and grads agree to 1e-6).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.models import layers
from t5x_lite.models.config import ModelConfig
from t5x_lite.partitioning import BATCH, EMBED, LAYERS, LENGTH

Array = jax.Array

REMAT_POLICIES = {
  "minimal": jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    jax.checkpoint_policies.save_only_these_names(layers.MATMUL),
  ),
  "full": jax.checkpoint_policies.nothing_saveable,
}


class Block(nn.Module):
  """Self-attention (+ cross-attention) + MLP, each with a residual and a norm.

  Pre-LN (GPT-2, T5): x + sublayer(norm(x)). Post-LN (BERT): norm(x + sublayer(x)).
  Returns (x, None) so that it can be the body of nn.scan.
  """

  config: ModelConfig
  causal: bool
  cross_attention: bool = False
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(
    self,
    x: Array,
    self_bias: Array | None,
    positions: Array | None,
    encoded: Array | None,
    cross_bias: Array | None,
  ) -> tuple[Array, None]:
    """x [batch, length, embed]; biases [batch|1, heads|1, q_len, k_len] additive float32."""
    config = self.config
    inits = layers.initializers(config)
    kernel_inits = (inits["q"], inits["k"], inits["v"], inits["o"])
    scale = config.attention_scale == "rsqrt_head_dim"  # T5: 'none' (folded into the init)
    pre = config.norm_position == "pre"
    deterministic = self.deterministic

    def sublayer(x, name, fn):
      if pre:
        return x + layers.dropout(config, fn(layers.make_norm(config, f"{name}_norm")(x)),
                                  deterministic)  # fmt: skip
      return layers.make_norm(config, f"{name}_norm")(
        x + layers.dropout(config, fn(x), deterministic)
      )

    x = sublayer(
      x,
      "attention",
      lambda h: layers.MultiHeadAttention(config, kernel_inits, scale, name="attention")(
        h, h, self_bias, positions=positions, decode=self.decode, deterministic=deterministic
      ),
    )
    if self.cross_attention:
      x = sublayer(
        x,
        "cross_attention",
        lambda h: layers.MultiHeadAttention(config, kernel_inits, scale, name="cross_attention")(
          h, encoded, cross_bias, deterministic=deterministic
        ),
      )
    x = sublayer(
      x,
      "mlp",
      lambda h: layers.MLP(config, inits["wi"], inits["wo"], name="mlp")(h, deterministic),
    )
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
    return x, None


class Stack(nn.Module):
  """`num_layers` blocks (+ the final norm of pre-LN models) with masks built once.

  Masks: a query attends only within its own segment (segment id 0 = padding, never attended),
  causally when `causal`. T5 relative position bias (`config.position == 'relative'`) is one
  table per stack, computed once and added in every layer (as the reference shares the first
  layer's bias).
  """

  config: ModelConfig
  num_layers: int
  causal: bool
  cross_attention: bool = False

  @nn.compact
  def __call__(
    self,
    x: Array,
    segment_ids: Array,
    positions: Array | None = None,
    encoded: Array | None = None,
    encoder_segment_ids: Array | None = None,
    *,
    deterministic: bool = True,
    decode: bool = False,
    causal_attention: Array | None = None,
  ) -> Array:
    """x [batch, length, embed], segment_ids [batch, length] -> [batch, length, embed].

    `causal_attention` [batch, length]: 1 on a prefix LM's inputs (+ 1), attended both ways.

    In decode mode the causal/cache mask comes from the KV cache (see layers.MultiHeadAttention)
    and `positions` [batch, n] are the positions of the n new tokens.
    """
    config = self.config
    # Created by the init call on the full [batch, max_length] shape; its presence means that
    # this call is a decoding step. Zeros (a cache must be all zeros); only its shape is used.
    decoding = decode and self.has_variable("cache", "decode_length")
    if decode:
      decode_length = self.variable("cache", "decode_length", jnp.zeros, (x.shape[1],), jnp.int32)
    if decoding:
      self_bias = None  # the attention layers mask by cache index
    else:
      self_bias = layers.attention_bias(segment_ids, segment_ids, self.causal, causal_attention)
    if config.position == "relative":
      key_length = decode_length.value.shape[0] if decode else x.shape[1]
      query_positions = positions if decoding else jnp.arange(x.shape[1])[None]
      relative = layers.RelativePositionBias(
        config.relative_buckets,
        config.relative_max_distance,
        config.num_heads,
        bidirectional=not self.causal,
        embedding_init=layers.initializers(config)["embed"],
        name="relative_position_bias",
      )(query_positions, jnp.arange(key_length)[None])
      self_bias = relative if self_bias is None else self_bias + relative

    if config.position == "alibi":
      if decode:  # cache slots are positions 0 .. max_length - 1
        key_positions = jnp.arange(decode_length.value.shape[0])[None]
      else:
        key_positions = jnp.arange(x.shape[1])[None] if positions is None else positions
      alibi = layers.alibi_bias(config.num_heads, key_positions)
      self_bias = alibi if self_bias is None else self_bias + alibi

    cross_bias = None
    if self.cross_attention:
      query_segments = jnp.ones_like(x[..., 0], jnp.int32) if decoding else segment_ids
      cross_bias = layers.attention_bias(query_segments, encoder_segment_ids, causal=False)

    block = Block
    if config.remat != "none":
      block = nn.remat(
        Block, policy=REMAT_POLICIES[config.remat], prevent_cse=not config.scan_layers
      )
    make = lambda **kw: block(  # noqa: E731
      config, self.causal, self.cross_attention, deterministic, decode, **kw
    )
    args = (self_bias, positions if config.position == "rope" else None, encoded, cross_bias)
    if config.share_layers:  # ALBERT: one block's parameters, applied num_layers times
      shared = make(name="shared_block")
      for _ in range(self.num_layers):
        x, _ = shared(x, *args)
    elif config.scan_layers:
      scanned = nn.scan(
        block,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * len(args),
        length=self.num_layers,
        metadata_params={nn.PARTITION_NAME: LAYERS},
      )
      x, _ = scanned(
        config, self.causal, self.cross_attention, deterministic, decode, name="layers"
      )(x, *args)
    else:
      for i in range(self.num_layers):
        x, _ = make(name=f"layers_{i}")(x, *args)

    if config.norm_position == "pre":
      x = layers.make_norm(config, "final_norm")(x)
      if "final" in config.dropout_placement:  # T5 drops out after the final norm; GPT-2 not
        x = layers.dropout(config, x, deterministic)
    return x


def unstack_layers(params: dict) -> dict:
  """Scanned params (`layers` with a leading layer axis) -> unrolled (`layers_0`, ...).

  Works on unboxed trees (plain arrays) at any depth, e.g. for checkpoint conversion between
  `scan_layers=True` and `False`.
  """
  out = {}
  for name, value in params.items():
    if name == "layers" and isinstance(value, dict):
      num_layers = jax.tree_util.tree_leaves(value)[0].shape[0]
      for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], value)
    elif isinstance(value, dict):
      out[name] = unstack_layers(value)
    else:
      out[name] = value
  return out


def stack_layers(params: dict) -> dict:
  """Unrolled params (`layers_0`, `layers_1`, ...) -> scanned (`layers`, leading layer axis)."""
  out, unrolled = {}, {}
  for name, value in params.items():
    prefix, _, index = name.rpartition("_")
    if prefix == "layers" and index.isdigit():
      unrolled[int(index)] = value
    elif isinstance(value, dict):
      out[name] = stack_layers(value)
    else:
      out[name] = value
  if unrolled:
    ordered = [unrolled[i] for i in range(len(unrolled))]
    out["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *ordered)
  return out
