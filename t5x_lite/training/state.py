"""TrainState: everything a training step reads and writes, as one pytree, and its shardings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite import partitioning


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32: optimizer steps taken
  params: Any  # the model's parameters (unboxed), float32
  opt_state: Any  # the optimizer's state
  skipped_steps: jax.Array  # [] int32: updates skipped for a non-finite loss or gradient


def create(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  params = nn.unbox(params)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    skipped_steps=jnp.zeros((), jnp.int32),
  )


def state_shardings(
  abstract_boxed_params: Any,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  rules: partitioning.Rules,
) -> TrainState:
  """NamedShardings for every leaf of the TrainState built from these (abstract, boxed) params.

  Optimizer-state leaves shaped like their parameter (Adam's moments) follow the parameter's
  sharding; other leaves (counts, Adafactor's factored rows/columns) are replicated.
  """
  param_shardings = partitioning.tree_shardings(abstract_boxed_params, mesh, rules)
  abstract_params = nn.unbox(abstract_boxed_params)
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  replicated = NamedSharding(mesh, P())

  # An optimizer-state leaf follows the parameter whose key path ends its own path (Adam's
  # `mu['decoder']['wte']` ends in the param path `['decoder']['wte']`) when the shapes agree.
  # Matching on paths (not `optax.tree_map_params`) also works for `multi_transform` (frozen
  # groups), whose inner states hold masked copies of the params tree.
  by_path = {
    tuple(path): (param.shape, sharding)
    for (path, param), sharding in zip(
      jax.tree_util.tree_flatten_with_path(abstract_params)[0],
      jax.tree_util.tree_leaves(param_shardings),
      strict=True,
    )
  }

  def follow_param(path, leaf):
    for start in range(len(path)):
      hit = by_path.get(tuple(path[start:]))
      if hit is not None:
        shape, sharding = hit
        return sharding if getattr(leaf, "shape", None) == shape else replicated
    return replicated

  opt_shardings = jax.tree_util.tree_map_with_path(follow_param, abstract_opt_state)
  return TrainState(
    step=replicated, params=param_shardings, opt_state=opt_shardings, skipped_steps=replicated
  )


def init_sharded(
  init_params: Callable[[], Any],
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  rules: partitioning.Rules,
) -> tuple[TrainState, TrainState]:
  """Creates the TrainState already sharded: no full copy of the params lands on one device.

  `init_params()` returns boxed params (it is traced, never run eagerly). Returns the state and
  its shardings (reused for checkpoint restore and the jitted step).
  """
  abstract_boxed = jax.eval_shape(init_params)
  shardings = state_shardings(abstract_boxed, optimizer, mesh, rules)
  with partitioning.use_mesh(mesh, rules):
    state = jax.jit(lambda: create(init_params(), optimizer), out_shardings=shardings)()
  return state, shardings


def abstract_state(
  init_params: Callable[[], Any], optimizer: optax.GradientTransformation, shardings: TrainState
) -> TrainState:
  """ShapeDtypeStructs (with shardings) of the state: the restore target for checkpoints."""
  shapes = jax.eval_shape(lambda: create(init_params(), optimizer))
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )
