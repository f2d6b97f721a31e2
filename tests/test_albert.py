"""ALBERT: factorised embedding, one shared block, SOP pairs, HF AlbertForPreTraining parity
(import and export), the albert-base-v2 parameter count."""

import json

import jax
import numpy as np
import pytest

from t5x_lite.config import load_config_file
from t5x_lite.data import objectives
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY, Ragged
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.models import build_model

VOCAB = ByteVocabulary(extra_ids=100)


def test_sop_pairs_are_consecutive_segments_in_order_or_swapped():
  texts = ["".join(chr(97 + (i + j) % 26) for j in range(40 + 7 * i)) for i in range(40)]
  examples = {
    "targets": Ragged.from_rows([VOCAB.encode(t) for t in texts]),
    KEY: np.arange(40, dtype=np.uint64),
  }
  out = objectives.sop_pairs(examples, Context(vocabulary=VOCAB, feature_lengths={"inputs": 23}))
  rows, labels = out["inputs"].rows(), out["nsp_label"]
  seg = (23 - 3) // 2  # 10 tokens a segment
  expected_pairs = sum((len(t) // seg + (len(t) % seg > 0)) // 2 for t in texts)
  # a segment 2k with a successor: count floor(n_segments / 2) per document
  assert len(rows) == expected_pairs
  segments = {VOCAB.decode(t[i : i + seg]) for t in (VOCAB.encode(x) for x in texts)
              for i in range(0, len(t), seg)}  # fmt: skip
  sep = VOCAB.sep_id
  for row, label, types in zip(rows, labels, out["token_type_ids"].rows()):
    assert row[0] == VOCAB.cls_id and row[-1] == sep
    cut = int(np.flatnonzero(row == sep)[0])
    a, b = VOCAB.decode(row[1:cut].tolist()), VOCAB.decode(row[cut + 1 : -1].tolist())
    assert a in segments and b in segments
    first, second = (a, b) if label == 0 else (b, a)
    # in order: the second segment continues the first within one document
    assert any(first + second in t for t in texts), (first, second, label)
    assert types.tolist() == [0] * (cut + 1) + [1] * (len(row) - cut - 1)
  assert 0.35 < labels.mean() < 0.65  # half swapped


def test_albert_base_count_equals_hf_and_sharing_counts_once():
  config = load_config_file("albert.py:albert_base").model
  count = build_model(config).num_params()
  assert count == 11_813_810  # AlbertForPreTraining albert-base-v2
  unshared = build_model(config.to_dict() | {"share_layers": False}).num_params()
  d, f = 768, 3072
  layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
  assert unshared - count == 11 * layer
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hf_config = transformers.AlbertConfig(
    vocab_size=30000, embedding_size=128, hidden_size=768, num_attention_heads=12,
    intermediate_size=3072,
  )  # fmt: skip
  with torch.device("meta"):
    assert transformers.AlbertForPreTraining(hf_config).num_parameters() == count
    assert transformers.AlbertModel(hf_config).num_parameters() == 11_683_584


def test_shared_block_is_applied_num_layers_times():
  config = load_config_file("albert.py:tiny").model
  model = build_model(config)
  params = model.init(jax.random.key(0), model.input_shapes(2, {"encoder_input_tokens": 8}))
  assert list(params["encoder"]) == ["shared_block"]
  batch = {"encoder_input_tokens": np.full((2, 8), 7, np.int32)}
  one = build_model(config.to_dict() | {"num_layers": 1})
  assert not np.allclose(model.apply_logits(params, batch), one.apply_logits(params, batch))


@pytest.mark.slow
def test_albert_parity_import_and_export(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax.numpy as jnp

  from t5x_lite.convert import hf

  vocab, batch, length = 99, 2, 12
  config = transformers.AlbertConfig(
    vocab_size=vocab, embedding_size=16, hidden_size=32, num_hidden_layers=3,
    num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
    attn_implementation="eager",
  )  # fmt: skip
  torch.manual_seed(0)
  reference = transformers.AlbertForPreTraining(config).eval()
  with torch.no_grad():
    for parameter in reference.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.share_layers and model_config.embedding_dim == 16
  model = build_model(model_config)

  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, size=(batch, length))
  mask = (np.arange(length)[None] < np.array([[length], [7]])).astype(np.int64)
  tokens = tokens * mask
  types = (np.arange(length)[None] >= 4).astype(np.int64) * mask
  labels = np.where((rng.random((batch, length)) < 0.3) & (mask > 0), tokens, -100)
  sop = np.array([0, 1])
  with torch.no_grad():
    out = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types), labels=torch.tensor(labels),
                    sentence_order_label=torch.tensor(sop))  # fmt: skip
  ours = {
    "encoder_input_tokens": jnp.asarray(tokens),
    "encoder_target_tokens": jnp.asarray(np.maximum(labels, 0)),
    "encoder_loss_weights": jnp.asarray(labels >= 0, jnp.float32),
    "encoder_segment_ids": jnp.asarray(mask),
    "encoder_positions": jnp.asarray(np.broadcast_to(np.arange(length), (batch, length))),
    "encoder_token_type_ids": jnp.asarray(types),
    "nsp_labels": jnp.asarray(sop),
  }
  valid = mask > 0
  outputs = model.apply_outputs(params, ours)
  np.testing.assert_allclose(
    np.asarray(outputs["mlm_logits"])[valid], out.prediction_logits.numpy()[valid], atol=1e-4
  )
  np.testing.assert_allclose(
    np.asarray(outputs["nsp_logits"])[:, 0], out.sop_logits.numpy(), atol=1e-4
  )
  loss, _ = model.loss(params, ours, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)  # MLM + SOP, as HF sums them

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["architectures"] == ["AlbertForPreTraining"]
  reloaded = transformers.AlbertForPreTraining.from_pretrained(
    tmp_path / "export", attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    again = reloaded(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                     token_type_ids=torch.tensor(types))  # fmt: skip
  np.testing.assert_allclose(
    again.prediction_logits.numpy()[valid], out.prediction_logits.numpy()[valid], atol=1e-4
  )
