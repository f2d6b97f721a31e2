"""Reporting: a JSONL + TensorBoard writer, device peaks, and the console progress line.

Only process 0 writes (`MetricsWriter(workdir, enabled=jax.process_index() == 0)`).

`workdir/metrics.jsonl` holds one JSON object per `write`: `{"step": 120, "time": <unix s>,
"train/loss": 3.41, ...}`, names with the writer's prefix (the loop uses `train/`, `eval/`). A resumed run appends, so a
step can appear twice; readers keep the last line per step (tools/plot_metrics.py does).
TensorBoard event files go to `workdir/tensorboard` when `tensorboardX` is installed (it needs
no TensorFlow; a `gs://` workdir also needs `google-cloud-storage`).

MFU = model FLOPs per second / (peak FLOPs per device x devices). Model FLOPs are the model's
own fact (`BaseModel.flops_per_token`, PaLM accounting); the device peaks are here.
"""

from __future__ import annotations

import collections
import io
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


# ---------------------------------------------------------------------------------------------
# Writer.


def _is_remote(path: str) -> bool:
  return "://" in path


def _to_number(value: Any) -> int | float:
  """Python int/float from a Python, numpy or jax scalar (a jax array is fetched to host)."""
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"metric value of shape {array.shape}: expected a scalar")
  if np.issubdtype(array.dtype, np.integer):
    return int(array.reshape(()))
  return float(array.reshape(()))


