"""Draw loss curves (train and eval) of one or more runs to a PNG.

  python tools/plot_metrics.py runs/a runs/b --out losses.png [--keys loss eval/loss] [--log-y]

Reads each workdir's metrics.jsonl (t5x_lite.reporting.MetricsWriter). A resumed run logs some
steps twice; the last line for a step wins, as it is the one the finished run kept. Needs
matplotlib (`pip install matplotlib`); a gs:// workdir needs gcsfs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence


def read_metrics(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """{metric name: [(step, value), ...] sorted by step}, the last logged value per step."""
  path = workdir.rstrip("/") + "/metrics.jsonl"
  if "://" in path:
    from etils import epath

    text = epath.Path(path).read_text()
  else:
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no metrics.jsonl in workdir {workdir}")
    with open(path, encoding="utf-8") as f:
      text = f.read()
  by_name: dict[str, dict[int, float]] = {}
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(text.splitlines()):
        continue  # a line cut short by a crash mid-write
      raise ValueError(f"{path}:{number}: not a JSON line: {line[:80]!r}") from None
    step = record.get("step")
    for name, value in record.items():
      if name in ("step", "time") or not isinstance(value, (int, float)):
        continue
      by_name.setdefault(name, {})[int(step)] = float(value)
  return {name: sorted(values.items()) for name, values in by_name.items()}


def default_keys(names: Sequence[str]) -> list[str]:
  """The loss curves: every metric whose last path component is 'loss', training first."""
  losses = [n for n in names if n.split("/")[-1] == "loss"]
  return sorted(losses, key=lambda n: ("eval" in n.split("/")[:-1], n))


def plot(workdirs: Sequence[str], out: str, keys: Sequence[str] = (), log_y: bool = False) -> int:
  """Draws the curves to `out`; returns how many curves were drawn."""
  try:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
  except ImportError:
    raise SystemExit("plot_metrics: matplotlib is not installed (pip install matplotlib)") from None

  figure, axes = plt.subplots(figsize=(8, 5))
  curves = 0
  for run_index, workdir in enumerate(workdirs):
    series = read_metrics(workdir)
    run = os.path.basename(workdir.rstrip("/")) or workdir
    for key_index, key in enumerate(keys or default_keys(list(series))):
      points = [(s, v) for s, v in series.get(key, []) if math.isfinite(v)]
      if not points:
        continue
      steps, values = zip(*points, strict=True)
      # One colour per run; the first key solid, the others (eval) dashed with markers.
      style = "-" if key_index == 0 else "o--"
      axes.plot(
        steps, values, style, color=f"C{run_index % 10}", markersize=3, label=f"{run}: {key}"
      )
      curves += 1
  if not curves:
    plt.close(figure)
    raise SystemExit(
      f"plot_metrics: no {', '.join(keys) or 'loss'} values in {', '.join(workdirs)}"
    )
  axes.set_xlabel("step")
  axes.set_ylabel("loss")
  if log_y:
    axes.set_yscale("log")
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(out, dpi=120)
  plt.close(figure)
  return curves


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="run directories holding metrics.jsonl")
  parser.add_argument("--out", default="losses.png", help="PNG to write")
  parser.add_argument("--keys", nargs="*", default=(), help="metrics to plot (default: losses)")
  parser.add_argument("--log-y", action="store_true", help="logarithmic loss axis")
  args = parser.parse_args(argv)
  try:
    curves = plot(args.workdirs, args.out, args.keys, args.log_y)
  except (FileNotFoundError, ValueError) as e:
    print(f"plot_metrics: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.out} ({curves} curves)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
