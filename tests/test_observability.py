"""Profiler traces of the requested steps; W&B logging (offline) of the loop's metrics."""

import glob
import json
import os

import pytest

from t5x_lite import config as config_lib
from t5x_lite.training import loop, observability


def tiny_config(**overrides):
  base = {
    "model.d_model": "32",
    "model.d_ff": "64",
    "model.num_layers": "1",
    "data.feature_lengths": "{'targets': 32}",
    "train.steps": "4",
    "train.batch_size": "8",
    "train.log_every": "2",
    "train.eval_every": "0",
    "train.eval_steps": "1",
    "train.checkpoint_every": "100",
    "train.sample_prompt": "",
  }
  base.update(overrides)
  return config_lib.get_config("gpt.py:tiny", list(base.items()))


@pytest.mark.slow
def test_profile_steps_write_a_trace(tmp_path, shared_vocab_workdir):
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  loop.train_and_evaluate(tiny_config(**{"train.profile_steps": "(2, 3)"}), workdir)
  traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000
  # The step annotations are in the trace (TensorBoard's step view reads them).
  assert b"train" in open(traces[0], "rb").read()


def test_profile_steps_validation():
  with pytest.raises(config_lib.ConfigError, match=r"train.profile_steps=\(3, 2\)"):
    tiny_config(**{"train.profile_steps": "(3, 2)"})
  hook = observability.ProfileHook((), "/nonexistent")
  with hook.step(1):
    pass
  hook.after_step(1, None)
  assert not hook.active  # nothing requested: never started


@pytest.mark.slow
def test_wandb_offline_logs_the_loops_metrics(tmp_path, shared_vocab_workdir, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  result = loop.train_and_evaluate(tiny_config(**{"train.wandb_project": "t5x-lite-test"}), workdir)
  run_id = open(os.path.join(workdir, observability.WANDB_ID_FILE)).read().strip()
  runs = glob.glob(os.path.join(workdir, "wandb", f"offline-run-*-{run_id}"))
  assert len(runs) == 1
  history = wandb_history(glob.glob(os.path.join(runs[0], "run-*.wandb"))[0])
  # Every value the loop wrote to metrics.jsonl went to W&B at the same step.
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert sorted(history) == [2, 4]
  for row in rows:
    for key, value in row.items():
      if key.startswith(("train/", "eval/")):
        assert history[row["step"]][key] == pytest.approx(value, rel=1e-6), key
  assert history[4]["eval/loss"] == pytest.approx(result["eval"]["loss"], rel=1e-6)


def wandb_history(path):
  """{step: {key: value}} from a W&B run file: LevelDB-log records (32 KiB blocks, 7-byte
  headers crc32/length/type) of wandb_internal_pb2.Record protobufs after a 7-byte header."""
  import struct

  from wandb.proto import wandb_internal_pb2

  data = open(path, "rb").read()
  assert data[:4] == b":W&B"
  position, pending, history = 7, b"", {}
  while position + 7 <= len(data):
    if 32768 - position % 32768 < 7:  # block trailer padding
      position += 32768 - position % 32768
      continue
    _, length, kind = struct.unpack("<IHB", data[position : position + 7])
    pending += data[position + 7 : position + 7 + length]
    position += 7 + length
    if kind in (1, 4):  # a FULL record, or the LAST fragment of one
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      pending = b""
      if record.WhichOneof("record_type") == "history":
        items = {
          i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
        }
        step = items.get("_step", record.history.step.num)
        history.setdefault(step, {}).update(items)
  return history
