"""DistilBERT: BERT-base halved in depth (Sanh et al. 2019): no token types, no pooler, no NSP.

Variants (`--config distilbert.py:VARIANT`):
  tiny               1 layer, d_model 64: MLM on the pydoc corpus (half of bert.py:tiny).
  distilbert_base    distilbert-base-uncased's shape: 6 layers, 768 wide, 12 heads, vocab 30522
                     (DistilBertForMaskedLM: 66,985,530 parameters).

Pre-training reads MLM without NSP (`pydoc_roberta_mlm`: FULL-SENTENCES rows, dynamic masks, as
DistilBERT's own recipe follows RoBERTa's). DistilBERT's distillation from a teacher (its soft
targets and hidden states: alpha_ce 5, alpha_mlm 2, alpha_cos 1, T = 2; the student initialised
from every other teacher layer) is `--config.distill.teacher=WORKDIR_OR_HF_DIR`
(training/distill.py, README "Distillation"), e.g. from a `bert.py` or `roberta.py` run.
"""

from t5x_lite.config import base_config


def get_config(variant: str = "tiny"):
  config = base_config()
  model = config.model
  model.family = "encoder"
  model.position = "learned"
  model.activation = "gelu"
  model.norm = "layernorm"
  model.norm_position = "post"
  model.layer_norm_epsilon = 1e-12
  model.use_bias = True
  model.tie_embeddings = True
  model.type_vocab_size = 0  # no token type embeddings
  model.nsp = False  # no pooler, no NSP
  config.data.task = "pydoc_roberta_mlm"
  config.optimizer.update(b2=0.98, eps=1e-6, weight_decay=0.01)

  if variant == "tiny":
    model.update(vocab_size=1024, d_model=64, num_heads=4, num_layers=1, d_ff=256, max_length=128)
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=1e-3, warmup_steps=30)
  elif variant == "distilbert_base":
    model.update(
      vocab_size=30522, d_model=768, num_heads=12, num_layers=6, d_ff=3072, max_length=512,
      dropout_rate=0.1,
    )  # fmt: skip
    config.data.vocab_size = 30522
    config.data.feature_lengths = {"inputs": 512}
    config.train.update(
      steps=100_000, batch_size=4000, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=5e-4, warmup_steps=1000, decay="linear", end_factor=0)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, distilbert_base")
  return config
