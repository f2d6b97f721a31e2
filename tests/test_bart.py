"""BART: HF BartForConditionalGeneration parity (padding, loss, import and export) and greedy
generation equal to HF's; the bart-base parameter count."""

import json

import numpy as np
import pytest

from t5x_lite.config import load_config_file
from t5x_lite.models import build_model


def test_bart_base_count_equals_hf():
  count = build_model(load_config_file("bart.py:bart_base").model).num_params()
  assert count == 139_420_416  # BartForConditionalGeneration facebook/bart-base
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.BartConfig(
    vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
    decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
  )  # fmt: skip
  with torch.device("meta"):
    assert transformers.BartForConditionalGeneration(config).num_parameters() == count


@pytest.mark.slow
def test_bart_parity_import_export_and_greedy_generation(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax.numpy as jnp

  from t5x_lite.convert import hf

  vocab, batch, n_in, n_out = 99, 2, 12, 7
  config = transformers.BartConfig(
    vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
    max_position_embeddings=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    attn_implementation="eager",
  )  # fmt: skip
  torch.manual_seed(0)
  reference = transformers.BartForConditionalGeneration(config).eval()
  with torch.no_grad():
    for parameter in reference.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.position_offset == 2 and model_config.max_length == 34
  model = build_model(model_config)

  rng = np.random.default_rng(0)
  inputs = rng.integers(3, vocab, size=(batch, n_in))
  in_mask = (np.arange(n_in)[None] < np.array([[n_in], [8]])).astype(np.int64)
  inputs = inputs * in_mask
  targets = rng.integers(3, vocab, size=(batch, n_out))
  out_mask = (np.arange(n_out)[None] < np.array([[n_out], [4]])).astype(np.int64)
  targets = targets * out_mask
  decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))  # start token 0, shifted right
  with torch.no_grad():
    out = reference(
      input_ids=torch.tensor(inputs), attention_mask=torch.tensor(in_mask),
      decoder_input_ids=torch.tensor(decoder_inputs),
      decoder_attention_mask=torch.tensor(np.maximum(out_mask, np.eye(n_out)[0][None])),
      labels=torch.tensor(np.where(out_mask > 0, targets, -100)),
    )  # fmt: skip
  ours = {
    "encoder_input_tokens": jnp.asarray(inputs),
    "encoder_segment_ids": jnp.asarray(in_mask),
    "decoder_input_tokens": jnp.asarray(decoder_inputs),
    "decoder_target_tokens": jnp.asarray(targets),
    "decoder_loss_weights": jnp.asarray(out_mask, jnp.float32),
    "decoder_segment_ids": jnp.asarray(out_mask),
  }
  valid = out_mask > 0
  logits = np.asarray(model.apply_logits(params, ours))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, ours, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["architectures"] == ["BartForConditionalGeneration"]
  reloaded = transformers.BartForConditionalGeneration.from_pretrained(
    tmp_path / "export", attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    again = reloaded(
      input_ids=torch.tensor(inputs), attention_mask=torch.tensor(in_mask),
      decoder_input_ids=torch.tensor(decoder_inputs),
    ).logits.numpy()  # fmt: skip
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-4)

  # Greedy generation with the KV cache equals HF's generate (start token 0, no forced tokens).
  prompt, prompt_mask = inputs[1:2], in_mask[1:2]
  with torch.no_grad():
    expected = reference.generate(
      input_ids=torch.tensor(prompt), attention_mask=torch.tensor(prompt_mask), num_beams=1,
      do_sample=False, max_new_tokens=8, decoder_start_token_id=0, forced_bos_token_id=None,
      forced_eos_token_id=None, eos_token_id=None, pad_token_id=0, no_repeat_ngram_size=0,
    )[0, 1:].tolist()  # fmt: skip
  encoded = model.encode(params, {"encoder_input_tokens": jnp.asarray(prompt),
                                  "encoder_segment_ids": jnp.asarray(prompt_mask)})  # fmt: skip
  cache = model.init_cache(1, 16, n_in)
  token, generated = 0, []
  for i in range(len(expected)):
    logits, cache = model.decode_step(
      params, cache, jnp.full((1, 1), token), jnp.full((1, 1), i), encoded=encoded,
      encoder_segment_ids=jnp.asarray(prompt_mask),
    )  # fmt: skip
    token = int(np.argmax(np.asarray(logits)[0, -1]))
    generated.append(token)
  assert len(expected) == 8 and generated == expected
