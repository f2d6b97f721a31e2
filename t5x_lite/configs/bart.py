"""BART: a denoising encoder-decoder (Lewis et al. 2020), BERT-like encoder + GPT-like decoder.

Variants (`--config bart.py:VARIANT`):
  tiny       2 + 2 layers, d_model 64: pre-trains (text infilling) on the pydoc corpus on a CPU.
  bart_base  facebook/bart-base's shape: 6 + 6 layers, 768 wide, 12 heads, vocab 50265,
             1024 positions (BartForConditionalGeneration: 139,420,416 parameters).

Architecture: learned positions offset by 2 (fairseq's padding_idx + 1), a LayerNorm on the
embeddings of each stack, post-LN blocks, GELU (erf), biases, the embedding tied between
encoder, decoder and output (logits h·Eᵀ, no rescale); init normal(0.02). Pre-training reads
`pydoc_bart` (denoising.bart_denoise). Adam b2 0.98, eps 1e-6, weight decay 0.01.
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "encoder_decoder"
  model.position = "learned"
  model.position_offset = 2
  model.embedding_norm = True
  model.scale_tied_logits = False
  model.activation = "gelu"
  model.norm = "layernorm"
  model.norm_position = "post"
  model.layer_norm_epsilon = 1e-5
  model.use_bias = True
  model.tie_embeddings = True
  model.init_scheme = "bert"  # normal(0.02) everywhere, as BART's _init_weights
  model.attention_scale = "rsqrt_head_dim"
  model.dropout_placement = "outputs"
  config.data.task = "pydoc_bart"
  config.optimizer.update(b2=0.98, eps=1e-6, weight_decay=0.01)

  if variant == "tiny":
    model.update(
      vocab_size=1024, d_model=64, num_heads=4, num_layers=2, num_decoder_layers=2, d_ff=256,
      max_length=130,
    )  # fmt: skip
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128, "targets": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=1e-3, warmup_steps=30)
  elif variant == "bart_base":
    model.update(
      vocab_size=50265, d_model=768, num_heads=12, num_layers=6, num_decoder_layers=6,
      d_ff=3072, max_length=1026, dropout_rate=0.1,
    )  # fmt: skip
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"inputs": 512, "targets": 512}
    config.train.update(
      # The paper gives the recipe of BART-large only: batch 8000, 500k steps, linear decay.
      steps=500_000,
      batch_size=8000,
      log_every=100,
      eval_every=2000,
      checkpoint_every=2000,
    )
    config.optimizer.update(learning_rate=4e-4, warmup_steps=10_000, decay="linear", end_factor=0)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, bart_base")
  return config
