"""train_and_evaluate(config, workdir): the training loop, read top to bottom.

mesh -> data -> model -> state (fresh, resumed or initialized from another run) -> jitted step
-> loop (log, evaluate, checkpoint, preemption) -> final evaluation and a sample.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from t5x_lite import checkpoints, partitioning
from t5x_lite import config as config_lib
from t5x_lite import metrics as metrics_lib
from t5x_lite.training import branch as branch_lib
from t5x_lite.training import observability, optimizers
from t5x_lite.training import state as state_lib
from t5x_lite.training import step as step_lib


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite loss under `nonfinite='stop'`, bad workdir, ...)."""


# ---------------------------------------------------------------------------------------------
# Data: logical shards, so the global stream does not depend on the number of processes.


class DataStream:
  """The global batch, assembled from this process's logical data shards.

  Shard k of `num_shards` is one pipeline iterator (`shard_index=k`) giving
  batch_size / num_shards rows; process p reads the contiguous shards
  [p·K/P, (p+1)·K/P), so the global batch is shards 0..K-1 in order on any process count.
  """

  def __init__(self, config, vocabulary, feature_converter, *, split: str, num_shards: int):
    from t5x_lite.data import pipeline  # noqa: PLC0415 - data is only needed once training starts

    process_count, process_index = jax.process_count(), jax.process_index()
    if num_shards % process_count:
      raise TrainingError(
        f"data.num_shards={num_shards} is not divisible by the {process_count} "
        "processes: resume with a process count that divides it"
      )
    if config.train.batch_size % num_shards:
      raise TrainingError(
        f"train.batch_size={config.train.batch_size} is not divisible by "
        f"data.num_shards={num_shards}"
      )
    per_process = num_shards // process_count
    self.split = split
    self.num_shards = num_shards
    self.shards = tuple(range(process_index * per_process, (process_index + 1) * per_process))
    rows = config.train.batch_size // num_shards
    self.iterators = {
      k: pipeline.make_iterator(
        config,
        vocabulary,
        feature_converter,
        split=split,
        batch_size=rows,
        shard_index=k,
        shard_count=num_shards,
      )
      for k in self.shards
    }

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(self.iterators[k]) for k in self.shards]
    if len(parts) == 1:
      return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

  def __iter__(self):
    return self

  def get_state(self) -> dict[int, Any]:
    return {k: it.get_state() for k, it in self.iterators.items()}

  def set_state(self, states: dict[int, Any]) -> None:
    for k, state in states.items():
      self.iterators[int(k)].set_state(state)


# ---------------------------------------------------------------------------------------------


