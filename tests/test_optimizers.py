"""Learning-rate schedules give exact values at warmup start/end and decay end; decay mask."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite import config as config_lib
from t5x_lite.training import optimizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def schedule_for(decay, steps=1000, warmup=100, lr=1e-3, end_factor=0.1):
  config = config_lib.get_config(
    "gpt.py:tiny",
    [
      ("train.steps", str(steps)),
      ("optimizer.warmup_steps", str(warmup)),
      ("optimizer.learning_rate", str(lr)),
      ("optimizer.decay", decay),
      ("optimizer.end_factor", str(end_factor)),
    ],
  )
  return optimizers.learning_rate_schedule(config)


@pytest.mark.parametrize("decay", ["cosine", "linear", "rsqrt", "constant"])
def test_warmup_is_linear_from_zero_to_peak(decay):
  schedule = schedule_for(decay)
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(5e-4, rel=1e-6)
  assert float(schedule(100)) == pytest.approx(1e-3, rel=1e-6)


def test_decay_end_values():
  assert float(schedule_for("cosine")(1000)) == pytest.approx(1e-4, rel=1e-5)
  assert float(schedule_for("cosine")(550)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-5)
  assert float(schedule_for("linear")(1000)) == pytest.approx(1e-4, rel=1e-5)
  assert float(schedule_for("linear")(550)) == pytest.approx(5.5e-4, rel=1e-5)
  assert float(schedule_for("constant")(1000)) == pytest.approx(1e-3, rel=1e-6)
  # rsqrt: peak * sqrt(warmup / step) after warmup (T5), floored at end_factor * peak.
  assert float(schedule_for("rsqrt", end_factor=0.0)(400)) == pytest.approx(
    1e-3 * np.sqrt(100 / 400), rel=1e-5
  )
  assert float(schedule_for("rsqrt", end_factor=0.4)(10_000)) == pytest.approx(4e-4, rel=1e-5)


def test_weight_decay_skips_biases_norms_and_vectors():
  params = {
    "block": {
      "attention": {
        "query": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
        "pre_attention_layer_norm": {"scale": jnp.ones((2, 4))},
      },
      "mlp": {"wi": {"kernel": jnp.ones((2, 4, 8))}},
    },
    "token_embedder": {"embedding": jnp.ones((16, 4))},
  }
  mask = optimizers.decay_mask(params)
  assert mask["block"]["attention"]["query"] == {"kernel": True, "bias": False}
  assert mask["block"]["attention"]["pre_attention_layer_norm"]["scale"] is False
  assert mask["block"]["mlp"]["wi"]["kernel"] is True
  assert mask["token_embedder"]["embedding"] is True
