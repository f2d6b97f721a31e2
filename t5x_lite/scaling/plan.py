"""IsoFLOP plans: for each compute budget C, a few model sizes N and the tokens D = C / (6·N).

Shape rules (decoder family; docs/scaling.md gives the reasoning):
  width    d_model from a fixed ladder (WIDTHS): steps of ~1.15-1.5x, multiples of 16 below 256
           (and 24) and of 64 from 256 on, so every width splits into whole heads. The
           widths 16 and 24 exist for CPU sweeps, whose budgets put N* at a few 10k.
  depth    num_layers = max(2, round(d_model / 64)): the aspect ratio d_model / num_layers = 64 of
           GPT-2 small, GPT-3 Small, Pythia-160M and Chinchilla's smallest model (512 / 8), inside
           the broad optimum Kaplan et al. (2020, fig. 5) measured (d/L from ~20 to ~200 within
           a few percent of loss). At least 2 layers: one layer cannot form induction heads
           (Olsson et al. 2022), so a 1-layer model scales on another curve.
  heads    head_dim = 64 from d_model 256 on (GPT-2/GPT-3/Chinchilla); below, 4 heads of
           d_model / 4, so tiny models still have several heads.
  MLP      d_ff = 4·d_model (GPT-2, Chinchilla).
Everything else (vocabulary, sequence length, batch, learning rate, schedule) comes from the base
config; the schedule decays over exactly each run's length, as Chinchilla requires (a cosine cut
short overestimates the loss of the smaller-D runs).

Sizes per budget: N* = sqrt(C / (6·r)) with r = tokens per parameter (Chinchilla: 20); the grid
takes, among the ladder shapes with N in [N*/span, N*·span] (and at least MIN_STEPS steps), the
ones nearest in log N to `points` targets spaced evenly in log N over that range.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from t5x_lite import config as config_lib
from t5x_lite import models

FAMILY_CONFIGS = {"decoder": "gpt.py:tiny"}  # base config of each family a plan supports
WIDTHS = (
  16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
  1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
)  # fmt: skip
MIN_STEPS = 10  # a point with fewer optimizer steps is dropped (its loss says little)


class PlanError(ValueError):
  """A plan argument or file is wrong (budgets, points, a different plan in the sweep dir)."""


@dataclasses.dataclass(frozen=True)
class Shape:
  d_model: int
  num_layers: int
  num_heads: int
  d_ff: int

  def overrides(self) -> list[tuple[str, str]]:
    return [(f"model.{k}", str(v)) for k, v in dataclasses.asdict(self).items()]


def shape_for_width(d_model: int) -> Shape:
  """The family's shape at width `d_model` (module docstring: depth, heads, MLP rules)."""
  num_layers = max(2, round(d_model / 64))
  num_heads = d_model // 64 if d_model >= 256 else 4
  return Shape(d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_ff=4 * d_model)


def matmul_params(shape: Shape, base: Any) -> int:
  """N: weights of the matmuls applied per token (layers + output projection), the N of
  C = 6·N·D; t5x_lite's model FLOPs per token without the attention term, divided by 6."""
  model = dataclasses.replace(config_lib.model_config(base), **dataclasses.asdict(shape))
  return round(models.build_model(model).flops_per_token(0) / 6)


@dataclasses.dataclass
class PlanPoint:
  """One run of the sweep: a shape trained for `steps` steps at one budget."""

  id: str
  budget: float  # the IsoFLOP budget C this point belongs to (FLOPs)
  shape: Shape
  params: int  # N (matmul parameters)
  steps: int
  tokens: int  # D = steps x tokens per step (after rounding to whole steps)
  compute: float  # 6·N·D of the point as it will run
  model_flops: float  # training FLOPs including attention (t5x_lite's model FLOPs x D)
  overrides: list[tuple[str, str]]  # on top of the plan's base config and overrides

  @property
  def tokens_per_param(self) -> float:
    return self.tokens / self.params


@dataclasses.dataclass
class Plan:
  family: str
  config: str  # base config spec (file[:variant])
  base_overrides: list[tuple[str, str]]
  budgets: list[float]
  points: list[PlanPoint]
  tokens_per_step: int
  notes: list[str]

  def point_config(self, point: PlanPoint):
    """The validated ConfigDict of one point."""
    return config_lib.get_config(self.config, list(self.base_overrides) + list(point.overrides))

  def to_json(self) -> str:
    data = dataclasses.asdict(self)
    return json.dumps(data, indent=2)

  @classmethod
  def from_json(cls, text: str) -> Plan:
    data = json.loads(text)
    points = [
      PlanPoint(
        **{
          **p,
          "shape": Shape(**p["shape"]),
          "overrides": [tuple(o) for o in p["overrides"]],
        }
      )
      for p in data.pop("points")
    ]
    data["base_overrides"] = [tuple(o) for o in data["base_overrides"]]
    return cls(points=points, **data)

  @property
  def total_compute(self) -> float:
    return float(sum(p.compute for p in self.points))

  def table(self) -> str:
    """A fixed-width table of the points and the total compute."""
    header = (
      f"{'id':<18} {'budget':>9} {'d_model':>7} {'layers':>6} {'heads':>5} {'N':>11} "
      f"{'D':>12} {'D/N':>7} {'steps':>7} {'6ND':>9}"
    )
    lines = [header, "-" * len(header)]
    for p in self.points:
      s = p.shape
      lines.append(
        f"{p.id:<18} {p.budget:>9.2e} {s.d_model:>7} {s.num_layers:>6} {s.num_heads:>5} "
        f"{p.params:>11,} {p.tokens:>12,} {p.tokens_per_param:>7.1f} {p.steps:>7} "
        f"{p.compute:>9.2e}"
      )
    lines.append(
      f"{len(self.points)} runs over {len(self.budgets)} budgets; total compute "
      f"{self.total_compute:.3e} FLOPs (6ND; "
      f"{sum(p.model_flops for p in self.points):.3e} with attention); "
      f"{self.tokens_per_step:,} tokens per step"
    )
    lines += [f"note: {n}" for n in self.notes]
    return "\n".join(lines)


