"""Checkpoints: one Orbax CheckpointManager in `workdir/checkpoints`.

A step directory holds three items:
  state   the TrainState (Orbax StandardSave: sharded arrays, written asynchronously)
  data    the data iterators' states, one JSON file per logical data shard
  config  the resolved config (JSON), so `eval`/`generate` rebuild the exact model

Orbax writes each step to a temporary directory and renames it when complete, so a crash
(even `kill -9` during an async save) leaves the last complete step intact; the half-written
one is ignored and cleaned up at the next start. Restore builds the target shardings from the
*current* mesh, so a checkpoint saved on 8 devices restores on 4 or on 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import threading
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from t5x_lite import config as config_lib


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete or unreadable."""


_CAUSE_LIMIT = 300


def short_cause(error: BaseException) -> str:
  """One line saying why Orbax/TensorStore failed, without the JSON specs and advice they add
  (the full text goes to the debug log: `t5x-lite -v`)."""
  text = str(error).strip()
  stored = re.search(
    r"Requested shape: (\(.*?\)) is not compatible with the stored shape: (\(.*?\))", text
  )
  if stored:
    return (
      f"a parameter of shape {stored.group(1)} is stored as {stored.group(2)}: the model config "
      "differs from the one the checkpoint was saved with"
    )
  first = text.splitlines()[0] if text else ""
  first = re.split(r"\s*\[tensorstore_spec", first)[0]  # TensorStore appends its whole spec
  first = re.sub(r'Error opening "\w+" driver: ', "", first)
  cause = f"{type(error).__name__}: {first}" if first else type(error).__name__
  return cause if len(cause) <= _CAUSE_LIMIT else cause[: _CAUSE_LIMIT - 1] + "…"


def _restore_error(what: str, error: BaseException) -> CheckpointError:
  logging.debug("%s: full error", what, exc_info=error)
  return CheckpointError(f"{what}: {short_cause(error)} (t5x-lite -v shows the full error)")


