"""A few-shot evaluation harness on local JSONL, with lm-evaluation-harness's definitions.

Tasks are described in a YAML file (paths relative to it):

  tasks:
    - name: capitals                 # reported as capitals/acc, capitals/acc_norm, ...
      type: multiple_choice          # or generate_until
      data: capitals.jsonl           # the documents evaluated
      fewshot_data: capitals_train.jsonl   # shots drawn from here ('' = `data`, minus the doc)
      num_fewshot: 2
      seed: 1234                     # shot selection (lm-eval's default fewshot seed)
      doc_to_text: "Q: What is the capital of {country}?\\nA:"   # str.format over the doc
      doc_to_choice: choices         # MC: the field holding the list of choices
      doc_to_target: label           # MC: index of the gold choice; generative: the answer
                                     # field (a string or a list of acceptable strings)
      target_delimiter: " "          # between the question and its answer
      fewshot_delimiter: "\\n\\n"    # after each shot
      description: ""                # text before the shots (followed by fewshot_delimiter)
      until: ["\\n"]                 # generate_until: stop strings
      max_new_tokens: 32
      limit: 0                       # evaluate the first N documents (0 = all)

Prompts are built as lm-eval builds them (ConfigurableTask.fewshot_context without a chat
template): [description + fewshot_delimiter] + Σ_shots (text + target_delimiter + answer +
fewshot_delimiter) + text; the continuation of a choice is target_delimiter + choice. Shots:
`random.Random(seed).sample(pool, k)` per document in order, one generator per task; when shots
come from the evaluated file, k + 1 are drawn and the document itself removed (lm-eval's
ContextSampler).

Metrics (lm-eval's `process_results`):
  multiple_choice  acc       = [argmax_i ll_i == gold]
                   acc_norm  = [argmax_i ll_i / len(choice_i) == gold]  (characters of the
                               choice, not the delimiter: lm-eval's `completion_len`)
                   acc_bytes = [argmax_i ll_i / len(choice_i.encode('utf-8')) == gold]
  generate_until   exact_match and f1 after SQuAD normalisation (lower case, no punctuation,
                   no articles a/an/the, single spaces), best over the acceptable answers.

A model is anything with
  loglikelihood([(context, continuation)]) -> [(log p(continuation | context), is_greedy)]
  generate_until([(context, stop_strings, max_new_tokens)]) -> [text]
`ModelLM` adapts a decoder model and its params (`ModelLM.from_loaded(t5x_lite.load(workdir))`);
`t5x_lite/evaluation/lm_eval_adapter.py` lets lm-evaluation-harness itself evaluate a run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import re
import string
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from t5x_lite import decoding, inference
from t5x_lite.models import decoder
from t5x_lite.models.base import cross_entropy_with_logits


class HarnessError(ValueError):
  """A task file, a data file or a document does not fit the harness."""


class LanguageModel(Protocol):
  def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]: ...

  def generate_until(self, requests: Sequence[tuple[str, Sequence[str], int]]) -> list[str]: ...


# ---------------------------------------------------------------------------------------------
# Task files.

TASK_TYPES = ("multiple_choice", "generate_until")


@dataclasses.dataclass
class TaskSpec:
  name: str
  type: str
  data: str
  doc_to_text: str
  doc_to_target: str
  doc_to_choice: str = ""
  fewshot_data: str = ""
  num_fewshot: int = 0
  seed: int = 1234
  target_delimiter: str = " "
  fewshot_delimiter: str = "\n\n"
  description: str = ""
  until: tuple[str, ...] = ("\n\n",)
  max_new_tokens: int = 32
  limit: int = 0


def load_tasks(yaml_path: str) -> list[TaskSpec]:
  """The TaskSpecs of a YAML task file; data paths resolved relative to it."""
  if not os.path.exists(yaml_path):
    raise FileNotFoundError(f"harness task file {yaml_path} does not exist")
  with open(yaml_path, encoding="utf-8") as f:
    try:
      content = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise HarnessError(f"{yaml_path}: not valid YAML ({e})") from None
  if not isinstance(content, dict) or not isinstance(content.get("tasks"), list):
    raise HarnessError(f"{yaml_path}: expected a mapping with a 'tasks' list")
  here = os.path.dirname(os.path.abspath(yaml_path))
  fields = {f.name for f in dataclasses.fields(TaskSpec)}
  specs = []
  for i, entry in enumerate(content["tasks"]):
    where = f"{yaml_path}: tasks[{i}]"
    if not isinstance(entry, dict):
      raise HarnessError(f"{where}: expected a mapping, found {type(entry).__name__}")
    unknown = sorted(set(entry) - fields)
    if unknown:
      raise HarnessError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {sorted(fields)})")
    missing = [
      k for k in ("name", "type", "data", "doc_to_text", "doc_to_target") if k not in entry
    ]
    if missing:
      raise HarnessError(f"{where}: missing {', '.join(missing)}")
    spec = TaskSpec(**entry)
    if spec.type not in TASK_TYPES:
      raise HarnessError(f"{where}: type={spec.type!r}, expected one of {TASK_TYPES}")
    if spec.type == "multiple_choice" and not spec.doc_to_choice:
      raise HarnessError(f"{where}: a multiple_choice task needs doc_to_choice")
    spec.data = os.path.join(here, spec.data)
    spec.fewshot_data = os.path.join(here, spec.fewshot_data) if spec.fewshot_data else ""
    spec.until = tuple([spec.until] if isinstance(spec.until, str) else spec.until)
    specs.append(spec)
  return specs


def read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"harness data file {path} does not exist")
  docs = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          docs.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise HarnessError(f"{path}:{number}: not JSON ({e.msg})") from None
  if not docs:
    raise HarnessError(f"{path} has no documents")
  return docs


# ---------------------------------------------------------------------------------------------
# Prompts.


def doc_text(spec: TaskSpec, doc: dict[str, Any]) -> str:
  try:
    return spec.doc_to_text.format_map(doc)
  except KeyError as e:
    raise HarnessError(
      f"task {spec.name}: doc_to_text names field {e.args[0]!r}, the document has {sorted(doc)}"
    ) from None


def _field(spec: TaskSpec, doc: dict[str, Any], name: str) -> Any:
  if name not in doc:
    raise HarnessError(f"task {spec.name}: field {name!r} missing from document {doc}")
  return doc[name]


def doc_choices(spec: TaskSpec, doc: dict[str, Any]) -> list[str]:
  choices = _field(spec, doc, spec.doc_to_choice)
  if not isinstance(choices, list) or len(choices) < 2:
    raise HarnessError(f"task {spec.name}: {spec.doc_to_choice!r} must list 2+ choices: {doc}")
  return [str(c) for c in choices]


def doc_answers(spec: TaskSpec, doc: dict[str, Any]) -> list[str]:
  """Acceptable answers of a document (multiple choice: the gold choice)."""
  target = _field(spec, doc, spec.doc_to_target)
  if spec.type == "multiple_choice":
    choices = doc_choices(spec, doc)
    if not isinstance(target, int) or not 0 <= target < len(choices):
      raise HarnessError(
        f"task {spec.name}: {spec.doc_to_target}={target!r} is not a choice index "
        f"in [0, {len(choices)})"
      )
    return [choices[target]]
  return [str(t) for t in target] if isinstance(target, list) else [str(target)]


def fewshot_context(spec: TaskSpec, doc: dict[str, Any], shots: Sequence[dict[str, Any]]) -> str:
  """lm-eval's plain-text context: description, shots with answers, then the question."""
  parts = [spec.description + spec.fewshot_delimiter] if spec.description else []
  for shot in shots:
    parts.append(
      doc_text(spec, shot)
      + spec.target_delimiter
      + doc_answers(spec, shot)[0]
      + spec.fewshot_delimiter
    )
  parts.append(doc_text(spec, doc))
  return "".join(parts)


