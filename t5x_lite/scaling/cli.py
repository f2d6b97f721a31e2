"""`t5x-lite scaling plan|run|fit|predict`: the parser and handlers (wired by t5x_lite/cli.py).

  t5x-lite scaling plan --family decoder --budgets 1e13,3e13,1e14 --points 3 [--out plan.json]
  t5x-lite scaling run plan.json --workdir runs/sweep [--print-launch [--tpu-name N --zone Z
                       --accelerator-type v4-8]]
  t5x-lite scaling fit runs/sweep [--target-budget 1e21 --bootstrap 100 --metric loss]
  t5x-lite scaling predict --fit runs/sweep --budget 1e21

`plan` also takes `--config FILE[:VARIANT]` and `--config.x=y` overrides for the base config of
every point (e.g. `--config.train.batch_size=32`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from t5x_lite import config as config_lib
from t5x_lite.scaling import fit as fit_lib
from t5x_lite.scaling import plan as plan_lib
from t5x_lite.scaling import report as report_lib

USER_ERRORS = (fit_lib.FitError, plan_lib.PlanError)  # one-line errors, exit 2


def add_parser(subparsers) -> argparse.ArgumentParser:
  """Adds `scaling` with its four subcommands to the t5x-lite subparsers."""
  scaling = subparsers.add_parser(
    "scaling", help="plan, run and fit a scaling-law sweep (docs/scaling.md)"
  )
  sub = scaling.add_subparsers(dest="scaling_command", required=True)

  plan_parser = sub.add_parser("plan", help="an IsoFLOP grid of shapes and token counts")
  plan_parser.add_argument("--family", default="decoder", choices=sorted(plan_lib.FAMILY_CONFIGS))
  plan_parser.add_argument(
    "--budgets", required=True, help="compute budgets in FLOPs, e.g. 1e13,3e13"
  )
  plan_parser.add_argument("--points", type=int, default=5, help="model sizes per budget")
  plan_parser.add_argument(
    "--config", default=None, help="base config (default: the family's tiny)"
  )
  plan_parser.add_argument(
    "--tokens-per-param", type=float, default=20.0, help="centre of the grid"
  )
  plan_parser.add_argument(
    "--span", type=float, default=4.0, help="sizes within N*/span .. N*·span"
  )
  plan_parser.add_argument(
    "--min-steps", type=int, default=plan_lib.MIN_STEPS, help="fewer: dropped"
  )
  plan_parser.add_argument(
    "--out", default="", help="write the plan JSON here (default: print only)"
  )

  run_parser = sub.add_parser("run", help="train every point of a plan (resumable)")
  run_parser.add_argument("plan", help="a plan.json from `scaling plan --out`")
  run_parser.add_argument("--workdir", required=True, help="the sweep directory")
  run_parser.add_argument(
    "--print-launch", action="store_true", help="print the commands, run nothing"
  )
  run_parser.add_argument(
    "--tpu-name", default="", help="with --print-launch: `t5x-lite launch up`"
  )
  run_parser.add_argument("--zone", default="")
  run_parser.add_argument("--accelerator-type", default="")

  fit_parser = sub.add_parser(
    "fit", help="fit approaches 2 and 3 to a sweep's results; write a report"
  )
  fit_parser.add_argument("sweep", help="a sweep directory (with results.jsonl) or a results.jsonl")
  fit_parser.add_argument("--out", default="", help="report directory (default: SWEEP/fit)")
  fit_parser.add_argument("--target-budget", type=float, default=1e21)
  fit_parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap refits (0 = none)")
  fit_parser.add_argument(
    "--level", type=float, default=0.8, help="interval level (0.8: 10th-90th)"
  )
  fit_parser.add_argument("--metric", default="loss", choices=("loss", "bits_per_byte"))
  fit_parser.add_argument("--seed", type=int, default=0)

  predict_parser = sub.add_parser("predict", help="N, D and loss for a budget from a fit")
  predict_parser.add_argument("--fit", required=True, help="fit.json, or the directory holding it")
  predict_parser.add_argument("--budget", type=float, required=True, help="FLOPs, e.g. 1e21")
  scaling.set_defaults(func=run)
  return scaling


def run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
  """Runs one `scaling` subcommand; returns the exit status."""
  command = args.scaling_command
  if overrides and command != "plan":
    raise plan_lib.PlanError(f"scaling {command}: unexpected arguments {' '.join(overrides)}")
  if command == "plan":
    return _plan(args, overrides)
  if command == "run":
    return _run(args)
  if command == "fit":
    return _fit(args)
  return _predict(args)


def _plan(args, overrides: Sequence[str]) -> int:
  plan = plan_lib.make_plan(
    plan_lib.parse_budgets(args.budgets),
    points=args.points,
    family=args.family,
    config=args.config,
    overrides=config_lib.parse_overrides(overrides),
    tokens_per_param=args.tokens_per_param,
    span=args.span,
    min_steps=args.min_steps,
  )
  print(plan.table())
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(plan.to_json())
    print(f"wrote {args.out}")
  return 0


def _load_plan(path: str) -> plan_lib.Plan:
  if not os.path.exists(path):
    raise FileNotFoundError(f"plan {path} does not exist (write one with `scaling plan --out`)")
  with open(path, encoding="utf-8") as f:
    try:
      return plan_lib.Plan.from_json(f.read())
    except (json.JSONDecodeError, TypeError, KeyError) as e:
      raise plan_lib.PlanError(f"{path} is not a scaling plan ({type(e).__name__}: {e})") from None


def _run(args) -> int:
  from t5x_lite.scaling import run as run_lib  # noqa: PLC0415 - jax and training only when running

  plan = _load_plan(args.plan)
  if args.print_launch:
    tpu = None
    if args.tpu_name:
      if not (args.zone and args.accelerator_type):
        raise plan_lib.PlanError("--tpu-name needs --zone and --accelerator-type")
      tpu = {"name": args.tpu_name, "zone": args.zone, "accelerator_type": args.accelerator_type}
    print(run_lib.launch_commands(plan, args.workdir, tpu))
    return 0
  rows = run_lib.run_sweep(plan, args.workdir)
  print(f"{len(rows)} point(s) run; results in {os.path.join(args.workdir, 'results.jsonl')}")
  return 0


def _fit(args) -> int:
  rows = report_lib.read_results(args.sweep)
  report = report_lib.fit_results(
    rows,
    target_budget=args.target_budget,
    metric=args.metric,
    bootstrap=args.bootstrap,
    level=args.level,
    seed=args.seed,
  )
  sweep_dir = args.sweep if os.path.isdir(args.sweep) else os.path.dirname(args.sweep)
  out = args.out or os.path.join(sweep_dir, "fit")
  paths = report_lib.write_report(report, rows, out, level=args.level)
  print(report_lib.markdown(report, rows, args.level).split("## Prediction")[-1].strip())
  for name, error in report.errors.items():
    print(f"warning: {name} not fitted: {error}")
  print("wrote " + ", ".join(paths))
  return 0


def _predict(args) -> int:
  report = report_lib.load_fit(args.fit)
  prediction = fit_lib.predict(report.approach2, report.approach3, args.budget)
  print(json.dumps({"budget": args.budget, **prediction}, indent=2))
  return 0
