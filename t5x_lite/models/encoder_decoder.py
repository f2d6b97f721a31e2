"""T5-style encoder-decoder (T5 v1.0 and v1.1).

Shared token embedding; pre-RMSNorm blocks without biases; relative position bias (one table
per stack, bidirectional in the encoder, causal in the decoder) and no 1/sqrt(d) attention
scaling; the decoder adds cross-attention to the encoder output.
  v1.0: ReLU MLP, logits = (h · d_model**-0.5)·Eᵀ with the tied embedding E.
  v1.1: gated-GELU MLP, untied `logits_dense` output layer (no rescale).

Decoding with a KV cache (flax 'cache' collection):

  encoded = model.encode(params, batch)                       # [batch, inputs_length, embed]
  cache = model.init_cache(batch_size, max_length, inputs_length)
  logits, cache = model.decode_step(params, cache, tokens, positions,
                                    encoded=encoded, encoder_segment_ids=segment_ids)
      tokens, positions [batch, n]: the next decoder inputs (the first is 0, the start token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.data.feature_converters import EncDecFeatureConverter
from t5x_lite.models import base, layers, vocab_padding
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.transformer import Stack
from t5x_lite.partitioning import BATCH, EMBED, LENGTH, VOCAB

Array = jax.Array


class EncoderDecoder(nn.Module):
  """encode(inputs) -> encoded; decode(encoded, decoder inputs) -> float32 logits."""

  config: ModelConfig

  def setup(self):
    config = self.config
    dtype = layers.compute_dtype(config)
    inits = layers.initializers(config)
    self.token_embedder = layers.Embed(
      config.embedding_rows, config.d_model, dtype=dtype, embedding_init=inits["embed"]
    )
    if config.position == "learned":
      position = dict(dtype=dtype, axes=(LENGTH, EMBED), embedding_init=layers.normal(0.01))
      self.encoder_position_embedder = layers.Embed(config.max_length, config.d_model, **position)
      self.decoder_position_embedder = layers.Embed(config.max_length, config.d_model, **position)
    if config.embedding_norm:  # BART's layernorm_embedding, one per stack
      norm = dict(epsilon=config.layer_norm_epsilon, rms=config.norm == "rmsnorm", dtype=dtype)
      self.encoder_embedding_norm = layers.LayerNorm(**norm)
      self.decoder_embedding_norm = layers.LayerNorm(**norm)
    # A setup-style module must create its submodules here (not inline in encode/decode).
    self.embedding_dropout = nn.Dropout(config.dropout_rate)
    self.encoder = Stack(config, config.num_layers, causal=False)
    self.decoder = Stack(
      config, config.num_decoder_layers or config.num_layers, causal=True, cross_attention=True
    )
    if not config.tie_embeddings:
      self.logits_dense = layers.DenseGeneral(
        (config.embedding_rows,), (VOCAB,), use_bias=False, dtype=dtype, kernel_init=inits["head"]
      )

  def encode(
    self,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    encoder_positions: Array,
    *,
    deterministic: bool = True,
  ) -> Array:
    """[batch, inputs_length] -> [batch, inputs_length, embed]."""
    x = self.token_embedder(encoder_input_tokens)
    if self.config.position == "learned":
      x = x + self.encoder_position_embedder(encoder_positions + self.config.position_offset)
    if self.config.embedding_norm:
      x = self.encoder_embedding_norm(x)
    x = self.embedding_dropout(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
    return self.encoder(x, encoder_segment_ids, encoder_positions, deterministic=deterministic)

  def decode(
    self,
    encoded: Array,
    encoder_segment_ids: Array,
    decoder_input_tokens: Array,
    decoder_segment_ids: Array,
    decoder_positions: Array,
    *,
    deterministic: bool = True,
    decode: bool = False,
    hidden_only: bool = False,
  ) -> Array:
    """-> float32 logits [batch, targets_length, vocab]; with `hidden_only` the (rescaled)
    hidden states [batch, targets_length, embed] the output projection reads (chunked loss)."""
    config = self.config
    x = self.token_embedder(decoder_input_tokens)
    if config.position == "learned":
      x = x + self.decoder_position_embedder(decoder_positions + config.position_offset)
    if config.embedding_norm:
      x = self.decoder_embedding_norm(x)
    x = self.embedding_dropout(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
    x = self.decoder(
      x,
      decoder_segment_ids,
      decoder_positions,
      encoded,
      encoder_segment_ids,
      deterministic=deterministic,
      decode=decode,
    )
    if config.tie_embeddings:
      # T5 v1.0 rescales before the tied projection (the embedding is initialized with std 1).
      if config.scale_tied_logits:
        x = x * config.d_model**-0.5
      if hidden_only:
        return x
      logits = self.token_embedder.attend(x)
    elif hidden_only:
      return x
    else:
      logits = self.logits_dense(x).astype(jnp.float32)
    logits = vocab_padding.mask_padded_logits(logits, config.vocab_size)
    return nn.with_logical_constraint(logits, (BATCH, LENGTH, VOCAB))

  def __call__(
    self,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    encoder_positions: Array,
    decoder_input_tokens: Array,
    decoder_segment_ids: Array,
    decoder_positions: Array,
    *,
    deterministic: bool = True,
    decode: bool = False,
    hidden_only: bool = False,
  ) -> Array:
    encoded = self.encode(
      encoder_input_tokens, encoder_segment_ids, encoder_positions, deterministic=deterministic
    )
    return self.decode(
      encoded,
      encoder_segment_ids,
      decoder_input_tokens,
      decoder_segment_ids,
      decoder_positions,
      deterministic=deterministic,
      decode=decode,
      hidden_only=hidden_only,
    )


class EncoderDecoderModel(base.TargetsLMModel):
  """Text-to-text (`pydoc_span_corruption`, prefix LM): loss on the decoder targets."""

  features = (
    "encoder_input_tokens",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_loss_weights",
    "decoder_segment_ids",
    "decoder_positions",
  )

  FEATURE_CONVERTER_CLS = EncDecFeatureConverter
  generative = True
  encoder_decoder = True
  DEFAULT_SWITCHES = {
    "init_scheme": "t5",
    "attention_scale": "none",
    "dropout_placement": "outputs+hidden+final",
  }

  def make_module(self) -> nn.Module:
    return EncoderDecoder(self.config)

  def output_kernel(self, params: Any) -> tuple[Array, bool]:
    if self.config.tie_embeddings:
      return params["token_embedder"]["embedding"], True
    return params["logits_dense"]["kernel"], False

  def flops_per_token(self, seq_len: int | Mapping[str, int]) -> float:
    """Per (inputs + targets) token: FLOPs per example / (Ti + Tt), with `seq_len` =
    {'inputs': Ti, 'targets': Tt}. Cross-attention k/v run over the encoder tokens, q/o over
    the decoder tokens."""
    if not isinstance(seq_len, Mapping) or not {"inputs", "targets"} <= set(seq_len):
      raise ValueError(
        "flops_per_token: an encoder-decoder needs lengths "
        f"{{'inputs': ..., 'targets': ...}}, found {seq_len!r}"
      )
    c = self.config
    d, width = c.d_model, base.attention_width(c)
    layer_params = base.layer_matmul_params(c)
    inputs, targets = int(seq_len["inputs"]), int(seq_len["targets"])
    encoder_layers = c.num_layers
    decoder_layers = c.num_decoder_layers or c.num_layers
    # Per example: matmul weights times the tokens they are applied to.
    weight_token_products = (
      inputs * encoder_layers * layer_params
      + targets * decoder_layers * (layer_params + 2 * d * width)  # + cross-attention q, o
      + inputs * decoder_layers * 2 * d * width  # cross-attention k, v over the encoder tokens
      + targets * d * c.embedding_rows  # padded vocabulary rows compute too
    )
    attention = (
      12
      * width
      * (
        encoder_layers * inputs * inputs
        + decoder_layers * targets * targets
        + decoder_layers * targets * inputs  # cross-attention
      )
    )
    return float(6 * weight_token_products + attention) / (inputs + targets)

  def hidden_states(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """The encoder's output (in the compute dtype)."""
    return self.encode(params, batch)

  def feature_lengths(self, model_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    inputs = self.stack_length(model_feature_lengths, "encoder", "encoder_decoder")
    targets = self.stack_length(model_feature_lengths, "decoder", "encoder_decoder")
    return {name: inputs if name.startswith("encoder") else targets for name in self.features}

  def default_lengths(self) -> dict[str, int]:
    return {"encoder_input_tokens": 8, "decoder_target_tokens": 4}

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    inputs = batch["encoder_input_tokens"]
    decoder_inputs = batch["decoder_input_tokens"]
    targets = batch.get("decoder_target_tokens", decoder_inputs)
    return dict(
      encoder_input_tokens=inputs,
      encoder_segment_ids=base.segment_ids_or_default(batch, "encoder", inputs),
      encoder_positions=base.positions_or_default(batch, "encoder", inputs),
      decoder_input_tokens=decoder_inputs,
      decoder_segment_ids=base.segment_ids_or_default(batch, "decoder", targets),
      decoder_positions=base.positions_or_default(batch, "decoder", decoder_inputs),
    )

  # --- decoding -------------------------------------------------------------------------------

  def encode(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """Encoder output [batch, inputs_length, embed] of `encoder_input_tokens`."""
    inputs = self.module_inputs({**batch, "decoder_input_tokens": batch["encoder_input_tokens"]})
    return self.module.apply(
      {"params": params},
      inputs["encoder_input_tokens"],
      inputs["encoder_segment_ids"],
      inputs["encoder_positions"],
      method=EncoderDecoder.encode,
    )

  def init_cache(self, batch_size: int, max_length: int, inputs_length: int) -> Any:
    """The zero KV cache for decoding up to `max_length` target tokens."""
    config = self.config

    def make():
      encoded = jnp.zeros((batch_size, inputs_length, config.d_model), jnp.float32)
      ones = jnp.ones((batch_size, inputs_length), jnp.int32)
      tokens = jnp.zeros((batch_size, max_length), jnp.int32)
      return self.module.init(
        jax.random.key(0), encoded, ones, tokens, jnp.ones_like(tokens), tokens,
        decode=True, method=EncoderDecoder.decode,
      )["cache"]  # fmt: skip

    shapes = jax.eval_shape(make)  # no parameter is allocated
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def decode_step(
    self,
    params: Any,
    cache: Any,
    tokens: Array,
    positions: Array,
    *,
    encoded: Array,
    encoder_segment_ids: Array | None = None,
  ) -> tuple[Array, Any]:
    """Logits [batch, n, vocab] of n new decoder tokens [batch, n] at `positions`; new cache."""
    if encoder_segment_ids is None:
      encoder_segment_ids = jnp.ones(encoded.shape[:2], jnp.int32)
    logits, variables = self.module.apply(
      {"params": params, "cache": cache},
      encoded,
      encoder_segment_ids,
      tokens,
      jnp.ones_like(tokens),
      positions,
      decode=True,
      mutable=["cache"],
      method=EncoderDecoder.decode,
    )
    return logits, variables["cache"]
