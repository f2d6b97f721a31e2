"""reporting.py (JSONL lines, TensorBoard events, device peaks, the progress line) and the
models' own FLOPs per token."""

import io
import json
import os
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite import reporting
from t5x_lite.models import build_model
from t5x_lite.models.config import ModelConfig

# ---------------------------------------------------------------------------------------------
# MetricsWriter.


@pytest.fixture
def frozen_time(monkeypatch):
  monkeypatch.setattr(reporting.time, "time", lambda: 1700000000.5)


def test_jsonl_lines_are_exact(tmp_path, frozen_time):
  workdir = tmp_path / "run"  # created by the writer
  with reporting.MetricsWriter(str(workdir)) as writer:
    writer.write(
      10, {"loss": np.float32(2.5), "tokens": np.int64(4096), "accuracy": jnp.array(0.25)}
    )
    writer.write(10, {"loss": 3.0}, prefix="eval/")
    # Flushed per write: readable before close.
    assert (workdir / "metrics.jsonl").read_text().count("\n") == 2
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert lines == [
    '{"step": 10, "time": 1700000000.5, "loss": 2.5, "tokens": 4096, "accuracy": 0.25}',
    '{"step": 10, "time": 1700000000.5, "eval/loss": 3.0}',
  ]


def test_reopened_writer_appends(tmp_path, frozen_time):
  for step in (1, 2):
    writer = reporting.MetricsWriter(str(tmp_path))
    writer.write(step, {"loss": float(step)})
    writer.close()
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0)]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = reporting.MetricsWriter(str(tmp_path / "run"), enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "run").exists()


