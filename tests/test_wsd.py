"""Warmup-stable-decay: exact values at the phase boundaries; decay branches resume the parent's
data stream and state."""

import json
import math
import os

import numpy as np
import pytest

from t5x_lite import config as config_lib
from t5x_lite.data.sharded_stream import HostBatchStream
from t5x_lite.training import loop, optimizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT_TINY = "gpt.py:tiny"  # a shipped config (t5x_lite/configs/)


def wsd_config(shape="linear", steps=1000, warmup=100, fraction=0.2, start=0, end_factor=0.1):
  return config_lib.get_config(
    GPT_TINY,
    [
      ("train.steps", str(steps)),
      ("optimizer.warmup_steps", str(warmup)),
      ("optimizer.learning_rate", "1e-3"),
      ("optimizer.decay", "wsd"),
      ("optimizer.end_factor", str(end_factor)),
      ("optimizer.wsd_decay_fraction", str(fraction)),
      ("optimizer.wsd_decay_shape", shape),
      ("optimizer.wsd_decay_start", str(start)),
    ],
  )


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_values_at_phase_boundaries(shape):
  schedule = optimizers.learning_rate_schedule(wsd_config(shape))
  assert optimizers.wsd_boundaries(wsd_config(shape)) == (100, 800, 200)
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(5e-4, rel=1e-6)  # warmup is linear
  for step in (100, 101, 450, 799, 800):  # stable: exactly the peak, up to the decay start
    assert float(schedule(step)) == pytest.approx(1e-3, rel=1e-6), step
  assert float(schedule(1000)) == pytest.approx(1e-4, rel=1e-5)  # decayed to peak·end_factor
  assert float(schedule(5000)) == pytest.approx(1e-4, rel=1e-5)  # and stays there
  # Halfway through the decay (x = 1/2): the shape's own formula.
  expected = {
    "linear": 1e-4 + 9e-4 * 0.5,
    "cosine": 1e-4 + 9e-4 * (1 + math.cos(math.pi / 2)) / 2,
    "sqrt": 1e-4 + 9e-4 * (1 - math.sqrt(0.5)),
  }[shape]
  assert float(schedule(900)) == pytest.approx(expected, rel=1e-5)
  # A quarter in: the shapes differ (sqrt falls fastest first, cosine slowest).
  quarter = float(schedule(850))
  assert quarter == pytest.approx(
    {
      "linear": 1e-4 + 9e-4 * 0.75,
      "cosine": 1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2,
      "sqrt": 1e-4 + 9e-4 * 0.5,
    }[shape],
    rel=1e-5,
  )


