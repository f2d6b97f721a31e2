"""The data pipeline: vocabulary, packing, determinism, exact restore, host sharding."""

import json

import numpy as np
import pytest

from t5x_lite.config import base_config
from t5x_lite.data import DataError, pipeline
from t5x_lite.data.feature_converters import (
  DecoderFeatureConverter,
  EncDecFeatureConverter,
  EncoderFeatureConverter,
)
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.vocabularies import ByteVocabulary, SentencePieceVocabulary


@pytest.fixture(scope="session")
def vocabulary(tmp_path_factory):
  # Trained once into a session directory; other test files load the same cached model.
  return pipeline.get_vocabulary(base_config(), str(tmp_path_factory.getbasetemp() / "vocab_run"))


def _config(vocabulary, **data):
  config = base_config()
  with config.unlocked():
    config.data.vocab_path = ""
    for key, value in data.items():
      config.data[key] = value
  return config


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


def _equal(a, b):
  return all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_sentencepiece_vocabulary_layout(vocabulary, tmp_path_factory):
  assert isinstance(vocabulary, SentencePieceVocabulary)
  assert vocabulary.vocab_size == 1024 and vocabulary.base_vocab_size == 924
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert vocabulary.sentinel_id(0) == 1023 and vocabulary.sentinel_id(99) == 924
  assert vocabulary.decode([vocabulary.sentinel_id(0), vocabulary.sentinel_id(5)]) == (
    "<extra_id_0><extra_id_5>"
  )
  ids = vocabulary.encode("The assert statement")
  assert all(3 <= i < 924 for i in ids) and vocabulary.decode(ids) == "The assert statement"
  # Cached: a second call loads the same model file instead of training.
  again = pipeline.get_vocabulary(base_config(), str(tmp_path_factory.getbasetemp() / "vocab_run"))
  assert again.model_proto == vocabulary.model_proto


def test_byte_vocabulary():
  vocabulary = ByteVocabulary(extra_ids=100)
  assert vocabulary.vocab_size == 359 and vocabulary.sentinel_id(0) == 358
  values, lengths = vocabulary.encode_batch(["hé", "a"])
  assert values.tolist() == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, ord("a") + 3]
  assert lengths.tolist() == [3, 1]
  assert vocabulary.decode([*values[:3].tolist(), 1, 358], show_eos=True) == "hé</s><extra_id_0>"
  assert vocabulary.decode([359, 0, 0]) == "<id_359>"  # a padded-embedding id, padding dropped


