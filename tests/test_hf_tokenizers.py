"""Hugging Face checkpoints in and out with their tokenizers, from text (issue 11).

GPT-2 (byte-level BPE), BERT (WordPiece vocab.txt) and T5 v1.0 / v1.1 (SentencePiece): a
tokenizer trained here + a random `transformers` model saved with `save_pretrained`, converted
with `t5x-lite convert --from hf`, then read through `t5x_lite.load(run)` on raw strings: the
same ids as the HF tokenizer, logits within 1e-4, the same greedy continuation as
`model.generate`, the same hidden states. Then `convert --to hf` back, and bad folders.
"""

import io
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF tests need torch (pip install '.[hf]')")
transformers = pytest.importorskip("transformers", reason="HF tests need transformers")

import sentencepiece as spm  # noqa: E402
from test_tokenizers import CORPUS, _plain_bpe, _vocab_and_merges  # noqa: E402

import t5x_lite  # noqa: E402
from t5x_lite import cli, decoding  # noqa: E402
from t5x_lite.data import tokenizer_training  # noqa: E402
from t5x_lite.data.hf_vocabulary import HuggingFaceVocabulary  # noqa: E402
from t5x_lite.data.vocabularies import SentencePieceVocabulary  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZEN_WORDS = sorted(set(" ".join(CORPUS[0].split()).lower().replace(".", "").split()))
TEXTS = ["Errors should never pass silently.", "Now is better than never, café 日本."]


def _randomize(model):
  torch.manual_seed(0)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  return model.eval()


def _convert(hf_dir, out) -> None:
  assert cli.main(["convert", "--from", "hf", "--model", str(hf_dir), "--out", str(out)]) == 0


def _gpt2_folder(tmp_path):
  vocab, merges = _vocab_and_merges(_plain_bpe(CORPUS * 3, 300))
  eot = len(vocab)
  vocab["<|endoftext|>"] = eot
  files = tmp_path / "files"
  files.mkdir()
  (files / "vocab.json").write_text(json.dumps(vocab))
  (files / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  tokenizer = transformers.GPT2Tokenizer(vocab=str(files / "vocab.json"),
                                         merges=str(files / "merges.txt"))  # fmt: skip
  hf = tmp_path / "gpt2"
  tokenizer.save_pretrained(str(hf))
  config = transformers.GPT2Config(
    vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot,
  )  # fmt: skip
  model = _randomize(transformers.GPT2LMHeadModel(config))
  model.save_pretrained(str(hf))
  return hf, tokenizer, model


def test_gpt2_from_text(tmp_path):
  hf, tokenizer, reference = _gpt2_folder(tmp_path)
  _convert(hf, tmp_path / "run")
  loaded = t5x_lite.load(str(tmp_path / "run"))
  assert isinstance(loaded.vocabulary, HuggingFaceVocabulary)
  eot = tokenizer.eos_token_id
  assert loaded.vocabulary.eos_id == eot == len(tokenizer) - 1
  for text in TEXTS:
    ids = loaded.vocabulary.encode(text)
    assert ids == tokenizer(text)["input_ids"]
    tokens = np.array([ids], np.int32)
    batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens}
    ours = np.asarray(loaded.model.apply_logits(loaded.params, batch))
    with torch.no_grad():
      theirs = reference(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # Greedy continuation with the KV cache. The converted decoder reads GPT-2's
    # <|endoftext|> before the prompt (model.decoder_start_id): HF is given the same start.
    assert loaded.model.config.decoder_start_id == eot
    new = decoding.generate_ids(loaded.model, loaded.params, [ids], max_new_tokens=8, eos_id=eot)
    with torch.no_grad():
      out = reference.generate(torch.tensor([[eot] + ids]), max_new_tokens=8, do_sample=False,
                               pad_token_id=eot)[0, len(ids) + 1 :].tolist()  # fmt: skip
    assert new[0][: len(out)].tolist() == out
    text_out = loaded.generate([text], max_new_tokens=8)[0]
    assert text_out == tokenizer.decode([t for t in out if t != eot])
  # Id 0 is GPT-2's '!', a real token: `embed` must not take it for padding.
  text = "Yes!! Now!"
  ids = tokenizer(text)["input_ids"]
  assert ids.count(0) >= 2
  # `embed` frames the text as text + EOS; the decoder reads it after its start token, so its
  # states are those of [start] + text (the state after each token, EOS read last is not).
  with torch.no_grad():
    hidden = reference(torch.tensor([[eot] + ids]), output_hidden_states=True).hidden_states[-1]
  expected = hidden[0].numpy().mean(0)
  np.testing.assert_allclose(loaded.embed([text])[0], expected, atol=1e-4)


def _bert_folder(tmp_path):
  trained = tokenizer_training.train_vocabulary(
    iter(CORPUS * 3), "wordpiece", 200, 0, str(tmp_path / "trained"), lowercase=True
  )
  order = ["[PAD]", "[unused0]"] + [p for p in trained.pieces() if not p.startswith("[")]
  order[5:5] = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  hf = tmp_path / "bert"
  hf.mkdir()
  (hf / "vocab.txt").write_text("\n".join(order) + "\n")
  (hf / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
  )
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf))
  config = transformers.BertConfig(
    vocab_size=len(order), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
  )  # fmt: skip
  model = _randomize(transformers.BertForMaskedLM(config))
  model.save_pretrained(str(hf))
  return hf, tokenizer, model


