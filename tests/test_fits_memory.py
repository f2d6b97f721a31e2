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


# ---------------------------------------------------------------------------------------------
# A failed allocation is reported, never waited on forever.


def test_wait_until_ready_returns_for_computed_arrays():
  tree = {"a": jax.numpy.ones((4, 4)) * 2, "step": jax.numpy.zeros((), "int32")}
  memory.wait_until_ready(tree, "x", timeout_s=60)
  memory.wait_until_ready({"nothing": 1.0}, "x", timeout_s=60)


def test_a_failed_allocation_is_one_config_error(monkeypatch):
  def exhausted(tree):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 402653184 bytes.\nmore")

  monkeypatch.setattr(jax, "block_until_ready", exhausted)
  with pytest.raises(memory.DeviceMemoryError) as error:
    memory.wait_until_ready([jax.numpy.ones(3)], "creating the train state", 60, "state 4 GiB")
  assert str(error.value) == (
    "creating the train state failed: RESOURCE_EXHAUSTED: Out of memory allocating 402653184 "
    "bytes. (state 4 GiB); use a smaller model or batch, more devices, or shard the state "
    "(mesh.fsdp), or remat (model.remat)"
  )
  assert isinstance(error.value, ConfigError)  # the CLI's one-line path


def test_a_computation_that_never_completes_times_out(monkeypatch):
  """XLA's CPU client, after a failed allocation, can leave a copy to the host blocked forever:
  the wait gives up after train.ready_timeout seconds."""
  import threading
  import time

  never = threading.Event()
  monkeypatch.setattr(jax, "block_until_ready", lambda tree: never.wait())
  start = time.monotonic()
  with pytest.raises(memory.DeviceMemoryError, match=r"the first step did not finish in 0\.3 s "
                     r"\(train.ready_timeout\): a device allocation probably failed \(est\)"):  # fmt: skip
    memory.wait_until_ready([jax.numpy.ones(3)], "the first step", 0.3, "est", log_every_s=0.1)
  assert time.monotonic() - start < 5
  never.set()


def test_out_of_memory_in_a_subprocess_exits_with_one_line(tmp_path):
  """The issue's hang, reproduced: the address space capped at 4 GB (RLIMIT_AS, nothing is
  really allocated) and the estimate switched off, a 300M-parameter state cannot be created.
  The run used to block forever in `device_get(state.step)`; now it exits 2 in one line."""
  import os
  import resource
  import subprocess
  import sys

  script = tmp_path / "oom.py"
  script.write_text(
    "import sys\n"
    "from t5x_lite.training import memory\n"
    "memory.check_fits = lambda setup: {'params': 1 << 30, 'opt_state': 2 << 30, 'data': 0}\n"
    "from t5x_lite import cli\n"
    f"sys.exit(cli.main(['train', '--config', 'gpt.py:tiny', '--workdir', {str(tmp_path / 'w')!r},"
    " '--config.data.vocab=byte', '--config.model.d_model=1024', '--config.model.num_layers=24',"
    " '--config.model.d_ff=4096', '--config.model.num_heads=8', '--config.train.steps=2',"
    " '--config.train.ready_timeout=60']))\n"
  )
  limit = 4 * 1024**3
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["JAX_PLATFORMS"] = "cpu"  # the XLA CPU client's behaviour is what this reproduces
  result = subprocess.run(
    [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
  )  # fmt: skip
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("t5x-lite train: error: creating the train state ") and (
    "RESOURCE_EXHAUSTED" in line or "did not finish" in line
  ), line
  assert "state 3.0 GiB per device (params 1.0 GiB + optimizer 2.0 GiB)" in line
