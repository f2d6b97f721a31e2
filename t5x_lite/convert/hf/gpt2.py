"""GPT-2 (`GPT2LMHeadModel`) <-> the decoder family: config and tensor table."""

from __future__ import annotations

from t5x_lite.convert.hf.rules import (
  ConversionError,
  Rule,
  activation_from_hf,
  activation_to_hf,
)
from t5x_lite.models.config import ModelConfig

MODEL_TYPE = "gpt2"  # config.json model_type
ARCHITECTURES = ("GPT2LMHeadModel",)  # the first is the default
FAMILY = "decoder"
HEAD_PREFIX = "lm_head."  # tensors of the head, outside the body prefix
BODY_PREFIX = "transformer."  # bare-model checkpoints (no head) lack it
DEFAULT_TASK = ("pydoc_causal_lm", {"targets": 256})  # (task, feature lengths) of a converted model


def model_config_from_hf(hf_config: dict, architecture: str, source: str) -> ModelConfig:
  """The ModelConfig of an HF config.json (dict); ConversionError for what we cannot run."""
  get = hf_config.get
  if not get("scale_attn_weights", True) or get("scale_attn_by_inverse_layer_idx", False):
    raise ConversionError(f"{source}: GPT-2 attention scaling variants are not supported")
  if get("add_cross_attention", False):
    raise ConversionError(f"{source}: GPT-2 with cross-attention is not supported")
  d_model = hf_config["n_embd"]
  return ModelConfig(
    family="decoder", vocab_size=hf_config["vocab_size"], d_model=d_model,
    num_heads=hf_config["n_head"], num_layers=hf_config["n_layer"],
    d_ff=get("n_inner") or 4 * d_model, max_length=hf_config["n_positions"],
    position="learned", activation=activation_from_hf(get("activation_function", "gelu_new"), source),
    norm="layernorm", norm_position="pre", layer_norm_epsilon=get("layer_norm_epsilon", 1e-5),
    use_bias=True, tie_embeddings=get("tie_word_embeddings", True),
    dropout_rate=get("resid_pdrop", 0.1),
  )  # fmt: skip


def hf_config_from_model(config: ModelConfig) -> dict:
  """The config.json of `config` (HF fills every other field with its defaults)."""
  if config.position != "learned" or config.norm_position != "pre" or config.norm != "layernorm":
    raise ConversionError("export: only GPT-2 style decoders (learned positions, pre-LN) export")
  return dict(
    model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
    n_positions=config.max_length, n_embd=config.d_model, n_layer=config.num_layers,
    n_head=config.num_heads, n_inner=config.d_ff,
    activation_function=activation_to_hf(config.activation),
    layer_norm_epsilon=config.layer_norm_epsilon, tie_word_embeddings=config.tie_embeddings,
    resid_pdrop=config.dropout_rate, embd_pdrop=config.dropout_rate,
    attn_pdrop=config.dropout_rate,
  )  # fmt: skip


def tensor_rules(config: ModelConfig) -> list[Rule]:
  """Every parameter of `config`'s model (unrolled layers) and its HF tensor."""
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


def prepare_tensors(tensors: dict, config: ModelConfig) -> dict:
  """The checkpoint's tensors as the table reads them (nothing to do for this family)."""
  del config
  return tensors