def test_bert_from_text(tmp_path):
  hf, tokenizer, reference = _bert_folder(tmp_path)
  _convert(hf, tmp_path / "run")
  loaded = t5x_lite.load(str(tmp_path / "run"))
  v = loaded.vocabulary
  assert (v.pad_id, v.unk_id, v.cls_id, v.sep_id, v.mask_id) == (0, 5, 6, 7, 8)
  for text in TEXTS:
    framed = tokenizer(text)["input_ids"]
    assert [v.cls_id, *v.encode(text), v.sep_id] == framed
    tokens = np.array([framed], np.int32)
    batch = {"encoder_input_tokens": tokens, "encoder_segment_ids": np.ones_like(tokens)}
    ours = np.asarray(loaded.model.apply_logits(loaded.params, batch))
    with torch.no_grad():
      out = reference(torch.tensor([framed]), output_hidden_states=True)
    np.testing.assert_allclose(ours, out.logits.numpy(), atol=1e-4)
    # `embed` from the string: the [CLS] state, and the mean over the framed tokens.
    hidden = out.hidden_states[-1][0].numpy()
    np.testing.assert_allclose(loaded.embed([text], pooling="cls")[0], hidden[0], atol=1e-4)
    np.testing.assert_allclose(loaded.embed([text])[0], hidden.mean(0), atol=1e-4)


