"""`t5x-lite eval`: a checkpoint on a task's validation split.

evaluate_checkpoint(workdir, step=None, task=None, num_batches=None) -> {name: value}

  loss, perplexity, accuracy (token accuracy; for a classifier, label accuracy) and the
  model's other metrics: the training loop's own `evaluate` on the same mesh, batches and
  jitted eval step, so the numbers are the loop's eval numbers, deterministically.

  The task's metric functions (`Task.metric_fns`, seqio's `fn(targets, predictions) -> dict`)
  on the same number of validation examples, reported as 'task/<name>': for classifiers the predicted label names, for
  generative models the greedy decoding of each example's inputs (text-to-text) or prompt
  (decoder prompt -> completion) against its target text.

Results are printed by the CLI, appended to workdir/metrics.jsonl (as `eval/<name>`) and written
to workdir/eval/<task>_step_<N>.json.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Predictions of one eval batch.


def _classifier_pairs(model, params, batch, labels) -> tuple[list[str], list[str]]:
  """(target label names, predicted label names) at every classified position of `batch`."""
  import jax  # noqa: PLC0415

  log_probs = np.asarray(jax.device_get(_jitted(model, "classify")(params, batch)))
  weights = np.asarray(jax.device_get(batch["classification_loss_weights"])) > 0
  truth = np.asarray(jax.device_get(batch["classification_labels"]))[weights]
  predicted = log_probs.argmax(-1)[weights]
  name = (lambda i: labels[i]) if labels else str
  return [name(int(i)) for i in truth], [name(int(i)) for i in predicted]


@functools.cache
def _jitted(model, method: str):
  import jax  # noqa: PLC0415

  return jax.jit(getattr(model, method))


def _generation_pairs(model, params, batch, vocabulary, max_new_tokens: int):
  """(target texts, greedy predictions) of the examples of an unpacked batch."""
  from t5x_lite import decoding  # noqa: PLC0415

  eos = vocabulary.eos_id
  targets = np.asarray(batch["decoder_target_tokens"])
  weights = np.asarray(batch["decoder_loss_weights"]) > 0
  if model.config.family == "encoder_decoder":
    inputs = np.asarray(batch["encoder_input_tokens"])
    prompts = [row[row > 0].tolist() for row in inputs]
    target_ids = [row[w].tolist() for row, w in zip(targets, weights)]
  else:  # prompt (loss weight 0) -> completion (loss weight 1), unpacked rows
    prompts, target_ids = [], []
    for row, w in zip(targets, weights):
      length = int(np.sum(row > 0))
      prompts.append(row[:length][~w[:length]].tolist())
      target_ids.append(row[:length][w[:length]].tolist())
  keep = [i for i, (p, t) in enumerate(zip(prompts, target_ids)) if p and t]
  if not keep:
    return [], []
  generated = decoding.generate_ids(
    model, params, [prompts[i] for i in keep], max_new_tokens=max_new_tokens, eos_id=eos
  )
  truth = [vocabulary.decode(decoding.strip_after_eos(target_ids[i], eos)) for i in keep]
  predicted = [vocabulary.decode(decoding.strip_after_eos(row, eos)) for row in generated]
  return truth, predicted


# ---------------------------------------------------------------------------------------------


def evaluate_checkpoint(
  workdir: str,
  step: int | None = None,
  task: str | None = None,
  num_batches: int | None = None,
  *,
  devices: Sequence[Any] | None = None,
  write: bool = True,
) -> dict[str, Any]:
  """Evaluates a checkpoint of `workdir` (latest, or `step`) on `task`'s validation split
  (default: the run's eval task) over `num_batches` batches (default: train.eval_steps)."""
  import flax.linen as nn  # noqa: PLC0415
  import jax  # noqa: PLC0415

  from t5x_lite import checkpoints, partitioning  # noqa: PLC0415
  from t5x_lite import metrics as metrics_lib  # noqa: PLC0415
  from t5x_lite.data import pipeline  # noqa: PLC0415
  from t5x_lite.training import loop, optimizers  # noqa: PLC0415
  from t5x_lite.training import state as state_lib  # noqa: PLC0415
  from t5x_lite.training import step as step_lib  # noqa: PLC0415

  checkpointer = checkpoints.open_existing(workdir)
  step = checkpointer._check_step(step)
  config = checkpointer.restore_config(step)
  if task:
    with config.unlocked():
      config.data.eval_task = task
  task_name = config.data.eval_task or config.data.task
  num_batches = int(num_batches or config.train.eval_steps)
  if num_batches <= 0:
    raise ValueError(f"--num-batches {num_batches}: expected a positive number of batches")

  # The training loop's mesh, data shards, shardings and jitted eval step.
  devices = list(devices) if devices is not None else jax.devices()
  mesh = partitioning.make_mesh(config, devices)
  rules = partitioning.logical_rules(config)
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  vocabulary = pipeline.get_vocabulary(config, workdir)
  model = loop.build_model(config)
  converter = model.feature_converter(config.data.pack)
  num_shards = config.data.num_shards or jax.process_count()
  make_stream = functools.partial(
    loop.DataStream, config, vocabulary, converter, split="validation", num_shards=num_shards
  )
  global_batch = config.train.batch_size // config.train.microbatches
  input_shapes = loop._shapes_from_batch(next(make_stream()), global_batch)
  optimizer, _ = optimizers.make_optimizer(config)
  abstract_boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), input_shapes))
  shardings = state_lib.state_shardings(abstract_boxed, optimizer, mesh, rules).params
  abstract = jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
    nn.unbox(abstract_boxed),
    shardings,
  )
  params = checkpointer.restore_params(abstract, step)
  eval_step = step_lib.jit_eval_step(
    model, rules=rules, param_shardings=shardings, batch_sharding=batch_sharding, mesh=mesh
  )
  with partitioning.use_mesh(mesh, rules):
    results: dict[str, Any] = loop.evaluate(
      eval_step, params, config, make_stream, batch_sharding, num_batches
    )

  # The task's metric functions on predictions.
  results.update(
    task_metric_results(model, params, config, vocabulary, make_stream, num_batches, task_name)
  )

  if write and jax.process_index() == 0:
    writer = metrics_lib.MetricsWriter(workdir)
    writer.write(step, results, prefix="eval/")
    writer.close()
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task_name}_step_{step}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"step": step, "task": task_name, **results}, f, indent=2, sort_keys=True)
  return {"step": step, "task": task_name, **results}