class _Preemption:
  """SIGTERM (what a TPU VM gets before preemption) -> finish the step, save, exit 0."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True
    logging.warning("SIGTERM received: finishing this step, then saving a checkpoint")

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # Every process must stop at the same step: the distributed runtime agrees on it.
      from jax.experimental import multihost_utils  # noqa: PLC0415

      try:
        return bool(multihost_utils.reached_preemption_sync_point(step)) or self.requested
      except Exception:  # noqa: BLE001 - preemption service unavailable: local signal only
        return self.requested
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


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


@functools.cache
def _lazy_models():
  from t5x_lite import models  # noqa: PLC0415

  return models


def build_model(config: ml_collections.ConfigDict):
  return _lazy_models().build_model(config_lib.model_config(config))


def _shapes_from_batch(
  batch: dict[str, np.ndarray], global_batch: int
) -> dict[str, jax.ShapeDtypeStruct]:
  return {
    name: jax.ShapeDtypeStruct((global_batch,) + value.shape[1:], value.dtype)
    for name, value in batch.items()
  }


def evaluate(
  eval_step, params, config, make_stream, batch_sharding, num_batches: int
) -> dict[str, float]:
  """Summed metrics over `num_batches` held-out batches from a fresh (deterministic) stream."""
  stream = make_stream()
  total = None
  for _ in range(num_batches):
    batch = partitioning.make_global_batch(next(stream), batch_sharding)
    total = step_lib.accumulate(total, eval_step(params, batch))
  results = {name: n / d if d else float("nan") for name, (n, d) in total.items()}
  if "loss" in results:
    results["perplexity"] = float(np.exp(min(results["loss"], 50.0)))
  if not config.model.z_loss:
    results.pop("z_loss", None)
  return results


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, devices: list[jax.Device] | None = None
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `devices`: the devices of the mesh (default: all). Returns the final step, eval metrics and
  params (or {'preempted': True} after a SIGTERM).
  """
  # -- config and workdir ---------------------------------------------------------------------
  devices = list(devices) if devices is not None else jax.devices()
  config_lib.validate(config, num_devices=len(devices))
  _check_workdir(workdir)
  is_main = jax.process_index() == 0
  train_config = config.train

  # -- mesh ----------------------------------------------------------------------------------
  mesh = partitioning.make_mesh(config, devices)
  rules = partitioning.logical_rules(config)
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  logging.info(
    "mesh %s over %d devices (%d processes)",
    dict(mesh.shape),
    len(devices),
    jax.process_count(),
  )

  # -- checkpoints: what is there decides where we start ------------------------------------
  checkpointer = checkpoints.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=train_config.keep,
    keep_every=train_config.keep_every,
    async_save=train_config.async_checkpoints,
  )
  resume_step = checkpointer.latest_step()
  num_shards = config.data.num_shards or jax.process_count()
  if resume_step is not None:
    saved = checkpointer.restore_config(resume_step)
    num_shards = saved.data.num_shards or num_shards
  branch = None  # a decay branch starts from another run's checkpoint (training/branch.py)
  if resume_step is None and train_config.branch_from:
    branch = branch_lib.open_parent(config, workdir)
    num_shards = branch.num_shards
  with config.unlocked():
    config.data.num_shards = num_shards

  # -- data ------------------------------------------------------------------------------------
  from t5x_lite.data import pipeline  # noqa: PLC0415

  if jax.process_count() > 1:
    # One process trains (or downloads) the vocabulary into the shared workdir; the others wait.
    from jax.experimental import multihost_utils  # noqa: PLC0415

    if is_main:
      pipeline.get_vocabulary(config, workdir)
    multihost_utils.sync_global_devices("t5x_lite:vocabulary")
  vocabulary = pipeline.get_vocabulary(config, workdir)
  if vocabulary.vocab_size > config.model.vocab_size:
    raise config_lib.ConfigError(
      f"config.model.vocab_size={config.model.vocab_size} is smaller than the vocabulary's "
      f"{vocabulary.vocab_size} ids"
    )
  model = build_model(config)
  converter = model.feature_converter(config.data.pack)
  train_stream = DataStream(config, vocabulary, converter, split="train", num_shards=num_shards)
  logging.info(
    "process %d reads data shards %s of %d", jax.process_index(), train_stream.shards, num_shards
  )
  make_eval_stream = functools.partial(
    DataStream, config, vocabulary, converter, split="validation", num_shards=num_shards
  )
  input_shapes = _shapes_from_batch(
    next(make_eval_stream()), train_config.batch_size // train_config.microbatches
  )

  # -- model and state ------------------------------------------------------------------------
  optimizer, schedule = optimizers.make_optimizer(config)
  init_rng = jax.random.key(train_config.seed)

  def init_params():
    return model.init(init_rng, input_shapes)

  abstract_boxed = jax.eval_shape(init_params)
  state_shardings = state_lib.state_shardings(abstract_boxed, optimizer, mesh, rules)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(_unbox(abstract_boxed)))
  start = time.time()
  if resume_step is not None:
    abstract_state = state_lib.abstract_state(init_params, optimizer, state_shardings)
    state, data_states = checkpointer.restore(
      abstract_state, step=resume_step, data_shards=train_stream.shards, num_shards=num_shards
    )
    train_stream.set_state(data_states)
    logging.info("resumed from step %d of %s", resume_step, checkpointer.directory)
  elif branch is not None:
    abstract_state = state_lib.abstract_state(init_params, optimizer, state_shardings)
    state, data_states = branch.restore(abstract_state, train_stream.shards)
    train_stream.set_state(data_states)
  else:
    state, _ = state_lib.init_sharded(init_params, optimizer, mesh, rules)
    if train_config.init_from:
      state = _init_from(state, train_config.init_from, abstract_boxed, state_shardings, vocabulary)
  logging.info(
    "model: %s, %s parameters (%.1fs to create/restore)",
    config.model.family,
    f"{num_params:,}",
    time.time() - start,
  )

  # -- steps --------------------------------------------------------------------------------
  train_step = step_lib.jit_train_step(
    model, optimizer, schedule, microbatches=train_config.microbatches, rules=rules,
    state_shardings=state_shardings, batch_sharding=batch_sharding, mesh=mesh)  # fmt: skip
  eval_step = step_lib.jit_eval_step(
    model, rules=rules, param_shardings=state_shardings.params, batch_sharding=batch_sharding,
    mesh=mesh)  # fmt: skip
  dropout_rng = jax.random.key(train_config.seed + 1)

  def run_eval(params):
    from t5x_lite import evaluation  # noqa: PLC0415

    with partitioning.use_mesh(mesh, rules):
      results = evaluate(
        eval_step, params, config, make_eval_stream, batch_sharding, train_config.eval_steps
      )
    # The task's own metrics (classification accuracy/F1, exact match, ROUGE-L), if it has any.
    results.update(evaluation.task_metric_results(
      model, params, config, vocabulary, make_eval_stream, train_config.eval_steps,
      config.data.eval_task or config.data.task))  # fmt: skip
    return results

  # -- loop -------------------------------------------------------------------------------------
  writer = observability.with_wandb(metrics_lib.MetricsWriter(workdir, enabled=is_main), config,
                                   workdir, enabled=is_main)  # fmt: skip
  profiler = observability.ProfileHook(train_config.profile_steps, workdir)
  first_step = int(jax.device_get(state.step))
  seq_tokens = {k: int(v) for k, v in config.data.feature_lengths.items()}
  flops_per_token = metrics_lib.model_flops_per_token(config_lib.model_config(config), seq_tokens)
  peak = metrics_lib.peak_flops_per_device(config.model.dtype)
  progress = metrics_lib.ProgressLogger(
    train_config.steps,
    first_step,
    is_main,
    tokens_per_step=train_config.batch_size * sum(seq_tokens.values()),
    flops_per_token=flops_per_token,
    peak_flops=peak * len(devices) if peak else None,
  )
  pending = []  # metrics of steps not yet logged (fetched at log steps: no sync per step)
  last_eval: dict[str, float] = {}
  step = first_step
  stopped_early = ""
  with _Preemption() as preemption, partitioning.use_mesh(mesh, rules):
    while step < train_config.steps:
      batch = partitioning.make_global_batch(next(train_stream), batch_sharding)
      with profiler.step(step + 1):
        state, step_metrics = train_step(state, batch, dropout_rng)
      step += 1
      profiler.after_step(step, step_metrics)
      pending.append(step_metrics)

      if train_config.nonfinite == "stop":
        finite = bool(jax.device_get(step_metrics["finite"][0]))
        if not finite:
          stopped_early = (
            f"non-finite loss or gradient at step {step}; stopping "
            f"(config.train.nonfinite='stop'). The update was not applied; the last "
            f"checkpoint is step {checkpointer.latest_step()}"
          )
          break

      if step % train_config.log_every == 0 or step == train_config.steps:
        fetched = [step_lib.finalize_metrics(m) for m in pending]
        scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
        scalars.pop("finite", None)
        if not config.model.z_loss:
          scalars.pop("z_loss", None)
        scalars["skipped_steps"] = int(jax.device_get(state.skipped_steps))
        rates = progress.update(step, scalars)
        writer.write(step, {**scalars, **rates}, prefix="train/")
        pending = []
      else:
        progress.update(step)

      if (
        train_config.eval_every
        and step % train_config.eval_every == 0
        and step < train_config.steps
      ):
        last_eval = run_eval(state.params)
        writer.write(step, last_eval, prefix="eval/")
        progress.write(f"eval at step {step}: " + _format(last_eval))

      if step % train_config.checkpoint_every == 0 and step < train_config.steps:
        checkpointer.save(step, state, train_stream.get_state(), num_shards, config)

      if preemption.should_stop(step):
        stopped_early = f"preempted (SIGTERM) at step {step}: checkpoint saved, exiting cleanly"
        break

    # -- the end: a final checkpoint (also on preemption), evaluation, a sample -------------
    profiler.close()
    if not stopped_early or stopped_early.startswith("preempted"):
      if checkpointer.latest_step() != step:
        checkpointer.save(step, state, train_stream.get_state(), num_shards, config, force=True)
    checkpointer.close()
    progress.close()
    if stopped_early:
      writer.close()
      logging.warning(stopped_early)
      if stopped_early.startswith("preempted"):
        return {"step": step, "preempted": True}
      raise TrainingError(stopped_early)

    last_eval = run_eval(state.params)
  writer.write(step, last_eval, prefix="eval/")
  writer.close()
  progress.write(f"final eval at step {step}: " + _format(last_eval))
  result = {"step": step, "eval": last_eval, "params": state.params, "num_params": num_params}
  generative = config.model.family != "encoder" and not config.model.head
  if is_main and train_config.sample_prompt and generative:
    result["sample"] = _print_sample(model, state.params, vocabulary, config, mesh, rules)
  return result


def _unbox(tree):
  import flax.linen as nn  # noqa: PLC0415

  return nn.unbox(tree)


def _format(scalars: dict[str, float]) -> str:
  return " | ".join(f"{k} {v:.4g}" for k, v in sorted(scalars.items()))


def _init_from(state, path: str, abstract_boxed, state_shardings, vocabulary=None):
  """Loads params from another run by name (fine-tuning); the optimizer and the step start
  fresh. New parameters (a head) keep their initialization (training/init_from.py)."""
  from t5x_lite.training import init_from  # noqa: PLC0415

  del abstract_boxed  # the fresh params carry the shapes and dtypes
  params = init_from.load(state.params, path, state_shardings.params, vocabulary)
  return state.replace(params=params)


def _print_sample(model, params, vocabulary, config, mesh, rules) -> str:
  from t5x_lite import decoding  # noqa: PLC0415

  prompt = config.train.sample_prompt
  with partitioning.use_mesh(mesh, rules):
    text = decoding.generate_text(
      model,
      params,
      vocabulary,
      [prompt],
      max_new_tokens=config.train.sample_tokens,
      temperature=0.0,
    )[0]
  print(f"sample (greedy): {prompt!r} -> {text!r}", flush=True)
  return text
