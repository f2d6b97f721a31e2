"""The periodic actions of the training loop, as hooks (levanter's `add_hook(fn, every=N)`).

After every step the loop calls `hooks(step, state, step_metrics)`: each hook acts when its step
comes and may return a `StopReason` to end the run. Order matters and is the order of the list:
the non-finite check, logging, evaluation, checkpointing, preemption.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite import checkpoints, decoding, reporting
from t5x_lite.training import step as step_lib


class StopReason(enum.Enum):
  """Why the loop ended."""

  COMPLETED = "completed"  # train.steps reached
  PREEMPTED = "preempted"  # SIGTERM: saved, exit 0, rerun to resume
  NONFINITE = "nonfinite"  # a non-finite loss or gradient under train.nonfinite='stop'


Hook = Callable[[int, Any, dict], "StopReason | None"]


class Hooks:
  """Runs hooks in order after each step; the first StopReason ends the run."""

  def __init__(self, hooks: Sequence[Hook]):
    self.hooks = list(hooks)
    self.message = ""  # why the run stopped early, for the log and the error

  def __call__(self, step: int, state: Any, metrics: dict) -> StopReason | None:
    for hook in self.hooks:
      reason = hook(step, state, metrics)
      if reason is not None:
        self.message = getattr(hook, "message", "")
        return reason
    return None


def last_checkpoint(checkpointer: checkpoints.Checkpointer) -> str:
  """'the last checkpoint is step N', or that there is none yet, for a stop message."""
  latest = checkpointer.latest_step()
  return (
    "no checkpoint was saved yet" if latest is None else f"the last checkpoint is step {latest}"
  )


def format_scalars(scalars: dict[str, float]) -> str:
  return " | ".join(f"{k} {v:.4g}" for k, v in sorted(scalars.items()))


class StopOnNonfinite:
  """`train.nonfinite='stop'`: one small device->host copy per step; the state is not saved."""

  def __init__(self, checkpointer: checkpoints.Checkpointer):
    self.checkpointer = checkpointer
    self.message = ""

  def __call__(self, step: int, state: Any, metrics: dict) -> StopReason | None:
    if bool(jax.device_get(metrics["finite"][0])):
      return None
    self.message = (
      f"non-finite loss, gradient or update at step {step}; stopping "
      f"(config.train.nonfinite='stop'). That state is not saved; "
      f"{last_checkpoint(self.checkpointer)}"
    )
    return StopReason.NONFINITE


class GiveUpOnSkips:
  """`train.nonfinite='skip'`: gives up after `patience` consecutive skipped (non-finite) steps,
  instead of "training" on with every update refused. The count stays on device; it is read
  every `check_every` steps, so the run stops at most that many steps after the limit."""

  def __init__(self, patience: int, checkpointer: checkpoints.Checkpointer, check_every: int = 10):
    self.patience, self.check_every = patience, max(1, check_every)
    self.checkpointer = checkpointer
    self.consecutive = None
    self.message = ""

  def __call__(self, step: int, state: Any, metrics: dict) -> StopReason | None:
    del state
    finite = metrics["finite"][0] > 0
    previous = 0 if self.consecutive is None else self.consecutive
    self.consecutive = jnp.where(finite, 0, previous + 1)
    if step % self.check_every:
      return None
    count = int(jax.device_get(self.consecutive))
    if count < self.patience:
      return None
    self.message = (
      f"{count} consecutive non-finite steps up to step {step} (every update refused): giving "
      f"up (train.nonfinite='skip', train.max_consecutive_skips={self.patience}). Nothing "
      f"non-finite was saved; {last_checkpoint(self.checkpointer)}"
    )
    return StopReason.NONFINITE


class LogMetrics:
  """Every `every` steps (and the last): the mean of the steps' metrics since the last log, to
  the writer and the progress line. Metrics stay on device until then (no sync per step)."""

  def __init__(
    self,
    every: int,
    total_steps: int,
    writer: reporting.MetricsWriter,
    progress: reporting.ProgressLogger,
    keep_z_loss: bool,
  ):
    self.every, self.total_steps = every, total_steps
    self.writer, self.progress, self.keep_z_loss = writer, progress, keep_z_loss
    self.pending: list[dict] = []

  def __call__(self, step: int, state: Any, metrics: dict) -> None:
    self.pending.append(metrics)
    if step % self.every and step != self.total_steps:
      self.progress.update(step)
      return
    fetched = [step_lib.finalize_metrics(m) for m in self.pending]
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
    scalars.pop("finite", None)
    scalars.pop("params_finite", None)
    if not self.keep_z_loss:
      scalars.pop("z_loss", None)
    scalars["skipped_steps"] = int(jax.device_get(state.skipped_steps))
    rates = self.progress.update(step, scalars)
    self.writer.write(step, {**scalars, **rates}, prefix="train/")
    self.pending = []


class Evaluate:
  """Every `every` steps before the last (the loop evaluates at the end itself)."""

  def __init__(
    self,
    every: int,
    total_steps: int,
    run_eval: Callable[[Any], dict[str, float]],
    writer: reporting.MetricsWriter,
    progress: reporting.ProgressLogger,
  ):
    self.every, self.total_steps, self.run_eval = every, total_steps, run_eval
    self.writer, self.progress = writer, progress

  def __call__(self, step: int, state: Any, metrics: dict) -> None:
    if not self.every or step % self.every or step >= self.total_steps:
      return
    results = self.run_eval(state.params)
    self.writer.write(step, results, prefix="eval/")
    self.progress.write(f"eval at step {step}: " + format_scalars(results))


class NonfiniteParamsGuard:
  """Remembers, on device, whether an applied update left non-finite parameters (a finite
  gradient with a non-finite update: optimizer eps 0, an infinite learning rate). Read only
  before a save (`ok()`), so no step waits for the host; such a state is never saved."""

  def __init__(self, checkpointer: checkpoints.Checkpointer):
    self.checkpointer = checkpointer
    self.bad = None
    self.message = ""

  def __call__(self, step: int, state: Any, metrics: dict) -> None:
    del step, state
    bad = metrics["params_finite"][0] == 0
    self.bad = bad if self.bad is None else self.bad | bad

  def ok(self, step: int) -> bool:
    if self.bad is None or not bool(jax.device_get(self.bad)):
      return True
    self.message = (
      f"an update up to step {step} made the parameters non-finite (the gradients were finite: "
      f"check the optimizer settings); that state is not saved; "
      f"{last_checkpoint(self.checkpointer)}"
    )
    return False


class SaveCheckpoint:
  """Every `every` steps before the last (the loop saves the last step itself); never a state
  that `guard` found non-finite (the run stops instead)."""

  def __init__(
    self,
    every: int,
    total_steps: int,
    save: Callable[[int, Any], None],
    guard: NonfiniteParamsGuard | None = None,
  ):
    self.every, self.total_steps, self.save, self.guard = every, total_steps, save, guard
    self.message = ""

  def __call__(self, step: int, state: Any, metrics: dict) -> StopReason | None:
    if step % self.every == 0 and step < self.total_steps:
      if self.guard is not None and not self.guard.ok(step):
        self.message = self.guard.message
        return StopReason.NONFINITE
      self.save(step, state)
    return None


class StopOnPreemption:
  """SIGTERM or Ctrl-C seen (or a preemption sync point on any process): stop after this step;
  the loop saves."""

  def __init__(self, preemption):
    self.preemption = preemption
    self.message = ""

  def __call__(self, step: int, state: Any, metrics: dict) -> StopReason | None:
    if not self.preemption.should_stop(step):
      return None
    cause = self.preemption.signal_name or "preemption notice"
    self.message = f"stopped by {cause} at step {step}: checkpoint saved, exiting cleanly"
    return StopReason.PREEMPTED


def print_sample(model, params, vocabulary, prompt: str, max_new_tokens: int) -> str:
  """The end-of-run greedy sample of a generative model, printed and returned."""
  text = decoding.generate_text(
    model, params, vocabulary, [prompt], max_new_tokens=max_new_tokens, temperature=0.0
  )[0]
  print(f"sample (greedy): {prompt!r} -> {text!r}", flush=True)
  return text
