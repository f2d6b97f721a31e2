"""Hugging Face <-> t5x_lite parameters: BERT, RoBERTa, ALBERT, GPT-2, BLOOM, T5, BART.

  import_hf(hf_dir, scan_layers=True) -> (ModelConfig, params)
      Reads `config.json` and `*.safetensors` of a local HF model directory:
      BertForMaskedLM / BertForPreTraining ('bert'), GPT2LMHeadModel ('gpt2'),
      T5ForConditionalGeneration v1.0 and v1.1 ('t5'), BloomForCausalLM ('bloom'),
      RobertaForMaskedLM ('roberta'), AlbertForPreTraining ('albert'),
      BartForConditionalGeneration ('bart'), DistilBertForMaskedLM ('distilbert'). `params` is the unboxed 'params' collection (float32
      numpy arrays), stacked on a leading layer axis when `scan_layers`.
  export_hf(model_config, params, out_dir)
      Writes `config.json` + `model.safetensors` in the HF layout (loadable with
      `AutoModel*.from_pretrained(out_dir)`); tied weights are written once, as HF does.
  convert_to_checkpoint(hf_dir, out_dir) -> path
      import_hf, then an ordinary t5x_lite checkpoint: `out_dir/checkpoints/0/` with items
      `state` = {'params': params} (Orbax StandardSave), `config` = the resolved config (JSON,
      the family's default task and this model), `data` = empty. `config.train.init_from=out_dir`
      fine-tunes from it; `t5x-lite generate/eval --workdir out_dir` use it as it is.
  export_checkpoint(workdir, out_dir) -> path
      The latest checkpoint of a t5x_lite run -> HF directory (export_hf), restored through the
      run's `RunSetup`.

Each family's config mapping and tensor table is its own module (`gpt2.py`, `bert.py`, `t5.py`);
this file is the machinery they share: reading and writing safetensors, checking every tensor,
and t5x_lite checkpoints. Pickled weights (`pytorch_model.bin`, `*.pt`) are refused: unpickling
can execute arbitrary code. A missing, unexpected or mis-shaped tensor is an error naming it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from t5x_lite import checkpoints
from t5x_lite.config import base_config
from t5x_lite.config import model_config as model_config_of
from t5x_lite.convert.hf import albert, bart, bert, bloom, distilbert, gpt2, roberta, t5
from t5x_lite.convert.hf.rules import ACTIVATIONS, ConversionError, Rule, to_ours, to_theirs
from t5x_lite.models import build_model, to_model_config
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.transformer import stack_layers, unstack_layers
from t5x_lite.training.setup import RunSetup

# The families, by HF model_type (in the order error messages list them) and by our family.
MAPPINGS = {
  module.MODEL_TYPE: module for module in (gpt2, bert, t5, bloom, roberta, albert, bart, distilbert)
}
BY_FAMILY = {module.FAMILY: module for module in (gpt2, bert, t5)}
# Variants of a family that export as their own HF model (first whose `claims(config)` holds).
VARIANTS = (bloom, roberta, albert, bart, distilbert)
SUPPORTED = {model_type: module.ARCHITECTURES for model_type, module in MAPPINGS.items()}
# Tensors HF checkpoints carry that are not parameters (buffers, tied duplicates).
IGNORED_SUFFIXES = (
  ".attn.bias",
  ".attn.masked_bias",
  "embeddings.position_ids",
  "cls.predictions.decoder.weight",
  "cls.predictions.decoder.bias",
  "encoder.embed_tokens.weight",
  "decoder.embed_tokens.weight",
)

__all__ = [
  "ACTIVATIONS",
  "ConversionError",
  "Rule",
  "SUPPORTED",
  "convert_to_checkpoint",
  "export_checkpoint",
  "export_hf",
  "full_config",
  "hf_config_from_model",
  "import_hf",
  "model_config_from_hf",
  "tensor_rules",
]


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig, and the tensor tables: each family's own module.


def _mapping(hf_config: dict, source: str):
  """(family module, architecture) of an HF config.json."""
  model_type = hf_config.get("model_type")
  if model_type not in SUPPORTED:
    raise ConversionError(
      f"{source}: model_type={model_type!r} is not supported (expected one of "
      f"{', '.join(SUPPORTED)})"
    )
  architectures = hf_config.get("architectures") or [SUPPORTED[model_type][0]]
  architecture = architectures[0]
  if architecture not in SUPPORTED[model_type]:
    raise ConversionError(
      f"{source}: architecture {architecture!r} is not supported for {model_type} (expected "
      f"{' or '.join(SUPPORTED[model_type])})"
    )
  return MAPPINGS[model_type], architecture


def model_config_from_hf(hf_config: dict, source: str = "config.json") -> ModelConfig:
  """The ModelConfig of an HF config.json (dict); ConversionError for what we cannot run."""
  mapping, architecture = _mapping(hf_config, source)
  return mapping.model_config_from_hf(hf_config, architecture, source)


def mapping_of(config: ModelConfig):
  """The HF mapping module `config` exports as: a variant that claims it, else its family's."""
  for module in VARIANTS:
    if module.claims(config):
      return module
  return BY_FAMILY[config.family]


def hf_config_from_model(config: ModelConfig) -> dict:
  """The config.json of `config` (HF fills every other field with its defaults)."""
  return mapping_of(config).hf_config_from_model(config)


def tensor_rules(config: ModelConfig) -> list[Rule]:
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor."""
  return mapping_of(config).tensor_rules(config)


# ---------------------------------------------------------------------------------------------
# Import.


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise ConversionError(f"{hf_dir}: no config.json (expected a Hugging Face model directory)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_safetensors(hf_dir: str) -> dict[str, np.ndarray]:
  """All tensors of the directory's *.safetensors files (float32); pickles are refused."""
  files = sorted(glob.glob(os.path.join(hf_dir, "*.safetensors")))
  if not files:
    pickles = [
      os.path.basename(p)
      for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
      for p in glob.glob(os.path.join(hf_dir, pattern))
    ]
    hint = (
      f" It has {', '.join(pickles)}: pickled weights are refused because unpickling can "
      "execute arbitrary code. Convert them to safetensors in a trusted environment first "
      "(`model.save_pretrained(dir, safe_serialization=True)`)."
      if pickles
      else ""
    )
    raise ConversionError(f"{hf_dir}: no *.safetensors weights found.{hint}")
  tensors = {}
  for path in files:
    for name, value in load_file(path).items():
      tensors[name] = np.asarray(value, np.float32) if value.dtype != np.float32 else value
  return tensors


def _normalize_names(tensors: dict[str, np.ndarray], mapping) -> dict[str, np.ndarray]:
  """Checkpoints of the bare models (GPT2Model, BertModel) lack the head-model prefix."""
  prefix = mapping.BODY_PREFIX
  if prefix is None:
    return tensors
  return {
    (
      name if name.startswith(prefix) or name.startswith(mapping.HEAD_PREFIX) else prefix + name
    ): value
    for name, value in tensors.items()
  }


def _expected_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  model = build_model(dataclasses.replace(config, scan_layers=False))
  abstract = jax.eval_shape(
    model.init, jax.random.key(0), model.input_shapes(1, model.default_lengths())
  )
  return {
    tuple(k.key for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(abstract))
  }