class MetricsWriter:
  """Appends scalars to `workdir/metrics.jsonl` (flushed per write) and to TensorBoard.

  `enabled=False` (every process but 0) makes every method a no-op. A local workdir is appended
  to and flushed on every write, so a crash loses no written line. A remote workdir (`gs://`)
  cannot be appended to: the file is kept in memory and the whole object is rewritten on each
  write (a few hundred KB for a long run), through `etils.epath` (which needs `gcsfs`).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = os.fspath(workdir)
    self.enabled = enabled
    self.path = _join(self.workdir, METRICS_FILE)
    self._file: TextIO | None = None
    self._remote_text: io.StringIO | None = None
    self._tensorboard = None
    if not enabled:
      return
    if _is_remote(self.workdir):
      self._open_remote()
    else:
      self._open_local()
    self._tensorboard = _tensorboard_writer(_join(self.workdir, TENSORBOARD_DIR))

  def _open_local(self) -> None:
    try:
      os.makedirs(self.workdir, exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")  # closed in close()
    except OSError as e:
      raise OSError(
        e.errno, f"cannot write metrics to {self.path}: {e.strerror or e} (is --workdir writable?)"
      ) from e

  def _open_remote(self) -> None:
    from etils import epath

    path = epath.Path(self.path)
    self._remote_text = io.StringIO()
    try:
      if path.exists():  # a resumed run continues the same file
        self._remote_text.write(path.read_text())
    except Exception as e:  # the filesystem backend's own error types vary (gcsfs, tf.io)
      raise OSError(f"cannot read metrics file {self.path}: {type(e).__name__}: {e}") from e

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "") -> None:
    """Writes one line `{"step", "time", prefix + name: value, ...}` and the TensorBoard scalars.

    Values may be Python, numpy or jax scalars. Non-finite floats are written as `NaN` /
    `Infinity` (Python's `json` reads them back; strict JSON readers do not).
    """
    if not self.enabled:
      return
    record: dict[str, Any] = {"step": int(step), "time": time.time()}
    for name, value in scalars.items():
      try:
        record[prefix + name] = _to_number(value)
      except (TypeError, ValueError) as e:
        raise ValueError(f"metric {prefix + name!r}={value!r}: expected a number ({e})") from e
    line = json.dumps(record) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    elif self._remote_text is not None:
      from etils import epath

      self._remote_text.write(line)
      epath.Path(self.path).write_text(self._remote_text.getvalue())
    if self._tensorboard is not None:
      for name, value in record.items():
        if name not in ("step", "time"):
          self._tensorboard.add_scalar(name, value, global_step=int(step))
      self._tensorboard.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _join(directory: str, name: str) -> str:
  return (
    directory.rstrip("/") + "/" + name if _is_remote(directory) else os.path.join(directory, name)
  )


def _import_summary_writer():
  """tensorboardX's SummaryWriter, imported without the `import torch` tensorboardX attempts.

  tensorboardX imports torch whenever it is installed, only to accept torch tensors; with
  torch present that costs every run ~1.6 s of start-up (2 CPU cores), and we log numbers. A
  `None` in sys.modules makes that one import fail as if torch were absent, which tensorboardX
  handles; the entry is removed at once, so a later `import torch` works.
  """
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    if blocked and sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return SummaryWriter


def _tensorboard_writer(logdir: str):
  """A tensorboardX SummaryWriter, or None when tensorboardX is not installed."""
  try:
    SummaryWriter = _import_summary_writer()
  except ImportError:
    return None
  try:
    return SummaryWriter(logdir=logdir, flush_secs=30)
  except ImportError as e:  # gs:// without google-cloud-storage: keep training, say why
    print(f"metrics: no TensorBoard events in {logdir}: {e}", file=sys.stderr)
    return None


# ---------------------------------------------------------------------------------------------
# Device peaks.

# Dense peak FLOP/s per jax device, (bfloat16, float32). Patterns are matched in order against
# the lowercased `device_kind`. TPU: a float32 matmul at jax's default precision runs as a
# single bfloat16 pass on the MXU, so its peak is the bfloat16 peak. v2/v3 expose each of a
# chip's two TensorCores as a device (half the chip's peak); v4 and v5p (megacore) expose a
# chip. NVIDIA: float32 matmuls use TF32 tensor cores by default on Ampere and later.
_PEAK_FLOPS: tuple[tuple[tuple[str, ...], float, float], ...] = (
  (("v6 lite", "v6e"), 918e12, 918e12),
  (("v5 lite", "v5e", "v5litepod"), 197e12, 197e12),
  (("v5p", "tpu v5"), 459e12, 459e12),
  (("tpu v4",), 275e12, 275e12),
  (("tpu v3",), 61.5e12, 61.5e12),
  (("tpu v2",), 22.5e12, 22.5e12),
  (("h100 pcie",), 756e12, 378e12),
  (("h100", "h200", "h800"), 989.4e12, 494.7e12),
  (("b200",), 2250e12, 1100e12),
  (("a100",), 312e12, 156e12),
)


def _dtype_name(dtype: Any) -> str:
  if isinstance(dtype, str):
    name = dtype.lower()
  else:
    import ml_dtypes  # noqa: F401 (registers bfloat16 with numpy)

    name = np.dtype(dtype).name
  aliases = {"bf16": "bfloat16", "f32": "float32", "fp32": "float32"}
  name = aliases.get(name, name)
  if name not in ("bfloat16", "float32"):
    raise ValueError(f"peak_flops_per_device: dtype {dtype!r}: expected bfloat16 or float32")
  return name


def peak_flops_per_device(
  dtype: Any = "bfloat16", *, device_kind: str | None = None, override: float | None = None
) -> float | None:
  """The dense peak FLOP/s of one jax device for matmuls in `dtype`, or None when unknown.

  `override` (e.g. a measured CPU peak, or a chip missing from the table) wins. Without
  `device_kind`, `jax.devices()[0]` is asked; CPUs have no fixed peak and give None (the
  benchmark tool measures one).
  """
  if override is not None:
    return float(override)
  name = _dtype_name(dtype)
  if device_kind is None:
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
      return None
    device_kind = device.device_kind
  kind = device_kind.lower()
  for patterns, bfloat16_peak, float32_peak in _PEAK_FLOPS:
    if any(pattern in kind for pattern in patterns):
      return bfloat16_peak if name == "bfloat16" else float32_peak
  return None


# ---------------------------------------------------------------------------------------------
# Console progress.

# Known metric names -> (label, format); the rest print as `name value:.4g` after these.
_DISPLAY = (
  (("loss",), "loss", "{:.3f}"),
  (("accuracy", "acc"), "acc", "{:.2f}"),
  (("learning_rate", "lr"), "lr", "{:.1e}"),
  (("grad_norm", "gnorm"), "gnorm", "{:.2f}"),
)
# Derived by the logger itself (or passed in), or too noisy for the console (they stay in the
# JSONL): never printed as plain scalars.
_DERIVED = ("tokens_per_second", "mfu", "eta_seconds", "steps_per_second", "target_tokens")


def format_count(value: float) -> str:
  """2134.5 -> '2.1k', 3.2e6 -> '3.2M' (three significant digits at most)."""
  for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= threshold:
      scaled = value / threshold
      return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
  return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_duration(seconds: float) -> str:
  """72 -> '1m12s', 3725 -> '1h02m', 9 -> '9s'."""
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


def format_scalars(scalars: Mapping[str, Any]) -> str:
  """'loss 3.412 | acc 0.31 | lr 2.9e-03 | gnorm 0.84 | 2.1k tok/s | MFU 41% | ETA 1m12s'."""
  parts, shown = [], set()
  for names, label, fmt in _DISPLAY:
    for name in names:
      if name in scalars:
        parts.append(f"{label} {fmt.format(_to_number(scalars[name]))}")
        shown.add(name)
        break
  for name, value in scalars.items():
    if name == "skipped_steps":  # the non-finite `skip` policy's counter: news only when > 0
      if _to_number(value):
        parts.append(f"skipped {_to_number(value)}")
    elif name not in shown and name not in _DERIVED:
      parts.append(f"{name} {_to_number(value):.4g}")
  if scalars.get("tokens_per_second") is not None:
    parts.append(f"{format_count(scalars['tokens_per_second'])} tok/s")
  if scalars.get("mfu") is not None:
    parts.append(f"MFU {100 * scalars['mfu']:.0f}%")
  if scalars.get("eta_seconds") is not None:
    parts.append(f"ETA {format_duration(scalars['eta_seconds'])}")
  return " | ".join(parts)


class ProgressLogger:
  """Console progress: a tqdm bar when stderr is a terminal, otherwise one line per update.

  Call `update(step)` after every step (only advances the bar) and `update(step, scalars)` at
  log steps, where the scalars were fetched from the device, so that wall-clock timestamps are
  taken at synchronized points. Rates come from the timestamps of the first call (which
  comes after the compile) and of the calls with scalars, over a moving window of the last
  `window` such points: the compile never enters the rate, so the first line has none.

  `tokens_per_step` (global batch x tokens per example), `flops_per_token`
  (`BaseModel.flops_per_token`) and `peak_flops` (peak per device x number of devices) are
  optional; without them the line omits tok/s and MFU.
  """

  def __init__(
    self,
    total_steps: int,
    start_step: int = 0,
    is_main_process: bool = True,
    *,
    tokens_per_step: int | None = None,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    window: int = 10,
    use_bar: bool | None = None,
    stream: TextIO | None = None,
    clock=time.perf_counter,
  ):
    self.total_steps = total_steps
    self.start_step = start_step
    self.enabled = is_main_process
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.peak_flops = peak_flops
    self._points: collections.deque[tuple[int, float]] = collections.deque(maxlen=max(2, window))
    self._stream = stream
    self._clock = clock
    self._bar = None
    if self.enabled and (sys.stderr.isatty() if use_bar is None else use_bar):
      from tqdm import tqdm

      self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, unit="step")

  def rates(self) -> dict[str, float]:
    """{'steps_per_second', 'tokens_per_second', 'mfu', 'eta_seconds'} known so far (may be {})."""
    if len(self._points) < 2:
      return {}
    (first_step, first_time), (last_step, last_time) = self._points[0], self._points[-1]
    if last_step <= first_step or last_time <= first_time:
      return {}
    steps_per_second = (last_step - first_step) / (last_time - first_time)
    rates = {
      "steps_per_second": steps_per_second,
      "eta_seconds": max(0, self.total_steps - last_step) / steps_per_second,
    }
    if self.tokens_per_step:
      rates["tokens_per_second"] = steps_per_second * self.tokens_per_step
      if self.flops_per_token and self.peak_flops:
        rates["mfu"] = rates["tokens_per_second"] * self.flops_per_token / self.peak_flops
    return rates

  def update(self, step: int, scalars: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Records `step` as done; with `scalars`, prints them. Returns `rates()` (for the writer)."""
    if not self._points or scalars is not None:
      self._points.append((int(step), self._clock()))
    rates = self.rates()
    if not self.enabled:
      return rates
    if self._bar is not None:
      self._bar.update(int(step) - self._bar.n)
      if scalars is not None:
        # tqdm shows the step count, rate and ETA itself.
        shown = {k: v for k, v in {**scalars, **rates}.items() if k != "eta_seconds"}
        self._bar.set_postfix_str(format_scalars(shown), refresh=True)
    elif scalars is not None:
      line = f"step {int(step)}/{self.total_steps} | " + format_scalars({**scalars, **rates})
      self.write(line.rstrip(" |"))
    return rates

  def write(self, message: str) -> None:
    """Prints a line (e.g. eval results) without breaking the progress bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      stream = self._stream or sys.stdout
      print(message, file=stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
