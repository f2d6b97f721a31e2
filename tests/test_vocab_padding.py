"""model.vocab_pad_multiple: padded embedding rows, masked logits, same numbers as unpadded."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from t5x_lite.models import build_model
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.vocab_padding import MASKED_LOGIT, strip_padding

VOCAB = 100  # ids; padded to 128 rows

FAMILIES = {
  "decoder": dict(family="decoder", position="learned", max_length=16),
  "encoder": dict(family="encoder", position="learned", max_length=16, norm_position="post"),
  "encoder_decoder": dict(family="encoder_decoder", position="relative", max_length=0,
                          norm="rmsnorm", use_bias=False, relative_buckets=8),
}  # fmt: skip


def _strip(tree, rows: int):
  """Every array with a `rows`-long axis (embedding, output kernel, MLM bias) cut to VOCAB."""

  def cut(x):
    x = np.asarray(x)
    for axis, size in enumerate(x.shape):
      if size == rows:
        return strip_padding(x, VOCAB, axis)
    return x

  return jax.tree_util.tree_map(cut, tree)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("tie", [True, False])
def test_padded_model_equals_unpadded(family, tie):
  base = ModelConfig(vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=48, num_layers=1,
                     tie_embeddings=tie, nsp=False, **FAMILIES[family])  # fmt: skip
  padded = dataclasses.replace(base, vocab_pad_multiple=128)
  assert (base.embedding_rows, padded.embedding_rows) == (100, 128)
  model, plain = build_model(padded), build_model(base)
  lengths = model.default_lengths()
  shapes = model.input_shapes(2, lengths)
  params = nn.meta.unbox(model.init(jax.random.key(0), shapes))
  rows = [x.shape for x in jax.tree_util.tree_leaves(params) if 128 in x.shape]
  assert rows and all(128 in s for s in rows)
  rng = np.random.default_rng(0)
  batch = {name: rng.integers(1, VOCAB, s.shape).astype(s.dtype) for name, s in shapes.items()}
  for name in batch:
    if "segment" in name:
      batch[name] = np.ones_like(batch[name])
    if "position" in name:
      batch[name] = np.broadcast_to(np.arange(batch[name].shape[1]), batch[name].shape).copy()
    if "loss_weights" in name:
      batch[name] = np.ones_like(batch[name])
    if "type_ids" in name:
      batch[name] = np.zeros_like(batch[name])
  logits = np.asarray(model.apply_logits(params, batch))
  assert logits.shape[-1] == 128
  assert (logits[..., VOCAB:] == MASKED_LOGIT).all()
  expected = np.asarray(plain.apply_logits(_strip(params, 128), batch))
  np.testing.assert_allclose(logits[..., :VOCAB], expected, atol=1e-5)
  loss, _ = model.loss(params, batch, deterministic=True)
  loss_plain, _ = plain.loss(_strip(params, 128), batch, deterministic=True)
  np.testing.assert_allclose(float(loss), float(loss_plain), rtol=1e-5)


def test_vocab_pad_multiple_config_checks():
  from t5x_lite import config as config_lib

  overrides = [("model.vocab_pad_multiple", "-2")]
  with pytest.raises(config_lib.ConfigError, match="vocab_pad_multiple=-2: expected 0"):
    config_lib.get_config("gpt.py:tiny", overrides)
  overrides = [("model.vocab_pad_multiple", "128"), ("model.label_smoothing", "0.1")]
  with pytest.raises(config_lib.ConfigError, match="label_smoothing > 0 would put probability"):
    config_lib.get_config("gpt.py:tiny", overrides)
  config = config_lib.get_config("gpt.py:tiny", [("model.vocab_pad_multiple", "128")])
  assert config.model.vocab_pad_multiple == 128
