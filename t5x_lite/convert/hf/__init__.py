"""Hugging Face <-> t5x_lite parameters: BERT, RoBERTa, ALBERT, GPT-2, BLOOM, T5, BART.

  import_hf(hf_dir, scan_layers=True) -> (ModelConfig, params)
      Reads `config.json` and `*.safetensors` of a local HF model directory:
      BertForMaskedLM / BertForPreTraining ('bert'), GPT2LMHeadModel ('gpt2'),
      T5ForConditionalGeneration v1.0 and v1.1 ('t5'), BloomForCausalLM ('bloom'),
      RobertaForMaskedLM ('roberta'), AlbertForPreTraining ('albert'),
      BartForConditionalGeneration ('bart'), DistilBertForMaskedLM ('distilbert'). `params` is
      the unboxed 'params' collection (float32 numpy arrays), stacked on a leading layer axis
      when `scan_layers`.
  export_hf(model_config, params, out_dir, vocabulary=None, labels=None)
      Writes `config.json` + `model.safetensors` in the HF layout (loadable with
      `AutoModel*.from_pretrained(out_dir)`); tied weights are written once, as HF does; padded
      vocabulary rows are cut; a BERT classifier becomes Bert{Sequence,Token}Classification.
  convert_to_checkpoint(hf_dir, out_dir) -> path
      import_hf and the folder's tokenizer (`tokenizer.py`), then an ordinary t5x_lite
      checkpoint: `out_dir/checkpoints/0/` with items `state` = {'params': params} (Orbax
      StandardSave), `config` = the resolved config (JSON, the family's default task, this model,
      data.vocab_path = `out_dir/vocab/`), `data` = empty; the tokenizer in `out_dir/vocab/`.
      `config.train.init_from=out_dir` fine-tunes from it (with its vocabulary);
      `t5x-lite generate/eval --workdir out_dir` use it as it is.
  export_checkpoint(workdir, out_dir) -> path
      The latest checkpoint of a t5x_lite run -> HF directory (export_hf) with the run's
      tokenizer, restored through the run's `RunSetup`; nothing is left half-written.

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
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from t5x_lite import checkpoints
from t5x_lite.config import base_config
from t5x_lite.config import model_config as model_config_of
from t5x_lite.convert.hf import albert, bart, bert, bloom, distilbert, gpt2, roberta, t5, tokenizer
from t5x_lite.convert.hf.rules import ACTIVATIONS, ConversionError, Rule, to_ours, to_theirs
from t5x_lite.data import pipeline, registry
from t5x_lite.data.hf_vocabulary import load_vocabulary_path
from t5x_lite.data.vocabularies import ByteVocabulary, Vocabulary
from t5x_lite.models import build_model, to_model_config, vocab_padding
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.transformer import stack_layers, unstack_layers
from t5x_lite.training import init_from
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
  "run_vocabulary",
  "special_token_ids",
  "strip_vocab_padding",
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
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor; a fine-tuned head
  (model.head) maps onto the family's HF classifier class, where it has one."""
  if not config.head:
    return mapping_of(config).tensor_rules(config)
  mapping = BY_FAMILY[config.family]
  if config.head not in getattr(mapping, "CLASSIFIER_ARCHITECTURES", {}):
    exported = [
      a for m in BY_FAMILY.values() for a in getattr(m, "CLASSIFIER_ARCHITECTURES", {}).values()
    ]
    raise ConversionError(
      f"export: model.head={config.head!r} on a {config.family} model has no Hugging Face "
      f"class (exported: {', '.join(exported)}); the decoder head's pooler and bias are not in "
      "GPT2ForSequenceClassification"
    )
  return mapping.classifier_rules(config)


# ---------------------------------------------------------------------------------------------
# Import.


