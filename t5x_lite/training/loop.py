"""train_and_evaluate(config, workdir): the training loop, read top to bottom.

1. config and workdir  2. RunSetup (mesh, model, optimizer, shardings)  3. checkpoints decide
where to start  4. data  5. state: fresh, resumed, or initialized from another run  6. jitted
steps  7. the loop, whose periodic actions are hooks (training/hooks.py)  8. the end: final
checkpoint, evaluation, a sample.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from t5x_lite import checkpoints, reporting, runtime
from t5x_lite import config as config_lib
from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import HostBatchStream
from t5x_lite.evaluation import evaluator
from t5x_lite.training import hooks as hooks_lib
from t5x_lite.training import init_from
from t5x_lite.training.hooks import StopReason
from t5x_lite.training.preemption import Preemption
from t5x_lite.training.setup import RunSetup


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite loss under `nonfinite='stop'`, bad workdir, ...)."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, devices: Sequence[jax.Device] | None = None
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `devices`: the devices of the mesh (default: all). Returns the final step, eval metrics and
  params (or {'preempted': True} after a SIGTERM).
  """
  # -- 1. config and workdir -------------------------------------------------------------------
  devices = list(devices) if devices is not None else jax.devices()
  config_lib.validate(config, num_devices=len(devices))
  _check_workdir(workdir)
  is_main = jax.process_index() == 0
  train = config.train

  # -- 2. mesh, model, optimizer, shapes and shardings ----------------------------------------
  setup = RunSetup.create(config, devices)
  logging.info(
    "mesh %s over %d devices (%d processes)",
    dict(setup.mesh.shape),
    len(devices),
    jax.process_count(),
  )

  # -- 3. checkpoints: what is there decides where we start ------------------------------------
  checkpointer = checkpoints.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=train.keep,
    keep_every=train.keep_every,
    async_save=train.async_checkpoints,
  )
  resume_step = checkpointer.latest_step()
  num_shards = config.data.num_shards or jax.process_count()
  if resume_step is not None:
    num_shards = checkpointer.restore_config(resume_step).data.num_shards or num_shards
  with config.unlocked():
    config.data.num_shards = num_shards

  # -- 4. data ----------------------------------------------------------------------------------
  vocabulary = _vocabulary(config, workdir, is_main)
  converter = setup.model.feature_converter(config.data.pack)
  make_stream = functools.partial(
    HostBatchStream, config, vocabulary, converter, num_shards=num_shards,
    process_index=jax.process_index(), process_count=jax.process_count(),
  )  # fmt: skip
  train_stream = make_stream(split="train")
  make_eval_stream = functools.partial(make_stream, split="validation")
  logging.info(
    "process %d reads data shards %s of %d", jax.process_index(), train_stream.shards, num_shards
  )

  # -- 5. state: resumed, or fresh (and maybe initialized from another run) --------------------
  start = time.time()
  if resume_step is not None:
    state, data_states = setup.restore_state(
      checkpointer, resume_step, data_shards=train_stream.shards, num_shards=num_shards
    )
    train_stream.set_state(data_states)
    logging.info("resumed from step %d of %s", resume_step, checkpointer.directory)
  else:
    state = setup.init_state()
    if train.init_from:  # params by name; the optimizer and the step start fresh
      params = init_from.load(state.params, train.init_from, setup.param_shardings, vocabulary)
      state = state.replace(params=params)
  logging.info(
    "model: %s, %s parameters (%.1fs to create/restore)",
    type(setup.model).__name__,
    f"{setup.num_params:,}",
    time.time() - start,
  )

  # -- 6. steps -----------------------------------------------------------------------------------
  cache_dir = runtime.enable_compilation_cache(train.compilation_cache, workdir)
  train_step, eval_step = setup.jit_train_step(), setup.jit_eval_step()
  dropout_rng = jax.random.key(train.seed + 1)

  def run_eval(params) -> dict[str, float]:
    with setup.use_mesh():
      results = evaluator.evaluate(
        eval_step, params, config, make_eval_stream, setup.batch_sharding, train.eval_steps
      )
    # The task's own metrics (classification accuracy/F1, exact match, ROUGE-L), if it has any.
    results.update(evaluator.task_metric_results(
      setup.model, params, config, vocabulary, make_eval_stream, train.eval_steps,
      config.data.eval_task or config.data.task))  # fmt: skip
    return results

  def save(step: int, state, force: bool = False) -> None:
    checkpointer.save(step, state, train_stream.get_state(), num_shards, config, force=force)

  # -- 7. the loop ------------------------------------------------------------------------------
  writer = reporting.MetricsWriter(workdir, enabled=is_main)
  progress = _progress(config, setup, int(jax.device_get(state.step)), is_main, len(devices))
  step = int(jax.device_get(state.step))
  with Preemption() as preemption, setup.use_mesh():
    after_step = hooks_lib.Hooks(
      ([hooks_lib.StopOnNonfinite(checkpointer)] if train.nonfinite == "stop" else [])
      + [
        hooks_lib.LogMetrics(train.log_every, train.steps, writer, progress, config.model.z_loss),
        hooks_lib.Evaluate(train.eval_every, train.steps, run_eval, writer, progress),
        hooks_lib.SaveCheckpoint(train.checkpoint_every, train.steps, save),
        hooks_lib.StopOnPreemption(preemption),
      ]
    )
    reason = StopReason.COMPLETED
    compiled = None
    while step < train.steps:
      batch = setup.global_batch(next(train_stream))
      if compiled is None:
        compiled = _compile_step(train_step, state, batch, dropout_rng, cache_dir, progress)
      state, step_metrics = compiled(state, batch, dropout_rng)
      step += 1
      reason = after_step(step, state, step_metrics) or StopReason.COMPLETED
      if reason is not StopReason.COMPLETED:
        break

    # -- 8. the end: a final checkpoint (also on preemption), evaluation, a sample -------------
    if reason is not StopReason.NONFINITE and checkpointer.latest_step() != step:
      save(step, state, force=True)
    checkpointer.close()
    progress.close()
    if reason is not StopReason.COMPLETED:
      writer.close()
      logging.warning(after_step.message)
      if reason is StopReason.PREEMPTED:
        return {"step": step, "preempted": True}
      raise TrainingError(after_step.message)
    last_eval = run_eval(state.params)
  writer.write(step, last_eval, prefix="eval/")
  writer.close()
  progress.write(f"final eval at step {step}: " + hooks_lib.format_scalars(last_eval))
  result = {"step": step, "eval": last_eval, "params": state.params, "num_params": setup.num_params}
  if is_main and train.sample_prompt and setup.model.generative:
    with setup.use_mesh():
      result["sample"] = hooks_lib.print_sample(
        setup.model, state.params, vocabulary, train.sample_prompt, train.sample_tokens
      )
  return result


