"""BERT-style encoder: masked-LM (+ next-sentence prediction) pre-training.

Variants (`--config bert.py:VARIANT`):
  tiny           2 layers, d_model 64, MLM + NSP: pre-trains on the pydoc corpus on a CPU in minutes.
  bert_base      BERT-base (12 layers, 12 heads, 768 wide, 512 positions, vocab 30522) with the MLM
                 and NSP heads (BertForPreTraining: 110,106,428 parameters).
  bert_base_mlm  the same with the MLM head only (BertForMaskedLM: 109,514,298 parameters).
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "encoder"
  model.position = "learned"
  model.activation = "gelu"  # BERT's exact (erf) GELU
  model.norm = "layernorm"
  model.norm_position = "post"  # BERT normalizes after each residual
  model.layer_norm_epsilon = 1e-12
  model.use_bias = True
  model.tie_embeddings = True  # the MLM decoder is the word embedding (+ its own bias)
  model.type_vocab_size = 2
  model.nsp = True
  config.data.task = "pydoc_mlm"
  config.optimizer.update(b2=0.999, weight_decay=0.01)

  if variant == "tiny":
    model.update(vocab_size=1024, d_model=64, num_heads=4, num_layers=2, d_ff=256, max_length=128)
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=2e-3, warmup_steps=30)
  elif variant in ("bert_base", "bert_base_mlm"):
    model.update(
      vocab_size=30522, d_model=768, num_heads=12, num_layers=12, d_ff=3072, max_length=512
    )
    model.update(dropout_rate=0.1, nsp=variant == "bert_base")
    config.data.vocab_size = 30522
    config.data.feature_lengths = {"inputs": 512}
    config.train.update(steps=1_000_000, batch_size=256, log_every=100, eval_every=2000,
                        checkpoint_every=2000)  # fmt: skip
    config.optimizer.update(learning_rate=1e-4, warmup_steps=10_000, decay="linear", end_factor=0.0)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, bert_base, bert_base_mlm")
  return config