def read_hf_config(hf_dir: str) -> dict:
  """The directory's config.json as a dict; ConversionError (one line) for what is not."""
  if not os.path.isdir(hf_dir):
    what = "is not a directory" if os.path.exists(hf_dir) else "does not exist"
    raise ConversionError(f"--model {hf_dir} {what} (expected a Hugging Face model directory)")
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise ConversionError(f"{hf_dir}: no config.json (expected a Hugging Face model directory)")
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(config, dict):
    raise ConversionError(f"{path}: expected a JSON object, found {type(config).__name__}")
  return config


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
    try:
      loaded = load_file(path)
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
      raise ConversionError(
        f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})"
      ) from None
    for name, value in loaded.items():
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


def special_token_ids(vocabulary: Vocabulary, family: str, start_id: int = 0) -> dict[str, int]:
  """config.json's token ids (pad, eos, bos / decoder start) from the run's vocabulary."""
  ids = {"pad_token_id": int(vocabulary.pad_id)}
  if family != "encoder":
    ids["eos_token_id"] = int(vocabulary.eos_id)
  if family == "decoder":
    ids["bos_token_id"] = int(start_id)  # the token before the first one, as in training
  if family == "encoder_decoder":
    ids["decoder_start_token_id"] = int(start_id)
  return ids


# Parameters with a vocab axis: (path, axis). Padded rows (model.vocab_pad_multiple) are cut.
VOCAB_AXES = (
  (("token_embedder", "embedding"), 0),
  (("logits_dense", "kernel"), -1),
  (("mlm_decoder", "kernel"), -1),
  (("mlm_bias",), 0),
)


def strip_vocab_padding(config: ModelConfig, flat: dict[tuple[str, ...], Any]) -> dict:
  """`flat` params with the padded vocabulary rows removed (HF models have vocab_size rows)."""
  if config.embedding_rows == config.vocab_size:
    return flat
  out = dict(flat)
  for path, axis in VOCAB_AXES:
    if path in out:
      value = np.asarray(out[path])
      out[path] = vocab_padding.strip_padding(value, config.vocab_size, axis % value.ndim)
  return out


def export_hf(
  model_config: ModelConfig | Any,
  params: Any,
  out_dir: str,
  *,
  vocabulary: Vocabulary | None = None,
  labels: list[str] | None = None,
  start_id: int = 0,
) -> str:
  """Writes `out_dir/config.json` and `out_dir/model.safetensors`; returns out_dir.

  A classifier run (model.head) becomes BertForSequenceClassification /
  BertForTokenClassification with `id2label` from `labels`; padded vocabulary rows are cut;
  with `vocabulary`, config.json names its pad / eos / start token ids.
  """
  config = to_model_config(model_config)
  rules = tensor_rules(config)  # first: an unsupported head is refused before any work
  mapping = BY_FAMILY[config.family]
  hf_config = hf_config_from_model(dataclasses.replace(config, head=""))
  if config.head:
    names = [str(label) for label in labels] if labels else []
    names = names or [f"LABEL_{i}" for i in range(config.num_labels)]
    if len(names) != config.num_labels:
      raise ConversionError(
        f"export: {len(names)} labels {names} for model.num_labels={config.num_labels}"
      )
    hf_config["architectures"] = [mapping.CLASSIFIER_ARCHITECTURES[config.head]]
    hf_config["id2label"] = {str(i): name for i, name in enumerate(names)}
    hf_config["label2id"] = {name: i for i, name in enumerate(names)}
  if vocabulary is not None:
    hf_config.update(special_token_ids(vocabulary, config.family, start_id))
  tree = _to_numpy(unstack_layers(_to_numpy(nn.meta.unbox(params))))
  flat = strip_vocab_padding(config, _flatten(tree))
  tensors: dict[str, np.ndarray] = {}
  parts: dict[str, dict[int, np.ndarray]] = {}
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
  unused_heads = getattr(mapping, "PRETRAINING_HEADS", ()) if config.head else ()
  extra = sorted(
    "/".join(p) for p in set(flat) - {rule.path for rule in rules} if p[0] not in unused_heads
  )
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
  # The tokenizer of the HF folder is recorded in the run (convert_to_checkpoint sets
  # data.vocab_path); this size only matters to a config used without it.
  config.data.vocab_size = min(config.data.vocab_size, model_config.vocab_size)
  return config