def test_wsd_decay_start_overrides_fraction_and_no_warmup():
  config = wsd_config(steps=500, warmup=0, start=400, end_factor=0.0)
  assert optimizers.wsd_boundaries(config) == (0, 400, 100)
  schedule = optimizers.learning_rate_schedule(config)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(400)) == pytest.approx(1e-3)
  assert float(schedule(450)) == pytest.approx(5e-4, rel=1e-6)
  assert float(schedule(500)) == 0.0


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"optimizer.wsd_decay_fraction": "1.5"}, "wsd_decay_fraction=1.5: expected [0, 1]"),
    ({"optimizer.wsd_decay_shape": "exp"}, "wsd_decay_shape='exp'"),
    ({"optimizer.wsd_decay_start": "2000"}, "WSD decay starts at step 2000"),
    ({"optimizer.wsd_decay_start": "50"}, "expected between optimizer.warmup_steps=100"),
  ],
)
def test_wsd_config_errors(overrides, message):
  pairs = [("train.steps", "1000"), ("optimizer.warmup_steps", "100"), ("optimizer.decay", "wsd")]
  with pytest.raises(config_lib.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    config_lib.get_config(GPT_TINY, pairs + list(overrides.items()))


# ---------------------------------------------------------------------------------------------
# Decay branches.


def tiny_run_config(**overrides):
  base = {
    "model.d_model": "32",
    "model.d_ff": "64",
    "model.num_layers": "1",
    "data.feature_lengths": "{'targets': 32}",
    "train.batch_size": "8",
    "train.log_every": "1",
    "train.eval_every": "0",
    "train.eval_steps": "1",
    "train.sample_prompt": "",
    "train.async_checkpoints": "false",
    "train.keep": "10",
    "optimizer.decay": "wsd",
    "optimizer.warmup_steps": "2",
  }
  base.update(overrides)
  return config_lib.get_config(GPT_TINY, list(base.items()))


def train_losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_decay_branch_resumes_the_parents_data_stream(tmp_path, shared_vocab_workdir, monkeypatch):
  """Parent: 8 WSD steps, checkpoints every 2. Branch from step 4 with a 2-step cooldown: it
  reads exactly the parent's batches 5 and 6, and its step-5 loss (computed from the restored
  params, before any update of its own) equals the parent's."""
  seen = []  # (split, fingerprint of the batch) in reading order
  original_next = HostBatchStream.__next__

  def recording_next(self):
    batch = original_next(self)
    if self.split == "train":
      seen.append(np.asarray(batch["decoder_target_tokens"]).copy())
    return batch

  monkeypatch.setattr(HostBatchStream, "__next__", recording_next)

  parent = shared_vocab_workdir(str(tmp_path / "parent"))
  config = tiny_run_config(
    **{"train.steps": "8", "train.checkpoint_every": "2", "optimizer.wsd_decay_fraction": "0.25"}
  )
  loop.train_and_evaluate(config, parent)
  parent_batches = list(seen)
  assert len(parent_batches) == 8
  seen.clear()

  branch = str(tmp_path / "branch")  # no vocabulary: the branch copies the parent's
  branch_config = tiny_run_config(
    **{
      "train.steps": "6",
      "train.checkpoint_every": "100",
      "train.branch_from": f"{parent}:4",
      "optimizer.wsd_decay_start": "4",
      "optimizer.end_factor": "0.0",
    }
  )
  result = loop.train_and_evaluate(branch_config, branch)
  assert result["step"] == 6
  assert len(seen) == 2
  for mine, theirs in zip(seen, parent_batches[4:6]):
    np.testing.assert_array_equal(mine, theirs)
  assert not np.array_equal(seen[0], parent_batches[0])  # not the start of the stream
  parent_loss, branch_loss = train_losses(parent), train_losses(branch)
  assert sorted(branch_loss) == [5, 6]
  assert branch_loss[5] == pytest.approx(parent_loss[5], rel=1e-6)
  assert os.listdir(os.path.join(branch, "vocab")) == os.listdir(os.path.join(parent, "vocab"))
  # The branch's own learning rate (the one each update used): schedule(4) = the peak, then a
  # 2-step linear decay to 0: schedule(5) = peak / 2. The parent was still stable at step 6.
  rows = [json.loads(line) for line in open(os.path.join(branch, "metrics.jsonl"))]
  rates = {r["step"]: r["train/learning_rate"] for r in rows if "train/loss" in r}
  assert rates == {5: pytest.approx(3e-3, rel=1e-6), 6: pytest.approx(1.5e-3, rel=1e-6)}


def test_decay_branch_rejects_another_model(tmp_path, shared_vocab_workdir):
  parent = shared_vocab_workdir(str(tmp_path / "parent"))
  loop.train_and_evaluate(tiny_run_config(**{"train.steps": "2"}), parent)
  config = tiny_run_config(
    **{"train.steps": "4", "model.d_model": "64", "train.branch_from": f"{parent}:2"}
  )
  with pytest.raises(config_lib.ConfigError, match=r"config.model.d_model=64 differs"):
    loop.train_and_evaluate(config, str(tmp_path / "branch"))
  with pytest.raises(config_lib.ConfigError, match="expected 'WORKDIR:STEP'"):
    bad = tiny_run_config(**{"train.steps": "4", "train.branch_from": parent})
    loop.train_and_evaluate(bad, str(tmp_path / "branch2"))
