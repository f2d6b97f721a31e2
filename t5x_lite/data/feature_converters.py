"""Feature converters: task features (`inputs`, `targets`, ...) -> model features, with packing.

Each model family declares its converter (`model.feature_converter(pack)`). A converter turns a
block of examples into rows of fixed model lengths. Packing is greedy (first-fit decreasing over
the block): several examples share a row, told apart by segment ids from 1 (0 = padding), with
positions restarting at 0 in every segment. Decoder inputs are the targets shifted right with 0
at each segment start. All outputs are `[rows, length]` int32 numpy arrays (loss weights
float32); model feature names are those of docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.keys import uniform
from t5x_lite.data.ragged import KEY, Ragged, concat_rows, positions_in_rows, truncate


def assign_rows(
  lengths: np.ndarray, capacity: Sequence[int], pack: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Places examples into rows.

  lengths: [examples, channels] token counts (already at most `capacity`).
  Returns (row [examples], offset [examples, channels], segment id [examples], number of rows).
  Packing is first-fit decreasing on the largest relative length; examples that fill a channel
  completely get a row of their own without a search.
  """
  count, channels = lengths.shape
  if not pack:
    return np.arange(count), np.zeros_like(lengths), np.ones(count, np.int64), count
  capacity_array = np.asarray(capacity, np.int64)
  row = np.empty(count, np.int64)
  offset = np.zeros_like(lengths)
  segment = np.ones(count, np.int64)
  full = (lengths == capacity_array).any(axis=1)
  full_index = np.flatnonzero(full)
  row[full_index] = np.arange(len(full_index))
  num_rows = len(full_index)
  rest = np.flatnonzero(~full)
  size = (lengths[rest] / capacity_array).max(axis=1)
  order = rest[np.argsort(-size, kind="stable")]
  used: list[list[int]] = []  # per open row: tokens used per channel, segment count, row id
  for i in order.tolist():
    need = lengths[i].tolist()
    state = next(
      (s for s in used if all(s[c] + need[c] <= capacity[c] for c in range(channels))), None
    )
    if state is None:
      state = [0] * (channels + 1) + [num_rows + len(used)]
      used.append(state)
    offset[i] = state[:channels]
    for c in range(channels):
      state[c] += need[c]
    state[channels] += 1
    segment[i] = state[channels]
    row[i] = state[channels + 1]
  return row, offset, segment, num_rows + len(used)


class _Writer:
  """Scatters ragged example features into [rows, length] arrays of one channel."""

  def __init__(self, rows: int, length: int, row, offset, lengths, segment):
    self.rows, self.length = rows, length
    self.position = positions_in_rows(lengths)
    self.destination = np.repeat(row * length + offset, lengths) + self.position
    self.segment_values = np.repeat(segment, lengths)

  def write(self, values: np.ndarray, dtype=np.int32) -> np.ndarray:
    out = np.zeros(self.rows * self.length, dtype)
    out[self.destination] = values
    return out.reshape(self.rows, self.length)

  def segment_ids(self) -> np.ndarray:
    return self.write(self.segment_values)

  def positions(self) -> np.ndarray:
    return self.write(self.position)

  def shifted_right(self, values: np.ndarray, start_id: int = 0) -> np.ndarray:
    """Each token's predecessor in its own example; `start_id` at every segment start."""
    previous = np.concatenate([[0], values[:-1]]).astype(values.dtype)
    previous[self.position == 0] = start_id
    return self.write(previous)


def _shuffle_rows(features: dict[str, np.ndarray], key: int | None) -> dict[str, np.ndarray]:
  """A keyed permutation of the rows: chunks of one long document should not sit together."""
  rows = len(next(iter(features.values())))
  if key is None or rows < 2:
    return features
  order = np.argsort(uniform(np.array([key], np.uint64), rows, salt=11)[0], kind="stable")
  return {name: value[order] for name, value in features.items()}


class FeatureConverter:
  """Base: `convert(examples, task_feature_lengths) -> {model feature: [rows, length]}`."""

  def __init__(self, pack: bool = True, start_id: int = 0):
    self.pack = pack
    self.start_id = start_id  # the decoder start token (model.decoder_start_id)

  def model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    raise NotImplementedError

  def convert(
    self,
    examples: Mapping[str, Any],
    task_feature_lengths: Mapping[str, int],
    shuffle_key: int | None = None,
  ) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def _require(self, examples: Mapping[str, Any], names: Sequence[str]) -> None:
    missing = [n for n in names if n not in examples]
    if missing:
      raise DataError(
        f"{type(self).__name__} needs task features {missing}; the task produced "
        f"{[n for n in examples if n != KEY]}"
      )

  def __repr__(self) -> str:
    return f"{type(self).__name__}(pack={self.pack})"


