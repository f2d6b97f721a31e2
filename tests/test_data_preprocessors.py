"""Preprocessors: the statistics and exact rules of each objective."""

import numpy as np
import pytest

from t5x_lite.data import DataError, denoising
from t5x_lite.data import objectives as ob
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.keys import derive_keys
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.registry import Feature
from t5x_lite.data.vocabularies import ByteVocabulary

VOCAB = ByteVocabulary(extra_ids=100)  # ordinary ids 3..258, sentinels 259..358


def _examples(rows, seed=0):
  return {
    "targets": Ragged.from_rows(rows),
    KEY: derive_keys(np.uint64(seed), np.arange(len(rows))),
  }


def _random_documents(count, low, high, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 259, rng.integers(low, high)) for _ in range(count)]


@pytest.mark.parametrize(
  "inputs_length, expected", [(512, (568, 114)), (128, (141, 29)), (256, (284, 58))]
)
def test_span_corruption_lengths(inputs_length, expected):
  assert ob.span_corruption_lengths(inputs_length, 0.15, 3.0) == expected


def test_noise_mask_statistics_and_rules():
  mask = ob.random_spans_noise_mask(np.arange(2000, dtype=np.uint64), 568, 0.15, 3.0)
  assert mask.shape == (2000, 568)
  assert abs(mask.mean() - 0.15) <= 0.005
  starts = mask & ~np.pad(mask[:, :-1], ((0, 0), (1, 0)))
  assert abs(mask.sum() / starts.sum() - 3.0) <= 0.1
  assert not mask[:, 0].any() and mask[:, -1].all()
  assert (mask.sum(axis=1) == 85).all() and (starts.sum(axis=1) == 28).all()
  # Span lengths vary (a random partition), and masks differ between keys.
  assert len({tuple(np.flatnonzero(row)) for row in mask[:50]}) == 50


def test_span_corruption_shapes_sentinels_and_exact_reconstruction():
  documents = _random_documents(30, 50, 400)
  context = Context(VOCAB, {"inputs": 512, "targets": 114})
  out = ob.span_corruption(_examples(documents), context)
  inputs, targets = out["inputs"], out["targets"]
  raw = np.concatenate(documents)
  rows = len(raw) // 568
  assert len(inputs) == rows == len(targets) > 5
  assert (inputs.lengths == 512).all() and (targets.lengths == 114).all()
  for i in range(rows):
    row_in, row_out = inputs.row(i), targets.row(i)
    assert row_in[-1] == VOCAB.eos_id and row_out[-1] == VOCAB.eos_id
    sentinels = row_in[row_in >= VOCAB.base_vocab_size]
    # Unique sentinels from <extra_id_0> = vocab_size - 1 downward, in order.
    np.testing.assert_array_equal(sentinels, VOCAB.vocab_size - 1 - np.arange(28))
    spans = {}
    is_sentinel = row_out[:-1] >= VOCAB.base_vocab_size
    boundaries = np.flatnonzero(is_sentinel)
    for a, b in zip(boundaries, list(boundaries[1:]) + [len(row_out) - 1]):
      spans[row_out[a]] = row_out[a + 1 : b]
    rebuilt = np.concatenate([spans[t] if t >= VOCAB.base_vocab_size else [t] for t in row_in[:-1]])
    np.testing.assert_array_equal(rebuilt, raw[i * 568 : (i + 1) * 568])


def test_mlm_selection_rates_and_special_tokens():
  rows = _random_documents(800, 100, 200, seed=1)
  cls_, sep = VOCAB.cls_id, VOCAB.sep_id
  rows = [np.concatenate([[cls_], r, [sep, VOCAB.eos_id]]) for r in rows]
  examples = {"inputs": Ragged.from_rows(rows), KEY: derive_keys(np.uint64(3), np.arange(800))}
  out = ob.mlm(examples, Context(VOCAB, {"inputs": 256}), mask_rate=0.15)
  original = examples["inputs"].values
  masked, targets = out["inputs"].values, out["targets"].values
  special = np.isin(original, [cls_, sep, VOCAB.eos_id])
  eligible = ~special
  assert eligible.sum() >= 100_000
  selected = targets > 0
  assert not selected[special].any() and (masked[special] == original[special]).all()
  assert (targets[selected] == original[selected]).all()
  assert abs(selected.sum() / eligible.sum() - 0.15) <= 0.005
  chosen = masked[selected]
  as_mask = (chosen == VOCAB.mask_id).mean()
  kept = (chosen == original[selected]).mean()
  replaced = 1 - as_mask - kept
  assert abs(as_mask - 0.8) <= 0.01 and abs(kept - 0.1) <= 0.01 and abs(replaced - 0.1) <= 0.01
  random_tokens = chosen[(chosen != VOCAB.mask_id) & (chosen != original[selected])]
  assert ((random_tokens >= 3) & (random_tokens < VOCAB.base_vocab_size)).all()
  assert (masked[~selected] == original[~selected]).all()


