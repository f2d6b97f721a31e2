"""Vocabularies of every tokenizer type against `transformers` (issue 11).

Every tokenizer is trained inside the test on a small corpus (no download). The reference is the
`transformers` tokenizer `AutoTokenizer.from_pretrained` builds from the same folder.
"""

import codecs
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from t5x_lite import cli
from t5x_lite import config as config_lib
from t5x_lite.data import DataError, objectives, tokenizer_training
from t5x_lite.data.hf_vocabulary import HuggingFaceVocabulary, load_vocabulary, save_vocabulary
from t5x_lite.data.keys import derive_keys
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.vocabularies import ByteVocabulary, SentencePieceVocabulary
from t5x_lite.data.whole_word import select_whole_words, word_ids, word_start_table
from t5x_lite.models import vocab_padding

transformers = pytest.importorskip(
  "transformers", reason="needs transformers (pip install '.[hf]')"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with contextlib.redirect_stdout(io.StringIO()):
  import this  # noqa: F401 -- the Zen of Python: a small English corpus in the stdlib
ZEN = codecs.decode(this.s, "rot13")
CORPUS = [
  ZEN,
  "naïve café — 日本語のテキスト. Ünïcödé ﬁ ① ½ and emoji 🙂 too.",
  "def add(x, y):\n    return x + y  # tabs\tand  runs   of spaces\n",
  "Don't stop. It's fine? Yes! They're here; we've gone, you'll see.",
]
# Raw strings the vocabularies must tokenize exactly as transformers does.
PROBES = [
  "Errors should never pass silently.",
  "",
  " ",
  "  leading and trailing spaces  ",
  "runs   of\t\tspaces\n\nand newlines\r\n",
  "naïve café 日本語 ﬁ ① 🙂",
  "Don't stop. It's fine?",
  "Now is better than never.\n" * 3,
  "\u00a0non-breaking\u2003em space",
]
SIZES = {"unigram": 180, "bpe": 180, "byte-bpe": 420, "wordpiece": 300}


def _write_corpus(directory) -> str:
  path = os.path.join(directory, "corpus.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n\n".join(CORPUS * 3))
  return path


def _train_cli(tmp_path, vocab_type: str, extra_ids: int = 10, *more: str):
  out = str(tmp_path / f"tok_{vocab_type}")
  argv = ["tokenizer", "train", "--type", vocab_type, "--input", _write_corpus(tmp_path)]
  argv += ["--out", out, "--vocab-size", str(SIZES[vocab_type]), "--extra-ids", str(extra_ids)]
  assert cli.main(argv + list(more)) == 0
  return out


def _hf_ids(tokenizer, text: str) -> list[int]:
  return tokenizer.encode(text, add_special_tokens=False)


def _assert_same_ids(vocabulary, reference, texts=PROBES):
  for text in texts:
    assert vocabulary.encode(text) == _hf_ids(reference, text), repr(text)
  flat, lengths = vocabulary.encode_batch(texts)
  expected = [_hf_ids(reference, t) for t in texts]
  np.testing.assert_array_equal(lengths, [len(e) for e in expected])
  np.testing.assert_array_equal(flat, [i for e in expected for i in e])
  assert flat.dtype == np.int32


@pytest.mark.parametrize("vocab_type", tokenizer_training.VOCAB_TYPES)
def test_trained_tokenizer_equals_transformers(tmp_path, vocab_type, capsys):
  """`tokenizer train --type T` writes a folder AutoTokenizer loads; ids, text and specials agree."""
  out = _train_cli(tmp_path, vocab_type)
  assert f"wrote {out}" in capsys.readouterr().out
  reference = transformers.AutoTokenizer.from_pretrained(out)
  vocabulary = load_vocabulary(out)
  expected_class = (
    SentencePieceVocabulary if vocab_type in ("unigram", "bpe") else HuggingFaceVocabulary
  )
  assert type(vocabulary) is expected_class
  assert vocabulary.vocab_size == len(reference) <= SIZES[vocab_type]
  _assert_same_ids(vocabulary, reference)
  for text in PROBES:
    ids = vocabulary.encode(text)
    if vocabulary.unk_id not in ids:  # SentencePiece writes unknown text as ' ⁇ ', HF '<unk>'
      assert vocabulary.decode(ids) == reference.decode(ids), repr(text)
  # Specials: pad 0, eos 1, unk 2 for every type, and the tokenizer's own names.
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert reference.pad_token_id == vocabulary.pad_id
  assert reference.eos_token_id in (vocabulary.eos_id, None)
  assert reference.unk_token_id == vocabulary.unk_id
  for k in range(10):  # seqio order: <extra_id_0> is the top id
    assert vocabulary.sentinel_id(k) == vocabulary.vocab_size - 1 - k
    assert reference.convert_tokens_to_ids(f"<extra_id_{k}>") == vocabulary.sentinel_id(k)
  np.testing.assert_array_equal(vocabulary.sentinel_ids, vocabulary.vocab_size - 1 - np.arange(10))
  if vocab_type == "wordpiece":
    assert reference.convert_ids_to_tokens([vocabulary.cls_id, vocabulary.sep_id]) == [
      "[CLS]",
      "[SEP]",
    ]
    assert reference.mask_token_id == vocabulary.mask_id == 4
    assert reference("a b")["input_ids"] == [
      vocabulary.cls_id,
      *vocabulary.encode("a b"),
      vocabulary.sep_id,
    ]
  if vocab_type == "byte-bpe":
    assert (reference.bos_token_id, reference.mask_token_id) == (
      vocabulary.bos_id,
      vocabulary.mask_id,
    )
    assert (vocabulary.cls_id, vocabulary.sep_id) == (3, 1)  # <s> and </s>, as RoBERTa
    for text in PROBES:  # byte-level: the text comes back exactly
      assert vocabulary.decode(vocabulary.encode(text)) == text
  specials = set(vocabulary.special_ids.tolist())
  assert {0, 1, 2} | set(vocabulary.sentinel_ids.tolist()) <= specials
  assert not specials & set(vocabulary.ordinary_ids.tolist())
  assert len(specials) + len(vocabulary.ordinary_ids) == vocabulary.vocab_size
  # The folder written again (as `convert --to hf` will) loads to the same vocabulary.
  again = str(tmp_path / "again")
  save_vocabulary(vocabulary, again)
  assert load_vocabulary(again).fingerprint == vocabulary.fingerprint
  _assert_same_ids(load_vocabulary(again), transformers.AutoTokenizer.from_pretrained(again))


def test_fingerprints_tell_vocabularies_apart(tmp_path):
  a = load_vocabulary(_train_cli(tmp_path, "wordpiece"))
  b = load_vocabulary(_train_cli(tmp_path, "wordpiece", 0))
  c = load_vocabulary(_train_cli(tmp_path, "byte-bpe"))
  assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
  assert ByteVocabulary(10).fingerprint != ByteVocabulary(0).fingerprint


# --- the folders published models ship -------------------------------------------------------


def _plain_bpe(texts, size: int) -> tokenizers.Tokenizer:
  tokenizer = tokenizer_training.build_untrained("byte-bpe")
  trainer = trainers.BpeTrainer(
    vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
  )
  tokenizer.train_from_iterator(texts, trainer=trainer)
  return tokenizer


def _vocab_and_merges(tokenizer: tokenizers.Tokenizer):
  state = json.loads(tokenizer.to_str())["model"]
  merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
  return dict(state["vocab"]), merges


def test_gpt2_vocab_json_and_merges(tmp_path):
  """GPT-2's files: vocab.json + merges.txt, <|endoftext|> as the last id, no pad token."""
  vocab, merges = _vocab_and_merges(_plain_bpe(CORPUS * 3, 400))
  vocab["<|endoftext|>"] = len(vocab)
  folder = tmp_path / "gpt2"
  folder.mkdir()
  (folder / "vocab.json").write_text(json.dumps(vocab))
  (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
  reference = transformers.AutoTokenizer.from_pretrained(str(folder))
  vocabulary = load_vocabulary(str(folder))
  _assert_same_ids(vocabulary, reference)
  end = len(vocab) - 1
  assert vocabulary.eos_id == reference.eos_token_id == reference.bos_token_id == end
  assert vocabulary.pad_id == end  # no pad token: pad with EOS, the HF convention for GPT-2
  assert vocabulary.vocab_size == len(reference) == len(vocab)
  assert vocabulary.encode("a<|endoftext|>b") == _hf_ids(reference, "a<|endoftext|>b")
  assert vocabulary.word_boundary == ("starts", "Ġ")
  assert vocabulary.extra_ids == 0
  with pytest.raises(ValueError, match="no mask token"):
    _ = vocabulary.mask_id
  (folder / "merges.txt").unlink()
  with pytest.raises(DataError, match="vocab.json without merges.txt"):
    load_vocabulary(str(folder))


def test_bert_vocab_txt(tmp_path):
  """bert-base-uncased's files: vocab.txt only, lowercasing, [CLS]=101-style ids from the file."""
  trained = load_vocabulary(_train_cli(tmp_path, "wordpiece", 0, "--lowercase"))
  pieces = trained.pieces()
  # BERT's layout: [PAD] 0, [unused] ..., [UNK] [CLS] [SEP] [MASK] later, not at 0-4.
  order = ["[PAD]", "[unused0]", "[unused1]"] + [p for p in pieces if not p.startswith("[")]
  order[10:10] = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  folder = tmp_path / "bert"
  folder.mkdir()
  (folder / "vocab.txt").write_text("\n".join(order) + "\n")
  (folder / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
  )
  reference = transformers.AutoTokenizer.from_pretrained(str(folder))
  vocabulary = load_vocabulary(str(folder))
  _assert_same_ids(vocabulary, reference, PROBES + ["UPPER Case Words"])
  for role in ("pad", "unk", "cls", "sep", "mask"):
    assert getattr(vocabulary, f"{role}_id") == getattr(reference, f"{role}_token_id"), role
  assert (vocabulary.cls_id, vocabulary.sep_id, vocabulary.mask_id) == (11, 12, 13)
  assert vocabulary.eos_id == vocabulary.sep_id  # BERT ends a sequence with [SEP]
  ids = vocabulary.encode("Errors should never pass silently.")
  assert vocabulary.decode(ids) == reference.decode(ids)
  assert vocabulary.special_mask(np.array([0, 11, 12, 13, 10, 14])).tolist() == [
    True, True, True, True, True, False
  ]  # fmt: skip


def test_roberta_tokenizer_json(tmp_path):
  """RoBERTa/BART's specials <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last, from tokenizer.json."""
  vocab, merges = _vocab_and_merges(_plain_bpe(CORPUS * 3, 400))
  specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  vocab = {**specials, **{t: i + 4 for t, i in vocab.items()}}
  vocab["<mask>"] = len(vocab)
  source = tmp_path / "files"
  source.mkdir()
  (source / "vocab.json").write_text(json.dumps(vocab))
  (source / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  roberta = transformers.RobertaTokenizer(
    vocab=str(source / "vocab.json"), merges=str(source / "merges.txt")
  )
  roberta.save_pretrained(str(tmp_path / "roberta"))
  assert os.path.exists(tmp_path / "roberta" / "tokenizer.json")
  reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "roberta"))
  vocabulary = load_vocabulary(str(tmp_path / "roberta"))
  assert isinstance(vocabulary, HuggingFaceVocabulary)
  _assert_same_ids(vocabulary, reference)
  got = [vocabulary.bos_id, vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id]
  assert got == [0, 1, 2, 3]
  assert (vocabulary.cls_id, vocabulary.sep_id) == (reference.cls_token_id, reference.sep_token_id)
  assert vocabulary.mask_id == reference.mask_token_id == len(vocab) - 1


def test_t5_tokenizer_json_without_spiece(tmp_path):
  """A T5 folder with only tokenizer.json: sentinels read from it, on top in seqio order."""
  spm_folder = _train_cli(tmp_path, "unigram", 12)
  t5 = transformers.AutoTokenizer.from_pretrained(spm_folder)
  t5.save_pretrained(str(tmp_path / "t5"))
  for name in ("spiece.model",):
    if os.path.exists(tmp_path / "t5" / name):
      os.remove(tmp_path / "t5" / name)
  vocabulary = load_vocabulary(str(tmp_path / "t5"))
  assert isinstance(vocabulary, HuggingFaceVocabulary)
  _assert_same_ids(vocabulary, t5)
  assert vocabulary.extra_ids == 12
  assert [vocabulary.sentinel_id(k) for k in (0, 11)] == [len(t5) - 1, len(t5) - 12]
  assert vocabulary.base_vocab_size == len(t5) - 12
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  # No [CLS]/[SEP]/[MASK] in T5: the three lowest sentinels, as SentencePieceVocabulary does.
  spm = load_vocabulary(spm_folder)
  assert (vocabulary.cls_id, vocabulary.sep_id, vocabulary.mask_id) == (
    spm.cls_id, spm.sep_id, spm.mask_id
  )  # fmt: skip
  assert vocabulary.word_boundary == ("starts", "▁")


# --- bad folders -------------------------------------------------------------------------------


def test_bad_tokenizer_folders_fail_in_one_line(tmp_path):
  with pytest.raises(DataError, match=r"has no tokenizer: expected tokenizer.json"):
    load_vocabulary(str(tmp_path))
  with pytest.raises(DataError, match="does not exist"):
    load_vocabulary(str(tmp_path / "missing"))
  (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3')
  with pytest.raises(DataError, match=r"tokenizer.json: not a readable tokenizer.json"):
    load_vocabulary(str(tmp_path))
  good = _train_cli(tmp_path, "wordpiece")
  config = json.loads(open(os.path.join(good, "tokenizer_config.json")).read())
  config["mask_token"] = "<nope>"
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    with open(os.path.join(good, name), "w") as f:
      json.dump(config, f)
  with pytest.raises(DataError, match=r"mask_token '<nope>' is not in the vocabulary"):
    load_vocabulary(good)


def test_tokenizer_train_cli_errors(tmp_path, capsys):
  corpus = _write_corpus(tmp_path)
  argv = [
    "tokenizer",
    "train",
    "--type",
    "byte-bpe",
    "--input",
    corpus,
    "--out",
    str(tmp_path / "o"),
  ]
  assert cli.main(argv + ["--vocab-size", "100"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "a byte-bpe vocabulary needs at least 261" in err
  assert not os.path.exists(tmp_path / "o")  # nothing half-written


def test_config_vocab_type():
  config = config_lib.get_config("gpt.py:tiny")
  assert config.data.vocab_type == "unigram"
  config.data.vocab_type = "sentencepiece"
  with pytest.raises(
    config_lib.ConfigError, match="data.vocab_type='sentencepiece': expected one of"
  ):
    config_lib.validate(config)
  config.data.vocab_type = "byte-bpe"
  config.data.vocab_size = 300
  with pytest.raises(config_lib.ConfigError, match="a byte-bpe vocabulary needs at least 361 ids"):
    config_lib.validate(config)


# --- whole-word masking -----------------------------------------------------------------------


def _wordpiece(vocab: dict[str, int]) -> HuggingFaceVocabulary:
  tokenizer = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return HuggingFaceVocabulary(tokenizer, {"eos": "[SEP]"})


def test_whole_word_ids_wordpiece():
  names = ["[PAD]", "[SEP]", "[UNK]", "[CLS]", "[MASK]", "play", "##ing", "the", "game", "##s", "."]
  vocabulary = _wordpiece({t: i for i, t in enumerate(names)})
  tokens = vocabulary.encode("the games playing.")
  assert tokens == [7, 8, 9, 5, 6, 10]
  row = np.array([3, *tokens, 1, 8, 9])  # [CLS] the game ##s play ##ing . [SEP] game ##s
  got = word_ids(row, np.array([8, 2]), vocabulary)
  # Each row starts a word; the specials are words of their own.
  assert got.tolist() == [0, 1, 2, 2, 3, 3, 4, 5, 6, 6]


def test_whole_word_ids_follow_fairseq_rules(tmp_path):
  """byte-BPE / SentencePiece: a token starts a word iff its text starts with a space (fairseq's
  `is_beginning_of_word`), or it is special, first in its row, or follows a special token."""
  for vocab_type in ("byte-bpe", "unigram"):
    vocabulary = load_vocabulary(_train_cli(tmp_path, vocab_type))
    texts = [ZEN[:400], "naïve café 日本語 don't"]
    flat, lengths = vocabulary.encode_batch(texts)
    flat = np.concatenate([flat, [vocabulary.eos_id]])
    lengths = lengths + np.array([0, 1])
    got = word_ids(flat, lengths, vocabulary)
    starts = np.diff(got, prepend=-1) == 1
    assert (np.diff(got) >= 0).all() and got[0] == 0
    pieces = vocabulary.pieces()
    marker = "Ġ" if vocab_type == "byte-bpe" else "▁"
    special = set(vocabulary.special_ids.tolist())
    expected = []
    for i, t in enumerate(flat):
      first = i == 0 or i == lengths[0]
      expected.append(
        first or t in special or flat[i - 1] in special or pieces[t].startswith(marker)
      )
    assert starts.tolist() == expected
    assert starts.sum() < len(flat)  # some words have several tokens
    table = word_start_table(vocabulary)
    assert table.shape == (vocabulary.vocab_size,) and table[vocabulary.special_ids].all()


def test_select_whole_words_masks_words_at_the_rate():
  rng = np.random.default_rng(0)
  word_lengths = rng.integers(1, 5, size=20000)
  word_index = np.repeat(np.arange(len(word_lengths)), word_lengths)
  special = rng.random(len(word_index)) < 0.02
  selected = select_whole_words(word_index, rng.random(len(word_index)), special, 0.15)
  assert not selected[special].any()
  chosen = np.bincount(word_index, weights=selected, minlength=len(word_lengths))
  ordinary = np.bincount(word_index, weights=~special, minlength=len(word_lengths))
  assert ((chosen == 0) | (chosen == ordinary)).all()  # a word's tokens all, or none
  assert (chosen > 1).sum() > 1000  # many multi-token words selected
  rate = selected.sum() / (~special).sum()
  assert abs(rate - 0.15) < 0.01  # expected 0.15; sd ~ sqrt(.15*.85/20000)*sqrt(E[len]) ~ 0.004


# --- vocabulary padding -----------------------------------------------------------------------


def test_vocab_padding():
  assert vocab_padding.padded_vocab_size(50257, 128) == 50304  # GPT-2
  assert vocab_padding.padded_vocab_size(32100, 128) == 32128  # T5
  assert vocab_padding.padded_vocab_size(30522, 128) == 30592  # BERT
  assert vocab_padding.padded_vocab_size(256, 128) == 256
  assert vocab_padding.padded_vocab_size(257, 0) == 257
  with pytest.raises(ValueError, match="vocab_pad_multiple=-1"):
    vocab_padding.padded_vocab_size(10, -1)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 10)).astype(np.float32) * 30
  padded = np.concatenate([logits, rng.normal(size=(2, 3, 6)).astype(np.float32) * 30], -1)
  masked = np.asarray(vocab_padding.mask_padded_logits(padded, 10))
  assert masked.shape == (2, 3, 16) and masked.dtype == np.float32

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  np.testing.assert_allclose(softmax(masked)[..., :10], softmax(logits), rtol=1e-6)
  assert (softmax(masked)[..., 10:] == 0).all()
  assert vocab_padding.mask_padded_logits(logits, 10) is logits
  embedding = rng.normal(size=(10, 4))
  grown = vocab_padding.pad_rows(embedding, 16)
  assert grown.shape == (16, 4) and (grown[10:] == 0).all()
  np.testing.assert_array_equal(vocab_padding.strip_padding(grown, 10), embedding)
  np.testing.assert_array_equal(vocab_padding.strip_padding(grown.T, 10, axis=1), embedding.T)


# --- benchmark tool ---------------------------------------------------------------------------


def test_benchmark_tokenizers_runs_on_a_tiny_corpus(tmp_path):
  corpus = tmp_path / "tiny.jsonl.gz"
  with gzip.open(corpus, "wt") as f:
    for i, text in enumerate(CORPUS * 5):
      f.write(json.dumps({"id": str(i), "text": text}) + "\n")
  out = tmp_path / "results.json"
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "tools", "benchmark_tokenizers.py"), "--corpus",
     str(corpus), "--vocab-size", "420", "--min-tokens", "200", "--types", "wordpiece,byte-bpe",
     "--json", str(out)],
    capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT},
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  figures = json.loads(out.read_text())["types"]
  assert set(figures) == {"wordpiece", "byte-bpe"}
  for r in figures.values():
    assert r["tokens"] >= 200 and r["tokens_per_cpu_second"] > 0
  assert "tokens/CPU-s" in result.stdout