def contexts(spec: TaskSpec, docs: Sequence[dict[str, Any]]) -> list[str]:
  """Each document's context, shots drawn by one seeded generator in document order."""
  same_file = not spec.fewshot_data
  pool = list(docs) if same_file else read_jsonl(spec.fewshot_data)
  needed = spec.num_fewshot + (1 if same_file else 0)
  if spec.num_fewshot and len(pool) < needed:
    raise HarnessError(
      f"task {spec.name}: num_fewshot={spec.num_fewshot} needs {needed} documents to draw "
      f"shots from, found {len(pool)}"
    )
  rng = random.Random(spec.seed)
  out = []
  for doc in docs:
    shots: list[dict[str, Any]] = []
    if spec.num_fewshot:
      if same_file:  # as lm-eval's ContextSampler: draw k + 1, drop the document itself
        drawn = rng.sample(pool, spec.num_fewshot + 1)
        shots = [d for d in drawn if d != doc][: spec.num_fewshot]
      else:
        shots = rng.sample(pool, spec.num_fewshot)
    out.append(fewshot_context(spec, doc, shots))
  return out


# ---------------------------------------------------------------------------------------------
# Metrics.


def multiple_choice_metrics(
  loglikelihoods: Sequence[Sequence[float]], choices: Sequence[Sequence[str]], golds: Sequence[int]
) -> dict[str, float]:
  """Mean acc, acc_norm (by characters) and acc_bytes (by UTF-8 bytes), lm-eval's definitions."""
  acc, acc_norm, acc_bytes = [], [], []
  for lls, options, gold in zip(loglikelihoods, choices, golds):
    lls = np.asarray(lls, np.float64)
    characters = np.array([float(len(c)) for c in options])
    byte_lengths = np.array([float(len(c.encode("utf-8"))) for c in options])
    acc.append(float(np.argmax(lls) == gold))
    acc_norm.append(float(np.argmax(lls / characters) == gold))
    acc_bytes.append(float(np.argmax(lls / byte_lengths) == gold))
  return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)),
          "acc_bytes": float(np.mean(acc_bytes))}  # fmt: skip


