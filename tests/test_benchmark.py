"""tools/benchmark.py: the step benchmark on the tiny GPT (2 steps) writes consistent figures."""

import json
import math
import os
import sys

import numpy as np
import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
CONFIG = "gpt.py:tiny"


@pytest.fixture(scope="module")
def bench():
  sys.path.insert(0, TOOLS)
  try:
    import benchmark as module
  finally:
    sys.path.remove(TOOLS)
  return module


def test_synthetic_batch_is_packed_two_documents(bench):
  from t5x_lite import config as config_lib
  from t5x_lite.models import build_model

  config = config_lib.get_config(CONFIG)
  model = build_model(config.model)
  batch = bench.synthetic_batch(model, 3, {"targets": 10}, vocab=50)
  assert sorted(batch) == sorted(model.features)
  assert batch["decoder_target_tokens"].shape == (3, 10)
  assert batch["decoder_target_tokens"].dtype == np.int32
  assert batch["decoder_target_tokens"].min() >= 3 and batch["decoder_target_tokens"].max() < 50
  np.testing.assert_array_equal(batch["decoder_segment_ids"][1], [1] * 5 + [2] * 5)
  np.testing.assert_array_equal(batch["decoder_positions"][2], [0, 1, 2, 3, 4] * 2)
  assert batch["decoder_loss_weights"].dtype == np.float32
  assert bench.parse_lengths("inputs=512,targets=114", config) == {
    "inputs": 512,
    "targets": 114,
  }
  assert bench.parse_lengths("64", config) == {"targets": 64}


@pytest.mark.slow
def test_step_benchmark_on_tiny_gpt(bench, tmp_path):
  from t5x_lite import config as config_lib
  from t5x_lite.models import build_model

  out = tmp_path / "step.json"
  argv = ["step", "--config", CONFIG, "--batch", "2", "--length", "32", "--steps", "2"]
  argv += ["--warmup", "1", "--peak-sizes", "256", "--out", str(out), "--config.model.num_layers=1"]
  returned = bench.main(argv)
  result = json.loads(out.read_text())
  assert result["command"] == "step" and result["overrides"] == {"model.num_layers": "1"}
  assert result["machine"]["jax"] and result["machine"]["cpu_count"] >= 1
  assert (result["batch"], result["lengths"], result["devices"]) == (2, {"targets": 32}, 1)
  assert result["tokens_per_step"] == 64 and result["steps_timed"] == 2
  assert result["step_s_min"] <= result["step_s"] <= result["step_s_max"]
  assert math.isclose(result["tokens_per_s"], 64 / result["step_s"], rel_tol=1e-9)
  config = config_lib.get_config(CONFIG, [("model.num_layers", "1")])
  expected_flops = build_model(config_lib.model_config(config)).flops_per_token({"targets": 32})
  assert result["flops_per_token"] == expected_flops
  assert math.isclose(result["model_tflops"] * 1e12, expected_flops * result["tokens_per_s"])
  assert math.isclose(result["mfu"], result["model_tflops"] / result["peak_tflops"])
  assert result["peak_source"] == "best matmul of sizes [256]" and result["peak_tflops"] > 0
  # Random init over a 1024-token vocabulary: the loss is about ln(1024) = 6.93.
  assert abs(result["loss_last"] - math.log(1024)) < 0.5
  assert result["peak_rss_gib"] > 0.1
  assert returned["step_s"] == result["step_s"]


@pytest.mark.slow
def test_distill_benchmark_on_tiny_distilbert(bench, tmp_path):
  """`distill`: a 2-layer teacher (2x the student) and the 1-layer student on one shape; the
  speed-ups are the ratios of the medians written."""
  from t5x_lite import config as config_lib
  from t5x_lite.models import build_model

  out = tmp_path / "distill.json"
  argv = ["distill", "--config", "distilbert.py:tiny", "--batch", "2", "--length", "16"]
  bench.main(argv + ["--steps", "2", "--warmup", "1", "--out", str(out)])
  result = json.loads(out.read_text())
  teacher, student = result["teacher"], result["student"]
  assert (teacher["layers"], student["layers"]) == (2, 1)
  for part, layers in ((teacher, 2), (student, 1)):
    config = config_lib.get_config("distilbert.py:tiny", [("model.num_layers", str(layers))])
    assert part["params"] == build_model(config_lib.model_config(config)).num_params()
    assert (part["batch"], part["lengths"]) == (2, {"inputs": 16})
  assert math.isclose(result["speedup_forward"], teacher["forward_s"] / student["forward_s"])
  assert math.isclose(
    result["speedup_train_step"], teacher["train_step_s"] / student["train_step_s"]
  )
  assert result["distill_step_s"] > 0
