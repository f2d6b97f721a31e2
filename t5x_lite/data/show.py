"""Text for `t5x-lite tasks list` and `t5x-lite tasks show NAME [-n 3]` (the CLI prints it).

`show_task` runs one block of the task through every stage and prints the first examples after
each preprocessor, decoded with sentinels (`<extra_id_k>`) and BERT specials visible, then the
model features of the first packed rows and the packing efficiency (fraction of non-padding
tokens) over a few batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from t5x_lite.data import pipeline, registry
from t5x_lite.data.feature_converters import (
  ClassificationFeatureConverter,
  DecoderFeatureConverter,
  EncDecFeatureConverter,
  EncoderFeatureConverter,
  FeatureConverter,
)
from t5x_lite.data.objectives import span_corruption_lengths
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.vocabularies import Vocabulary

_TEXT_LIMIT = 400
# Preprocessors (data/preprocessors.py) whose tasks train a classifier, by name.
CLASSIFICATION_PREPROCESSORS = ("classification", "token_classification")


def _function_name(fn: Any) -> str:
  inner = getattr(fn, "func", fn)
  name = getattr(inner, "__name__", repr(inner))
  keywords = getattr(fn, "keywords", None)
  if keywords:
    name += "(" + ", ".join(f"{k}={v!r}" for k, v in keywords.items()) + ")"
  return name


def list_tasks(task_modules: tuple[str, ...] = ()) -> str:
  """Registered tasks (source, preprocessors, features) and mixtures (rates)."""
  pipeline.import_tasks(task_modules)
  lines = ["Tasks:"]
  for name in registry.TaskRegistry.names():
    task = registry.TaskRegistry.get(name)
    steps = " -> ".join(_function_name(fn) for fn in task.preprocessors)
    features = ", ".join(task.output_features)
    lines.append(f"  {name:<28} {task.source!r}: {steps} => {features}")
  lines.append("Mixtures:")
  names = registry.MixtureRegistry.names()
  for name in names:
    mixture = registry.MixtureRegistry.get(name)
    rates = ", ".join(f"{t} {r:.3g}" for t, r in zip(mixture.tasks, mixture.normalized_rates()))
    lines.append(f"  {name:<28} {rates}")
  if not names:
    lines.append("  (none)")
  return "\n".join(lines)


def decode(vocabulary: Vocabulary, ids: np.ndarray, specials: Mapping[int, str]) -> str:
  """Text of `ids` with the ids in `specials` shown by name (e.g. [MASK]), padding dropped."""
  out, run = [], []
  for i in np.asarray(ids).tolist():
    if i in specials:
      if run:
        out.append(vocabulary.decode(run))
        run = []
      out.append(specials[i])
    elif i != vocabulary.pad_id:
      run.append(i)
  if run:
    out.append(vocabulary.decode(run))
  return "".join(out)


def _clip(text: str) -> str:
  text = text.replace("\n", "⏎")
  return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + f"… ({len(text)} chars)"


def _is_bert(task: registry.Task) -> bool:
  return "token_type_ids" in task.output_features


def _classification_preprocessor(task: registry.Task):
  """The task's `classification` / `token_classification` preprocessor, or None."""
  for fn in task.preprocessors:
    if getattr(getattr(fn, "func", fn), "__name__", "") in CLASSIFICATION_PREPROCESSORS:
      return fn
  return None


def default_converter(task: registry.Task, pack: bool = True) -> FeatureConverter:
  """The converter of the model a task is trained with: a classification task's is the
  classifier's (`ClassificationFeatureConverter`, encoder or decoder stack as the task frames
  its text: [CLS] ... [SEP] for the encoder, text + EOS for the decoder), never an LM's."""
  classify = _classification_preprocessor(task)
  if classify is not None:
    name = getattr(classify, "func", classify).__name__
    keywords = getattr(classify, "keywords", None) or {}
    stack = "encoder" if keywords.get("cls_sep", True) else "decoder"
    return ClassificationFeatureConverter(stack, name, pack=pack)
  if _is_bert(task):
    return EncoderFeatureConverter(pack)
  if "inputs" in task.output_features:
    return EncDecFeatureConverter(pack)
  return DecoderFeatureConverter(pack)


def task_feature_lengths(task: registry.Task, configured: Mapping[str, int]) -> dict[str, int]:
  """The configured lengths, completed with small defaults for features the task needs."""
  lengths = dict(configured)
  names = [_function_name(fn) for fn in task.preprocessors]
  if "inputs" in task.output_features and "inputs" not in lengths:
    lengths["inputs"] = 128
  if any(n.startswith("span_corruption") for n in names):
    lengths["targets"] = span_corruption_lengths(lengths["inputs"])[1]
  elif not _is_bert(task):
    lengths.setdefault("targets", 128)
  return {k: v for k, v in lengths.items() if k in task.output_features}


