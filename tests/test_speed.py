"""Issue 15: the selectable attention implementation and the chunked cross-entropy compute what
the plain paths compute; the chunked loss needs less memory; a resumed `t5x-lite train` finds
its compiled step in the persistent cache; `benchmark.py compare` pairs a peer with our step;
small replicated arrays are checkpointed without on-device slicing."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t5x_lite.config import ConfigError
from t5x_lite.models import build_model
from t5x_lite.models.chunked_loss import chunked_cross_entropy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def packed_batch(model, batch, lengths, vocab, seed=0):
  """Two documents per row (segments 1, 2), some zero loss weights, random tokens."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in model.input_shapes(batch, lengths).items():
    rows, length = shape.shape
    half = length // 2
    index = np.arange(length)
    if name.endswith("segment_ids"):
      value = np.where(index < half, 1, 2) * np.ones((rows, 1), int)
      value[0, -3:] = 0  # padding at the end of the first row
    elif name.endswith("positions"):
      value = np.where(index < half, index, index - half) * np.ones((rows, 1), int)
    elif name.endswith("loss_weights"):
      value = np.ones((rows, length))
      value[0, -3:] = 0
    else:
      value = rng.integers(3, vocab, (rows, length))
    out[name] = jnp.asarray(value, shape.dtype)
  return out


def loss_and_grads(config_model, batch, lengths, det=True):
  model = build_model(config_model)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(2, lengths)))

  def loss(p):
    return model.loss(p, batch, jax.random.key(1), deterministic=det)

  (value, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return value, metrics, grads, model, params


def max_difference(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


CASES = [
  ("gpt.py:tiny", {"targets": 24}, {}),
  pytest.param(
    "t5.py:tiny", {"inputs": 24, "targets": 12}, {"z_loss": 1e-2, "label_smoothing": 0.1},
    marks=pytest.mark.slow,
  ),
  # T5 v1.0 layout: tied embedding with the d_model**-0.5 rescale.
  pytest.param(
    "t5.py:t5_small", {"inputs": 16, "targets": 8},
    {"num_layers": 1, "d_model": 32, "num_heads": 2, "head_dim": 16, "d_ff": 64, "vocab_size": 300,
     "dropout_rate": 0.0},
    marks=pytest.mark.slow,
  ),
]  # fmt: skip


@pytest.mark.parametrize("spec,lengths,extra", CASES)
@pytest.mark.parametrize("impl", ["dot_product", "cudnn"])
def test_attention_impls_equal_the_plain_path(make_config, spec, lengths, extra, impl):
  config = make_config(spec)
  with config.unlocked():
    config.model.update(extra)
  batch = packed_batch(build_model(config.model), 2, lengths, 300)
  plain = loss_and_grads(config.model, batch, lengths)
  with config.unlocked():
    config.model.attention_impl = impl
  fused = loss_and_grads(config.model, batch, lengths)
  assert abs(float(plain[0]) - float(fused[0])) < 1e-5
  assert max_difference(plain[2], fused[2]) < 1e-5
  assert float(plain[0]) > 4.0  # a real loss (random init over >= 300 ids), not a degenerate 0


def test_attention_impl_decodes_like_the_plain_path(make_config):
  """The KV-cache path (a decode bias over the cache) through jax.nn.dot_product_attention."""
  config = make_config("gpt.py:tiny")
  plain_model = build_model(config.model)
  params = nn.unbox(
    jax.jit(plain_model.init)(jax.random.key(0), plain_model.input_shapes(2, {"targets": 16}))
  )
  with config.unlocked():
    config.model.attention_impl = "dot_product"
  fused_model = build_model(config.model)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 1024, (2, 5)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  outputs = []
  for model in (plain_model, fused_model):
    cache = model.init_cache(2, 16)
    logits, cache = model.decode_step(params, cache, tokens, positions)
    logits2, _ = model.decode_step(params, cache, tokens[:, :1], positions[:, :1] + 5)
    outputs.append((logits, logits2))
  assert max_difference(outputs[0], outputs[1]) < 1e-4


@pytest.mark.parametrize("spec,lengths,extra", CASES)
@pytest.mark.parametrize("chunk", [5, 64])
def test_chunked_loss_equals_the_plain_loss(make_config, spec, lengths, extra, chunk):
  """Loss, every metric and every gradient; chunk 5 does not divide the tokens (padding)."""
  config = make_config(spec)
  with config.unlocked():
    config.model.update(extra)
  model = build_model(config.model)
  batch = packed_batch(model, 2, lengths, 300)
  # Make half the targets the argmax of the plain logits so that accuracy is not 0.
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(2, lengths)))
  best = jnp.argmax(model.apply_logits(params, batch), -1)
  targets = batch["decoder_target_tokens"]
  batch["decoder_target_tokens"] = jnp.where(jnp.arange(targets.shape[1]) % 2 == 0, best, targets)
  plain = loss_and_grads(config.model, batch, lengths)
  with config.unlocked():
    config.model.loss_chunk_size = chunk
  chunked = loss_and_grads(config.model, batch, lengths)
  assert abs(float(plain[0]) - float(chunked[0])) < 1e-5
  for name, (numerator, denominator) in plain[1].items():
    assert float(chunked[1][name][1]) == float(denominator)
    assert abs(float(chunked[1][name][0]) - float(numerator)) < 1e-3 * max(
      1.0, abs(float(numerator))
    )
  assert float(plain[1]["accuracy"][0]) > 0
  assert max_difference(plain[2], chunked[2]) < 1e-5
  # Evaluation (no gradient) takes the loss-only path: the same value.
  eval_loss = jax.jit(lambda p: chunked[3].loss(p, batch, None, deterministic=True)[0])(plain[4])
  assert abs(float(eval_loss) - float(plain[0])) < 1e-5


