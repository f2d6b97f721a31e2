"""T5-style encoder-decoder: span-corruption pre-training.

Variants (`--config t5.py:VARIANT`):
  tiny           2 + 2 layers, d_model 64, T5 v1.1 layout: pre-trains on the pydoc corpus on a CPU.
  t5_small       T5 v1.0 small (6 + 6 layers, 512 wide, 8 heads, ReLU, tied output): 60,506,624.
  t5_base        T5 v1.0 base (12 + 12 layers, 768 wide, 12 heads).
  t5_1_1_small   T5 v1.1 small (8 + 8 layers, 512 wide, 6 heads of 64, gated-GELU, untied): 76,961,152.
  t5_1_1_base    T5 v1.1 base (12 + 12 layers, 768 wide, 12 heads, d_ff 2048).
The vocabulary is padded to 32128 (a multiple of 128) as in the reference checkpoints.

The real-size variants recompute the non-matmul activations in the backward pass
(`model.remat='minimal'`): less memory, and a step no slower (t5_small 8 × 512/114 f32 on a 2-core
Xeon: 1.10× the step with every activation kept, docs/benchmarks.md).
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "encoder_decoder"
  model.position = "relative"  # T5 relative attention buckets, one table per stack
  model.relative_buckets = 32
  model.relative_max_distance = 128
  model.max_length = 0  # no learned positions
  model.norm = "rmsnorm"  # T5 LayerNorm: no mean subtraction, no bias
  model.norm_position = "pre"
  model.layer_norm_epsilon = 1e-6
  model.use_bias = False
  model.z_loss = 1e-4
  config.data.task = "pydoc_span_corruption"
  # T5's own choice: Adafactor with an inverse-square-root schedule.
  config.optimizer.update(name="adafactor", learning_rate=1e-2, decay="rsqrt", weight_decay=0.0)

  if variant.startswith("t5_1_1") or variant == "tiny":
    model.update(activation="gated-gelu", tie_embeddings=False, dropout_rate=0.0)
  else:
    model.update(activation="relu", tie_embeddings=True, dropout_rate=0.1)

  if variant == "tiny":
    model.update(vocab_size=1024, d_model=64, num_heads=4, head_dim=16, num_layers=2,
                 num_decoder_layers=2, d_ff=128)  # fmt: skip
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128, "targets": 32}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(name="adamw", learning_rate=3e-3, warmup_steps=30, decay="cosine")
    return config

  sizes = {
    "t5_small": dict(d_model=512, num_heads=8, num_layers=6, d_ff=2048),
    "t5_base": dict(d_model=768, num_heads=12, num_layers=12, d_ff=3072),
    "t5_1_1_small": dict(d_model=512, num_heads=6, num_layers=8, d_ff=1024),
    "t5_1_1_base": dict(d_model=768, num_heads=12, num_layers=12, d_ff=2048),
  }
  if variant not in sizes:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, {', '.join(sizes)}")
  model.update(
    vocab_size=32128, head_dim=64, num_decoder_layers=0, remat="minimal", **sizes[variant]
  )
  config.data.vocab_size = 32100  # 32000 pieces + 100 sentinels; the model pads to 32128
  config.data.feature_lengths = {"inputs": 512, "targets": 114}
  config.train.update(steps=524_288, batch_size=128, log_every=100, eval_every=5000,
                      checkpoint_every=5000)  # fmt: skip
  config.optimizer.update(warmup_steps=10_000)
  return config
