"""ModelConfig: the frozen dataclass every model module receives (one place for model fields).

`config.model` in a config file is built from these defaults, so the set of valid keys, their
types and their documentation live here, next to the model code that reads them.
"""

from __future__ import annotations

import dataclasses


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
  """`vocab_size` rounded up to a multiple of `multiple` (0 or 1 = no padding)."""
  if vocab_size < 1:
    raise ValueError(f"vocab_size={vocab_size}: expected at least 1")
  if multiple < 0:
    raise ValueError(f"vocab_pad_multiple={multiple}: expected 0 (none) or a positive multiple")
  if multiple <= 1:
    return vocab_size
  return -(-vocab_size // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of one model; families read the fields that concern them."""

  family: str = "decoder"  # 'decoder' (GPT) | 'encoder' (BERT) | 'encoder_decoder' (T5)
  vocab_size: int = 1024  # embedding rows; >= the vocabulary's size (may be padded, e.g. 32128)
  decoder_start_id: int = 0  # token before the first target: decoder inputs are the targets
  # shifted right with it (T5 and models trained here: 0 = pad; a converted GPT-2: <|endoftext|>)
  vocab_pad_multiple: int = 0  # >1: rows rounded up to a multiple (128: GPT-2 50257 -> 50304) so
  # the vocab axis shards over `tensor`; logits of the padded rows are masked, export strips them
  d_model: int = 64  # width of the residual stream
  num_heads: int = 4  # attention heads
  head_dim: int = 0  # per-head width; 0 = d_model // num_heads
  num_layers: int = 2  # layers of the decoder (GPT), encoder (BERT) or encoder (T5)
  num_decoder_layers: int = 0  # T5 decoder layers; 0 = num_layers
  d_ff: int = 256  # MLP hidden width
  max_length: int = 256  # learned position embeddings (0 when positions are relative)
  position: str = "learned"  # 'learned' | 'relative' (T5 buckets) | 'rope' | 'alibi' (BLOOM)
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
  position_offset: int = 0  # learned position of token i is row i + offset (RoBERTa: pad id + 1)
  embedding_dim: int = 0  # ALBERT's factorised embedding width E (0 = d_model): E -> d_model
  share_layers: bool = False  # ALBERT: one block applied num_layers times (params counted once)
  embedding_norm: bool = False  # a LayerNorm on the token embeddings (BLOOM, BART)
  # encoder-decoder: h·d_model^-0.5 before tied logits (T5 v1.0; BART: False)
  scale_tied_logits: bool = True
  # Decoder classification: loss = L2 + lm_loss_weight · L1 (the LM loss on the same inputs);
  # 0.5 as in the GPT paper (Radford et al. 2018, §3.2); 0 turns the auxiliary LM loss off.
  lm_loss_weight: float = 0.5
  # Decoder-only prefix LM: 'bidirectional' (T5 / SeqIO `decoder_causal_attention`: the inputs
  # attend to each other both ways) | 'causal' (every position attends to earlier ones only) |
  # '' (config.model_config decides: bidirectional when the task feeds 'inputs').
  prefix_attention: str = ""
  # Switches the shared layers read (never the family name); '' = the family's own default,
  # filled in by the family's model class (models/decoder.py, encoder.py, encoder_decoder.py).
  init_scheme: str = ""  # 'gpt2' (normal 0.02, residual projections / sqrt(2L)) | 'bert' | 't5'
  attention_scale: str = ""  # 'rsqrt_head_dim' (GPT-2, BERT) | 'none' (T5: folded into the init)
  dropout_placement: str = ""  # 'outputs' (sublayer outputs) | 'outputs+hidden+final' (T5: also
  # the MLP hidden activations and after the final norm)

  @property
  def embedding_rows(self) -> int:
    """Rows of the token embedding and output layer: vocab_size padded to vocab_pad_multiple."""
    return padded_vocab_size(self.vocab_size, self.vocab_pad_multiple)


INIT_SCHEMES = ("gpt2", "bert", "t5")
ATTENTION_SCALES = ("rsqrt_head_dim", "none")
DROPOUT_PLACEMENTS = ("outputs", "outputs+hidden+final")
ATTENTION_IMPLS = ("xla", "dot_product", "cudnn")
SWITCHES = ("init_scheme", "attention_scale", "dropout_placement")


def with_defaults(config: ModelConfig, defaults: dict[str, str]) -> ModelConfig:
  """`config` with its unset ('') switches taken from `defaults` (a family's)."""
  unset = {name: defaults[name] for name in SWITCHES if not getattr(config, name)}
  return dataclasses.replace(config, **unset) if unset else config
