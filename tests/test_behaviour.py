"""The training loop adds nothing to the numbers: its losses and final params are bit-identical to
the pieces composed by hand (RunSetup -> fresh sharded state -> the jitted step on the host
stream), on 8 devices. Restructuring the loop (hooks, RunSetup, ...) must keep this true;
tools/behaviour_fingerprint.py prints the same facts for 20-step runs of the shipped configs."""

import json
import os

import jax
import numpy as np
import pytest

from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import HostBatchStream
from t5x_lite.training import loop
from t5x_lite.training import step as step_lib
from t5x_lite.training.setup import RunSetup

STEPS = 3
QUICK = {
  "train.steps": STEPS,
  "train.batch_size": 8,
  "train.log_every": 1,
  "train.eval_every": 0,
  "train.eval_steps": 1,
  "train.sample_prompt": "",
  "data.feature_lengths": {"targets": 64},
}


@pytest.mark.parametrize("spec", ["gpt.py:tiny", "t5.py:tiny"])
def test_loop_equals_its_pieces_composed_by_hand(spec, tmp_path, shared_vocab_workdir, make_config):
  overrides = dict(QUICK)
  if spec.startswith("t5"):
    # Span corruption of 34 raw tokens gives 32 inputs and 8 targets.
    overrides["data.feature_lengths"] = {"inputs": 32, "targets": 8}
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  result = loop.train_and_evaluate(make_config(spec, **overrides), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]

  config = make_config(spec, **overrides)
  with config.unlocked():
    config.data.num_shards = 1
  setup = RunSetup.create(config)
  vocabulary = pipeline.get_vocabulary(config, workdir)
  converter = setup.model.feature_converter(config.data.pack)
  stream = HostBatchStream(config, vocabulary, converter, split="train", num_shards=1)
  state, train_step = setup.init_state(), setup.jit_train_step()
  losses = []
  with setup.use_mesh():
    for _ in range(STEPS):
      state, metrics = train_step(state, setup.global_batch(next(stream)), jax.random.key(1))
      losses.append(step_lib.finalize_metrics(metrics)["loss"])
  assert logged == losses  # bit-identical floats
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(result["params"]), state.params)
  assert np.isfinite(losses).all() and len(set(losses)) == STEPS  # it trained: every step moved
