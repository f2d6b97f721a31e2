"""DistilBERT (`DistilBertForMaskedLM`) <-> the encoder family without token types or pooler:
config and tensor table."""

from __future__ import annotations

from t5x_lite.convert.hf.rules import (
  ConversionError,
  Rule,
  activation_from_hf,
  activation_to_hf,
  dense_rules,
  norm_rules,
)
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "distilbert"
ARCHITECTURES = ("DistilBertForMaskedLM",)
FAMILY = "encoder"
HEAD_PREFIX = "vocab_"  # vocab_transform, vocab_layer_norm, vocab_projector
BODY_PREFIX = "distilbert."  # DistilBertModel checkpoints lack it
DEFAULT_TASK = ("pydoc_roberta_mlm", {"inputs": 128})  # MLM without NSP
DROPPED = ("vocab_projector.weight",)  # tied to the word embedding
ATTENTION = {"query": "q_lin", "key": "k_lin", "value": "v_lin", "out": "out_lin"}


def claims(config: ModelConfig) -> bool:
  """Whether an export of `config` is a DistilBERT (an encoder without token types, NSP,
  position offset or shared layers)."""
  return (
    config.family == "encoder"
    and config.type_vocab_size == 0
    and not config.nsp
    and config.position_offset == 0
    and not config.share_layers
  )


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  del architecture
  get = hf_config.get
  if get("sinusoidal_pos_embds", False):
    raise ConversionError(f"{source}: DistilBERT with sinusoidal_pos_embds is not supported")
  return ModelConfig(
    family="encoder", vocab_size=hf_config["vocab_size"], d_model=get("dim", 768),
    num_heads=get("n_heads", 12), num_layers=get("n_layers", 6), d_ff=get("hidden_dim", 3072),
    max_length=get("max_position_embeddings", 512), position="learned",
    activation=activation_from_hf(get("activation", "gelu"), source), norm="layernorm",
    norm_position="post", layer_norm_epsilon=1e-12, use_bias=True, tie_embeddings=True,
    type_vocab_size=0, nsp=False, dropout_rate=get("dropout", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  if not claims(config) or config.layer_norm_epsilon != 1e-12 or not config.tie_embeddings:
    raise ConversionError(
      "export: DistilBERT needs an encoder with type_vocab_size=0, no NSP, tied embeddings and "
      "LayerNorm epsilon 1e-12"
    )
  return dict(
    model_type="distilbert", architectures=["DistilBertForMaskedLM"],
    vocab_size=config.vocab_size, dim=config.d_model, n_layers=config.num_layers,
    n_heads=config.num_heads, hidden_dim=config.d_ff,
    activation=activation_to_hf(config.activation),
    max_position_embeddings=config.max_length, dropout=config.dropout_rate,
    attention_dropout=config.dropout_rate, sinusoidal_pos_embds=False, pad_token_id=0,
    tie_word_embeddings=True,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("distilbert.embeddings.word_embeddings.weight", ("token_embedder", "embedding")),
    Rule("distilbert.embeddings.position_embeddings.weight", ("position_embedder", "embedding")),
    *norm_rules("distilbert.embeddings.LayerNorm", ("embedding_norm",)),
    *dense_rules("vocab_transform", ("mlm_transform",)),
    *norm_rules("vocab_layer_norm", ("mlm_norm",)),
    Rule("vocab_projector.bias", ("mlm_bias",)),
  ]
  for i in range(config.num_layers):
    hf, path = f"distilbert.transformer.layer.{i}.", ("encoder", f"layers_{i}")
    for name, theirs in ATTENTION.items():
      rules += dense_rules(f"{hf}attention.{theirs}", path + ("attention", name),
                           2 if name == "out" else 1)  # fmt: skip
    rules += norm_rules(hf + "sa_layer_norm", path + ("attention_norm",))
    rules += dense_rules(hf + "ffn.lin1", path + ("mlp", "wi"))
    rules += dense_rules(hf + "ffn.lin2", path + ("mlp", "wo"))
    rules += norm_rules(hf + "output_layer_norm", path + ("mlp_norm",))
  return rules


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  del config
  return {name: value for name, value in tensors.items() if name not in DROPPED}
