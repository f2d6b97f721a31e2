"""`config.train.init_from`: start a run from another run's parameters, matched by name.

Only parameters are read (the optimizer and the step start fresh). For each parameter of the
new model, by its path ('encoder/layers/attention/query/kernel'):
  in the checkpoint, same shape   -> loaded
  in the checkpoint, other shape  -> InitFromError naming it (expected vs found)
  absent, and its whole top-level module is absent (a new head) -> keeps its fresh
                                     initialization, and is logged
  absent, but its top-level module is in the checkpoint -> InitFromError: a backbone parameter
                                     is missing (another architecture or layer layout)
Checkpoint parameters the new model does not have (a pre-training head) are logged and skipped.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
from flax import traverse_util

from t5x_lite import checkpoints


class InitFromError(checkpoints.CheckpointError):
  """`train.init_from` does not fit the model being trained."""


def _flat(tree: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def match(
  target: dict[str, tuple[int, ...]], saved: dict[str, tuple[int, ...]], source: str
) -> tuple[list[str], list[str], list[str]]:
  """(loaded, initialized, ignored) parameter paths; InitFromError on a misfit."""
  saved_modules = {name.split("/")[0] for name in saved}
  loaded, initialized = [], []
  for name, shape in sorted(target.items()):
    if name in saved:
      if tuple(saved[name]) != tuple(shape):
        raise InitFromError(
          f"train.init_from={source}: parameter {name!r} has shape {tuple(saved[name])} in the "
          f"checkpoint, the model expects {tuple(shape)}"
        )
      loaded.append(name)
    elif name.split("/")[0] in saved_modules:
      raise InitFromError(
        f"train.init_from={source}: the checkpoint lacks backbone parameter {name!r} "
        f"(shape {tuple(shape)}); is it the same architecture (family, layers, scan_layers)?"
      )
    else:
      initialized.append(name)
  ignored = sorted(set(saved) - set(target))
  return loaded, initialized, ignored


def check_vocabulary(source: checkpoints.Checkpointer, step: int, path: str, vocabulary) -> None:
  """The new run must read token ids as the checkpoint's run did (same SentencePiece model);
  otherwise the pre-trained embeddings would be looked up with the wrong ids, silently."""
  saved = source.restore_config(step).data
  proto = getattr(vocabulary, "model_proto", None)
  if saved.vocab != "sentencepiece" or proto is None:
    if (saved.vocab == "sentencepiece") != (proto is not None):
      raise InitFromError(
        f"train.init_from={path}: the checkpoint used data.vocab={saved.vocab!r}, this run a "
        f"{type(vocabulary).__name__}"
      )
    return
  candidates = []
  if saved.vocab_path and os.path.exists(saved.vocab_path):
    candidates = [saved.vocab_path]
  else:  # trained by that run and cached in its workdir
    vocab_dir = os.path.join(os.path.dirname(source.directory.rstrip("/")), "vocab")
    if os.path.isdir(vocab_dir):
      candidates = [
        os.path.join(vocab_dir, f) for f in os.listdir(vocab_dir) if f.endswith(".model")
      ]
  if not candidates:
    logging.warning("init_from: the vocabulary of %s was not found; not checked", path)
    return
  for candidate in candidates:
    with open(candidate, "rb") as f:
      if f.read() == proto:
        return
  raise InitFromError(
    f"train.init_from={path}: this run's vocabulary differs from the checkpoint's; set "
    f"data.vocab_path={sorted(candidates)[0]} so that token ids mean the same thing"
  )


def load(params: Any, path: str, param_shardings: Any, vocabulary=None) -> Any:
  """`params` (the fresh, sharded init) with every parameter the checkpoint at `path` has."""
  if not path or not os.path.exists(path) and "://" not in path:
    raise InitFromError(f"train.init_from={path!r} does not exist (expected a workdir or a "
                        "checkpoint directory of a previous run)")  # fmt: skip
  source = checkpoints.open_existing(path)
  step = source.latest_step()
  if vocabulary is not None:
    check_vocabulary(source, step, path, vocabulary)
  target_flat = _flat(params)
  loaded, initialized, ignored = match(
    {k: v.shape for k, v in target_flat.items()}, source.saved_param_shapes(step), path
  )
  shardings = _flat(param_shardings)
  abstract = traverse_util.unflatten_dict(
    {
      tuple(name.split("/")): jax.ShapeDtypeStruct(
        target_flat[name].shape, target_flat[name].dtype, sharding=shardings[name]
      )
      for name in loaded
    }
  )
  restored = _flat(source.restore_params(abstract, step))
  merged = {tuple(k.split("/")): restored.get(k, v) for k, v in target_flat.items()}
  logging.info("init_from %s (step %d): loaded %d parameters", source.directory, step, len(loaded))
  for name in initialized:
    logging.info("init_from: %s is not in the checkpoint: initialized fresh", name)
  if ignored:
    logging.info("init_from: checkpoint parameters not used by this model: %s", ", ".join(ignored))
  return traverse_util.unflatten_dict(merged)
