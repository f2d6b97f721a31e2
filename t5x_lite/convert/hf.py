"""Hugging Face <-> t5x_lite parameters: BERT, GPT-2 and T5 (safetensors only).

  import_hf(hf_dir, scan_layers=True) -> (ModelConfig, params)
      Reads `config.json` and `*.safetensors` of a local HF model directory:
      BertForMaskedLM / BertForPreTraining ('bert'), GPT2LMHeadModel ('gpt2'),
      T5ForConditionalGeneration v1.0 and v1.1 ('t5'). `params` is the unboxed 'params'
      collection (float32 numpy arrays), stacked on a leading layer axis when `scan_layers`.
  export_hf(model_config, params, out_dir)
      Writes `config.json` + `model.safetensors` in the HF layout (loadable with
      `AutoModel*.from_pretrained(out_dir)`); tied weights are written once, as HF does.
  convert_to_checkpoint(hf_dir, out_dir) -> path
      import_hf, then an ordinary t5x_lite checkpoint: `out_dir/checkpoints/0/` with items
      `state` = {'params': params} (Orbax StandardSave), `config` = the resolved config (JSON,
      the family's default task and this model), `data` = empty. `config.train.init_from=out_dir`
      fine-tunes from it; `t5x-lite generate/eval --workdir out_dir` use it as it is.
  export_checkpoint(workdir, out_dir) -> path
      The latest checkpoint of a t5x_lite run -> HF directory (export_hf).

Pickled weights (`pytorch_model.bin`, `*.pt`) are refused: unpickling can execute arbitrary code.
Every tensor is checked: a missing, unexpected or mis-shaped tensor is an error naming it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from t5x_lite.models.config import ModelConfig


class ConversionError(ValueError):
  """The HF directory or the params cannot be converted (names the file or tensor)."""


SUPPORTED = {
  "gpt2": ("GPT2LMHeadModel",),
  "bert": ("BertForMaskedLM", "BertForPreTraining"),
  "t5": ("T5ForConditionalGeneration",),
}
ACTIVATIONS = {
  "gelu": "gelu",
  "gelu_new": "gelu_new",
  "gelu_pytorch_tanh": "gelu_new",
  "relu": "relu",
}
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


@dataclasses.dataclass(frozen=True)
class Rule:
  """One HF tensor <-> one t5x_lite parameter.

  kind: 'copy' (same values, maybe reshaped), 'linear' (torch Linear [out, in], transposed),
  'conv1d' (GPT-2 Conv1D [in, out]); `in_ndim` = how many leading axes of our kernel are its
  input; `part` = (i, n): the i-th of n equal slices of the HF tensor's last axis (GPT-2 c_attn).
  """

  hf: str
  path: tuple[str, ...]
  kind: str = "copy"
  in_ndim: int = 1
  part: tuple[int, int] | None = None


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig.


def _architecture(hf_config: dict, source: str) -> tuple[str, str]:
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
  return model_type, architecture


def _activation(name: str, source: str) -> str:
  if name not in ACTIVATIONS:
    raise ConversionError(f"{source}: activation {name!r} is not supported ({list(ACTIVATIONS)})")
  return ACTIVATIONS[name]


def model_config_from_hf(hf_config: dict, source: str = "config.json") -> ModelConfig:
  """The ModelConfig of an HF config.json (dict); ConversionError for what we cannot run."""
  model_type, architecture = _architecture(hf_config, source)
  get = hf_config.get
  if model_type == "gpt2":
    if not get("scale_attn_weights", True) or get("scale_attn_by_inverse_layer_idx", False):
      raise ConversionError(f"{source}: GPT-2 attention scaling variants are not supported")
    if get("add_cross_attention", False):
      raise ConversionError(f"{source}: GPT-2 with cross-attention is not supported")
    d_model = hf_config["n_embd"]
    return ModelConfig(
      family="decoder", vocab_size=hf_config["vocab_size"], d_model=d_model,
      num_heads=hf_config["n_head"], num_layers=hf_config["n_layer"],
      d_ff=get("n_inner") or 4 * d_model, max_length=hf_config["n_positions"],
      position="learned", activation=_activation(get("activation_function", "gelu_new"), source),
      norm="layernorm", norm_position="pre", layer_norm_epsilon=get("layer_norm_epsilon", 1e-5),
      use_bias=True, tie_embeddings=get("tie_word_embeddings", True),
      dropout_rate=get("resid_pdrop", 0.1),
    )  # fmt: skip
  if model_type == "bert":
    if get("position_embedding_type", "absolute") != "absolute":
      raise ConversionError(f"{source}: BERT position_embedding_type must be 'absolute'")
    return ModelConfig(
      family="encoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["hidden_size"],
      num_heads=hf_config["num_attention_heads"], num_layers=hf_config["num_hidden_layers"],
      d_ff=hf_config["intermediate_size"], max_length=hf_config["max_position_embeddings"],
      position="learned", activation=_activation(get("hidden_act", "gelu"), source),
      norm="layernorm", norm_position="post", layer_norm_epsilon=get("layer_norm_eps", 1e-12),
      use_bias=True, tie_embeddings=get("tie_word_embeddings", True),
      type_vocab_size=get("type_vocab_size", 2), nsp=architecture == "BertForPreTraining",
      dropout_rate=get("hidden_dropout_prob", 0.1),
    )  # fmt: skip
  # v1.0 rescales the decoder output by d_model**-0.5 before its tied projection, v1.1 neither
  # rescales nor ties. transformers >= 5 writes `scale_decoder_outputs` and always says
  # tie_word_embeddings=true (it unties when lm_head.weight differs); older versions only say
  # tie_word_embeddings. Untied here means an own `lm_head` (a copy of `shared` if absent).
  scale = get("scale_decoder_outputs", get("tie_word_embeddings", True) is not False)
  projection = get("feed_forward_proj", "relu")
  if projection not in ("relu", "gated-gelu"):
    raise ConversionError(
      f"{source}: T5 feed_forward_proj={projection!r} is not supported (relu or gated-gelu)"
    )
  return ModelConfig(
    family="encoder_decoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["d_model"],
    num_heads=hf_config["num_heads"], head_dim=hf_config["d_kv"],
    num_layers=hf_config["num_layers"],
    num_decoder_layers=get("num_decoder_layers") or hf_config["num_layers"],
    d_ff=hf_config["d_ff"], max_length=0, position="relative",
    relative_buckets=get("relative_attention_num_buckets", 32),
    relative_max_distance=get("relative_attention_max_distance", 128),
    activation=projection, norm="rmsnorm", norm_position="pre",
    layer_norm_epsilon=get("layer_norm_epsilon", 1e-6), use_bias=False,
    tie_embeddings=bool(scale), dropout_rate=get("dropout_rate", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  """The config.json of `config` (HF fills every other field with its defaults)."""
  activation = {v: k for k, v in ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}
  if config.family == "decoder":
    if config.position != "learned" or config.norm_position != "pre" or config.norm != "layernorm":
      raise ConversionError("export: only GPT-2 style decoders (learned positions, pre-LN) export")
    return dict(
      model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
      n_positions=config.max_length, n_embd=config.d_model, n_layer=config.num_layers,
      n_head=config.num_heads, n_inner=config.d_ff,
      activation_function=activation[config.activation],
      layer_norm_epsilon=config.layer_norm_epsilon, tie_word_embeddings=config.tie_embeddings,
      resid_pdrop=config.dropout_rate, embd_pdrop=config.dropout_rate,
      attn_pdrop=config.dropout_rate,
    )  # fmt: skip
  if config.family == "encoder":
    return dict(
      model_type="bert",
      architectures=["BertForPreTraining" if config.nsp else "BertForMaskedLM"],
      vocab_size=config.vocab_size, hidden_size=config.d_model,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.d_ff, hidden_act=activation[config.activation],
      max_position_embeddings=config.max_length, type_vocab_size=config.type_vocab_size,
      layer_norm_eps=config.layer_norm_epsilon, hidden_dropout_prob=config.dropout_rate,
      attention_probs_dropout_prob=config.dropout_rate, pad_token_id=0,
      tie_word_embeddings=config.tie_embeddings,
    )  # fmt: skip
  if config.position != "relative":
    raise ConversionError("export: T5 models need model.position='relative'")
  return dict(
    model_type="t5", architectures=["T5ForConditionalGeneration"],
    vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.head_dim
    or config.d_model // config.num_heads, d_ff=config.d_ff, num_layers=config.num_layers,
    num_decoder_layers=config.num_decoder_layers or config.num_layers,
    num_heads=config.num_heads, relative_attention_num_buckets=config.relative_buckets,
    relative_attention_max_distance=config.relative_max_distance,
    dropout_rate=config.dropout_rate, layer_norm_epsilon=config.layer_norm_epsilon,
    feed_forward_proj=config.activation, tie_word_embeddings=config.tie_embeddings,
    scale_decoder_outputs=config.tie_embeddings, is_encoder_decoder=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
  )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The tensor tables.


def _attention_rules(prefix: str, path: tuple[str, ...], names: dict[str, str], kind: str):
  rules = []
  for ours, theirs in names.items():
    in_ndim = 2 if ours == "out" else 1
    rules.append(Rule(f"{prefix}{theirs}.weight", path + (ours, "kernel"), kind, in_ndim))
  return rules


def _gpt2_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("transformer.wte.weight", ("token_embedder", "embedding")),
    Rule("transformer.wpe.weight", ("position_embedder", "embedding")),
    Rule("transformer.ln_f.weight", ("decoder", "final_norm", "scale")),
    Rule("transformer.ln_f.bias", ("decoder", "final_norm", "bias")),
  ]
  if not config.tie_embeddings:
    rules.append(Rule("lm_head.weight", ("logits_dense", "kernel"), "linear"))
  for i in range(config.num_layers):
    hf, path = f"transformer.h.{i}.", ("decoder", f"layers_{i}")
    for j, name in enumerate(("query", "key", "value")):
      rules.append(Rule(hf + "attn.c_attn.weight", path + ("attention", name, "kernel"),
                        "conv1d", part=(j, 3)))  # fmt: skip
      rules.append(Rule(hf + "attn.c_attn.bias", path + ("attention", name, "bias"),
                        part=(j, 3)))  # fmt: skip
    rules += [
      Rule(hf + "attn.c_proj.weight", path + ("attention", "out", "kernel"), "conv1d", 2),
      Rule(hf + "attn.c_proj.bias", path + ("attention", "out", "bias")),
      Rule(hf + "mlp.c_fc.weight", path + ("mlp", "wi", "kernel"), "conv1d"),
      Rule(hf + "mlp.c_fc.bias", path + ("mlp", "wi", "bias")),
      Rule(hf + "mlp.c_proj.weight", path + ("mlp", "wo", "kernel"), "conv1d"),
      Rule(hf + "mlp.c_proj.bias", path + ("mlp", "wo", "bias")),
    ]
    for theirs, ours in (("ln_1", "attention_norm"), ("ln_2", "mlp_norm")):
      rules.append(Rule(f"{hf}{theirs}.weight", path + (ours, "scale")))
      rules.append(Rule(f"{hf}{theirs}.bias", path + (ours, "bias")))
  return rules


def _norm_rules(hf: str, path: tuple[str, ...]) -> list[Rule]:
  return [Rule(hf + ".weight", path + ("scale",)), Rule(hf + ".bias", path + ("bias",))]


def _dense_rules(hf: str, path: tuple[str, ...], in_ndim: int = 1) -> list[Rule]:
  return [
    Rule(hf + ".weight", path + ("kernel",), "linear", in_ndim),
    Rule(hf + ".bias", path + ("bias",)),
  ]


def _bert_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("bert.embeddings.word_embeddings.weight", ("token_embedder", "embedding")),
    Rule("bert.embeddings.position_embeddings.weight", ("position_embedder", "embedding")),
    Rule("bert.embeddings.token_type_embeddings.weight", ("token_type_embedder", "embedding")),
    *_norm_rules("bert.embeddings.LayerNorm", ("embedding_norm",)),
    *_dense_rules("cls.predictions.transform.dense", ("mlm_transform",)),
    *_norm_rules("cls.predictions.transform.LayerNorm", ("mlm_norm",)),
    Rule("cls.predictions.bias", ("mlm_bias",)),
  ]
  if config.nsp:
    rules += _dense_rules("bert.pooler.dense", ("pooler",))
    rules += _dense_rules("cls.seq_relationship", ("nsp",))
  for i in range(config.num_layers):
    hf, path = f"bert.encoder.layer.{i}.", ("encoder", f"layers_{i}")
    for name in ("query", "key", "value"):
      rules += _dense_rules(f"{hf}attention.self.{name}", path + ("attention", name))
    rules += _dense_rules(hf + "attention.output.dense", path + ("attention", "out"), 2)
    rules += _norm_rules(hf + "attention.output.LayerNorm", path + ("attention_norm",))
    rules += _dense_rules(hf + "intermediate.dense", path + ("mlp", "wi"))
    rules += _dense_rules(hf + "output.dense", path + ("mlp", "wo"))
    rules += _norm_rules(hf + "output.LayerNorm", path + ("mlp_norm",))
  return rules


def _t5_rules(config: ModelConfig) -> list[Rule]:
  rules = [Rule("shared.weight", ("token_embedder", "embedding"))]
  if not config.tie_embeddings:
    rules.append(Rule("lm_head.weight", ("logits_dense", "kernel"), "linear"))
  attention = {"query": "q", "key": "k", "value": "v", "out": "o"}
  mlp = ("wi_0", "wi_1", "wo") if config.activation == "gated-gelu" else ("wi", "wo")
  stacks = (
    ("encoder", config.num_layers),
    ("decoder", config.num_decoder_layers or config.num_layers),
  )
  for stack, num_layers in stacks:
    rules.append(Rule(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      (stack, "relative_position_bias", "rel_embedding")))  # fmt: skip
    rules.append(Rule(f"{stack}.final_layer_norm.weight", (stack, "final_norm", "scale")))
    for i in range(num_layers):
      hf, path = f"{stack}.block.{i}.layer.", (stack, f"layers_{i}")
      sublayers = [("SelfAttention", "attention")]
      if stack == "decoder":
        sublayers.append(("EncDecAttention", "cross_attention"))
      for k, (theirs, ours) in enumerate(sublayers):
        rules += _attention_rules(f"{hf}{k}.{theirs}.", path + (ours,), attention, "linear")
        rules.append(Rule(f"{hf}{k}.layer_norm.weight", path + (f"{ours}_norm", "scale")))
      k = len(sublayers)
      for name in mlp:
        rules.append(Rule(f"{hf}{k}.DenseReluDense.{name}.weight", path + ("mlp", name, "kernel"),
                          "linear"))  # fmt: skip
      rules.append(Rule(f"{hf}{k}.layer_norm.weight", path + ("mlp_norm", "scale")))
  return rules


def tensor_rules(config: ModelConfig) -> list[Rule]:
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor."""
  return {"decoder": _gpt2_rules, "encoder": _bert_rules, "encoder_decoder": _t5_rules}[
    config.family
  ](config)


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
  from safetensors.numpy import load_file

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


