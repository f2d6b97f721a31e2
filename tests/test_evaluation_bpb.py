"""Bits per byte: exactly loss / ln 2 for bytes; a direct computation for SentencePiece."""

import math

import numpy as np
import pytest

from t5x_lite.data import vocabularies
from t5x_lite.evaluation import bits_per_byte as evaluation_bpb

TEXTS = ["naïve café costs 3€ — ok?", "The quick brown fox jumps over the lazy dog.", "Ünïcödé ✓"]


def packed_batch(token_rows, length=96):
  """One packed row per list of documents (ids incl. EOS), segment ids from 1, loss on all."""
  batch = {
    "decoder_target_tokens": np.zeros((len(token_rows), length), np.int32),
    "decoder_loss_weights": np.zeros((len(token_rows), length), np.float32),
    "decoder_segment_ids": np.zeros((len(token_rows), length), np.int32),
  }
  for row, documents in enumerate(token_rows):
    start = 0
    for segment, ids in enumerate(documents, 1):
      end = start + len(ids)
      batch["decoder_target_tokens"][row, start:end] = ids
      batch["decoder_loss_weights"][row, start:end] = 1.0
      batch["decoder_segment_ids"][row, start:end] = segment
      start = end
  return batch


def test_byte_vocabulary_bits_per_byte_is_loss_over_ln2():
  vocabulary = vocabularies.ByteVocabulary(extra_ids=0)
  docs = [vocabulary.encode(t) + [vocabulary.eos_id] for t in TEXTS]
  batch = packed_batch([docs[:2], docs[2:]])
  count = evaluation_bpb.count_target_text(batch, vocabulary)
  # Every scored token is one byte: the text's UTF-8 bytes, plus one per EOS.
  assert count.bytes == sum(len(t.encode("utf-8")) + 1 for t in TEXTS) == count.tokens
  assert count.characters == sum(len(t) + 1 for t in TEXTS)
  assert count.bytes > count.characters  # the texts are not ASCII
  rng = np.random.default_rng(0)
  token_losses = rng.uniform(0.1, 4.0, int(count.tokens))
  mean_loss = float(token_losses.mean())
  bpb = count.from_mean_loss(mean_loss)["bits_per_byte"]
  assert bpb == pytest.approx(mean_loss / math.log(2), rel=1e-12)
  assert evaluation_bpb.bits_per_byte(token_losses.sum(), count.bytes) == pytest.approx(
    mean_loss / math.log(2), rel=1e-12
  )


def test_padding_sentinels_and_unscored_tokens_count_nothing():
  vocabulary = vocabularies.ByteVocabulary(extra_ids=10)
  ids = vocabulary.encode("abc") + [vocabulary.sentinel_id(0)] + vocabulary.encode("de") + [1]
  batch = packed_batch([[ids]])
  count = evaluation_bpb.count_target_text(batch, vocabulary)
  assert (count.bytes, count.characters, count.tokens) == (6, 6, 7)  # 'abcde' + EOS; sentinel: 0
  batch["decoder_loss_weights"][0, :3] = 0.0  # 'abc' not scored
  count = evaluation_bpb.count_target_text(batch, vocabulary)
  assert (count.bytes, count.tokens) == (3, 4)


def test_sentencepiece_matches_a_direct_computation(tmp_path):
  corpus = [
    f"{t} line {i} of the small corpus, with the words café, naïve and 3€."
    for i in range(200)
    for t in TEXTS
  ]
  vocabulary = vocabularies.train_sentencepiece(
    corpus, vocab_size=80, extra_ids=5, model_path=str(tmp_path / "spm.model")
  )
  docs = [vocabulary.encode(t) + [vocabulary.eos_id] for t in TEXTS]
  for text, ids in zip(TEXTS, docs):
    assert vocabulary.decode(ids) == text  # the round trip the count relies on
  assert any(len(ids) < len(t.encode("utf-8")) for t, ids in zip(TEXTS, docs))  # multi-byte pieces
  batch = packed_batch([docs[:2], docs[2:]])
  rng = np.random.default_rng(1)
  token_losses = rng.uniform(0.1, 6.0, sum(map(len, docs)))
  count = evaluation_bpb.count_target_text(batch, vocabulary)
  mean_loss = float(token_losses.mean())
  result = count.from_mean_loss(mean_loss)
  # Direct: Σ NLL over all tokens / (ln 2 · (UTF-8 bytes of the texts + one per document end)).
  direct_bytes = sum(len(t.encode("utf-8")) + 1 for t in TEXTS)
  direct_chars = sum(len(t) + 1 for t in TEXTS)
  assert result["bits_per_byte"] == pytest.approx(
    token_losses.sum() / (math.log(2) * direct_bytes), rel=1e-12
  )
  assert result["bits_per_character"] == pytest.approx(
    token_losses.sum() / (math.log(2) * direct_chars), rel=1e-12
  )
  assert count.tokens == len(token_losses) < direct_bytes
