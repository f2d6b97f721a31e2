"""ModelConfig: the frozen dataclass every model module receives (one place for model fields).

`config.model` in a config file is built from these defaults, so the set of valid keys, their
types and their documentation live here, next to the model code that reads them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of one model; families read the fields that concern them."""

  family: str = "decoder"  # 'decoder' (GPT) | 'encoder' (BERT) | 'encoder_decoder' (T5)
  vocab_size: int = 1024  # embedding rows; >= the vocabulary's size (may be padded, e.g. 32128)
  d_model: int = 64  # width of the residual stream
  num_heads: int = 4  # attention heads
  head_dim: int = 0  # per-head width; 0 = d_model // num_heads
  num_layers: int = 2  # layers of the decoder (GPT), encoder (BERT) or encoder (T5)
  num_decoder_layers: int = 0  # T5 decoder layers; 0 = num_layers
  d_ff: int = 256  # MLP hidden width
  max_length: int = 256  # learned position embeddings (0 when positions are relative)
  position: str = "learned"  # 'learned' | 'relative' (T5 buckets) | 'rope'
  relative_buckets: int = 32  # T5 relative attention buckets
  relative_max_distance: int = 128  # T5 relative attention max distance
  activation: str = "gelu"  # 'gelu' (GPT-2/BERT, tanh approx for GPT-2) | 'relu' | 'gated-gelu'
  norm: str = "layernorm"  # 'layernorm' | 'rmsnorm' (T5: no mean, no bias)
  norm_position: str = "pre"  # 'pre' (GPT-2, T5) | 'post' (BERT)
  layer_norm_epsilon: float = 1e-5  # epsilon of every norm
  use_bias: bool = True  # biases in dense layers (GPT-2/BERT yes, T5 no)
  tie_embeddings: bool = True  # output logits = h·Wₑᵀ
  type_vocab_size: int = 2  # BERT token type (segment A/B) embeddings
  nsp: bool = True  # BERT: next-sentence-prediction head and loss
  dropout_rate: float = 0.0  # dropout on embeddings, attention output and MLP output
  dtype: str = "float32"  # compute dtype: 'float32' | 'bfloat16' (params stay float32)
  scan_layers: bool = True  # run the stack under nn.scan (fast compiles for deep models)
  remat: str = "none"  # 'none' | 'minimal' (save matmul outputs) | 'full'
  attention_impl: str = "xla"  # 'xla' (einsums + softmax) | 'dot_product' (jax.nn.dot_product_
  # attention, XLA or cuDNN as jax picks) | 'cudnn' (cuDNN flash attention on GPU, XLA elsewhere)
  loss_chunk_size: int = 0  # > 0: cross-entropy over chunks of this many tokens, never the whole
  # [tokens, vocab] logits at once (GPT, T5; models/chunked_loss.py); 0 = plain logits
  z_loss: float = 0.0  # auxiliary z·logsumexp² per target token (T5 uses 1e-4)
  label_smoothing: float = 0.0  # label smoothing of the cross-entropy
  head: str = ""  # fine-tuning head: '' (pre-training) | 'classification' | 'token_classification'
  num_labels: int = 0  # classes of the fine-tuning head
  lm_loss_weight: float = 0.0  # decoder classification: loss = L2 + lm_loss_weight · L1 (LM loss)
  # Switches the shared layers read (never the family name); '' = the family's own default,
  # filled in by the family's model class (models/decoder.py, encoder.py, encoder_decoder.py).
  init_scheme: str = ""  # 'gpt2' (normal 0.02, residual projections / sqrt(2L)) | 'bert' | 't5'
  attention_scale: str = ""  # 'rsqrt_head_dim' (GPT-2, BERT) | 'none' (T5: folded into the init)
  dropout_placement: str = ""  # 'outputs' (sublayer outputs) | 'outputs+hidden+final' (T5: also
  # the MLP hidden activations and after the final norm)


INIT_SCHEMES = ("gpt2", "bert", "t5")
ATTENTION_SCALES = ("rsqrt_head_dim", "none")
DROPOUT_PLACEMENTS = ("outputs", "outputs+hidden+final")
ATTENTION_IMPLS = ("xla", "dot_product", "cudnn")
SWITCHES = ("init_scheme", "attention_scale", "dropout_placement")


def with_defaults(config: ModelConfig, defaults: dict[str, str]) -> ModelConfig:
  """`config` with its unset ('') switches taken from `defaults` (a family's)."""
  unset = {name: defaults[name] for name in SWITCHES if not getattr(config, name)}
  return dataclasses.replace(config, **unset) if unset else config