def test_unwritable_workdir_names_the_path(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  workdir = blocker / "run"  # fails even as root: the parent is a file
  with pytest.raises(OSError, match=r"cannot write metrics to .*a_file/run/metrics\.jsonl"):
    reporting.MetricsWriter(str(workdir))


def test_non_numeric_metric_names_the_metric(tmp_path):
  with reporting.MetricsWriter(str(tmp_path)) as writer:
    with pytest.raises(ValueError, match=r"metric 'eval/name'='abc': expected a number"):
      writer.write(1, {"name": "abc"}, prefix="eval/")


def _read_event_scalars(path):
  """(tag, step, value) of every scalar in a TensorBoard event file, parsed without TensorFlow."""
  from tensorboardX.proto import event_pb2

  data = open(path, "rb").read()
  scalars, offset = [], 0
  while offset < len(data):
    (length,) = struct.unpack("Q", data[offset : offset + 8])
    event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
    offset += 12 + length + 4  # length, its crc, the record, its crc
    for value in event.summary.value:
      scalars.append((value.tag, event.step, round(value.simple_value, 6)))
  return scalars


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
  pytest.importorskip("tensorboardX")
  with reporting.MetricsWriter(str(tmp_path)) as writer:
    writer.write(5, {"loss": 2.25})
    writer.write(5, {"loss": 3.5}, prefix="eval/")
  (event_file,) = os.listdir(tmp_path / "tensorboard")
  assert event_file.startswith("events.out.tfevents.")
  scalars = _read_event_scalars(tmp_path / "tensorboard" / event_file)
  assert scalars == [("loss", 5, 2.25), ("eval/loss", 5, 3.5)]


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  """tensorboardX tries `import torch` (1.6 s of every run's start-up where torch is installed);
  the writer blocks that one import, and torch still imports afterwards."""
  pytest.importorskip("tensorboardX")
  pytest.importorskip("torch")
  script = (
    "import sys\n"
    "from t5x_lite import reporting\n"
    f"with reporting.MetricsWriter({str(tmp_path)!r}) as w:\n"
    "  w.write(1, {'loss': 1.5})\n"
    "print('torch' in sys.modules)\n"
    "import torch\n"
    "print(torch.ones(2).sum().item())\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False", "2.0"]
  (event_file,) = os.listdir(tmp_path / "tensorboard")
  assert _read_event_scalars(tmp_path / "tensorboard" / event_file) == [("loss", 1, 1.5)]


# ---------------------------------------------------------------------------------------------
# FLOPs and peaks.

GPT2_SMALL = ModelConfig(
  family="decoder", vocab_size=50257, d_model=768, num_heads=12, num_layers=12, d_ff=3072,
  max_length=1024, activation="gelu_new",
)  # fmt: skip


def test_flops_per_token_gpt2_small_by_hand():
  # Per layer: q, k, v, o 4·768·768 = 2,359,296 + MLP 2·768·3072 = 4,718,592 -> 7,077,888;
  # x12 = 84,934,656; output projection 768·50257 = 38,597,376; N = 123,532,032.
  # 6N = 741,192,192; attention 12·12 layers·1024 tokens·768 = 113,246,208.
  assert build_model(GPT2_SMALL).flops_per_token(1024) == 854_438_400
  assert build_model(GPT2_SMALL).flops_per_token({"targets": 1024}) == 854_438_400


def test_flops_per_token_encoder_and_gated_head_dim():
  # BERT-style, 2 layers, d 64, head_dim 32 x 4 heads = 128 wide, gated MLP (3 matrices).
  config = ModelConfig(
    family="encoder", vocab_size=1000, d_model=64, num_heads=4, head_dim=32, num_layers=2,
    d_ff=256, activation="gated-gelu",
  )  # fmt: skip
  layer = 4 * 64 * 128 + 3 * 64 * 256  # 32,768 + 49,152 = 81,920
  params = 2 * layer + 64 * 64 + 64 * 1000  # + MLM transform + output = 231,936
  expected = 6 * params + 12 * 2 * 128 * 100
  assert expected == 1_698_816
  assert build_model(config).flops_per_token(100) == expected


def test_flops_per_token_encoder_decoder_by_hand():
  config = ModelConfig(
    family="encoder_decoder", vocab_size=100, d_model=8, num_heads=2, num_layers=2,
    num_decoder_layers=1, d_ff=16, activation="relu",
  )  # fmt: skip
  # Layer params: attention 4·8·8 = 256, MLP 2·8·16 = 256 -> 512; cross-attention 4·8·8 = 256.
  # Inputs 10 tokens, targets 4.
  weights = 10 * 2 * 512 + 4 * 1 * (512 + 128) + 10 * 1 * 128 + 4 * 8 * 100  # 17,280
  attention = 12 * 8 * (2 * 10 * 10 + 1 * 4 * 4 + 1 * 4 * 10)  # 24,576
  expected = (6 * weights + attention) / 14
  assert expected == pytest.approx(128_256 / 14)
  assert build_model(config).flops_per_token({"inputs": 10, "targets": 4}) == expected
  with pytest.raises(ValueError, match="encoder-decoder.*'inputs'"):
    build_model(config).flops_per_token(10)


def test_peak_flops_per_device():
  assert reporting.peak_flops_per_device("bfloat16") is None  # tests run on CPU
  assert reporting.peak_flops_per_device("float32", override=1.5e11) == 1.5e11
  assert reporting.peak_flops_per_device("bf16", device_kind="TPU v4") == 275e12
  assert reporting.peak_flops_per_device(jnp.bfloat16, device_kind="TPU v5 lite") == 197e12
  assert reporting.peak_flops_per_device("bfloat16", device_kind="TPU v5") == 459e12
  assert reporting.peak_flops_per_device("bfloat16", device_kind="TPU v6 lite") == 918e12
  assert (
    reporting.peak_flops_per_device("bfloat16", device_kind="NVIDIA H100 80GB HBM3") == 989.4e12
  )
  assert reporting.peak_flops_per_device(np.float32, device_kind="NVIDIA H100 PCIe") == 378e12
  assert reporting.peak_flops_per_device("float32", device_kind="NVIDIA A100-SXM4-40GB") == 156e12
  assert reporting.peak_flops_per_device("bfloat16", device_kind="Some Future Chip") is None
  with pytest.raises(ValueError, match="expected bfloat16 or float32"):
    reporting.peak_flops_per_device("int8", device_kind="TPU v4")


# ---------------------------------------------------------------------------------------------
# Progress.


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_progress_line_is_formatted_from_the_window():
  clock, stream = FakeClock(), io.StringIO()
  progress = reporting.ProgressLogger(
    300, 0, True, tokens_per_step=840, flops_per_token=1e6, peak_flops=2100e6 / 0.41,
    use_bar=False, stream=stream, clock=clock,
  )  # fmt: skip
  clock.now = 55.0  # compile: the first call is the origin, its time is not a rate
  assert progress.update(20, {"loss": 5.0}) == {}
  for step in range(21, 120):
    clock.now += 0.1
    progress.update(step)  # no scalars: no timestamp, no line
  clock.now = 95.0  # 100 steps in 40 s after the origin
  scalars = {"loss": 3.4123, "accuracy": 0.3112, "learning_rate": 2.9e-3, "grad_norm": 0.8421}
  rates = progress.update(120, scalars)
  assert rates == pytest.approx(
    {"steps_per_second": 2.5, "eta_seconds": 72.0, "tokens_per_second": 2100.0, "mfu": 0.41}
  )
  assert stream.getvalue().splitlines() == [
    "step 20/300 | loss 5.000",
    "step 120/300 | loss 3.412 | acc 0.31 | lr 2.9e-03 | gnorm 0.84 | 2.1k tok/s | MFU 41% "
    "| ETA 1m12s",
  ]


def test_progress_window_forgets_old_steps():
  clock = FakeClock()
  progress = reporting.ProgressLogger(1000, 0, True, window=2, use_bar=False,
                                    stream=io.StringIO(), clock=clock)  # fmt: skip
  for step, now in ((1, 100.0), (11, 110.0), (21, 112.0)):
    clock.now = now
    rates = progress.update(step, {"loss": 1.0})
  # The window holds (11, 110) and (21, 112): 5 steps/s, not 20 steps / 12 s.
  assert rates["steps_per_second"] == pytest.approx(5.0)
  assert "tokens_per_second" not in rates and "mfu" not in rates


def test_progress_other_processes_print_nothing(capsys):
  progress = reporting.ProgressLogger(10, 0, is_main_process=False, use_bar=False)
  progress.update(1, {"loss": 1.0})
  progress.write("eval loss 1.0")
  assert capsys.readouterr() == ("", "")


def test_format_helpers():
  assert reporting.format_count(2134.5) == "2.1k"
  assert reporting.format_count(123_456) == "123k"
  assert reporting.format_count(3.2e6) == "3.2M"
  assert reporting.format_count(42.0) == "42.0"
  assert reporting.format_duration(9.4) == "9s"
  assert reporting.format_duration(72) == "1m12s"
  assert reporting.format_duration(3725) == "1h02m"
  assert (
    reporting.format_scalars({"loss": 1.0, "z_loss": 0.0012345}) == "loss 1.000 | z_loss 0.001234"
  )


# ---------------------------------------------------------------------------------------------
# tools/plot_metrics.py


@pytest.fixture(scope="module")
def plot_metrics():
  import importlib.util

  path = os.path.join(os.path.dirname(__file__), "..", "tools", "plot_metrics.py")
  spec = importlib.util.spec_from_file_location("plot_metrics", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _resumed_run(tmp_path):
  """A run logged to step 30, killed, resumed from step 20: steps 20-30 are logged twice."""
  with reporting.MetricsWriter(str(tmp_path)) as writer:
    for step, loss in ((10, 4.0), (20, 3.0), (30, 2.9)):
      writer.write(step, {"loss": loss, "learning_rate": 1e-3})
    writer.write(20, {"loss": 3.1}, prefix="eval/")
    for step, loss in ((30, 2.5), (40, 2.0)):  # the resumed run
      writer.write(step, {"loss": loss})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 50, "lo')  # cut short by a crash


def test_plot_metrics_reads_the_last_value_per_step(tmp_path, plot_metrics):
  _resumed_run(tmp_path)
  series = plot_metrics.read_metrics(str(tmp_path))
  assert series["loss"] == [(10, 4.0), (20, 3.0), (30, 2.5), (40, 2.0)]
  assert series["eval/loss"] == [(20, 3.1)]
  assert plot_metrics.default_keys(list(series)) == ["loss", "eval/loss"]
  names = ["eval/loss", "train/loss", "train/z_loss", "eval/accuracy"]
  assert plot_metrics.default_keys(names) == ["train/loss", "eval/loss"]


def test_plot_metrics_draws_a_png(tmp_path, plot_metrics):
  pytest.importorskip("matplotlib")
  _resumed_run(tmp_path / "run")
  out = tmp_path / "losses.png"
  assert plot_metrics.main([str(tmp_path / "run"), "--out", str(out)]) == 0
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
