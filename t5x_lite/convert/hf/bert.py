"""BERT (`BertForMaskedLM`, `BertForPreTraining`) <-> the encoder family: config and tensor table."""

from __future__ import annotations

import dataclasses

from t5x_lite.convert.hf.rules import (
  ConversionError,
  Rule,
  activation_from_hf,
  activation_to_hf,
  dense_rules,
  norm_rules,
)
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "bert"  # config.json model_type
ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining")  # the first is the default
FAMILY = "encoder"
HEAD_PREFIX = "cls."  # tensors of the head, outside the body prefix
BODY_PREFIX = "bert."  # bare-model checkpoints (no head) lack it
DEFAULT_TASK = ("pydoc_mlm", {"inputs": 128})  # (task, feature lengths) of a converted model


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  """The ModelConfig of an HF config.json (dict); ConversionError for what we cannot run."""
  get = hf_config.get
  if get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source}: BERT position_embedding_type must be 'absolute'")
  return ModelConfig(
    family="encoder", vocab_size=hf_config["vocab_size"], d_model=hf_config["hidden_size"],
    num_heads=hf_config["num_attention_heads"], num_layers=hf_config["num_hidden_layers"],
    d_ff=hf_config["intermediate_size"], max_length=hf_config["max_position_embeddings"],
    position="learned", activation=activation_from_hf(get("hidden_act", "gelu"), source),
    norm="layernorm", norm_position="post", layer_norm_epsilon=get("layer_norm_eps", 1e-12),
    use_bias=True, tie_embeddings=get("tie_word_embeddings", True),
    type_vocab_size=get("type_vocab_size", 2), nsp=architecture == "BertForPreTraining",
    dropout_rate=get("hidden_dropout_prob", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  """The config.json of `config` (HF fills every other field with its defaults)."""
  return dict(
    model_type="bert",
    architectures=["BertForPreTraining" if config.nsp else "BertForMaskedLM"],
    vocab_size=config.vocab_size, hidden_size=config.d_model,
    num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
    intermediate_size=config.d_ff, hidden_act=activation_to_hf(config.activation),
    max_position_embeddings=config.max_length, type_vocab_size=config.type_vocab_size,
    layer_norm_eps=config.layer_norm_epsilon, hidden_dropout_prob=config.dropout_rate,
    attention_probs_dropout_prob=config.dropout_rate, pad_token_id=0,
    tie_word_embeddings=config.tie_embeddings,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor."""
  rules = [
    Rule("bert.embeddings.word_embeddings.weight", ("token_embedder", "embedding")),
    Rule("bert.embeddings.position_embeddings.weight", ("position_embedder", "embedding")),
    Rule("bert.embeddings.token_type_embeddings.weight", ("token_type_embedder", "embedding")),
    *norm_rules("bert.embeddings.LayerNorm", ("embedding_norm",)),
    *dense_rules("cls.predictions.transform.dense", ("mlm_transform",)),
    *norm_rules("cls.predictions.transform.LayerNorm", ("mlm_norm",)),
    Rule("cls.predictions.bias", ("mlm_bias",)),
  ]
  if config.nsp:
    rules += dense_rules("bert.pooler.dense", ("pooler",))
    rules += dense_rules("cls.seq_relationship", ("nsp",))
  for i in range(config.num_layers):
    hf, path = f"bert.encoder.layer.{i}.", ("encoder", f"layers_{i}")
    for name in ("query", "key", "value"):
      rules += dense_rules(f"{hf}attention.self.{name}", path + ("attention", name))
    rules += dense_rules(hf + "attention.output.dense", path + ("attention", "out"), 2)
    rules += norm_rules(hf + "attention.output.LayerNorm", path + ("attention_norm",))
    rules += dense_rules(hf + "intermediate.dense", path + ("mlp", "wi"))
    rules += dense_rules(hf + "output.dense", path + ("mlp", "wo"))
    rules += norm_rules(hf + "output.LayerNorm", path + ("mlp_norm",))
  return rules


# Fine-tuned heads and the HF classes that hold them (`convert --to hf` of a classifier run).
CLASSIFIER_ARCHITECTURES = {
  "classification": "BertForSequenceClassification",
  "token_classification": "BertForTokenClassification",
}
# Pre-training heads a classifier run still carries but an HF classifier does not have.
PRETRAINING_HEADS = ("mlm_transform", "mlm_norm", "mlm_bias", "mlm_decoder", "nsp")


def classifier_rules(config: ModelConfig) -> list[Rule]:
  """A fine-tuned encoder: BERT's body, the [CLS] pooler (classification) and `classifier`."""
  body = dataclasses.replace(config, head="", nsp=False)
  rules = [rule for rule in tensor_rules(body) if rule.hf.startswith(BODY_PREFIX)]
  head = ("classification_head",)
  if config.head == "classification":  # the pre-trained NSP pooler, or the head's own
    rules += dense_rules("bert.pooler.dense", ("pooler",) if config.nsp else head + ("pooler",))
  return rules + dense_rules("classifier", head + ("classifier",))


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """The checkpoint's tensors as the table reads them (nothing to do for this family)."""
  del config
  return tensors