def test_chunked_loss_bfloat16_is_close_to_the_plain_path(make_config):
  config = make_config("gpt.py:tiny", **{"model.dtype": "bfloat16"})
  lengths = {"targets": 24}
  batch = packed_batch(build_model(config.model), 2, lengths, 1024)
  plain = loss_and_grads(config.model, batch, lengths)
  with config.unlocked():
    config.model.loss_chunk_size = 16
  chunked = loss_and_grads(config.model, batch, lengths)
  assert abs(float(plain[0]) - float(chunked[0])) < 2e-3
  embedding = [g["token_embedder"]["embedding"] for g in (plain[2], chunked[2])]
  scale = float(jnp.max(jnp.abs(embedding[0])))
  assert float(jnp.max(jnp.abs(embedding[0] - embedding[1]))) < 0.02 * scale


def test_chunked_cross_entropy_function_against_optax():
  """The function itself: sums over weights, gradients w.r.t. hidden and kernel, both layouts."""
  import optax

  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(3, 7, 16)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(50, 16)), jnp.float32)  # [V, d] (tied layout)
  targets = jnp.asarray(rng.integers(0, 50, (3, 7)))
  weights = jnp.asarray(rng.integers(0, 2, (3, 7)), jnp.float32)

  def reference(h, w):
    logits = jnp.einsum("btd,vd->btv", h, w)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights)

  def ours(h, w, transposed):
    kernel = w if transposed else w.T
    return chunked_cross_entropy(h, kernel, targets, weights, chunk=4, transposed=transposed)[0]

  expected, expected_grads = jax.value_and_grad(reference, argnums=(0, 1))(h, w)
  for transposed in (True, False):
    value, grads = jax.value_and_grad(ours, argnums=(0, 1))(h, w, transposed)
    assert abs(float(value) - float(expected)) < 1e-4
    assert float(jnp.max(jnp.abs(grads[0] - expected_grads[0]))) < 1e-5
    assert float(jnp.max(jnp.abs(grads[1] - expected_grads[1]))) < 1e-5


