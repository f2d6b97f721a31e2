"""train_and_evaluate(config, workdir): the training loop, read top to bottom.

1. config and workdir  2. RunSetup (mesh, model, optimizer, shardings)  3. checkpoints decide
where to start  4. data  5. state: fresh, resumed, or initialized from another run  6. jitted
steps  7. the loop, whose periodic actions are hooks (training/hooks.py)  8. the end: final
checkpoint, evaluation, a sample.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from t5x_lite import checkpoints, reporting, runtime
from t5x_lite import config as config_lib
from t5x_lite.convert import hf as hf_convert
from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import HostBatchStream, host_validation_batches
from t5x_lite.evaluation import evaluator, harness
from t5x_lite.training import branch as branch_lib
from t5x_lite.training import distill, init_from, memory, observability
from t5x_lite.training import hooks as hooks_lib
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
  params (or {'preempted': True} after a SIGTERM). On every error path (a failed restore,
  Ctrl-C, a bad batch) the checkpoint manager is closed before the error propagates.
  """
  preemption = Preemption()
  with checkpoints.close_on_exit():
    try:
      return _train_and_evaluate(config, workdir, devices, preemption)
    finally:  # an error before the loop must not leave Ctrl-C caught in the caller's process
      preemption.uninstall()


def _train_and_evaluate(config, workdir, devices, preemption: Preemption) -> dict[str, Any]:
  # -- 1. config and workdir -------------------------------------------------------------------
  devices = list(devices) if devices is not None else jax.devices()
  config_lib.validate(config, num_devices=len(devices))
  _check_workdir(workdir)
  # Signals from here on stop the run cleanly (a SIGTERM while compiling exits 0, not 143).
  preemption.install()
  is_main = jax.process_index() == 0
  train = config.train

  # -- 2. mesh, model, optimizer, shapes and shardings ----------------------------------------
  setup = RunSetup.create(config, devices)
  estimate = memory.describe(memory.check_fits(setup))  # before anything is allocated
  logging.info(
    "mesh %s over %d devices (%d processes)", dict(setup.mesh.shape), len(devices),
    jax.process_count(),
  )  # fmt: skip

  # -- 3. checkpoints: what is there decides where we start ------------------------------------
  checkpointer = checkpoints.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=train.keep,
    keep_every=train.keep_every,
    async_save=train.async_checkpoints,
  )
  start = _StartingPoint.find(config, workdir, checkpointer)

  # -- 4. data (and a distillation teacher, frozen on this mesh, never checkpointed) -----------
  data = _RunData.open(config, workdir, setup, start, checkpointer.directory)
  teacher = _load_teacher(config, setup, start.teacher, data.vocabulary) if start.teacher else None

  # -- 5. state: resumed, or fresh (and maybe initialized from another run) --------------------
  state = _initial_state(config, setup, checkpointer, start, data, teacher)
  memory.wait_until_ready(state, "creating the train state", train.ready_timeout, estimate)

  # -- 6. steps -----------------------------------------------------------------------------------
  cache_dir = runtime.enable_compilation_cache(train.compilation_cache, workdir)
  train_step, eval_step = setup.jit_train_step(teacher=teacher), setup.jit_eval_step()
  dropout_rng = jax.random.key(train.seed + 1)
  step_inputs = (dropout_rng,) if teacher is None else (dropout_rng, teacher.params)
  run_eval = functools.partial(_evaluate, config, setup, eval_step, data)

  def save(step: int, state, force: bool = False) -> None:
    checkpointer.save(step, state, data.train_stream.get_state(), start.num_shards, config,
                      force=force)  # fmt: skip

  # -- 7. the loop ------------------------------------------------------------------------------
  writer = observability.with_wandb(
    reporting.MetricsWriter(workdir, enabled=is_main), config, workdir, enabled=is_main
  )
  profiler = observability.ProfileHook(train.profile_steps, workdir)
  step = int(jax.device_get(state.step))
  progress = _progress(config, setup, step, is_main, len(devices))
  with preemption, setup.use_mesh():
    guard = hooks_lib.NonfiniteParamsGuard(checkpointer)
    after_step = _after_step_hooks(
      config, checkpointer, guard, writer, progress, run_eval, save, preemption
    )
    reason = StopReason.PREEMPTED if preemption.requested else StopReason.COMPLETED
    compiled = None
    while step < train.steps and reason is StopReason.COMPLETED:
      batch = setup.global_batch(next(data.train_stream))
      first = compiled is None
      if compiled is None:
        compiled = _compile_step(train_step, state, batch, step_inputs, cache_dir, progress)
      with profiler.step(step + 1):
        state, step_metrics = compiled(state, batch, *step_inputs)
      if first:  # the activations' allocation can fail too: never wait on it forever
        memory.wait_until_ready(step_metrics, "the first step", train.ready_timeout, estimate)
      step += 1
      profiler.after_step(step, step_metrics)
      reason = after_step(step, state, step_metrics) or StopReason.COMPLETED

    # -- 8. the end: a final checkpoint (also on preemption), evaluation, a sample -------------
    if reason is not StopReason.NONFINITE and checkpointer.latest_step() != step:
      if guard.ok(step):
        save(step, state, force=True)
      else:
        reason, after_step.message = StopReason.NONFINITE, guard.message
    checkpointer.close()
    profiler.close()
    progress.close()
    if reason is not StopReason.COMPLETED:
      writer.close()
      logging.warning(after_step.message or f"stopped by a signal at step {step}")
      if reason is StopReason.PREEMPTED:
        return {"step": step, "preempted": True}
      raise TrainingError(after_step.message)
    last_eval = run_eval(state.params)
  writer.write(step, last_eval, prefix="eval/")
  writer.close()
  progress.write(f"final eval at step {step}: " + hooks_lib.format_scalars(last_eval))
  result = {"step": step, "eval": last_eval, "params": state.params, "num_params": setup.num_params}
  if is_main and train.sample_prompt and train.sample_tokens > 0 and setup.model.generative:
    with setup.use_mesh():
      result["sample"] = hooks_lib.print_sample(
        setup.model, state.params, data.vocabulary, train.sample_prompt, train.sample_tokens
      )
  return result