def _ignore_closed_loop_stragglers() -> None:
  """After a failed restore, TensorStore completes the reads still in flight and calls back into
  Orbax's asyncio loop, which is closed by then: each prints an "Exception ignored ...
  RuntimeError: Event loop is closed" traceback (6 to 80 of them) above the one-line error.
  Those (and only those) are dropped; every other unraisable exception goes to the previous
  hook."""
  previous = sys.unraisablehook
  if getattr(previous, "_t5x_lite_filter", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
      return  # (not logged either: this can run at any time, even at interpreter exit)
    previous(unraisable)

  hook._t5x_lite_filter = True
  sys.unraisablehook = hook


# Set by a second Ctrl-C (a KeyboardInterrupt through `close_on_exit`): the save in flight is
# abandoned, and Orbax's background threads fail as the interpreter shuts down under them.
_ABANDONED = threading.Event()


class _OrbaxStragglers(logging.Filter):
  """Drops log records that repeat an error already reported in one line:
  - Orbax's `logging.exception` of a KeyboardInterrupt (a second Ctrl-C while it waits for a
    save; the CLI says "interrupted");
  - after that second Ctrl-C, Orbax's errors from the save it was told to abandon ("cannot
    schedule new futures after shutdown"): the step is left incomplete, never half-read, as
    after kill -9;
  - asyncio's "Task/Future exception was never retrieved" for Orbax's sibling reads of a
    restore that failed (logged whenever they are garbage-collected, each with TensorStore's whole spec; the
    restore error itself is in the debug log)."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[0] if record.exc_info else None
    interrupted = error is not None and issubclass(error, KeyboardInterrupt)
    abandoned = _ABANDONED.is_set() and "orbax" in (record.pathname or "")
    message = record.getMessage()
    unretrieved = message.startswith(
      ("Task exception was never retrieved", "Future exception was never retrieved")
    ) and ("orbax" in message or "tensorstore_spec" in message)
    return not (interrupted or abandoned or unretrieved)


def _quiet_stragglers() -> None:
  for name in ("absl", "asyncio"):  # Orbax logs through absl; asyncio through its own logger
    logger = logging.getLogger(name)
    if not any(isinstance(f, _OrbaxStragglers) for f in logger.filters):
      logger.addFilter(_OrbaxStragglers())


# One list per open `close_on_exit` block: the Checkpointers created inside it.
_scopes: list[list[Checkpointer]] = []


@contextlib.contextmanager
def close_on_exit():
  """Closes every Checkpointer created inside the block that is still open when it ends, error
  or not (the training loop's error paths: a failed restore, Ctrl-C, a bad batch), so no Orbax
  thread outlives the run and prints into the one-line error. A save in flight is finished
  first, except after a KeyboardInterrupt (a second Ctrl-C exits at once)."""
  created: list[Checkpointer] = []
  _scopes.append(created)
  completed = interrupted = False
  try:
    yield
    completed = True
  except KeyboardInterrupt:
    interrupted = True
    _ABANDONED.set()
    raise
  finally:
    _scopes.remove(created)
    for checkpointer in created[::-1]:
      try:
        checkpointer.close(wait=not interrupted)
      except Exception:  # noqa: BLE001 - never hide the error being reported behind this one
        if completed:
          raise
        logging.debug("closing %s after an error", checkpointer.directory, exc_info=True)


@contextlib.contextmanager
def _quiet_absl():
  """Orbax logs harmless warnings through absl when reading one item of a step; hide them."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# The data-iterator states: each process writes the logical shards it reads.


class DataStateHandler(ocp.CheckpointHandler):
  """Saves {shard_index: iterator_state} as `shard_{k}-of-{n}.json`, one file per logical shard.

  Logical shards, not processes, own the files: a run saved by 2 processes (2 shards) can
  resume on 1 process that reads both shards, and gets the same global batches.
  """

  def save(self, directory: epath.Path, args: DataStateSave) -> None:
    directory = epath.Path(directory)
    for shard, state in args.states.items():
      name = f"shard_{int(shard)}-of-{int(args.num_shards)}.json"
      (directory / name).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: DataStateRestore) -> dict[int, Any]:
    directory = epath.Path(directory)
    states = {}
    for shard in args.shards:
      path = directory / f"shard_{int(shard)}-of-{int(args.num_shards)}.json"
      if not path.exists():
        found = sorted(p.name for p in directory.glob("shard_*.json"))
        raise CheckpointError(
          f"data state {path} is missing (found: {found or 'none'}); the "
          f"checkpoint was written with another number of data shards?"
        )
      states[shard] = json.loads(path.read_text())
    return states

  def metadata(self, directory: epath.Path) -> Any:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  states: dict[int, Any]
  num_shards: int


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  shards: tuple[int, ...]
  num_shards: int


# Replicated arrays whose per-replica slice would be smaller than this are written whole by
# their first replica instead of a slice by each.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def state_handler() -> ocp.StandardCheckpointHandler:
  """Orbax's StandardCheckpointHandler, with replica-parallel writes only for large arrays.

  Replica-parallel saving has each replica of a replicated array copy a slice of it to the host
  and write it, so that hosts (and devices' host links) share the work. Each slice is an
  on-device copy, compiled on the first save: for small arrays that costs far more than it
  shares (a tiny T5 on 8 CPU devices: ~700 compiles, 3.1 s of its first checkpoint; 0.08 s with
  its arrays written whole). Slices of at least MIN_REPLICA_SLICE_BYTES keep Orbax's default
  (and GPUs theirs: no replica-parallel). The files written, and the handler's name in the
  checkpoint's metadata, are Orbax's either way.
  """
  default = ocp.type_handlers.get_type_handler(jax.Array)
  try:  # a private Orbax attribute (0.12): keep the plain handler if it moves
    arrays = ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
      array_metadata_store=default._array_metadata_store,
    )
  except AttributeError:
    return ocp.StandardCheckpointHandler()
  registry = ocp.type_handlers.create_type_handler_registry(*[
    (t, arrays if t is jax.Array else ocp.type_handlers.get_type_handler(t))
    for t in ocp.type_handlers.supported_types()
  ])  # fmt: skip
  handler = ocp.StandardCheckpointHandler()
  # Its inner handler, with StandardCheckpointHandler's own settings and these array writes.
  handler._impl = ocp.PyTreeCheckpointHandler(
    save_concurrent_gb=96, restore_concurrent_gb=96, type_handler_registry=registry
  )
  return handler


# ---------------------------------------------------------------------------------------------


def checkpoint_dir(path: str) -> str:
  """`path` may be a workdir (holding checkpoints/) or the checkpoints directory itself."""
  candidate = os.path.join(path, "checkpoints")
  if epath.Path(candidate).exists():
    return candidate
  return path


