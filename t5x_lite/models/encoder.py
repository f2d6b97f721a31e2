"""BERT-style encoder: masked-LM pre-training with an optional next-sentence-prediction head.

Token + learned position + token-type embeddings, LayerNorm, dropout; post-LN blocks with
bidirectional segment-aware attention; MLM head = dense + GELU (erf) + LayerNorm + tied decoder
(h·Eᵀ) + bias; NSP head = tanh pooler (dense) on each sequence's [CLS] + a 2-way classifier.

Loss = MLM cross-entropy (mean over `encoder_loss_weights`) + NSP cross-entropy (mean over the
[CLS] positions: the first position of every segment, where `nsp_labels` is read; label 0 = B
follows A, 1 = random B, the Hugging Face convention). With `nsp=False` (BertForMaskedLM) there is
no pooler and no NSP head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.data.feature_converters import EncoderFeatureConverter
from t5x_lite.models import base, layers, vocab_padding
from t5x_lite.models.transformer import Stack
from t5x_lite.partitioning import BATCH, EMBED, LENGTH, MLP, VOCAB

Array = jax.Array


class BertEncoder(nn.Module):
  """tokens [batch, length] -> {'mlm_logits' [b, l, vocab], 'nsp_logits' [b, l, 2] (if nsp)}."""

  config: Any

  @nn.compact
  def __call__(
    self,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    encoder_positions: Array,
    encoder_token_type_ids: Array,
    *,
    deterministic: bool = True,
  ) -> dict[str, Array]:
    config = self.config
    dtype = layers.compute_dtype(config)
    width = config.embedding_dim or config.d_model  # ALBERT factorises: E, then E -> d_model
    embed = layers.Embed(config.embedding_rows, width, dtype=dtype, name="token_embedder")
    x = embed(encoder_input_tokens)  # [batch, length, embed]
    if config.position == "learned":
      x = x + layers.Embed(
        config.max_length, width, dtype=dtype, axes=(LENGTH, EMBED),
        name="position_embedder",
      )(encoder_positions + config.position_offset)  # fmt: skip
    if config.type_vocab_size > 0:
      x = x + layers.Embed(
        config.type_vocab_size, width, dtype=dtype, axes=(None, EMBED),
        name="token_type_embedder",
      )(encoder_token_type_ids)  # fmt: skip
    if config.norm_position == "post":  # BERT normalizes the embeddings
      x = layers.make_norm(config, "embedding_norm")(x)
    x = layers.dropout(config, x, deterministic)
    if config.embedding_dim:  # ALBERT's embedding_hidden_mapping_in: E -> d_model
      x = layers.DenseGeneral(
        (config.d_model,), (MLP,), in_axes=(EMBED,), use_bias=config.use_bias, dtype=dtype,
        name="embedding_projection",
      )(x)  # fmt: skip
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
    x = Stack(config, config.num_layers, causal=False, name="encoder")(
      x, encoder_segment_ids, encoder_positions, deterministic=deterministic
    )

    # embed -> embed matrices: the output axis is named 'mlp' (one name may not occur twice).
    dense = lambda name, features=config.d_model: layers.DenseGeneral(  # noqa: E731
      (features,), (MLP,), in_axes=(EMBED,), use_bias=config.use_bias, dtype=dtype,
      name=name,
    )  # fmt: skip
    h = layers.activation_fn(config.activation)(dense("mlm_transform", width)(x))
    h = layers.make_norm(config, "mlm_norm")(h)
    if config.tie_embeddings:
      mlm_logits = embed.attend(h)
    else:
      mlm_logits = layers.DenseGeneral(
        (config.embedding_rows,), (VOCAB,), use_bias=False, dtype=dtype, name="mlm_decoder"
      )(h).astype(jnp.float32)
    mlm_bias = layers.param_with_axes(
      self, "mlm_bias", nn.initializers.zeros, (config.embedding_rows,), (VOCAB,)
    )
    mlm_logits = vocab_padding.mask_padded_logits(mlm_logits + mlm_bias, config.vocab_size)
    outputs = {"mlm_logits": nn.with_logical_constraint(mlm_logits, (BATCH, LENGTH, VOCAB))}
    if config.nsp:
      # The pooler runs at every position (one d x d matmul, ~1/12 of a layer) so that packed
      # rows get a [CLS] output per segment; the loss reads the segment starts.
      pooled = jnp.tanh(dense("pooler")(x).astype(jnp.float32)).astype(dtype)
      outputs["nsp_logits"] = layers.DenseGeneral(
        (2,), (None,), use_bias=True, dtype=dtype, name="nsp"
      )(pooled).astype(jnp.float32)
    return outputs


class EncoderModel(base.BaseModel):
  """BERT pre-training (`pydoc_mlm`): MLM (+ NSP when `config.nsp`)."""

  features = (
    "encoder_input_tokens",
    "encoder_target_tokens",
    "encoder_loss_weights",
    "encoder_segment_ids",
    "encoder_positions",
    "encoder_token_type_ids",
    "nsp_labels",
  )

  FEATURE_CONVERTER_CLS = EncoderFeatureConverter
  reads_cls = True
  DEFAULT_SWITCHES = {
    "init_scheme": "bert",
    "attention_scale": "rsqrt_head_dim",
    "dropout_placement": "outputs",
  }

  def make_module(self) -> nn.Module:
    return BertEncoder(self.config)

  def flops_per_token(self, seq_len: int | Mapping[str, int]) -> float:
    """One bidirectional stack, plus BERT's MLM head transform (a d x d dense before the tied
    output); the NSP pooler runs at [CLS] positions only and is not counted."""
    d = self.config.d_model
    return base.single_stack_flops_per_token(
      self.config, base.sequence_length(seq_len), extra_params=d * d
    )

  def hidden_states(self, params: Any, batch: Mapping[str, Array]) -> Array:
    return self.captured_stack_output(params, batch, "encoder")

  def frame_text(self, tokens, vocabulary, length: int) -> list[int]:
    """[CLS] text [SEP], as `nsp_pairs` / `classification` frame a segment."""
    return [vocabulary.cls_id] + list(tokens[: length - 2]) + [vocabulary.sep_id]

  def feature_lengths(self, model_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    length = self.stack_length(model_feature_lengths, "encoder", "encoder")
    return {name: length for name in self.features}

  def default_lengths(self) -> dict[str, int]:
    return {"encoder_input_tokens": 8}

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    tokens = batch["encoder_input_tokens"]
    type_ids = batch.get("encoder_token_type_ids")
    return dict(
      encoder_input_tokens=tokens,
      encoder_segment_ids=base.segment_ids_or_default(batch, "encoder", tokens),
      encoder_positions=base.positions_or_default(batch, "encoder", tokens),
      encoder_token_type_ids=jnp.zeros_like(tokens) if type_ids is None else type_ids,
    )

  def apply_logits(self, params, batch, rng=None, deterministic=True) -> Array:
    """MLM logits [batch, length, vocab] (float32)."""
    return self.apply_outputs(params, batch, rng, deterministic)["mlm_logits"]

  def apply_outputs(self, params, batch, rng=None, deterministic=True) -> dict[str, Array]:
    rngs = {"dropout": rng} if rng is not None else {}
    return self.module.apply(
      {"params": params}, **self.module_inputs(batch), deterministic=deterministic, rngs=rngs
    )

  def loss(
    self,
    params: Any,
    batch: Mapping[str, Array],
    rng: Array | None = None,
    deterministic: bool = False,
  ) -> tuple[Array, base.Metrics]:
    outputs = self.apply_outputs(params, batch, rng, deterministic or rng is None)
    targets = batch["encoder_target_tokens"]
    weights = batch.get("encoder_loss_weights")
    if weights is None:
      weights = (targets > 0).astype(jnp.float32)
    mlm_loss, metrics = base.weighted_lm_loss(
      outputs["mlm_logits"], targets, weights, self.config.z_loss, self.config.label_smoothing
    )
    metrics["mlm_loss"] = metrics["loss"]
    if not self.config.nsp:
      return mlm_loss, metrics
    nsp_loss, nsp_metrics = self._nsp_loss(outputs["nsp_logits"], batch)
    metrics.update(nsp_metrics)
    loss = mlm_loss + nsp_loss
    num_tokens = metrics["loss"][1]
    metrics["loss"] = (loss * num_tokens, num_tokens)
    return loss, metrics

  def _nsp_loss(self, nsp_logits: Array, batch: Mapping[str, Array]) -> tuple[Array, base.Metrics]:
    """Cross-entropy of the [CLS] positions (first position of each segment)."""
    inputs = self.module_inputs(batch)
    segment_ids, positions = inputs["encoder_segment_ids"], inputs["encoder_positions"]
    labels = batch["nsp_labels"]
    if labels.ndim == 1:  # one label per row (unpacked): at position 0
      labels = jnp.broadcast_to(labels[:, None], segment_ids.shape)
    is_cls = ((positions == 0) & (segment_ids > 0)).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(nsp_logits, axis=-1)  # [batch, length, 2]
    label_log_prob = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), -1)[..., 0]
    count = jnp.sum(is_cls)
    total = -jnp.sum(label_log_prob * is_cls)
    correct = (jnp.argmax(nsp_logits, -1) == labels).astype(jnp.float32)
    metrics = {"nsp_loss": (total, count), "nsp_accuracy": (jnp.sum(correct * is_cls), count)}
    return total / jnp.maximum(count, 1e-8), metrics

  def score(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """[batch] sum over the masked positions of log p(original token)."""
    logits = self.apply_logits(params, batch)
    targets = batch["encoder_target_tokens"]
    weights = batch.get("encoder_loss_weights", (targets > 0).astype(jnp.float32))
    _, _, log_prob = base.cross_entropy_with_logits(logits, targets)
    return jnp.sum(log_prob * weights, axis=-1)
