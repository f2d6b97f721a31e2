"""The fit report of a sweep: results.jsonl -> fit.json, fit.md and three PNG plots.

loss_vs_compute.png  final loss against 6ND, one line per model size
isoflop.png          loss against N per budget, the fitted parabolas and their minima
frontier.png         N_opt against C: approach-2 minima and law, approach-3 law, the target
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from t5x_lite.scaling import fit as fit_lib

RESULTS_FILE = "results.jsonl"
FIT_JSON = "fit.json"
FIT_MARKDOWN = "fit.md"
PLOTS = ("loss_vs_compute.png", "isoflop.png", "frontier.png")


def read_results(path: str) -> list[dict[str, Any]]:
  """The rows of a results.jsonl (a sweep directory or the file); the last row per id wins."""
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist (run `t5x-lite scaling run` first)")
  rows: dict[str, dict[str, Any]] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise fit_lib.FitError(f"{path}:{number}: not JSON ({e.msg})") from None
      missing = [k for k in ("params", "tokens", "budget", "loss") if k not in row]
      if missing:
        raise fit_lib.FitError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
      rows[str(row.get("id", number))] = row
  return list(rows.values())


def runs_from_rows(rows: Sequence[dict[str, Any]], metric: str = "loss") -> list[fit_lib.Run]:
  """Finite rows as fit Runs; `metric` is 'loss' or 'bits_per_byte'."""
  runs = []
  for row in rows:
    value = row.get(metric)
    if value is not None and math.isfinite(float(value)):
      runs.append(
        fit_lib.Run(float(row["params"]), float(row["tokens"]), float(row["budget"]), float(value))
      )
  return runs


@dataclasses.dataclass
class FitReport:
  metric: str
  approach2: fit_lib.Approach2 | None
  approach3: fit_lib.Approach3 | None
  target_budget: float
  prediction: dict[str, dict[str, float]]
  errors: dict[str, str]  # approach -> why it could not be fitted
  num_runs: int

  def to_dict(self) -> dict[str, Any]:
    out: dict[str, Any] = {
      "metric": self.metric,
      "num_runs": self.num_runs,
      "target_budget": self.target_budget,
      "prediction": self.prediction,
      "errors": self.errors,
    }
    if self.approach2 is not None:
      out["approach2"] = dataclasses.asdict(self.approach2)
    if self.approach3 is not None:
      a3 = self.approach3
      out["approach3"] = {**dataclasses.asdict(a3), "a": a3.a, "b": a3.b, "G": a3.G}
    return out

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> FitReport:
    a2 = data.get("approach2")
    a3 = data.get("approach3")
    if a2 is not None:
      a2 = fit_lib.Approach2(**{k: v for k, v in a2.items()})
      a2.intervals = {k: tuple(v) for k, v in a2.intervals.items()}
    if a3 is not None:
      fields = {f.name for f in dataclasses.fields(fit_lib.Approach3)}
      a3 = fit_lib.Approach3(**{k: v for k, v in a3.items() if k in fields})
    return cls(
      data["metric"],
      a2,
      a3,
      data["target_budget"],
      data["prediction"],
      data.get("errors", {}),
      data["num_runs"],
    )


def fit_results(
  rows: Sequence[dict[str, Any]],
  *,
  target_budget: float = 1e21,
  metric: str = "loss",
  bootstrap: int = 100,
  level: float = 0.8,
  seed: int = 0,
) -> FitReport:
  """Both approaches on the rows (each fitted if the data allow; `errors` says why not)."""
  runs = runs_from_rows(rows, metric)
  if not runs:
    raise fit_lib.FitError(f"no run has a finite {metric!r}: nothing to fit")
  errors: dict[str, str] = {}
  approach2 = approach3 = None
  try:
    approach2 = fit_lib.fit_approach2(runs, bootstrap=bootstrap, level=level, seed=seed)
  except fit_lib.FitError as e:
    errors["approach2"] = str(e)
  try:
    approach3 = fit_lib.fit_approach3(runs, bootstrap=bootstrap, level=level, seed=seed)
  except fit_lib.FitError as e:
    errors["approach3"] = str(e)
  if approach2 is None and approach3 is None:
    raise fit_lib.FitError("; ".join(f"{k}: {v}" for k, v in errors.items()))
  prediction = fit_lib.predict(approach2, approach3, target_budget)
  return FitReport(metric, approach2, approach3, target_budget, prediction, errors, len(runs))


def load_fit(path: str) -> FitReport:
  """A fit.json (or the directory holding it)."""
  if os.path.isdir(path):
    candidates = [os.path.join(path, FIT_JSON), os.path.join(path, "fit", FIT_JSON)]
    path = next((c for c in candidates if os.path.exists(c)), candidates[0])
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist (run `t5x-lite scaling fit DIR` first)")
  with open(path, encoding="utf-8") as f:
    return FitReport.from_dict(json.load(f))


def _interval(intervals: dict, name: str, fmt: str = ".3f") -> str:
  if name not in intervals:
    return ""
  low, high = intervals[name]
  return f" ({low:{fmt}} – {high:{fmt}})"


def markdown(report: FitReport, rows: Sequence[dict[str, Any]], level: float = 0.8) -> str:
  """The report as Markdown: data, both fits with intervals, the prediction, the plots."""
  lines = [
    f"# Scaling-law fit ({report.num_runs} runs, metric: {report.metric})",
    "",
    f"Intervals: {round(100 * level)}% bootstrap percentile intervals.",
    "",
    "| id | budget C | N | D | D/N | " + report.metric + " |",
    "|---|---|---|---|---|---|",
  ]
  for row in sorted(rows, key=lambda r: (r["budget"], r["params"])):
    value = row.get(report.metric)
    value_text = f"{value:.4f}" if value is not None else "—"
    lines.append(
      f"| {row.get('id', '')} | {row['budget']:.2e} | {row['params']:,.0f} | "
      f"{row['tokens']:,.0f} | {row['tokens'] / row['params']:.1f} | {value_text} |"
    )
  lines.append("")
  a2, a3 = report.approach2, report.approach3
  if a2 is not None:
    lines += [
      "## Approach 2: IsoFLOP profiles",
      "",
      f"N_opt ∝ C^a with **a = {a2.a:.3f}**{_interval(a2.intervals, 'a')}; "
      f"D_opt ∝ C^b with **b = {a2.b:.3f}**{_interval(a2.intervals, 'b')}.",
      "",
      "| budget C | N_opt | D_opt | loss at minimum | minimum inside the sizes run |",
      "|---|---|---|---|---|",
    ]
    for m in a2.minima:
      lines.append(
        f"| {m['budget']:.2e} | {m['params_opt']:,.0f} | {m['tokens_opt']:,.0f} | "
        f"{m['loss_opt']:.4f} | {'yes' if m['inside_range'] else 'NO (extrapolated)'} |"
      )
    lines.append("")
  if a3 is not None:
    iv = a3.intervals
    lines += [
      "## Approach 3: parametric loss L(N, D) = E + A/N^α + B/D^β",
      "",
      f"- E = {a3.E:.4f}{_interval(iv, 'E', '.4f')}",
      f"- A = {a3.A:.4g}{_interval(iv, 'A', '.4g')}, α = {a3.alpha:.4f}{_interval(iv, 'alpha')}",
      f"- B = {a3.B:.4g}{_interval(iv, 'B', '.4g')}, β = {a3.beta:.4f}{_interval(iv, 'beta')}",
      f"- N_opt ∝ C^{a3.a:.3f}{_interval(iv, 'a')}, D_opt ∝ C^{a3.b:.3f}{_interval(iv, 'b')}",
      f"- Huber objective at the optimum: {a3.objective:.3e} over {a3.num_runs} runs",
      "",
    ]
  if report.errors:
    lines += ["## Not fitted", ""] + [f"- {k}: {v}" for k, v in report.errors.items()] + [""]
  lines += [f"## Prediction for C = {report.target_budget:.3g} FLOPs", ""]
  lines += ["| approach | N | D | D/N | predicted " + report.metric + " |", "|---|---|---|---|---|"]
  for name, p in report.prediction.items():
    loss = f"{p['loss']:.4f}" if "loss" in p else "—"
    lines.append(
      f"| {name} | {p['params']:.4g} | {p['tokens']:.4g} | {p['tokens'] / p['params']:.1f} | "
      f"{loss} |"
    )
  lines += ["", *(f"![{name}]({name})" for name in PLOTS), ""]
  return "\n".join(lines)


def write_report(
  report: FitReport, rows: Sequence[dict[str, Any]], out_dir: str, level: float = 0.8
) -> list[str]:
  """Writes fit.json, fit.md and the plots into `out_dir`; returns the paths written."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, FIT_JSON), os.path.join(out_dir, FIT_MARKDOWN)]
  with open(paths[0], "w", encoding="utf-8") as f:
    json.dump(report.to_dict(), f, indent=2)
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(markdown(report, rows, level))
  paths += plot(report, rows, out_dir)
  return paths


