"""Python inference API: `t5x_lite.load(workdir)` -> a model with generate / score / embed / classify.

  m = t5x_lite.load("runs/t5_tiny")                 # latest checkpoint (or step=N)
  m.generate(["summarize: ..."], num_beams=4)       # decoder and encoder-decoder
  m.score(["a prompt"], ["its completion"])         # [n] log p(completion | prompt)
  m.embed(["a sentence"], pooling="mean")           # [n, d_model] (encoders; 'cls' for [CLS])
  m.classify(["a sentence"])                        # [{'label', 'probabilities'}] (heads)

Inputs are framed as in training: encoders see [CLS] text [SEP], T5 inputs end with EOS, a GPT
classifier reads text + EOS. Batches are padded to the run's feature length (one compile).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite import decoding


class InferenceError(ValueError):
  """The request does not fit the model (wrong family, empty text, unknown option)."""


class LoadedModel:
  """A checkpoint's model, params (on one device) and vocabulary."""

  def __init__(self, workdir: str, step: int | None = None, batch_size: int = 32):
    from t5x_lite import checkpoints  # noqa: PLC0415
    from t5x_lite.data import pipeline  # noqa: PLC0415
    from t5x_lite.training import loop  # noqa: PLC0415

    checkpointer = checkpoints.open_existing(workdir)
    self.workdir = workdir
    self.step = checkpointer._check_step(step)
    self.config = checkpointer.restore_config(self.step)
    self.model = loop.build_model(self.config)
    self.vocabulary = pipeline.get_vocabulary(self.config, workdir)
    self.params = decoding.load_params(checkpointer, self.model, self.config, self.step)
    self.batch_size = batch_size
    self.family = self.config.model.family
    self.head = self.config.model.head
    lengths = {k: int(v) for k, v in self.config.data.feature_lengths.items()}
    self.input_length = lengths.get("inputs", max(lengths.values()))
    self.target_length = lengths.get("targets", max(lengths.values()))
    self.labels = self._labels() if self.head else None

  def _labels(self) -> list[str]:
    from t5x_lite.data import pipeline, registry  # noqa: PLC0415

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

  def _framed(self, texts: Sequence[str]) -> list[list[int]]:
    """Token rows as the encoder / classifier saw them in training, cut to the input length."""
    rows = self._encode(texts)
    v = self.vocabulary
    if self.family == "encoder":
      return [[v.cls_id] + t[: self.input_length - 2] + [v.sep_id] for t in rows]
    if self.family == "encoder_decoder":
      return [t[: self.input_length - 1] + [v.eos_id] for t in rows]
    return [t[: self.input_length - 1] + [v.eos_id] for t in rows]

  def _batches(self, rows: list[list[int]]):
    for start in range(0, len(rows), self.batch_size):
      chunk = rows[start : start + self.batch_size]
      tokens = np.zeros((self.batch_size, self.input_length), np.int32)
      for i, row in enumerate(chunk):
        tokens[i, : len(row)] = row
      yield len(chunk), tokens

  def _encoder_batch(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
    prefix = "encoder" if self.family in ("encoder", "encoder_decoder") else "decoder"
    segments = (tokens > 0).astype(np.int32)
    positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
    if prefix == "decoder":
      inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
      return {
        "decoder_input_tokens": inputs,
        "decoder_target_tokens": tokens,
        "decoder_loss_weights": segments.astype(np.float32),
        "decoder_segment_ids": segments,
        "decoder_positions": positions.copy(),
      }
    return {
      f"{prefix}_input_tokens": tokens,
      f"{prefix}_segment_ids": segments,
      f"{prefix}_positions": positions.copy(),
      f"{prefix}_token_type_ids": np.zeros_like(tokens),
    }

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
    if self.family == "encoder" or self.head:
      raise InferenceError(
        f"{self.workdir} holds an {'classifier' if self.head else 'encoder (BERT-style)'} "
        "model, which does not generate text; use `t5x-lite embed` or `predict`"
      )
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

  def score(self, inputs: Sequence[str], targets: Sequence[str] | None = None) -> np.ndarray:
    """[n] log-likelihoods: of each target given its input (decoder: prompt -> completion;
    encoder-decoder: input -> target), or of each text (decoder, targets=None; EOS included)."""
    if self.family == "encoder" or self.head:
      raise InferenceError("score needs a generative model (decoder or encoder-decoder)")
    if isinstance(inputs, str):
      inputs = [inputs]
    eos = self.vocabulary.eos_id
    if targets is None:
      if self.family == "encoder_decoder":
        raise InferenceError("an encoder-decoder scores targets given inputs: pass targets")
      prompts, completions = [[] for _ in inputs], self._encode(inputs)
    else:
      if isinstance(targets, str):
        targets = [targets]
      if len(targets) != len(inputs):
        raise InferenceError(f"{len(inputs)} inputs but {len(targets)} targets")
      prompts, completions = self._encode(inputs, "input"), self._encode(targets, "target")
    completions = [c + [eos] for c in completions]
    scores = []
    for start in range(0, len(inputs), self.batch_size):
      p, c = prompts[start : start + self.batch_size], completions[start : start + self.batch_size]
      scores.append(self._score_batch(p, c)[: len(p)])
    return np.concatenate(scores)

  def _score_batch(self, prompts, completions) -> np.ndarray:
    n = self.batch_size
    if self.family == "encoder_decoder":
      inputs = np.zeros((n, self.input_length), np.int32)
      targets = np.zeros((n, self.target_length), np.int32)
      for i, (p, c) in enumerate(zip(prompts, completions)):
        p = p[: self.input_length - 1] + [self.vocabulary.eos_id]
        inputs[i, : len(p)] = p
        targets[i, : min(len(c), self.target_length)] = c[: self.target_length]
      batch = {"encoder_input_tokens": inputs}
      weights = (targets > 0).astype(np.float32)
    else:
      length = self.config.model.max_length if self.config.model.position == "learned" else 0
      length = length or max(len(p) + len(c) for p, c in zip(prompts, completions))
      targets = np.zeros((n, length), np.int32)
      weights = np.zeros((n, length), np.float32)
      for i, (p, c) in enumerate(zip(prompts, completions)):
        row = (p + c)[:length]
        targets[i, : len(row)] = row
        weights[i, len(p) : len(row)] = 1.0
      batch = {}
    shifted = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    batch = batch if self.family == "encoder_decoder" else {}
    batch.update(
      decoder_target_tokens=targets, decoder_input_tokens=shifted, decoder_loss_weights=weights
    )
    return np.asarray(_jit(self.model, "score")(self.params, batch))

  def embed(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
    """[n, d_model] float32 sentence embeddings: the mean of the last hidden states over the
    text's tokens ('mean'), or the [CLS] state ('cls', encoders)."""
    if pooling not in ("mean", "cls"):
      raise InferenceError(f"pooling={pooling!r}: expected 'mean' or 'cls'")
    if pooling == "cls" and self.family != "encoder":
      raise InferenceError("pooling='cls' needs an encoder (BERT-style) model")
    rows = self._framed(texts)
    out = []
    for count, tokens in self._batches(rows):
      hidden = np.asarray(_jit(self, "_hidden")(self.params, self._encoder_batch(tokens)))
      mask = (tokens > 0).astype(np.float32)[..., None]
      if pooling == "cls":
        pooled = hidden[:, 0]
      else:
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
      out.append(pooled[:count])
    return np.concatenate(out).astype(np.float32)

  def _hidden(self, params, batch) -> jax.Array:
    """Last hidden states [batch, length, d_model] of the encoder (or the decoder stack)."""
    model = getattr(self.model, "backbone", self.model)
    if self.family == "encoder_decoder":
      return model.encode(params, batch)
    params = {k: v for k, v in params.items() if k != "classification_head"}
    stack = ("encoder",) if self.family == "encoder" else ("decoder",)
    _, state = model.module.apply(
      {"params": params},
      **model.module_inputs(batch),
      deterministic=True,
      capture_intermediates=lambda m, name: name == "__call__" and tuple(m.path) == stack,
      mutable=["intermediates"],
    )
    return state["intermediates"][stack[0]]["__call__"][0].astype(jnp.float32)

  def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
    """[{'label': name, 'probabilities': {name: p}}] per text (sequence classifiers)."""
    if self.head != "classification":
      raise InferenceError(
        f"{self.workdir} has no classification head (model.head={self.head!r}); fine-tune "
        "with model.head='classification' first"
      )
    rows = self._framed(texts)
    results = []
    for count, tokens in self._batches(rows):
      batch = self._encoder_batch(tokens)
      log_probs = np.asarray(_jit(self.model, "classify")(self.params, batch))
      lengths = (tokens > 0).sum(1)
      # [CLS] (encoder) or the last token (decoder) is the classified position.
      index = np.zeros_like(lengths) if self.family == "encoder" else lengths - 1
      probs = np.exp(log_probs[np.arange(len(tokens)), index])[:count]
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


def load(workdir: str, step: int | None = None, batch_size: int = 32) -> LoadedModel:
  """The model of a run's checkpoint (latest, or `step`), ready for inference."""
  return LoadedModel(workdir, step=step, batch_size=batch_size)
