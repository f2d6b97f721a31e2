"""GPT-style decoder-only language model (GPT-2 architecture by default).

Token + learned position embeddings (or RoPE / T5 relative bias), pre-LN blocks with causal,
segment-aware self-attention, final LayerNorm, logits = h·Eᵀ with the token embedding E (tied).

Decoding with a KV cache (flax 'cache' collection):

  model = build_model(config.model)
  cache = model.init_cache(batch_size, max_length)     # init with decode=True on [batch, max]
  logits, cache = model.decode_step(params, cache, tokens, positions)
      tokens, positions [batch, n] int32: the next n tokens (n = 1 per step, or a whole prompt
      at once) and their positions (0, 1, ...); logits [batch, n, vocab] float32.

Each call appends n keys/values per layer at the cache index; a token attends to every cached
position up to its own. Positions feed the learned position embedding / RoPE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.data.feature_converters import DecoderFeatureConverter
from t5x_lite.models import base, layers, vocab_padding
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.transformer import Stack
from t5x_lite.partitioning import BATCH, EMBED, LENGTH, VOCAB

Array = jax.Array


class DecoderLM(nn.Module):
  """Decoder-only transformer: tokens [batch, length] -> float32 logits [batch, length, vocab]."""

  config: ModelConfig

  @nn.compact
  def __call__(
    self,
    decoder_input_tokens: Array,
    decoder_segment_ids: Array | None = None,
    decoder_positions: Array | None = None,
    decoder_causal_attention: Array | None = None,
    *,
    deterministic: bool = True,
    decode: bool = False,
    hidden_only: bool = False,
  ) -> Array:
    """-> float32 logits [batch, length, vocab], or with `hidden_only` the last hidden states
    [batch, length, embed] that the output projection would read (chunked loss).

    `decoder_causal_attention` [batch, length]: 1 on a prefix LM's inputs (+ 1), which then
    attend bidirectionally (SeqIO / T5X); None = causal everywhere."""
    config = self.config
    dtype = layers.compute_dtype(config)
    inits = layers.initializers(config)
    tokens = decoder_input_tokens
    if decoder_segment_ids is None:
      decoder_segment_ids = jnp.ones_like(tokens)
    if decoder_positions is None:  # decoding steps always pass positions
      decoder_positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)

    embed = layers.Embed(
      config.embedding_rows, config.d_model, dtype=dtype, embedding_init=inits["embed"],
      name="token_embedder",
    )  # fmt: skip
    x = embed(tokens)  # [batch, length, embed]
    if config.embedding_norm:  # BLOOM's word_embeddings_layernorm
      x = layers.make_norm(config, "embedding_norm")(x)
    if config.position == "learned":
      x = x + layers.Embed(
        config.max_length, config.d_model, dtype=dtype, embedding_init=inits["embed"],
        axes=(LENGTH, EMBED), name="position_embedder",
      )(decoder_positions)  # fmt: skip
    x = layers.dropout(config, x, deterministic)
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))

    x = Stack(config, config.num_layers, causal=True, name="decoder")(
      x, decoder_segment_ids, decoder_positions, deterministic=deterministic, decode=decode,
      causal_attention=decoder_causal_attention,
    )  # fmt: skip
    if hidden_only:
      return x
    if config.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = layers.DenseGeneral(
        (config.embedding_rows,), (VOCAB,), use_bias=False, dtype=dtype,
        kernel_init=inits["head"], name="logits_dense",
      )(x).astype(jnp.float32)  # fmt: skip
    logits = vocab_padding.mask_padded_logits(logits, config.vocab_size)
    return nn.with_logical_constraint(logits, (BATCH, LENGTH, VOCAB))


class DecoderModel(base.TargetsLMModel):
  """Causal LM on packed documents (`pydoc_causal_lm`)."""

  features = (
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_loss_weights",
    "decoder_segment_ids",
    "decoder_positions",
  )

  FEATURE_CONVERTER_CLS = DecoderFeatureConverter
  generative = True
  DEFAULT_SWITCHES = {
    "init_scheme": "gpt2",
    "attention_scale": "rsqrt_head_dim",
    "dropout_placement": "outputs",
  }

  def make_module(self) -> nn.Module:
    return DecoderLM(self.config)

  def output_kernel(self, params: Any) -> tuple[Array, bool]:
    if self.config.tie_embeddings:
      return params["token_embedder"]["embedding"], True
    return params["logits_dense"]["kernel"], False

  def flops_per_token(self, seq_len: int | Mapping[str, int]) -> float:
    """One causal stack over the whole sequence (a prefix LM's inputs + targets)."""
    return base.single_stack_flops_per_token(self.config, base.sequence_length(seq_len))

  def hidden_states(self, params: Any, batch: Mapping[str, Array]) -> Array:
    return self.captured_stack_output(params, batch, "decoder")

  def feature_lengths(self, model_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    length = self.stack_length(model_feature_lengths, "decoder", "decoder")
    return {name: length for name in self.features}

  def default_lengths(self) -> dict[str, int]:
    return {"decoder_target_tokens": 8}

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    tokens = batch["decoder_input_tokens"]
    # Unpacked batches: the target tokens mark padding (the input starts with 0 = BOS).
    targets = batch.get("decoder_target_tokens", tokens)
    inputs = dict(
      decoder_input_tokens=tokens,
      decoder_segment_ids=base.segment_ids_or_default(batch, "decoder", targets),
      decoder_positions=base.positions_or_default(batch, "decoder", tokens),
    )
    # A prefix LM's batch marks its inputs (SeqIO's decoder_causal_attention); the model attends
    # over them bidirectionally unless `model.prefix_attention == 'causal'`.
    if "decoder_causal_attention" in batch and self.config.prefix_attention == "bidirectional":
      inputs["decoder_causal_attention"] = batch["decoder_causal_attention"]
    return inputs

  # --- decoding -------------------------------------------------------------------------------

  def init_cache(self, batch_size: int, max_length: int) -> Any:
    """The zero KV cache for decoding up to `max_length` tokens (shapes only, no params)."""
    tokens = jnp.zeros((batch_size, max_length), jnp.int32)

    def make(tokens):
      return self.module.init(jax.random.key(0), tokens, decode=True, deterministic=True)["cache"]

    # eval_shape: building the cache must not initialize (allocate) parameters.
    shapes = jax.eval_shape(make, tokens)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def decode_step(
    self, params: Any, cache: Any, tokens: Array, positions: Array
  ) -> tuple[Array, Any]:
    """Logits [batch, n, vocab] of n new tokens [batch, n] at `positions`, and the new cache."""
    logits, variables = self.module.apply(
      {"params": params, "cache": cache},
      tokens,
      None,
      positions,
      decode=True,
      deterministic=True,
      mutable=["cache"],
    )
    return logits, variables["cache"]
