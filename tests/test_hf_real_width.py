"""Parity with Hugging Face at real widths: GPT-2 small (768 x 12), BERT-base, T5 v1.1 small.

Random weights (no download), a small vocabulary (the vocabulary size does not change the
arithmetic of a logit, only how many there are). The tolerance is justified by float32 error
itself: both t5x_lite (float32) and transformers (float32) are compared to transformers run in
float64, and t5x_lite's error may be at most a small multiple of transformers' own float32 error
(different but equally valid summation orders), with a floor of a few float32 ulps of the
logits' scale. Measured: GPT-2 small and BERT-base 4e-6 (transformers 3e-6); T5 v1.1 small,
whose random-weight logits reach ~170 without attention scaling, 2e-2 (transformers 1.6e-2). T5 runs a sequence longer than its relative-position buckets' max distance,
so the log-spaced far buckets are exercised.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF tests need torch (pip install '.[hf]')")
transformers = pytest.importorskip("transformers", reason="HF tests need transformers")

import jax.numpy as jnp  # noqa: E402

from t5x_lite.convert import hf  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402

VOCAB = 512
ERROR_FACTOR = 8.0  # t5x_lite's float32 error vs transformers' own float32 error


def _save(model, path):
  torch.manual_seed(0)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.02 * torch.randn_like(parameter))
  model.eval().save_pretrained(str(path), safe_serialization=True)
  return model


def _check(ours: np.ndarray, model, inputs: dict) -> tuple[float, float]:
  """Asserts ours ~ float64 reference within ERROR_FACTOR x transformers' float32 error."""
  with torch.no_grad():
    theirs32 = model(**inputs).logits.numpy()
    model64 = model.double()
    reference = model64(**inputs).logits.numpy()
    model.float()
  error_hf = float(np.abs(theirs32 - reference).max())
  error_ours = float(np.abs(ours - reference).max())
  scale = float(np.abs(reference).max())
  floor = 16 * np.finfo(np.float32).eps * scale
  print(f"logits up to {scale:.3g}; max |error| vs float64: t5x_lite {error_ours:.2e}, "
        f"transformers float32 {error_hf:.2e}")  # fmt: skip
  assert error_ours <= ERROR_FACTOR * error_hf + floor, (error_ours, error_hf, floor)
  assert error_ours < 1e-3 * scale  # and small next to the logits themselves
  return error_ours, error_hf


def _ids(length: int, batch: int = 2, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(3, VOCAB, size=(batch, length))


@pytest.mark.slow
def test_gpt2_small(tmp_path):
  config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=768, n_layer=12,
                                   n_head=12, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   attn_implementation="eager")  # fmt: skip
  model = _save(transformers.GPT2LMHeadModel(config), tmp_path)
  model_config, params = hf.import_hf(str(tmp_path))
  tokens = _ids(64)
  batch = {
    "decoder_input_tokens": jnp.asarray(tokens),
    "decoder_target_tokens": jnp.asarray(tokens),
  }
  ours = np.asarray(build_model(model_config).apply_logits(params, batch))
  _check(ours, model, {"input_ids": torch.tensor(tokens)})


@pytest.mark.slow
def test_bert_base(tmp_path):
  config = transformers.BertConfig(
    vocab_size=VOCAB,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    attn_implementation="eager",
  )  # BERT-base widths: the defaults
  model = _save(transformers.BertForMaskedLM(config), tmp_path)
  model_config, params = hf.import_hf(str(tmp_path))
  assert (model_config.d_model, model_config.num_layers, model_config.d_ff) == (768, 12, 3072)
  tokens = _ids(128)
  batch = {"encoder_input_tokens": jnp.asarray(tokens),
           "encoder_segment_ids": jnp.ones(tokens.shape, jnp.int32)}  # fmt: skip
  ours = np.asarray(build_model(model_config).apply_logits(params, batch))
  _check(ours, model, {"input_ids": torch.tensor(tokens)})


@pytest.mark.slow
def test_t5_v1_1_small_beyond_the_bucket_range(tmp_path):
  config = transformers.T5Config(
    vocab_size=VOCAB, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    decoder_start_token_id=0, attn_implementation="eager",
  )  # fmt: skip
  model = transformers.T5ForConditionalGeneration(config)
  model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
  model = _save(model, tmp_path)
  model_config, params = hf.import_hf(str(tmp_path))
  inputs, targets = _ids(200, seed=1), _ids(160, seed=2)  # > max_distance 128 both ways
  decoder = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  batch = {"encoder_input_tokens": jnp.asarray(inputs), "decoder_input_tokens": jnp.asarray(decoder),
           "decoder_target_tokens": jnp.asarray(targets)}  # fmt: skip
  ours = np.asarray(build_model(model_config).apply_logits(params, batch))
  _check(
    ours, model, {"input_ids": torch.tensor(inputs), "decoder_input_ids": torch.tensor(decoder)}
  )