# --- the run's vocabulary -----------------------------------------------------------------------


@pytest.mark.parametrize("vocab_type", ["byte-bpe", "wordpiece"])
def test_first_use_vocabulary_of_any_type(tmp_path, vocab_type):
  """data.vocab_type: trained on the task on first use into workdir/vocab/, reused after."""
  from t5x_lite.data import pipeline

  overrides = [("data.vocab_type", vocab_type), ("data.vocab_size", "600")]
  config = config_lib.get_config("gpt.py:tiny", overrides)
  vocabulary = pipeline.get_vocabulary(config, str(tmp_path))
  assert isinstance(vocabulary, HuggingFaceVocabulary)
  assert vocabulary.vocab_size <= 600 and vocabulary.extra_ids == config.data.extra_ids
  (folder,) = os.listdir(tmp_path / "vocab")
  assert folder.startswith(f"{vocab_type}_600_")
  reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "vocab" / folder))
  _assert_same_ids(vocabulary, reference)
  again = pipeline.get_vocabulary(config, str(tmp_path))  # read back, not trained again
  assert again.fingerprint == vocabulary.fingerprint
  config.data.vocab_path = str(tmp_path / "vocab" / folder)  # a folder as data.vocab_path
  assert pipeline.get_vocabulary(config, "").fingerprint == vocabulary.fingerprint