def _t5_folder(tmp_path, version: str):
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter("\n".join(CORPUS * 3).split("\n")), model_writer=buffer,
    vocab_size=120, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    character_coverage=1.0, minloglevel=2,
  )  # fmt: skip
  source = tmp_path / "spm"
  source.mkdir()
  (source / "spiece.model").write_bytes(buffer.getvalue())
  (source / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 10})
  )
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
  hf = tmp_path / f"t5_{version}"
  tokenizer.save_pretrained(str(hf))
  if version == "v1.0":  # the published T5 folders also ship the SentencePiece model
    (hf / "spiece.model").write_bytes(buffer.getvalue())
  config = transformers.T5Config(
    vocab_size=len(tokenizer) + 6,  # a padded embedding, as T5's 32128 rows for 32100 ids
    d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
    dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    feed_forward_proj="relu" if version == "v1.0" else "gated-gelu",
    tie_word_embeddings=version == "v1.0",
  )  # fmt: skip
  model = transformers.T5ForConditionalGeneration(config)
  if version == "v1.1":
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
  model = _randomize(model)
  model.save_pretrained(str(hf))
  return hf, tokenizer, model


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_from_text(tmp_path, version):
  hf, tokenizer, reference = _t5_folder(tmp_path, version)
  _convert(hf, tmp_path / "run")
  loaded = t5x_lite.load(str(tmp_path / "run"))
  v = loaded.vocabulary
  expected_class = SentencePieceVocabulary if version == "v1.0" else HuggingFaceVocabulary
  assert type(v) is expected_class and v.extra_ids == 10
  assert v.sentinel_id(0) == tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
  for text in TEXTS:
    framed = tokenizer(text)["input_ids"]
    assert v.encode(text) + [v.eos_id] == framed
    new = decoding.generate_ids(loaded.model, loaded.params, [framed], max_new_tokens=6,
                                eos_id=v.eos_id)  # fmt: skip
    with torch.no_grad():
      out = reference.generate(torch.tensor([framed]), max_new_tokens=6, do_sample=False)
    out = out[0, 1:].tolist()  # after the decoder start token
    assert new[0][: len(out)].tolist() == out
    targets = np.array([out], np.int32)  # segment ids come from targets > 0
    decoder = np.array([[0] + out[:-1]], np.int32)
    batch = {"encoder_input_tokens": np.array([framed], np.int32),
             "decoder_input_tokens": decoder, "decoder_target_tokens": targets}  # fmt: skip
    ours = np.asarray(loaded.model.apply_logits(loaded.params, batch))
    with torch.no_grad():
      theirs = reference(input_ids=torch.tensor([framed]),
                         decoder_input_ids=torch.tensor(decoder)).logits.numpy()  # fmt: skip
    valid = targets > 0
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4)


# --- out: convert --to hf -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "bert", "t5"])
def test_round_trip_to_hf_with_tokenizer(tmp_path, family):
  """In from HF, out again with `convert --to hf`: AutoTokenizer + AutoModel give the logits of
  the original model from the same strings (the exported tokenizer frames text itself)."""
  make = {"gpt2": _gpt2_folder, "bert": _bert_folder, "t5": lambda p: _t5_folder(p, "v1.1")}
  hf, tokenizer, reference = make[family](tmp_path)
  _convert(hf, tmp_path / "run")
  out = tmp_path / "exported"
  argv = ["convert", "--to", "hf", "--model", str(tmp_path / "run"), "--out", str(out)]
  assert cli.main(argv) == 0
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  auto = {"gpt2": transformers.AutoModelForCausalLM, "bert": transformers.AutoModelForMaskedLM,
          "t5": transformers.AutoModelForSeq2SeqLM}[family]  # fmt: skip
  exported = auto.from_pretrained(str(out)).eval()
  for text in TEXTS:
    ids = exported_tokenizer(text)["input_ids"]
    if family == "gpt2":  # the decoder's start token (<|endoftext|>) first
      assert ids == [tokenizer.eos_token_id] + tokenizer(text)["input_ids"]
    else:
      assert ids == tokenizer(text)["input_ids"]
    kwargs = {"decoder_input_ids": torch.tensor([[0, 5, 7]])} if family == "t5" else {}
    with torch.no_grad():
      theirs = reference(torch.tensor([ids]), **kwargs).logits.numpy()
      again = exported(torch.tensor([ids]), **kwargs).logits.numpy()
    np.testing.assert_allclose(again, theirs, atol=1e-5)


# --- bad folders ----------------------------------------------------------------------------------