def parse_budgets(text: str) -> list[float]:
  """'1e15,3e15,1e16' -> [1e15, 3e15, 1e16] (sorted, positive); PlanError naming the bad item."""
  budgets = []
  for item in text.split(","):
    try:
      value = float(item)
    except ValueError:
      raise PlanError(f"--budgets: {item!r} is not a number (expected e.g. 1e15,3e15)") from None
    if not value > 0:
      raise PlanError(f"--budgets: {item!r} is not a positive number of FLOPs")
    budgets.append(value)
  return sorted(budgets)


def make_plan(
  budgets: Sequence[float],
  *,
  points: int = 5,
  family: str = "decoder",
  config: str | None = None,
  overrides: Sequence[tuple[str, str]] = (),
  tokens_per_param: float = 20.0,
  span: float = 4.0,
  min_steps: int = MIN_STEPS,
) -> Plan:
  """An IsoFLOP grid: for each budget, up to `points` ladder shapes around N* = sqrt(C/(6r)).

  Every point's config is built and validated here, so a plan never holds a run that would
  fail at start. ConfigError for an unknown family or a base config that does not validate.
  """
  if family not in FAMILY_CONFIGS:
    raise config_lib.ConfigError(
      f"--family {family!r}: scaling plans support {', '.join(FAMILY_CONFIGS)} (the causal LM "
      "whose loss the Chinchilla law describes)"
    )
  if points < 1 or span < 1:
    raise PlanError(f"points={points}, span={span}: expected points >= 1 and span >= 1")
  spec = config or FAMILY_CONFIGS[family]
  base = config_lib.get_config(spec, list(overrides))
  if base.model.family != family:
    raise config_lib.ConfigError(
      f"--config {spec}: model.family={base.model.family!r}, but the plan is for {family!r}"
    )
  tokens_per_step = int(base.train.batch_size) * sum(
    int(v) for v in base.data.feature_lengths.values()
  )
  ladder = [shape_for_width(d) for d in WIDTHS]
  ladder_params = np.array([matmul_params(s, base) for s in ladder], dtype=np.float64)
  plan_points: list[PlanPoint] = []
  notes: list[str] = []
  for budget in budgets:
    n_star = math.sqrt(budget / (6.0 * tokens_per_param))
    inside = [
      i
      for i, n in enumerate(ladder_params)
      if n_star / span <= n <= n_star * span
      and round(budget / (6 * n) / tokens_per_step) >= min_steps
    ]
    if len(inside) > points:  # the shapes nearest (in log N) to log-spaced targets around N*
      chosen: list[int] = []
      for target in n_star * np.geomspace(1 / span, span, points):
        free = [i for i in inside if i not in chosen]
        chosen.append(min(free, key=lambda i: abs(math.log(ladder_params[i] / target))))
      inside = sorted(chosen)
    if len(inside) < min(points, 3):
      notes.append(
        f"budget {budget:.2e}: only {len(inside)} shape(s) with N in [{n_star / span:,.0f}, "
        f"{n_star * span:,.0f}] and >= {min_steps} steps of {tokens_per_step:,} tokens "
        "(a parabola needs 3; widen --span or change the budget)"
      )
    for i in inside:
      shape, n = ladder[i], int(ladder_params[i])
      steps = max(1, round(budget / (6 * n) / tokens_per_step))
      tokens = steps * tokens_per_step
      model = dataclasses.replace(config_lib.model_config(base), **dataclasses.asdict(shape))
      flops = models.build_model(model).flops_per_token(dict(base.data.feature_lengths)) * tokens
      point_overrides = shape.overrides() + _run_overrides(base, steps)
      point = PlanPoint(
        id=f"C{budget:.3g}_d{shape.d_model}".replace("+", ""),
        budget=float(budget),
        shape=shape,
        params=n,
        steps=steps,
        tokens=tokens,
        compute=6.0 * n * tokens,
        model_flops=float(flops),
        overrides=point_overrides,
      )
      config_lib.get_config(spec, list(overrides) + point_overrides)  # validates (ConfigError)
      plan_points.append(point)
  return Plan(
    family=family,
    config=spec,
    base_overrides=[tuple(o) for o in overrides],
    budgets=[float(b) for b in budgets],
    points=plan_points,
    tokens_per_step=tokens_per_step,
    notes=notes,
  )


def _run_overrides(base, steps: int) -> list[tuple[str, str]]:
  """Per-run settings: the schedule spans the run; evaluate and checkpoint at the end only."""
  warmup = min(int(base.optimizer.warmup_steps), max(1, steps // 10))
  return [
    ("train.steps", str(steps)),
    ("optimizer.warmup_steps", str(warmup)),
    ("optimizer.decay_steps", "0"),
    ("train.eval_every", "0"),
    ("train.checkpoint_every", str(steps)),
    ("train.log_every", str(min(int(base.train.log_every), steps))),
    ("train.sample_prompt", ""),
  ]
