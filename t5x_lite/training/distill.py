"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019): loss and student init.

  loss = α_ce·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + α_lm·LM + α_cos·(1 − cos(h_s, h_t))

with DistilBERT's defaults α_ce 5, α_lm 2, α_cos 1, T = 2. As DistilBERT's `distiller.py`
(restrict_ce_to_mask=False): the KL (`KLDivLoss(reduction='batchmean')` on the selected rows)
and the cosine term (`CosineEmbeddingLoss` with target 1) average over every non-padding token;
LM is the student's own MLM / causal-LM loss over its loss weights. For a decoder student the KL
is over next-token distributions. The teacher is frozen (`stop_gradient`) and runs inside the
same function, so under the jitted train step it runs on the same mesh.

`DistillationModel` wraps a student and a teacher with its params and exposes the student's
`loss` interface; `student_from_teacher` is DistilBERT's initialisation (every other layer).
Not yet wired into `RunSetup` / `t5x-lite train` (`config.distill`): see the issue-12 report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite.errors import ConfigError
from t5x_lite.models import base
from t5x_lite.models.base import BaseModel

Array = jax.Array
DEFAULTS = {"temperature": 2.0, "alpha_ce": 5.0, "alpha_lm": 2.0, "alpha_cos": 1.0}


def distillation_loss(
  student_logits: Array,
  teacher_logits: Array,
  student_hidden: Array,
  teacher_hidden: Array,
  token_weights: Array,
  lm_loss: Array,
  *,
  temperature: float = 2.0,
  alpha_ce: float = 5.0,
  alpha_lm: float = 2.0,
  alpha_cos: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """(loss, {'ce', 'cos'}): logits [b, l, vocab], hidden [b, l, d], token_weights [b, l]."""
  weights = token_weights.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1e-8)
  t = temperature
  log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)  # [b, l]
  ce = jnp.sum(kl * weights) / count * t**2
  s, h = student_hidden.astype(jnp.float32), teacher_hidden.astype(jnp.float32)
  # torch's cosine_similarity: x·y / max(|x|·|y|, eps), eps = 1e-8
  cos = jnp.sum(s * h, -1) / jnp.maximum(
    jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(h, axis=-1), 1e-8
  )
  cos_loss = jnp.sum((1.0 - cos) * weights) / count
  loss = alpha_ce * ce + alpha_lm * lm_loss + alpha_cos * cos_loss
  return loss, {"ce": ce, "cos": cos_loss}


def check_compatible(student: BaseModel, teacher: BaseModel, alpha_cos: float = 1.0) -> None:
  """One-line ConfigError when `teacher` cannot teach `student` (before anything compiles)."""
  s, t = student.config, teacher.config
  if type(student) is not type(teacher):
    raise ConfigError(
      f"distill.teacher is a {type(teacher).__name__}; the student is a "
      f"{type(student).__name__} (expected the same kind of model)"
    )
  if s.vocab_size != t.vocab_size:
    raise ConfigError(
      f"distill.teacher has vocab_size={t.vocab_size}; the student has {s.vocab_size} "
      "(the KL needs one vocabulary)"
    )
  if alpha_cos and s.d_model != t.d_model:
    raise ConfigError(
      f"distill.alpha_cos={alpha_cos} needs equal widths: teacher d_model={t.d_model}, "
      f"student {s.d_model} (set distill.alpha_cos=0)"
    )
  if student.encoder_decoder:
    raise ConfigError("distillation of encoder-decoder students is not supported")


def _stack_name(model: BaseModel) -> str:
  return "decoder" if model.generative else "encoder"


def logits_and_hidden(
  model: BaseModel, params: Any, batch: Mapping[str, Array], rng: Array | None, deterministic: bool
) -> tuple[Array, Array]:
  """float32 logits [b, l, vocab] and the stack output [b, l, d] of one forward pass."""
  stack = _stack_name(model)
  rngs = {"dropout": rng} if rng is not None and not deterministic else {}
  out, state = model.module.apply(
    {"params": params},
    **model.module_inputs(batch),
    deterministic=deterministic,
    rngs=rngs,
    capture_intermediates=lambda m, name: name == "__call__" and tuple(m.path) == (stack,),
    mutable=["intermediates"],
  )
  logits = out["mlm_logits"] if isinstance(out, dict) else out
  return logits, state["intermediates"][stack]["__call__"][0]


class DistillationModel:
  """The student's loss interface with the distillation loss of a frozen teacher."""

  def __init__(self, student: BaseModel, teacher: BaseModel, teacher_params: Any, **weights: float):
    unknown = sorted(set(weights) - set(DEFAULTS))
    if unknown:
      raise ConfigError(f"distill: unknown fields {unknown} (known: {sorted(DEFAULTS)})")
    self.weights = {**DEFAULTS, **weights}
    check_compatible(student, teacher, self.weights["alpha_cos"])
    self.student, self.teacher, self.teacher_params = student, teacher, teacher_params

  def __getattr__(self, name: str) -> Any:  # everything else is the student's
    return getattr(self.student, name)

  def loss(
    self, params: Any, batch: Mapping[str, Array], rng: Array | None = None,
    deterministic: bool = False,
  ) -> tuple[Array, base.Metrics]:  # fmt: skip
    student, prefix = self.student, _stack_name(self.student)
    logits, hidden = logits_and_hidden(student, params, batch, rng, deterministic or rng is None)
    t_logits, t_hidden = logits_and_hidden(self.teacher, self.teacher_params, batch, None, True)
    t_logits, t_hidden = jax.lax.stop_gradient(t_logits), jax.lax.stop_gradient(t_hidden)
    targets = batch[f"{prefix}_target_tokens"]
    weights = batch.get(f"{prefix}_loss_weights")
    if weights is None:
      weights = (targets > 0).astype(jnp.float32)
    lm_loss, metrics = base.weighted_lm_loss(logits, targets, weights)
    tokens = student.module_inputs(batch)[f"{prefix}_segment_ids"] > 0
    loss, parts = distillation_loss(logits, t_logits, hidden, t_hidden, tokens, lm_loss,
                                    **self.weights)  # fmt: skip
    num_tokens = metrics["loss"][1]
    metrics["lm_loss"] = metrics["loss"]
    metrics["distill_ce"] = (parts["ce"] * num_tokens, num_tokens)
    metrics["distill_cos"] = (parts["cos"] * num_tokens, num_tokens)
    metrics["loss"] = (loss * num_tokens, num_tokens)
    return loss, metrics


def student_from_teacher(teacher_params: Any, num_layers: int, stride: int = 2) -> Any:
  """DistilBERT's init: the teacher's params with layers 0, stride, 2·stride, ... of each stack
  (`num_layers` of them); embeddings, norms and heads copied. Scanned (`layers`, leading layer
  axis) and unrolled (`layers_0`, ...) trees both work."""
  keep = np.arange(num_layers) * stride

  def walk(tree):
    out = {}
    for name, value in tree.items():
      if name == "layers" and isinstance(value, dict):
        out[name] = jax.tree_util.tree_map(lambda x: x[keep], value)
      elif isinstance(value, dict):
        unrolled = [k for k in value if k.startswith("layers_") and k[7:].isdigit()]
        sub = {k: v for k, v in value.items() if k not in unrolled}
        out[name] = walk(sub)
        for i, j in enumerate(keep if unrolled else ()):
          if f"layers_{j}" not in value:
            raise ConfigError(f"the teacher has no layer {j} for student layer {i} in {name}")
          out[name][f"layers_{i}"] = value[f"layers_{j}"]
      else:
        out[name] = value
    return out

  return walk(teacher_params)
