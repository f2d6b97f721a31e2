"""GPT-style decoder (GPT-2 architecture): causal LM pre-training.

Variants (`--config gpt.py:VARIANT`):
  tiny        2 layers, d_model 64: pre-trains on the bundled pydoc corpus on a CPU in minutes.
  small       4 layers, d_model 256: a bigger CPU smoke test.
  gpt2_small  GPT-2 124M (12 layers, 12 heads, 768 wide, 1024 positions, vocab 50257).
  gpt2_medium GPT-2 350M (24 layers, 16 heads, 1024 wide).
  gpt3_125m   GPT-3 Small (Brown et al. 2020, Table 2.1): 12 layers, 768 wide, 12 heads.
  gpt3_350m   GPT-3 Medium: 24 layers, 1024 wide, 16 heads.
  gpt3_760m   GPT-3 Large: 24 layers, 1536 wide, 16 heads.
  gpt3_1_3b   GPT-3 XL: 24 layers, 2048 wide, 24 heads.
  gpt3_2_7b   GPT-3 2.7B: 32 layers, 2560 wide, 32 heads.

The GPT-2 and GPT-3 variants recompute the non-matmul activations in the backward pass
(`model.remat='minimal'`): less memory, and a step no slower (gpt2_small 4 × 256 on 2 cores,
against the step with every activation kept: Xeon f32 1.29×, EPYC f32 1.00×, EPYC bf16 1.12×;
docs/benchmarks.md).

GPT-3 shapes: d_ff = 4·d_model, 2048 positions, the GPT-2 vocabulary (50257), pre-LN, tied
embeddings, and the paper's batch (tokens / 2048 sequences) and peak learning rate (Adam
b2 0.95, 375M-token warm-up, cosine to 10%, weight decay 0.1, clip 1.0). The paper alternates
dense and locally banded sparse attention layers; these variants use dense attention in every
layer (the sparse pattern is not implemented), which does not change the parameter count.
"""

from t5x_lite.config import base_config

# GPT-3 (Brown et al. 2020, Table 2.1): layers, d_model, heads, d_head, batch in tokens (0.5M,
# 1M as 2^19, 2^20), learning rate. The table's XL row has 24 heads of 128 (attention width 3072
# != d_model 2048); taken literally, it makes XL 1.52B parameters, not the 1.3B of its name.
GPT3 = {
  "gpt3_125m": (12, 768, 12, 64, 524_288, 6.0e-4),
  "gpt3_350m": (24, 1024, 16, 64, 524_288, 3.0e-4),
  "gpt3_760m": (24, 1536, 16, 96, 524_288, 2.5e-4),
  "gpt3_1_3b": (24, 2048, 24, 128, 1_048_576, 2.0e-4),
  "gpt3_2_7b": (32, 2560, 32, 80, 1_048_576, 1.6e-4),
}


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
    model.update(vocab_size=50257, max_length=1024, dropout_rate=0.0, remat="minimal")
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"targets": 1024}
    config.train.update(
      steps=100_000, batch_size=256, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=6e-4, warmup_steps=2000, b2=0.95, weight_decay=0.1)
  elif variant in GPT3:
    layers, d_model, heads, d_head, batch_tokens, learning_rate = GPT3[variant]
    model.update(
      d_model=d_model, num_heads=heads, head_dim=d_head, num_layers=layers, d_ff=4 * d_model, vocab_size=50257,
      max_length=2048, dropout_rate=0.0, remat="minimal",
    )  # fmt: skip
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"targets": 2048}
    batch_size = batch_tokens // 2048
    # The paper: 375M tokens of linear warm-up, cosine decay to 10% over 260B tokens.
    config.train.update(
      steps=300_000_000_000 // batch_tokens, batch_size=batch_size, log_every=100,
      eval_every=2000, checkpoint_every=2000,
    )  # fmt: skip
    config.optimizer.update(
      learning_rate=learning_rate, warmup_steps=375_000_000 // batch_tokens, b1=0.9, b2=0.95,
      eps=1e-8, weight_decay=0.1, grad_clip=1.0, decay="cosine",
      decay_steps=260_000_000_000 // batch_tokens, end_factor=0.1,
    )  # fmt: skip
  else:
    raise ValueError(
      f"unknown variant {variant!r}: expected tiny, small, gpt2_small, gpt2_medium, "
      f"{', '.join(GPT3)}"
    )
  return config
