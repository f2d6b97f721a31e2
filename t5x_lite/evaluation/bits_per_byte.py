"""Bits per byte and per character: losses comparable across vocabularies.

  bits per byte = Σ NLL (nats) / (ln 2 · UTF-8 bytes of the text the tokens cover)

A model that predicts the same text equally well has the same bits per byte whatever its
tokenizer, unlike loss per token (Gao et al. 2020, The Pile; lm-evaluation-harness's
`bits_per_byte`; Paloma).

What is counted, explicitly:
- the numerator is the summed NLL of every loss-weighted target token, EOS included: the
  training and evaluation loss count it, and predicting where a document ends is part of
  modelling the text;
- the denominator is the UTF-8 bytes of the text those tokens decode to, plus one byte per EOS:
  EOS stands for the separator a corpus file holds between documents (a newline), so for the
  byte vocabulary every scored token is exactly one byte and bits per byte = loss / ln 2
  exactly. Padding (id 0) and ids past the base vocabulary (sentinels, padded embedding rows)
  stand for no text and count nothing. Each packed segment (`*_segment_ids`) is decoded on its
  own; for SentencePiece this is the normalised text (its normalisation, e.g. collapsed
  whitespace, is part of what the model sees). A segment cut from the middle of a document
  decodes without the space its first word-initial piece stands for (SentencePiece drops a
  leading space on decode): at most one byte per segment is not counted, i.e. bits per byte at
  most 1/(bytes per segment) too high (~0.2% for 128-token segments of English).
- characters are Unicode code points of the same text, EOS again counting one.

Module placement: moves to `evaluation/` after the restructure (it needs only a Vocabulary).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from t5x_lite.data.vocabularies import Vocabulary

LN2 = math.log(2.0)


def bits_per_byte(sum_nll_nats: float, num_bytes: int) -> float:
  """Σ NLL in nats over the text -> bits per UTF-8 byte of it (nan for no bytes)."""
  return float(sum_nll_nats) / (LN2 * num_bytes) if num_bytes else float("nan")


def bits_per_character(sum_nll_nats: float, num_characters: int) -> float:
  """Σ NLL in nats over the text -> bits per Unicode character of it (nan for none)."""
  return float(sum_nll_nats) / (LN2 * num_characters) if num_characters else float("nan")


@dataclasses.dataclass
class TextCount:
  """Loss-weighted target tokens of some batches and the text they cover."""

  tokens: float = 0.0  # Σ loss weights: the denominator of the mean loss
  bytes: int = 0
  characters: int = 0

  def __add__(self, other: TextCount) -> TextCount:
    return TextCount(
      self.tokens + other.tokens, self.bytes + other.bytes, self.characters + other.characters
    )

  def from_mean_loss(self, mean_loss: float) -> dict[str, float]:
    """{'bits_per_byte', 'bits_per_character'} from the token-weighted mean loss (nats) over
    exactly the batches counted: Σ NLL = mean_loss · tokens."""
    total = float(mean_loss) * self.tokens
    return {
      "bits_per_byte": bits_per_byte(total, self.bytes),
      "bits_per_character": bits_per_character(total, self.characters),
    }


def ids_to_text(ids: np.ndarray, vocabulary: Vocabulary) -> str:
  """The text a run of ids covers: padding, EOS and non-text ids (>= base vocabulary) dropped."""
  ids = np.asarray(ids)
  keep = (
    (ids != vocabulary.pad_id) & (ids != vocabulary.eos_id) & (ids < vocabulary.base_vocab_size)
  )
  return vocabulary.decode(ids[keep].tolist())


def count_target_text(
  batch: Mapping[str, np.ndarray], vocabulary: Vocabulary, *, prefix: str = "decoder"
) -> TextCount:
  """TextCount of a batch's `{prefix}_target_tokens` [batch, length] where
  `{prefix}_loss_weights` > 0, segment by segment (`{prefix}_segment_ids`; a whole row when the
  batch is not packed)."""
  targets = np.asarray(batch[f"{prefix}_target_tokens"])
  weights = np.asarray(batch[f"{prefix}_loss_weights"])
  segments = batch.get(f"{prefix}_segment_ids")
  segments = np.asarray(segments) if segments is not None else (targets > 0).astype(np.int32)
  count = TextCount(tokens=float(weights.sum()))
  for row in range(targets.shape[0]):
    scored = weights[row] > 0
    for segment in np.unique(segments[row][scored]):
      ids = targets[row][scored & (segments[row] == segment)]
      text = ids_to_text(ids, vocabulary)
      separators = int(np.sum(ids == vocabulary.eos_id))
      count.bytes += len(text.encode("utf-8")) + separators
      count.characters += len(text) + separators
  return count
