"""DistilBERT architecture: HF DistilBertForMaskedLM parity (import and export), base count."""

import json

import numpy as np
import pytest

from t5x_lite.config import load_config_file
from t5x_lite.models import build_model


def test_distilbert_base_count_equals_hf():
  count = build_model(load_config_file("distilbert.py:distilbert_base").model).num_params()
  assert count == 66_985_530  # DistilBertForMaskedLM distilbert-base-uncased
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  with torch.device("meta"):
    model = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())
  assert model.num_parameters() == count


@pytest.mark.slow
def test_distilbert_parity_import_and_export(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax.numpy as jnp

  from t5x_lite.convert import hf

  vocab, batch, length = 99, 2, 12
  config = transformers.DistilBertConfig(
    vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32,
    dropout=0.0, attention_dropout=0.0, attn_implementation="eager",
  )  # fmt: skip
  torch.manual_seed(0)
  reference = transformers.DistilBertForMaskedLM(config).eval()
  with torch.no_grad():
    for parameter in reference.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.type_vocab_size == 0 and not model_config.nsp
  assert "token_type_embedder" not in params and "pooler" not in params
  model = build_model(model_config)

  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, size=(batch, length))
  mask = (np.arange(length)[None] < np.array([[length], [7]])).astype(np.int64)
  tokens = tokens * mask
  labels = np.where((rng.random((batch, length)) < 0.3) & (mask > 0), tokens, -100)
  with torch.no_grad():
    out = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    labels=torch.tensor(labels))  # fmt: skip
  ours = {
    "encoder_input_tokens": jnp.asarray(tokens),
    "encoder_target_tokens": jnp.asarray(np.maximum(labels, 0)),
    "encoder_loss_weights": jnp.asarray(labels >= 0, jnp.float32),
    "encoder_segment_ids": jnp.asarray(mask),
  }
  valid = mask > 0
  logits = np.asarray(model.apply_logits(params, ours))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, ours, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["architectures"] == ["DistilBertForMaskedLM"]
  reloaded = transformers.DistilBertForMaskedLM.from_pretrained(
    tmp_path / "export", attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    again = reloaded(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-4)