class Checkpointer:
  """Keep-N async checkpoints of (train state, data state, config) for one run."""

  def __init__(
    self,
    directory: str,
    *,
    keep: int = 3,
    keep_every: int = 0,
    async_save: bool = True,
    read_only: bool = False,
  ):
    if "://" not in directory:  # Orbax (TensorStore) needs absolute local paths
      directory = os.path.abspath(directory)
    self.directory = directory
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep if keep > 0 else None,
      keep_period=keep_every or None,
      enable_async_checkpointing=async_save,
      create=not read_only,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,
    )
    try:
      self.manager = ocp.CheckpointManager(
        directory,
        options=options,
        item_names=("state", "data", "config"),
        item_handlers={
          "state": state_handler(),
          "data": DataStateHandler(),
          "config": ocp.JsonCheckpointHandler(),
        },
      )
    except (OSError, PermissionError) as e:
      raise CheckpointError(f"cannot use checkpoint directory {directory}: {e}") from e
    self._closed = False
    _ignore_closed_loop_stragglers()
    _quiet_stragglers()
    if _scopes:
      _scopes[-1].append(self)

  # -- queries ------------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def check_step(self, step: int | None) -> int:
    """`step`, or the latest when None; CheckpointError if there is no such complete step."""
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise CheckpointError(f"no complete checkpoint in {self.directory}")
      return steps[-1]
    if step not in steps:
      raise CheckpointError(
        f"checkpoint step {step} does not exist in {self.directory} "
        f"(available steps: {steps or 'none'})"
      )
    return step

  # -- save / restore -----------------------------------------------------------------------

  def save(
    self,
    step: int,
    state: Any,
    data_states: dict[int, Any],
    num_shards: int,
    config: ml_collections.ConfigDict,
    *,
    force: bool = False,
  ) -> bool:
    """Starts saving `step` (async). Returns whether a save was started."""
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=DataStateSave(states=data_states, num_shards=num_shards),
      config=ocp.args.JsonSave(json.loads(config_lib.to_json(config))),
    )
    return self.manager.save(step, args=args, force=force)

  def restore(
    self,
    abstract_state: Any,
    *,
    step: int | None = None,
    data_shards: tuple[int, ...] = (),
    num_shards: int = 1,
  ) -> tuple[Any, dict[int, Any]]:
    """Restores the train state (sharded like `abstract_state`) and the data states."""
    step = self.check_step(step)
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_shards:
      args["data"] = DataStateRestore(shards=tuple(data_shards), num_shards=num_shards)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 - any Orbax/TensorStore failure: say which checkpoint
      raise _restore_error(
        f"checkpoint step {step} in {self.directory} could not be restored", e
      ) from None
    return restored["state"], (restored["data"] if data_shards else {})

  def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
    step = self.check_step(step)
    try:
      saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001
      raise _restore_error(
        f"config of checkpoint step {step} in {self.directory} is unreadable", e
      ) from None
    return config_lib.from_json(json.dumps(saved["config"]))

  def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
    """Only the params of a step (fine-tuning, eval, generate)."""
    step = self.check_step(step)
    path = os.path.join(self.directory, str(step), "state")
    # Partial restore: only `params` is read, never the optimizer state (2x the params).
    restore_args = jax.tree.map(
      lambda s: (
        ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype)
        if getattr(s, "sharding", None) is not None
        else ocp.RestoreArgs()
      ),
      abstract_params,
    )
    checkpointer = ocp.PyTreeCheckpointer()
    try:
      with _quiet_absl():
        restored = checkpointer.restore(
          path,
          args=ocp.args.PyTreeRestore(
            item={"params": abstract_params},
            restore_args={"params": restore_args},
            partial_restore=True,
          ),
        )
    except Exception as e:  # noqa: BLE001
      raise _restore_error(
        f"params of checkpoint step {step} in {self.directory} could not be restored", e
      ) from None
    return restored["params"]

  def saved_param_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """{'a/b/kernel': shape} of the params stored at `step` (metadata only, nothing is read)."""
    path = os.path.join(self.directory, str(step), "state")
    with _quiet_absl():
      metadata = ocp.PyTreeCheckpointer().metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    if "params" not in tree:
      raise CheckpointError(f"{path} holds no 'params' (found {sorted(tree)})")
    flat = traverse_util.flatten_dict(tree["params"])
    return {"/".join(name): tuple(leaf.shape) for name, leaf in flat.items()}

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self, wait: bool = True) -> None:
    """Waits for a save in flight (unless `wait=False`), then stops Orbax's threads. Idempotent."""
    if self._closed:
      return
    self._closed = True
    if wait:
      self.manager.wait_until_finished()
    self.manager.close()


def open_existing(path: str) -> Checkpointer:
  """A read-only Checkpointer of an existing run; clear error if there is none."""
  directory = checkpoint_dir(path)
  if not epath.Path(directory).exists():
    raise CheckpointError(
      f"no checkpoints at {path} (expected a workdir with checkpoints/ or a checkpoint directory)"
    )
  with _quiet_absl():  # read-only mode warns about the options it ignores
    checkpointer = Checkpointer(directory, read_only=True, async_save=False)
  if not checkpointer.all_steps():
    raise CheckpointError(f"no complete checkpoint in {directory}")
  logging.info("checkpoints in %s: steps %s", directory, checkpointer.all_steps())
  return checkpointer
