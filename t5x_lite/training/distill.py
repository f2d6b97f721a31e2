"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019): loss, teacher, init.

  loss = α_ce·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + α_lm·LM + α_cos·(1 − cos(h_s, h_t))

with DistilBERT's defaults α_ce 5, α_lm 2, α_cos 1, T = 2. As DistilBERT's `distiller.py`
(restrict_ce_to_mask=False): the KL (`KLDivLoss(reduction='batchmean')` on the selected rows)
and the cosine term (`CosineEmbeddingLoss` with target 1) average over every non-padding token;
LM is the student's own MLM / causal-LM loss over its loss weights. For a decoder student the KL
is over next-token distributions. The teacher is frozen (`stop_gradient`, not in the optimizer
state, not checkpointed) and runs inside the same jitted train step, on the same mesh.

Wired into training by `config.distill` (training/distill_config.py): the loop loads the
`Teacher` (its latest checkpoint, or a Hugging Face folder, placed on the run's mesh by
`RunSetup.teacher_setup`), checks it here (`check_compatible`, `check_vocabulary`) before
anything compiles, initialises a fresh student from every other teacher layer (`init_student`)
and jits `DistillationModel.loss` through `RunSetup.jit_train_step(teacher=...)`; the teacher's
params are an argument of the step (never a constant of the program). Evaluation scores the
student alone, so its held-out loss compares with a run without a teacher.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from t5x_lite import checkpoints
from t5x_lite.data.hf_vocabulary import has_tokenizer, load_vocabulary_path
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.errors import ConfigError
from t5x_lite.models import base
from t5x_lite.models.base import BaseModel
from t5x_lite.training import distill_config, init_from

Array = jax.Array
WEIGHTS = ("temperature", "alpha_ce", "alpha_lm", "alpha_cos")
DEFAULTS = {name: float(distill_config.defaults()[name]) for name in WEIGHTS}


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

    def a(name: str) -> str:
      return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"

    raise ConfigError(
      f"config.distill.teacher is {a(type(teacher).__name__)}; the student is "
      f"{a(type(student).__name__)} (expected the same kind of model)"
    )
  if s.vocab_size != t.vocab_size:
    raise ConfigError(
      f"config.distill.teacher has model.vocab_size={t.vocab_size}; the student has "
      f"{s.vocab_size} (the KL needs one vocabulary)"
    )
  if alpha_cos and s.d_model != t.d_model:
    raise ConfigError(
      f"config.distill.alpha_cos={alpha_cos} needs equal widths: teacher d_model={t.d_model}, "
      f"student {s.d_model} (set distill.alpha_cos=0)"
    )
  if student.encoder_decoder:
    raise ConfigError("config.distill.teacher: encoder-decoder students are not supported")


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

  def with_teacher_params(self, teacher_params: Any) -> DistillationModel:
    """The same model reading `teacher_params` (the jitted step's argument, a tracer there)."""
    out = object.__new__(DistillationModel)
    out.__dict__.update(self.__dict__, teacher_params=teacher_params)
    return out

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
    metrics["distill/ce"] = (parts["ce"] * num_tokens, num_tokens)
    metrics["distill/cos"] = (parts["cos"] * num_tokens, num_tokens)
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


# ---------------------------------------------------------------------------------------------
# The teacher of a run (`config.distill.teacher`) and the student's initialisation.


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen teacher: its model, its params on the student's mesh, and their shardings."""

  model: BaseModel
  params: Any
  param_shardings: Any
  source: str


@dataclasses.dataclass(frozen=True)
class TeacherSource:
  """Where a teacher comes from, opened and checked (`open_teacher`); nothing loaded yet."""

  path: str
  kind: str  # 'run' (a t5x_lite workdir or checkpoints directory) | 'hf' (a Hugging Face folder)
  checkpointer: checkpoints.Checkpointer | None  # 'run' only
  vocabulary: dict[str, Any]  # its config.data vocabulary settings (a student may adopt them)

  @property
  def step(self) -> int | None:
    return self.checkpointer.latest_step() if self.checkpointer is not None else None

  def fingerprint(self) -> str:
    """The hash of the vocabulary the teacher read text with."""
    settings = self.vocabulary
    if self.checkpointer is not None:
      saved = self.checkpointer.restore_config(self.step).data.get("vocab_fingerprint", "")
      if saved:
        return saved
    extra_ids = int(settings.get("extra_ids", 100))
    if settings.get("vocab") == "byte":
      return ByteVocabulary(extra_ids).fingerprint
    path = settings.get("vocab_path", "")
    if not path or not (os.path.isfile(path) or has_tokenizer(path)):
      raise ConfigError(f"config.distill.teacher={self.path}: its vocabulary was not found")
    return load_vocabulary_path(path, extra_ids).fingerprint


