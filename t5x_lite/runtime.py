"""The process runtime: jax.distributed start-up and Cloud TPU VM detection.

Called once by the CLI before anything touches a device.
"""

from __future__ import annotations

import glob
import logging
import os

import jax


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


# ---------------------------------------------------------------------------------------------
# Persistent compilation cache: a resumed run loads its compiled step instead of compiling it.


def compilation_cache_dir(setting: str, workdir: str) -> str:
  """The directory of `train.compilation_cache`: '' (off), 'workdir' ({workdir}/jax_cache),
  'user' ($XDG_CACHE_HOME or ~/.cache, then t5x_lite/jax) or a path."""
  if not setting:
    return ""
  if setting == "workdir":
    return os.path.join(workdir, "jax_cache")
  if setting == "user":
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "t5x_lite", "jax")
  return os.path.expanduser(setting)


def enable_compilation_cache(setting: str, workdir: str) -> str:
  """Turns on jax's persistent compilation cache in `compilation_cache_dir(setting, workdir)`
  and returns the directory in effect ('' = none).

  A cache already set by the user (JAX_COMPILATION_CACHE_DIR or jax.config) wins. Programs that
  compile in over 0.5 s are cached (jax's default is 1 s), so a small model's step is too.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  directory = compilation_cache_dir(setting, workdir)
  if not directory:
    return ""
  if "://" not in directory:
    os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return directory


class CacheEvents:
  """Counts jax's persistent-cache hits and misses while active (a context manager)."""

  def __init__(self):
    self.hits = self.misses = 0

  def _listen(self, event: str, **kwargs) -> None:
    del kwargs
    if event == "/jax/compilation_cache/cache_hits":
      self.hits += 1
    elif event == "/jax/compilation_cache/cache_misses":
      self.misses += 1

  def __enter__(self) -> CacheEvents:
    jax.monitoring.register_event_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_listener(self._listen)