def _normalize_names(tensors: dict[str, np.ndarray], model_type: str) -> dict[str, np.ndarray]:
  """Checkpoints of the bare models (GPT2Model, BertModel) lack the head-model prefix."""
  prefix = {"gpt2": "transformer.", "bert": "bert."}.get(model_type)
  if prefix is None:
    return tensors
  return {
    (name if name.startswith(prefix) or not _is_body(name, model_type) else prefix + name): value
    for name, value in tensors.items()
  }


def _is_body(name: str, model_type: str) -> bool:
  if model_type == "gpt2":
    return not name.startswith("lm_head.")
  return not name.startswith("cls.")


def _to_ours(rule: Rule, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  if rule.part is not None:
    index, count = rule.part
    value = np.split(value, count, axis=-1)[index]
  if rule.kind == "linear":
    value = value.T
  if value.size != int(np.prod(shape)):
    raise ConversionError(
      f"HF tensor {rule.hf} has shape {value.shape}; {'/'.join(rule.path)} expects {shape}"
    )
  return np.ascontiguousarray(value.reshape(shape), np.float32)


def _expected_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  import flax.linen as nn
  import jax

  from t5x_lite.models import build_model

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
  model_type, _ = _architecture(hf_config, source)
  try:
    config = model_config_from_hf(hf_config, source)
  except KeyError as e:
    raise ConversionError(f"{source}: required field {e} is missing") from None
  config = dataclasses.replace(config, scan_layers=scan_layers)
  tensors = _normalize_names(raw_tensors, model_type)
  if model_type == "t5" and not config.tie_embeddings and "lm_head.weight" not in tensors:
    # transformers >= 5 ties an unscaled T5 output to `shared` and then saves it once.
    tensors["lm_head.weight"] = tensors.get("shared.weight")
  expected = _expected_shapes(config)
  flat, used = {}, set()
  for rule in tensor_rules(config):
    if rule.hf not in tensors:
      raise ConversionError(
        f"{hf_dir}: tensor {rule.hf} is missing (needed for {'/'.join(rule.path)})"
      )
    if rule.path not in expected:
      raise ConversionError(f"internal: {'/'.join(rule.path)} is not a parameter of the model")
    flat[rule.path] = _to_ours(rule, tensors[rule.hf], expected[rule.path])
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
    from t5x_lite.models.transformer import stack_layers

    params = stack_layers(params)
    params = _to_numpy(params)
  return config, params


def _to_numpy(tree: Any) -> Any:
  import jax

  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)


