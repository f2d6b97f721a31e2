"""BERT and T5 families, parameter counts of the shipped configs, HF conversion without torch."""

import dataclasses
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.config import load_config_file, validate
from t5x_lite.convert import hf
from t5x_lite.data.hf_vocabulary import save_vocabulary
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.models import build_model, to_model_config
from t5x_lite.models.layers import relative_position_bucket
from t5x_lite.models.transformer import stack_layers, unstack_layers

LENGTH = 10


def _tiny(spec, **changes):
  config = to_model_config(load_config_file(spec).model)
  return dataclasses.replace(config, vocab_size=64, d_model=32, d_ff=48, **changes)


@pytest.fixture(scope="module")
def bert():
  model = build_model(_tiny("bert.py:tiny", max_length=16))
  shapes = model.input_shapes(2, {"encoder_input_tokens": LENGTH})
  return model, jax.jit(model.init)(jax.random.key(0), shapes)


@pytest.fixture(scope="module")
def t5():
  model = build_model(_tiny("t5.py:tiny", head_dim=8, relative_buckets=8))
  shapes = model.input_shapes(2, {"encoder_input_tokens": LENGTH, "decoder_target_tokens": 6})
  return model, jax.jit(model.init)(jax.random.key(0), shapes)


@pytest.mark.parametrize(
  "spec,expected",
  [
    ("bert.py:bert_base_mlm", 109_514_298),  # BertForMaskedLM
    ("bert.py:bert_base", 110_106_428),  # BertForPreTraining
    ("t5.py:t5_small", 60_506_624),
    ("t5.py:t5_1_1_small", 76_961_152),
  ],
)
def test_reference_parameter_counts(spec, expected):
  assert build_model(load_config_file(spec).model).num_params() == expected


