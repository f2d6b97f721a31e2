"""ALBERT: a parameter-light BERT (Lan et al. 2020) with sentence-order prediction.

Variants (`--config albert.py:VARIANT`):
  tiny         2 layers (one shared block), d_model 64, E = 32, MLM + SOP on the pydoc corpus.
  albert_base  albert-base-v2's shape: 12 layers sharing one block, 768 wide, 12 heads, E = 128,
               vocab 30000 (AlbertForPreTraining: 11,813,810 parameters; AlbertModel 11,683,584).

Differences from BERT: a factorised embedding (tokens, positions and token types in E = 128
dimensions, LayerNorm, then a dense E -> H), cross-layer sharing (one block applied L times, its
parameters counted once), GELU (tanh), an MLM head H -> E -> tied vocabulary, and
sentence-order prediction (`pydoc_albert`: two consecutive segments in order, label 0, or
swapped, label 1) through the pooler instead of NSP. LAMB in the paper; AdamW here.
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "encoder"
  model.position = "learned"
  model.activation = "gelu_new"
  model.norm = "layernorm"
  model.norm_position = "post"
  model.layer_norm_epsilon = 1e-12
  model.use_bias = True
  model.tie_embeddings = True
  model.type_vocab_size = 2
  model.nsp = True  # the pooler + 2-way head, trained on sentence order (SOP)
  model.share_layers = True
  model.scan_layers = False  # one shared block: nothing to scan
  config.data.task = "pydoc_albert"
  config.optimizer.update(b2=0.999, weight_decay=0.01)

  if variant == "tiny":
    model.update(
      vocab_size=1024, d_model=64, num_heads=4, num_layers=2, d_ff=256, max_length=128,
      embedding_dim=32,
    )  # fmt: skip
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=1e-3, warmup_steps=30)
  elif variant == "albert_base":
    model.update(
      vocab_size=30000, d_model=768, num_heads=12, num_layers=12, d_ff=3072, max_length=512,
      embedding_dim=128,
    )  # fmt: skip
    config.data.vocab_size = 30000
    config.data.feature_lengths = {"inputs": 512}
    config.train.update(
      steps=125_000, batch_size=4096, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=1.76e-3, warmup_steps=3125, decay="linear", end_factor=0)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, albert_base")
  return config