PERIOD = 3 + ord(".")  # the byte vocabulary's '.' ends a sentence
LETTERS = [3 + ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]


def _sentence_documents(count, sentences, length, seed):
  """Document d (< 52): sentences of one letter's token each ended by '.': the token names d."""
  rng = np.random.default_rng(seed)
  return [
    np.concatenate(
      [
        np.append(np.full(rng.integers(*length), LETTERS[d]), PERIOD)
        for _ in range(rng.integers(*sentences))
      ]
    )
    for d in range(count)
  ]


def _split_pair(tokens):
  first_sep = int(np.flatnonzero(tokens == VOCAB.sep_id)[0])
  return tokens[1:first_sep], tokens[first_sep + 1 : -1]


def test_nsp_pairs_follow_bert_create_instances_from_document():
  documents = _sentence_documents(52, (30, 90), (3, 12), seed=2)
  out = ob.nsp_pairs(_examples(documents), Context(VOCAB, {"inputs": 128}))
  labels, inputs = out["nsp_label"], out["inputs"]
  assert len(labels) > 300
  # BERT's rate: random B with probability 1/2, and always when the chunk is one sentence.
  assert 0.45 <= labels.mean() <= 0.6
  first_seps = []
  for i in range(len(labels)):
    tokens, types = inputs.row(i), out["token_type_ids"].row(i)
    assert len(tokens) <= 128 and tokens[0] == VOCAB.cls_id and tokens[-1] == VOCAB.sep_id
    a, b = _split_pair(tokens)
    assert len(a) >= 1 and len(b) >= 1
    owner_a, owner_b = set(a[a != PERIOD]), set(b[b != PERIOD])
    assert len(owner_a) == 1 and len(owner_b) == 1
    assert (owner_a == owner_b) == (labels[i] == 0)  # true next: same document
    np.testing.assert_array_equal(types, [0] * (len(a) + 2) + [1] * (len(b) + 1))
    first_seps.append(len(a) + 1)
  # A random split point between whole sentences: the first [SEP] moves, and most A segments
  # end at a sentence end (truncation trims only the overshoot of the last sentence).
  assert len(set(first_seps)) > 40
  ends_at_period = np.mean(
    [_split_pair(inputs.row(i))[0][-1] == PERIOD for i in range(len(labels))]
  )
  assert ends_at_period > 0.6
  # short_seq_prob = 0.1: some pairs are built to a random shorter target length.
  assert 0.02 < np.mean(inputs.lengths < 64) < 0.3
  # Sentences left unused by a random B go back to the document: nearly every token is used.
  used = sum(int(np.sum(_split_pair(inputs.row(i))[0] != PERIOD)) for i in range(len(labels)))
  used += sum(
    int(np.sum(_split_pair(inputs.row(i))[1] != PERIOD))
    for i in range(len(labels))
    if labels[i] == 0
  )
  total = sum(int(np.sum(d != PERIOD)) for d in documents)
  assert used / total > 0.9


def test_nsp_pairs_keep_short_documents():
  # Every document, even one short sentence, gives a pair (the old fixed halves dropped them).
  documents = _sentence_documents(30, (1, 3), (2, 6), seed=3)
  out = ob.nsp_pairs(_examples(documents), Context(VOCAB, {"inputs": 64}))
  owners = {int(a[0]) for a in (_split_pair(r)[0] for r in out["inputs"].rows())}
  assert owners == set(LETTERS[:30])


def test_prefix_lm_splits_inside_lengths():
  documents = _random_documents(40, 2, 600, seed=4)
  context = Context(VOCAB, {"inputs": 32, "targets": 48}, {"inputs": Feature(add_eos=False)})
  out = ob.prefix_lm(_examples(documents), context)
  inputs, targets = out["inputs"], out["targets"]
  assert (inputs.lengths >= 1).all() and (inputs.lengths <= 32).all()
  assert (targets.lengths >= 1).all() and (targets.lengths <= 47).all()
  joined = np.concatenate([np.concatenate([i, t]) for i, t in zip(inputs.rows(), targets.rows())])
  np.testing.assert_array_equal(joined, np.concatenate([d for d in documents if len(d) >= 2]))
  assert len(set(inputs.lengths.tolist())) > 10  # split points are random


