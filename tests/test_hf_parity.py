"""Parity with the Hugging Face PyTorch reference: BERT (MLM+NSP), GPT-2, T5 v1.0 and v1.1.

Tiny random HF models (every weight perturbed, so biases and norm scales are not trivially 0/1)
are saved with safetensors, imported, and run on the same padded inputs: logits agree to 1e-4
and losses to 1e-5 in float32; export -> HF reload gives the reference logits again.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity tests need torch (pip install '.[hf]')")
transformers = pytest.importorskip(
  "transformers", reason="HF parity tests need transformers (pip install '.[hf]')"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from t5x_lite.convert import hf  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402
from t5x_lite.models.layers import relative_position_bucket  # noqa: E402

pytestmark = pytest.mark.slow  # torch and transformers reference models

VOCAB, BATCH, LENGTH = 99, 2, 12


def _save_random(model_cls, config, path, untie_lm_head=False):
  torch.manual_seed(0)
  model = model_cls(config).eval()
  if untie_lm_head:  # T5 v1.1 has its own lm_head (transformers >= 5 ties it by default)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  model.save_pretrained(path, safe_serialization=True)
  return model


def _tokens(seed, lengths):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, VOCAB, size=(BATCH, LENGTH))
  mask = np.arange(LENGTH)[None] < np.asarray(lengths)[:, None]
  return tokens * mask, mask.astype(np.int64)


def _reload(model_cls, directory):
  return model_cls.from_pretrained(directory, attn_implementation="eager").eval()


def test_gpt2(tmp_path):
  config = transformers.GPT2Config(
    vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
    embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
  )  # fmt: skip
  reference = _save_random(transformers.GPT2LMHeadModel, config, tmp_path / "hf")
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.activation == "gelu_new" and model_config.layer_norm_epsilon == 1e-5
  model = build_model(model_config)
  tokens, mask = _tokens(0, [LENGTH, 7])
  with torch.no_grad():
    out = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    labels=torch.tensor(np.where(mask > 0, tokens, -100)))  # fmt: skip
  targets = np.pad(tokens[:, 1:], ((0, 0), (0, 1)))
  batch = {
    "decoder_input_tokens": jnp.asarray(tokens),
    "decoder_target_tokens": jnp.asarray(targets),
    "decoder_loss_weights": jnp.asarray(mask * np.pad(mask[:, 1:], ((0, 0), (0, 1))), jnp.float32),
    "decoder_segment_ids": jnp.asarray(mask),
  }
  valid = mask > 0
  logits = np.asarray(model.apply_logits(params, batch))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, batch, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  reloaded = _reload(transformers.GPT2LMHeadModel, tmp_path / "export")
  with torch.no_grad():
    again = reloaded(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-5)


@pytest.mark.parametrize("architecture", ["BertForPreTraining", "BertForMaskedLM"])
def test_bert(tmp_path, architecture):
  config = transformers.BertConfig(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, attn_implementation="eager",
  )  # fmt: skip
  model_cls = getattr(transformers, architecture)
  reference = _save_random(model_cls, config, tmp_path / "hf")
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.nsp == (architecture == "BertForPreTraining")
  model = build_model(model_config)
  tokens, mask = _tokens(1, [LENGTH, 8])
  type_ids = (np.arange(LENGTH)[None] >= 5).astype(np.int64) * mask
  rng = np.random.default_rng(2)
  selected = (rng.random((BATCH, LENGTH)) < 0.4) & (mask > 0)
  nsp = np.array([0, 1])
  inputs = dict(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(type_ids),
                labels=torch.tensor(np.where(selected, tokens, -100)))  # fmt: skip
  if model_config.nsp:
    inputs["next_sentence_label"] = torch.tensor(nsp)
  with torch.no_grad():
    out = reference(**inputs)
  mlm_reference = (out.prediction_logits if model_config.nsp else out.logits).numpy()
  batch = {
    "encoder_input_tokens": jnp.asarray(tokens),
    "encoder_segment_ids": jnp.asarray(mask),
    "encoder_token_type_ids": jnp.asarray(type_ids),
    "encoder_target_tokens": jnp.asarray(np.where(selected, tokens, 0)),
    "encoder_loss_weights": jnp.asarray(selected, jnp.float32),
    "nsp_labels": jnp.asarray(np.pad(nsp[:, None], ((0, 0), (0, LENGTH - 1)))),
  }
  valid = mask > 0
  outputs = model.apply_outputs(params, batch)
  np.testing.assert_allclose(
    np.asarray(outputs["mlm_logits"])[valid], mlm_reference[valid], atol=1e-4
  )
  if model_config.nsp:
    np.testing.assert_allclose(
      outputs["nsp_logits"][:, 0], out.seq_relationship_logits.numpy(), atol=1e-4
    )
  loss, metrics = model.loss(params, batch, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  assert json.loads((tmp_path / "export" / "config.json").read_text())["architectures"] == [
    architecture
  ]
  reloaded = _reload(model_cls, tmp_path / "export")
  inputs.pop("labels"), inputs.pop("next_sentence_label", None)
  with torch.no_grad():
    again = reloaded(**inputs)
  again_logits = (again.prediction_logits if model_config.nsp else again.logits).numpy()
  np.testing.assert_allclose(again_logits[valid], mlm_reference[valid], atol=1e-5)


@pytest.mark.parametrize("version", ["v1_0", "v1_1"])
def test_t5(tmp_path, version):
  v1_1 = version == "v1_1"
  config = transformers.T5Config(
    vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
    num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
    dropout_rate=0.0, feed_forward_proj="gated-gelu" if v1_1 else "relu",
    tie_word_embeddings=not v1_1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    attn_implementation="eager",
  )  # fmt: skip
  reference = _save_random(
    transformers.T5ForConditionalGeneration, config, tmp_path / "hf", untie_lm_head=v1_1
  )
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.activation == ("gated-gelu" if v1_1 else "relu")
  assert model_config.tie_embeddings == (not v1_1) and model_config.num_decoder_layers == 3
  model = build_model(model_config)
  inputs, input_mask = _tokens(3, [LENGTH, 6])
  targets, target_mask = _tokens(4, [9, 5])
  targets, target_mask = targets[:, :9], target_mask[:, :9]
  labels = np.where(target_mask > 0, targets, -100)
  with torch.no_grad():
    out = reference(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(input_mask),
                    labels=torch.tensor(labels))  # fmt: skip
  batch = {
    "encoder_input_tokens": jnp.asarray(inputs),
    "decoder_input_tokens": jnp.asarray(np.pad(targets[:, :-1], ((0, 0), (1, 0)))),
    "decoder_target_tokens": jnp.asarray(targets),
    "decoder_loss_weights": jnp.asarray(target_mask, jnp.float32),
  }
  valid = target_mask > 0
  logits = np.asarray(model.apply_logits(params, batch))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, batch, deterministic=True)
  z_loss = float(model_config.z_loss)
  assert z_loss == 0.0  # HF has no z-loss: the imported config must not add one
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  if not v1_1:  # The KV-cache decoder gives the same logits, one token per step.
    _check_cached_decoding(model, params, batch, input_mask, logits, valid)

  hf.export_hf(model_config, params, str(tmp_path / "export"))
  reloaded = _reload(transformers.T5ForConditionalGeneration, tmp_path / "export")
  with torch.no_grad():
    again = reloaded(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(input_mask),
                     labels=torch.tensor(labels)).logits.numpy()  # fmt: skip
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-5)


def _check_cached_decoding(model, params, batch, input_mask, logits, valid):
  encoded = model.encode(params, batch)
  cache = model.init_cache(BATCH, 9, LENGTH)
  step = jax.jit(model.decode_step)
  steps = []
  for t in range(9):
    step_logits, cache = step(
      params, cache, batch["decoder_input_tokens"][:, t : t + 1], jnp.full((BATCH, 1), t),
      encoded=encoded, encoder_segment_ids=jnp.asarray(input_mask),
    )  # fmt: skip
    steps.append(step_logits)
  np.testing.assert_allclose(np.concatenate(steps, 1)[valid], logits[valid], atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_equal_hf(bidirectional):
  from transformers.models.t5.modeling_t5 import T5Attention

  relative = np.arange(-300, 301)[None, :] - np.zeros((1, 1), int)
  for buckets, distance in ((32, 128), (8, 20)):
    expected = T5Attention._relative_position_bucket(
      torch.tensor(relative), bidirectional=bidirectional, num_buckets=buckets,
      max_distance=distance,
    ).numpy()  # fmt: skip
    ours = relative_position_bucket(jnp.asarray(relative), bidirectional, buckets, distance)
    np.testing.assert_array_equal(ours, expected)