def plot(report: FitReport, rows: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
  """The three PNG plots (matplotlib, Agg backend: no display needed)."""
  import matplotlib  # noqa: PLC0415 - optional: only the report draws

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  metric = report.metric
  rows = [r for r in rows if r.get(metric) is not None]
  paths = []

  # 1. Loss vs compute, one line per model size.
  fig, ax = plt.subplots(figsize=(6, 4.2))
  sizes = sorted({r["params"] for r in rows})
  colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))
  for size, color in zip(sizes, colors):
    mine = sorted((r for r in rows if r["params"] == size), key=lambda r: r["compute"])
    ax.plot(
      [r["compute"] for r in mine],
      [r[metric] for r in mine],
      "o-",
      color=color,
      label=f"N={size:.3g}",
    )
  ax.set(xscale="log", xlabel="compute 6ND (FLOPs)", ylabel=metric, title="final loss per size")
  ax.legend(fontsize=7, ncol=2)
  paths.append(_save(fig, out_dir, PLOTS[0]))

  # 2. IsoFLOP profiles with their parabolas and minima.
  fig, ax = plt.subplots(figsize=(6, 4.2))
  budgets = sorted({r["budget"] for r in rows})
  colors = plt.cm.plasma(np.linspace(0, 0.85, max(len(budgets), 1)))
  minima = {m["budget"]: m for m in (report.approach2.minima if report.approach2 else [])}
  for budget, color in zip(budgets, colors):
    mine = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["params"])
    n = np.array([r["params"] for r in mine])
    ax.plot(n, [r[metric] for r in mine], "o", color=color, label=f"C={budget:.2g}")
    if budget in minima:
      m = minima[budget]
      grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
      ax.plot(grid, np.polyval(m["coefficients"], np.log(grid)), "-", color=color, alpha=0.7)
      ax.plot([m["params_opt"]], [m["loss_opt"]], "*", color=color, markersize=14, mec="k")
  ax.set(xscale="log", xlabel="N (matmul parameters)", ylabel=metric, title="IsoFLOP profiles")
  ax.legend(fontsize=7)
  paths.append(_save(fig, out_dir, PLOTS[1]))

  # 3. The frontier N_opt(C), extrapolated to the target budget.
  fig, ax = plt.subplots(figsize=(6, 4.2))
  low = min(budgets + [report.target_budget]) / 2
  high = max(budgets + [report.target_budget]) * 2
  grid = np.geomspace(low, high, 100)
  if report.approach2 is not None:
    a2 = report.approach2
    ax.plot(
      [m["budget"] for m in a2.minima],
      [m["params_opt"] for m in a2.minima],
      "s",
      color="C0",
      label="IsoFLOP minima",
    )
    ax.plot(
      grid, [a2.params_opt(c) for c in grid], "-", color="C0", label=f"approach 2: a={a2.a:.3f}"
    )
  if report.approach3 is not None:
    a3 = report.approach3
    ax.plot(
      grid, [a3.params_opt(c) for c in grid], "--", color="C1", label=f"approach 3: a={a3.a:.3f}"
    )
  for name, p in report.prediction.items():
    ax.plot([report.target_budget], [p["params"]], "*", markersize=14, mec="k",
            color="C0" if name == "approach2" else "C1")  # fmt: skip
    ax.annotate(f"{p['params']:.3g}", (report.target_budget, p["params"]), fontsize=7,
                textcoords="offset points", xytext=(-40, 6))  # fmt: skip
  ax.axvline(report.target_budget, color="grey", lw=0.8, ls=":")
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="compute C (FLOPs)",
    ylabel="compute-optimal N",
    title=f"frontier; target C={report.target_budget:.2g}",
  )
  ax.legend(fontsize=7)
  paths.append(_save(fig, out_dir, PLOTS[2]))
  return paths


def _save(fig, out_dir: str, name: str) -> str:
  import matplotlib.pyplot as plt  # noqa: PLC0415

  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
