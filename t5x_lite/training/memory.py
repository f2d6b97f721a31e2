"""Will the run fit? The train state's and the host batches' bytes, estimated before anything
is allocated, against the memory there is.

A model too large for its devices used to fail deep in XLA's allocator (and, on a CPU, hang the
run behind a half-failed allocation); an absurd sequence length failed in numpy. Both are now
a `ConfigError` with the figure and the limit, raised right after `RunSetup.create` (shapes
only: `jax.eval_shape`, nothing allocated):

  state   params + optimizer state, per device, from the abstract shapes and the shardings
          (a sharded leaf counts its shard); on a CPU every local device holds its copy in
          host RAM, so they are summed and compared with the host's available memory
  device  limit: `device.memory_stats()['bytes_limit']` where the backend reports it (GPU,
          TPU), the smallest over the local devices; no check when it does not
  data    the host's model-feature rows in flight (a block of the pipeline, at least
          `pipeline.ROWS_PER_BLOCK` rows, built while one batch is on its way) against host RAM

Activations are not estimated (they depend on remat, attention kernels and XLA's fusion); XLA
reports those at compile time.

And a failed allocation must not hang the run: XLA's CPU client never completes a computation
whose buffers it could not allocate, so `device_get` of the state waited forever.
`wait_until_ready` polls the arrays instead and gives up after `train.ready_timeout` seconds
with the estimate and the limit.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from t5x_lite.data.pipeline import ROWS_PER_BLOCK
from t5x_lite.errors import ConfigError

logger = logging.getLogger(__name__)

# The fraction of a limit a run may plan to fill: XLA needs room for activations and buffers.
HEADROOM = 0.9


def format_bytes(n: float) -> str:
  """1536 -> '1.5 KiB', 6.4e12 -> '5.8 TiB'."""
  for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
    if abs(n) < 1024 or unit == "PiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  raise AssertionError("unreachable")


def leaf_bytes(leaf: Any, sharding: Any = None) -> int:
  """Bytes of one abstract leaf on one device: its shard when `sharding` is given."""
  shape = tuple(leaf.shape)
  if sharding is not None and hasattr(sharding, "shard_shape"):
    shape = tuple(sharding.shard_shape(shape))
  return math.prod(shape) * np.dtype(leaf.dtype).itemsize


def state_bytes_per_device(setup) -> tuple[int, int]:
  """(params, optimizer state) bytes on one device of `setup`'s mesh; nothing is allocated."""
  abstract_params = nn.unbox(setup.abstract_boxed_params)
  abstract_opt = jax.eval_shape(setup.optimizer.init, abstract_params)
  shardings = setup.state_shardings
  params = sum(
    leaf_bytes(leaf, sharding)
    for leaf, sharding in zip(
      jax.tree.leaves(abstract_params), jax.tree.leaves(shardings.params), strict=True
    )
  )
  opt = sum(
    leaf_bytes(leaf, sharding)
    for leaf, sharding in zip(
      jax.tree.leaves(abstract_opt), jax.tree.leaves(shardings.opt_state), strict=True
    )
  )
  return params, opt


