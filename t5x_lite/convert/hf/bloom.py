"""BLOOM (`BloomForCausalLM`) <-> the decoder family with ALiBi: config and tensor table.

BLOOM fuses Q, K and V in one `query_key_value` Linear whose output is laid out per head
([heads, 3, head_dim], not [3, heads, head_dim] as GPT-2's c_attn): `prepare_tensors` splits it
into three plain Linears for the table, `finish_tensors` fuses them back on export.
"""

from __future__ import annotations

import numpy as np

from t5x_lite.convert.hf.rules import ConversionError, Rule, dense_rules, norm_rules
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "bloom"  # config.json model_type
ARCHITECTURES = ("BloomForCausalLM",)
FAMILY = "decoder"
HEAD_PREFIX = "lm_head."
BODY_PREFIX = "transformer."  # BloomModel checkpoints lack it
DEFAULT_TASK = ("pydoc_causal_lm", {"targets": 256})
QKV = ("query", "key", "value")


def claims(config: ModelConfig) -> bool:
  """Whether an export of `config` is a BLOOM (a decoder with ALiBi)."""
  return config.family == "decoder" and config.position == "alibi"


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  del architecture
  get = hf_config.get
  if get("apply_residual_connection_post_layernorm", False):
    raise ConversionError(f"{source}: apply_residual_connection_post_layernorm is not supported")
  if get("pretraining_tp", 1) != 1 and get("slow_but_exact", False):
    raise ConversionError(f"{source}: slow_but_exact tensor-parallel rounding is not supported")
  d_model = get("hidden_size", get("n_embed", 64))
  return ModelConfig(
    family="decoder", vocab_size=hf_config["vocab_size"], d_model=d_model,
    num_heads=get("n_head", 8), num_layers=get("n_layer", 2), d_ff=4 * d_model,
    max_length=get("seq_length", 2048), position="alibi", embedding_norm=True,
    activation="gelu_new", norm="layernorm", norm_position="pre",
    layer_norm_epsilon=get("layer_norm_epsilon", 1e-5), use_bias=True,
    tie_embeddings=get("tie_word_embeddings", True), dropout_rate=get("hidden_dropout", 0.0),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  if not claims(config) or not config.embedding_norm or config.norm_position != "pre":
    raise ConversionError("export: BLOOM needs a pre-LN decoder with ALiBi and embedding_norm")
  if config.d_ff != 4 * config.d_model or (config.head_dim or 0) not in (
    0, config.d_model // config.num_heads,
  ):  # fmt: skip
    raise ConversionError(
      f"export: BLOOM has d_ff = 4·d_model and head_dim = d_model / heads; got d_ff="
      f"{config.d_ff}, head_dim={config.head_dim} for d_model={config.d_model}"
    )
  if config.activation != "gelu_new" or config.norm != "layernorm":
    raise ConversionError("export: BLOOM uses gelu_new and LayerNorm")
  return dict(
    model_type="bloom", architectures=["BloomForCausalLM"], vocab_size=config.vocab_size,
    hidden_size=config.d_model, n_layer=config.num_layers, n_head=config.num_heads,
    layer_norm_epsilon=config.layer_norm_epsilon, tie_word_embeddings=config.tie_embeddings,
    hidden_dropout=config.dropout_rate, attention_dropout=config.dropout_rate,
    seq_length=config.max_length,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("transformer.word_embeddings.weight", ("token_embedder", "embedding")),
    *norm_rules("transformer.word_embeddings_layernorm", ("embedding_norm",)),
    *norm_rules("transformer.ln_f", ("decoder", "final_norm")),
  ]
  if not config.tie_embeddings:
    rules.append(Rule("lm_head.weight", ("logits_dense", "kernel"), "linear"))
  for i in range(config.num_layers):
    hf, path = f"transformer.h.{i}.", ("decoder", f"layers_{i}")
    for name in QKV:
      rules += dense_rules(f"{hf}self_attention.{name}", path + ("attention", name))
    rules += dense_rules(f"{hf}self_attention.dense", path + ("attention", "out"), in_ndim=2)
    rules += dense_rules(f"{hf}mlp.dense_h_to_4h", path + ("mlp", "wi"))
    rules += dense_rules(f"{hf}mlp.dense_4h_to_h", path + ("mlp", "wo"))
    rules += norm_rules(f"{hf}input_layernorm", path + ("attention_norm",))
    rules += norm_rules(f"{hf}post_attention_layernorm", path + ("mlp_norm",))
  return rules


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """Splits each fused `query_key_value` ([heads, 3, head_dim] rows) into query, key, value."""
  out = dict(tensors)
  heads = config.num_heads
  for name in [n for n in tensors if n.endswith("self_attention.query_key_value.weight")]:
    prefix = name[: -len("query_key_value.weight")]
    weight = out.pop(name)
    bias = out.pop(prefix + "query_key_value.bias")
    weight = weight.reshape(heads, 3, -1, weight.shape[-1])
    bias = bias.reshape(heads, 3, -1)
    for j, part in enumerate(QKV):
      out[f"{prefix}{part}.weight"] = weight[:, j].reshape(-1, weight.shape[-1])
      out[f"{prefix}{part}.bias"] = bias[:, j].reshape(-1)
  return out


def finish_tensors(tensors: dict, config: ModelConfig) -> dict:
  """The inverse of prepare_tensors: fuses query, key, value into `query_key_value`."""
  out = dict(tensors)
  heads = config.num_heads
  for name in [n for n in tensors if n.endswith("self_attention.query.weight")]:
    prefix = name[: -len("query.weight")]
    weights = [out.pop(f"{prefix}{part}.weight") for part in QKV]
    biases = [out.pop(f"{prefix}{part}.bias") for part in QKV]
    d_in = weights[0].shape[-1]
    fused = np.stack([w.reshape(heads, -1, d_in) for w in weights], axis=1)  # [h, 3, hd, in]
    out[prefix + "query_key_value.weight"] = fused.reshape(-1, d_in)
    out[prefix + "query_key_value.bias"] = np.stack(
      [b.reshape(heads, -1) for b in biases], axis=1
    ).reshape(-1)
  return out
