"""Observability a training run can switch on: profiler traces and Weights & Biases logging.

  ProfileHook   `train.profile_steps=(first, last)`: a `jax.profiler` trace of those steps in
                workdir/profile (TensorBoard's profile plugin: `tensorboard --logdir
                WORKDIR/profile`; or Perfetto: open the .trace.json.gz / .xplane.pb it holds).
                Each step is a `StepTraceAnnotation`, so the trace viewer shows step boundaries.
  WandbWriter   `train.wandb_project='name'`: the loop's metrics also go to W&B (optional extra
                `pip install 't5x-lite[wandb]'`; WANDB_MODE=offline works without a network).
                The run id is kept in workdir/wandb_run_id, so a resumed run continues the same
                W&B run.

Both are small objects the loop calls; they do nothing unless configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from t5x_lite.config import ConfigError

PROFILE_DIR = "profile"
WANDB_ID_FILE = "wandb_run_id"


class ProfileHook:
  """Traces steps first..last (inclusive, 1-based like the loop's step numbers)."""

  def __init__(self, steps: Sequence[int], workdir: str):
    steps = tuple(int(s) for s in steps)
    if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
      raise ValueError(
        f"train.profile_steps={steps}: expected () or (first, last), 1 <= first <= last"
      )
    self.first, self.last = steps if steps else (0, -1)
    self.directory = os.path.join(workdir, PROFILE_DIR)
    self.active = False

  def step(self, step: int):
    """Context around running step `step`: starts the trace at `first`, annotates the step."""
    if step == self.first and not self.active:
      jax.profiler.start_trace(self.directory)
      self.active = True
      logging.info("profiling steps %d..%d into %s", self.first, self.last, self.directory)
    if self.active:
      return jax.profiler.StepTraceAnnotation("train", step_num=step)
    return contextlib.nullcontext()

  def after_step(self, step: int, outputs: Any) -> None:
    """Stops the trace after step `last`, once its computation has finished."""
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.info("profile written to %s", self.directory)


class WandbWriter:
  """Logs `write(step, scalars, prefix)` calls to a W&B run (a no-op when not enabled)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, enabled: bool = True):
    self.run = None
    project = config.train.get("wandb_project", "")
    if not (project and enabled):
      return
    try:
      import wandb  # noqa: PLC0415 - optional extra
    except ImportError as e:  # a ConfigError: the CLI reports it in one line
      raise ConfigError(
        f"config.train.wandb_project={project!r} needs wandb: pip install 't5x-lite[wandb]'"
      ) from e
    id_path = os.path.join(workdir, WANDB_ID_FILE)
    run_id = open(id_path).read().strip() if os.path.exists(id_path) else secrets.token_hex(4)
    self.run = wandb.init(
      project=project,
      id=run_id,
      resume="allow",
      name=os.path.basename(os.path.abspath(workdir)),
      dir=workdir,
      config=config.to_dict(),
    )
    if not os.path.exists(id_path):
      with open(id_path, "w") as f:
        f.write(run_id)

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "") -> None:
    if self.run is not None:
      self.run.log({f"{prefix}{k}": float(v) for k, v in scalars.items()}, step=int(step))

  def close(self) -> None:
    if self.run is not None:
      self.run.finish()
      self.run = None


class TeeWriter:
  """Forwards `write` and `close` to several writers (MetricsWriter + WandbWriter)."""

  def __init__(self, *writers):
    self.writers = writers

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "") -> None:
    for writer in self.writers:
      writer.write(step, scalars, prefix=prefix)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def with_wandb(writer, config: ml_collections.ConfigDict, workdir: str, enabled: bool = True):
  """`writer` itself, or a TeeWriter that also logs to W&B when train.wandb_project is set."""
  wandb_writer = WandbWriter(config, workdir, enabled)
  return TeeWriter(writer, wandb_writer) if wandb_writer.run is not None else writer
