"""Runs an IsoFLOP plan: one training run per point, sequentially, resumable.

  DIR/plan.json          the plan (copied on the first run; later runs must use the same plan)
  DIR/vocab/             the vocabulary, trained once and shared by every point
  DIR/points/<id>/       each point's workdir (checkpoints, metrics.jsonl)
  DIR/results.jsonl      one line per finished point: its plan entry + final held-out loss,
                         bits per byte and per character

A point already in results.jsonl is skipped; an interrupted point resumes from its own last
checkpoint (the training loop's resume). `launch_commands` prints the same runs as
`t5x-lite train` (one machine each) or `t5x-lite launch up` (a Cloud TPU VM each) commands.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from typing import Any

import jax

from t5x_lite import config as config_lib
from t5x_lite import models
from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import HostBatchStream
from t5x_lite.evaluation import bits_per_byte as evaluation_bpb
from t5x_lite.scaling import plan as plan_lib
from t5x_lite.scaling.report import RESULTS_FILE
from t5x_lite.training.loop import train_and_evaluate

PLAN_FILE = "plan.json"


def completed_ids(workdir: str) -> set[str]:
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return set()
  with open(path, encoding="utf-8") as f:
    return {json.loads(line)["id"] for line in f if line.strip()}


def _check_same_plan(plan: plan_lib.Plan, workdir: str) -> None:
  """Writes DIR/plan.json, or checks that an existing one is this plan (no mixed sweeps)."""
  path = os.path.join(workdir, PLAN_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      existing = plan_lib.Plan.from_json(f.read())
    if existing != plan:
      raise plan_lib.PlanError(
        f"{path} holds another plan than the one given: use a new --workdir, or the same plan"
      )
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(plan.to_json())


def held_out_text_count(config, workdir: str, num_batches: int) -> evaluation_bpb.TextCount:
  """TextCount of the first `num_batches` validation batches: the very batches the loop's
  evaluation averaged its loss over (a fresh, deterministic validation stream)."""
  vocabulary = pipeline.get_vocabulary(config, workdir)
  model = models.build_model(config_lib.model_config(config))
  stream = HostBatchStream(
    config, vocabulary, model.feature_converter(config.data.pack), split="validation",
    num_shards=config.data.num_shards or jax.process_count(),
    process_index=jax.process_index(), process_count=jax.process_count(),
  )  # fmt: skip
  count = evaluation_bpb.TextCount()
  for _ in range(num_batches):
    count = count + evaluation_bpb.count_target_text(next(stream), vocabulary)
  return count


def run_sweep(
  plan: plan_lib.Plan,
  workdir: str,
  *,
  devices: Sequence[Any] | None = None,
  log=print,
) -> list[dict[str, Any]]:
  """Trains every point of `plan` not yet in DIR/results.jsonl; returns the new result rows."""
  _check_same_plan(plan, workdir)
  done = completed_ids(workdir)
  todo = [p for p in plan.points if p.id not in done]
  log(f"scaling run: {len(plan.points)} points, {len(done)} done, {len(todo)} to run in {workdir}")
  if todo:  # one vocabulary for the sweep: train it once, copy it into every point
    pipeline.get_vocabulary(plan.point_config(todo[0]), workdir)
  rows = []
  for index, point in enumerate(todo, 1):
    config = plan.point_config(point)
    point_dir = os.path.join(workdir, "points", point.id)
    if os.path.isdir(os.path.join(workdir, "vocab")):
      shutil.copytree(
        os.path.join(workdir, "vocab"), os.path.join(point_dir, "vocab"), dirs_exist_ok=True
      )
    log(
      f"[{index}/{len(todo)}] {point.id}: N={point.params:,} D={point.tokens:,} "
      f"({point.steps} steps), C={point.compute:.2e}"
    )
    start = time.time()
    result = train_and_evaluate(config, point_dir, devices=devices)
    if result.get("preempted"):
      log(f"preempted during {point.id}: rerun the same command to resume")
      break
    metrics = dict(result["eval"])
    if "bits_per_byte" not in metrics:  # the loop does not log it yet: count the same batches
      count = held_out_text_count(config, workdir, int(config.train.eval_steps))
      metrics.update(count.from_mean_loss(metrics["loss"]))
    row = {
      "id": point.id,
      "budget": point.budget,
      "params": point.params,
      "tokens": point.tokens,
      "compute": point.compute,
      "steps": point.steps,
      **{k: v for k, v in vars(point.shape).items()},
      "loss": float(metrics["loss"]),
      "bits_per_byte": float(metrics["bits_per_byte"]),
      "bits_per_character": float(metrics.get("bits_per_character", float("nan"))),
      "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(workdir, RESULTS_FILE), "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    rows.append(row)
    log(f"    loss {row['loss']:.4f}, {row['bits_per_byte']:.4f} bits/byte ({row['seconds']}s)")
  logging.info("scaling run: results in %s", os.path.join(workdir, RESULTS_FILE))
  return rows


def _tpu_name(prefix: str, point_id: str) -> str:
  """A Cloud TPU node name (lower case letters, digits, '-'): 'sweep-c1e13-d48'."""
  return re.sub(r"[^a-z0-9-]", "-", f"{prefix}-{point_id}".lower()).strip("-")


def launch_commands(plan: plan_lib.Plan, workdir: str, tpu: dict[str, str] | None = None) -> str:
  """Shell commands for every point: `t5x-lite train` (or `t5x-lite launch up` with `tpu` =
  {'name', 'zone', 'accelerator_type'}), one per line. Results are then collected with
  `t5x-lite scaling fit` after writing results.jsonl (see docs/scaling.md)."""
  lines = []
  for point in plan.points:
    point_dir = f"{workdir.rstrip('/')}/points/{point.id}"
    overrides = [f"--config.{k}={v}" for k, v in list(plan.base_overrides) + point.overrides]
    if tpu:
      head = [
        "t5x-lite", "launch", "up", "--name", _tpu_name(tpu["name"], point.id),
        "--zone", tpu["zone"], "--accelerator-type", tpu["accelerator_type"],
      ]  # fmt: skip
    else:
      head = ["t5x-lite", "train"]
    argv = head + ["--config", plan.config, "--workdir", point_dir] + overrides
    lines.append(" ".join(shlex.quote(a) for a in argv))
  return "\n".join(lines)