def task_metric_results(
  model, params, config, vocabulary, make_stream, num_batches: int, task_name: str
) -> dict[str, float]:
  """The task's metric functions (accuracy, F1, exact match, ROUGE-L, ...) on its predictions,
  as {'task/<name>': value, 'num_examples': n}; {} when the task has none. Also run by the
  training loop at every evaluation."""
  import jax  # noqa: PLC0415

  from t5x_lite.data import pipeline  # noqa: PLC0415

  entry = pipeline.get_task(config, task_name)
  metric_fns = tuple(getattr(entry, "metric_fns", ()) or ())
  if not metric_fns:
    return {}
  local = jax.device_get(params)  # predictions run on one device, no mesh needed
  pairs = _predictions(
    model, local, config, vocabulary, make_stream, num_batches, getattr(entry, "labels", None)
  )
  results = {}
  for fn in metric_fns:
    # 'task/' keeps them apart from the loop's metrics ('accuracy' is a token accuracy there).
    results.update({f"task/{k}": float(v) for k, v in fn(*pairs).items()})
  results["num_examples"] = len(pairs[0])
  return results


def _predictions(model, params, config, vocabulary, make_stream, num_batches, labels):
  """(targets, predictions) over `num_batches` validation batches for the metric functions."""
  from t5x_lite.training import loop  # noqa: PLC0415

  truth, predicted = [], []
  if config.model.head:
    stream = make_stream()
    for _ in range(num_batches):
      t, p = _classifier_pairs(model, params, next(stream), labels)
      truth += t
      predicted += p
    return truth, predicted
  # Generation needs one example per row: an unpacked stream of the same split.
  unpacked = loop.DataStream(
    config, vocabulary, model.feature_converter(False), split="validation",
    num_shards=config.data.num_shards or 1,
  )  # fmt: skip
  lengths = dict(config.data.feature_lengths)
  max_new = int(lengths.get("targets", max(lengths.values())))
  for _ in range(num_batches):
    t, p = _generation_pairs(model, params, next(unpacked), vocabulary, max_new)
    truth += t
    predicted += p
  return truth, predicted
