"""The model interface every family implements, and the shared losses.

A `BaseModel` holds a frozen `ModelConfig` and a linen module. The trainer, evaluator and decoder
only use this surface (never a family branch):

  model.feature_converter(pack)                  -> data.feature_converters.*FeatureConverter
  model.input_shapes(batch_size, model_lengths)  -> {feature: jax.ShapeDtypeStruct}
  model.init(rng, input_shapes)                  -> params, leaves boxed (nn.LogicallyPartitioned)
  model.loss(params, batch, rng, deterministic)  -> (loss, {name: (numerator, denominator)})
  model.score(params, batch)                     -> [batch] sum of target log-likelihoods
  model.apply_logits(params, batch)              -> float32 logits of the batch's targets

`params` is the 'params' collection (boxed or unboxed: flax unboxes on read). `metrics['loss']`
is (loss · n, n) with n the number of target tokens (sum of loss weights): summing numerators and
denominators over microbatches and hosts gives the exact global mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.models.config import ModelConfig

Array = jax.Array
Metrics = dict[str, tuple[Array, Array]]


def cross_entropy_with_logits(
  logits: Array, targets: Array, z_loss: float = 0.0, label_smoothing: float = 0.0
) -> tuple[Array, Array, Array]:
  """Per-token softmax cross-entropy in float32 (as t5x `cross_entropy_with_logits`).

  logits [..., vocab], targets [...] int. Returns (loss, z_term, target_log_prob), each [...]:
  loss = cross-entropy (+ z_loss · logsumexp²). With label smoothing the target distribution puts
  1 - s on the target and s / (vocab - 1) elsewhere, and its entropy is subtracted so that a
  perfect prediction has loss 0.
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  target_log_prob = target_logit - log_z
  if label_smoothing > 0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    normalizing = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    sum_log_probs = jnp.sum(logits, axis=-1) - vocab * log_z
    loss = -(confidence * target_log_prob + low * (sum_log_probs - target_log_prob)) - normalizing
  else:
    loss = -target_log_prob
  z_term = z_loss * jnp.square(log_z)
  return loss + z_term, z_term, target_log_prob


