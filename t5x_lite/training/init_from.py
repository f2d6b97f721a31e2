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
from t5x_lite import config as config_lib
from t5x_lite.data.hf_vocabulary import has_tokenizer, load_vocabulary_path
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.models import build_model


class InitFromError(checkpoints.CheckpointError):
  """`train.init_from` does not fit the model being trained."""


def _flat(tree: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def model_kind(model: Any) -> str:
  """The family of a model as its class names it ('DecoderModel'; a classifier's backbone's)."""
  return type(getattr(model, "backbone", model)).__name__


def saved_model_kind(source: checkpoints.Checkpointer, step: int) -> str:
  """`model_kind` of the model a checkpoint was saved from (built from its config: no params)."""
  try:
    return model_kind(build_model(config_lib.model_config(source.restore_config(step))))
  except Exception:  # noqa: BLE001 - an old or foreign config: the message just names less
    return ""


def match(
  target: dict[str, tuple[int, ...]],
  saved: dict[str, tuple[int, ...]],
  source: str,
  families: tuple[str, str] = ("", ""),
) -> tuple[list[str], list[str], list[str]]:
  """(loaded, initialized, ignored) parameter paths; InitFromError on a misfit.

  `families`: (the checkpoint's `model_kind`, the new model's), named in the refusal when most
  of the new model would start fresh (a BERT run into a GPT shares 2 embedding tables of ~20).
  """
  found = [name for name in target if name in saved]
  if len(found) < len(target) - len(found):  # a new head is a few tensors, not most of them
    saved_family, family = families
    kinds = (
      f"the checkpoint holds a model of class {saved_family}, this one is {family}: "
      if saved_family and family and saved_family != family
      else ""
    )
    shown = ", ".join(sorted(found)[:4]) + (", ..." if len(found) > 4 else "")
    raise InitFromError(
      f"train.init_from={source}: {kinds}only {len(found)} of the {len(target)} parameter "
      f"tensors of this model are in the checkpoint ({shown or 'none'}), the rest would start "
      "fresh; init_from loads a run of the same family and layout (a new head is fine)"
    )
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


VOCAB_SETTINGS = ("vocab", "vocab_path", "vocab_type", "vocab_size", "extra_ids")


def _run_vocabulary_path(workdir: str, saved_path: str, fingerprint: str, extra_ids: int) -> str:
  """The tokenizer a run used: its data.vocab_path, its recorded `vocab/` folder (a converted
  run), or the one vocabulary it trained on first use in `vocab/` ('' if none is found)."""
  if saved_path and os.path.exists(saved_path):
    return saved_path
  folder = os.path.join(workdir, "vocab")
  if not os.path.isdir(folder):
    return ""
  if has_tokenizer(folder):
    return folder
  candidates = sorted(
    os.path.join(folder, name)
    for name in os.listdir(folder)
    if name.endswith(".model") or has_tokenizer(os.path.join(folder, name))
  )
  if len(candidates) > 1 and fingerprint:
    candidates = [
      c for c in candidates if load_vocabulary_path(c, extra_ids).fingerprint == fingerprint
    ]
  return candidates[0] if len(candidates) == 1 else ""


def source_vocabulary(path: str) -> dict[str, Any]:
  """The `config.data` vocabulary settings of the run or Hugging Face folder `path` starts from.

  A fine-tuning run with `train.init_from` and no `data.vocab_path` takes these, so that token
  ids mean what they meant in pre-training without the user typing a path.
  """
  if not os.path.exists(path) and "://" not in path:
    raise InitFromError(f"train.init_from={path!r} does not exist (expected a workdir or a "
                        "checkpoint directory of a previous run, or a Hugging Face folder)")  # fmt: skip
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
    if not has_tokenizer(path):
      raise InitFromError(f"train.init_from={path}: the Hugging Face folder has no tokenizer")
    return {"vocab": "sentencepiece", "vocab_path": os.path.abspath(path)}
  source = checkpoints.open_existing(path)
  saved = source.restore_config(source.latest_step()).data
  settings = {k: saved[k] for k in VOCAB_SETTINGS if k in saved}
  if settings.get("vocab") == "byte":
    return settings
  workdir = os.path.dirname(source.directory.rstrip("/"))
  found = _run_vocabulary_path(
    workdir, saved.get("vocab_path", ""), saved.get("vocab_fingerprint", ""),
    saved.get("extra_ids", 100),
  )  # fmt: skip
  if not found:
    raise InitFromError(
      f"train.init_from={path}: the vocabulary of that run was not found (neither its "
      f"data.vocab_path={saved.get('vocab_path', '')!r} nor {os.path.join(workdir, 'vocab')}); "
      "set data.vocab_path"
    )
  settings["vocab_path"] = os.path.abspath(found)
  return settings


def check_vocabulary(source: checkpoints.Checkpointer, step: int, path: str, vocabulary) -> None:
  """The new run must read token ids as the checkpoint's run did (the same vocabulary hash);
  otherwise the pre-trained embeddings would be looked up with the wrong ids, silently."""
  saved = source.restore_config(step).data
  expected = saved.get("vocab_fingerprint", "")
  if not expected:  # a run from before the hash was recorded: hash what it used
    if saved.get("vocab") == "byte":
      expected = ByteVocabulary(saved.get("extra_ids", 100)).fingerprint
    else:
      workdir = os.path.dirname(source.directory.rstrip("/"))
      found = _run_vocabulary_path(
        workdir, saved.get("vocab_path", ""), "", saved.get("extra_ids", 100)
      )
      if not found:
        logging.warning("init_from: the vocabulary of %s was not found; not checked", path)
        return
      expected = load_vocabulary_path(found, saved.get("extra_ids", 100)).fingerprint
  if expected != vocabulary.fingerprint:
    raise InitFromError(
      f"train.init_from={path}: the checkpoint was trained with vocabulary {expected}, this run "
      f"reads {vocabulary.fingerprint}; leave data.vocab_path empty to use the checkpoint's"
    )


def load(params: Any, path: str, param_shardings: Any, vocabulary=None, model=None) -> Any:
  """`params` (the fresh, sharded init) with every parameter the checkpoint at `path` has.

  `model`: the new model, whose family is named (with the checkpoint's) when they differ and
  most of it would start fresh."""
  if not path or not os.path.exists(path) and "://" not in path:
    raise InitFromError(f"train.init_from={path!r} does not exist (expected a workdir or a "
                        "checkpoint directory of a previous run)")  # fmt: skip
  source = checkpoints.open_existing(path)
  step = source.latest_step()
  if vocabulary is not None:
    check_vocabulary(source, step, path, vocabulary)
  target_flat = _flat(params)
  families = (saved_model_kind(source, step), model_kind(model) if model is not None else "")
  loaded, initialized, ignored = match(
    {k: v.shape for k, v in target_flat.items()}, source.saved_param_shapes(step), path, families
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
