"""GPT-style decoder: shapes, causality, packing isolation, KV cache, scan/remat, loss values."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.models import build_model
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.transformer import stack_layers, unstack_layers

TINY = ModelConfig(
  family="decoder",
  vocab_size=64,
  d_model=32,
  num_heads=4,
  num_layers=2,
  d_ff=64,
  max_length=32,
  position="learned",
  activation="gelu_new",
  layer_norm_epsilon=1e-5,
)
BATCH, LENGTH = 2, 12


@pytest.fixture(scope="module")
def model():
  return build_model(TINY)


@pytest.fixture(scope="module")
def params(model):
  shapes = model.input_shapes(BATCH, {"decoder_target_tokens": LENGTH})
  return model.init(jax.random.key(0), shapes)


@pytest.fixture(scope="module")
def logits_fn(model):
  return jax.jit(model.apply_logits)


def _batch(tokens, segment_ids=None, positions=None):
  tokens = jnp.asarray(tokens, jnp.int32)
  inputs = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  batch = {
    "decoder_target_tokens": tokens,
    "decoder_input_tokens": inputs,
    "decoder_loss_weights": (tokens > 0).astype(jnp.float32),
  }
  if segment_ids is not None:
    batch["decoder_segment_ids"] = jnp.asarray(segment_ids, jnp.int32)
    batch["decoder_positions"] = jnp.asarray(positions, jnp.int32)
  return batch


def _random_tokens(seed, shape=(BATCH, LENGTH)):
  return np.random.default_rng(seed).integers(3, TINY.vocab_size, size=shape)


def test_params_are_boxed_with_logical_axes(params):
  boxed = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in boxed)
  names = {leaf.names for leaf in boxed}
  assert ("vocab", "embed") in names  # token embedding
  assert ("layers", "embed", "heads", "kv") in names  # scanned query kernel
  assert ("layers", "heads", "kv", "embed") in names  # scanned output kernel
  assert ("layers", "embed", "mlp") in names
  shapes = {"/".join(k.key for k in path): leaf.value.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(
              params, is_leaf=lambda x: isinstance(x, nn.Partitioned))}  # fmt: skip
  assert shapes["token_embedder/embedding"] == (64, 32)
  assert shapes["position_embedder/embedding"] == (32, 32)
  assert shapes["decoder/layers/attention/query/kernel"] == (2, 32, 4, 8)
  assert shapes["decoder/layers/mlp/wo/kernel"] == (2, 64, 32)
  assert shapes["decoder/final_norm/scale"] == (32,)


def test_logits_shape_and_causality(params, logits_fn):
  tokens = _random_tokens(0)
  logits = logits_fn(params, _batch(tokens))
  assert logits.shape == (BATCH, LENGTH, TINY.vocab_size) and logits.dtype == jnp.float32
  t = 7
  changed = tokens.copy()
  changed[:, t - 1] = (changed[:, t - 1] - 3 + 5) % (TINY.vocab_size - 3) + 3  # a new token
  changed_logits = logits_fn(params, _batch(changed))
  # decoder input at position t is target t-1: positions < t see nothing of it.
  np.testing.assert_array_equal(logits[:, :t], changed_logits[:, :t])
  assert np.abs(np.asarray(logits[:, t:] - changed_logits[:, t:])).max() > 1e-4


def test_packed_documents_are_isolated(params, logits_fn):
  # Row: document A (5 tokens), document B (4 tokens), 3 padding.
  segments = np.array([[1] * 5 + [2] * 4 + [0] * 3] * BATCH)
  positions = np.array([list(range(5)) + list(range(4)) + [0] * 3] * BATCH)
  tokens = _random_tokens(1) * (segments > 0)
  batch = _batch(tokens, segments, positions)
  # The decoder input of each document starts with 0 (the converter shifts per segment).
  batch["decoder_input_tokens"] = batch["decoder_input_tokens"].at[:, 5].set(0)
  logits = logits_fn(params, batch)
  changed = dict(batch)
  changed["decoder_input_tokens"] = batch["decoder_input_tokens"].at[:, 1:5].set(9)  # doc A
  changed_logits = logits_fn(params, changed)
  np.testing.assert_array_equal(logits[:, 5:9], changed_logits[:, 5:9])  # doc B unchanged
  assert np.abs(np.asarray(logits[:, 1:5] - changed_logits[:, 1:5])).max() > 1e-4
  # Document B alone at the start of a row gives the same logits (positions restart).
  alone = _batch(np.pad(tokens[:, 5:9], ((0, 0), (0, LENGTH - 4))))
  alone["decoder_segment_ids"] = jnp.asarray((np.arange(LENGTH) < 4)[None].repeat(BATCH, 0), int)
  alone["decoder_positions"] = jnp.broadcast_to(jnp.arange(LENGTH), (BATCH, LENGTH))
  np.testing.assert_allclose(logits_fn(params, alone)[:, :4], logits[:, 5:9], atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope", "relative"])
def test_kv_cache_decoding_equals_full_recomputation(position):
  model = build_model(dataclasses.replace(TINY, position=position, relative_buckets=8))
  params = jax.jit(model.init)(
    jax.random.key(0), model.input_shapes(BATCH, {"decoder_target_tokens": LENGTH})
  )
  tokens = _random_tokens(2)
  batch = _batch(tokens)
  full = model.apply_logits(params, batch)
  inputs = batch["decoder_input_tokens"]
  step = jax.jit(model.decode_step)
  cache = model.init_cache(BATCH, LENGTH)
  # A 4-token prompt pre-filled at once, then one token per call.
  logits, cache = step(params, cache, inputs[:, :4], jnp.broadcast_to(jnp.arange(4), (BATCH, 4)))
  stepped = [logits]
  for t in range(4, LENGTH):
    logits, cache = step(params, cache, inputs[:, t : t + 1], jnp.full((BATCH, 1), t))
    stepped.append(logits)
  np.testing.assert_allclose(jnp.concatenate(stepped, axis=1), full, atol=2e-5, rtol=1e-5)


def test_gpt2_small_parameter_count():
  from t5x_lite.config import get_config

  config = get_config("gpt.py:gpt2_small")
  assert build_model(config.model).num_params() == 124_439_808


def _numpy_gpt2_logits(params, tokens, config):
  """Independent numpy GPT-2 forward (one unpacked sequence per row)."""
  p = jax.tree_util.tree_map(np.asarray, unstack_layers(nn.meta.unbox(params)))
  eps = config.layer_norm_epsilon

  def norm(x, q):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * q["scale"] + (
      q["bias"]
    )

  def dense(x, q):
    kernel = q["kernel"]
    return x @ kernel.reshape(x.shape[-1], -1) + q["bias"].reshape(-1)

  length = tokens.shape[1]
  x = p["token_embedder"]["embedding"][tokens] + p["position_embedder"]["embedding"][:length]
  heads = config.num_heads
  for i in range(config.num_layers):
    layer = p["decoder"][f"layers_{i}"]
    h = norm(x, layer["attention_norm"])
    a = layer["attention"]
    split = lambda y: y.reshape(*y.shape[:2], heads, -1)  # noqa: E731
    q, k, v = (split(dense(h, a[n])) for n in ("query", "key", "value"))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:2], -1)
    x = x + out @ a["out"]["kernel"].reshape(-1, x.shape[-1]) + a["out"]["bias"]
    h = norm(x, layer["mlp_norm"])
    h = dense(h, layer["mlp"]["wi"])
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    x = x + dense(h, layer["mlp"]["wo"])
  x = norm(x, p["decoder"]["final_norm"])
  return x @ p["token_embedder"]["embedding"].T


def _numpy_loss(logits, targets, weights, z_loss, smoothing):
  logits = logits.astype(np.float64)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  log_probs = logits - log_z[..., None]
  vocab = logits.shape[-1]
  soft = np.full_like(log_probs, smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1 - smoothing, axis=-1)
  entropy = -np.sum(soft * np.log(np.where(soft > 0, soft, 1.0)), -1)
  token_loss = -np.sum(soft * log_probs, -1) - entropy + z_loss * log_z**2
  return np.sum(token_loss * weights) / np.sum(weights)


@pytest.mark.parametrize("z_loss,smoothing", [(0.0, 0.0), (1e-4, 0.1)])
def test_loss_equals_numpy_reference(params, z_loss, smoothing):
  config = dataclasses.replace(TINY, z_loss=z_loss, label_smoothing=smoothing)
  model = build_model(config)
  tokens = _random_tokens(3)
  tokens[1, 9:] = 0  # padding: weight 0
  batch = _batch(tokens)
  reference_logits = _numpy_gpt2_logits(params, np.asarray(batch["decoder_input_tokens"]), config)
  weights = np.asarray(batch["decoder_loss_weights"])
  valid = weights > 0  # padding queries attend to nothing in the model; the reference differs
  np.testing.assert_allclose(
    np.asarray(model.apply_logits(params, batch))[valid], reference_logits[valid], atol=2e-5
  )
  loss, metrics = model.loss(params, batch, rng=None, deterministic=True)
  expected = _numpy_loss(reference_logits, tokens, weights, z_loss, smoothing)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(metrics["loss"][1]) == weights.sum() == 2 * LENGTH - 3
  np.testing.assert_allclose(metrics["loss"][0] / metrics["loss"][1], loss, rtol=1e-6)
  score = model.score(params, batch)
  if z_loss == 0 and smoothing == 0:
    np.testing.assert_allclose(-score.sum() / weights.sum(), loss, rtol=1e-5)


@pytest.mark.slow
def test_scan_and_remat_do_not_change_loss_or_grads(params):
  batch = _batch(_random_tokens(4))
  unboxed = nn.meta.unbox(params)
  results = {}
  # Every remat policy under scan, and the unrolled stack (with and without remat).
  for scan, remat in ((True, "none"), (True, "minimal"), (True, "full"), (False, "none"),
                      (False, "minimal")):  # fmt: skip
    model = build_model(dataclasses.replace(TINY, scan_layers=scan, remat=remat))
    p = unboxed if scan else unstack_layers(unboxed)
    loss_fn = lambda p, model=model: model.loss(p, batch, deterministic=True)[0]  # noqa: E731
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(p)
    results[scan, remat] = (loss, grads if scan else stack_layers(grads))
  reference_loss, reference_grads = results[True, "none"]
  for key, (loss, grads) in results.items():
    np.testing.assert_allclose(loss, reference_loss, atol=1e-6, err_msg=str(key))
    jax.tree_util.tree_map(
      lambda a, b, key=key: np.testing.assert_allclose(a, b, atol=1e-6, err_msg=str(key)),
      grads,
      reference_grads,
    )


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_logits(params):
  model = build_model(dataclasses.replace(TINY, dtype="bfloat16"))
  batch = _batch(_random_tokens(5))
  logits = model.apply_logits(params, batch)
  assert logits.dtype == jnp.float32
  reference = build_model(TINY).apply_logits(params, batch)
  # bf16 operands (8 bits of mantissa) with f32 accumulation: close to the f32 result.
  assert np.abs(np.asarray(logits - reference)).max() < 0.1
  # Gradients (bf16 operands in the backward matmuls too, see layers.matmul) stay float32 and
  # close to the float32 model's.
  grad_fn = lambda m: jax.jit(jax.grad(lambda p: m.loss(p, batch, deterministic=True)[0]))  # noqa: E731
  grads = grad_fn(model)(nn.meta.unbox(params))
  reference_grads = grad_fn(build_model(TINY))(nn.meta.unbox(params))
  pairs = list(zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference_grads)))
  total = math.sqrt(sum(float(np.sum(np.square(r))) for _, r in pairs))
  for g, r in pairs:  # (the key bias has a zero true gradient: softmax ignores a shift)
    assert g.dtype == jnp.float32
    assert np.linalg.norm(g - r) <= 0.05 * np.linalg.norm(r) + 1e-3 * total


def test_dropout_is_random_only_when_not_deterministic(params):
  model = build_model(dataclasses.replace(TINY, dropout_rate=0.5))
  batch = _batch(_random_tokens(6))
  a, _ = model.loss(params, batch, jax.random.key(1), deterministic=False)
  b, _ = model.loss(params, batch, jax.random.key(2), deterministic=False)
  c, _ = model.loss(params, batch, jax.random.key(1), deterministic=True)
  assert float(a) != float(b)
  # Deterministic: no dropout, the loss of the model without dropout (ln-ish of the vocab).
  np.testing.assert_allclose(c, build_model(TINY).loss(params, batch, deterministic=True)[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_remat_minimal_saves_the_dense_matmuls(params, dtype):
  """'minimal' recomputes only attention dots (with batch dims), 'full' every dot."""
  shapes = build_model(TINY).input_shapes(BATCH, {"targets": LENGTH})
  batch = {name: jax.ShapeDtypeStruct(s.shape, s.dtype) for name, s in shapes.items()}
  unboxed = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.meta.unbox(params)
  )
  dots = {}
  for remat in ("none", "minimal", "full"):
    model = build_model(dataclasses.replace(TINY, dtype=dtype, remat=remat))
    grad = jax.grad(lambda p, b, model=model: model.loss(p, b, deterministic=True)[0])
    dots[remat] = jax.jit(grad).lower(unboxed, batch).as_text().count("stablehlo.dot_general")
  # (The scanned layer body appears once in the program.)
  assert dots["none"] < dots["minimal"] < dots["full"]