# --- objectives read the tokenizer's special tokens ------------------------------------------------


def _bert_layout_vocabulary(tmp_path):
  """A WordPiece vocabulary with BERT's layout: [PAD] 0, [unused*], [UNK] [CLS] [SEP] [MASK] at
  10-13 (in the middle, as bert-base's 100-103), so no objective can assume fixed ids."""
  trained = load_vocabulary(_train_cli(tmp_path, "wordpiece", 0, "--lowercase"))
  order = ["[PAD]"] + [f"[unused{i}]" for i in range(9)]
  order += ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [p for p in trained.pieces() if p[0] != "["]
  folder = tmp_path / "bert_layout"
  folder.mkdir()
  (folder / "vocab.txt").write_text("\n".join(order) + "\n")
  (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  return load_vocabulary(str(folder))


def _documents(vocabulary, count=200):

  texts = [" ".join(ZEN.split()[i % 50 : i % 50 + 40]) for i in range(count)]
  flat, lengths = vocabulary.encode_batch(texts)
  rows = np.split(flat, np.cumsum(lengths)[:-1])
  return rows, derive_keys(np.uint64(5), np.arange(count))


def test_mlm_uses_the_tokenizers_specials(tmp_path):

  vocabulary = _bert_layout_vocabulary(tmp_path)
  cls_, sep, mask = vocabulary.cls_id, vocabulary.sep_id, vocabulary.mask_id
  assert (cls_, sep, mask, vocabulary.pad_id) == (11, 12, 13, 0)
  rows, keys = _documents(vocabulary)
  rows = [np.concatenate([[cls_], r, [sep]]).astype(np.int32) for r in rows]
  for whole_word in (False, True):
    examples = {"inputs": Ragged.from_rows(rows), KEY: keys}
    out = objectives.mlm(examples, Context(vocabulary, {"inputs": 64}), whole_word=whole_word)
    original, masked = examples["inputs"].values, out["inputs"].values
    selected = out["targets"].values > 0
    special = np.isin(original, [cls_, sep])
    assert not selected[special].any() and (masked[special] == original[special]).all()
    assert abs(selected.sum() / (~special).sum() - 0.15) < 0.03
    chosen = masked[selected]
    assert abs((chosen == mask).mean() - 0.8) < 0.05
    replaced = chosen[(chosen != mask) & (chosen != original[selected])]
    assert len(replaced) and not np.isin(replaced, vocabulary.special_ids).any()
    if whole_word:  # a word is selected with all its pieces, or not at all
      words = word_ids(original, examples["inputs"].lengths, vocabulary)
      chosen_per_word = np.bincount(words, weights=selected)
      size = np.bincount(words, weights=~special)
      assert ((chosen_per_word == 0) | (chosen_per_word == size)).all()
      assert (chosen_per_word > 1).any()


def test_span_corruption_uses_the_tokenizers_sentinels(tmp_path):
  """T5's tokenizer.json: sentinels looked up by name; a vocabulary without any is an error."""

  spm_folder = _train_cli(tmp_path, "unigram", 30)
  transformers.AutoTokenizer.from_pretrained(spm_folder).save_pretrained(str(tmp_path / "t5"))
  vocabulary = load_vocabulary(str(tmp_path / "t5"))
  assert isinstance(vocabulary, HuggingFaceVocabulary)
  rows, keys = _documents(vocabulary)
  examples = {"targets": Ragged.from_rows([r.astype(np.int32) for r in rows]), KEY: keys}
  context = Context(vocabulary, {"inputs": 64, "targets": 16})
  out = objectives.span_corruption(examples, context)
  inputs, targets = out["inputs"].values, out["targets"].values
  sentinels = set(vocabulary.sentinel_ids.tolist())
  used = [t for t in inputs.tolist() if t in sentinels]
  assert used and vocabulary.sentinel_id(0) in used
  assert (out["inputs"].values.reshape(-1, 64)[:, -1] == vocabulary.eos_id).all()
  assert set(targets.tolist()) & sentinels
  no_sentinels = load_vocabulary(_train_cli(tmp_path, "wordpiece", 0))
  rows, keys = _documents(no_sentinels)
  examples = {"targets": Ragged.from_rows([r.astype(np.int32) for r in rows]), KEY: keys}
  with pytest.raises(DataError, match=r"noise spans per example, but the vocabulary has only 0"):
    objectives.span_corruption(examples, Context(no_sentinels, {"inputs": 64, "targets": 16}))


def test_tasks_show_whole_word_mlm_with_a_wordpiece_vocabulary(tmp_path, capsys):
  """`t5x-lite tasks show pydoc_mlm_whole_word` on a BERT-style vocabulary trained on first use
  (in memory, not cached): the specials shown are the tokenizer's own ([CLS] [SEP] [MASK])."""
  argv = ["tasks", "show", "pydoc_mlm_whole_word", "-n", "1", "--config", "bert.py:tiny",
          "--workdir", str(tmp_path), "--config.data.vocab_type=wordpiece",
          "--config.data.vocab_size=800", "--config.data.feature_lengths={'inputs': 64}"]  # fmt: skip
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "[CLS]" in out and "[SEP]" in out and "[MASK]" in out
  assert not (tmp_path / "vocab").exists()  # trained in memory: `tasks show` is read-only


@pytest.mark.parametrize("model_type", ["unigram", "bpe", "char"])
def test_sentencepiece_model_type_is_read_from_the_wire_format(tmp_path, model_type):
  """The trainer type as `sentencepiece_model_pb2` reads it (that module refuses protobuf 6)."""
  import sentencepiece as spm

  from t5x_lite.data.hf_vocabulary import sentencepiece_model_type

  rng = np.random.default_rng(0)
  letters = list("abcdefghijklmnopqrstuvwxyz")
  words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(3000)]
  (tmp_path / "t.txt").write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, 2988)))
  spm.SentencePieceTrainer.train(
    input=str(tmp_path / "t.txt"), model_prefix=str(tmp_path / "m"), model_type=model_type,
    vocab_size=40 if model_type == "char" else 120, minloglevel=2,
  )  # fmt: skip
  proto = (tmp_path / "m.model").read_bytes()
  assert sentencepiece_model_type(proto) == model_type
  try:
    from sentencepiece import sentencepiece_model_pb2 as pb
  except Exception:  # protobuf 6 (Apache Beam's pin): the generated module does not load
    return
  model = pb.ModelProto()
  model.ParseFromString(proto)
  assert pb.TrainerSpec.ModelType.Name(model.trainer_spec.model_type).lower() == model_type