class DecoderFeatureConverter(FeatureConverter):
  """GPT (causal LM) and decoder-only prefix LM.

  With task feature 'inputs', each sequence is inputs + targets and the inputs get loss weight 0
  (prefix LM); the model length is then inputs_length + targets_length. A prefix LM also gets
  SeqIO's `decoder_causal_attention`: 1 on the inputs' positions + 1 (the position that reads
  the last input token and predicts the first target), where the model attends bidirectionally
  (T5X `make_decoder_mask`).
  """

  def model_feature_lengths(self, task_feature_lengths):
    lengths = dict(task_feature_lengths)
    return {"decoder": lengths.get("inputs", 0) + lengths["targets"]}

  def convert(self, examples, task_feature_lengths, shuffle_key=None):
    self._require(examples, ["targets"])
    length = self.model_feature_lengths(task_feature_lengths)["decoder"]
    targets = examples["targets"]
    weights = Ragged(np.ones(len(targets.values), np.float32), targets.lengths)
    prefix = None
    if "target_weights" in examples:  # per-token weights (chat: the assistant turns only)
      weights = examples["target_weights"]
    if "inputs" in examples and "inputs" in task_feature_lengths:
      inputs = examples["inputs"]
      tokens = concat_rows([inputs, targets])
      weights = concat_rows(
        [Ragged(np.zeros(len(inputs.values), np.float32), inputs.lengths), weights]
      )
      first_target = np.zeros(len(targets.values), np.int32)
      first_target[targets.offsets[:-1][targets.lengths > 0]] = 1
      prefix = concat_rows(
        [
          Ragged(np.ones(len(inputs.values), np.int32), inputs.lengths),
          Ragged(first_target, targets.lengths),
        ]
      )
      prefix = truncate(prefix, length)
    else:
      tokens = targets
    tokens, weights = truncate(tokens, length), truncate(weights, length)
    row, offset, segment, rows = assign_rows(tokens.lengths[:, None], [length], self.pack)
    writer = _Writer(rows, length, row, offset[:, 0], tokens.lengths, segment)
    features = {
      "decoder_target_tokens": writer.write(tokens.values),
      "decoder_input_tokens": writer.shifted_right(tokens.values, self.start_id),
      "decoder_loss_weights": writer.write(weights.values, np.float32),
      "decoder_segment_ids": writer.segment_ids(),
      "decoder_positions": writer.positions(),
    }
    if prefix is not None:
      features["decoder_causal_attention"] = writer.write(prefix.values, np.int32)
    return _shuffle_rows(features, shuffle_key)


class EncoderFeatureConverter(FeatureConverter):
  """BERT: masked inputs, targets (original token where selected, else 0), token types, NSP.

  `nsp_labels` holds each segment's label at its first position (the [CLS] token) and 0
  elsewhere; the model reads it where encoder_positions == 0 and encoder_segment_ids > 0.
  """

  def model_feature_lengths(self, task_feature_lengths):
    return {"encoder": dict(task_feature_lengths)["inputs"]}

  def convert(self, examples, task_feature_lengths, shuffle_key=None):
    self._require(examples, ["inputs"])
    length = self.model_feature_lengths(task_feature_lengths)["encoder"]
    inputs = truncate(examples["inputs"], length)
    count = len(inputs)
    zeros = Ragged(np.zeros(len(inputs.values), np.int32), inputs.lengths)
    targets = truncate(examples["targets"], length) if "targets" in examples else zeros
    type_ids = (
      truncate(examples["token_type_ids"], length) if "token_type_ids" in examples else zeros
    )
    labels = examples.get("nsp_label", np.zeros(count, np.int32))
    row, offset, segment, rows = assign_rows(inputs.lengths[:, None], [length], self.pack)
    writer = _Writer(rows, length, row, offset[:, 0], inputs.lengths, segment)
    nsp = np.zeros(len(inputs.values), np.int32)
    nsp[inputs.offsets[:-1][inputs.lengths > 0]] = np.asarray(labels)[inputs.lengths > 0]
    features = {
      "encoder_input_tokens": writer.write(inputs.values),
      "encoder_target_tokens": writer.write(targets.values),
      "encoder_loss_weights": writer.write((targets.values > 0).astype(np.float32), np.float32),
      "encoder_segment_ids": writer.segment_ids(),
      "encoder_positions": writer.positions(),
      "encoder_token_type_ids": writer.write(type_ids.values),
      "nsp_labels": writer.write(nsp),
    }
    return _shuffle_rows(features, shuffle_key)


class EncDecFeatureConverter(FeatureConverter):
  """T5: inputs -> encoder features, targets -> decoder features; a packed pair shares a row."""

  def model_feature_lengths(self, task_feature_lengths):
    lengths = dict(task_feature_lengths)
    return {"encoder": lengths["inputs"], "decoder": lengths["targets"]}

  def convert(self, examples, task_feature_lengths, shuffle_key=None):
    self._require(examples, ["inputs", "targets"])
    lengths = self.model_feature_lengths(task_feature_lengths)
    inputs = truncate(examples["inputs"], lengths["encoder"])
    targets = truncate(examples["targets"], lengths["decoder"])
    capacity = [lengths["encoder"], lengths["decoder"]]
    row, offset, segment, rows = assign_rows(
      np.stack([inputs.lengths, targets.lengths], axis=1), capacity, self.pack
    )
    encoder = _Writer(rows, capacity[0], row, offset[:, 0], inputs.lengths, segment)
    decoder = _Writer(rows, capacity[1], row, offset[:, 1], targets.lengths, segment)
    features = {
      "encoder_input_tokens": encoder.write(inputs.values),
      "encoder_segment_ids": encoder.segment_ids(),
      "encoder_positions": encoder.positions(),
      "decoder_target_tokens": decoder.write(targets.values),
      "decoder_input_tokens": decoder.shifted_right(targets.values, self.start_id),
      "decoder_loss_weights": decoder.write(np.ones(len(targets.values), np.float32), np.float32),
      "decoder_segment_ids": decoder.segment_ids(),
      "decoder_positions": decoder.positions(),
    }
    return _shuffle_rows(features, shuffle_key)


class ClassificationFeatureConverter(FeatureConverter):
  """Encoder: [CLS]-first rows, the label at each segment's first position (token labels: at
  each tagged token). Decoder: the LM features of the text, the label at its last token."""

  def __init__(
    self, stack: str, head: str = "classification", pack: bool = True, start_id: int = 0
  ):
    """`stack`: 'encoder' ([CLS]-first encoder features) or 'decoder' (LM features)."""
    if stack not in ("encoder", "decoder"):
      raise ValueError(f"stack={stack!r}: expected 'encoder' or 'decoder'")
    super().__init__(pack, start_id)
    self.stack, self.head = stack, head

  def __repr__(self) -> str:
    return f"{type(self).__name__}(stack={self.stack!r}, head={self.head!r}, pack={self.pack})"

  def model_feature_lengths(self, task_feature_lengths):
    return {self.stack: dict(task_feature_lengths)["inputs"]}

  def convert(self, examples, task_feature_lengths, shuffle_key=None):
    token_level = self.head == "token_classification"
    self._require(
      examples, ["inputs", "tag_ids", "tag_weights"] if token_level else ["inputs", "label"]
    )
    length = self.model_feature_lengths(task_feature_lengths)[self.stack]
    inputs = truncate(examples["inputs"], length)
    row, offset, segment, rows = assign_rows(inputs.lengths[:, None], [length], self.pack)
    writer = _Writer(rows, length, row, offset[:, 0], inputs.lengths, segment)
    total = len(inputs.values)
    if token_level:
      labels = truncate(examples["tag_ids"], length).values
      weights = truncate(examples["tag_weights"], length).values.astype(np.float32)
    else:
      labels, weights = np.zeros(total, np.int32), np.zeros(total, np.float32)
      nonempty = inputs.lengths > 0
      # BERT reads [CLS] (a segment's first token); GPT its last token (it has seen them all).
      where = inputs.offsets[:-1] if self.stack == "encoder" else inputs.offsets[1:] - 1
      labels[where[nonempty]] = np.asarray(examples["label"])[nonempty]
      weights[where[nonempty]] = 1.0
    features = {
      "classification_labels": writer.write(labels),
      "classification_loss_weights": writer.write(weights, np.float32),
    }
    if self.stack == "encoder":
      types = examples.get("token_type_ids")
      type_values = (
        truncate(types, length).values if types is not None else np.zeros(total, np.int32)
      )
      features.update(
        encoder_input_tokens=writer.write(inputs.values),
        encoder_segment_ids=writer.segment_ids(),
        encoder_positions=writer.positions(),
        encoder_token_type_ids=writer.write(type_values),
      )
    else:
      features.update(
        decoder_target_tokens=writer.write(inputs.values),
        decoder_input_tokens=writer.shifted_right(inputs.values, self.start_id),
        decoder_loss_weights=writer.write(np.ones(total, np.float32), np.float32),
        decoder_segment_ids=writer.segment_ids(),
        decoder_positions=writer.positions(),
      )
    return features