# ---------------------------------------------------------------------------------------------
# Export.


def _to_theirs(rule: Rule, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if rule.kind in ("linear", "conv1d"):
    rows = int(np.prod(value.shape[: rule.in_ndim]))
    value = value.reshape(rows, -1)
    return value.T if rule.kind == "linear" else value
  return value.reshape(-1) if rule.path[-1] in ("bias", "scale") else value


def export_hf(model_config: ModelConfig | Any, params: Any, out_dir: str) -> str:
  """Writes `out_dir/config.json` and `out_dir/model.safetensors`; returns out_dir."""
  import flax.linen as nn
  from safetensors.numpy import save_file

  from t5x_lite.models import to_model_config
  from t5x_lite.models.transformer import unstack_layers

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
    value = _to_theirs(rule, flat[rule.path])
    if rule.part is None:
      tensors[rule.hf] = value
    else:
      parts.setdefault(rule.hf, {})[rule.part[0]] = value
  for name, pieces in parts.items():
    tensors[name] = np.concatenate([pieces[i] for i in sorted(pieces)], axis=-1)
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

# The default task of each family for a converted model (fine-tuning picks its own).
_FAMILY_DATA: dict[str, tuple[str, dict[str, int]]] = {
  "decoder": ("pydoc_causal_lm", {"targets": 256}),
  "encoder": ("pydoc_mlm", {"inputs": 128}),
  "encoder_decoder": ("pydoc_span_corruption", {"inputs": 128, "targets": 32}),
}


def full_config(model_config: ModelConfig, hf_dir: str | None = None) -> Any:
  """A complete t5x_lite config (base_config) around an imported ModelConfig."""
  from t5x_lite.config import base_config

  config = base_config()
  config.model.update(dataclasses.asdict(model_config))
  task, lengths = _FAMILY_DATA[model_config.family]
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
  from t5x_lite import checkpoints

  model_config, params = import_hf(hf_dir, scan_layers=scan_layers)
  config = (config_fn or full_config)(model_config, hf_dir)
  directory = os.path.join(out_dir, "checkpoints")
  checkpointer = checkpoints.Checkpointer(directory, async_save=False)
  checkpointer.save(0, {"params": params}, {}, 1, config, force=True)
  checkpointer.close()
  return directory


def export_checkpoint(workdir: str, out_dir: str) -> str:
  """The latest checkpoint of a t5x_lite run (workdir or checkpoints dir) -> HF directory."""
  import jax

  from t5x_lite import checkpoints
  from t5x_lite.config import model_config as model_config_of
  from t5x_lite.models import build_model

  source = checkpoints.open_existing(workdir)
  model_config = model_config_of(source.restore_config())
  model = build_model(model_config)
  abstract = jax.eval_shape(
    model.init, jax.random.key(0), model.input_shapes(1, model.default_lengths())
  )
  import flax.linen as nn

  params = source.restore_params(nn.meta.unbox(abstract))
  return export_hf(model_config, params, out_dir)
