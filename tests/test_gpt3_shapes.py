"""GPT-3 shapes (Brown et al. 2020, Table 2.1): counts equal the closed-form formula, and
tools/param_counts.py prints them."""

import os
import subprocess
import sys

import pytest

from t5x_lite.config import load_config_file
from t5x_lite.models import build_model

# name: (layers, d_model, heads, d_head, batch in sequences of 2048, learning rate), the paper's
# table (batch 0.5M / 1M tokens).
TABLE = {
  "gpt3_125m": (12, 768, 12, 64, 256, 6.0e-4),
  "gpt3_350m": (24, 1024, 16, 64, 256, 3.0e-4),
  "gpt3_760m": (24, 1536, 16, 96, 256, 2.5e-4),
  "gpt3_1_3b": (24, 2048, 24, 128, 512, 2.0e-4),
  "gpt3_2_7b": (32, 2560, 32, 80, 512, 1.6e-4),
}


def _formula(layers, d, heads, d_head, vocab=50257, positions=2048):
  a = heads * d_head  # attention width (3072 for XL, d elsewhere)
  per_layer = 4 * d * a + 3 * a + d + 8 * d * d + 4 * d + d + 4 * d
  return layers * per_layer + (vocab + positions) * d + 2 * d


@pytest.mark.parametrize("variant", sorted(TABLE))
def test_gpt3_variant_matches_table_and_formula(variant):
  layers, d, heads, d_head, batch, lr = TABLE[variant]
  config = load_config_file(f"gpt.py:{variant}")
  m = config.model
  assert (m.num_layers, m.d_model, m.num_heads, m.head_dim, m.d_ff) == (
    layers,
    d,
    heads,
    d_head,
    4 * d,
  )
  assert (m.vocab_size, m.max_length, config.data.feature_lengths["targets"]) == (50257, 2048, 2048)
  assert config.train.batch_size == batch and config.optimizer.learning_rate == lr
  assert config.optimizer.b2 == 0.95 and config.optimizer.weight_decay == 0.1
  count = build_model(m).num_params()  # jax.eval_shape: nothing allocated
  assert count == _formula(layers, d, heads, d_head)
  if heads * d_head == d:  # the paper's approximation 12·L·d² is within 10% (embeddings)
    assert abs(count - 12 * layers * d * d) / count < 0.35


def test_gpt3_125m_equals_hf_gpt2_of_that_shape():
  """GPT-3 Small is GPT-2 small with 2048 positions: HF GPT2LMHeadModel counts the same."""
  count = build_model(load_config_file("gpt.py:gpt3_125m").model).num_params()
  assert count == 124_439_808 + 1024 * 768  # GPT-2 small + 1024 more learned positions


def test_param_counts_tool_prints_gpt3():
  tools = os.path.join(os.path.dirname(__file__), "..", "tools", "param_counts.py")
  out = subprocess.run(
    [sys.executable, tools, "--json"], capture_output=True, text=True, check=True,
    env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
  ).stdout  # fmt: skip
  assert '"gpt.py:gpt3_2_7b": 2651553280' in out and '"gpt.py:gpt3_1_3b": 1517123584' in out