def _mesh_tf_bucket(relative, bidirectional, num_buckets, max_distance):
  """Mesh TensorFlow `_relative_position_bucket`, one value at a time, float32 logs as in TF."""
  n = -relative
  bucket = 0
  if bidirectional:
    num_buckets //= 2
    bucket += int(n < 0) * num_buckets
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return bucket + n
  ratio = np.float32(np.log(np.float32(n) / np.float32(max_exact)))
  ratio /= np.float32(math.log(max_distance / max_exact))
  value = max_exact + int(ratio * np.float32(num_buckets - max_exact))
  return bucket + min(value, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_equal_reference(bidirectional):
  relative = np.arange(-300, 301)
  for buckets, distance in ((32, 128), (8, 20)):
    expected = [_mesh_tf_bucket(r, bidirectional, buckets, distance) for r in relative]
    ours = relative_position_bucket(jnp.asarray(relative), bidirectional, buckets, distance)
    np.testing.assert_array_equal(ours, expected)
  # Anchors: T5's default table (32 buckets, 128 max distance).
  anchors = relative_position_bucket(jnp.array([0, -1, 1, -200, 200]), bidirectional, 32, 128)
  assert anchors.tolist() == ([0, 1, 17, 15, 31] if bidirectional else [0, 1, 0, 31, 0])


def _bert_batch(tokens, segments, positions, nsp_labels):
  return {
    "encoder_input_tokens": jnp.asarray(tokens),
    "encoder_target_tokens": jnp.asarray(tokens),
    "encoder_loss_weights": jnp.asarray(segments > 0, jnp.float32),
    "encoder_segment_ids": jnp.asarray(segments),
    "encoder_positions": jnp.asarray(positions),
    "encoder_token_type_ids": jnp.zeros(tokens.shape, jnp.int32),
    "nsp_labels": jnp.asarray(nsp_labels),
  }


def test_bert_packed_segments_and_nsp_loss(bert):
  model, params = bert
  segments = np.array([[1] * 6 + [2] * 3 + [0]] * 2)
  positions = np.array([list(range(6)) + list(range(3)) + [0]] * 2)
  tokens = np.random.default_rng(0).integers(5, 64, (2, LENGTH)) * (segments > 0)
  labels = np.zeros((2, LENGTH), np.int32)
  labels[:, 6] = 1  # second segment of each row: a random B
  batch = _bert_batch(tokens, segments, positions, labels)
  outputs = model.apply_outputs(params, batch)
  assert outputs["mlm_logits"].shape == (2, LENGTH, 64) and outputs["nsp_logits"].shape[-1] == 2
  changed = dict(batch, encoder_input_tokens=batch["encoder_input_tokens"].at[:, 1:6].set(7))
  changed_outputs = model.apply_outputs(params, changed)
  np.testing.assert_allclose(changed_outputs["mlm_logits"][:, 6:9], outputs["mlm_logits"][:, 6:9])
  assert np.abs(np.asarray(changed_outputs["mlm_logits"][:, :6] - outputs["mlm_logits"][:, :6])).max() > 1e-4  # fmt: skip
  # NSP: the [CLS] (first) position of each of the 4 segments, labels 0, 1, 0, 1.
  log_probs = np.asarray(jax.nn.log_softmax(outputs["nsp_logits"]))
  expected_nsp = -(log_probs[:, 0, 0] + log_probs[:, 6, 1]).sum() / 4
  loss, metrics = model.loss(params, batch, deterministic=True)
  np.testing.assert_allclose(
    metrics["nsp_loss"][0] / metrics["nsp_loss"][1], expected_nsp, rtol=1e-6
  )
  assert float(metrics["nsp_loss"][1]) == 4 and float(metrics["mlm_loss"][1]) == 18
  mlm = metrics["mlm_loss"][0] / metrics["mlm_loss"][1]
  np.testing.assert_allclose(loss, mlm + expected_nsp, rtol=1e-6)


def _t5_batch(inputs, targets, encoder_segments=None, decoder_segments=None):
  batch = {
    "encoder_input_tokens": jnp.asarray(inputs),
    "decoder_target_tokens": jnp.asarray(targets),
    "decoder_input_tokens": jnp.asarray(np.pad(targets[:, :-1], ((0, 0), (1, 0)))),
    "decoder_loss_weights": jnp.asarray(targets > 0, jnp.float32),
  }
  if encoder_segments is not None:
    batch["encoder_segment_ids"] = jnp.asarray(encoder_segments)
    batch["decoder_segment_ids"] = jnp.asarray(decoder_segments)
  return batch


def test_t5_packed_isolation_and_kv_cache(t5):
  model, params = t5
  rng = np.random.default_rng(1)
  inputs, targets = rng.integers(2, 64, (2, LENGTH)), rng.integers(2, 64, (2, 6))
  encoder_segments = np.array([[1] * 4 + [2] * 6] * 2)
  decoder_segments = np.array([[1] * 3 + [2] * 3] * 2)
  batch = _t5_batch(inputs, targets, encoder_segments, decoder_segments)
  batch["decoder_input_tokens"] = batch["decoder_input_tokens"].at[:, 3].set(0)
  batch["encoder_positions"] = jnp.asarray([list(range(4)) + list(range(6))] * 2)
  batch["decoder_positions"] = jnp.asarray([[0, 1, 2, 0, 1, 2]] * 2)
  logits = model.apply_logits(params, batch)
  assert logits.shape == (2, 6, 64) and logits.dtype == jnp.float32
  changed = dict(batch, encoder_input_tokens=batch["encoder_input_tokens"].at[:, :4].set(9))
  changed_logits = model.apply_logits(params, changed)
  np.testing.assert_allclose(changed_logits[:, 3:], logits[:, 3:], atol=1e-6)  # document 2
  assert np.abs(np.asarray(changed_logits[:, :3] - logits[:, :3])).max() > 1e-4

  # Unpacked: cached one-token decoding equals the full decoder.
  plain = _t5_batch(inputs, targets)
  full = model.apply_logits(params, plain)
  encoded = model.encode(params, plain)
  cache = model.init_cache(2, 6, LENGTH)
  step = jax.jit(model.decode_step)
  steps = []
  for t in range(6):
    token = plain["decoder_input_tokens"][:, t : t + 1]
    step_logits, cache = step(params, cache, token, jnp.full((2, 1), t), encoded=encoded)
    steps.append(step_logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5)


def test_t5_scan_and_remat_do_not_change_loss_or_grads(t5):
  model, params = t5
  rng = np.random.default_rng(2)
  batch = _t5_batch(rng.integers(2, 64, (2, LENGTH)), rng.integers(2, 64, (2, 6)))
  unboxed = nn.meta.unbox(params)

  def loss_and_grads(config, p):
    variant = build_model(config)
    return jax.jit(jax.value_and_grad(lambda p: variant.loss(p, batch, deterministic=True)[0]))(p)

  loss, grads = loss_and_grads(model.config, unboxed)
  unrolled = dataclasses.replace(model.config, scan_layers=False, remat="full")
  other_loss, other_grads = loss_and_grads(unrolled, unstack_layers(unboxed))
  np.testing.assert_allclose(other_loss, loss, atol=1e-6)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), stack_layers(other_grads), grads
  )


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_export_import_round_trip(tmp_path, family):
  spec = {"gpt": "gpt.py:tiny", "bert": "bert.py:tiny", "t5": "t5.py:tiny"}
  config = _tiny(spec[family], max_length=16 if family != "t5" else 0)
  model = build_model(config)
  params = nn.meta.unbox(
    jax.eval_shape(model.init, jax.random.key(0), model.input_shapes(1, model.default_lengths()))
  )
  rng = np.random.default_rng(3)
  params = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), params)
  hf.export_hf(config, params, str(tmp_path))
  imported_config, imported = hf.import_hf(str(tmp_path))
  assert imported_config == dataclasses.replace(config, dropout_rate=imported_config.dropout_rate,
                                                z_loss=0.0, dtype="float32")  # fmt: skip
  jax.tree_util.tree_map(np.testing.assert_array_equal, imported, params)


