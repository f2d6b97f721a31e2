"""Issue 14 defects that show only in the training loop: frozen groups, evaluation coverage."""

import jax
import numpy as np
import pytest

from t5x_lite.training import loop
from t5x_lite.training.optimizers import param_path
from t5x_lite.training.setup import RunSetup

QUICK = {
  "train.steps": "2",
  "train.log_every": "1",
  "train.eval_every": "0",
  "train.eval_steps": "1",
  "train.sample_prompt": "",
  "train.batch_size": "8",
}


@pytest.mark.slow
def test_loop_with_frozen_groups_keeps_them_bit_identical(
  tmp_path, shared_vocab_workdir, make_config
):
  """The README's `--config.train.frozen='("encoder/.*",)'` form once crashed in the sharding of
  the optimizer state (an IndexError); the loop now trains and the frozen leaves never move."""
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  config = make_config(
    "gpt.py:tiny",
    **{**QUICK, "train.frozen": '("decoder/layers/.*",)', "optimizer.warmup_steps": "0"},
  )
  initial = jax.device_get(RunSetup.create(config).init_state().params)
  final = jax.device_get(loop.train_and_evaluate(config, workdir)["params"])
  frozen = moved = 0
  for (path, before), after in zip(
    jax.tree_util.tree_flatten_with_path(initial)[0], jax.tree.leaves(final), strict=True
  ):
    if param_path(path).startswith("decoder/layers/"):
      np.testing.assert_array_equal(after, before)
      frozen += 1
    elif not np.array_equal(after, before):
      moved += 1
  assert frozen > 0 and moved > 0
