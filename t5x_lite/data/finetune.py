"""Fine-tuning data: JSONL/CSV records with named fields -> classification, tagging, text-to-text.

A `RecordSource` reads records (JSON lines or CSV with a header row) and keeps the fields a
task names; each document's text is the JSON of those fields, so records travel through the
ordinary pipeline (shuffling, sharding, checkpointable state) and `parse_records` turns them
back into columns. Splits come from separate files (`validation=`) or from the id hash.

Tasks (helpers register them; call them from a registry file named in data.task_modules):

  classification_task(name, train, validation, labels=[...], text_field=, label_field=,
                      text_b_field=, family='encoder' | 'decoder')
  token_classification_task(name, train, validation, labels=[...], tokens_field=, tags_field=)
  text_to_text_task(name, train, validation, input_field=, target_field=, prefix='summarize: ',
                    family='encoder_decoder' | 'decoder')

Classification models read `ClassificationFeatureConverter` features (models/classifiers.py).
Text-to-text uses the family's own converter: T5 gets inputs -> targets; the decoder gets
prompt + completion with loss on the completion only (the prefix-LM layout).
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.feature_converters import FeatureConverter, _trim, _Writer, assign_rows
from t5x_lite.data.preprocessors import KEY, Ragged, concat_rows, constant_rows
from t5x_lite.data.registry import Feature, Task, TaskRegistry
from t5x_lite.data.sources import DocumentSource, _open_text, _Split, expand_patterns

# ---------------------------------------------------------------------------------------------
# Source.


def read_records(path: str, fields: Sequence[str]) -> list[dict[str, Any]]:
  """The records of one .jsonl / .csv file (gzip allowed), keeping `fields`; errors name the line."""
  is_csv = path.removesuffix(".gz").endswith((".csv", ".tsv"))
  records = []
  with _open_text(path) as f:
    if is_csv:
      delimiter = "\t" if path.removesuffix(".gz").endswith(".tsv") else ","
      rows = enumerate(csv.DictReader(f, delimiter=delimiter), start=2)  # line 1 is the header
    else:
      rows = ((n, line) for n, line in enumerate(f, start=1) if line.strip())
    for line, row in rows:
      if not is_csv:
        try:
          row = json.loads(row)
        except json.JSONDecodeError as e:
          raise DataError(f"{path}:{line}: not valid JSON: {e}") from None
        if not isinstance(row, dict):
          raise DataError(f"{path}:{line}: expected a JSON object, found {type(row).__name__}")
      missing = [name for name in fields if name not in row or row[name] is None]
      if missing:
        raise DataError(
          f"{path}:{line}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})"
        )
      records.append({name: row[name] for name in fields})
  return records


class RecordSource(DocumentSource):
  """JSONL/CSV records; a document is {'id', 'text': JSON of the kept fields}.

  `train`, `validation`: file patterns. Without `validation` files, a hash of each record's id
  (`id_field`, else file:line) sends `validation_fraction` of the records to validation.
  """

  def __init__(
    self,
    train: str | Sequence[str],
    validation: str | Sequence[str] | None = None,
    *,
    fields: Sequence[str],
    id_field: str | None = None,
    validation_fraction: float = 0.1,
  ):
    super().__init__(validation_fraction)
    self.train_patterns, self.validation_patterns = train, validation
    self.fields = tuple(fields) + ((id_field,) if id_field and id_field not in fields else ())
    self.id_field = id_field
    self._docs: dict[str, list[dict[str, str]]] | None = None

  def _load_files(self, patterns) -> list[dict[str, str]]:
    docs = []
    for path in expand_patterns(patterns):
      for n, record in enumerate(read_records(path, self.fields)):
        doc_id = str(record[self.id_field]) if self.id_field else f"{path}:{n}"
        docs.append({"id": doc_id, "text": json.dumps(record)})
    return docs

  def _load(self) -> dict[str, list[dict[str, str]]]:
    if self._docs is None:
      self._docs = {"train": self._load_files(self.train_patterns)}
      if self.validation_patterns:
        self._docs["validation"] = self._load_files(self.validation_patterns)
    return self._docs

  def _ids(self) -> list[str]:
    return [d["id"] for d in self._load()["train"]]

  def _read(self, index: int) -> dict[str, str]:
    return self._load()["train"][index]

  def split(self, name: str) -> _Split:
    if not self.validation_patterns:
      return super().split(name)
    if name not in self.splits:
      raise ValueError(f"{self!r} has no split {name!r}; splits: {', '.join(self.splits)}")
    docs = self._load()[name]
    if not docs:
      raise DataError(f"{self!r}: split {name!r} has no records")
    return _Split(docs.__getitem__, np.arange(len(docs)), f"{self!r}[{name}]")

  def __repr__(self) -> str:
    return f"RecordSource({self.train_patterns!r}, validation={self.validation_patterns!r})"


# ---------------------------------------------------------------------------------------------
# Preprocessors.


def parse_records(examples: dict[str, Any], context: pp.Context) -> dict[str, Any]:
  """The JSON document texts -> one list column per field."""
  del context
  records = [json.loads(t) for t in examples["text"]]
  out = {k: v for k, v in examples.items() if k != "text"}
  for name in records[0] if records else ():
    out[name] = [r[name] for r in records]
  return out


def _encode(context: pp.Context, texts: Sequence[Any]) -> Ragged:
  values, lengths = context.vocabulary.encode_batch([str(t) for t in texts])
  return Ragged(np.asarray(values, np.int32), np.asarray(lengths, np.int64))


def label_ids(values: Sequence[Any], labels: Sequence[str], where: str) -> np.ndarray:
  """Label strings -> ids (index in `labels`); an unseen label is a DataError naming it."""
  index = {str(label): i for i, label in enumerate(labels)}
  out = np.empty(len(values), np.int32)
  for i, value in enumerate(values):
    key = str(value)
    if key not in index:
      raise DataError(
        f"{where}: label {key!r} is not one of the task's labels {list(map(str, labels))}"
      )
    out[i] = index[key]
  return out


def classification(
  examples: dict[str, Any],
  context: pp.Context,
  *,
  labels: Sequence[str],
  text_field: str = "text",
  label_field: str = "label",
  text_b_field: str | None = None,
  cls_sep: bool = True,
) -> dict[str, Any]:
  """inputs = [CLS] text [SEP] (text_b [SEP]) with token types (cls_sep, BERT) or text + EOS
  (GPT: the last token is classified); 'label' = the label's index in `labels`."""
  vocabulary = context.vocabulary
  length = context.length("inputs", "classification")
  text = _encode(context, examples[text_field])
  rows = len(text)
  label = label_ids(examples[label_field], labels, f"classification field {label_field!r}")
  if cls_sep:
    # Leave room for the special tokens: cut the text(s), never the [SEP] that ends them.
    if text_b_field:
      text_b = _encode(context, examples[text_b_field])
      budget = length - 3
      a_len = np.minimum(
        text.lengths, np.maximum(budget - np.minimum(text_b.lengths, budget // 2), 0)
      )
      text = _trim_rows(text, a_len)
      text_b = _trim_rows(text_b, np.maximum(budget - a_len, 0))
    else:
      text = _trim_rows(text, np.full(rows, length - 2))
    cls_, sep = constant_rows(vocabulary.cls_id, rows), constant_rows(vocabulary.sep_id, rows)
    parts = [cls_, text, sep] + ([text_b, sep] if text_b_field else [])
    inputs = concat_rows(parts)
    zeros = text.lengths + 2
    ones = (text_b.lengths + 1) if text_b_field else np.zeros(rows, np.int64)
    type_values = np.concatenate(
      [np.repeat([0, 1], [z, o]) for z, o in zip(zeros.tolist(), ones.tolist())] or [[]]
    ).astype(np.int32)
    out = {"inputs": inputs, "token_type_ids": Ragged(type_values, inputs.lengths)}
  else:
    text = _trim_rows(text, np.full(rows, length - 1))
    out = {"inputs": concat_rows([text, constant_rows(vocabulary.eos_id, rows)])}
  out.update({"label": label, KEY: examples[KEY]})
  return out


def _trim_rows(column: Ragged, limits: np.ndarray) -> Ragged:
  """Row i cut to its first limits[i] tokens."""
  keep = pp.positions_in_rows(column.lengths) < np.repeat(limits, column.lengths)
  return Ragged(column.values[keep], np.minimum(column.lengths, limits).astype(np.int64))


def token_classification(
  examples: dict[str, Any],
  context: pp.Context,
  *,
  labels: Sequence[str],
  tokens_field: str = "tokens",
  tags_field: str = "tags",
) -> dict[str, Any]:
  """Words + one tag per word -> [CLS] subwords [SEP]; a word's tag sits on its first subword
  ('tag_weights' 1 there, 0 on the rest and on [CLS]/[SEP])."""
  vocabulary = context.vocabulary
  length = context.length("inputs", "token_classification")
  token_rows, tag_rows, weight_rows = [], [], []
  for n, (words, tags) in enumerate(zip(examples[tokens_field], examples[tags_field])):
    if len(words) != len(tags):
      raise DataError(
        f"token_classification: record {n} has {len(words)} {tokens_field!r} but "
        f"{len(tags)} {tags_field!r}"
      )
    ids = label_ids(tags, labels, f"token_classification field {tags_field!r}")
    tokens, tag_ids, weights = [vocabulary.cls_id], [0], [0.0]
    for word, tag in zip(words, ids.tolist()):
      pieces = vocabulary.encode(str(word)) or [vocabulary.unk_id]
      tokens += pieces
      tag_ids += [tag] + [0] * (len(pieces) - 1)
      weights += [1.0] + [0.0] * (len(pieces) - 1)
    cut = length - 1
    token_rows.append(tokens[:cut] + [vocabulary.sep_id])
    tag_rows.append(tag_ids[:cut] + [0])
    weight_rows.append(weights[:cut] + [0.0])
  inputs = Ragged.from_rows(token_rows)
  return {
    "inputs": inputs,
    "token_type_ids": Ragged(np.zeros(len(inputs.values), np.int32), inputs.lengths),
    "tag_ids": Ragged.from_rows(tag_rows),
    "tag_weights": Ragged.from_rows(weight_rows, np.float32),
    KEY: examples[KEY],
  }


def text_to_text(
  examples: dict[str, Any],
  context: pp.Context,
  *,
  input_field: str = "input",
  target_field: str = "target",
  prefix: str = "",
) -> dict[str, Any]:
  """inputs = tokens of prefix + input, targets = tokens of the target (EOS added after)."""
  inputs = _encode(context, [prefix + str(t) for t in examples[input_field]])
  targets = _encode(context, examples[target_field])
  return {"inputs": inputs, "targets": targets, KEY: examples[KEY]}


# ---------------------------------------------------------------------------------------------
# Feature converter of the classification heads.


class ClassificationFeatureConverter(FeatureConverter):
  """Encoder: [CLS]-first rows, the label at each segment's first position (token labels: at
  each tagged token). Decoder: the LM features of the text, the label at its last token."""

  def __init__(self, family: str, head: str = "classification", pack: bool = True):
    super().__init__(pack)
    self.family, self.head = family, head

  def model_feature_lengths(self, task_feature_lengths):
    return {self.family: dict(task_feature_lengths)["inputs"]}

  def convert(self, examples, task_feature_lengths, shuffle_key=None):
    token_level = self.head == "token_classification"
    self._require(
      examples, ["inputs", "tag_ids", "tag_weights"] if token_level else ["inputs", "label"]
    )
    length = self.model_feature_lengths(task_feature_lengths)[self.family]
    inputs = _trim(examples["inputs"], length)
    row, offset, segment, rows = assign_rows(inputs.lengths[:, None], [length], self.pack)
    writer = _Writer(rows, length, row, offset[:, 0], inputs.lengths, segment)
    total = len(inputs.values)
    if token_level:
      labels = _trim(examples["tag_ids"], length).values
      weights = _trim(examples["tag_weights"], length).values.astype(np.float32)
    else:
      labels, weights = np.zeros(total, np.int32), np.zeros(total, np.float32)
      nonempty = inputs.lengths > 0
      # BERT reads [CLS] (a segment's first token); GPT its last token (it has seen them all).
      where = inputs.offsets[:-1] if self.family == "encoder" else inputs.offsets[1:] - 1
      labels[where[nonempty]] = np.asarray(examples["label"])[nonempty]
      weights[where[nonempty]] = 1.0
    features = {
      "classification_labels": writer.write(labels),
      "classification_loss_weights": writer.write(weights, np.float32),
    }
    if self.family == "encoder":
      types = examples.get("token_type_ids")
      type_values = _trim(types, length).values if types is not None else np.zeros(total, np.int32)
      features.update(
        encoder_input_tokens=writer.write(inputs.values),
        encoder_segment_ids=writer.segment_ids(),
        encoder_positions=writer.positions(),
        encoder_token_type_ids=writer.write(type_values),
      )
    else:
      features.update(
        decoder_target_tokens=writer.write(inputs.values),
        decoder_input_tokens=writer.shifted_right(inputs.values),
        decoder_loss_weights=writer.write(np.ones(total, np.float32), np.float32),
        decoder_segment_ids=writer.segment_ids(),
        decoder_positions=writer.positions(),
      )
    return features


# ---------------------------------------------------------------------------------------------
# Task helpers.


def register(task: Task) -> Task:
  """Adds `task`, replacing a task of the same name (registry files may be re-imported)."""
  TaskRegistry.remove(task.name)
  return TaskRegistry.add(task)


def task_labels(task: Task) -> list[str] | None:
  """The label names of a classification / tagging task (from its preprocessor), or None."""
  for fn in task.preprocessors:
    if isinstance(fn, functools.partial) and "labels" in fn.keywords:
      return [str(label) for label in fn.keywords["labels"]]
  return None


def _metric_fns(*names: str):
  from t5x_lite import evaluation  # noqa: PLC0415

  return tuple(getattr(evaluation, name) for name in names)


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
    classification, labels=tuple(map(str, labels)), text_field=text_field,
    label_field=label_field, text_b_field=text_b_field, cls_sep=family == "encoder",
  )  # fmt: skip
  return register(
    Task(
      name,
      source=source,
      preprocessors=[parse_records, preprocess],
      output_features={"inputs": Feature(add_eos=False)},
      metric_fns=_metric_fns("accuracy", "f1_macro"),
    )
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
    token_classification, labels=tuple(map(str, labels)), tokens_field=tokens_field,
    tags_field=tags_field,
  )  # fmt: skip
  return register(
    Task(
      name,
      source=source,
      preprocessors=[parse_records, preprocess],
      output_features={"inputs": Feature(add_eos=False)},
      metric_fns=_metric_fns("accuracy", "f1_macro"),
    )
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
    text_to_text, input_field=input_field, target_field=target_field, prefix=prefix
  )
  # T5 ends its inputs with EOS; a decoder prompt runs straight into the completion.
  inputs_eos = family == "encoder_decoder"
  return register(
    Task(
      name,
      source=source,
      preprocessors=[parse_records, preprocess, pp.append_eos],
      output_features={"inputs": Feature(add_eos=inputs_eos), "targets": Feature(add_eos=True)},
      metric_fns=_metric_fns("exact_match", "rouge_l"),
    )
  )


def pretrained_vocab_path(workdir: str) -> str:
  """The SentencePiece model a run trained (workdir/vocab/*.model): fine-tuning from that run
  must set `data.vocab_path` to it, so that token ids mean the same thing."""
  directory = os.path.join(workdir, "vocab")
  models = (
    sorted(f for f in os.listdir(directory) if f.endswith(".model"))
    if os.path.isdir(directory)
    else []
  )
  if len(models) != 1:
    raise DataError(f"{directory}: expected one SentencePiece .model, found {models}")
  return os.path.join(directory, models[0])
