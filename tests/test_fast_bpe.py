"""tiktoken encodes GPT-2-style byte-level BPE id for id as `tokenizers` does, or is not used."""

import json
import random

import pytest
import tokenizers
from tokenizers import normalizers, pre_tokenizers

from t5x_lite.data import fast_bpe
from t5x_lite.data.sources import PydocSource
from t5x_lite.data.tokenizer_training import train_tokenizers_vocabulary


def _pydoc(start, stop):
  source = PydocSource()
  texts = [source.document(i)["text"] for i in range(source.num_documents())]
  return [t for t in texts if t.strip()][start:stop]


def _reference(vocabulary, texts):
  encodings = vocabulary.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
  return [e.ids for e in encodings]


def test_byte_map_is_tokenizers_alphabet():
  assert set(fast_bpe.unicode_to_byte()) == set(pre_tokenizers.ByteLevel.alphabet())
  assert sorted(fast_bpe.unicode_to_byte().values()) == list(range(256))


@pytest.fixture(scope="module")
def trained():
  texts = _pydoc(0, 300)
  return train_tokenizers_vocabulary(texts, "byte-bpe", 2000, 20, min_frequency=2)


def test_trained_byte_bpe_encodes_through_tiktoken_with_the_same_ids(trained):
  assert trained.tiktoken_encoding is not None
  texts = _pydoc(300, 400)
  texts += [
    "Grüße aus Köln — ça va? 東京 🙂 naïve\u00a0café",
    "tabs\tand   runs of    spaces\n\n\nand newlines  \n",
    "numbers 12345 3.14159 -7e10 and 'quotes' don't won't I'm we've they're",
    "specials inside: a<extra_id_3>b </s>word<extra_id_1><extra_id_10> <pad>",
    "",
    " ",
    "\u0000\u0001 control bytes \ufeff",
  ]
  assert trained._encode_batch(texts) == _reference(trained, texts)
  assert trained.encode("a<extra_id_1><extra_id_10>")[1:] == [
    trained.sentinel_id(1),
    trained.sentinel_id(10),
  ]


def test_random_strings_over_small_alphabets_agree():
  """Many overlapping merges: where tiktoken's rule (merge the pair whose result has the lowest
  id) and `tokenizers`' (the listed merge of lowest rank) could part, they do not."""
  rng = random.Random(0)
  compared = 0
  for alphabet in ("ab ", "abc  ", "aab b", "xyz xy\n", "éa b"):
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(5, 60))) for _ in range(300)]
    vocabulary = train_tokenizers_vocabulary(texts, "byte-bpe", 400, 2, min_frequency=1)
    assert vocabulary.tiktoken_encoding is not None
    probes = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(500)]
    assert vocabulary._encode_batch(probes) == _reference(vocabulary, probes)
    compared += len(probes)
  assert compared == 2500


def _edited(vocabulary, edit):
  state = json.loads(vocabulary.tokenizer.to_str())
  edit(state)
  return tokenizers.Tokenizer.from_str(json.dumps(state))


@pytest.mark.parametrize(
  "edit, reason",
  [
    (lambda s: s["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
    (lambda s: s["pre_tokenizer"].update(use_regex=False), "not ByteLevel"),
    (lambda s: s.update(normalizer={"type": "Lowercase"}), "normalizer Lowercase"),
    (lambda s: s["model"].update(dropout=0.1), "dropout"),
    (lambda s: s["model"]["merges"].reverse(), "merge order is not id order"),
    (lambda s: s["added_tokens"][0].update(lstrip=True), "strips"),
  ],
)
def test_other_tokenizers_keep_the_tokenizers_encoder(trained, edit, reason):
  encoding, why = fast_bpe.tiktoken_encoder(_edited(trained, edit))
  assert encoding is None and reason in why


def test_unreachable_token_keeps_the_tokenizers_encoder(trained):
  """A vocabulary token its merges cannot build: tiktoken would emit it whole, tokenizers not."""

  def drop_a_merge(state):
    merges = state["model"]["merges"]
    vocab = state["model"]["vocab"]
    # drop the last merge; its token stays in the vocabulary, now unreachable
    left, right = merges.pop() if isinstance(merges[-1], list) else merges.pop().split(" ")
    assert left + right in vocab

  encoding, why = fast_bpe.tiktoken_encoder(_edited(trained, drop_a_merge))
  assert encoding is None and "not reachable" in why


def test_wordpiece_and_the_switch_keep_the_tokenizers_encoder(monkeypatch):
  texts = _pydoc(0, 100)
  wordpiece = train_tokenizers_vocabulary(texts, "wordpiece", 500, 0)
  assert fast_bpe.tiktoken_encoder(wordpiece.tokenizer) == (None, "model is WordPiece, not BPE")
  assert wordpiece.tiktoken_encoding is None
  monkeypatch.setenv("T5X_LITE_TIKTOKEN", "0")
  byte_bpe = train_tokenizers_vocabulary(texts, "byte-bpe", 500, 0)
  assert byte_bpe.tiktoken_encoding is None
  text = "the same ids either way"
  assert byte_bpe.encode(text) == _reference(byte_bpe, [text])[0]


def test_normalizer_reason_names_it():
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.normalizer = normalizers.NFKC()
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  assert fast_bpe.tiktoken_encoder(tokenizer)[1] == "normalizer NFKC"