def open_teacher(path: str) -> TeacherSource:
  """`config.distill.teacher` opened: a Hugging Face folder (config.json) or a t5x_lite run with
  a complete checkpoint; a one-line ConfigError for anything else."""
  where = f"config.distill.teacher={path!r}"
  if "://" not in path and not os.path.isdir(path):
    raise ConfigError(f"{where} does not exist (expected a t5x_lite workdir or a Hugging Face "
                      "folder)")  # fmt: skip
  checkpointer = None
  if not os.path.isfile(os.path.join(path, "config.json")):
    try:
      checkpointer = checkpoints.open_existing(path)
    except checkpoints.CheckpointError as e:
      raise ConfigError(f"{where}: {e}") from None
    if checkpointer.latest_step() is None:
      raise ConfigError(f"{where} has no complete checkpoint (expected a t5x_lite workdir with "
                        "checkpoints/ or a Hugging Face folder with config.json)")  # fmt: skip
  try:
    vocabulary = init_from.source_vocabulary(path)
  except init_from.InitFromError as e:
    raise ConfigError(str(e).replace("train.init_from=", "config.distill.teacher=")) from None
  kind = "run" if checkpointer is not None else "hf"
  return TeacherSource(path, kind, checkpointer, vocabulary)


def check_vocabulary(path: str, teacher_fingerprint: str, student_fingerprint: str) -> None:
  """One-line ConfigError unless teacher and student read text with the same vocabulary."""
  if teacher_fingerprint != student_fingerprint:
    raise ConfigError(
      f"config.distill.teacher={path} reads text with vocabulary {teacher_fingerprint}, the "
      f"student with {student_fingerprint} (the KL compares one vocabulary's distributions; "
      "leave data.vocab_path empty to read with the teacher's)"
    )


def _flat(tree: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def init_student(
  student_params: Any, teacher: Teacher, student: BaseModel, mode: str = "auto"
) -> Any | None:
  """The student's params taken from the teacher (`student_from_teacher` with stride teacher
  layers // student layers; teacher parameters the student lacks, e.g. a pooler, are dropped),
  or None when `mode` is 'false', or 'auto' and the shapes do not allow it. With 'true', a
  ConfigError names the first parameter that does not fit. `student_params` (fresh, sharded)
  only give the target shapes; the result is not yet placed on the student's shardings."""
  if mode == "false":
    return None
  layers, teacher_layers = student.config.num_layers, teacher.model.config.num_layers
  stride = max(1, teacher_layers // layers)
  if layers > teacher_layers:  # (jax's gather would clamp the missing layers, silently)
    if mode == "true":
      raise ConfigError(
        f"config.distill.init_from_teacher='true': the student has {layers} layers, the "
        f"teacher only {teacher_layers}"
      )
    return None
  try:
    derived = _flat(student_from_teacher(teacher.params, layers, stride))
  except ConfigError as e:
    if mode == "true":
      raise ConfigError(f"config.distill.init_from_teacher='true': {e}") from None
    return None
  target = _flat(student_params)
  for name, value in sorted(target.items()):
    found = derived.get(name)
    if found is None or tuple(found.shape) != tuple(value.shape):
      if mode == "true":
        have = "absent" if found is None else f"shape {tuple(found.shape)}"
        raise ConfigError(
          f"config.distill.init_from_teacher='true': the student's {name} has shape "
          f"{tuple(value.shape)}; the teacher's layers 0, {stride}, ... give {have}"
        )
      return None
  return traverse_util.unflatten_dict({tuple(k.split("/")): derived[k] for k in target})
