"""BLOOM: ALiBi slopes, HF BloomForCausalLM parity (padding, loss, KV cache, greedy generation,
import and export through `t5x-lite convert`), the 560m parameter count."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity tests need torch (pip install '.[hf]')")
transformers = pytest.importorskip("transformers", reason="HF parity tests need transformers")

import jax.numpy as jnp  # noqa: E402

from t5x_lite.config import load_config_file  # noqa: E402
from t5x_lite.convert import hf  # noqa: E402
from t5x_lite.data.hf_vocabulary import save_vocabulary  # noqa: E402
from t5x_lite.data.vocabularies import ByteVocabulary  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402
from t5x_lite.models.layers import alibi_slopes  # noqa: E402

VOCAB, BATCH, LENGTH = 384, 2, 12  # 384 rows: the byte vocabulary + 125 sentinels
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paper_slopes(n):
  """Press et al.'s reference `get_slopes` (attention_with_linear_biases, fairseq)."""

  def power_of_2(n):
    start = 2 ** (-(2 ** -(math.log2(n) - 3)))
    return [start * start**i for i in range(n)]

  if math.log2(n).is_integer():
    return power_of_2(n)
  closest = 2 ** math.floor(math.log2(n))
  return power_of_2(closest) + _paper_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("heads", [1, 2, 4, 5, 6, 8, 12, 16, 24, 40, 96, 112])
def test_alibi_slopes_equal_paper_and_hf(heads):
  from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

  ours = alibi_slopes(heads)
  np.testing.assert_allclose(ours, _paper_slopes(heads), rtol=1e-6)
  np.testing.assert_allclose(ours, _get_alibi_slopes(heads, "cpu").numpy(), rtol=1e-6)
  if heads == 8:
    np.testing.assert_allclose(ours, [2.0 ** -(i + 1) for i in range(8)])


def test_bloom_560m_parameter_count_equals_hf():
  count = build_model(load_config_file("bloom.py:bloom_560m").model).num_params()
  with torch.device("meta"):
    reference = transformers.BloomForCausalLM(
      transformers.BloomConfig(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16)
    )
  assert count == reference.num_parameters() == 559_214_592


def _save_random(path, heads):
  config = transformers.BloomConfig(
    vocab_size=VOCAB, hidden_size=8 * heads, n_layer=2, n_head=heads, hidden_dropout=0.0,
    attention_dropout=0.0, attn_implementation="eager",
  )  # fmt: skip
  torch.manual_seed(0)
  model = transformers.BloomForCausalLM(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  model.save_pretrained(path, safe_serialization=True)
  return model


def _tokens(lengths):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, VOCAB, size=(BATCH, LENGTH))
  mask = np.arange(LENGTH)[None] < np.asarray(lengths)[:, None]
  return tokens * mask, mask.astype(np.int64)


def _batch(tokens, mask):
  targets = np.pad(tokens[:, 1:], ((0, 0), (0, 1)))
  return {
    "decoder_input_tokens": jnp.asarray(tokens),
    "decoder_target_tokens": jnp.asarray(targets),
    "decoder_loss_weights": jnp.asarray(mask * np.pad(mask[:, 1:], ((0, 0), (0, 1))), jnp.float32),
    "decoder_segment_ids": jnp.asarray(mask),
  }


@pytest.mark.slow
@pytest.mark.parametrize("heads", [4, 6])  # 6: slopes for a head count not a power of two
def test_bloom_parity_import_export_and_kv_cache(tmp_path, heads):
  reference = _save_random(tmp_path / "hf", heads)
  model_config, params = hf.import_hf(str(tmp_path / "hf"))
  assert model_config.position == "alibi" and model_config.embedding_norm
  model = build_model(model_config)
  tokens, mask = _tokens([LENGTH, 7])
  with torch.no_grad():
    out = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    labels=torch.tensor(np.where(mask > 0, tokens, -100)))  # fmt: skip
  batch, valid = _batch(tokens, mask), mask > 0
  logits = np.asarray(model.apply_logits(params, batch))
  np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=1e-4)
  loss, _ = model.loss(params, batch, deterministic=True)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)

  # KV cache: a 5-token prompt at once, then one token at a time, equals HF's full forward.
  row = tokens[:1]
  cache = model.init_cache(1, LENGTH)
  step_logits, cache = model.decode_step(params, cache, jnp.asarray(row[:, :5]),
                                         jnp.arange(5)[None])  # fmt: skip
  pieces = [np.asarray(step_logits)]
  for i in range(5, LENGTH):
    step_logits, cache = model.decode_step(params, cache, jnp.asarray(row[:, i : i + 1]),
                                           jnp.full((1, 1), i))  # fmt: skip
    pieces.append(np.asarray(step_logits))
  np.testing.assert_allclose(np.concatenate(pieces, 1)[0], out.logits.numpy()[0], atol=1e-4)
  # HF's own cache gives the same last-token logits.
  with torch.no_grad():
    first = reference(torch.tensor(row[:, :5]), use_cache=True)
    nxt = reference(torch.tensor(row[:, 5:6]), past_key_values=first.past_key_values)
  np.testing.assert_allclose(np.asarray(pieces[1])[0, 0], nxt.logits.numpy()[0, 0], atol=1e-4)

  # Export through the CLI path: checkpoint -> HF directory -> the same logits in HF.
  hf.export_hf(model_config, params, str(tmp_path / "export"))
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["architectures"] == ["BloomForCausalLM"] and exported["n_head"] == heads
  reloaded = transformers.BloomForCausalLM.from_pretrained(
    tmp_path / "export", attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    again = reloaded(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(again[valid], out.logits.numpy()[valid], atol=1e-4)


@pytest.mark.slow
def test_bloom_greedy_generation_equals_hf_and_cli_convert_round_trip(tmp_path):
  reference = _save_random(tmp_path / "hf", 4)
  # A model folder needs its tokenizer (issue 11): bytes + 125 sentinels = the 384 rows.
  save_vocabulary(ByteVocabulary(VOCAB - 259), str(tmp_path / "hf"))
  env = {**os.environ, "PYTHONPATH": ROOT}
  run = lambda *args: subprocess.run(  # noqa: E731
    [sys.executable, "-m", "t5x_lite.cli", *args], capture_output=True, text=True, env=env
  )
  result = run("convert", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "run"))
  assert result.returncode == 0, result.stderr[-2000:]
  result = run("convert", "--to-hf", "--model", str(tmp_path / "run"), "--out",
               str(tmp_path / "back"))  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  model_config, params = hf.import_hf(str(tmp_path / "back"))
  model = build_model(model_config)

  prompt = np.array([[5, 17, 42, 8]])
  with torch.no_grad():
    expected = reference.generate(torch.tensor(prompt), max_new_tokens=6, do_sample=False,
                                  min_new_tokens=6, pad_token_id=0)[0, 4:].tolist()  # fmt: skip
  cache = model.init_cache(1, 16)
  logits, cache = model.decode_step(params, cache, jnp.asarray(prompt), jnp.arange(4)[None])
  generated = []
  for i in range(6):
    token = int(np.argmax(np.asarray(logits)[0, -1]))
    generated.append(token)
    logits, cache = model.decode_step(params, cache, jnp.full((1, 1), token),
                                      jnp.full((1, 1), 4 + i))  # fmt: skip
  assert generated == expected
