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


def _classification_files(tmp_path, n_validation):
  import json

  from t5x_lite.data.tasks import finetune

  paths = {}
  for split, n in (("train", 8), ("validation", n_validation)):
    paths[split] = str(tmp_path / f"{split}.jsonl")
    with open(paths[split], "w") as f:
      for i in range(n):
        f.write(json.dumps({"text": f"example number {i} " * (1 + i % 3), "label": str(i % 3)}) + "\n")
  name = f"test_eval_once_{n_validation}"
  finetune.classification_task(name, paths["train"], paths["validation"], labels=["0", "1", "2"])
  return name


@pytest.mark.parametrize("n_validation", [40, 5])
def test_validation_pass_covers_each_example_exactly_once(tmp_path, make_config, n_validation):
  """A 40-line validation file was scored as 64 examples (24 twice) from a stream that repeats
  forever; the evaluation pass now yields each example once, then ends."""
  from t5x_lite.data import pipeline
  from t5x_lite.data.sharded_stream import host_validation_batches
  from t5x_lite.models import build_model

  task = _classification_files(tmp_path, n_validation)
  config = make_config(
    "bert.py:tiny",
    **{
      "data.task": task,
      "data.vocab": "byte",
      "model.head": "classification",
      "model.num_labels": "3",
      "data.feature_lengths": "{'inputs': 64}",
      "model.max_length": "64",
      "train.batch_size": "16",
      "model.vocab_size": "512",
    },
  )
  vocabulary = pipeline.get_vocabulary(config, str(tmp_path))
  converter = build_model(config.model).feature_converter(config.data.pack)
  batches = list(host_validation_batches(config, vocabulary, converter, num_shards=2))
  weights = np.concatenate([b["classification_loss_weights"].reshape(-1) for b in batches])
  labels = np.concatenate([b["classification_labels"].reshape(-1) for b in batches])
  assert all(b["classification_labels"].shape[0] == 16 for b in batches)
  assert weights.sum() == n_validation
  assert sorted(labels[weights > 0].tolist()) == sorted(i % 3 for i in range(n_validation))
