"""Generic preprocessors: vectorized functions from a block of examples to a block of examples.

Every preprocessor has the same explicit signature, `fn(examples, context, **params) -> examples`;
a task binds its params with `functools.partial(fn, ...)`. `examples` is a dict of columns over the
same rows (`ragged.py`): token features are `Ragged`, per-example scalars are 1-D arrays, and
`KEY` holds each example's random key (`keys.py`). Work is done across all examples of a block at
once with numpy, so Python never runs per token.

Pre-training objectives (span corruption, MLM, ...) are in `objectives.py`, as SeqIO keeps its
generic preprocessors apart from T5's objectives. The fine-tuning preprocessors here read records
(`sources.RecordSource`): `parse_records`, then `classification`, `token_classification` or
`text_to_text`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.keys import derive_keys
from t5x_lite.data.ragged import (
  KEY,
  Ragged,
  concat_rows,
  constant_rows,
  num_examples,
  positions_in_rows,
  take_examples,
  truncate_rows,
)
from t5x_lite.data.vocabularies import Vocabulary


@dataclasses.dataclass(frozen=True)
class Context:
  """What every preprocessor may read besides the examples."""

  vocabulary: Vocabulary
  feature_lengths: Mapping[str, int]  # task feature lengths, e.g. {'inputs': 512, 'targets': 114}
  output_features: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # name -> Feature

  def length(self, feature: str, preprocessor: str) -> int:
    if feature not in self.feature_lengths:
      raise DataError(
        f"{preprocessor} needs data.feature_lengths[{feature!r}]; found {dict(self.feature_lengths)}"
      )
    return int(self.feature_lengths[feature])


# ---------------------------------------------------------------------------------------------
# Basic preprocessors.


def tokenize(
  examples: dict[str, Any],
  context: Context,
  *,
  text_field: str = "text",
  output_field: str = "targets",
) -> dict[str, Any]:
  """Text -> token ids (no EOS) with the run's vocabulary."""
  values, lengths = context.vocabulary.encode_batch(examples[text_field])
  out = {k: v for k, v in examples.items() if k != text_field}
  out[output_field] = Ragged(values, lengths)
  return out


def append_eos(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
  """Appends EOS to each row of `fields` (default: the output features with add_eos=True)."""
  if fields is None:
    fields = [n for n, f in context.output_features.items() if f.add_eos and n in examples]
  out = dict(examples)
  for name in fields:
    column = examples[name]
    values = np.insert(column.values, column.offsets[1:], context.vocabulary.eos_id)
    out[name] = Ragged(values.astype(column.values.dtype), column.lengths + 1)
  return out


def trim(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
  """Cuts rows to the feature lengths (default: every Ragged column with a feature length)."""
  if fields is None:
    fields = [
      n for n in examples if isinstance(examples[n], Ragged) and n in context.feature_lengths
    ]
  out = dict(examples)
  for name in fields:
    column = examples[name]
    limit = context.length(name, "trim")
    keep = positions_in_rows(column.lengths) < limit
    out[name] = Ragged(column.values[keep], np.minimum(column.lengths, limit))
  return out


def rekey(
  examples: dict[str, Any], context: Context, *, mapping: Mapping[str, str]
) -> dict[str, Any]:
  """Renames columns: `mapping` is {new name: old name}; other columns are kept."""
  del context
  missing = [old for old in mapping.values() if old not in examples]
  if missing:
    raise DataError(f"rekey: no column {missing} (columns: {', '.join(examples)})")
  renamed = set(mapping.values())
  out = {k: v for k, v in examples.items() if k not in renamed}
  out.update({new: examples[old] for new, old in mapping.items()})
  return out


def filter_empty(
  examples: dict[str, Any], context: Context, *, fields: Sequence[str] = ("targets",)
) -> dict[str, Any]:
  """Drops examples where any of `fields` has no tokens."""
  del context
  keep = np.ones(num_examples(examples), bool)
  for name in fields:
    keep &= examples[name].lengths > 0
  return take_examples(examples, np.flatnonzero(keep))


def split_rows(examples: dict[str, Any], field: str, max_length: int) -> dict[str, Any]:
  """Cuts each row of `field` into pieces of at most `max_length` (one example per piece).

  Other Ragged columns are dropped; scalar columns are repeated; keys are derived per piece.
  """
  column = examples[field]
  pieces = -(-column.lengths // max_length)  # ceil
  parent = np.repeat(np.arange(len(column)), pieces)
  piece_index = positions_in_rows(pieces)
  lengths = np.minimum(column.lengths[parent] - piece_index * max_length, max_length)
  out = {
    name: value[parent]
    for name, value in examples.items()
    if isinstance(value, np.ndarray) and name != KEY
  }
  out[field] = Ragged(column.values, lengths.astype(np.int64))  # pieces are contiguous
  out[KEY] = derive_keys(examples[KEY][parent], piece_index)
  return out


# ---------------------------------------------------------------------------------------------
# Fine-tuning records -> task features.


def parse_records(examples: dict[str, Any], context: Context) -> dict[str, Any]:
  """The JSON document texts -> one list column per field."""
  del context
  records = [json.loads(t) for t in examples["text"]]
  out = {k: v for k, v in examples.items() if k != "text"}
  for name in records[0] if records else ():
    out[name] = [r[name] for r in records]
  return out


def encode_texts(context: Context, texts: Sequence[Any]) -> Ragged:
  """Texts (anything str() turns into text) -> token ids, no EOS."""
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
  context: Context,
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
  text = encode_texts(context, examples[text_field])
  rows = len(text)
  label = label_ids(examples[label_field], labels, f"classification field {label_field!r}")
  if cls_sep:
    # Leave room for the special tokens: cut the text(s), never the [SEP] that ends them.
    if text_b_field:
      text_b = encode_texts(context, examples[text_b_field])
      budget = length - 3
      a_len = np.minimum(
        text.lengths, np.maximum(budget - np.minimum(text_b.lengths, budget // 2), 0)
      )
      text = truncate_rows(text, a_len)
      text_b = truncate_rows(text_b, np.maximum(budget - a_len, 0))
    else:
      text = truncate_rows(text, np.full(rows, length - 2))
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
    text = truncate_rows(text, np.full(rows, length - 1))
    out = {"inputs": concat_rows([text, constant_rows(vocabulary.eos_id, rows)])}
  out.update({"label": label, KEY: examples[KEY]})
  return out


def token_classification(
  examples: dict[str, Any],
  context: Context,
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
  context: Context,
  *,
  input_field: str = "input",
  target_field: str = "target",
  prefix: str = "",
) -> dict[str, Any]:
  """inputs = tokens of prefix + input, targets = tokens of the target (EOS added after)."""
  inputs = encode_texts(context, [prefix + str(t) for t in examples[input_field]])
  targets = encode_texts(context, examples[target_field])
  return {"inputs": inputs, "targets": targets, KEY: examples[KEY]}
