"""Prints the parameter count of every shipped config variant (jax.eval_shape: no allocation).

  python tools/param_counts.py            # a Markdown table
  python tools/param_counts.py --json     # {"gpt.py:gpt2_small": 124439808, ...}

Where a reference implementation publishes a count, the table shows it and whether it matches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite.config import load_config_file  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402

VARIANTS = {
  "gpt.py": (
    "tiny",
    "small",
    "gpt2_small",
    "gpt2_medium",
    "gpt3_125m",
    "gpt3_350m",
    "gpt3_760m",
    "gpt3_1_3b",
    "gpt3_2_7b",
  ),  # fmt: skip
  "bert.py": ("tiny", "bert_base_mlm", "bert_base"),
  "t5.py": ("tiny", "t5_small", "t5_base", "t5_1_1_small", "t5_1_1_base"),
  "roberta.py": ("tiny", "roberta_base"),
  "bloom.py": ("tiny", "bloom_560m"),
  "albert.py": ("tiny", "albert_base"),
  "bart.py": ("tiny", "bart_base"),
  "distilbert.py": ("tiny", "distilbert_base"),
}
# Hugging Face counts of the same architectures (model.num_parameters()).
REFERENCE = {
  "gpt.py:gpt2_small": ("GPT2LMHeadModel gpt2", 124_439_808),
  "gpt.py:gpt2_medium": ("GPT2LMHeadModel gpt2-medium", 354_823_168),
  "bert.py:bert_base_mlm": ("BertForMaskedLM bert-base-uncased", 109_514_298),
  "bert.py:bert_base": ("BertForPreTraining bert-base-uncased", 110_106_428),
  "t5.py:t5_small": ("T5ForConditionalGeneration t5-small", 60_506_624),
  "t5.py:t5_base": ("T5ForConditionalGeneration t5-base", 222_903_552),
  "t5.py:t5_1_1_small": ("T5ForConditionalGeneration google/t5-v1_1-small", 76_961_152),
  "t5.py:t5_1_1_base": ("T5ForConditionalGeneration google/t5-v1_1-base", 247_577_856),
  "roberta.py:roberta_base": ("RobertaForMaskedLM roberta-base", 124_697_433),
  "bloom.py:bloom_560m": ("BloomForCausalLM bigscience/bloom-560m", 559_214_592),
  "albert.py:albert_base": ("AlbertForPreTraining albert-base-v2", 11_813_810),
  "bart.py:bart_base": ("BartForConditionalGeneration facebook/bart-base", 139_420_416),
  "distilbert.py:distilbert_base": ("DistilBertForMaskedLM distilbert-base-uncased", 66_985_530),
}


def decoder_formula(
  layers: int, d_model: int, heads: int, d_head: int, d_ff: int, vocab: int, positions: int
) -> int:
  """Exact count of a GPT-2/GPT-3 decoder (biases, tied embeddings, learned positions).

  Per layer: Q, K, V, O (4·d·a + 3a + d, a = heads·d_head), MLP (2·d·d_ff + d_ff + d), two
  LayerNorms (4d); plus token and position tables and the final LayerNorm. With a = d and
  d_ff = 4d the layer is 12d² + 13d (the paper's 12·L·d² without the small terms).
  """
  attention = heads * d_head
  layer = 4 * d_model * attention + 3 * attention + d_model
  layer += 2 * d_model * d_ff + d_ff + d_model + 4 * d_model
  return layers * layer + (vocab + positions) * d_model + 2 * d_model


def formula_count(spec: str) -> int | None:
  """decoder_formula of a GPT config variant (None for other families)."""
  m = load_config_file(spec).model
  if m.family != "decoder" or m.position != "learned":
    return None
  d_head = m.head_dim or m.d_model // m.num_heads
  return decoder_formula(
    m.num_layers, m.d_model, m.num_heads, d_head, m.d_ff, m.vocab_size, m.max_length
  )


def param_counts() -> dict[str, int]:
  counts = {}
  for path, variants in VARIANTS.items():
    for variant in variants:
      spec = f"{path}:{variant}"
      counts[spec] = build_model(load_config_file(spec).model).num_params()
  return counts


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  args = parser.parse_args()
  counts = param_counts()
  if args.json:
    print(json.dumps(counts, indent=2))
    return
  print("| config | family | parameters | formula | reference | matches |")
  print("|---|---|---:|---:|---|---|")
  for spec, count in counts.items():
    family = load_config_file(spec).model.family
    formula = formula_count(spec)
    name, expected = REFERENCE.get(spec, ("", None))
    match = "" if expected is None else ("yes" if expected == count else f"NO ({expected:,})")
    formula_text = "" if formula is None else f"{formula:,}"
    print(f"| {spec} | {family} | {count:,} | {formula_text} | {name} | {match} |")


if __name__ == "__main__":
  main()
