"""Decoder-only prefix LM attends over its inputs bidirectionally, as T5 / SeqIO
(`decoder_causal_attention`, T5X `make_decoder_mask`); its targets stay causal."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t5x_lite.config import load_config_file
from t5x_lite.data.ragged import Ragged
from t5x_lite.models import build_model, to_model_config


def _model(**changes):
  changes.setdefault("prefix_attention", "bidirectional")
  config = to_model_config(load_config_file("gpt.py:tiny").model)
  config = dataclasses.replace(
    config, vocab_size=40, d_model=32, num_heads=2, d_ff=48, num_layers=2, **changes
  )
  model = build_model(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(1, {"decoder": 12})))
  return model, params


def _batch(model, inputs, targets):
  examples = {"inputs": Ragged.from_rows([inputs]), "targets": Ragged.from_rows([targets])}
  lengths = {"inputs": 6, "targets": 6}
  return model.feature_converter(pack=False).convert(examples, lengths)


def test_converter_marks_inputs_plus_one_as_seqio():
  model, _ = _model()
  batch = _batch(model, [5, 6, 7, 8], [9, 10, 11])
  np.testing.assert_array_equal(
    batch["decoder_causal_attention"][0], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
  )
  np.testing.assert_array_equal(batch["decoder_loss_weights"][0], [0, 0, 0, 0, 1, 1, 1] + [0] * 5)


def _outputs(model, params, batch):
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  return np.asarray(model.module.apply({"params": params}, **model.module_inputs(batch)))


def test_later_prefix_token_changes_earlier_prefix_output_and_a_target_does_not():
  model, params = _model()
  base = _outputs(model, params, _batch(model, [5, 6, 7, 8], [9, 10, 11]))
  later_input = _outputs(model, params, _batch(model, [5, 6, 7, 20], [9, 10, 11]))
  later_target = _outputs(model, params, _batch(model, [5, 6, 7, 8], [9, 30, 11]))
  # Position 1 reads input token 5; the last input (position 4 reads 8) changes what it sees.
  assert not np.allclose(later_input[0, 1], base[0, 1], atol=1e-5)
  # A target (the second, read at position 6) is seen only from position 6 on.
  np.testing.assert_array_equal(later_target[0, :6], base[0, :6])
  assert not np.allclose(later_target[0, 6], base[0, 6], atol=1e-5)

  causal, _ = _model(prefix_attention="causal")
  causal_base = _outputs(causal, params, _batch(causal, [5, 6, 7, 8], [9, 10, 11]))
  causal_later = _outputs(causal, params, _batch(causal, [5, 6, 7, 20], [9, 10, 11]))
  np.testing.assert_array_equal(causal_later[0, :4], causal_base[0, :4])  # causal: unchanged


def test_prefix_attention_is_bidirectional_by_default_only_for_a_prefix_lm(make_config):
  """On by default when the task feeds 'inputs' (the prefix-LM objective); a causal LM stays
  causal, also when score() later feeds it a prompt and a completion."""
  from t5x_lite import config as config_lib

  prefix = make_config(
    "gpt.py:tiny",
    **{"data.task": "pydoc_prefix_lm", "data.feature_lengths": "{'inputs': 64, 'targets': 64}"},
  )
  assert config_lib.model_config(prefix).prefix_attention == "bidirectional"
  assert config_lib.model_config(make_config("gpt.py:tiny")).prefix_attention == "causal"
  causal = make_config(
    "gpt.py:tiny",
    **{"data.task": "pydoc_prefix_lm", "data.feature_lengths": "{'inputs': 64, 'targets': 64}",
       "model.prefix_attention": "causal"},
  )  # fmt: skip
  assert config_lib.model_config(causal).prefix_attention == "causal"
