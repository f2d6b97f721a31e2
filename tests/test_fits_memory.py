"""Issue 14, points 16 and 18: a model or a sequence length too large for memory is a one-line
ConfigError with the estimate and the limit, before anything is allocated (not an XLA or numpy
out-of-memory, not a hang)."""

import math
import types

import jax
import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.config import ConfigError, get_config
from t5x_lite.training import memory
from t5x_lite.training.setup import RunSetup

GIB = 1024**3


def _one_error_line(capsys, argv):
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err, err
  (line,) = [line for line in err.splitlines() if "error:" in line]
  return line


def test_a_model_too_large_for_memory_is_refused_with_the_figure(capsys, tmp_path):
  """The issue's case: 2000 layers of d_model 8192 used to block forever after the failed
  allocation."""
  workdir = tmp_path / "run"
  line = _one_error_line(
    capsys,
    ["train", "--config", "gpt.py:tiny", "--workdir", str(workdir), "--config.data.vocab=byte",
     "--config.model.num_layers=2000", "--config.model.d_model=8192"],
  )  # fmt: skip
  assert "the train state needs" in line and "TiB per device" in line
  assert "model.num_layers=2000, model.d_model=8192" in line
  assert not workdir.exists() or not any(workdir.iterdir())


def test_an_absurd_sequence_length_is_refused_with_the_figure(capsys, tmp_path):
  line = _one_error_line(
    capsys,
    ["train", "--config", "gpt.py:tiny", "--workdir", str(tmp_path / "run"),
     "--config.data.vocab=byte", "--config.model.position=rope",
     "--config.data.feature_lengths={'targets': 1000000000}"],
  )  # fmt: skip
  assert "data.feature_lengths={'targets': 1000000000}" in line
  assert "TiB, more than the" in line and "host memory available" in line


def test_estimates_are_exact_for_the_tiny_model():
  """float32 params; AdamW keeps two moments per parameter (+ a count): the state is 3x the
  params, to the few bytes of the counts."""
  config = get_config("gpt.py:tiny", [("data.vocab", "byte")])
  setup = RunSetup.create(config, jax.devices()[:1])
  params, opt = memory.state_bytes_per_device(setup)
  assert params == 4 * setup.num_params
  assert 2 * params <= opt <= 2 * params + 64
  rows = max(config.train.batch_size, memory.ROWS_PER_BLOCK) + config.train.batch_size
  row = sum(
    math.prod(s.shape[1:]) * np.dtype(s.dtype).itemsize for s in setup.input_shapes.values()
  )
  assert memory.host_data_bytes(setup) == (rows * row, rows)
  assert memory.check_fits(setup, host_available=64 * GIB) == {
    "params": params, "opt_state": opt, "data": rows * row,
  }  # fmt: skip


def test_a_sharded_state_counts_its_shard():
  """fsdp over 8 devices: each device holds about an eighth of the params (small vectors that
  do not divide stay replicated)."""
  full = RunSetup.create(get_config("gpt.py:tiny", [("data.vocab", "byte")]), jax.devices()[:1])
  sharded = RunSetup.create(
    get_config("gpt.py:tiny", [("data.vocab", "byte"), ("mesh.fsdp", "8"), ("mesh.data", "1")]),
    jax.devices()[:8],
  )
  one, _ = memory.state_bytes_per_device(full)
  eighth, _ = memory.state_bytes_per_device(sharded)
  assert one / 8 <= eighth < one / 4


def test_limits_host_and_device():
  setup = RunSetup.create(get_config("gpt.py:tiny", [("data.vocab", "byte")]), jax.devices()[:1])
  params, opt = memory.state_bytes_per_device(setup)
  with pytest.raises(ConfigError, match=r"more than the 1\.0 MiB available"):
    memory.check_fits(setup, host_available=2**20)
  fake = [
    types.SimpleNamespace(process_index=0, memory_stats=lambda: {"bytes_limit": 80 * GIB}),
    types.SimpleNamespace(process_index=0, memory_stats=lambda: {"bytes_limit": 16 * GIB}),
    types.SimpleNamespace(process_index=0, memory_stats=lambda: None),
  ]
  for i, device in enumerate(fake):
    device.__str__ = lambda self, i=i: f"gpu:{i}"
  assert memory.device_memory_limit(fake)[0] == 16 * GIB
  assert memory.device_memory_limit(fake[2:]) is None
  assert memory.format_bytes(6.4e12) == "5.8 TiB" and memory.format_bytes(512) == "512 B"
  assert memory.host_memory_available() > 0
