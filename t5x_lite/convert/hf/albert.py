"""ALBERT (`AlbertForPreTraining`) <-> the encoder family with a factorised embedding and one
shared block: config and tensor table (one layer group of one layer, as every released ALBERT)."""

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

MODEL_TYPE = "albert"
ARCHITECTURES = ("AlbertForPreTraining",)
FAMILY = "encoder"
HEAD_PREFIX = "predictions."
BODY_PREFIX = None  # AlbertForPreTraining's heads (predictions., sop_classifier.) are top-level
DEFAULT_TASK = ("pydoc_albert", {"inputs": 128})
DROPPED = ("predictions.decoder.weight", "predictions.decoder.bias")
LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0."


def claims(config: ModelConfig) -> bool:
  """Whether an export of `config` is an ALBERT (an encoder with one shared block)."""
  return config.family == "encoder" and config.share_layers


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  del architecture
  get = hf_config.get
  if get("num_hidden_groups", 1) != 1 or get("inner_group_num", 1) != 1:
    raise ConversionError(f"{source}: ALBERT with several layer groups is not supported")
  if get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source}: ALBERT position_embedding_type must be 'absolute'")
  return ModelConfig(
    family="encoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["hidden_size"],
    num_heads=hf_config["num_attention_heads"], num_layers=hf_config["num_hidden_layers"],
    d_ff=hf_config["intermediate_size"], max_length=get("max_position_embeddings", 512),
    embedding_dim=get("embedding_size", 128), share_layers=True, scan_layers=False,
    position="learned", activation=activation_from_hf(get("hidden_act", "gelu_new"), source),
    norm="layernorm", norm_position="post", layer_norm_epsilon=get("layer_norm_eps", 1e-12),
    use_bias=True, tie_embeddings=True, type_vocab_size=get("type_vocab_size", 2), nsp=True,
    dropout_rate=get("hidden_dropout_prob", 0.0),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  if not claims(config) or not config.nsp or not config.embedding_dim:
    raise ConversionError(
      "export: ALBERT needs an encoder with share_layers, embedding_dim and the SOP head (nsp)"
    )
  return dict(
    model_type="albert", architectures=["AlbertForPreTraining"], vocab_size=config.vocab_size,
    embedding_size=config.embedding_dim, hidden_size=config.d_model,
    num_hidden_layers=config.num_layers, num_hidden_groups=1, inner_group_num=1,
    num_attention_heads=config.num_heads, intermediate_size=config.d_ff,
    hidden_act=activation_to_hf(config.activation), max_position_embeddings=config.max_length,
    type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_epsilon,
    hidden_dropout_prob=config.dropout_rate, attention_probs_dropout_prob=config.dropout_rate,
    classifier_dropout_prob=config.dropout_rate, pad_token_id=0,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  del config
  path = ("encoder", "shared_block")
  return [
    Rule("albert.embeddings.word_embeddings.weight", ("token_embedder", "embedding")),
    Rule("albert.embeddings.position_embeddings.weight", ("position_embedder", "embedding")),
    Rule("albert.embeddings.token_type_embeddings.weight", ("token_type_embedder", "embedding")),
    *norm_rules("albert.embeddings.LayerNorm", ("embedding_norm",)),
    *dense_rules("albert.encoder.embedding_hidden_mapping_in", ("embedding_projection",)),
    *dense_rules(LAYER + "attention.query", path + ("attention", "query")),
    *dense_rules(LAYER + "attention.key", path + ("attention", "key")),
    *dense_rules(LAYER + "attention.value", path + ("attention", "value")),
    *dense_rules(LAYER + "attention.dense", path + ("attention", "out"), 2),
    *norm_rules(LAYER + "attention.LayerNorm", path + ("attention_norm",)),
    *dense_rules(LAYER + "ffn", path + ("mlp", "wi")),
    *dense_rules(LAYER + "ffn_output", path + ("mlp", "wo")),
    *norm_rules(LAYER + "full_layer_layer_norm", path + ("mlp_norm",)),
    *dense_rules("albert.pooler", ("pooler",)),
    *dense_rules("sop_classifier.classifier", ("nsp",)),
    *dense_rules("predictions.dense", ("mlm_transform",)),
    *norm_rules("predictions.LayerNorm", ("mlm_norm",)),
    Rule("predictions.bias", ("mlm_bias",)),
  ]


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """Drops the tied decoder copies (the decoder is the word embedding + predictions.bias)."""
  del config
  return {name: value for name, value in tensors.items() if name not in DROPPED}
