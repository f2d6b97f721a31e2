"""Device mesh and shardings: logical axis names -> mesh axes (`data`, `fsdp`, `tensor`).

Model code names logical axes only, with the constants below (`BATCH, LENGTH, EMBED, MLP, HEADS,
KV, VOCAB, LAYERS`, as MaxText's `common_types.py`), so a typo is a NameError instead of a
silently replicated tensor; `config.mesh.rules` (default `DEFAULT_RULES`) maps them onto the mesh. Parameters are created already sharded: the
abstract (eval_shape) params give logical specs, the rules turn them into NamedShardings, and
`jit(init, out_shardings=...)` materializes each shard on its own device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]

# Logical axis names: the only names model code gives to parameter and activation dimensions.
BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"
VOCAB = "vocab"
LAYERS = "layers"
LOGICAL_AXES = (BATCH, LENGTH, EMBED, MLP, HEADS, KV, VOCAB, LAYERS)

# Logical axis name -> mesh axes (DESIGN.md "Sharding"). Data, so a config can change it
# (`config.mesh.rules`).
DEFAULT_RULES = (
  (BATCH, ("data", "fsdp")),
  (EMBED, "fsdp"),
  (MLP, "tensor"),
  (HEADS, "tensor"),
  (VOCAB, "tensor"),
  (KV, None),
  (LENGTH, None),
  (LAYERS, None),
)

# Named mesh layouts (`config.mesh.preset`): pure data parallel; params and optimizer state
# sharded over all devices (FSDP); FSDP plus Megatron-style tensor parallelism for heads and MLP
# (tensor = config.mesh.tensor when > 1, else 2).
PRESETS = {
  "data": {"data": -1, "fsdp": 1, "tensor": 1},
  "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
  "fsdp+tensor": {"data": 1, "fsdp": -1, "tensor": 2},
}


# ---------------------------------------------------------------------------------------------
# Mesh shape: checked before anything compiles.


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def mesh_sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The configured axis sizes (-1 = fill), after applying `config.mesh.preset`."""
  sizes = {axis: int(config.mesh[axis]) for axis in ("data", "fsdp", "tensor")}
  preset = config.mesh.get("preset", "")
  if preset:
    if preset not in PRESETS:
      raise ConfigError(
        f"config.mesh.preset={preset!r}: expected one of {', '.join(map(repr, PRESETS))} or ''"
      )
    sizes = dict(PRESETS[preset])
    if preset == "fsdp+tensor" and int(config.mesh.tensor) > 1:
      sizes["tensor"] = int(config.mesh.tensor)
  return sizes


def resolve_mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
  """Mesh axis sizes with -1 filled in; ConfigError if they do not multiply to num_devices."""
  sizes = mesh_sizes(config)
  known = 1
  for size in sizes.values():
    if size != -1:
      known *= size
  fill = [axis for axis, size in sizes.items() if size == -1]
  if fill:
    _require(
      num_devices % known == 0,
      f"config.mesh={sizes}: the fixed axes ({known} devices) do not divide the {num_devices} devices",
    )
    sizes[fill[0]] = num_devices // known
  product = sizes["data"] * sizes["fsdp"] * sizes["tensor"]
  _require(
    product == num_devices,
    f"config.mesh={sizes}: data x fsdp x tensor = {product}, but there are {num_devices} devices",
  )
  return sizes


def check_divisible_by_mesh(config: ml_collections.ConfigDict, sizes: Mapping[str, int]) -> None:
  """Every dimension a rule shards must split evenly over its mesh axes (else jax fails deep
  inside jit with an IndivisibleError)."""
  m = config.model
  dims = {
    "embed": ("model.d_model", m.d_model),
    "mlp": ("model.d_ff", m.d_ff),
    "heads": ("model.num_heads", m.num_heads),
    "vocab": ("model.vocab_size", m.vocab_size),
    "kv": ("model.head_dim", m.head_dim or m.d_model // m.num_heads),
  }
  for name, axes in config.mesh.rules:
    if name not in dims or axes is None:
      continue
    axes = axes if isinstance(axes, (tuple, list)) else (axes,)
    ways = 1
    for axis in axes:
      ways *= sizes.get(axis, 1)
    field, value = dims[name]
    _require(
      value % ways == 0,
      f"config.{field}={value} does not split over the {ways} devices of mesh axes "
      f"{'x'.join(axes)} that the rule {name!r} -> {tuple(axes)} shards it on "
      f"(pad it to a multiple of {ways}, e.g. {-(-value // ways) * ways}, or change config.mesh)",
    )


def check_mesh(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """`config.mesh` is well formed and, given the device count, fits it and the model sizes."""
  for axis in MESH_AXES:
    size = config.mesh[axis]
    _require(
      isinstance(size, int) and (size == -1 or size >= 1),
      f"config.mesh.{axis}={size!r}: expected a positive int or -1 (fill)",
    )
  sizes = mesh_sizes(config)
  _require(
    sum(1 for s in sizes.values() if s == -1) <= 1,
    f"config.mesh={sizes}: at most one axis may be -1",
  )
  m = config.model
  if m.head_dim == 0 and sizes["tensor"] > 1:
    _require(
      m.num_heads % sizes["tensor"] == 0,
      f"config.mesh.tensor={sizes['tensor']} does not divide model.num_heads={m.num_heads}",
    )
  if num_devices is not None:
    check_divisible_by_mesh(config, resolve_mesh_shape(config, num_devices))


def make_mesh(
  config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """The (data, fsdp, tensor) mesh of `config.mesh` over `devices` (default: all devices)."""
  devices = list(devices) if devices is not None else jax.devices()
  sizes = resolve_mesh_shape(config, len(devices))
  shape = tuple(sizes[axis] for axis in MESH_AXES)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if devices == jax.devices():
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def logical_rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  """`config.mesh.rules` as a tuple of (logical name, mesh axis | tuple of axes | None)."""
  rules = []
  for entry in config.mesh.rules:
    if len(entry) != 2:
      raise ConfigError(f"config.mesh.rules entry {entry!r}: expected (logical_name, mesh_axes)")
    name, axes = entry
    flat = axes if isinstance(axes, (tuple, list)) else (axes,)
    for axis in flat:
      if axis is not None and axis not in MESH_AXES:
        raise ConfigError(
          f"config.mesh.rules: {name!r} -> {axis!r}: expected one of {MESH_AXES} or None"
        )
    rules.append((name, tuple(axes) if isinstance(axes, list) else axes))
  return tuple(rules)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules):
  """Mesh and logical-axis rules in effect (needed while tracing with_logical_constraint)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def tree_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree whose leaves may be boxed with logical names (replicated if not)."""
  specs = nn.get_partition_spec(abstract_tree)
  return logical_to_shardings(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """How a [batch, length] input array is laid out: batch over the data-parallel axes."""
  spec = nn.logical_to_mesh_axes(("batch", "length"), rules)
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
  """How many ways the batch is split (the product of the mesh axes `batch` maps to)."""
  axes = batch_sharding(mesh, rules).spec[0]
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([mesh.shape[a] for a in axes]))


def make_global_batch(
  local_batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
  """Per-host numpy arrays -> global jax Arrays (each host passes only its own rows)."""
  return {
    name: jax.make_array_from_process_local_data(sharding, value)
    for name, value in local_batch.items()
  }