def test_decoder_packing_exact():
  examples = {
    "targets": Ragged.from_rows([[3, 9, 1], [4, 1], [7, 8, 9, 1]]),
    KEY: np.arange(3, dtype=np.uint64),
  }
  batch = DecoderFeatureConverter(pack=True).convert(examples, {"targets": 8})
  np.testing.assert_array_equal(
    batch["decoder_target_tokens"], [[7, 8, 9, 1, 3, 9, 1, 0], [4, 1, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    batch["decoder_input_tokens"], [[0, 7, 8, 9, 0, 3, 9, 0], [0, 4, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    batch["decoder_segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    batch["decoder_positions"], [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(batch["decoder_loss_weights"], batch["decoder_segment_ids"] > 0)
  unpacked = DecoderFeatureConverter(pack=False).convert(examples, {"targets": 8})
  assert unpacked["decoder_target_tokens"].shape == (3, 8)
  np.testing.assert_array_equal(unpacked["decoder_segment_ids"][1], [1, 1, 0, 0, 0, 0, 0, 0])


def test_prefix_lm_and_encdec_packing():
  examples = {
    "inputs": Ragged.from_rows([[5, 6], [7]]),
    "targets": Ragged.from_rows([[8, 1], [9, 10, 1]]),
    KEY: np.arange(2, dtype=np.uint64),
  }
  decoder = DecoderFeatureConverter().convert(examples, {"inputs": 4, "targets": 4})
  # Equal sizes keep stream order; the prefix gets loss weight 0.
  np.testing.assert_array_equal(decoder["decoder_target_tokens"], [[5, 6, 8, 1, 7, 9, 10, 1]])
  np.testing.assert_array_equal(decoder["decoder_loss_weights"], [[0, 0, 1, 1, 0, 1, 1, 1]])
  np.testing.assert_array_equal(decoder["decoder_input_tokens"], [[0, 5, 6, 8, 0, 7, 9, 10]])
  np.testing.assert_array_equal(decoder["decoder_positions"], [[0, 1, 2, 3, 0, 1, 2, 3]])
  encdec = EncDecFeatureConverter().convert(examples, {"inputs": 4, "targets": 5})
  # The second pair is larger relative to the capacities (3/5 > 2/4), so it is placed first.
  np.testing.assert_array_equal(encdec["encoder_input_tokens"], [[7, 5, 6, 0]])
  np.testing.assert_array_equal(encdec["encoder_segment_ids"], [[1, 2, 2, 0]])
  np.testing.assert_array_equal(encdec["encoder_positions"], [[0, 0, 1, 0]])
  np.testing.assert_array_equal(encdec["decoder_target_tokens"], [[9, 10, 1, 8, 1]])
  np.testing.assert_array_equal(encdec["decoder_segment_ids"], [[1, 1, 1, 2, 2]])
  np.testing.assert_array_equal(encdec["decoder_positions"], [[0, 1, 2, 0, 1]])
  np.testing.assert_array_equal(encdec["decoder_input_tokens"], [[0, 9, 10, 0, 8]])


def test_encoder_packing_nsp_labels():
  examples = {
    "inputs": Ragged.from_rows([[90, 5, 91, 6, 91], [90, 7, 91, 8, 91]]),
    "targets": Ragged.from_rows([[0, 5, 0, 0, 0], [0, 0, 0, 8, 0]]),
    "token_type_ids": Ragged.from_rows([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]),
    "nsp_label": np.array([1, 0], np.int32),
    KEY: np.arange(2, dtype=np.uint64),
  }
  batch = EncoderFeatureConverter().convert(examples, {"inputs": 10})
  np.testing.assert_array_equal(batch["encoder_segment_ids"], [[1] * 5 + [2] * 5])
  np.testing.assert_array_equal(batch["nsp_labels"], [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["encoder_loss_weights"], [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0]])
  np.testing.assert_array_equal(batch["encoder_token_type_ids"], [[0, 0, 0, 1, 1] * 2])


def test_causal_lm_stream_packing_efficiency(vocabulary):
  iterator = pipeline.make_iterator(
    _config(vocabulary), vocabulary, DecoderFeatureConverter(pack=True), "train", batch_size=16
  )
  batches = _batches(iterator, 30)
  segments = np.concatenate([b["decoder_segment_ids"] for b in batches])
  assert segments.shape == (480, 256)
  efficiency = (segments > 0).mean()
  assert efficiency >= 0.95, efficiency
  batch = batches[0]
  # Invariants of every row: positions restart per segment, inputs are shifted targets.
  for row in range(16):
    seg, pos = batch["decoder_segment_ids"][row], batch["decoder_positions"][row]
    starts = np.flatnonzero((seg > 0) & (np.diff(np.concatenate([[0], seg])) != 0))
    assert (pos[starts] == 0).all() and (batch["decoder_input_tokens"][row][starts] == 0).all()
  assert (batch["decoder_target_tokens"][batch["decoder_segment_ids"] == 0] == 0).all()


def test_same_seed_same_batches_different_seed_different(vocabulary):
  converter = DecoderFeatureConverter(pack=True)
  make = lambda seed: pipeline.make_iterator(  # noqa: E731
    _config(vocabulary, seed=seed), vocabulary, converter, "train", batch_size=4
  )
  first, second, other = _batches(make(0), 3), _batches(make(0), 3), _batches(make(1), 3)
  assert all(_equal(a, b) for a, b in zip(first, second))
  assert not _equal(first[0], other[0])


def test_restore_mid_epoch_continues_the_same_stream(vocabulary):
  config = _config(vocabulary, feature_lengths={"targets": 128})
  converter = DecoderFeatureConverter(pack=True)
  uninterrupted = pipeline.make_iterator(config, vocabulary, converter, "train", batch_size=4)
  _batches(uninterrupted, 7)
  state = json.loads(json.dumps(uninterrupted.get_state()))  # as a checkpoint stores it
  expected = _batches(uninterrupted, 50)
  restored = pipeline.make_iterator(config, vocabulary, converter, "train", batch_size=4)
  restored.set_state(state)
  assert all(_equal(a, b) for a, b in zip(expected, _batches(restored, 50)))
  assert uninterrupted.get_state()["blocks"][0] > state["blocks"][0]  # crossed block boundaries


def test_two_hosts_see_disjoint_documents_covering_the_split(vocabulary):
  config = _config(vocabulary)
  converter = DecoderFeatureConverter(pack=True)
  streams = [
    pipeline.make_streams(config, vocabulary, converter, "train", shard, 2)[0][0]
    for shard in (0, 1)
  ]
  total = streams[0].num_documents
  ids = [[streams[h].documents[i]["id"] for i in range((total - h + 1) // 2)] for h in (0, 1)]
  assert not set(ids[0]) & set(ids[1])
  split = pipeline.registry.TaskRegistry.get("pydoc_causal_lm").source.split("train")
  assert set(ids[0]) | set(ids[1]) == {split[i]["id"] for i in range(len(split))}
  assert len(ids[0]) + len(ids[1]) == total
  batches = [
    next(pipeline.make_iterator(config, vocabulary, converter, "train", 4, shard, 2))
    for shard in (0, 1)
  ]
  assert not _equal(batches[0], batches[1])


def test_validation_split_is_held_out_and_repeats(vocabulary):
  source = pipeline.registry.TaskRegistry.get("pydoc_causal_lm").source
  train, validation = source.split("train"), source.split("validation")
  train_ids = {train[i]["id"] for i in range(len(train))}
  validation_ids = {validation[i]["id"] for i in range(len(validation))}
  assert validation_ids and not train_ids & validation_ids
  iterator = pipeline.make_iterator(
    _config(vocabulary), vocabulary, DecoderFeatureConverter(), "validation", batch_size=8
  )
  batches = _batches(iterator, 40)  # more than one epoch of the small validation split
  assert all(b["decoder_target_tokens"].shape == (8, 256) for b in batches)


def test_mixture_rates_are_exact_and_deterministic(vocabulary):
  from t5x_lite.data.registry import Mixture, MixtureRegistry

  if "test_pydoc_mix" not in MixtureRegistry:
    MixtureRegistry.add(
      Mixture(
        "test_pydoc_mix",
        ["pydoc_causal_lm", "pydoc_prefix_lm"],
        rates={"pydoc_causal_lm": 3.0, "pydoc_prefix_lm": 1.0},
      )
    )
  config = _config(vocabulary, task="test_pydoc_mix", feature_lengths={"inputs": 64, "targets": 64})
  converter = DecoderFeatureConverter()
  iterator = pipeline.make_iterator(config, vocabulary, converter, "train", batch_size=8)
  batches = _batches(iterator, 5)
  assert iterator.get_state()["counts"] == [30, 10]
  # Prefix-LM rows have zero-weight prefixes; causal rows have weight on every token.
  prefix_rows = sum(
    int(((b["decoder_loss_weights"] == 0) & (b["decoder_segment_ids"] > 0)).any(axis=1).sum())
    for b in batches
  )
  assert prefix_rows == 10
  again = pipeline.make_iterator(config, vocabulary, converter, "train", batch_size=8)
  assert all(_equal(a, b) for a, b in zip(batches, _batches(again, 5)))


def test_worker_threads_give_the_same_stream(vocabulary):
  converter = DecoderFeatureConverter()
  plain = pipeline.make_iterator(_config(vocabulary), vocabulary, converter, "train", 8)
  threaded = pipeline.make_iterator(
    _config(vocabulary, num_workers=2), vocabulary, converter, "train", 8
  )
  assert all(_equal(a, b) for a, b in zip(_batches(plain, 12), _batches(threaded, 12)))
  threaded.close()


@pytest.mark.parametrize(
  "task, lengths, converter, shapes",
  [
    (
      "pydoc_span_corruption",
      {"inputs": 128, "targets": 29},
      EncDecFeatureConverter(),
      {"encoder_input_tokens": (4, 128), "decoder_target_tokens": (4, 29)},
    ),
    (
      "pydoc_mlm",
      {"inputs": 64},
      EncoderFeatureConverter(),
      {"encoder_input_tokens": (4, 64), "nsp_labels": (4, 64)},
    ),
    (
      "pydoc_prefix_lm",
      {"inputs": 32, "targets": 32},
      DecoderFeatureConverter(),
      {"decoder_target_tokens": (4, 64), "decoder_loss_weights": (4, 64)},
    ),
  ],
)
def test_every_objective_streams_model_features(vocabulary, task, lengths, converter, shapes):
  config = _config(vocabulary, task=task, feature_lengths=lengths)
  batch = next(pipeline.make_iterator(config, vocabulary, converter, "train", batch_size=4))
  for name, shape in shapes.items():
    assert batch[name].shape == shape
  assert all(v.dtype == (np.float32 if "weights" in k else np.int32) for k, v in batch.items())
  if task == "pydoc_span_corruption":  # exactly full: one example per row, no padding
    assert (batch["encoder_segment_ids"] == 1).all() and (batch["decoder_segment_ids"] == 1).all()
    assert (batch["encoder_input_tokens"] >= vocabulary.sentinel_id(27)).any()


def test_vocabulary_choices_and_errors(vocabulary, tmp_path):
  from t5x_lite.data.vocabularies import train_sentencepiece

  config = base_config()
  with config.unlocked():
    config.data.vocab = "byte"
  assert isinstance(pipeline.get_vocabulary(config, str(tmp_path)), ByteVocabulary)
  path = tmp_path / "given.model"
  path.write_bytes(vocabulary.model_proto)
  with config.unlocked():
    config.data.vocab, config.data.vocab_path = "sentencepiece", str(path)
  assert pipeline.get_vocabulary(config, str(tmp_path)).encode("x = 1") == vocabulary.encode(
    "x = 1"
  )
  assert not (tmp_path / "vocab").exists()  # nothing trained when vocab_path is given
  with pytest.raises(DataError, match=r"vocab_size=1024 is too large for this text \(1 line\): "
                     "SentencePiece finds at most 8 pieces in it"):  # fmt: skip
    train_sentencepiece(["a b c d"], 1024, 100, str(tmp_path / "tiny.model"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    SentencePieceVocabulary(str(tmp_path / "missing.model"))