def weighted_lm_loss(
  logits: Array, targets: Array, weights: Array, z_loss: float = 0.0, label_smoothing: float = 0.0
) -> tuple[Array, Metrics]:
  """Sum of token losses over `weights` / sum of weights, with (numerator, denominator) metrics.

  logits [batch, length, vocab] float32, targets [batch, length], weights [batch, length].
  """
  weights = weights.astype(jnp.float32)
  token_loss, z_term, _ = cross_entropy_with_logits(logits, targets, z_loss, label_smoothing)
  num_tokens = jnp.sum(weights)
  total = jnp.sum(token_loss * weights)
  # The target is the prediction iff its logit is the largest (ties count as correct). Cheaper
  # than argmax: the max shares the logsumexp's pass over the [batch, length, vocab] logits.
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = (target_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  metrics = {
    "loss": (total, num_tokens),
    "accuracy": (jnp.sum(correct * weights), num_tokens),
    "z_loss": (jnp.sum(z_term * weights), num_tokens),
  }
  return total / jnp.maximum(num_tokens, 1e-8), metrics


def segment_ids_or_default(batch: Mapping[str, Array], prefix: str, tokens: Array) -> Array:
  """`{prefix}_segment_ids`, or for unpacked batches 1 where `tokens` > 0 (0 = padding)."""
  ids = batch.get(f"{prefix}_segment_ids")
  if ids is not None:
    return ids
  return (tokens > 0).astype(jnp.int32)


def positions_or_default(batch: Mapping[str, Array], prefix: str, tokens: Array) -> Array:
  positions = batch.get(f"{prefix}_positions")
  if positions is not None:
    return positions
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


class BaseModel:
  """One family's model: a frozen config, a linen module, and the shared interface."""

  # Model features of this family, in the order documented in docs/architecture.md.
  features: tuple[str, ...] = ()

  def __init__(self, config: ModelConfig):
    self.config = config
    self.module = self.make_module()

  def make_module(self) -> nn.Module:
    raise NotImplementedError

  def feature_converter(self, pack: bool = True) -> Any:
    raise NotImplementedError

  def feature_lengths(self, model_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    """Length of every model feature of this family, from the model feature lengths."""
    raise NotImplementedError

  @staticmethod
  def stack_length(lengths: Mapping[str, int], stack: str, family: str) -> int:
    """The `stack` ('encoder' | 'decoder') length from any of the ways callers name it.

    Accepted, in order: a model feature ('decoder_target_tokens'), a feature converter's
    model_feature_lengths ({'decoder': 256}), or task feature lengths ({'targets': 256}; a
    decoder-only model reads inputs + targets, as the prefix-LM converter packs both).
    """
    feature = {"encoder": "encoder_input_tokens", "decoder": "decoder_target_tokens"}[stack]
    for key in (feature, stack):
      if key in lengths:
        return int(lengths[key])
    if stack == "encoder" and "inputs" in lengths:
      return int(lengths["inputs"])
    if stack == "decoder" and "targets" in lengths:
      extra = int(lengths.get("inputs", 0)) if family == "decoder" else 0
      return int(lengths["targets"]) + extra
    raise ValueError(
      f"feature lengths {dict(lengths)}: no length for the {stack} (expected '{feature}', "
      f"'{stack}' or '{'inputs' if stack == 'encoder' else 'targets'}')"
    )

  def input_shapes(
    self, batch_size: int, model_feature_lengths: Mapping[str, int]
  ) -> dict[str, jax.ShapeDtypeStruct]:
    """{feature: ShapeDtypeStruct [batch, length]}: int32, loss weights float32."""
    lengths = self.feature_lengths(model_feature_lengths)
    return {
      name: jax.ShapeDtypeStruct(
        (batch_size, lengths[name]), jnp.float32 if name.endswith("loss_weights") else jnp.int32
      )
      for name in self.features
    }

  def dummy_batch(self, input_shapes: Mapping[str, Any]) -> dict[str, Array]:
    batch = {}
    for name, shape in input_shapes.items():
      batch[name] = jnp.ones(shape.shape, shape.dtype)
    return batch

  def init(self, rng: Array, input_shapes: Mapping[str, Any]) -> Any:
    """Boxed parameters (nn.LogicallyPartitioned leaves) for batches of `input_shapes`."""
    params_rng, dropout_rng = jax.random.split(rng)
    variables = self.module.init(
      {"params": params_rng, "dropout": dropout_rng},
      **self.module_inputs(self.dummy_batch(input_shapes)),
      deterministic=True,
    )
    return variables["params"]

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    """The keyword arguments of the module's __call__ taken from a batch."""
    raise NotImplementedError

  def apply_logits(
    self,
    params: Any,
    batch: Mapping[str, Array],
    rng: Array | None = None,
    deterministic: bool = True,
  ) -> Array:
    """float32 logits [batch, length, vocab] of the batch's targets."""
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
  ) -> tuple[Array, Metrics]:
    raise NotImplementedError

  def score(self, params: Any, batch: Mapping[str, Array]) -> Array:
    raise NotImplementedError

  def num_params(self, input_shapes: Mapping[str, Any] | None = None) -> int:
    """Parameter count via jax.eval_shape (no allocation)."""
    shapes = input_shapes or self.input_shapes(1, self.default_lengths())
    abstract = jax.eval_shape(self.init, jax.random.key(0), shapes)
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(abstract))
    return int(sum(leaf.size for leaf in leaves))

  def default_lengths(self) -> dict[str, int]:
    """Small model feature lengths for shape-only work (parameter counts)."""
    raise NotImplementedError


class TargetsLMModel(BaseModel):
  """A family whose loss is next-token cross-entropy on `decoder_target_tokens` (GPT, T5)."""

  def loss(
    self,
    params: Any,
    batch: Mapping[str, Array],
    rng: Array | None = None,
    deterministic: bool = False,
  ) -> tuple[Array, Metrics]:
    logits = self.apply_logits(params, batch, rng, deterministic or rng is None)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = (targets > 0).astype(jnp.float32)
    return weighted_lm_loss(
      logits, targets, weights, self.config.z_loss, self.config.label_smoothing
    )

  def score(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """[batch] sum over target tokens (loss weights) of log p(target | inputs and prefix)."""
    logits = self.apply_logits(params, batch)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights", (targets > 0).astype(jnp.float32))
    _, _, log_prob = cross_entropy_with_logits(logits, targets)
    return jnp.sum(log_prob * weights, axis=-1)
