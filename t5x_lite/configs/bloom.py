"""BLOOM-style decoder: causal LM with ALiBi position biases (no position embeddings).

Variants (`--config bloom.py:VARIANT`):
  tiny        2 layers, d_model 64, 4 heads: pre-trains on the bundled pydoc corpus on a CPU.
  tiny_6h     the same with 6 heads (ALiBi slopes for a head count that is not a power of two).
  bloom_560m  bigscience/bloom-560m's shape: 24 layers, 16 heads, 1024 wide, vocab 250880
              (BloomForCausalLM: 559,214,592 parameters).

BLOOM (BigScience 2022) is GPT-2's pre-LN decoder with three changes: ALiBi (Press et al. 2022)
instead of learned positions, a LayerNorm on the word embeddings, and GELU (tanh approximation).
Embeddings are tied. Training follows the paper: Adam (0.9, 0.95), weight decay 0.1, cosine.
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "decoder"
  model.position = "alibi"
  model.embedding_norm = True
  model.activation = "gelu_new"
  model.norm = "layernorm"
  model.norm_position = "pre"
  model.layer_norm_epsilon = 1e-5
  model.use_bias = True
  model.tie_embeddings = True
  config.data.task = "pydoc_causal_lm"
  config.optimizer.update(b2=0.95, weight_decay=0.1)

  if variant in ("tiny", "tiny_6h"):
    heads, d_model = (4, 64) if variant == "tiny" else (6, 96)
    model.update(
      vocab_size=1024, d_model=d_model, num_heads=heads, num_layers=2, d_ff=4 * d_model,
      max_length=128,
    )  # fmt: skip
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"targets": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=3e-3, warmup_steps=30)
  elif variant == "bloom_560m":
    model.update(
      vocab_size=250880, d_model=1024, num_heads=16, num_layers=24, d_ff=4096, max_length=2048
    )
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"targets": 2048}
    config.train.update(
      steps=100_000, batch_size=256, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=3e-4, warmup_steps=375, end_factor=0.1)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, tiny_6h, bloom_560m")
  return config
