"""Fine-tuning tasks on JSONL/CSV records: classification, tagging, text-to-text.

Each helper registers a `Task` (replacing one of the same name, so a registry file may be
imported again) and returns it; call them from a registry file named in `data.task_modules`:

  classification_task(name, train, validation, labels=[...], text_field=, label_field=,
                      text_b_field=, family='encoder' | 'decoder')
  token_classification_task(name, train, validation, labels=[...], tokens_field=, tags_field=)
  text_to_text_task(name, train, validation, input_field=, target_field=, prefix='summarize: ',
                    family='encoder_decoder' | 'decoder')

Classification models read `feature_converters.ClassificationFeatureConverter` features.
Text-to-text uses the family's own converter: T5 gets inputs -> targets; the decoder gets
prompt + completion with loss on the completion only (the prefix-LM layout). The task carries its
label names (`Task.labels`) and metric functions (`data/task_metrics.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from t5x_lite.data import DataError, preprocessors, task_metrics
from t5x_lite.data.registry import Feature, Task, TaskRegistry
from t5x_lite.data.sources import RecordSource


def classification_task(
  name: str,
  train: str | Sequence[str],
  validation: str | Sequence[str] | None = None,
  *,
  labels: Sequence[str],
  text_field: str = "text",
  label_field: str = "label",
  text_b_field: str | None = None,
  family: str = "encoder",
  id_field: str | None = None,
) -> Task:
  """Registers a sequence classification task on JSONL/CSV records (see module docstring)."""
  if len(set(map(str, labels))) != len(labels) or len(labels) < 2:
    raise DataError(f"Task {name!r}: labels={list(labels)}: expected 2 or more distinct labels")
  fields = [text_field, label_field] + ([text_b_field] if text_b_field else [])
  source = RecordSource(train, validation, fields=fields, id_field=id_field)
  preprocess = functools.partial(
    preprocessors.classification, labels=tuple(map(str, labels)), text_field=text_field,
    label_field=label_field, text_b_field=text_b_field, cls_sep=family == "encoder",
  )  # fmt: skip
  return TaskRegistry.add(
    Task(
      name,
      source=source,
      preprocessors=[preprocessors.parse_records, preprocess],
      output_features={"inputs": Feature(add_eos=False)},
      metric_fns=(task_metrics.accuracy, task_metrics.f1_macro),
      labels=tuple(map(str, labels)),
    ),
    replace=True,
  )


def token_classification_task(
  name: str,
  train: str | Sequence[str],
  validation: str | Sequence[str] | None = None,
  *,
  labels: Sequence[str],
  tokens_field: str = "tokens",
  tags_field: str = "tags",
  id_field: str | None = None,
) -> Task:
  """Registers an NER-style tagging task: records hold a word list and a tag list."""
  source = RecordSource(train, validation, fields=[tokens_field, tags_field], id_field=id_field)
  preprocess = functools.partial(
    preprocessors.token_classification, labels=tuple(map(str, labels)), tokens_field=tokens_field,
    tags_field=tags_field,
  )  # fmt: skip
  return TaskRegistry.add(
    Task(
      name,
      source=source,
      preprocessors=[preprocessors.parse_records, preprocess],
      output_features={"inputs": Feature(add_eos=False)},
      metric_fns=(task_metrics.accuracy, task_metrics.f1_macro),
      labels=tuple(map(str, labels)),
    ),
    replace=True,
  )


def text_to_text_task(
  name: str,
  train: str | Sequence[str],
  validation: str | Sequence[str] | None = None,
  *,
  input_field: str = "input",
  target_field: str = "target",
  prefix: str = "",
  family: str = "encoder_decoder",
  id_field: str | None = None,
) -> Task:
  """Registers a text-to-text task ('summarize: ' + input -> target) or, for the decoder,
  prompt -> completion with the loss on the completion only."""
  source = RecordSource(train, validation, fields=[input_field, target_field], id_field=id_field)
  preprocess = functools.partial(
    preprocessors.text_to_text, input_field=input_field, target_field=target_field, prefix=prefix
  )
  # T5 ends its inputs with EOS; a decoder prompt runs straight into the completion.
  inputs_eos = family == "encoder_decoder"
  return TaskRegistry.add(
    Task(
      name,
      source=source,
      preprocessors=[preprocessors.parse_records, preprocess, preprocessors.append_eos],
      output_features={"inputs": Feature(add_eos=inputs_eos), "targets": Feature(add_eos=True)},
      metric_fns=(task_metrics.exact_match, task_metrics.rouge_l),
    ),
    replace=True,
  )