def test_conversion_errors_name_the_problem(tmp_path):
  config = _tiny("gpt.py:tiny", max_length=16)
  model = build_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), model.input_shapes(1, {"targets": 4}))
  params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), nn.meta.unbox(shapes))
  hf.export_hf(config, params, str(tmp_path))
  hf_config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(hf_config, n_inner=40)))
  with pytest.raises(hf.ConversionError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight has shape"):
    hf.import_hf(str(tmp_path))
  (tmp_path / "config.json").write_text(
    json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
  )
  with pytest.raises(hf.ConversionError, match="model_type='llama' is not supported"):
    hf.import_hf(str(tmp_path))
  (tmp_path / "model.safetensors").unlink()
  (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
  with pytest.raises(hf.ConversionError, match="unpickling can execute arbitrary code"):
    hf.import_hf(str(tmp_path))


def test_convert_to_checkpoint_restores_as_params(tmp_path):
  from t5x_lite import checkpoints

  config = dataclasses.replace(_tiny("gpt.py:tiny", max_length=16), vocab_size=512)
  model = build_model(config)
  abstract = nn.meta.unbox(
    jax.eval_shape(model.init, jax.random.key(0), model.input_shapes(1, {"targets": 4}))
  )
  rng = np.random.default_rng(4)
  params = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), abstract)
  hf.export_hf(config, params, str(tmp_path / "hf"))
  # A model folder needs its tokenizer (issue 11): bytes + 253 sentinels = the 512 rows.
  save_vocabulary(ByteVocabulary(512 - 259), str(tmp_path / "hf"))
  hf.convert_to_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  source = checkpoints.open_existing(str(tmp_path / "run"))
  restored_config = source.restore_config()
  assert restored_config.model.d_model == 32
  validate(restored_config)  # a complete, valid config (feature lengths within max_length)
  restored = source.restore_params(abstract)
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
  hf.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "back"))
  _, again = hf.import_hf(str(tmp_path / "back"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


def test_input_shapes_accept_task_converter_and_model_feature_lengths():
  gpt = build_model(_tiny("gpt.py:tiny"))
  for lengths in ({"targets": 16}, {"decoder": 16}, {"inputs": 4, "targets": 12}):
    shapes = gpt.input_shapes(2, lengths)
    assert set(shapes) == set(gpt.features)
    assert all(s.shape == (2, 16) for s in shapes.values())
  assert gpt.input_shapes(2, lengths)["decoder_loss_weights"].dtype == jnp.float32
  t5 = build_model(_tiny("t5.py:tiny"))
  for lengths in ({"inputs": 16, "targets": 8}, {"encoder": 16, "decoder": 8}):
    shapes = t5.input_shapes(2, lengths)
    assert shapes["encoder_positions"].shape == (2, 16) and shapes["decoder_positions"].shape == (
      2,
      8,
    )
  with pytest.raises(ValueError, match="no length for the decoder"):
    t5.input_shapes(2, {"inputs": 16})


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_pulse_loss_falls_on_a_fixed_batch(family, bert, t5):
  import optax

  model, params = bert if family == "bert" else t5
  rng = np.random.default_rng(5)
  if family == "bert":
    tokens = rng.integers(5, 64, (2, LENGTH))
    batch = _bert_batch(tokens, np.ones((2, LENGTH), int), np.tile(np.arange(LENGTH), (2, 1)),
                        np.zeros((2, LENGTH), int))  # fmt: skip
  else:
    batch = _t5_batch(rng.integers(2, 64, (2, LENGTH)), rng.integers(2, 64, (2, 6)))
  optimizer = optax.adam(3e-3)
  params = nn.meta.unbox(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(lambda p: model.loss(p, batch, deterministic=True)[0])(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  state = optimizer.init(params)
  losses = []
  for _ in range(15):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_t5_with_dropout_runs_and_dropout_is_active():
  """T5 v1.0 pre-trains with dropout 0.1: the stochastic loss differs from the deterministic one."""
  config = load_config_file("t5.py:tiny")
  config.model.dropout_rate = 0.1
  model = build_model(config.model)
  shapes = model.input_shapes(2, {"inputs": 16, "targets": 8})
  params = model.init(jax.random.key(0), shapes)
  batch = model.dummy_batch(shapes)
  loss = jax.jit(model.loss, static_argnames="deterministic")  # eager T5 took 30 s on 2 cores
  noisy, _ = loss(params, batch, jax.random.key(1), deterministic=False)
  clean, _ = loss(params, batch, None, deterministic=True)
  assert np.isfinite(float(noisy)) and float(noisy) != float(clean)
