"""Decay branches: start a run from another run's checkpoint, full state and data position.

A warmup-stable-decay (WSD) run spends most of its steps at a constant learning rate, so any
checkpoint of its stable phase is a valid starting point for a short cooldown. A *decay branch*
restores step S of the parent (params, optimizer state, step counter and the data iterators'
positions) and trains to `train.steps` with the decay starting at S:

  t5x-lite train --workdir runs/branch_4000 --config.train.branch_from=runs/parent:4000 \
    --config.train.steps=4800 --config.optimizer.decay=wsd --config.optimizer.wsd_decay_start=4000

The branch reads the batches the parent would have read at steps S+1, S+2, ..., so its final
loss is the loss of a WSD run of `train.steps` steps (Hägele et al. 2024, "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations"): one stable run gives the final loss
of many token budgets. The branch's own workdir holds its own checkpoints; once it has one, a
restart resumes from it and `branch_from` is no longer read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any

import ml_collections
from etils import epath

from t5x_lite import checkpoints
from t5x_lite.config import ConfigError

# Keys that must equal the parent's: the model (the restored state's shapes) and what decides
# the data stream. Everything else (learning rate, schedule, steps, logging) may differ.
_SAME_AS_PARENT = ("model.", "data.", "train.batch_size", "optimizer.name")


def parse_branch_from(spec: str) -> tuple[str, int]:
  """'WORKDIR:STEP' -> (workdir, step). WORKDIR may itself hold ':' (gs://bucket/run:400)."""
  workdir, sep, step = spec.rpartition(":")
  if not sep or not workdir or not step.isdigit():
    raise ConfigError(
      f"config.train.branch_from={spec!r}: expected 'WORKDIR:STEP', e.g. 'runs/parent:4000'"
    )
  return workdir, int(step)


@dataclasses.dataclass
class DecayBranch:
  """The parent checkpoint a branch starts from (opened read-only)."""

  workdir: str
  step: int
  checkpointer: checkpoints.Checkpointer
  parent_config: ml_collections.ConfigDict

  @property
  def num_shards(self) -> int:
    """The parent's logical data shards: the branch must read the same shards."""
    return int(self.parent_config.data.num_shards) or 1

  def restore(self, abstract_state: Any, data_shards: tuple[int, ...]) -> tuple[Any, dict]:
    """(train state sharded like `abstract_state`, {shard: iterator state}) of the parent."""
    state, data_states = self.checkpointer.restore(
      abstract_state, step=self.step, data_shards=data_shards, num_shards=self.num_shards
    )
    logging.info("decay branch: started from step %d of %s", self.step, self.workdir)
    return state, data_states


def open_parent(config: ml_collections.ConfigDict, workdir: str) -> DecayBranch:
  """Opens `config.train.branch_from`, checks it is compatible, and gives `workdir` the parent's
  vocabulary (so token ids cannot differ). ConfigError / CheckpointError on a mismatch."""
  parent, step = parse_branch_from(config.train.branch_from)
  checkpointer = checkpoints.open_existing(parent)
  step = checkpointer.check_step(step)
  saved = checkpointer.restore_config(step)
  if step >= int(config.train.steps):
    raise ConfigError(
      f"config.train.branch_from={config.train.branch_from!r}: step {step} is not before "
      f"train.steps={config.train.steps}"
    )
  mine, theirs = _flat(config), _flat(saved)
  for key in sorted(mine):
    if (
      key.startswith(_SAME_AS_PARENT)
      and key not in ("data.num_shards", "data.vocab_fingerprint")  # set by the run, not the user
      and mine[key] != theirs.get(key)
    ):
      raise ConfigError(
        f"config.{key}={mine[key]!r} differs from the parent {parent} (step {step}: "
        f"{theirs.get(key)!r}); a decay branch keeps the parent's model and data stream"
      )
  if config.optimizer.decay == "wsd" and int(config.optimizer.wsd_decay_start) != step:
    logging.warning(
      "decay branch from step %d with optimizer.wsd_decay_start=%d: a cooldown from the branch "
      "point sets wsd_decay_start=%d",
      step, config.optimizer.wsd_decay_start, step,
    )  # fmt: skip
  _copy_vocabulary(parent, workdir)
  return DecayBranch(parent, step, checkpointer, saved)


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'model.d_model': 64, ...}: every leaf by dotted name, tuples as lists (as JSON saves them)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict) and prefix + key != "data.feature_lengths":
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = _as_json(value)

  walk(config.to_dict(), "")
  return out


def _as_json(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_as_json(v) for v in value]
  if isinstance(value, dict):
    return {k: _as_json(v) for k, v in value.items()}
  return value


def _copy_vocabulary(parent: str, workdir: str) -> None:
  """Copies the parent's cached SentencePiece model(s) into `workdir/vocab` (local workdirs;
  a remote branch retrains the same vocabulary deterministically)."""
  source = os.path.join(parent, "vocab")
  if "://" in parent or "://" in workdir or not os.path.isdir(source):
    return
  target = os.path.join(workdir, "vocab")
  os.makedirs(target, exist_ok=True)
  for name in os.listdir(source):
    if not epath.Path(target, name).exists():
      shutil.copy2(os.path.join(source, name), os.path.join(target, name))
