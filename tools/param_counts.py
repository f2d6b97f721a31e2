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
  "gpt.py": ("tiny", "small", "gpt2_small", "gpt2_medium"),
  "bert.py": ("tiny", "bert_base_mlm", "bert_base"),
  "t5.py": ("tiny", "t5_small", "t5_base", "t5_1_1_small", "t5_1_1_base"),
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
}


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
  print("| config | family | parameters | reference | matches |")
  print("|---|---|---:|---|---|")
  for spec, count in counts.items():
    family = load_config_file(spec).model.family
    name, expected = REFERENCE.get(spec, ("", None))
    match = "" if expected is None else ("yes" if expected == count else f"NO ({expected:,})")
    print(f"| {spec} | {family} | {count:,} | {name} | {match} |")


if __name__ == "__main__":
  main()