def grad_temp_bytes(config_model, lengths, batch_size):
  model = build_model(config_model)
  shapes = model.input_shapes(batch_size, lengths)
  params = jax.eval_shape(
    lambda: nn.unbox(model.init(jax.random.key(0), model.input_shapes(1, lengths)))
  )

  def loss(p, batch):
    return model.loss(p, batch, jax.random.key(0), deterministic=True)[0]

  compiled = jax.jit(jax.grad(loss)).lower(params, shapes).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_loss_saves_the_logits_memory(make_config):
  """Compiled memory analysis of the gradient: 4 × 256 tokens × 8192 ids of float32 logits are
  8 MiB per copy; chunks of 64 tokens keep at most 2 MiB per copy alive."""
  config = make_config("gpt.py:tiny", **{"model.vocab_size": 8192, "data.vocab_size": 8192})
  lengths = {"targets": 256}
  plain = grad_temp_bytes(config.model, lengths, 4)
  with config.unlocked():
    config.model.loss_chunk_size = 64
  chunked = grad_temp_bytes(config.model, lengths, 4)
  logits_bytes = 4 * 256 * 8192 * 4
  assert plain > 2 * logits_bytes  # the plain gradient holds the logits and their gradient
  assert chunked < plain - 1.5 * logits_bytes


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.model.attention_impl=flash", "config.model.attention_impl='flash'"),
    ("--config.model.loss_chunk_size=-1", "config.model.loss_chunk_size=-1"),
  ],
)
def test_bad_speed_settings_are_config_errors(make_config, override, message):
  from t5x_lite import config as config_lib

  key, _, value = override.removeprefix("--config.").partition("=")
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    config_lib.get_config("gpt.py:tiny", [(key, value)])


def test_chunked_loss_is_refused_for_bert(make_config):
  with pytest.raises(ConfigError, match="loss_chunk_size=8: the chunked cross-entropy"):
    make_config("bert.py:tiny", **{"model.loss_chunk_size": 8})


