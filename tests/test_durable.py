"""Runs that survive: preemption (SIGTERM), non-finite steps, another topology, 2 hosts (kill -9:
tests/test_kill_resume.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from t5x_lite import checkpoints, cli
from t5x_lite.data import sharded_stream
from t5x_lite.training import loop
from t5x_lite.training.setup import RunSetup

pytestmark = pytest.mark.slow  # training runs, restarts, a second process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "gpt.py:tiny"
# Small and quick: 8 rows of 64 tokens; the schedule does not depend on train.steps.
COMMON = {
  "train.batch_size": "8",
  "data.feature_lengths": "{'targets': 64}",
  "train.log_every": "1",
  "train.eval_every": "0",
  "train.eval_steps": "1",
  "train.sample_prompt": "",
  "optimizer.warmup_steps": "2",
  "optimizer.decay_steps": "30",
}


def losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  by_step = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}  # last write wins
  return [by_step[s] for s in sorted(by_step)]


def final_params(workdir):
  checkpointer = checkpoints.open_existing(workdir)
  config = checkpointer.restore_config()
  return jax.device_get(RunSetup.create(config).restore_params(checkpointer))


def assert_params_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_restore_onto_another_topology(make_config, tmp_path, shared_vocab_workdir):
  """fsdp=8 checkpoint at step 2 -> 4 devices (data=2, fsdp=2) and 1 device: same step-3 loss."""
  eight = shared_vocab_workdir(str(tmp_path / "eight"))
  loop.train_and_evaluate(
    make_config(
      TINY,
      **{
        **COMMON,
        "train.steps": "3",
        "train.checkpoint_every": "2",
        "mesh.data": "1",
        "mesh.fsdp": "8",
      },
    ),
    eight,
  )
  reference = losses(eight)[2]
  for name, devices, mesh in (
    ("four", jax.devices()[:4], {"mesh.data": "2", "mesh.fsdp": "2"}),
    ("one", jax.devices()[:1], {"mesh.data": "1"}),
  ):
    workdir = str(tmp_path / name)
    shutil.copytree(eight, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    result = loop.train_and_evaluate(
      make_config(TINY, **{**COMMON, "train.steps": "3", **mesh}), workdir, devices
    )
    assert result["step"] == 3
    assert losses(workdir) == [pytest.approx(reference, rel=1e-5)], name


def test_sigterm_saves_exits_0_and_resumes_exactly(
  make_config, tmp_path, shared_vocab_workdir, monkeypatch, capsys
):
  straight = shared_vocab_workdir(str(tmp_path / "straight"))
  loop.train_and_evaluate(
    make_config(TINY, **{**COMMON, "train.steps": "20", "train.checkpoint_every": "100"}), straight
  )

  preempted = shared_vocab_workdir(str(tmp_path / "preempted"))
  original_next = sharded_stream.HostBatchStream.__next__
  calls = {"n": 0}

  def next_and_preempt(self):
    if self.split == "train":
      calls["n"] += 1
      if calls["n"] == 7:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 7 runs
    return original_next(self)

  monkeypatch.setattr(sharded_stream.HostBatchStream, "__next__", next_and_preempt)
  args = [
    "train",
    "--config",
    TINY,
    "--workdir",
    preempted,
    "--config.train.steps=20",
    "--config.train.checkpoint_every=100",
  ] + [f"--config.{k}={v}" for k, v in COMMON.items()]
  assert cli.main(args) == 0
  assert "preempted at step 7" in capsys.readouterr().out
  assert checkpoints.open_existing(preempted).all_steps() == [7]
  monkeypatch.setattr(sharded_stream.HostBatchStream, "__next__", original_next)
  assert cli.main(args) == 0  # the same command resumes
  assert losses(preempted) == losses(straight)
  assert_params_equal(final_params(preempted), final_params(straight))


def test_nonfinite_skip_goes_on_and_stop_keeps_last_checkpoint(
  make_config, tmp_path, shared_vocab_workdir, monkeypatch
):
  original_next = sharded_stream.HostBatchStream.__next__
  counter = {"n": 0}

  def poisoned_next(self):
    batch = original_next(self)
    if self.split == "train":
      counter["n"] += 1
      if counter["n"] == 5:
        batch["decoder_loss_weights"] = batch["decoder_loss_weights"] * np.nan
    return batch

  monkeypatch.setattr(sharded_stream.HostBatchStream, "__next__", poisoned_next)
  skip = shared_vocab_workdir(str(tmp_path / "skip"))
  result = loop.train_and_evaluate(
    make_config(TINY, **{**COMMON, "train.steps": "7", "train.checkpoint_every": "4"}), skip
  )
  assert result["step"] == 7
  rows = [json.loads(line) for line in open(os.path.join(skip, "metrics.jsonl"))]
  skipped = {r["step"]: r["train/skipped_steps"] for r in rows if "train/loss" in r}
  assert skipped == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1}

  counter["n"] = 0
  stop = shared_vocab_workdir(str(tmp_path / "stop"))
  with pytest.raises(
    loop.TrainingError,
    match="non-finite loss, gradient or update at step 5.*last checkpoint is step 4",
  ):
    loop.train_and_evaluate(
      make_config(
        TINY,
        **{**COMMON, "train.steps": "7", "train.checkpoint_every": "4", "train.nonfinite": "stop"},
      ),
      stop,
    )
  assert checkpoints.open_existing(stop).all_steps() == [4]


def _subprocess_env(devices=1):
  return dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    PYTHONUNBUFFERED="1",
    JAX_PLATFORMS="cpu",
  )


def _train_command(workdir, steps, extra=()):
  return (
    [
      sys.executable,
      "-m",
      "t5x_lite.cli",
      "train",
      "--config",
      TINY,
      "--workdir",
      workdir,
      f"--config.train.steps={steps}",
      "--config.train.checkpoint_every=2",
    ]
    + [f"--config.{k}={v}" for k, v in COMMON.items()]
    + list(extra)
  )


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_equal_one_process(tmp_path, shared_vocab_workdir):
  """2 processes x 2 CPU devices (gloo) == 1 process x 4 devices reading the same 2 data shards."""
  single = shared_vocab_workdir(str(tmp_path / "single"))
  single_run = subprocess.Popen(
    _train_command(single, 5, ["--config.data.num_shards=2"]),
    env=_subprocess_env(4),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  multi = shared_vocab_workdir(str(tmp_path / "multi"))
  port = _free_port()
  workers = [
    subprocess.Popen(
      _train_command(
        multi,
        5,
        ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
      ),
      env=_subprocess_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  single_output = single_run.communicate(timeout=300)[0]
  for i, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0, output[-3000:]
    assert f"process {i} reads data shards ({i},) of 2" in output
  assert single_run.returncode == 0, single_output[-3000:]
  assert "process 0 reads data shards (0, 1) of 2" in single_output
  assert losses(multi) == pytest.approx(losses(single), rel=1e-5)
  assert len(losses(multi)) == 5
  # Only process 0 logs the progress lines.
  assert "step 5/5" in outputs[0] and "step 5/5" not in outputs[1]