@dataclasses.dataclass
class _StartingPoint:
  """Where a run starts: its own latest checkpoint, a decay branch's parent, or step 0.

  `find` also completes the config from what it starts from (data shards, the vocabulary of an
  `init_from` run or of a distillation teacher) before anything reads data.
  """

  resume_step: int | None
  saved_fingerprint: str  # the vocabulary the checkpoint was trained with ('' if none)
  branch: branch_lib.DecayBranch | None
  num_shards: int
  teacher: distill.TeacherSource | None

  @classmethod
  def find(cls, config, workdir: str, checkpointer) -> _StartingPoint:
    train = config.train
    resume_step = checkpointer.latest_step()
    num_shards = config.data.num_shards or jax.process_count()
    saved_fingerprint = ""
    if resume_step is not None:
      saved_config = checkpointer.restore_config(resume_step)
      saved_fingerprint = saved_config.data.get("vocab_fingerprint", "")
      num_shards = saved_config.data.num_shards or num_shards
      _warn_on_schedule_change(saved_config, config, resume_step)
    branch = None  # a decay branch starts from another run's checkpoint (training/branch.py)
    if resume_step is None and train.branch_from:
      branch = branch_lib.open_parent(config, workdir)
      num_shards = branch.num_shards
    with config.unlocked():
      config.data.num_shards = num_shards
      if train.init_from and not config.data.vocab_path and resume_step is None:
        # Fine-tuning reads text with the vocabulary of the run or HF folder it starts from.
        config.data.update(init_from.source_vocabulary(train.init_from))
    # A distillation teacher is opened first; a student reads text with its vocabulary.
    teacher = distill.open_teacher(config.distill.teacher) if config.distill.teacher else None
    if teacher and config.data.vocab == "sentencepiece" and not config.data.vocab_path:
      with config.unlocked():
        config.data.update(teacher.vocabulary)
    return cls(resume_step, saved_fingerprint, branch, num_shards, teacher)