def _describe(examples: Mapping[str, Any], count: int, vocabulary, specials) -> list[str]:
  lines = []
  for i in range(count):
    lines.append(f"    [{i}]")
    for name, column in examples.items():
      if name == KEY:
        continue
      if isinstance(column, Ragged) and name not in ("inputs", "targets"):
        shown = np.array2string(column.row(i)[:24], max_line_width=200)
        lines.append(f"      {name}: {shown}{' …' if column.lengths[i] > 24 else ''}")
      elif isinstance(column, Ragged):
        row = column.row(i)
        lines.append(f"      {name} ({len(row)} ids): {_clip(decode(vocabulary, row, specials))}")
      elif isinstance(column, np.ndarray):
        lines.append(f"      {name}: {column[i]}")
      else:
        lines.append(f"      {name}: {_clip(str(column[i]))}")
  return lines


def show_task(
  name: str,
  config,
  vocabulary: Vocabulary | None = None,
  num_examples: int = 3,
  split: str = "train",
  feature_converter: FeatureConverter | None = None,
  efficiency_batches: int = 20,
  task_modules: tuple[str, ...] = (),
  workdir: str = "",
) -> str:
  """Examples of task `name` after every stage, the packed model features, packing efficiency.

  Without `vocabulary`, the run's vocabulary for `name` is used: `config.data.vocab_path`, the
  byte vocabulary, or the SentencePiece model `t5x-lite train` would use with data.task = name
  and that workdir: read from `workdir/vocab` when cached there, else trained in memory. Nothing
  is ever written (a `tasks show` is read-only).
  """
  modules = tuple(config.data.task_modules) + tuple(task_modules)
  pipeline.import_tasks(modules)
  if vocabulary is None:
    if not workdir:
      raise ValueError("show_task needs a vocabulary or a workdir to cache one in")
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.data.task = name
      config.data.task_modules = modules
    vocabulary = pipeline.get_vocabulary(config, workdir, save=False)
  tasks, rates = registry.tasks_of(name)
  lines = []
  for task, rate in zip(tasks, rates):
    converter = feature_converter or default_converter(task, bool(config.data.pack))
    lengths = task_feature_lengths(task, config.data.feature_lengths)
    specials = {vocabulary.eos_id: "</s>"}
    uses_specials = ("mlm", "nsp_pairs", "bart_denoise", *CLASSIFICATION_PREPROCESSORS)
    if any(_function_name(fn).startswith(uses_specials) for fn in task.preprocessors):
      specials = vocabulary.special_token_names()  # [CLS] [SEP] [MASK] by name
      specials.pop(vocabulary.pad_id)
    stream = pipeline.TaskStream(
      task, split, vocabulary, converter, lengths, seed=int(config.data.seed)
    )
    header = f"Task {task.name}" + (f" (rate {rate:.3g})" if len(tasks) > 1 else "")
    lines += [
      header,
      f"  source: {task.source!r}, split {split!r}",
      f"  feature lengths: {lengths}",
    ]
    for stage, examples in stream.examples(0, stages=True):
      count = min(num_examples, len(examples[KEY]))
      lines.append(f"  after {stage}: {len(examples[KEY])} examples in the first block")
      lines += _describe(examples, count, vocabulary, specials)
    block = stream.block(0)
    lines.append(f"  model features ({converter!r}), first rows of the first block:")
    for row in range(min(num_examples, len(next(iter(block.values()))))):
      lines.append(f"    [row {row}]")
      for feature, values in block.items():
        if feature.endswith("tokens"):
          lines.append(f"      {feature}: {_clip(decode(vocabulary, values[row], specials))}")
        else:
          shown = np.array2string(values[row][:24], max_line_width=200)
          lines.append(f"      {feature}: {shown}{' …' if values.shape[1] > 24 else ''}")
    iterator = pipeline.DataIterator([stream], [1.0], batch_size=8)
    used = total = 0
    for _ in range(efficiency_batches):
      batch = next(iterator)
      for feature, values in batch.items():
        if feature.endswith("segment_ids"):
          used += int((values > 0).sum())
          total += values.size
    lines.append(
      f"  packing efficiency: {used / total:.1%} non-padding tokens "
      f"({efficiency_batches} batches of 8)"
    )
  return "\n".join(lines)
