"""Instruction / chat fine-tuning: conversations rendered with a template, loss on the assistant.

  instruction_task(name, train, validation=None, *, messages_field='messages',
                   template=CHATML, system_prompt=None)

Records are JSONL/CSV with a `messages` list of {'role': 'system'|'user'|'assistant',
'content': str}, or `instruction` + `response` fields (one user turn, one assistant turn). Each
conversation is rendered (ChatML-like by default):

  <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q}<|im_end|>\\n
  <|im_start|>assistant\\n{a}</s>

Each piece is encoded on its own, so `render_ids` at inference (`t5x-lite chat`) produces the
same ids as training. Loss weights are 1 on exactly the assistant content tokens and the EOS
that ends each assistant turn (so the model learns to stop), 0 on everything else; the decoder
converter packs whole conversations (segment ids keep them apart).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.registry import Feature, Task, TaskRegistry
from t5x_lite.data.sources import RecordSource
from t5x_lite.data.vocabularies import Vocabulary

ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """How a turn is written: `{start}{role}\\n{content}{end}`; the assistant turn ends with EOS."""

  start: str = "<|im_start|>"
  end: str = "<|im_end|>\n"
  system_prompt: str | None = None  # added when a conversation has no system turn

  def header(self, role: str) -> str:
    return f"{self.start}{role}\n"


CHATML = ChatTemplate()


def normalize_messages(record: Mapping[str, Any], messages_field: str = "messages") -> list[dict]:
  """The record's turns as [{'role', 'content'}]: `messages`, or `instruction` + `response`."""
  if messages_field in record:
    messages = record[messages_field]
    if isinstance(messages, str):
      messages = json.loads(messages)
  elif "instruction" in record and "response" in record:
    messages = [
      {"role": "user", "content": record["instruction"]},
      {"role": "assistant", "content": record["response"]},
    ]
  else:
    raise DataError(
      f"record {str(record)[:80]}: expected a {messages_field!r} list or instruction/response"
    )
  for turn in messages:
    if turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
      raise DataError(f"turn {str(turn)[:80]}: expected role in {ROLES} and a string content")
  return list(messages)


def render_ids(
  messages: Sequence[Mapping[str, str]],
  vocabulary: Vocabulary,
  template: ChatTemplate = CHATML,
  add_generation_prompt: bool = False,
) -> tuple[list[int], list[float]]:
  """(token ids, loss weights) of a conversation; with add_generation_prompt, ends with the
  assistant header (the prompt `t5x-lite chat` continues)."""
  ids: list[int] = []
  weights: list[float] = []

  def add(text: str, weight: float):
    piece = list(vocabulary.encode(text)) if text else []
    ids.extend(piece)
    weights.extend([weight] * len(piece))

  turns = list(messages)
  if template.system_prompt and not any(t["role"] == "system" for t in turns):
    turns.insert(0, {"role": "system", "content": template.system_prompt})
  for turn in turns:
    add(template.header(turn["role"]), 0.0)
    if turn["role"] == "assistant":
      add(turn["content"], 1.0)
      ids.append(vocabulary.eos_id)
      weights.append(1.0)
    else:
      add(turn["content"] + template.end, 0.0)
  if add_generation_prompt:
    add(template.header("assistant"), 0.0)
  return ids, weights


def conversations(
  examples: dict[str, Any],
  context: Context,
  *,
  template: ChatTemplate = CHATML,
  messages_field: str = "messages",
) -> dict[str, Any]:
  """Parsed records -> 'targets' (the rendered conversation) and 'target_weights'."""
  fields = [k for k in examples if k not in (KEY, "id")]
  count = len(examples[KEY])
  rows, weights = [], []
  for i in range(count):
    record = {k: examples[k][i] for k in fields}
    ids, w = render_ids(normalize_messages(record, messages_field), context.vocabulary, template)
    rows.append(ids)
    weights.append(w)
  lengths = np.array([len(r) for r in rows], np.int64)
  flat = lambda xs, dtype: (  # noqa: E731
    np.concatenate([np.asarray(x, dtype) for x in xs]) if xs else np.zeros(0, dtype)
  )
  return {
    "targets": Ragged(flat(rows, np.int32), lengths),
    "target_weights": Ragged(flat(weights, np.float32), lengths),
    KEY: examples[KEY],
  }


def parse_json_records(examples: dict[str, Any], context: Context) -> dict[str, Any]:
  """The JSON document texts -> one list column per field present in any record."""
  del context
  records = [json.loads(t) for t in examples["text"]]
  names = sorted({name for r in records for name in r})
  out = {k: v for k, v in examples.items() if k != "text"}
  for name in names:
    out[name] = [r.get(name) for r in records]
  return out


def instruction_task(
  name: str,
  train: str | Sequence[str],
  validation: str | Sequence[str] | None = None,
  *,
  messages_field: str = "messages",
  template: ChatTemplate = CHATML,
  system_prompt: str | None = None,
  fields: Sequence[str] | None = None,
) -> Task:
  """Registers a chat / instruction task for a decoder (see module docstring) and returns it."""
  if system_prompt is not None:
    template = dataclasses.replace(template, system_prompt=system_prompt)
  source = RecordSource(
    train, validation, fields=list(fields or (messages_field,)), validation_fraction=0.1
  )
  return TaskRegistry.add(Task(
    name,
    source=source,
    preprocessors=[
      parse_json_records,
      functools.partial(conversations, template=template, messages_field=messages_field),
    ],
    output_features={"targets": Feature(add_eos=False)},
  ), replace=True)  # fmt: skip
