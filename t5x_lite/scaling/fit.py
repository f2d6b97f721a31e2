"""Chinchilla's approaches 2 and 3 (Hoffmann et al. 2022, §3.2-3.3), with bootstrap intervals.

Approach 2 (IsoFLOP profiles): for each budget C, a parabola of the final loss in ln N; its vertex
is N_opt(C). A line through (ln C, ln N_opt) gives N_opt ∝ C^a, and D_opt = C / (6·N_opt) ∝ C^b.

Approach 3 (parametric loss): L(N, D) = E + A/N^α + B/D^β, fitted as Hoffmann et al. (App. D.2)
and the Besiroglu et al. (2024) replication do: with A = e^a, B = e^b, E = e^e the model of
ln L is LSE(a − α ln N, b − β ln D, e); the objective is the sum over runs of
Huber_δ(LSE(...) − ln L_i) with δ = 1e-3, minimised by L-BFGS from every point of a grid of
starts (α, β ∈ {0, .5, 1, 1.5, 2}, e ∈ {−1, −.5, 0, .5, 1, 1.5}, a, b ∈ {0, 5, ..., 25}); the
best optimum wins. The compute-optimal frontier under C = 6ND is then
  N_opt = G·(C/6)^(β/(α+β)),  D_opt = G⁻¹·(C/6)^(α/(α+β)),  G = (αA / (βB))^(1/(α+β)).

Bootstrap: runs are resampled with replacement (within each budget for approach 2) and the fit
repeated; intervals are percentiles of the refits (default 10th-90th, as Hoffmann et al.'s
Table 2). Approach-3 refits start from the full fit's optimum and its best grid starts, which is
what makes a few hundred refits affordable.

Cost: one L-BFGS run takes ~100 iterations; the grid is ranked by the objective at each start
(one vectorised pass) and by default L-BFGS runs from the best 64 starts (`starts=None`: all
5,400, as the paper; same optimum on every data set we tried, 80x the time).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, special

HUBER_DELTA = 1e-3
GRID = {
  "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
  "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
  "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
  "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
  "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


class FitError(ValueError):
  """The data cannot support the fit (too few runs or budgets, no curvature, ...)."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished run: N (matmul params), D (tokens), its budget C and final held-out loss."""

  params: float
  tokens: float
  budget: float
  loss: float


# ---------------------------------------------------------------------------------------------
# Approach 2.


def isoflop_minimum(log_params: np.ndarray, losses: np.ndarray) -> tuple[float, np.ndarray]:
  """(ln N_opt, parabola coefficients [c2, c1, c0] in ln N) of one IsoFLOP profile."""
  if len(np.unique(log_params)) < 3:
    raise FitError(f"an IsoFLOP parabola needs 3 model sizes, found {len(np.unique(log_params))}")
  coefficients = np.polyfit(log_params, losses, 2)
  if coefficients[0] <= 0:
    raise FitError("the IsoFLOP profile curves downwards (no minimum): widen the range of sizes")
  return float(-coefficients[1] / (2 * coefficients[0])), coefficients


@dataclasses.dataclass
class Approach2:
  a: float  # N_opt ∝ C^a
  b: float  # D_opt ∝ C^b
  log_n_intercept: float  # ln N_opt = a·ln C + log_n_intercept
  log_d_intercept: float
  minima: list[dict[str, Any]]  # per budget: budget, params_opt, tokens_opt, loss_opt, coefficients
  intervals: dict[str, tuple[float, float]]

  def params_opt(self, budget: float) -> float:
    return float(math.exp(self.log_n_intercept + self.a * math.log(budget)))

  def tokens_opt(self, budget: float) -> float:
    return float(math.exp(self.log_d_intercept + self.b * math.log(budget)))