def normalize_answer(text: str) -> str:
  """SQuAD v1.1's normalisation: lower case, drop punctuation and articles, fix whitespace."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match_score(prediction: str, answers: Sequence[str]) -> float:
  return float(max(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1_score(prediction: str, answers: Sequence[str]) -> float:
  """SQuAD token F1, best over the acceptable answers."""

  def f1(truth: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
      return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)

  return float(max(f1(a) for a in answers))


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
  """The text before the first stop string (lm-eval's `until`)."""
  for stop in stops:
    if stop:
      text = text.split(stop, 1)[0]
  return text


# ---------------------------------------------------------------------------------------------
# Evaluation.


def evaluate_task(model: LanguageModel, spec: TaskSpec) -> dict[str, float]:
  """The task's metrics: acc/acc_norm/acc_bytes or exact_match/f1, plus num_examples."""
  docs = read_jsonl(spec.data)
  if spec.limit:
    docs = docs[: spec.limit]
  prompts = contexts(spec, docs)
  if spec.type == "multiple_choice":
    options = [doc_choices(spec, d) for d in docs]
    golds = [_field(spec, d, spec.doc_to_target) for d in docs]
    for d in docs:
      doc_answers(spec, d)  # checks the gold index
    requests = [
      (prompt, spec.target_delimiter + choice)
      for prompt, choices in zip(prompts, options)
      for choice in choices
    ]
    results = model.loglikelihood(requests)
    lls, start = [], 0
    for choices in options:
      lls.append([ll for ll, _ in results[start : start + len(choices)]])
      start += len(choices)
    metrics = multiple_choice_metrics(lls, options, golds)
  else:
    outputs = model.generate_until([(p, spec.until, spec.max_new_tokens) for p in prompts])
    answers = [doc_answers(spec, d) for d in docs]
    predictions = [cut_at_stop(o, spec.until) for o in outputs]
    metrics = {
      "exact_match": float(
        np.mean([exact_match_score(p, a) for p, a in zip(predictions, answers)])
      ),
      "f1": float(np.mean([f1_score(p, a) for p, a in zip(predictions, answers)])),
    }
  return {**metrics, "num_examples": len(docs)}


def evaluate(model: LanguageModel, specs: Sequence[TaskSpec]) -> dict[str, float]:
  """{'<task>/<metric>': value} over every task."""
  results = {}
  for spec in specs:
    for name, value in evaluate_task(model, spec).items():
      results[f"{spec.name}/{name}"] = value
  return results


# ---------------------------------------------------------------------------------------------
# A t5x_lite run as a harness model.


class ModelLM:
  """`loglikelihood` / `generate_until` of a decoder-only model and its params.

  Built from a checkpoint with `ModelLM.from_loaded(t5x_lite.load(workdir))`, or inside the
  training loop from (model, params fetched to host, vocabulary) for a harness run at every
  evaluation.

  Pairs are tokenized as lm-eval's HF model does: trailing spaces of the context move to the
  continuation, the pair is encoded whole and the continuation is what follows the context's
  own encoding. Sequences longer than `max_length` keep their last tokens (the context is cut on
  the left). An empty context scores the continuation from the document start, which the model
  saw in training as a segment start (input id 0). Batches are padded to
  [batch_size, max_length], so one program is compiled.
  """

  def __init__(self, model, params, vocabulary, *, max_length: int, batch_size: int = 32):
    if not isinstance(model, decoder.DecoderModel):
      raise HarnessError(
        f"the harness scores decoder-only language models, found {type(model).__name__}"
      )
    self.model, self.params, self.vocabulary = model, params, vocabulary
    self.max_length, self.batch_size = int(max_length), int(batch_size)
    self._token_scores = jax.jit(self._token_scores_fn)

  @classmethod
  def from_loaded(cls, loaded: inference.LoadedModel) -> ModelLM:
    """The model of `t5x_lite.load(workdir)`; its window: learned positions, else the run's
    target length."""
    config = loaded.config.model
    length = int(config.max_length) if config.position == "learned" else 0
    return cls(
      loaded.model, loaded.params, loaded.vocabulary,
      max_length=length or int(loaded.target_length), batch_size=loaded.batch_size,
    )  # fmt: skip

  def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
      return [], list(self.vocabulary.encode(continuation))
    whole = list(self.vocabulary.encode(context + continuation))
    context_ids = list(self.vocabulary.encode(context))
    return context_ids, whole[len(context_ids) :]

  def _token_scores_fn(self, params, batch):
    """([batch, length] target log-probs, [batch, length] target == argmax)."""
    logits = self.model.apply_logits(params, batch)
    targets = batch["decoder_target_tokens"]
    _, _, log_prob = cross_entropy_with_logits(logits, targets)
    return log_prob, jnp.argmax(logits, axis=-1) == targets

  def score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(Σ log p(continuation ids | context ids), all greedy) per pair of id lists."""
    results = []
    n, length = self.batch_size, self.max_length
    for start in range(0, len(pairs), n):
      chunk = pairs[start : start + n]
      targets = np.zeros((n, length), np.int32)
      weights = np.zeros((n, length), np.float32)
      for i, (context, continuation) in enumerate(chunk):
        if not continuation:
          raise HarnessError("an empty continuation has no log-likelihood to score")
        row = (context + continuation)[-length:]
        targets[i, : len(row)] = row
        weights[i, len(row) - min(len(continuation), length) : len(row)] = 1.0
      inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
      segments = (targets > 0).astype(np.int32)  # one segment per row, 0 = padding
      positions = np.broadcast_to(np.arange(length, dtype=np.int32), targets.shape).copy()
      batch = {"decoder_input_tokens": inputs, "decoder_target_tokens": targets,
               "decoder_loss_weights": weights, "decoder_segment_ids": segments,
               "decoder_positions": positions}  # fmt: skip
      log_prob, greedy = jax.device_get(self._token_scores(self.params, batch))
      for i in range(len(chunk)):
        mask = weights[i] > 0
        results.append((float(log_prob[i][mask].sum()), bool(greedy[i][mask].all())))
    return results

  def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
    return self.score_tokens([self.encode_pair(c, x) for c, x in requests])

  def generate_until(self, requests: Sequence[tuple[str, Sequence[str], int]]) -> list[str]:
    """Greedy continuations, cut at the first stop string; grouped by max_new_tokens."""
    outputs: list[str] = [""] * len(requests)
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for i, (_, _, max_new_tokens) in enumerate(requests):
      groups[int(max_new_tokens)].append(i)
    for max_new_tokens, indices in groups.items():
      try:
        texts = decoding.generate_text(
          self.model, self.params, self.vocabulary, [requests[i][0] for i in indices],
          max_new_tokens=max_new_tokens, temperature=0.0,
        )  # fmt: skip
      except ValueError as e:  # an empty prompt, or one that encodes to no tokens
        raise HarnessError(f"generate_until: {e}") from e
      for i, text in zip(indices, texts):
        outputs[i] = cut_at_stop(text, requests[i][1])
    return outputs


def run_harness(
  workdir: str, yaml_path: str, step: int | None = None, *, write: bool = True
) -> dict[str, Any]:
  """Evaluates a run's checkpoint on the tasks of `yaml_path` (`t5x-lite eval --harness`).

  Writes workdir/eval/harness_step_<N>.json; returns {'step', '<task>/<metric>': value}.
  """
  specs = load_tasks(yaml_path)
  loaded = inference.load(workdir, step=step)
  results: dict[str, Any] = {"step": loaded.step, **evaluate(ModelLM.from_loaded(loaded), specs)}
  if write and jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"harness_step_{loaded.step}.json"), "w") as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return results
