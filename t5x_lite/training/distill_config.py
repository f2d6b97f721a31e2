"""`config.distill`: the keys of knowledge distillation, their defaults and their validation.

A leaf (no jax, no model) so that `config.py` builds and validates it with the other sections;
the loss, the teacher and the student's initialisation are in `training/distill.py`. Checks that
need the teacher itself (its folder, family, widths, vocabulary) run when the run loads it,
still before anything compiles: `config.validate` also validates the saved config of a
distilled run when it is evaluated, after the teacher may have moved.
"""

from __future__ import annotations

import math

import ml_collections

from t5x_lite.errors import ConfigError

INIT_FROM_TEACHER = ("auto", "true", "false")


def defaults() -> ml_collections.ConfigDict:
  """The `config.distill` section (DistilBERT's loss weights and temperature)."""
  distill = ml_collections.ConfigDict()
  distill.teacher = ""  # a t5x_lite workdir (its latest checkpoint) or a Hugging Face folder; ''
  # = off. Frozen, run inside the same jitted step, never checkpointed (a resume reloads it)
  distill.alpha_ce = 5.0  # weight of T²·KL(teacher ‖ student) of the softened distributions
  distill.alpha_lm = 2.0  # weight of the student's own loss on the labels (MLM / causal LM)
  distill.alpha_cos = 1.0  # weight of 1 − cos(h_student, h_teacher), last hidden states (same
  # d_model needed; 0 = off)
  distill.temperature = 2.0  # softmax temperature T of both distributions
  distill.init_from_teacher = "auto"  # the student starts from the teacher's layers 0, k, 2k, ...
  # (k = teacher layers // student layers; DistilBERT's every other layer): 'auto' = when the
  # shapes allow it | 'true' (an error if they do not) | 'false'
  return distill


def validate(config: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first bad `config.distill` value (no file is read)."""
  d = config.distill
  for name in ("alpha_ce", "alpha_lm", "alpha_cos"):
    value = d[name]
    if not (math.isfinite(value) and value >= 0):
      raise ConfigError(f"config.distill.{name}={value}: expected a finite number >= 0")
  if not d.teacher:
    return
  if d.alpha_ce + d.alpha_lm + d.alpha_cos <= 0:
    raise ConfigError("config.distill: alpha_ce, alpha_lm and alpha_cos are all 0 (no loss)")
  if not (math.isfinite(d.temperature) and d.temperature > 0):
    raise ConfigError(f"config.distill.temperature={d.temperature}: expected a number > 0")
  if d.init_from_teacher not in INIT_FROM_TEACHER:
    raise ConfigError(
      f"config.distill.init_from_teacher={d.init_from_teacher!r}: expected one of "
      f"{', '.join(map(repr, INIT_FROM_TEACHER))}"
    )
  if config.model.head:
    raise ConfigError(
      f"config.distill.teacher is set with model.head={config.model.head!r}: distillation "
      "trains language models (MLM or causal LM), not classifier heads"
    )
  if config.train.init_from and d.init_from_teacher == "true":
    raise ConfigError(
      f"config.distill.init_from_teacher='true' and train.init_from={config.train.init_from!r} "
      "both initialise the student: choose one"
    )