def _approach2_point_estimate(runs: Sequence[Run]) -> tuple[float, float, float, float, list]:
  """(a, b, ln-intercepts, minima) from the budgets whose profile has a minimum inside the sizes
  run; a budget with fewer than 3 sizes, no curvature or an extrapolated minimum is left out of
  the power-law fit (as in Hoffmann et al., whose profiles bracket their minima)."""
  by_budget: dict[float, list[Run]] = {}
  for run in runs:
    by_budget.setdefault(run.budget, []).append(run)
  minima, skipped = [], []
  for budget in sorted(by_budget):
    group = by_budget[budget]
    log_n = np.log([r.params for r in group])
    try:
      log_opt, coefficients = isoflop_minimum(log_n, np.array([r.loss for r in group]))
    except FitError as e:
      skipped.append(f"budget {budget:.3g}: {e}")
      continue
    minimum = {
      "budget": budget,
      "params_opt": math.exp(log_opt),
      "tokens_opt": budget / (6 * math.exp(log_opt)),
      "loss_opt": float(np.polyval(coefficients, log_opt)),
      "coefficients": [float(c) for c in coefficients],
      "inside_range": bool(log_n.min() <= log_opt <= log_n.max()),
    }
    minima.append(minimum)
    if not minimum["inside_range"]:  # the parabola's vertex was not measured, only extrapolated
      skipped.append(
        f"budget {budget:.3g}: the minimum N={minimum['params_opt']:.3g} lies outside the sizes "
        f"run ({math.exp(log_n.min()):.3g}..{math.exp(log_n.max()):.3g})"
      )
  measured = [m for m in minima if m["inside_range"]]
  if len(measured) < 2:
    raise FitError(
      f"approach 2 needs IsoFLOP minima inside the sizes run at 2 budgets or more, found "
      f"{len(measured)}" + (f" ({'; '.join(skipped)})" if skipped else "")
    )
  log_c = np.log([m["budget"] for m in measured])
  a, n0 = np.polyfit(log_c, np.log([m["params_opt"] for m in measured]), 1)
  b, d0 = np.polyfit(log_c, np.log([m["tokens_opt"] for m in measured]), 1)
  return float(a), float(b), float(n0), float(d0), minima


def fit_approach2(
  runs: Sequence[Run], *, bootstrap: int = 200, level: float = 0.8, seed: int = 0
) -> Approach2:
  """IsoFLOP parabolas -> power laws N_opt ∝ C^a, D_opt ∝ C^b, with percentile intervals."""
  a, b, n0, d0, minima = _approach2_point_estimate(runs)
  rng = np.random.default_rng(seed)
  by_budget: dict[float, list[Run]] = {}
  for run in runs:
    by_budget.setdefault(run.budget, []).append(run)
  samples = []
  for _ in range(bootstrap):
    resampled = [
      group[i] for group in by_budget.values() for i in rng.integers(0, len(group), size=len(group))
    ]
    try:
      samples.append(_approach2_point_estimate(resampled)[:2])
    except FitError:  # a resample with < 3 distinct sizes in a budget: skip it
      continue
  intervals = {}
  if samples:
    values = np.array(samples)
    for name, column in (("a", values[:, 0]), ("b", values[:, 1])):
      intervals[name] = _percentiles(column, level)
  return Approach2(a, b, n0, d0, minima, intervals)


# ---------------------------------------------------------------------------------------------
# Approach 3.


@dataclasses.dataclass
class Approach3:
  E: float
  A: float
  B: float
  alpha: float
  beta: float
  objective: float
  intervals: dict[str, tuple[float, float]]
  num_runs: int

  def loss(self, params: Any, tokens: Any) -> Any:
    return self.E + self.A / np.power(params, self.alpha) + self.B / np.power(tokens, self.beta)

  @property
  def a(self) -> float:
    return self.beta / (self.alpha + self.beta)

  @property
  def b(self) -> float:
    return self.alpha / (self.alpha + self.beta)

  @property
  def G(self) -> float:
    return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

  def params_opt(self, budget: float) -> float:
    return float(self.G * (budget / 6) ** self.a)

  def tokens_opt(self, budget: float) -> float:
    return float((budget / 6) ** self.b / self.G)


def huber(residuals: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
  """Huber loss: r²/2 for |r| <= δ, δ·(|r| − δ/2) beyond (scipy.special.huber)."""
  return special.huber(delta, residuals)


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray):
  """(Σ Huber(LSE − ln L), gradient) for θ = (a, b, e, α, β). Plain numpy on purpose: it runs
  ~10⁶ times per fit, and scipy.special's wrappers cost more than the arithmetic."""
  a, b, e, alpha, beta = theta
  t0 = a - alpha * log_n
  t1 = b - beta * log_d
  m = np.maximum(np.maximum(t0, t1), e)
  w0, w1, w2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(e - m)
  total = w0 + w1 + w2
  r = m + np.log(total) - log_loss
  small = np.abs(r) <= HUBER_DELTA
  value = float(np.sum(np.where(small, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))))
  dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / total  # dHuber/dr · softmax normaliser
  g0, g1 = dr * w0, dr * w1
  grad = np.array([g0.sum(), g1.sum(), (dr * w2).sum(), -(g0 * log_n).sum(), -(g1 * log_d).sum()])
  return value, grad


def _grid_starts() -> np.ndarray:
  """[5400, 5] starts (a, b, e, α, β) in Hoffmann et al.'s grid."""
  combos = itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])
  return np.array(list(combos), dtype=np.float64)


