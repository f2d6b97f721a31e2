"""Device mesh and shardings: logical axis names -> mesh axes (`data`, `fsdp`, `tensor`).

Model code names logical axes only (`batch, length, embed, mlp, heads, kv, vocab, layers`);
`config.mesh.rules` maps them onto the mesh. Parameters are created already sharded: the
abstract (eval_shape) params give logical specs, the rules turn them into NamedShardings, and
`jit(init, out_shardings=...)` materializes each shard on its own device.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite.config import MESH_PRESETS, ConfigError, resolve_mesh_shape

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]

# Named layouts for config.mesh.preset (see t5x_lite/config.py).
PRESETS = MESH_PRESETS


def _on_cloud_tpu_vm() -> bool:
  """A Cloud TPU VM (its chips show up as /dev/accel* or /dev/vfio/N, or the runtime says so).

  There `jax.distributed.initialize()` needs no arguments, and is harmless on one host.
  """
  if os.environ.get("T5X_LITE_DISTRIBUTED", "").lower() in ("0", "false", "off"):
    return False
  if any(name in os.environ for name in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")):
    return True
  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def maybe_initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Starts jax.distributed when this is one of several processes.

  On Cloud TPU VMs `jax.distributed.initialize()` finds its peers by itself (set
  T5X_LITE_DISTRIBUTED=0 to skip it); on GPU clusters and in tests the coordinator and process
  numbers come from arguments or the environment (`T5X_LITE_COORDINATOR`,
  `T5X_LITE_NUM_PROCESSES`, `T5X_LITE_PROCESS_ID`).
  """
  coordinator_address = coordinator_address or os.environ.get("T5X_LITE_COORDINATOR")
  if num_processes is None and "T5X_LITE_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["T5X_LITE_NUM_PROCESSES"])
  if process_id is None and "T5X_LITE_PROCESS_ID" in os.environ:
    process_id = int(os.environ["T5X_LITE_PROCESS_ID"])
  if coordinator_address is None and not _on_cloud_tpu_vm():
    return
  if jax.distributed.is_initialized():
    return
  if coordinator_address is not None:
    # CPU processes (tests, CPU clusters) need gloo for cross-process collectives; the setting
    # only affects the CPU backend. Querying the backend here would initialize it too early.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
    "jax.distributed: process %d of %d, %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
  )


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
