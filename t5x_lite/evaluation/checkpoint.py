"""`t5x-lite eval`: a checkpoint on a task's validation split.

evaluate_checkpoint(workdir, step=None, task=None, num_batches=None) -> {name: value}

  loss, perplexity, accuracy (token accuracy; for a classifier, label accuracy) and the
  model's other metrics: the training loop's own `evaluator.evaluate` on the same mesh, batches
  and jitted eval step (one `RunSetup`), so the numbers are the loop's eval numbers,
  deterministically.

  The task's metric functions (`Task.metric_fns`, seqio's `fn(targets, predictions) -> dict`)
  on the same number of validation examples, reported as 'task/<name>': for classifiers the
  predicted label names, for generative models the greedy decoding of each example's inputs
  (text-to-text) or prompt (decoder prompt -> completion) against its target text.

Results are printed by the CLI, appended to workdir/metrics.jsonl (as `eval/<name>`) and written
to workdir/eval/<task>_step_<N>.json.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax

from t5x_lite import checkpoints, reporting
from t5x_lite import config as config_lib
from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import host_validation_batches
from t5x_lite.errors import ConfigError
from t5x_lite.evaluation import evaluator
from t5x_lite.training.setup import RunSetup


def evaluate_checkpoint(
  workdir: str,
  step: int | None = None,
  task: str | None = None,
  num_batches: int | None = None,
  *,
  overrides: Sequence[tuple[str, str]] = (),
  devices: Sequence[Any] | None = None,
  write: bool = True,
) -> dict[str, Any]:
  """Evaluates a checkpoint of `workdir` (latest, or `step`) on `task`'s validation split
  (default: the run's eval task), each example once, or its first `num_batches` batches when
  positive (default: train.eval_steps; 0 = the whole split).

  `overrides`: (key, value) pairs as `--config.KEY=VALUE` on the run's saved config, type-checked
  and validated as for `train` (e.g. the feature lengths of another task)."""
  checkpointer = checkpoints.open_existing(workdir)
  step = checkpointer.check_step(step)
  config = checkpointer.restore_config(step)
  for key, value in overrides:
    config_lib.apply_override(config, key, value)
  if task:
    with config.unlocked():
      config.data.eval_task = task
  if overrides or task:
    config_lib.validate(config)
  task_name = config.data.eval_task or config.data.task
  num_batches = int(config.train.eval_steps if num_batches is None else num_batches)
  if num_batches < 0:
    raise ConfigError(f"--num-batches {num_batches}: expected >= 0 (0 = the whole split)")

  # The training loop's mesh, shardings, data shards and jitted eval step.
  setup = RunSetup.create(config, devices)
  vocabulary = pipeline.get_vocabulary(config, workdir)
  make_stream = functools.partial(
    host_validation_batches, config, vocabulary, setup.model.feature_converter(config.data.pack),
    num_shards=config.data.num_shards or jax.process_count(),
    process_index=jax.process_index(), process_count=jax.process_count(),
  )  # fmt: skip
  params = setup.restore_params(checkpointer, step)
  eval_step = setup.jit_eval_step()
  with setup.use_mesh():
    results: dict[str, Any] = evaluator.evaluate(
      eval_step, params, config, make_stream, setup.batch_sharding, num_batches
    )

  # The task's metric functions on predictions.
  results.update(
    evaluator.task_metric_results(
      setup.model, params, config, vocabulary, make_stream, num_batches, task_name
    )
  )

  if write and jax.process_index() == 0:
    writer = reporting.MetricsWriter(workdir)
    writer.write(step, results, prefix="eval/")
    writer.close()
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task_name}_step_{step}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"step": step, "task": task_name, **results}, f, indent=2, sort_keys=True)
  return {"step": step, "task": task_name, **results}
