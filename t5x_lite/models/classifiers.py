"""Fine-tuning heads on the pre-training backbones (`config.model.head`).

  head='classification'        one label per example
      encoder (BERT): the [CLS] state (first position of each segment) through the pre-trained
                      pooler (dense + tanh; a fresh one when the backbone has no NSP pooler)
      decoder (GPT):  the state of the last token of each segment; loss
                      L3 = L2 + lm_loss_weight · L1 (GPT's fine-tuning objective: classification
                      loss plus λ times the language-model loss on the same inputs)
  head='token_classification'  one label per token (NER-style tags), encoder only

The backbone is the family's own module, unchanged: its parameters keep their names (so
`train.init_from` a pre-trained run matches them one to one) and the head adds one new
top-level collection, `classification_head`. The backbone's last hidden state is read with
flax's `capture_intermediates` (the output of its `encoder` / `decoder` Stack); parts of the
backbone the head does not use (the MLM decoder) are dead code under jit and are not computed.

Model features (from data/feature_converters.ClassificationFeatureConverter), besides the backbone's:
  classification_labels        [batch, length] int32 label at each classified position, else 0
  classification_loss_weights  [batch, length] float32 1 at each classified position, else 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.data.feature_converters import ClassificationFeatureConverter
from t5x_lite.models import base, layers
from t5x_lite.models.config import SWITCHES, ModelConfig
from t5x_lite.partitioning import MLP

Array = jax.Array
HEAD = "classification_head"  # the parameters a pre-trained checkpoint does not have
HEADS = ("classification", "token_classification")
LABEL_FEATURES = ("classification_labels", "classification_loss_weights")


class ClassificationHead(nn.Module):
  """[..., embed] -> float32 logits [..., num_labels] (optional dense + tanh pooler first)."""

  config: ModelConfig
  pooler: bool = False

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    config = self.config
    dtype = layers.compute_dtype(config)
    if self.pooler:
      x = layers.DenseGeneral((config.d_model,), (MLP,), dtype=dtype, name="pooler")(x)
      x = jnp.tanh(x.astype(jnp.float32)).astype(dtype)
    x = layers.dropout(config, x, deterministic)
    return layers.DenseGeneral(
      (config.num_labels,), (None,), dtype=dtype, name="classifier"
    )(x).astype(jnp.float32)  # fmt: skip


def classification_loss(logits: Array, labels: Array, weights: Array) -> tuple[Array, base.Metrics]:
  """Mean cross-entropy over `weights`; logits [b, l, n], labels and weights [b, l]."""
  weights = weights.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  label_log_prob = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), -1)[..., 0]
  count = jnp.sum(weights)
  total = -jnp.sum(label_log_prob * weights)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  metrics = {
    "loss": (total, count),
    "accuracy": (jnp.sum(correct * weights), count),
    "classification_loss": (total, count),
  }
  return total / jnp.maximum(count, 1e-8), metrics


class ClassifierModel(base.BaseModel):
  """A family's backbone (its module and parameters, unchanged) plus a classification head."""

  def __init__(self, config: ModelConfig, backbone: base.BaseModel):
    """`backbone`: the family's model built from `config` without the head (build_model)."""
    if config.head not in HEADS:
      raise ValueError(f"model.head={config.head!r}: expected one of {', '.join(HEADS)}")
    if config.num_labels < 2 and config.head == "classification":
      raise ValueError(f"model.num_labels={config.num_labels}: a classifier needs at least 2")
    if config.num_labels < 1:
      raise ValueError(f"model.num_labels={config.num_labels}: expected a positive int")
    if config.family == "encoder_decoder":
      raise ValueError(
        "model.head: encoder-decoder models fine-tune as text-to-text (labels as target text); "
        "classification heads exist for family 'encoder' and 'decoder'"
      )
    if config.head == "token_classification" and config.family != "encoder":
      raise ValueError("model.head='token_classification' needs model.family='encoder'")
    self.backbone = backbone
    # The backbone's layer switches (its family's defaults) are the classifier's too.
    config = dataclasses.replace(config, **{k: getattr(backbone.config, k) for k in SWITCHES})
    self.reads_cls = backbone.reads_cls  # BERT classifies [CLS]; GPT its last token
    drop = {"encoder_target_tokens", "encoder_loss_weights", "nsp_labels"}
    self.features = tuple(f for f in self.backbone.features if f not in drop) + LABEL_FEATURES
    self.prefix = "encoder" if config.family == "encoder" else "decoder"
    # The encoder's pre-trained NSP pooler is reused for [CLS]; otherwise the head has its own.
    self.backbone_pooler = config.family == "encoder" and config.nsp
    self.head = ClassificationHead(
      config, pooler=config.head == "classification" and not self.backbone_pooler
    )
    super().__init__(config)

  def make_module(self) -> nn.Module:
    return self.backbone.module

  def feature_converter(self, pack: bool = True) -> Any:
    return ClassificationFeatureConverter(
      self.prefix, self.config.head, pack=pack, start_id=self.config.decoder_start_id
    )

  def flops_per_token(self, seq_len) -> float:
    """The backbone's (the head's few weights per classified position are not counted)."""
    return self.backbone.flops_per_token(seq_len)

  def hidden_states(self, params: Any, batch: Mapping[str, Array]) -> Array:
    backbone_params = {k: v for k, v in params.items() if k != HEAD}
    return self.backbone.hidden_states(backbone_params, batch)

  def frame_text(self, tokens, vocabulary, length: int) -> list[int]:
    return self.backbone.frame_text(tokens, vocabulary, length)

  def feature_lengths(self, model_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    lengths = self.backbone.feature_lengths(model_feature_lengths)
    length = next(iter(lengths.values()))
    return {name: lengths.get(name, length) for name in self.features}

  def default_lengths(self) -> dict[str, int]:
    return self.backbone.default_lengths()

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    return self.backbone.module_inputs(batch)

  def init(self, rng: Array, input_shapes: Mapping[str, Any]) -> Any:
    backbone_rng, head_rng = jax.random.split(rng)
    shapes = {k: v for k, v in input_shapes.items() if k in self.backbone.features}
    params = dict(self.backbone.init(backbone_rng, shapes))
    hidden = jnp.zeros((1, self.config.d_model), layers.compute_dtype(self.config))
    params[HEAD] = self.head.init({"params": head_rng}, hidden)["params"]
    return params

  # --- forward -------------------------------------------------------------------------------

  def forward(
    self,
    params: Any,
    batch: Mapping[str, Array],
    rng: Array | None = None,
    deterministic: bool = True,
  ) -> tuple[Array, Array | None]:
    """(class logits [batch, length, num_labels], LM logits [batch, length, vocab] or None)."""
    backbone_params = {k: v for k, v in params.items() if k != HEAD}
    stack = (self.prefix,)
    wanted = {stack, ("pooler",)}
    rngs = {"dropout": rng} if rng is not None else {}
    outputs, state = self.backbone.module.apply(
      {"params": backbone_params},
      **self.backbone.module_inputs(batch),
      deterministic=deterministic,
      rngs=rngs,
      capture_intermediates=lambda m, name: name == "__call__" and tuple(m.path) in wanted,
      mutable=["intermediates"],
    )
    captured = state["intermediates"]
    hidden = captured[self.prefix]["__call__"][0]  # [batch, length, embed]
    if self.config.head == "classification" and self.backbone_pooler:
      pre = captured["pooler"]["__call__"][0]
      hidden = jnp.tanh(pre.astype(jnp.float32)).astype(hidden.dtype)
    head_rngs = {"dropout": jax.random.fold_in(rng, 1)} if rng is not None else {}
    logits = self.head.apply({"params": params[HEAD]}, hidden, deterministic, rngs=head_rngs)
    lm_logits = outputs if self.config.family == "decoder" else None
    return logits, lm_logits

  def loss(
    self,
    params: Any,
    batch: Mapping[str, Array],
    rng: Array | None = None,
    deterministic: bool = False,
  ) -> tuple[Array, base.Metrics]:
    logits, lm_logits = self.forward(params, batch, rng, deterministic or rng is None)
    loss, metrics = classification_loss(
      logits, batch["classification_labels"], batch["classification_loss_weights"]
    )
    weight = self.config.lm_loss_weight
    if lm_logits is not None and weight > 0:
      targets = batch["decoder_target_tokens"]
      lm_weights = batch.get("decoder_loss_weights", (targets > 0).astype(jnp.float32))
      lm_loss, lm_metrics = base.weighted_lm_loss(lm_logits, targets, lm_weights)
      loss = loss + weight * lm_loss
      count = metrics["loss"][1]
      metrics["loss"] = (loss * count, count)
      metrics["lm_loss"] = lm_metrics["loss"]
      metrics["token_accuracy"] = lm_metrics["accuracy"]
    return loss, metrics

  def classify(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """Log-probabilities [batch, length, num_labels] at every position (read the weighted ones)."""
    logits, _ = self.forward(params, batch)
    return jax.nn.log_softmax(logits, axis=-1)

  def score(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """[batch] sum of log p(label) over the classified positions."""
    log_probs = self.classify(params, batch)
    labels = batch["classification_labels"].astype(jnp.int32)
    label_log_prob = jnp.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    return jnp.sum(label_log_prob * batch["classification_loss_weights"], axis=-1)

  def apply_logits(self, params, batch, rng=None, deterministic=True) -> Array:
    """Class logits [batch, length, num_labels]."""
    return self.forward(params, batch, rng, deterministic)[0]
