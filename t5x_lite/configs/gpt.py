"""GPT-style decoder (GPT-2 architecture): causal LM pre-training.

Variants (`--config gpt.py:VARIANT`):
  tiny        2 layers, d_model 64: pre-trains on the bundled pydoc corpus on a CPU in minutes.
  small       4 layers, d_model 256: a bigger CPU smoke test.
  gpt2_small  GPT-2 124M (12 layers, 12 heads, 768 wide, 1024 positions, vocab 50257).
  gpt2_medium GPT-2 350M (24 layers, 16 heads, 1024 wide).
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "decoder"
  model.position = "learned"
  model.activation = "gelu_new"  # GPT-2's tanh approximation of GELU
  model.norm = "layernorm"
  model.norm_position = "pre"
  model.use_bias = True
  model.tie_embeddings = True
  config.data.task = "pydoc_causal_lm"

  if variant == "tiny":
    model.update(vocab_size=1024, d_model=64, num_heads=4, num_layers=2, d_ff=256, max_length=256)
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"targets": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=3e-3, warmup_steps=30)
  elif variant == "small":
    model.update(vocab_size=2048, d_model=256, num_heads=4, num_layers=4, d_ff=1024, max_length=512)
    config.data.vocab_size = 2048
    config.data.feature_lengths = {"targets": 256}
    config.train.update(steps=1000, batch_size=16)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
  elif variant in ("gpt2_small", "gpt2_medium"):
    if variant == "gpt2_small":
      model.update(d_model=768, num_heads=12, num_layers=12, d_ff=3072)
    else:
      model.update(d_model=1024, num_heads=16, num_layers=24, d_ff=4096)
    model.update(vocab_size=50257, max_length=1024, dropout_rate=0.0)
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"targets": 1024}
    config.train.update(
      steps=100_000, batch_size=256, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=6e-4, warmup_steps=2000, b2=0.95, weight_decay=0.1)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, small, gpt2_small, gpt2_medium")
  return config
