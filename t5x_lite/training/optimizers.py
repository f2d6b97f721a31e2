"""Optimizers and learning-rate schedules from optax, configured by `config.optimizer`.

Schedule: linear warmup from 0 to the peak over `warmup_steps`, then one of
  cosine    peak -> peak·end_factor along a half cosine over `decay_steps`
  linear    peak -> peak·end_factor linearly over `decay_steps`
  rsqrt     peak·sqrt(warmup / step) (T5's inverse square root), floored at peak·end_factor
  constant  peak
  wsd       warmup-stable-decay: peak until `wsd_decay_start`, then a cooldown to peak·end_factor
            over the remaining steps, shaped 'linear', 'cosine' or 'sqrt' (1 − √x, Hägele et al.
            2024); see `wsd_boundaries`.
`decay_steps = 0` means "until the end of training" (train.steps − warmup_steps).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from t5x_lite.config import ConfigError


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The schedule of `config.optimizer` for a run of `config.train.steps` steps."""
  opt = config.optimizer
  peak = float(opt.learning_rate)
  warmup = int(opt.warmup_steps)
  decay_steps = int(opt.decay_steps) or max(1, int(config.train.steps) - warmup)
  end = peak * float(opt.end_factor)

  if opt.decay == "wsd":
    return wsd_schedule(config)
  if opt.decay == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(opt.end_factor))
  elif opt.decay == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif opt.decay == "constant":
    decay = optax.constant_schedule(peak)
  elif opt.decay == "rsqrt":
    offset = max(warmup, 1)

    def decay(count):
      return jnp.maximum(peak * jnp.sqrt(offset / jnp.maximum(count + offset, 1.0)), end)
  else:
    raise ValueError(f"config.optimizer.decay={opt.decay!r}")

  if warmup == 0:
    return decay
  warmup_schedule = optax.linear_schedule(0.0, peak, warmup)
  return optax.join_schedules([warmup_schedule, decay], boundaries=[warmup])


def wsd_boundaries(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(warmup_steps, decay_start, decay_steps) of a WSD run of `config.train.steps` steps.

  `optimizer.wsd_decay_start` (a decay branch: the step it was branched from) wins; otherwise
  the decay takes the last `wsd_decay_fraction` of training (rounded to whole steps).
  """
  opt, steps = config.optimizer, int(config.train.steps)
  warmup = int(opt.warmup_steps)
  start = int(opt.wsd_decay_start) or steps - round(steps * float(opt.wsd_decay_fraction))
  if not warmup <= start <= steps:
    raise ConfigError(
      f"config.optimizer: the WSD decay starts at step {start}, outside [warmup_steps={warmup}, "
      f"train.steps={steps}] (check optimizer.wsd_decay_start / wsd_decay_fraction)"
    )
  return warmup, start, steps - start


def wsd_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Warmup (0 -> peak, linear) | stable (peak) | decay (peak -> peak·end_factor) as optax pieces.

  With x = (step − decay_start) / decay_steps in [0, 1] the decay is
    linear  end + (peak − end)·(1 − x)
    cosine  end + (peak − end)·(1 + cos πx)/2
    sqrt    end + (peak − end)·(1 − √x)
  Values at the boundaries are exact: schedule(warmup) = schedule(decay_start) = peak and
  schedule(train.steps) = peak·end_factor.
  """
  opt = config.optimizer
  peak = float(opt.learning_rate)
  end = peak * float(opt.end_factor)
  warmup, start, decay_steps = wsd_boundaries(config)
  shape = opt.wsd_decay_shape
  if shape == "linear":
    decay = optax.linear_schedule(peak, end, max(decay_steps, 1))
  elif shape == "cosine":
    decay = optax.cosine_decay_schedule(peak, max(decay_steps, 1), alpha=float(opt.end_factor))
  elif shape == "sqrt":

    def decay(count):
      x = jnp.clip(count / max(decay_steps, 1), 0.0, 1.0)
      return end + (peak - end) * (1.0 - jnp.sqrt(x))
  else:
    raise ConfigError(
      f"config.optimizer.wsd_decay_shape={shape!r}: expected 'linear', 'cosine' or 'sqrt'"
    )
  pieces = [optax.linear_schedule(0.0, peak, warmup)] if warmup else []
  pieces += [optax.constant_schedule(peak), decay]
  boundaries = ([warmup] if warmup else []) + [start]
  return optax.join_schedules(pieces, boundaries=boundaries)


def decay_mask(params) -> object:
  """True for parameters that get weight decay: matrices, not biases, norm scales or 1-D vectors.

  Stacked (scanned) layers add a leading axis, so the rule looks at names as well as rank.
  """

  def wants_decay(path, leaf) -> bool:
    names = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
    if re.search(r"(bias|norm|ln_|layernorm|scale)", names):
      return False
    return leaf.ndim >= 2

  return jax.tree_util.tree_map_with_path(wants_decay, params)


def clip_in_step(config: ml_collections.ConfigDict) -> float:
  """The global-norm clip that `train_step` applies itself (0 = none): `optimizer.grad_clip`
  when no parameter is frozen. The step has the gradient norm already and scales inside the
  update, where XLA fuses it into AdamW: optax's clip_by_global_norm in the chain cost a
  gpt2_small step 2.5 GB of extra memory traffic (HLO cost analysis), clipping in the step none."""
  return float(config.optimizer.grad_clip) if not tuple(config.train.get("frozen", ())) else 0.0


def make_optimizer(
  config: ml_collections.ConfigDict, clip: bool = True
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation of `config.optimizer` and its schedule; with `clip=False` without
  the gradient clipping that `clip_in_step(config)` hands to the train step."""
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  if opt.name == "adamw":
    core = optax.adamw(
      schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=decay_mask
    )
  elif opt.name == "adafactor":
    core = optax.adafactor(
      schedule, weight_decay_rate=opt.weight_decay or None, weight_decay_mask=decay_mask
    )
  else:
    raise ValueError(f"config.optimizer.name={opt.name!r}")
  clipped = opt.grad_clip > 0 and (clip or not clip_in_step(config))
  chain = [optax.clip_by_global_norm(opt.grad_clip)] if clipped else []
  if opt.grad_clip > 0 and not clipped:  # a stand-in with the same (empty) state: the optimizer
    chain = [optax.identity()]  # state keeps its structure, old checkpoints restore
  optimizer = optax.chain(*chain, core)
  frozen = tuple(config.train.get("frozen", ()))
  if frozen:
    # Frozen parameters get zero updates (no decay, no moments); clipping sees only the rest.
    optimizer = optax.multi_transform(
      {"train": optimizer, "frozen": optax.set_to_zero()},
      lambda params: frozen_labels(params, frozen),
    )
  return optimizer, schedule


def param_path(path) -> str:
  """'encoder/layers/attention/query/kernel' for a jax key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def frozen_labels(params, patterns) -> object:
  """'frozen' for parameters whose path matches one of `patterns` (re.match), else 'train'.

  A pattern that matches no parameter is an error (a typo would silently train everything).
  """
  compiled = [re.compile(p) for p in patterns]
  used = set()

  def label(path, leaf) -> str:
    del leaf
    name = param_path(path)
    hits = [p.pattern for p in compiled if p.match(name)]
    used.update(hits)
    return "frozen" if hits else "train"

  labels = jax.tree_util.tree_map_with_path(label, params)
  unused = [p for p in patterns if p not in used]
  if unused:
    names = [param_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    raise ConfigError(
      f"config.train.frozen: pattern {unused[0]!r} matches no parameter (paths look like "
      f"{names[0]!r}, {names[-1]!r})"
    )
  return labels
