"""RoBERTa (`RobertaForMaskedLM`) <-> the encoder family with offset positions.

RoBERTa is BERT's post-LN encoder without NSP (no pooler in the MLM model), one token type, and
learned positions offset by padding_idx + 1 (HF: position ids = cumsum(ids != pad) + pad), which
is `ModelConfig.position_offset` = pad_token_id + 1.
"""

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

MODEL_TYPE = "roberta"
ARCHITECTURES = ("RobertaForMaskedLM",)
FAMILY = "encoder"
HEAD_PREFIX = "lm_head."
BODY_PREFIX = "roberta."  # RobertaModel checkpoints lack it
DEFAULT_TASK = ("pydoc_roberta_mlm", {"inputs": 128})
# Tied duplicates and buffers HF may write: the decoder is the word embedding (+ lm_head.bias).
DROPPED = ("lm_head.decoder.weight", "lm_head.decoder.bias", "roberta.embeddings.token_type_ids")


def claims(config: ModelConfig) -> bool:
  """Whether an export of `config` is a RoBERTa (an encoder with offset positions, no NSP)."""
  return config.family == "encoder" and config.position_offset > 0 and not config.nsp


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  del architecture
  get = hf_config.get
  if get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source}: RoBERTa position_embedding_type must be 'absolute'")
  return ModelConfig(
    family="encoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["hidden_size"],
    num_heads=hf_config["num_attention_heads"], num_layers=hf_config["num_hidden_layers"],
    d_ff=hf_config["intermediate_size"], max_length=hf_config["max_position_embeddings"],
    position="learned", position_offset=get("pad_token_id", 1) + 1,
    activation=activation_from_hf(get("hidden_act", "gelu"), source), norm="layernorm",
    norm_position="post", layer_norm_epsilon=get("layer_norm_eps", 1e-5), use_bias=True,
    tie_embeddings=True, type_vocab_size=get("type_vocab_size", 1), nsp=False,
    dropout_rate=get("hidden_dropout_prob", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  if not claims(config) or not config.tie_embeddings or config.position != "learned":
    raise ConversionError(
      "export: RoBERTa needs an encoder with learned positions, position_offset > 0, "
      "tied embeddings and no NSP"
    )
  return dict(
    model_type="roberta", architectures=["RobertaForMaskedLM"], vocab_size=config.vocab_size,
    hidden_size=config.d_model, num_hidden_layers=config.num_layers,
    num_attention_heads=config.num_heads, intermediate_size=config.d_ff,
    hidden_act=activation_to_hf(config.activation), max_position_embeddings=config.max_length,
    type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_epsilon,
    hidden_dropout_prob=config.dropout_rate, attention_probs_dropout_prob=config.dropout_rate,
    pad_token_id=config.position_offset - 1, bos_token_id=0, eos_token_id=2,
    tie_word_embeddings=True,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  rules = [
    Rule("roberta.embeddings.word_embeddings.weight", ("token_embedder", "embedding")),
    Rule("roberta.embeddings.position_embeddings.weight", ("position_embedder", "embedding")),
    *norm_rules("roberta.embeddings.LayerNorm", ("embedding_norm",)),
    *dense_rules("lm_head.dense", ("mlm_transform",)),
    *norm_rules("lm_head.layer_norm", ("mlm_norm",)),
    Rule("lm_head.bias", ("mlm_bias",)),
  ]
  if config.type_vocab_size > 0:
    rules.append(
      Rule("roberta.embeddings.token_type_embeddings.weight", ("token_type_embedder", "embedding"))
    )
  for i in range(config.num_layers):
    hf, path = f"roberta.encoder.layer.{i}.", ("encoder", f"layers_{i}")
    for name in ("query", "key", "value"):
      rules += dense_rules(f"{hf}attention.self.{name}", path + ("attention", name))
    rules += dense_rules(hf + "attention.output.dense", path + ("attention", "out"), 2)
    rules += norm_rules(hf + "attention.output.LayerNorm", path + ("attention_norm",))
    rules += dense_rules(hf + "intermediate.dense", path + ("mlp", "wi"))
    rules += dense_rules(hf + "output.dense", path + ("mlp", "wo"))
    rules += norm_rules(hf + "output.LayerNorm", path + ("mlp_norm",))
  return rules


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """Drops the tied decoder copies and buffers; a RobertaModel's pooler is not part of the MLM."""
  del config
  return {
    name: value
    for name, value in tensors.items()
    if name not in DROPPED and not name.startswith("roberta.pooler.")
  }
