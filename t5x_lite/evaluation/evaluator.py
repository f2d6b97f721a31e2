"""Evaluation over a held-out stream: the loop's summed metrics, and the task's own metrics.

evaluate(eval_step, params, config, make_batches, batch_sharding, num_batches)
    loss, perplexity, accuracy, ... summed as (numerator, denominator) over the validation split,
    each example exactly once (`make_batches()` is a finite pass, padded with weight-0 rows),
    or its first `num_batches` batches when that is positive (and said so): used by the
    training loop at every evaluation and by `evaluate_checkpoint`, so their numbers agree.
task_metric_results(model, params, config, vocabulary, make_stream, num_batches, task_name)
    the Task's metric functions (`Task.metric_fns`, seqio's fn(targets, predictions)) on its
    predictions: label names for classifiers, greedy decodings for generative models.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from t5x_lite import decoding, partitioning
from t5x_lite.data import pipeline
from t5x_lite.data.sharded_stream import host_validation_batches
from t5x_lite.data.vocabularies import Vocabulary
from t5x_lite.evaluation import bits_per_byte as bpb
from t5x_lite.training import step as step_lib


def capped(batches, num_batches: int, what: str = "evaluation"):
  """`batches` (a finite pass), or its first `num_batches` when positive, with a progress bar on
  a terminal; says so when the cap leaves batches out."""
  iterator = iter(batches)
  if num_batches > 0:
    head = list(itertools.islice(iterator, num_batches))
    if next(iterator, None) is not None:
      logging.info(
        "%s: the first %d batches of the validation split (train.eval_steps / --num-batches "
        "caps it; 0 = the whole split)", what, num_batches,
      )  # fmt: skip
    iterator = iter(head)
  if sys.stderr.isatty():
    from tqdm import tqdm  # noqa: PLC0415 (progress bar on a terminal only)

    iterator = tqdm(iterator, desc=what, unit="batch", leave=False)
  return iterator


def evaluate(
  eval_step,
  params,
  config,
  make_batches,
  batch_sharding,
  num_batches: int,
  vocabulary: Vocabulary | None = None,
) -> dict[str, float]:
  """Summed metrics over the validation split (each example once) or its first `num_batches`
  batches; `make_batches()` returns a fresh finite iterator of host batches.

  With `vocabulary`, a language model's results also hold `bits_per_byte` and
  `bits_per_character` of the target text the scored tokens cover (evaluation/bits_per_byte.py):
  comparable across vocabularies, unlike the loss.
  """
  total, text = None, bpb.TextCount()
  for host_batch in capped(make_batches(), num_batches):
    batch = partitioning.make_global_batch(host_batch, batch_sharding)
    total = step_lib.accumulate(total, eval_step(params, batch))
    if vocabulary is not None and "decoder_loss_weights" in host_batch and not config.model.head:
      text = text + bpb.count_target_text(host_batch, vocabulary)
  if total is None:
    raise ValueError("the validation split gave no batch: nothing to evaluate")
  results = {name: n / d if d else float("nan") for name, (n, d) in total.items()}
  if text.bytes:
    if jax.process_count() > 1:  # each host counted the text of its own rows
      counts = multihost_utils.process_allgather(
        np.array([text.tokens, text.bytes, text.characters])
      )
      text = bpb.TextCount(
        float(counts[:, 0].sum()), int(counts[:, 1].sum()), int(counts[:, 2].sum())
      )
    # The cross-entropy alone: the loss metric includes the z-loss term.
    results.update(text.from_mean_loss(results["loss"] - results.get("z_loss", 0.0)))
  # Perplexity only of a language-model loss: not of a classifier's loss, and for BERT of the
  # MLM loss alone (its 'loss' is MLM + NSP; NSP has its own nsp_accuracy).
  if config.model.head:
    pass
  elif "mlm_loss" in results:
    results["mlm_perplexity"] = float(np.exp(min(results["mlm_loss"], 50.0)))
  elif "loss" in results:
    results["perplexity"] = float(np.exp(min(results["loss"], 50.0)))
  if not config.model.z_loss:
    results.pop("z_loss", None)
  return results


def evaluate_mixture_tasks(
  eval_step,
  params,
  config,
  make_task_batches,
  batch_sharding,
  num_batches: int,
  vocabulary: Vocabulary | None = None,
) -> dict[str, float]:
  """For a Mixture, each component task's validation loss, accuracy and bits per byte, as
  {'<task>/loss': ...}, so a user sees which domain improves; {} for a single Task.

  `make_task_batches(name)` returns a fresh iterator over task `name`'s validation split.
  """
  tasks, _ = pipeline.resolve_tasks(config, "validation")
  if len(tasks) < 2:
    return {}
  kept = ("loss", "accuracy", "bits_per_byte", "bits_per_character")
  results = {}
  for task in tasks:
    scores = evaluate(
      eval_step, params, config, functools.partial(make_task_batches, task.name),
      batch_sharding, num_batches, vocabulary,
    )  # fmt: skip
    results.update({f"{task.name}/{k}": v for k, v in scores.items() if k in kept})
  return results


def with_eval_task(config, name: str):
  """A copy of `config` that evaluates the task `name`."""
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    copy.data.eval_task = name
  return copy


# ---------------------------------------------------------------------------------------------
# The task's metric functions on predictions.


def task_metric_results(
  model, params, config, vocabulary, make_batches, num_batches: int, task_name: str
) -> dict[str, float]:
  """The task's metric functions (accuracy, F1, exact match, ROUGE-L, ...) on its predictions,
  as {'task/<name>': value, 'num_examples': n}; {} when the task has none. Also run by the
  training loop at every evaluation."""
  entry = pipeline.get_task(config, task_name)
  metric_fns = tuple(getattr(entry, "metric_fns", ()) or ())
  if not metric_fns:
    return {}
  pairs = _predictions(
    model, params, config, vocabulary, make_batches, num_batches, getattr(entry, "labels", None)
  )
  results = {}
  for fn in metric_fns:
    # 'task/' keeps them apart from the loop's metrics ('accuracy' is a token accuracy there).
    results.update({f"task/{k}": float(v) for k, v in fn(*pairs).items()})
  results["num_examples"] = len(pairs[0])
  return results


def _predictions(model, params, config, vocabulary, make_batches, num_batches, labels):
  """(targets, predictions) over the validation split (or its first `num_batches` batches)."""
  truth, predicted = [], []
  if config.model.head:
    for batch in capped(make_batches(), num_batches, "task metrics"):
      t, p = _classifier_pairs(model, params, batch, labels)
      truth += t
      predicted += p
    return truth, predicted
  # Generation needs one example per row: an unpacked pass over the same split.
  unpacked = host_validation_batches(
    config, vocabulary, model.feature_converter(False),
    num_shards=config.data.num_shards or 1, process_index=jax.process_index(),
    process_count=jax.process_count(),
  )  # fmt: skip
  lengths = dict(config.data.feature_lengths)
  max_new = int(lengths.get("targets", max(lengths.values())))
  for batch in capped(unpacked, num_batches, "task metrics"):
    t, p = _generation_pairs(model, params, batch, vocabulary, max_new)
    truth += t
    predicted += p
  return truth, predicted


def _classifier_pairs(model, params, batch, labels) -> tuple[list[str], list[str]]:
  """(target label names, predicted label names) at every classified position of `batch`."""
  log_probs = np.asarray(jax.device_get(_jitted(model, "classify")(params, batch)))
  weights = np.asarray(jax.device_get(batch["classification_loss_weights"])) > 0
  truth = np.asarray(jax.device_get(batch["classification_labels"]))[weights]
  predicted = log_probs.argmax(-1)[weights]
  name = (lambda i: labels[i]) if labels else str
  return [name(int(i)) for i in truth], [name(int(i)) for i in predicted]


@functools.cache
def _jitted(model, method: str):
  return jax.jit(getattr(model, method))


def _generation_pairs(model, params, batch, vocabulary, max_new_tokens: int):
  """(target texts, greedy predictions) of the examples of an unpacked batch."""
  eos = vocabulary.eos_id
  targets = np.asarray(batch["decoder_target_tokens"])
  weights = np.asarray(batch["decoder_loss_weights"]) > 0
  if model.encoder_decoder:
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