@dataclasses.dataclass
class _RunData:
  """The run's vocabulary, its training stream and its evaluation streams (whole validation
  split; per component task of a Mixture), and the few-shot tasks of `train.harness_tasks`."""

  vocabulary: Any
  train_stream: HostBatchStream
  make_eval_stream: Callable[[], Any]
  make_task_eval_stream: Callable[[str], Any]
  few_shot: harness.ModelLM | None
  few_shot_tasks: Any

  @classmethod
  def open(cls, config, workdir: str, setup: RunSetup, start: _StartingPoint, where: str):
    vocabulary = _vocabulary(config, workdir, jax.process_index() == 0)
    if start.saved_fingerprint and start.saved_fingerprint != vocabulary.fingerprint:
      raise TrainingError(
        f"{where}: the checkpoint was trained with vocabulary {start.saved_fingerprint}, this "
        f"run reads {vocabulary.fingerprint} (data.vocab_path or data.vocab_* changed since)"
      )
    with config.unlocked():
      config.data.vocab_fingerprint = vocabulary.fingerprint  # saved with every checkpoint
    converter = setup.model.feature_converter(config.data.pack)
    shards = dict(
      num_shards=start.num_shards, process_index=jax.process_index(),
      process_count=jax.process_count(),
    )  # fmt: skip
    train_stream = HostBatchStream(config, vocabulary, converter, split="train", **shards)
    logging.info(
      "process %d reads data shards %s of %d", jax.process_index(), train_stream.shards,
      start.num_shards,
    )  # fmt: skip

    for task in pipeline.resolve_tasks(config, "validation")[0]:
      task.source.split("validation")  # an empty validation split fails now, not after training

    def make_task_eval_stream(task: str):  # one component of a Mixture (per-task evaluation)
      task_config = evaluator.with_eval_task(config, task)
      return host_validation_batches(task_config, vocabulary, converter, **shards)

    few_shot, few_shot_tasks = None, None  # read and checked now, before anything compiles
    if config.train.harness_tasks:
      length = max(config.data.feature_lengths.values())
      few_shot = harness.ModelLM(setup.model, None, vocabulary, max_length=length)
      few_shot_tasks = harness.load_tasks(config.train.harness_tasks)
    return cls(
      vocabulary, train_stream,
      functools.partial(host_validation_batches, config, vocabulary, converter, **shards),
      make_task_eval_stream, few_shot, few_shot_tasks,
    )  # fmt: skip


def _initial_state(config, setup: RunSetup, checkpointer, start: _StartingPoint, data, teacher):
  """The train state: resumed (with the data position), a branch's parent, or fresh, then
  maybe initialized from another run (`init_from`) or from a distillation teacher's layers."""
  began = time.time()
  if start.resume_step is not None:
    state, data_states = setup.restore_state(
      checkpointer, start.resume_step, data_shards=data.train_stream.shards,
      num_shards=start.num_shards,
    )  # fmt: skip
    data.train_stream.set_state(data_states)
    logging.info("resumed from step %d of %s", start.resume_step, checkpointer.directory)
  elif start.branch is not None:
    state, data_states = start.branch.restore(setup.abstract_state(), data.train_stream.shards)
    data.train_stream.set_state(data_states)
  else:
    state = setup.init_state()
    if config.train.init_from:  # params by name; the optimizer and the step start fresh
      params = init_from.load(
        state.params, config.train.init_from, setup.param_shardings, data.vocabulary,
        setup.model,
      )  # fmt: skip
      state = state.replace(params=params)
    elif teacher is not None:  # DistilBERT's init: every other layer of the teacher
      params = distill.init_student(state.params, teacher, setup.model,
                                    config.distill.init_from_teacher)  # fmt: skip
      if params is not None:
        state = state.replace(params=setup.place_params(params))
        logging.info("distill: the student starts from the teacher's layers")
      elif config.distill.init_from_teacher == "auto":
        logging.info("distill: the student's shapes do not fit the teacher's: random init")
  logging.info(
    "model: %s, %s parameters (%.1fs to create/restore)", type(setup.model).__name__,
    f"{setup.num_params:,}", time.time() - began,
  )  # fmt: skip
  return state


def _evaluate(config, setup: RunSetup, eval_step, data: _RunData, params) -> dict[str, float]:
  """Held-out metrics of `params`: loss and bits per byte over the whole validation split, per
  component task of a Mixture, the task's own metrics, and few-shot accuracy if asked for."""
  eval_steps = config.train.eval_steps
  with setup.use_mesh():
    results = evaluator.evaluate(
      eval_step, params, config, data.make_eval_stream, setup.batch_sharding, eval_steps,
      data.vocabulary,
    )  # fmt: skip
    results.update(evaluator.evaluate_mixture_tasks(
      eval_step, params, config, data.make_task_eval_stream, setup.batch_sharding, eval_steps,
      data.vocabulary))  # fmt: skip
  # The task's own metrics (classification accuracy/F1, exact match, ROUGE-L), if it has any.
  results.update(evaluator.task_metric_results(
    setup.model, params, config, data.vocabulary, data.make_eval_stream, eval_steps,
    config.data.eval_task or config.data.task))  # fmt: skip
  if data.few_shot is not None:  # few-shot accuracy (evaluation/harness.py) of these params
    data.few_shot.params = params
    scores = harness.evaluate(data.few_shot, data.few_shot_tasks)
    results.update({f"harness/{name}": value for name, value in scores.items()})
  return results