def _nest(flat: dict[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def import_hf(hf_dir: str, scan_layers: bool = True) -> tuple[ModelConfig, dict]:
  """(ModelConfig, unboxed params) of a local HF model directory (see module docstring)."""
  hf_config = read_hf_config(hf_dir)
  source = os.path.join(hf_dir, "config.json")
  raw_tensors = read_safetensors(hf_dir)  # first: a pickle-only directory gets that error
  mapping, architecture = _mapping(hf_config, source)
  try:
    config = mapping.model_config_from_hf(hf_config, architecture, source)
  except KeyError as e:
    raise ConversionError(f"{source}: required field {e} is missing") from None
  config = dataclasses.replace(config, scan_layers=scan_layers)
  tensors = mapping.prepare_tensors(_normalize_names(raw_tensors, mapping), config)
  expected = _expected_shapes(config)
  flat, used = {}, set()
  for rule in mapping.tensor_rules(config):
    if rule.hf not in tensors:
      raise ConversionError(
        f"{hf_dir}: tensor {rule.hf} is missing (needed for {'/'.join(rule.path)})"
      )
    if rule.path not in expected:
      raise ConversionError(f"internal: {'/'.join(rule.path)} is not a parameter of the model")
    flat[rule.path] = to_ours(rule, tensors[rule.hf], expected[rule.path])
    used.add(rule.hf)
  missing = sorted("/".join(p) for p in set(expected) - set(flat))
  if missing:
    raise ConversionError(f"internal: no HF tensor maps to {', '.join(missing)}")
  unexpected = sorted(
    name
    for name in set(tensors) - used
    if not name.endswith(IGNORED_SUFFIXES)
    and not (name == "lm_head.weight" and config.tie_embeddings)
  )
  if unexpected:
    raise ConversionError(
      f"{hf_dir}: unsupported tensors {', '.join(unexpected[:8])}"
      f"{' ...' if len(unexpected) > 8 else ''} (not part of a {hf_config['architectures'][0]}"
      " that t5x_lite can represent)"
    )
  params = _nest(flat)
  if scan_layers:
    params = _to_numpy(stack_layers(params))
  return config, params


def _to_numpy(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)


# ---------------------------------------------------------------------------------------------
# Export.


def export_hf(model_config: ModelConfig | Any, params: Any, out_dir: str) -> str:
  """Writes `out_dir/config.json` and `out_dir/model.safetensors`; returns out_dir."""
  config = to_model_config(model_config)
  hf_config = hf_config_from_model(config)
  tree = _to_numpy(unstack_layers(_to_numpy(nn.meta.unbox(params))))
  flat = _flatten(tree)
  tensors: dict[str, np.ndarray] = {}
  parts: dict[str, dict[int, np.ndarray]] = {}
  rules = tensor_rules(config)
  for rule in rules:
    if rule.path not in flat:
      raise ConversionError(f"export: parameter {'/'.join(rule.path)} is missing from params")
    value = to_theirs(rule, flat[rule.path])
    if rule.part is None:
      tensors[rule.hf] = value
    else:
      parts.setdefault(rule.hf, {})[rule.part[0]] = value
  for name, pieces in parts.items():
    tensors[name] = np.concatenate([pieces[i] for i in sorted(pieces)], axis=-1)
  finish = getattr(mapping_of(config), "finish_tensors", None)  # e.g. BLOOM's fused QKV
  if finish is not None:
    tensors = finish(tensors, config)
  extra = sorted("/".join(p) for p in set(flat) - {rule.path for rule in rules})
  if extra:
    raise ConversionError(f"export: parameters with no HF tensor: {', '.join(extra)}")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
  save_file(
    {name: np.ascontiguousarray(value) for name, value in tensors.items()},
    os.path.join(out_dir, "model.safetensors"),
    metadata={"format": "pt"},
  )
  return out_dir


# ---------------------------------------------------------------------------------------------
# t5x_lite checkpoints.


def full_config(model_config: ModelConfig, hf_dir: str | None = None) -> Any:
  """A complete t5x_lite config (base_config) around an imported ModelConfig, reading the
  family's default task (fine-tuning picks its own)."""
  config = base_config()
  config.model.update(dataclasses.asdict(model_config))
  task, lengths = mapping_of(model_config).DEFAULT_TASK
  if model_config.position == "learned":  # no longer than the learned positions
    lengths = {name: min(length, model_config.max_length) for name, length in lengths.items()}
  config.data.task = task
  with config.data.unlocked():
    config.data.feature_lengths = lengths
  # T5 checkpoints ship their SentencePiece model: use it rather than training a new one.
  spiece = os.path.join(hf_dir, "spiece.model") if hf_dir else ""
  if spiece and os.path.exists(spiece):
    config.data.vocab_path = spiece
  else:
    config.data.vocab_size = min(config.data.vocab_size, model_config.vocab_size)
  return config


def convert_to_checkpoint(
  hf_dir: str, out_dir: str, *, scan_layers: bool = True, config_fn: Callable | None = None
) -> str:
  """HF directory -> `out_dir/checkpoints/0` (params + config); returns the checkpoints dir."""
  model_config, params = import_hf(hf_dir, scan_layers=scan_layers)
  config = (config_fn or full_config)(model_config, hf_dir)
  directory = os.path.join(out_dir, "checkpoints")
  checkpointer = checkpoints.Checkpointer(directory, async_save=False)
  checkpointer.save(0, {"params": params}, {}, 1, config, force=True)
  checkpointer.close()
  return directory


def export_checkpoint(workdir: str, out_dir: str) -> str:
  """The latest checkpoint of a t5x_lite run (workdir or checkpoints dir) -> HF directory."""
  source = checkpoints.open_existing(workdir)
  config = source.restore_config()
  params = RunSetup.create(config).restore_params(source)
  return export_hf(model_config_of(config), params, out_dir)