def _compile_step(train_step, state, batch, rng, cache_dir: str, progress):
  """The train step compiled ahead of the first call, and a line saying how long it took and
  whether the persistent compilation cache had it."""
  progress.write("compiling the train step…")
  start = time.time()
  with runtime.CacheEvents() as events:
    compiled = train_step.lower(state, batch, rng).compile()
  if not cache_dir:
    cache = "no persistent compilation cache"
  elif events.hits:
    cache = f"persistent cache hit, {cache_dir}"
  else:
    cache = f"compiled and cached in {cache_dir}"
  progress.write(f"compiled the train step in {time.time() - start:.1f}s ({cache})")
  return compiled


def _check_workdir(workdir: str) -> None:
  if "://" in workdir:  # gs:// and friends: Orbax and the writers handle them
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise TrainingError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from e


def _vocabulary(config: ml_collections.ConfigDict, workdir: str, is_main: bool):
  """The run's vocabulary; with several processes one trains (or downloads) it into the shared
  workdir while the others wait."""
  if jax.process_count() > 1:
    if is_main:
      pipeline.get_vocabulary(config, workdir)
    multihost_utils.sync_global_devices("t5x_lite:vocabulary")
  vocabulary = pipeline.get_vocabulary(config, workdir)
  if vocabulary.vocab_size > config.model.vocab_size:
    raise config_lib.ConfigError(
      f"config.model.vocab_size={config.model.vocab_size} is smaller than the vocabulary's "
      f"{vocabulary.vocab_size} ids"
    )
  return vocabulary


def _progress(config, setup: RunSetup, first_step: int, is_main: bool, num_devices: int):
  """The console progress line, with tokens/s and MFU from the model's FLOPs per token."""
  seq_tokens = {k: int(v) for k, v in config.data.feature_lengths.items()}
  peak = reporting.peak_flops_per_device(config.model.dtype)
  return reporting.ProgressLogger(
    config.train.steps,
    first_step,
    is_main,
    tokens_per_step=config.train.batch_size * sum(seq_tokens.values()),
    flops_per_token=setup.model.flops_per_token(seq_tokens),
    peak_flops=peak * num_devices if peak else None,
  )