def host_memory_available() -> int | None:
  """Bytes of host RAM available now: /proc/meminfo's MemAvailable (page cache counts as free),
  else sysconf's free pages; None when neither is known."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def device_memory_limit(devices: Sequence[jax.Device]) -> tuple[int, str] | None:
  """(bytes, device) of the smallest `bytes_limit` the local devices report; None on a backend
  without memory statistics (the CPU)."""
  smallest = None
  for device in devices:
    if device.process_index != jax.process_index():
      continue
    try:
      stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not implemented on this backend
      stats = None
    limit = (stats or {}).get("bytes_limit")
    if limit and (smallest is None or limit < smallest[0]):
      smallest = (int(limit), str(device))
  return smallest


def host_data_bytes(setup) -> tuple[int, int]:
  """(bytes, rows) of model-feature rows this host holds at once: a pipeline block (at least
  ROWS_PER_BLOCK rows) plus one batch."""
  config = setup.config
  per_host = max(1, config.train.batch_size // jax.process_count())
  row = sum(
    math.prod(shape.shape[1:]) * np.dtype(shape.dtype).itemsize
    for shape in setup.input_shapes.values()
  )
  rows = max(per_host, ROWS_PER_BLOCK) + per_host
  return rows * row, rows


def check_fits(setup, host_available: int | None = None, device_limit=None) -> dict[str, int]:
  """Raises ConfigError when the train state or the host batches cannot fit; returns the
  estimates ({'params', 'opt_state', 'data'} bytes per device / host) otherwise.

  `host_available`, `device_limit` ((bytes, name)): the limits to check against (tests);
  measured when None.
  """
  config = setup.config
  devices = [d for d in setup.devices if d.process_index == jax.process_index()]
  params, opt = state_bytes_per_device(setup)
  data, rows = host_data_bytes(setup)
  host = host_memory_available() if host_available is None else host_available
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  if host is not None and data > HEADROOM * host:
    raise ConfigError(
      f"data.feature_lengths={lengths}: the {rows} rows of model features a host holds at once "
      f"need {format_bytes(data)}, more than the {format_bytes(host)} of host memory available; "
      "use shorter feature lengths"
    )
  state = params + opt
  what = (
    f"the train state needs {format_bytes(state)} per device (params {format_bytes(params)} + "
    f"optimizer state {format_bytes(opt)}; {setup.num_params:,} parameters, "
    f"model.num_layers={config.model.num_layers}, model.d_model={config.model.d_model})"
  )
  advice = "use a smaller model, more devices, or shard it (mesh.fsdp / config.mesh.preset)"
  on_cpu = all(d.platform == "cpu" for d in devices)
  if on_cpu:
    total = state * len(devices) + data
    if host is not None and total > HEADROOM * host:
      raise ConfigError(
        f"{what}: {format_bytes(total)} in host RAM for {len(devices)} CPU device(s), each "
        f"holding its copy, and the data; more than the {format_bytes(host)} available; {advice}"
      )
  else:
    limit = device_limit if device_limit is not None else device_memory_limit(devices)
    if limit is not None and state > HEADROOM * limit[0]:
      raise ConfigError(
        f"{what}, more than {HEADROOM:.0%} of the {format_bytes(limit[0])} of {limit[1]} "
        f"(its bytes_limit); {advice}"
      )
  return {"params": params, "opt_state": opt, "data": data}


class DeviceMemoryError(ConfigError):
  """A device allocation failed (RESOURCE_EXHAUSTED) or the arrays were not ready in time: the
  model or the batch is too large for the memory there is; a ConfigError, as what to change is
  in the config."""


def wait_until_ready(
  tree: Any, what: str, timeout_s: float, estimate: str = "", log_every_s: float = 30
) -> None:
  """Returns once the arrays of `tree` are computed and one of them has reached the host;
  DeviceMemoryError when an allocation failed, or after `timeout_s` seconds.

  After a failed allocation XLA's CPU client reports the arrays ready, yet a copy to the host
  (`device_get(state.step)`) blocks forever; `block_until_ready` cannot time out. So the wait
  and one small copy run in a daemon thread, which is abandoned (not joined) on a timeout.
  """
  leaves = [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]
  if not leaves:
    return
  smallest = min(leaves, key=lambda leaf: leaf.size)
  done = threading.Event()
  failure: list[BaseException] = []

  def probe() -> None:
    try:
      jax.block_until_ready(leaves)
      jax.device_get(smallest.addressable_shards[0].data)  # this host's copy (multi-host too)
    except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
      failure.append(e)
    done.set()

  threading.Thread(target=probe, name=f"t5x_lite wait: {what}", daemon=True).start()
  start = time.monotonic()
  while not done.wait(min(log_every_s, max(0.0, timeout_s - (time.monotonic() - start)))):
    waited = time.monotonic() - start
    if waited >= timeout_s:
      host = host_memory_available()
      raise DeviceMemoryError(
        f"{what} did not finish in {timeout_s:g} s (train.ready_timeout): a device allocation "
        f"probably failed{f' ({estimate})' if estimate else ''}"
        f"{f'; host memory available now: {format_bytes(host)}' if host is not None else ''}; "
        "use a smaller model or batch, or raise train.ready_timeout if it is just slow"
      )
    logger.info("still waiting for %s (%.0f s)", what, waited)
  if failure:
    if "RESOURCE_EXHAUSTED" not in str(failure[0]):
      raise failure[0]
    cause = str(failure[0]).strip().splitlines()[0]
    logger.debug("%s failed", what, exc_info=failure[0])
    raise DeviceMemoryError(
      f"{what} failed: {cause}{f' ({estimate})' if estimate else ''}; use a smaller model or "
      "batch, more devices, or shard the state (mesh.fsdp), or remat (model.remat)"
    ) from None


def describe(estimate: dict[str, int]) -> str:
  """'state 3.5 GiB per device (params 1.2 GiB + optimizer 2.3 GiB), data 4.0 MiB per host'."""
  state = estimate["params"] + estimate["opt_state"]
  return (
    f"state {format_bytes(state)} per device (params {format_bytes(estimate['params'])} + "
    f"optimizer {format_bytes(estimate['opt_state'])}), data {format_bytes(estimate['data'])} "
    "per host"
  )
