"""RoBERTa: FULL-SENTENCES rows, dynamic masking (new each epoch, same on resume), HF
RobertaForMaskedLM parity both ways, the roberta-base parameter counts."""

import json

import numpy as np
import pytest

from t5x_lite.config import load_config_file
from t5x_lite.data import objectives, pipeline, preprocessors
from t5x_lite.data.feature_converters import EncoderFeatureConverter
from t5x_lite.data.keys import derive_keys
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.registry import Feature, Task
from t5x_lite.data.sources import InMemorySource
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.models import build_model

VOCAB = ByteVocabulary(extra_ids=100)


def _encode(texts):
  return Ragged.from_rows([VOCAB.encode(t) for t in texts])


def test_full_sentences_packs_whole_sentences_across_documents():
  texts = ["Aa bb. Cc dd!", "Ee. Ff gg hh.", "Ii jj kk ll mm nn oo pp qq rr ss tt."]
  examples = {"targets": _encode(texts), KEY: np.arange(3, dtype=np.uint64)}
  context = Context(vocabulary=VOCAB, feature_lengths={"inputs": 16})
  out = objectives.full_sentences(examples, context)
  rows = out["inputs"].rows()
  cls_, sep = VOCAB.cls_id, VOCAB.sep_id
  decoded = [VOCAB.decode(r[1:-1].tolist()) for r in rows]
  body = lambda r: r[1:-1].tolist()  # noqa: E731
  assert all(r[0] == cls_ and r[-1] == sep and len(r) <= 16 for r in rows)
  # Whole sentences, greedy: "Aa bb." (6) + " Cc dd!" (7) fit 14; the next sentence starts a
  # new row with the document separator; the 36-token sentence is cut into rows of 14.
  assert decoded[0] == "Aa bb. Cc dd!"
  assert body(rows[1])[0] == sep and VOCAB.decode(body(rows[1])[1:]) == "Ee. Ff gg hh."
  assert sum(len(body(r)) for r in rows) == sum(len(t) for t in texts) + 2  # + 2 separators
  assert [len(body(r)) for r in rows[2:]] == [14, 14, 9]  # [SEP] + 36 tokens = 37
  assert out[KEY].tolist() == derive_keys(np.uint64(0), np.arange(len(rows))).tolist()


def test_full_sentences_row_crosses_document_boundary():
  examples = {"targets": _encode(["Ab.", "Cd.", "Ef."]), KEY: np.arange(3, dtype=np.uint64)}
  context = Context(vocabulary=VOCAB, feature_lengths={"inputs": 64})
  (row,) = objectives.full_sentences(examples, context)["inputs"].rows()
  sep = VOCAB.sep_id
  assert row.tolist() == [VOCAB.cls_id, *VOCAB.encode("Ab."), sep, *VOCAB.encode("Cd."), sep,
                          *VOCAB.encode("Ef."), sep]  # fmt: skip


def _stream():
  texts = [f"Document {i} says hello. It has two sentences about item {i}." for i in range(12)]
  task = Task(
    "roberta_dynamic_masking_test", source=InMemorySource(texts, validation_fraction=0.1),
    preprocessors=[preprocessors.tokenize, objectives.full_sentences, objectives.mlm],
    output_features={"inputs": Feature(add_eos=False), "targets": Feature(add_eos=False)},
  )  # fmt: skip
  return pipeline.TaskStream(
    task, "train", VOCAB, EncoderFeatureConverter(pack=False), {"inputs": 64}, seed=3,
    documents_per_block=1,
  )  # fmt: skip


def test_dynamic_masking_new_mask_each_epoch_same_on_resume():
  stream = _stream()
  n = stream.num_documents
  masks = {}
  for block in range(3 * n):  # three epochs, one document per block
    doc_id = stream._blocks[block][0]["id"]
    examples = stream.examples(block)
    masked = examples["targets"].values > 0
    masks.setdefault(doc_id, []).append(masked)
  for doc_id, per_epoch in masks.items():
    assert len(per_epoch) == 3
    assert not np.array_equal(per_epoch[0], per_epoch[1]), doc_id
    assert not np.array_equal(per_epoch[1], per_epoch[2]), doc_id
    assert 0.05 < np.mean(np.concatenate(per_epoch)) < 0.3  # about 15% of tokens
  # Resume: a fresh stream (as after a restart) recomputes exactly the same masks.
  again = _stream()
  for block in (0, n + 2, 2 * n + 5):
    a, b = stream.block(block), again.block(block)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_roberta_base_counts_equal_hf():
  count = build_model(load_config_file("roberta.py:roberta_base").model).num_params()
  assert count == 124_697_433  # RobertaForMaskedLM roberta-base
  d, v = 768, 50265
  mlm_head = d * d + d + 2 * d + v  # dense, LayerNorm, decoder bias (decoder weight tied)
  pooler = d * d + d
  assert count - mlm_head + pooler == 124_645_632  # RobertaModel roberta-base
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.RobertaConfig(
    vocab_size=v, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5
  )
  with torch.device("meta"):
    assert transformers.RobertaForMaskedLM(config).num_parameters() == count
    assert transformers.RobertaModel(config).num_parameters() == 124_645_632


@pytest.mark.slow
@pytest.mark.parametrize("pad_token_id", [1, 0])  # roberta-base's <pad> = 1; ours = 0
def test_roberta_parity_import_and_export(tmp_path, pad_token_id):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax.numpy as jnp

  from t5x_lite.convert import hf

  vocab, batch, length = 99, 2, 12
  config = transformers.RobertaConfig(
    vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=length + pad_token_id + 1, type_vocab_size=1,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=pad_token_id,
    attn_implementation="eager",
  )  # fmt: skip
  torch.manual_seed(0)
  reference = transformers.RobertaForMaskedLM(config).eval()
  with torch.no_grad():
    for parameter in reference.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.position_offset == pad_token_id + 1 and not model_config.nsp
  model = build_model(model_config)

  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, size=(batch, length))
  mask = (np.arange(length)[None] < np.array([[length], [7]])).astype(np.int64)
  tokens = np.where(mask > 0, tokens, pad_token_id)
  labels = np.where((rng.random((batch, length)) < 0.3) & (mask > 0), tokens, -100)
  with torch.no_grad():
    out = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    labels=torch.tensor(labels))  # fmt: skip
  ours = {
    "encoder_input_tokens": jnp.asarray(tokens),
    "encoder_target_tokens": jnp.asarray(np.maximum(labels, 0)),
    "encoder_loss_weights": jnp.asarray(labels >= 0, jnp.float32),
    "encoder_segment_ids": jnp.asarray(mask),
    "encoder_positions": jnp.asarray(np.broadcast_to(np.arange(length), (batch, length))),
    "encoder_token_type_ids": jnp.zeros((batch, length), jnp.int32),
  }
  valid = mask > 0
  logits = np.asarray(model.apply_logits(params, ours))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, ours, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["architectures"] == ["RobertaForMaskedLM"]
  assert exported["pad_token_id"] == pad_token_id
  reloaded = transformers.RobertaForMaskedLM.from_pretrained(
    tmp_path / "export", attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    again = reloaded(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-4)
