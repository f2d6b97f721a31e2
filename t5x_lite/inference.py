"""Python inference API: `t5x_lite.load(workdir)` -> a model with generate / score / embed / classify.

  m = t5x_lite.load("runs/t5_tiny")                 # latest checkpoint (or step=N)
  m.generate(["summarize: ..."], num_beams=4)       # decoder and encoder-decoder
  m.score(["a prompt"], ["its completion"])         # [n] log p(completion | prompt)
  m.embed(["a sentence"], pooling="mean")           # [n, d_model] (encoders; 'cls' for [CLS])
  m.classify(["a sentence"])                        # [{'label', 'probabilities'}] (heads)

The model, mesh and params come from one `RunSetup` (params restored sharded on the run's mesh
over the available devices). Inputs take training's data path: texts are framed by the task
preprocessors (`preprocessors.classification`) or the family (`model.frame_text`: [CLS] text
[SEP] for encoders, text + EOS otherwise), and the model's own feature converter (unpacked)
makes the shifted decoder inputs, segment ids and positions. Batches are padded to the run's
feature length (one compile).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from t5x_lite import checkpoints, decoding
from t5x_lite.data import pipeline, preprocessors, registry
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.tasks.instruction import CHATML, render_ids
from t5x_lite.training.setup import RunSetup


class InferenceError(ValueError):
  """The request does not fit the model (wrong family, empty text, unknown option)."""


def check_generation_options(
  max_new_tokens: int, temperature: float, top_k: int, top_p: float, num_beams: int, alpha: float
) -> None:
  """InferenceError naming the first decoding option out of its range (the CLI's flag names)."""
  checks = [
    (max_new_tokens >= 1, f"--max-new-tokens {max_new_tokens}: expected >= 1"),
    (math.isfinite(temperature) and temperature >= 0,
     f"--temperature {temperature}: expected >= 0 (0 = greedy)"),
    (top_k >= 0, f"--top-k {top_k}: expected >= 0 (0 = no top-k filter)"),
    (0.0 < top_p <= 1.0, f"--top-p {top_p}: expected in (0, 1] (1 = no nucleus filter)"),
    (num_beams >= 1, f"--num-beams {num_beams}: expected >= 1 (1 = no beam search)"),
    (math.isfinite(alpha) and alpha >= 0, f"--alpha {alpha}: expected >= 0 (length penalty)"),
  ]  # fmt: skip
  for ok, message in checks:
    if not ok:
      raise InferenceError(message)


class LoadedModel:
  """A checkpoint's model, params (sharded on the run's mesh) and vocabulary."""

  def __init__(
    self,
    workdir: str,
    step: int | None = None,
    batch_size: int = 32,
    devices: Sequence[jax.Device] | None = None,
  ):
    checkpointer = checkpoints.open_existing(workdir)
    self.workdir = workdir
    self.step = checkpointer.check_step(step)
    self.config = checkpointer.restore_config(self.step)
    self.setup = RunSetup.create(self.config, devices)
    self.model = self.setup.model
    self.vocabulary = pipeline.get_vocabulary(self.config, workdir)
    self.params = self.setup.restore_params(checkpointer, self.step)
    self.batch_size = batch_size
    self.head = self.config.model.head
    lengths = {k: int(v) for k, v in self.config.data.feature_lengths.items()}
    self.input_length = lengths.get("inputs", max(lengths.values()))
    self.target_length = lengths.get("targets", max(lengths.values()))
    self.labels = self._labels() if self.head else None

  def _labels(self) -> list[str]:
    try:
      labels = getattr(pipeline.get_task(self.config, self.config.data.task), "labels", None)
    except registry.RegistryError:
      labels = None
    labels = list(labels) if labels is not None else None
    count = self.config.model.num_labels
    if labels is not None and len(labels) != count:
      raise InferenceError(
        f"task {self.config.data.task!r} has {len(labels)} labels {labels}, the model "
        f"has model.num_labels={count}"
      )
    return labels or [str(i) for i in range(count)]

  # --- helpers -------------------------------------------------------------------------------

  def _encode(self, texts: Sequence[str], what: str = "text") -> list[list[int]]:
    if isinstance(texts, str):
      texts = [texts]
    if not texts:
      raise InferenceError(f"no {what}s given")
    out = []
    for i, text in enumerate(texts):
      tokens = list(self.vocabulary.encode(text)) if text.strip() else []
      if not tokens:
        raise InferenceError(f"{what} {i} ({text!r}) is empty")
      out.append(tokens)
    return out

  def _context(self, lengths: dict[str, int]) -> preprocessors.Context:
    return preprocessors.Context(vocabulary=self.vocabulary, feature_lengths=lengths)

  def _classification_examples(self, texts: Sequence[str]) -> dict[str, Any]:
    """Task features of texts to classify, from the fine-tuning task's own preprocessor
    ([CLS] text [SEP] for BERT, text + EOS for GPT); the label is a placeholder."""
    self._encode(texts)  # one clear error for an empty text
    examples = {
      "text": list(texts),
      "label": [self.labels[0]] * len(texts),
      KEY: np.zeros(len(texts), np.uint64),
    }
    context = self._context({"inputs": self.input_length})
    return preprocessors.classification(
      examples, context, labels=self.labels, cls_sep=self.model.reads_cls
    )

  def _reading_examples(self, model, texts: Sequence[str]):
    """(task features, task feature lengths) of texts a (backbone) model reads whole, framed by
    its family: the encoder's inputs, or a decoder-only model's targets."""
    framed = Ragged.from_rows(self._framed(self._encode(texts)))
    keys = np.zeros(len(framed), np.uint64)
    length = self.input_length
    if model.encoder_decoder:
      empty = Ragged.from_rows([[] for _ in texts])
      return {"inputs": framed, "targets": empty, KEY: keys}, {"inputs": length, "targets": 1}
    if model.reads_cls:
      return {"inputs": framed, KEY: keys}, {"inputs": length}
    return {"targets": framed, KEY: keys}, {"targets": length}

  def _framed(self, rows: list[list[int]]) -> list[list[int]]:
    """Token rows as the family framed them in training, cut to the input length."""
    return [self.model.frame_text(t, self.vocabulary, self.input_length) for t in rows]

  def _features(self, examples: dict[str, Any], lengths: dict[str, int], model=None):
    """The model features of `examples` from the (given or loaded) model's converter, unpacked,
    in batches of `batch_size` rows (the last padded): yields (rows used, {feature: array})."""
    model = model or self.model
    features = model.feature_converter(pack=False).convert(examples, lengths)
    count = len(next(iter(features.values())))
    for start in range(0, count, self.batch_size):
      used = min(self.batch_size, count - start)
      batch = {}
      for name, value in features.items():
        padded = np.zeros((self.batch_size,) + value.shape[1:], value.dtype)
        padded[:used] = value[start : start + used]
        batch[name] = padded
      yield used, batch

  # --- the API -------------------------------------------------------------------------------

  def generate(
    self,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_beams: int = 1,
    alpha: float = decoding.DEFAULT_ALPHA,
    seed: int = 0,
  ) -> list[str]:
    """Continuations (decoder) or outputs (encoder-decoder) of `prompts`, as text."""
    if not self.model.generative:
      raise InferenceError(
        f"{self.workdir} holds an {'classifier' if self.head else 'encoder (BERT-style)'} "
        "model, which does not generate text; use `t5x-lite embed` or `predict`"
      )
    check_generation_options(max_new_tokens, temperature, top_k, top_p, num_beams, alpha)
    if isinstance(prompts, str):
      prompts = [prompts]
    try:
      return decoding.generate_text(
        self.model, self.params, self.vocabulary, list(prompts), max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams, alpha=alpha,
        seed=seed,
      )  # fmt: skip
    except ValueError as e:
      raise InferenceError(str(e)) from e

  def chat(
    self,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
  ) -> list[str]:
    """The assistant's next reply to each conversation ([{'role', 'content'}, ...]), rendered
    with the ChatML-like template of `data/tasks/instruction.py` (as `instruction_task` trains)."""
    if not self.model.generative or self.model.encoder_decoder:
      raise InferenceError(f"{self.workdir}: chat needs a decoder-only (GPT-style) model")
    template = dataclasses.replace(CHATML, system_prompt=system_prompt)
    prompts = [
      render_ids(turns, self.vocabulary, template, add_generation_prompt=True)[0]
      for turns in conversations
    ]
    eos = self.vocabulary.eos_id
    try:
      generated = decoding.generate_ids(
        self.model, self.params, prompts, max_new_tokens=max_new_tokens,
        temperature=temperature, seed=seed, eos_id=eos,
      )  # fmt: skip
    except ValueError as e:
      raise InferenceError(str(e)) from e
    return [self.vocabulary.decode(decoding.strip_after_eos(row, eos)) for row in generated]

  def score(self, inputs: Sequence[str], targets: Sequence[str] | None = None) -> np.ndarray:
    """[n] log-likelihoods: of each target given its input (decoder: prompt -> completion;
    encoder-decoder: input -> target), or of each text (decoder, targets=None).

    The scored sequence ends with its EOS token, as T5X's `score_batch` scores its targets: the
    result is log p(target + EOS | input), the probability that the model emits exactly this
    target and then stops (subtract nothing to compare with T5X; it is lower than the
    log-likelihood of the target's tokens alone by log p(EOS | input, target))."""
    if not self.model.generative:
      raise InferenceError("score needs a generative model (decoder or encoder-decoder)")
    if isinstance(inputs, str):
      inputs = [inputs]
    eos = self.vocabulary.eos_id
    if targets is None:
      if self.model.encoder_decoder:
        raise InferenceError("an encoder-decoder scores targets given inputs: pass targets")
      prompts, completions = [[] for _ in inputs], self._encode(inputs)
    else:
      if isinstance(targets, str):
        targets = [targets]
      if len(targets) != len(inputs):
        raise InferenceError(f"{len(inputs)} inputs but {len(targets)} targets")
      prompts, completions = self._encode(inputs, "input"), self._encode(targets, "target")
    # The text-to-text task's features (T5: inputs end with EOS; the decoder: prompt runs into
    # the completion, loss on the completion only), through the model's converter.
    completions = [c + [eos] for c in completions]
    if self.model.encoder_decoder:
      prompts = [p[: self.input_length - 1] + [eos] for p in prompts]
      lengths = {"inputs": self.input_length, "targets": self.target_length}
    else:
      length = self.config.model.max_length if self.config.model.position == "learned" else 0
      length = length or max(len(p) + len(c) for p, c in zip(prompts, completions))
      lengths = {"inputs": 0, "targets": length}  # the converter packs inputs + targets
    examples = {
      "inputs": Ragged.from_rows(prompts),
      "targets": Ragged.from_rows(completions),
      KEY: np.zeros(len(prompts), np.uint64),
    }
    scores = []
    for used, batch in self._features(examples, lengths):
      scores.append(np.asarray(_jit(self.model, "score")(self.params, batch))[:used])
    return np.concatenate(scores)

  def embed(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
    """[n, d_model] float32 sentence embeddings: the mean of the last hidden states over the
    text's tokens ('mean'), or the [CLS] state ('cls', encoders)."""
    if pooling not in ("mean", "cls"):
      raise InferenceError(f"pooling={pooling!r}: expected 'mean' or 'cls'")
    if pooling == "cls" and not self.model.reads_cls:
      raise InferenceError("pooling='cls' needs an encoder (BERT-style) model")
    reader = getattr(self.model, "backbone", self.model)  # a classifier's backbone reads
    examples, lengths = self._reading_examples(reader, texts)
    out = []
    for used, batch in self._features(examples, lengths, reader):
      hidden = np.asarray(_jit(self.model, "hidden_states")(self.params, batch))
      # Padding is told by the segment ids, not by id 0 (GPT-2's '!' is id 0).
      segments = batch.get("encoder_segment_ids", batch.get("decoder_segment_ids"))
      mask = (segments > 0).astype(np.float32)[..., None]
      if pooling == "cls":
        pooled = hidden[:, 0]
      else:
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
      out.append(pooled[:used])
    return np.concatenate(out).astype(np.float32)

  def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
    """[{'label': name, 'probabilities': {name: p}}] per text (sequence classifiers)."""
    if self.head != "classification":
      raise InferenceError(
        f"{self.workdir} has no classification head (model.head={self.head!r}); fine-tune "
        "with model.head='classification' first"
      )
    examples = self._classification_examples(texts)
    results = []
    for used, batch in self._features(examples, {"inputs": self.input_length}):
      log_probs = np.asarray(_jit(self.model, "classify")(self.params, batch))
      # The classified position of each row: where the converter put its label's weight.
      index = np.argmax(batch["classification_loss_weights"], axis=1)
      probs = np.exp(log_probs[np.arange(len(index)), index])[:used]
      for p in probs:
        results.append(
          {
            "label": self.labels[int(p.argmax())],
            "probabilities": {name: float(v) for name, v in zip(self.labels, p)},
          }
        )
    return results


@functools.cache
def _jit(owner, method: str):
  return jax.jit(getattr(owner, method))


def load(
  workdir: str,
  step: int | None = None,
  batch_size: int = 32,
  devices: Sequence[jax.Device] | None = None,
) -> LoadedModel:
  """The model of a run's checkpoint (latest, or `step`), ready for inference, on the run's
  mesh over `devices` (default: all)."""
  return LoadedModel(workdir, step=step, batch_size=batch_size, devices=devices)
