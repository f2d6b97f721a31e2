"""RoBERTa: BERT's encoder pre-trained with dynamic MLM only (Liu et al. 2019).

Variants (`--config roberta.py:VARIANT`):
  tiny          2 layers, d_model 64: pre-trains on the bundled pydoc corpus on a CPU.
  roberta_base  roberta-base (12 layers, 12 heads, 768 wide, vocab 50265, 514 positions):
                RobertaForMaskedLM, 124,697,433 parameters (RobertaModel with its pooler:
                124,645,632).

Differences from BERT: no NSP (and no pooler), FULL-SENTENCES inputs that may cross document
boundaries (`pydoc_roberta_mlm`), a new mask each epoch (the masks are keyed by the example's
position in the repeated stream), one token type, LayerNorm epsilon 1e-5, and learned positions
offset by padding_idx + 1 (HF: position ids start at pad + 1): 2 with RoBERTa's byte-level BPE
(<pad> = 1), 1 with t5x_lite's vocabularies (pad = 0). Adam b2 0.98, eps 1e-6, wd 0.01.
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
  model.layer_norm_epsilon = 1e-5
  model.use_bias = True
  model.tie_embeddings = True
  model.type_vocab_size = 1
  model.nsp = False
  config.data.task = "pydoc_roberta_mlm"
  config.optimizer.update(b2=0.98, eps=1e-6, weight_decay=0.01)

  if variant == "tiny":
    model.update(
      vocab_size=1024, d_model=64, num_heads=4, num_layers=2, d_ff=256, max_length=129,
      position_offset=1,
    )  # fmt: skip
    config.data.vocab_size = 1024
    config.data.feature_lengths = {"inputs": 128}
    config.train.update(
      steps=300, batch_size=16, log_every=20, eval_every=100, checkpoint_every=100
    )
    config.optimizer.update(learning_rate=1e-3, warmup_steps=30)
  elif variant == "roberta_base":
    model.update(
      vocab_size=50265, d_model=768, num_heads=12, num_layers=12, d_ff=3072, max_length=514,
      position_offset=2, dropout_rate=0.1,
    )  # fmt: skip
    config.data.vocab_size = 32000
    config.data.feature_lengths = {"inputs": 512}
    config.train.update(
      steps=500_000, batch_size=8192, log_every=100, eval_every=2000, checkpoint_every=2000
    )
    config.optimizer.update(learning_rate=6e-4, warmup_steps=24_000, decay="linear", end_factor=0)
  else:
    raise ValueError(f"unknown variant {variant!r}: expected tiny, roberta_base")
  return config