def convert_to_checkpoint(
  hf_dir: str, out_dir: str, *, scan_layers: bool = True, config_fn: Callable | None = None
) -> str:
  """HF directory -> `out_dir/checkpoints/0` (params + config) and `out_dir/vocab/` (its
  tokenizer, which every command on the run reads text with); returns the checkpoints dir."""
  model_config, params = import_hf(hf_dir, scan_layers=scan_layers)
  # The tokenizer comes with the weights: checked before anything is written to `out_dir`.
  vocabulary = tokenizer.import_tokenizer(hf_dir, model_config.vocab_size)
  if model_config.family == "decoder" and vocabulary.bos_id is not None:
    # GPT-2 reads <|endoftext|> before a document: generation and fine-tuning start with it.
    model_config = dataclasses.replace(model_config, decoder_start_id=int(vocabulary.bos_id))
  if model_config.family == "encoder_decoder":
    start = read_hf_config(hf_dir).get("decoder_start_token_id")
    model_config = dataclasses.replace(model_config, decoder_start_id=int(start or 0))
  config = (config_fn or full_config)(model_config, hf_dir)
  vocab_dir = os.path.abspath(os.path.join(out_dir, tokenizer.RUN_VOCAB_DIR))
  with config.unlocked():
    config.data.update(vocab="sentencepiece", vocab_path=vocab_dir, extra_ids=vocabulary.extra_ids,
                       vocab_fingerprint=vocabulary.fingerprint)  # fmt: skip
  tokenizer.record_tokenizer(vocabulary, out_dir)
  directory = os.path.join(out_dir, "checkpoints")
  checkpointer = checkpoints.Checkpointer(directory, async_save=False)
  checkpointer.save(0, {"params": params}, {}, 1, config, force=True)
  checkpointer.close()
  return directory


def run_vocabulary(workdir: str) -> Vocabulary:
  """The vocabulary a t5x_lite run reads text with (its data.vocab_path, recorded or trained)."""
  try:
    settings = init_from.source_vocabulary(workdir)
  except init_from.InitFromError as e:
    raise ConversionError(str(e).replace("train.init_from=", "export: run ")) from None
  extra_ids = int(settings.get("extra_ids", 100))
  if settings.get("vocab") == "byte":
    return ByteVocabulary(extra_ids)
  return load_vocabulary_path(settings["vocab_path"], extra_ids)


def _task_labels(config: Any) -> list[str] | None:
  try:
    labels = getattr(pipeline.get_task(config, config.data.task), "labels", None)
  except registry.RegistryError:
    return None
  return list(labels) if labels is not None else None


def export_checkpoint(workdir: str, out_dir: str, labels: list[str] | None = None) -> str:
  """The latest checkpoint of a t5x_lite run -> an HF folder: config.json, model.safetensors
  and the run's tokenizer (AutoTokenizer frames text as the model saw it in training).

  Everything is written to a temporary folder first, so a failure leaves `out_dir` as it was.
  """
  source = checkpoints.open_existing(workdir)
  config = source.restore_config()
  model_config = model_config_of(config)
  tensor_rules(model_config)  # an unsupported head: refused before restoring anything
  vocabulary = run_vocabulary(workdir)
  params = RunSetup.create(config).restore_params(source)
  labels = labels or (_task_labels(config) if model_config.head else None)
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(prefix=".export_", dir=parent)
  try:
    start_id = model_config.decoder_start_id
    export_hf(model_config, params, temporary, vocabulary=vocabulary, labels=labels,
              start_id=start_id)  # fmt: skip
    tokenizer.export_tokenizer(vocabulary, temporary, model_config.family, start_id=start_id)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(temporary):
      os.replace(os.path.join(temporary, name), os.path.join(out_dir, name))
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  return out_dir