def test_bart_denoise_infilling():
  documents = _random_documents(60, 50, 120, seed=5)
  context = Context(VOCAB, {"inputs": 128, "targets": 128})
  out = denoising.bart_denoise(
    _examples(documents), context, permute_sentences=False, random_ratio=0.0
  )
  removed = []
  for source, corrupted, target in zip(documents, out["inputs"].rows(), out["targets"].rows()):
    np.testing.assert_array_equal(target, np.append(source, VOCAB.eos_id))
    assert corrupted[-1] == VOCAB.eos_id and VOCAB.mask_id in corrupted
    kept = corrupted[:-1][corrupted[:-1] != VOCAB.mask_id]
    # Without permutation, the unmasked tokens are the source in order with gaps.
    position = 0
    for token in kept:
      position = int(np.flatnonzero(source[position:] == token)[0]) + position + 1
    removed.append(1 - len(kept) / len(source))
  assert 0.2 <= np.mean(removed) <= 0.35


def test_random_preprocessing_is_keyed_by_example():
  documents = _random_documents(20, 600, 700, seed=6)
  context = Context(VOCAB, {"inputs": 128})
  first = ob.span_corruption(_examples(documents, seed=1), context)["inputs"].values
  again = ob.span_corruption(_examples(documents, seed=1), context)["inputs"].values
  other = ob.span_corruption(_examples(documents, seed=2), context)["inputs"].values
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_basic_preprocessors():
  context = Context(VOCAB, {"targets": 3}, {"targets": Feature(add_eos=True)})
  examples = {"text": ["ab", "", "c"], KEY: np.arange(3, dtype=np.uint64)}
  tokens = pp.tokenize(examples, context)
  assert tokens["targets"].rows()[0].tolist() == [ord("a") + 3, ord("b") + 3]
  nonempty = pp.filter_empty(tokens, context)
  assert len(nonempty["targets"]) == 2 and nonempty[KEY].tolist() == [0, 2]
  with_eos = pp.append_eos(nonempty, context)
  assert [r.tolist() for r in with_eos["targets"].rows()] == [[100, 101, 1], [102, 1]]
  trimmed = pp.trim(pp.append_eos(with_eos, context, fields=["targets"]), context)
  assert trimmed["targets"].lengths.tolist() == [3, 3]
  renamed = pp.rekey(trimmed, context, mapping={"inputs": "targets"})
  assert "inputs" in renamed and "targets" not in renamed
  with pytest.raises(DataError, match="no column"):
    pp.rekey(trimmed, context, mapping={"inputs": "missing"})
  pieces = ob.causal_lm(
    pp.tokenize({"text": ["abcdefg"], KEY: np.zeros(1, np.uint64)}, context), context
  )
  assert pieces["targets"].lengths.tolist() == [3, 3, 1]


@pytest.mark.parametrize(
  "name", ["causal_lm", "span_corruption", "prefix_lm", "nsp_pairs", "bart_denoise"]
)
def test_blocks_too_small_for_any_example(name):
  # A block whose documents all got filtered, or are too short, yields no examples (no crash).
  context = Context(VOCAB, {"inputs": 64, "targets": 64})
  for rows in ([], [[5]]):
    out = getattr(denoising if name == "bart_denoise" else ob, name)(_examples(rows), context)
    lengths = [len(column) for column in out.values() if isinstance(column, Ragged)]
    # A one-token document is still a causal-LM piece and a (tiny) BART example.
    expected = 1 if rows and name in ("causal_lm", "bart_denoise") else 0
    assert lengths and set(lengths) == {expected}


def test_span_corruption_sentinels_never_run_out():
  # 100 extra ids: 1,809 inputs give at most 100 spans; 1,810 would need 101 sentinels.
  assert ob.check_span_corruption(Context(VOCAB, {"inputs": 1809})) is None
  with pytest.raises(DataError, match=r"101 noise spans .* only 100 sentinels"):
    ob.check_span_corruption(Context(VOCAB, {"inputs": 1810}))
  documents = _random_documents(10, 2000, 3000)
  with pytest.raises(DataError, match="114 noise spans"):
    ob.span_corruption(_examples(documents), Context(VOCAB, {"inputs": 2048}))
  # The pipeline checks before reading any data.
  import functools

  task_preprocessors = [pp.tokenize, functools.partial(ob.span_corruption, noise_density=0.15)]
  with pytest.raises(DataError, match="only 100 sentinels"):
    ob.check_preprocessors(task_preprocessors, Context(VOCAB, {"inputs": 2048}))


def test_span_corruption_noise_density_half_as_t5():
  # T5's random_spans_helper takes one raw token less at density 0.5 so targets fit 512.
  assert ob.span_corruption_lengths(512, 0.5, 3.0) == (766, 512)
  documents = _random_documents(40, 100, 600, seed=7)
  # 512 inputs at density 0.5 have 128 spans: more sentinels than the default 100.
  context = Context(ByteVocabulary(extra_ids=128), {"inputs": 512, "targets": 512})
  out = ob.span_corruption(_examples(documents), context, noise_density=0.5)
  assert len(out["inputs"]) > 10
  assert (out["targets"].lengths == 512).all() and (out["inputs"].lengths == 512).all()