def test_bad_hf_folders_fail_in_one_line(tmp_path, capsys):
  hf, tokenizer, _ = _bert_folder(tmp_path)
  capsys.readouterr()  # transformers' own progress output while saving the folder

  def convert(folder, out):
    code = cli.main(["convert", "--from", "hf", "--model", str(folder), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert not os.path.exists(out)  # nothing half-written
    return err

  bare = tmp_path / "bare"
  bare.mkdir()
  for name in ("config.json", "model.safetensors"):
    (bare / name).write_bytes((hf / name).read_bytes())
  assert "has no tokenizer (expected one of tokenizer.json" in convert(bare, tmp_path / "o1")

  small = tmp_path / "small"
  small.mkdir()
  for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
    (small / name).write_bytes((hf / name).read_bytes())
  grown = (hf / "vocab.txt").read_text() + "".join(f"extra{i}\n" for i in range(5))
  (small / "vocab.txt").write_text(grown)  # 5 ids more than the embedding has rows
  err = convert(small, tmp_path / "o2")
  assert "the tokenizer has" in err and "rows" in err

  unknown = tmp_path / "unknown"
  unknown.mkdir()
  for name in ("model.safetensors", "vocab.txt", "tokenizer_config.json"):
    (unknown / name).write_bytes((hf / name).read_bytes())
  config = json.loads((hf / "config.json").read_text())
  config.update(model_type="llama", architectures=["LlamaForCausalLM"])
  (unknown / "config.json").write_text(json.dumps(config))
  assert "model_type='llama' is not supported" in convert(unknown, tmp_path / "o3")

  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
    (corrupt / name).write_bytes((hf / name).read_bytes())
  (corrupt / "model.safetensors").write_bytes((hf / "model.safetensors").read_bytes()[:200])
  err = convert(corrupt, tmp_path / "o4")
  assert "model.safetensors: not a readable safetensors file" in err


# --- fine-tuning from a converted checkpoint, and exporting the classifier -------------------------

TASK_MODULE = """
from t5x_lite.data.tasks import finetune
finetune.classification_task(
  "tok_test_contains_never", {train!r}, {validation!r}, labels=["no", "yes"],
)
"""


@pytest.mark.slow
def test_finetuned_classifier_exports_with_its_tokenizer(tmp_path, capsys):
  """convert --from hf, fine-tune with train.init_from and no data.vocab_path (the vocabulary
  is found), convert --to hf: AutoModelForSequenceClassification gives t5x_lite's labels."""
  hf, tokenizer, _ = _bert_folder(tmp_path)
  _convert(hf, tmp_path / "run")
  rng = np.random.default_rng(0)
  words = ZEN_WORDS
  for split, n in (("train", 64), ("validation", 16)):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      for _ in range(n):
        text = " ".join(rng.choice(words, 8))
        f.write(json.dumps({"text": text, "label": "yes" if "never" in text else "no"}) + "\n")
  module = tmp_path / "tok_tasks.py"
  module.write_text(TASK_MODULE.format(train=str(tmp_path / "train.jsonl"),
                                       validation=str(tmp_path / "validation.jsonl")))  # fmt: skip
  model = json.loads((hf / "config.json").read_text())
  workdir = tmp_path / "finetuned"
  argv = [
    "train", "--config", "bert.py:tiny", "--workdir", str(workdir),
    f"--config.train.init_from={tmp_path / 'run'}", "--config.train.steps=3",
    "--config.train.batch_size=8", "--config.train.eval_every=0", "--config.train.sample_prompt=",
    f"--config.data.task_modules=('{module}',)", "--config.data.task=tok_test_contains_never",
    "--config.data.feature_lengths={'inputs': 24}", "--config.model.head=classification",
    "--config.model.num_labels=2", f"--config.model.vocab_size={model['vocab_size']}",
    "--config.model.d_model=32", "--config.model.d_ff=37", "--config.model.max_length=64",
    "--config.model.nsp=False", "--config.model.dropout_rate=0.0",
  ]  # fmt: skip
  assert cli.main(argv) == 0, capsys.readouterr().err[-3000:]
  loaded = t5x_lite.load(str(workdir))
  assert (
    loaded.vocabulary.fingerprint == t5x_lite.load(str(tmp_path / "run")).vocabulary.fingerprint
  )
  out = tmp_path / "exported"
  assert cli.main(["convert", "--to", "hf", "--model", str(workdir), "--out", str(out)]) == 0
  exported = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
  assert exported.config.id2label == {0: "no", 1: "yes"}
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  texts = ["never is often better than right now", "flat is better than nested"]
  ours = loaded.classify(texts)
  batch = exported_tokenizer(texts, padding=True, return_tensors="pt")
  with torch.no_grad():
    probabilities = torch.softmax(exported(**batch).logits, -1).numpy()
  for row, theirs in zip(ours, probabilities):
    np.testing.assert_allclose([row["probabilities"][n] for n in ("no", "yes")], theirs, atol=1e-4)
    assert row["label"] == exported.config.id2label[int(theirs.argmax())]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_pretrained_here_exports_to_hf(tmp_path, family, shared_vocab_workdir):
  """Pre-train a tiny model here (default SentencePiece vocabulary), `convert --to hf`:
  AutoTokenizer frames the strings as t5x_lite does, AutoModel gives its logits and greedy ids."""
  workdir = str(tmp_path / "run")
  if family == "gpt":
    shared_vocab_workdir(workdir)  # the session's trained vocabulary: no re-training
  lengths = {"gpt": "{'targets': 64}", "bert": "{'inputs': 64}",
             "t5": "{'inputs': 64, 'targets': 16}"}[family]  # fmt: skip
  argv = ["train", "--config", f"{family}.py:tiny", "--workdir",
          workdir, "--config.train.steps=2", "--config.train.batch_size=8",
          "--config.train.eval_every=0", "--config.train.sample_prompt=",
          f"--config.data.feature_lengths={lengths}"]  # fmt: skip
  assert cli.main(argv) == 0
  out = tmp_path / "exported"
  assert cli.main(["convert", "--to", "hf", "--model", workdir, "--out", str(out)]) == 0
  loaded = t5x_lite.load(workdir)
  v = loaded.vocabulary
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  auto = {"gpt": transformers.AutoModelForCausalLM, "bert": transformers.AutoModelForMaskedLM,
          "t5": transformers.AutoModelForSeq2SeqLM}[family]  # fmt: skip
  exported = auto.from_pretrained(str(out)).eval()
  for text in TEXTS:
    ids = v.encode(text)
    framed = exported_tokenizer(text)["input_ids"]
    if family == "gpt":
      assert framed == [loaded.model.config.decoder_start_id] + ids
      tokens = np.array([framed[1:]], np.int32)
      batch = {"decoder_input_tokens": np.array([framed[:-1]], np.int32),
               "decoder_target_tokens": tokens}  # fmt: skip
      with torch.no_grad():
        theirs = exported(torch.tensor([framed])).logits.numpy()[:, :-1]
    elif family == "bert":
      assert framed == [v.cls_id, *ids, v.sep_id]
      tokens = np.array([framed], np.int32)
      batch = {"encoder_input_tokens": tokens, "encoder_segment_ids": np.ones_like(tokens)}
      with torch.no_grad():
        theirs = exported(torch.tensor([framed])).logits.numpy()
    else:
      assert framed == ids + [v.eos_id]
      decoder = np.array([[0, 5, 9]], np.int32)
      batch = {
        "encoder_input_tokens": np.array([framed], np.int32),
        "decoder_input_tokens": decoder,
        "decoder_target_tokens": np.ones_like(decoder),
      }
      with torch.no_grad():
        theirs = exported(input_ids=torch.tensor([framed]),
                          decoder_input_ids=torch.tensor(decoder)).logits.numpy()  # fmt: skip
    ours = np.asarray(loaded.model.apply_logits(loaded.params, batch))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    if family != "bert":  # the same greedy continuation, with HF's own KV cache
      prompt = ids if family == "gpt" else ids + [v.eos_id]
      new = decoding.generate_ids(loaded.model, loaded.params, [prompt], max_new_tokens=6,
                                  eos_id=v.eos_id)[0].tolist()  # fmt: skip
      with torch.no_grad():
        generated = exported.generate(torch.tensor([framed]), max_new_tokens=6, do_sample=False,
                                      eos_token_id=v.eos_id, pad_token_id=v.pad_id)  # fmt: skip
      start = len(framed) if family == "gpt" else 1
      theirs_new = generated[0, start:].tolist()
      assert new[: len(theirs_new)] == theirs_new
