"""The model interface every family implements, and the shared losses.

A `BaseModel` holds a frozen `ModelConfig` and a linen module. The trainer, evaluator and decoder
only use this surface (never a family branch):

  model.feature_converter(pack)                  -> data.feature_converters.*FeatureConverter
  model.input_shapes(batch_size, model_lengths)  -> {feature: jax.ShapeDtypeStruct}
  model.init(rng, input_shapes)                  -> params, leaves boxed (nn.LogicallyPartitioned)
  model.loss(params, batch, rng, deterministic)  -> (loss, {name: (numerator, denominator)})
  model.score(params, batch)                     -> [batch] sum of target log-likelihoods
  model.apply_logits(params, batch)              -> float32 logits of the batch's targets
  model.hidden_states(params, batch)             -> float32 last hidden states [batch, length, d]
  model.flops_per_token(task_feature_lengths)    -> training FLOPs per token (PaLM accounting)
  type(model).FEATURE_CONVERTER_CLS              -> the converter class the family reads

Each family owns its facts (converter, FLOPs, hidden states, input framing for inference, HF
mapping in convert/hf/<family>.py); nothing outside models/ branches on the family name.

`params` is the 'params' collection (boxed or unboxed: flax unboxes on read). `metrics['loss']`
is (loss · n, n) with n the number of target tokens (sum of loss weights): summing numerators and
denominators over microbatches and hosts gives the exact global mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5x_lite.data.feature_converters import FeatureConverter
from t5x_lite.models import chunked_loss
from t5x_lite.models.config import ModelConfig, with_defaults

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


def attention_width(config: ModelConfig) -> int:
  """num_heads x head_dim: the width of q, k, v (head_dim 0 means d_model // num_heads)."""
  head_dim = config.head_dim or config.d_model // config.num_heads
  return config.num_heads * head_dim


def layer_matmul_params(config: ModelConfig) -> int:
  """Weights of the matmuls of one self-attention block: q, k, v, o and the MLP (gated: wi_0,
  wi_1 and wo; otherwise wi and wo)."""
  mlp_matrices = 3 if config.activation.startswith("gated") else 2
  return 4 * config.d_model * attention_width(config) + mlp_matrices * config.d_model * config.d_ff


def sequence_length(seq_len: int | Mapping[str, int]) -> int:
  """One stack's tokens: an int, or a dict of task feature lengths whose sum it is (a decoder-only
  prefix LM packs inputs and targets into one sequence)."""
  return sum(map(int, seq_len.values())) if isinstance(seq_len, Mapping) else int(seq_len)


def single_stack_flops_per_token(config: ModelConfig, length: int, extra_params: int = 0) -> float:
  """PaLM's 6·N + 12·L·width·T for one stack of `config.num_layers` layers over T tokens, with
  N = the layers' matmul weights + the output projection (+ `extra_params` per token)."""
  params = config.num_layers * layer_matmul_params(config) + config.d_model * config.embedding_rows
  params += extra_params
  return float(6 * params + 12 * config.num_layers * attention_width(config) * length)


class BaseModel:
  """One family's model: a frozen config, a linen module, and the shared interface."""

  # Model features of this family, in the order documented in docs/architecture.md.
  features: tuple[str, ...] = ()
  # The feature converter the family reads (as t5x's `FEATURE_CONVERTER_CLS`).
  FEATURE_CONVERTER_CLS: type[FeatureConverter] | None = None
  # What callers may ask of the family, instead of testing its name:
  generative = False  # generates text (decoding.generate_*): the decoder and the encoder-decoder
  encoder_decoder = False  # generates from encoder inputs (T5), not by continuing a prompt
  reads_cls = False  # the first position ([CLS]) summarizes the sequence (BERT)
  # The family's layer switches (ModelConfig.init_scheme, ...), used where the config leaves ''.
  DEFAULT_SWITCHES: dict[str, str] = {}

  def __init__(self, config: ModelConfig):
    self.config = with_defaults(config, self.DEFAULT_SWITCHES)
    self.module = self.make_module()

  def make_module(self) -> nn.Module:
    raise NotImplementedError

  def feature_converter(self, pack: bool = True) -> FeatureConverter:
    """The family's converter (`FEATURE_CONVERTER_CLS`): task features -> model features."""
    return self.FEATURE_CONVERTER_CLS(pack=pack, start_id=self.config.decoder_start_id)

  def flops_per_token(self, seq_len: int | Mapping[str, int]) -> float:
    """Training FLOPs (forward + backward) per token, PaLM accounting (Chowdhery et al. 2022,
    App. B): 6·N + 12·L·(num_heads·head_dim)·T per token, where N counts the weights of every
    matmul applied per token (q, k, v, o, the MLP, the output projection onto the vocabulary,
    tied or not), not embedding lookups, biases or norms; the second term is the attention
    scores and weighted sum (QKᵀ and AV), causal masking not discounted. Rematerialization is
    not counted: these are model FLOPs, for MFU.

    `seq_len`: an int, or the task feature lengths ({'targets': T}, {'inputs': Ti, ...}).
    """
    raise NotImplementedError

  def hidden_states(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """float32 last hidden states [batch, length, d_model] of the stack that reads the text
    (the encoder, or the decoder of a decoder-only model)."""
    raise NotImplementedError

  def frame_text(self, tokens: Sequence[int], vocabulary: Any, length: int) -> list[int]:
    """One text's token ids as this family's pre-training framed a sequence (e.g. BERT's
    [CLS] ... [SEP]; text + EOS otherwise), cut to `length`."""
    return list(tokens[: length - 1]) + [vocabulary.eos_id]

  def captured_stack_output(self, params: Any, batch: Mapping[str, Array], stack: str) -> Array:
    """The output of the module's sub-module `stack` (its last hidden states), float32."""
    _, state = self.module.apply(
      {"params": params},
      **self.module_inputs(batch),
      deterministic=True,
      capture_intermediates=lambda m, name: name == "__call__" and tuple(m.path) == (stack,),
      mutable=["intermediates"],
    )
    return state["intermediates"][stack]["__call__"][0].astype(jnp.float32)

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
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = (targets > 0).astype(jnp.float32)
    if self.config.loss_chunk_size:
      return self.chunked_loss(params, batch, targets, weights, rng, deterministic or rng is None)
    logits = self.apply_logits(params, batch, rng, deterministic or rng is None)
    return weighted_lm_loss(
      logits, targets, weights, self.config.z_loss, self.config.label_smoothing
    )

  def output_kernel(self, params: Any) -> tuple[Array, bool]:
    """(kernel, transposed) of the projection onto the vocabulary: a tied embedding [V, d]
    (transposed) or an output layer [d, V]; for `loss_chunk_size` (models/chunked_loss.py)."""
    raise NotImplementedError

  def chunked_loss(
    self, params: Any, batch: Mapping[str, Array], targets: Array, weights: Array, rng, det: bool
  ) -> tuple[Array, Metrics]:
    """The loss and metrics of `weighted_lm_loss`, from the last hidden states, `loss_chunk_size`
    tokens at a time (never the whole [tokens, vocab] logits)."""
    rngs = {"dropout": rng} if rng is not None else {}
    hidden = self.module.apply(
      {"params": params}, **self.module_inputs(batch), deterministic=det, rngs=rngs,
      hidden_only=True,
    )  # fmt: skip
    kernel, transposed = self.output_kernel(params)
    weights = weights.astype(jnp.float32)
    total, sums = chunked_loss.chunked_cross_entropy(
      hidden, nn.meta.unbox(kernel), targets, weights, chunk=self.config.loss_chunk_size,
      transposed=transposed, dtype=jnp.dtype(self.config.dtype), z_loss=self.config.z_loss,
      label_smoothing=self.config.label_smoothing,
    )  # fmt: skip
    num_tokens = jnp.sum(weights)
    metrics = {
      "loss": (total, num_tokens),
      "accuracy": (sums["correct"], num_tokens),
      "z_loss": (sums["z_loss"], num_tokens),
    }
    return total / jnp.maximum(num_tokens, 1e-8), metrics

  def score(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """[batch] sum over target tokens (loss weights) of log p(target | inputs and prefix)."""
    logits = self.apply_logits(params, batch)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights", (targets > 0).astype(jnp.float32))
    _, _, log_prob = cross_entropy_with_logits(logits, targets)
    return jnp.sum(log_prob * weights, axis=-1)
