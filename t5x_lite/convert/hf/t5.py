"""T5 v1.0 / v1.1 (`T5ForConditionalGeneration`) <-> the encoder-decoder family."""

from __future__ import annotations

from t5x_lite.convert.hf.rules import (
  ConversionError,
  Rule,
  attention_rules,
)
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "t5"  # config.json model_type
ARCHITECTURES = ("T5ForConditionalGeneration",)  # the first is the default
FAMILY = "encoder_decoder"
HEAD_PREFIX = None  # tensors of the head, outside the body prefix
BODY_PREFIX = None  # bare-model checkpoints (no head) lack it
DEFAULT_TASK = (
  "pydoc_span_corruption",
  {"inputs": 128, "targets": 32},
)  # (task, feature lengths) of a converted model


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  """The ModelConfig of an HF config.json (dict); ConversionError for what we cannot run."""
  get = hf_config.get
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


def tensor_rules(config: ModelConfig) -> list[Rule]:
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor."""
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
        rules += attention_rules(f"{hf}{k}.{theirs}.", path + (ours,), attention, "linear")
        rules.append(Rule(f"{hf}{k}.layer_norm.weight", path + (f"{ours}_norm", "scale")))
      k = len(sublayers)
      for name in mlp:
        rules.append(Rule(f"{hf}{k}.DenseReluDense.{name}.weight", path + ("mlp", name, "kernel"),
                          "linear"))  # fmt: skip
      rules.append(Rule(f"{hf}{k}.layer_norm.weight", path + ("mlp_norm", "scale")))
  return rules


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """transformers >= 5 ties an unscaled T5 output to `shared` and then saves it once."""
  if not config.tie_embeddings and "lm_head.weight" not in tensors:
    tensors = {**tensors, "lm_head.weight": tensors.get("shared.weight")}
  return tensors