def _after_step_hooks(config, checkpointer, guard, writer, progress, run_eval, save, preemption):
  """The loop's periodic actions, in order: the non-finite policy, the params guard, logging,
  evaluation, checkpointing (never of non-finite params) and the preemption stop."""
  train = config.train
  if train.nonfinite == "stop":
    policy = hooks_lib.StopOnNonfinite(checkpointer)
  else:
    policy = hooks_lib.GiveUpOnSkips(train.max_consecutive_skips, checkpointer, train.log_every)
  return hooks_lib.Hooks([
    policy,
    guard,
    hooks_lib.LogMetrics(train.log_every, train.steps, writer, progress, config.model.z_loss),
    hooks_lib.Evaluate(train.eval_every, train.steps, run_eval, writer, progress),
    hooks_lib.SaveCheckpoint(train.checkpoint_every, train.steps, save, guard),
    hooks_lib.StopOnPreemption(preemption),
  ])  # fmt: skip


def _warn_on_schedule_change(saved, config, resume_step: int) -> None:
  """Resuming with another train.steps moves a decay that runs "until the end" (decay_steps=0):
  the steps still to run get other learning rates than the original run planned. Say so."""
  old_steps, new_steps = int(saved.train.steps), int(config.train.steps)
  opt = config.optimizer
  if old_steps == new_steps or opt.decay == "constant" or int(opt.decay_steps) != 0:
    return
  if int(saved.optimizer.decay_steps) != 0:
    return
  warmup = int(opt.warmup_steps)
  logging.warning(
    "resuming at step %d with train.steps=%d (the run was started with %d): the %s decay now "
    "ends at step %d instead of %d, so the learning rate from step %d on differs from the "
    "original plan; to keep it, add --config.optimizer.decay_steps=%d",
    resume_step, new_steps, old_steps, opt.decay, new_steps, old_steps, resume_step + 1,
    max(1, old_steps - warmup),
  )  # fmt: skip


def _compile_step(train_step, state, batch, inputs: tuple, cache_dir: str, progress):
  """The train step compiled ahead of the first call, and a line saying how long it took and
  whether the persistent compilation cache had it. `inputs`: (rng,) or (rng, teacher params)."""
  progress.write("compiling the train step…")
  start = time.time()
  with runtime.CacheEvents() as events:
    compiled = train_step.lower(state, batch, *inputs).compile()
  if not cache_dir:
    cache = "no persistent compilation cache"
  elif events.hits:
    cache = f"persistent cache hit, {cache_dir}"
  else:
    cache = f"compiled and cached in {cache_dir}"
  progress.write(f"compiled the train step in {time.time() - start:.1f}s ({cache})")
  return compiled


def _load_teacher(
  config: ml_collections.ConfigDict, setup: RunSetup, source: distill.TeacherSource, vocabulary
) -> distill.Teacher:
  """The teacher on this run's mesh: the latest checkpoint of a t5x_lite run (restored as
  `t5x_lite.load` restores params) or a Hugging Face folder (convert/hf, the one place that reads
  HF names). Its vocabulary, kind and widths are checked before anything compiles (one-line
  ConfigErrors); its params are never in the train state, so never checkpointed."""
  distill.check_vocabulary(source.path, source.fingerprint(), vocabulary.fingerprint)
  if source.kind == "hf":
    model_config, host_params = hf_convert.import_hf(source.path, config.model.scan_layers)
    teacher_setup = setup.teacher_setup(hf_convert.full_config(model_config, source.path))
  else:
    teacher_setup = setup.teacher_setup(source.checkpointer.restore_config(source.step))
  start = time.time()
  if source.kind == "hf":
    params = teacher_setup.place_params(host_params)
  else:
    params = teacher_setup.restore_params(source.checkpointer, source.step)
  logging.info(
    "distill: teacher %s (%s, %s parameters, %.1fs to load)", source.path,
    type(teacher_setup.model).__name__, f"{teacher_setup.num_params:,}", time.time() - start,
  )  # fmt: skip
  return distill.Teacher(teacher_setup.model, params, teacher_setup.param_shardings, source.path)


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
  # Folders the run writes later: a file in their place would fail only at the first save.
  for folder in ("checkpoints", "vocab", "eval"):
    path = os.path.join(workdir, folder)
    if os.path.exists(path) and not os.path.isdir(path):
      raise TrainingError(
        f"{path} is a file, but the run keeps its {folder} there: move it or use another workdir"
      )


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