def _minimize(start, log_n, log_d, log_loss):
  return optimize.minimize(
    _objective,
    start,
    args=(log_n, log_d, log_loss),
    jac=True,
    method="L-BFGS-B",
    options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12},
  )


def _fit_from(starts: np.ndarray, log_n, log_d, log_loss) -> tuple[np.ndarray, float]:
  best, best_value = None, math.inf
  for start in starts:
    result = _minimize(start, log_n, log_d, log_loss)
    if np.all(np.isfinite(result.x)) and result.fun < best_value:
      best, best_value = result.x, float(result.fun)
  return best, best_value


def grid_objective(grid: np.ndarray, log_n, log_d, log_loss) -> np.ndarray:
  """The objective at every start of `grid` [starts, 5] at once (vectorised over starts)."""
  a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))  # each [starts, 1]
  e = np.broadcast_to(e, (len(grid), len(log_n)))
  terms = np.stack([a - alpha * log_n, b - beta * log_d, e])  # [3, starts, runs]
  r = special.logsumexp(terms, axis=0) - log_loss
  return huber(r).sum(axis=1)


def fit_approach3(
  runs: Sequence[Run],
  *,
  bootstrap: int = 100,
  level: float = 0.8,
  seed: int = 0,
  starts: int | None = 64,
  bootstrap_starts: int = 2,
) -> Approach3:
  """L(N, D) = E + A/N^α + B/D^β by Huber on ln L from the grid of starts (module docstring).

  `starts`: L-BFGS runs from this many starts of the 5,400-point grid, the ones with the lowest
  objective (None = every start, as Hoffmann et al.; on these small problems the runs from
  the best 64 reach the same optimum, at 1/80 of the time). Each bootstrap refit starts from the
  full fit's optimum and the `bootstrap_starts` best grid starts.
  """
  if len(runs) < 5:
    raise FitError(f"approach 3 fits 5 parameters: it needs at least 5 runs, found {len(runs)}")
  log_n = np.log([r.params for r in runs])
  log_d = np.log([r.tokens for r in runs])
  log_loss = np.log([r.loss for r in runs])
  grid = _grid_starts()
  ranked = grid[np.argsort(grid_objective(grid, log_n, log_d, log_loss), kind="stable")]
  theta, value = _fit_from(ranked if starts is None else ranked[:starts], log_n, log_d, log_loss)
  seeds = np.vstack([theta[None], ranked[:bootstrap_starts]])
  rng = np.random.default_rng(seed)
  samples = []
  for _ in range(bootstrap):
    index = rng.integers(0, len(runs), size=len(runs))
    refit, _ = _fit_from(seeds, log_n[index], log_d[index], log_loss[index])
    # A resample can leave the law unidentified (e.g. one model size): ln A or ln B then runs
    # off to where exp overflows; such a refit says nothing about the interval, skip it.
    if refit is not None and np.all(np.abs(refit[:3]) < 700):
      samples.append(_natural(refit))
  intervals = {}
  if samples:
    values = np.array(samples)
    for i, name in enumerate(("E", "A", "B", "alpha", "beta", "a", "b")):
      intervals[name] = _percentiles(values[:, i], level)
  E, A, B, alpha, beta, _, _ = _natural(theta)
  return Approach3(E, A, B, alpha, beta, value, intervals, len(runs))


def _natural(theta: np.ndarray) -> tuple[float, ...]:
  """(E, A, B, α, β, a, b) from θ = (ln A, ln B, ln E, α, β)."""
  a_log, b_log, e_log, alpha, beta = (float(x) for x in theta)
  total = alpha + beta
  return (
    math.exp(e_log),
    math.exp(a_log),
    math.exp(b_log),
    alpha,
    beta,
    beta / total if total else math.nan,
    alpha / total if total else math.nan,
  )


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
  tail = 50 * (1 - level)
  low, high = np.percentile(values, [tail, 100 - tail])
  return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Predictions.


def predict(approach2: Approach2 | None, approach3: Approach3 | None, budget: float) -> dict:
  """{approach: {params, tokens, loss}} at `budget` FLOPs (loss from approach 3's L(N, D))."""
  out: dict[str, dict[str, float]] = {}
  if approach3 is not None:
    n, d = approach3.params_opt(budget), approach3.tokens_opt(budget)
    out["approach3"] = {"params": n, "tokens": d, "loss": float(approach3.loss(n, d))}
  if approach2 is not None:
    n = approach2.params_opt(budget)
    entry = {"params": n, "tokens": budget / (6 * n)}
    if approach3 is not None:
      entry["loss"] = float(approach3.loss(n, budget / (6 * n)))
    out["approach2"] = entry
  return out
