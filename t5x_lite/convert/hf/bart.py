"""BART (`BartForConditionalGeneration`) <-> the encoder-decoder family with learned positions,
embedding LayerNorms and post-LN blocks: config and tensor table."""

from __future__ import annotations

import numpy as np

from t5x_lite.convert.hf.rules import (
  ConversionError,
  Rule,
  activation_from_hf,
  activation_to_hf,
  dense_rules,
  norm_rules,
)
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "bart"
ARCHITECTURES = ("BartForConditionalGeneration",)
FAMILY = "encoder_decoder"
HEAD_PREFIX = "lm_head."
BODY_PREFIX = "model."  # BartModel checkpoints lack it
DEFAULT_TASK = ("pydoc_bart", {"inputs": 256, "targets": 256})
OFFSET = 2  # BartLearnedPositionalEmbedding: position ids + 2
ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}


def claims(config: ModelConfig) -> bool:
  """Whether an export of `config` is a BART (an encoder-decoder with learned positions)."""
  return config.family == "encoder_decoder" and config.position == "learned"


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  del architecture
  get = hf_config.get
  if get("scale_embedding", False):
    raise ConversionError(f"{source}: BART with scale_embedding=True is not supported")
  if get("encoder_attention_heads") != get("decoder_attention_heads") or get(
    "encoder_ffn_dim"
  ) != get("decoder_ffn_dim"):
    raise ConversionError(f"{source}: encoder and decoder must share heads and ffn_dim")
  return ModelConfig(
    family="encoder_decoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["d_model"],
    num_heads=hf_config["encoder_attention_heads"], num_layers=hf_config["encoder_layers"],
    num_decoder_layers=hf_config["decoder_layers"], d_ff=hf_config["encoder_ffn_dim"],
    max_length=get("max_position_embeddings", 1024) + OFFSET, position="learned",
    position_offset=OFFSET, embedding_norm=True, scale_tied_logits=False,
    activation=activation_from_hf(get("activation_function", "gelu"), source),
    norm="layernorm", norm_position="post", layer_norm_epsilon=1e-5, use_bias=True,
    tie_embeddings=True, init_scheme="bert", attention_scale="rsqrt_head_dim",
    dropout_placement="outputs", dropout_rate=get("dropout", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  if (
    not claims(config)
    or config.position_offset != OFFSET
    or not config.embedding_norm
    or config.norm_position != "post"
    or config.scale_tied_logits
    or not config.tie_embeddings
  ):
    raise ConversionError(
      "export: BART needs an encoder-decoder with learned positions offset 2, embedding_norm, "
      "post-LN, tied embeddings and scale_tied_logits=False"
    )
  return dict(
    model_type="bart", architectures=["BartForConditionalGeneration"],
    vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.num_layers,
    decoder_layers=config.num_decoder_layers or config.num_layers,
    encoder_attention_heads=config.num_heads, decoder_attention_heads=config.num_heads,
    encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff,
    activation_function=activation_to_hf(config.activation),
    max_position_embeddings=config.max_length - OFFSET, dropout=config.dropout_rate,
    attention_dropout=config.dropout_rate, activation_dropout=0.0, scale_embedding=False,
    tie_word_embeddings=True, pad_token_id=0, bos_token_id=0, eos_token_id=1,
    decoder_start_token_id=0, forced_eos_token_id=None,
  )  # fmt: skip


def _block_rules(hf: str, path: tuple[str, ...], cross: bool) -> list[Rule]:
  rules = []
  parts = [("self_attn", "attention")] + ([("encoder_attn", "cross_attention")] if cross else [])
  for theirs, ours in parts:
    for name, proj in ATTENTION.items():
      rules += dense_rules(f"{hf}{theirs}.{proj}", path + (ours, name), 2 if name == "out" else 1)
    rules += norm_rules(f"{hf}{theirs}_layer_norm", path + (f"{ours}_norm",))
  rules += dense_rules(hf + "fc1", path + ("mlp", "wi"))
  rules += dense_rules(hf + "fc2", path + ("mlp", "wo"))
  rules += norm_rules(hf + "final_layer_norm", path + ("mlp_norm",))
  return rules


def tensor_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("model.shared.weight", ("token_embedder", "embedding")),
    Rule("model.encoder.embed_positions.weight", ("encoder_position_embedder", "embedding")),
    Rule("model.decoder.embed_positions.weight", ("decoder_position_embedder", "embedding")),
    *norm_rules("model.encoder.layernorm_embedding", ("encoder_embedding_norm",)),
    *norm_rules("model.decoder.layernorm_embedding", ("decoder_embedding_norm",)),
  ]
  for i in range(config.num_layers):
    rules += _block_rules(f"model.encoder.layers.{i}.", ("encoder", f"layers_{i}"), False)
  for i in range(config.num_decoder_layers or config.num_layers):
    rules += _block_rules(f"model.decoder.layers.{i}.", ("decoder", f"layers_{i}"), True)
  return rules


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """Drops `final_logits_bias` (a buffer, zeros in every released BART; refused otherwise)."""
  del config
  out = dict(tensors)
  for name in ("final_logits_bias", "model.final_logits_bias"):  # the latter: name normalized
    bias = out.pop(name, None)
    if bias is not None and np.any(bias != 0):
      raise ConversionError("final_logits_bias is not zero: t5x_lite's BART has no logits bias")
  return out