@pytest.mark.slow
def test_resumed_run_loads_the_train_step_from_the_compilation_cache(
  tmp_path, shared_vocab_workdir
):
  """`t5x-lite train` twice in one workdir (the second resumes and trains 2 more steps): the
  first compiles and caches, the second reports a persistent cache hit, by its log line."""
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env.update(XLA_FLAGS="", PYTHONUNBUFFERED="1", PYTHONPATH=REPO)
  lines = []
  for steps in (2, 4):
    run = subprocess.run(
      [sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", workdir,
       f"--config.train.steps={steps}", "--config.train.sample_prompt=",
       "--config.train.eval_steps=1"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "compiling the train step…" in run.stdout
    lines.append(
      next(line for line in run.stdout.splitlines() if "compiled the train step" in line)
    )
  cache = os.path.join(workdir, "jax_cache")
  assert f"compiled and cached in {cache}" in lines[0]
  assert f"persistent cache hit, {cache}" in lines[1]
  assert os.listdir(cache)


def test_compare_pairs_a_peer_with_our_step(tmp_path):
  """`benchmark.py compare` with a stand-in peer script (prints the JSON line a peer prints) and
  our gpt2_small step at 2 layers of width 64, each side in a process of its own per pair: one
  row per pair and the ratio of step times."""
  peers = tmp_path / "peers"
  peers.mkdir()
  (peers / "peer_flax_gpt2.py").write_text(
    "import json, sys\nprint('noise')\n"
    "print(json.dumps({'step_time_s_median': 123.0, 'argv': sys.argv[1:]}))\n"
  )
  out = tmp_path / "compare.json"
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=REPO)
  run = subprocess.run(
    [sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "compare", "--peer", "flax_gpt2",
     "--peer-python", sys.executable, "--peers-dir", str(peers), "--batch", "1", "--length", "16",
     "--pairs", "2", "--steps", "1", "--warmup", "1", "--out", str(out),
     "--config.model.num_layers=2", "--config.model.d_model=64", "--config.model.num_heads=4",
     "--config.model.d_ff=128", "--config.model.vocab_size=512", "--config.data.vocab_size=512"],
    env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(out.read_text())
  assert len(result["pairs"]) == 2
  for pair in result["pairs"]:
    assert pair["peer"] == 123.0
    assert pair["speed_ratio"] == pytest.approx(123.0 / pair["ours"])
    assert pair["peer_result"]["argv"][:4] == ["--batch", "1", "--seq-len", "16"]
    # Ours, like the peer, ran in a fresh process of its own (compiled there, then timed).
    assert pair["ours_result"]["compile_s"] > 0 and len(pair["ours_result"]["step_time_s_all"]) == 1
  assert result["ours_process"] == "fresh" and result["ours_dtype"] == "float32"
  assert result["machine"]["cpu"] and "load_average_1m" in result["machine"]
  assert "median" in run.stdout and "ours vs peer (speed)" in run.stdout


def test_clipping_in_the_step_equals_optax_clip_by_global_norm(make_config):
  """RunSetup's step clips by itself (fused into the update; the optimizer has no clip): the
  same params as optax.clip_by_global_norm chained before AdamW (g·(c/n) instead of (g/n)·c: equal
  to float32 rounding)."""
  from t5x_lite.training import optimizers
  from t5x_lite.training import step as step_lib
  from t5x_lite.training.setup import RunSetup

  config = make_config("gpt.py:tiny", **{"optimizer.grad_clip": 0.05, "train.batch_size": 8})
  setup = RunSetup.create(config, jax.devices()[:1])
  assert optimizers.clip_in_step(config) == 0.05
  batch = setup.global_batch(
    {k: np.asarray(v) for k, v in packed_batch(setup.model, 8, {"targets": 128}, 1024).items()}
  )
  optax_chain, schedule = optimizers.make_optimizer(config)  # clip_by_global_norm in the chain
  reference = step_lib.jit_train_step(
    setup.model, optax_chain, schedule, microbatches=1, rules=setup.rules,
    state_shardings=setup.state_shardings, batch_sharding=setup.batch_sharding, mesh=setup.mesh,
  )  # fmt: skip
  results = []
  for step in (setup.jit_train_step(), reference):
    state = setup.init_state()
    with setup.use_mesh():
      for _ in range(2):
        state, metrics = step(state, batch, jax.random.key(1))
    results.append((jax.device_get(state.params), float(metrics["grad_norm"][0])))
  assert results[0][1] > 0.05  # the clip was active
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # noqa: E731
  jax.tree.map(close, results[0][0], results[1][0])
  assert results[0][1] == results[1][1]  # the same gradients before the update


def test_small_replicated_arrays_are_saved_without_slicing(tmp_path):
  """Replicated arrays on 8 devices: a first save writes small ones whole from their first
  replica (Orbax's replica-parallel default sliced each on device: ~700 compiles for a tiny T5)
  and still slices a large one (MIN_REPLICA_SLICE_BYTES per replica); both restore equal."""
  import orbax.checkpoint as ocp

  from t5x_lite import checkpoints

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = np.random.default_rng(0)

  def array(shape):
    return jax.device_put(rng.normal(size=shape).astype(np.float32), replicated)

  # Odd shapes that no other test uses, so that no compiled slice is cached in this process.
  small = {f"w{i}": array((8 * (i + 3), 13 + i)) for i in range(5)}
  large = {"big": array((8 * 8193, 33))}  # 1.03 MiB per replica
  assert large["big"].nbytes // 8 >= checkpoints.MIN_REPLICA_SLICE_BYTES
  for name, state, sliced in (("small", small, False), ("large", large, True)):
    compiles = []

    def listener(event, duration, compiles=compiles, **kwargs):
      if event.startswith("/jax/core/compile"):
        compiles.append(event)

    checkpointer = checkpoints.Checkpointer(str(tmp_path / name), keep=1)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
      assert checkpointer.save(1, state, {0: {}}, 1, ml_collections.ConfigDict({"seed": 0}))
      checkpointer.wait()
    finally:
      jax.monitoring.unregister_event_duration_listener(listener)
    assert bool(compiles) == sliced, (name, len(compiles))
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
    restored, _ = checkpointer.restore(abstract, step=1)
    checkpointer.close()
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    metadata = json.loads((tmp_path / name / "1" / "_CHECKPOINT_METADATA").read_text())
    assert metadata["item_handlers"]["state"] == ocp.StandardCheckpointHandler.typestr()
