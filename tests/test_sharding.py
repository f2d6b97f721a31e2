"""Sharded steps equal the single-device step; microbatching equals one big batch."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from t5x_lite import partitioning
from t5x_lite.models import build_model
from t5x_lite.training import optimizers
from t5x_lite.training import state as state_lib
from t5x_lite.training import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, LENGTH = 8, 32


# The small GPT the sharding tests step once (make_config overrides).
SMALL = {
  "model.d_model": "64",
  "model.num_heads": "4",
  "model.d_ff": "128",
  "model.vocab_size": "512",
  "data.vocab": "byte",
  "data.extra_ids": "0",
  "data.feature_lengths": f"{{'targets': {LENGTH}}}",
  "train.batch_size": str(BATCH),
  "optimizer.warmup_steps": "0",
  "train.steps": "10",
  "model.scan_layers": "true",
  # Adam's first step is lr·g/(|g|+eps), close to lr·sign(g): with a tiny eps, float
  # round-off in a near-zero gradient (GPT-2's key bias has an exactly-zero one) becomes
  # an lr-sized step of random sign. A large eps makes the update smooth in g, so the
  # comparison measures the sharded gradient, not the sign of round-off.
  "optimizer.eps": "1e-3",
}


def packed_batch(seed=0):
  """Two packed documents per row, like the feature converter makes."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(3, 259, size=(BATCH, LENGTH)).astype(np.int32)
  segment_ids = np.where(np.arange(LENGTH) < LENGTH // 2 + 3, 1, 2).astype(np.int32)
  segment_ids = np.broadcast_to(segment_ids, (BATCH, LENGTH)).copy()
  segment_ids[:, -4:] = 0  # padding
  targets[segment_ids == 0] = 0
  positions = np.zeros_like(targets)
  for s in (1, 2):
    mask = segment_ids[0] == s
    positions[:, mask] = np.arange(mask.sum())
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  inputs[positions == 0] = 0
  return {
    "decoder_target_tokens": targets,
    "decoder_input_tokens": inputs,
    "decoder_loss_weights": (segment_ids > 0).astype(np.float32),
    "decoder_segment_ids": segment_ids,
    "decoder_positions": positions,
  }


def run_one_step(config, devices, batch):
  """Creates the state sharded on `devices` and runs one train step; returns (state, metrics)."""
  model = build_model(config.model)
  mesh = partitioning.make_mesh(config, devices)
  rules = partitioning.logical_rules(config)
  optimizer, schedule = optimizers.make_optimizer(config)
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  init = functools.partial(model.init, jax.random.key(0), shapes)
  state, shardings = state_lib.init_sharded(init, optimizer, mesh, rules)
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  train_step = step_lib.jit_train_step(
    model, optimizer, schedule, microbatches=config.train.microbatches, rules=rules,
    state_shardings=shardings, batch_sharding=batch_sharding, mesh=mesh, donate=False)  # fmt: skip
  with partitioning.use_mesh(mesh, rules):
    global_batch = partitioning.make_global_batch(batch, batch_sharding)
    new_state, metrics = train_step(state, global_batch, jax.random.key(1))
  return new_state, step_lib.finalize_metrics(metrics), shardings


@pytest.fixture(scope="module")
def single_device_result(
  make_config,
):
  return run_one_step(
    make_config("gpt.py:tiny", **{**SMALL, "mesh.data": "1"}), jax.devices()[:1], packed_batch()
  )


def effective_spec(array) -> tuple:
  """The array's PartitionSpec with mesh axes of size 1 dropped (they split nothing)."""
  mesh_shape = array.sharding.mesh.shape
  out = []
  for entry in tuple(array.sharding.spec) + (None,) * (array.ndim - len(array.sharding.spec)):
    axes = entry if isinstance(entry, tuple) else (entry,)
    kept = tuple(a for a in axes if a is not None and mesh_shape[a] > 1)
    out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  return tuple(out)


def assert_same_update(result, reference, rtol=1e-5):
  state, metrics, _ = result
  ref_state, ref_metrics, _ = reference
  assert metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=rtol)
  flat = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
  ref_flat = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(ref_state.params)))
  for path, value in flat:
    np.testing.assert_allclose(value, ref_flat[path], rtol=rtol, atol=1e-7, err_msg=str(path))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["data", "fsdp", "fsdp+tensor"])
def test_preset_step_equals_single_device(make_config, preset, single_device_result):
  config = make_config("gpt.py:tiny", **{**SMALL, "mesh.preset": preset})
  result = run_one_step(config, jax.devices(), packed_batch())
  assert_same_update(result, single_device_result)
  state, _, _ = result
  # Each parameter is laid out as the rules say (vocab, mlp, heads -> tensor; embed -> fsdp).
  params = state.params
  embedding = params["token_embedder"]["embedding"]  # ('vocab', 'embed')
  wi = params["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # ('layers', 'embed', 'mlp')
  query = params["decoder"]["layers"]["attention"]["query"]["kernel"]  # (layers, embed, heads, kv)
  expected = {
    "data": (P(None, None), P(None, None, None), P(None, None, None, None)),
    "fsdp": (P(None, "fsdp"), P(None, "fsdp", None), P(None, "fsdp", None, None)),
    "fsdp+tensor": (
      P("tensor", "fsdp"),
      P(None, "fsdp", "tensor"),
      P(None, "fsdp", "tensor", None),
    ),
  }[preset]
  for array, spec in zip((embedding, wi, query), expected):
    assert effective_spec(array) == tuple(spec)


def test_fsdp_shards_adam_moments_like_params(
  make_config,
):
  config = make_config("gpt.py:tiny", **{**SMALL, "mesh.data": "1", "mesh.fsdp": "-1"})
  state, _, shardings = run_one_step(config, jax.devices(), packed_batch())
  mu = state.opt_state[1][0].mu  # chain(clip, adamw): adamw's ScaleByAdamState
  assert effective_spec(mu["token_embedder"]["embedding"]) == (None, "fsdp")
  # No full copy of the embedding on any device: each holds 1/8 of its columns.
  shard_shape = mu["token_embedder"]["embedding"].addressable_shards[0].data.shape
  assert shard_shape == (512, 64 // 8)


def test_microbatches_equal_one_big_batch(make_config, single_device_result):
  config = make_config("gpt.py:tiny", **{**SMALL, "mesh.data": "1", "train.microbatches": "4"})
  result = run_one_step(config, jax.devices()[:1], packed_batch())
  assert_same_update(result, single_device_result)


def test_nonfinite_gradient_is_skipped(
  make_config,
):
  config = make_config("gpt.py:tiny", **{**SMALL, "mesh.data": "1"})
  batch = packed_batch()
  model = build_model(config.model)
  optimizer, schedule = optimizers.make_optimizer(config)
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  state = state_lib.create(model.init(jax.random.key(0), shapes), optimizer)
  poisoned = jax.tree.map(lambda x: x, state.params)
  poisoned["token_embedder"]["embedding"] = (
    poisoned["token_embedder"]["embedding"].at[5, 0].set(jnp.nan)
  )
  state = state.replace(params=poisoned)
  batch["decoder_input_tokens"][0, 1] = 5
  step = jax.jit(
    functools.partial(step_lib.train_step, model=model, optimizer=optimizer, schedule=schedule)
  )
  new_state, metrics = step(state, batch, jax.random.key(0))
  assert float(metrics["finite"][0]) == 0.0
  assert int(new_state.skipped_steps) == 1 and int(new_state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)
