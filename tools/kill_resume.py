"""kill -9 at random moments, then the same command again: the run must end bit-identical.

One uninterrupted reference run of `t5x-lite train` (the tiny GPT, a checkpoint every 2 steps,
asynchronous saves), then `--trials` runs of the same command in fresh workdirs, each killed with
SIGKILL at a random moment and rerun (the same command line) until it finishes. A trial passes
when the final parameters (SHA-256 of every leaf) and every logged `train/loss` (each row of
metrics.jsonl, including steps logged twice around the kill) equal the reference's.

Moments, drawn per trial from `--seed`: 'startup' (0-8 s after launch: import, compile, restore),
'step' (just after a random step is logged) and 'checkpoint' (while Orbax writes a random step's
checkpoint: its temporary folder exists, the commit has not happened).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
    python tools/kill_resume.py --trials 20 --out kill_resume.json

CPU-heavy (two processes' worth of start-up per trial); run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from t5x_lite import checkpoints
from t5x_lite.training.setup import RunSetup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("startup", "step", "checkpoint", "checkpoint")  # half of the kills hit a save


def train_command(workdir: str, steps: int) -> list[str]:
  return [
    sys.executable, "-m", "t5x_lite.cli", "train", "--config", "gpt.py:tiny",
    "--workdir", workdir,
    f"--config.train.steps={steps}", "--config.train.batch_size=8",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2",
    "--config.train.eval_every=0", "--config.train.eval_steps=1",
    "--config.train.sample_prompt=", "--config.model.dropout_rate=0.1",
    "--config.optimizer.warmup_steps=2", "--config.train.keep=2",
  ]  # fmt: skip


def environment() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # One compilation cache for all the runs: a trial's start-up is then mostly imports.
  env.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "kill_resume_jax")
  )
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def losses(workdir: str) -> list[tuple[int, float]]:
  """Every (step, train/loss) row of metrics.jsonl, in file order."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if not line.strip():
          continue
        row = json.loads(line)
        if "train/loss" in row:
          rows.append((int(row["step"]), float(row["train/loss"])))
  return rows


def logged_steps(workdir: str) -> int:
  rows = losses_tolerant(workdir)
  return max((s for s, _ in rows), default=0)


def losses_tolerant(workdir: str) -> list[tuple[int, float]]:
  try:
    return losses(workdir)
  except (json.JSONDecodeError, ValueError):  # a line being written
    return []


def checkpoint_in_progress(workdir: str, min_step: int) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return False
  for name in os.listdir(folder):
    if "tmp" in name:
      head = name.split(".")[0]
      if head.isdigit() and int(head) >= min_step:
        return True
  return False


def params_hash(workdir: str) -> str:
  """SHA-256 over (path, dtype, shape, bytes) of the latest checkpoint's params."""
  checkpointer = checkpoints.open_existing(workdir)
  step = checkpointer.latest_step()
  config = checkpointer.restore_config(step)
  setup = RunSetup.create(config)
  params = jax.device_get(setup.restore_params(checkpointer, step))
  checkpointer.close()
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    value = np.asarray(leaf)
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{value.dtype}{value.shape}".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return f"step {step}: {digest.hexdigest()}"


def run_to_end(workdir: str, steps: int, log) -> None:
  result = subprocess.run(
    train_command(workdir, steps), env=environment(), stdout=log, stderr=log, timeout=1800
  )
  if result.returncode != 0:
    raise RuntimeError(f"{workdir}: the rerun exited {result.returncode} (see its log)")


def kill_once(workdir: str, steps: int, kind: str, rng: random.Random, log) -> str:
  """Starts the run, SIGKILLs it at a moment of `kind`; returns what was hit."""
  process = subprocess.Popen(
    train_command(workdir, steps), env=environment(), stdout=log, stderr=log
  )
  start = time.time()
  target = rng.randint(1, steps - 1)
  delay = rng.uniform(0.0, 8.0)
  hit = "finished before the kill"
  while process.poll() is None:
    if kind == "startup" and time.time() - start >= delay:
      hit = f"startup +{delay:.1f}s"
      break
    if kind == "step" and logged_steps(workdir) >= target:
      time.sleep(rng.uniform(0.0, 0.3))
      hit = f"after step {logged_steps(workdir)} was logged"
      break
    if kind == "checkpoint" and checkpoint_in_progress(workdir, target):
      hit = f"during the write of a checkpoint >= step {target}"
      break
    time.sleep(0.005)
  if process.poll() is None:
    os.kill(process.pid, signal.SIGKILL)
  process.wait()
  return hit


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--steps", type=int, default=12)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="", help="write the results as JSON here")
  parser.add_argument("--keep", action="store_true", help="keep the workdirs")
  args = parser.parse_args(argv)
  rng = random.Random(args.seed)
  root = tempfile.mkdtemp(prefix="kill_resume_")
  log_path = os.path.join(root, "runs.log")
  results = {"trials": [], "passed": 0}
  with open(log_path, "a") as log:
    reference = os.path.join(root, "reference")
    run_to_end(reference, args.steps, log)
    ref_losses, ref_hash = losses(reference), params_hash(reference)
    ref_by_step = dict(ref_losses)
    print(f"reference: {len(ref_losses)} losses, params {ref_hash}", flush=True)
    for trial in range(args.trials):
      workdir = os.path.join(root, f"trial_{trial:02d}")
      shutil.copytree(os.path.join(reference, "vocab"), os.path.join(workdir, "vocab"))
      kind = KINDS[trial % len(KINDS)] if trial < len(KINDS) else rng.choice(KINDS)
      hit = kill_once(workdir, args.steps, kind, rng, log)
      run_to_end(workdir, args.steps, log)
      rows = losses(workdir)
      bad = [(s, v) for s, v in rows if ref_by_step.get(s) != v]
      steps_seen = sorted({s for s, _ in rows})
      got_hash = params_hash(workdir)
      ok = not bad and steps_seen == sorted(ref_by_step) and got_hash == ref_hash
      results["passed"] += ok
      results["trials"].append(
        {"trial": trial, "kind": kind, "hit": hit, "ok": ok, "losses": len(rows),
         "mismatched_losses": bad[:5], "params": got_hash}
      )  # fmt: skip
      print(
        f"trial {trial:2d} [{kind:10s}] killed {hit}: {len(rows)} losses logged, "
        f"{'identical' if ok else 'DIFFERENT'}",
        flush=True,
      )
      if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
  print(f"{results['passed']}/{args.trials} trials bit-identical (logs: {log_path})", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
  if not args.keep:
    shutil.rmtree(reference, ignore_errors=True)
  return 0 if results["passed"] == args.trials else 1


if __name__ == "__main__":
  sys.exit(main())
