"""Every new family's tiny variant pre-trains through `t5x-lite train` with a falling loss."""

import json
import os

import pytest

from t5x_lite import cli

pytestmark = pytest.mark.slow

FAMILIES = [
  "bloom.py:tiny",
  "roberta.py:tiny",
  "albert.py:tiny",
  "bart.py:tiny",
  "distilbert.py:tiny",
]


@pytest.mark.parametrize("spec", FAMILIES)
def test_tiny_variant_trains_through_the_cli(capsys, tmp_path, shared_vocab_workdir, spec):
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  code = cli.main(
    [
      "train", "--config", spec, "--workdir", workdir, "--config.train.steps=30",
      "--config.train.log_every=5", "--config.train.eval_every=0",
      "--config.train.checkpoint_every=30", "--config.train.sample_tokens=4",
      "--config.train.batch_size=8", "--config.optimizer.warmup_steps=5",
      "--config.optimizer.learning_rate=3e-3",
    ]
  )  # fmt: skip
  output = capsys.readouterr()
  assert code == 0, output.err[-2000:]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 6
  assert losses[-1] < losses[0] - 0.5, losses  # from log(1024) = 6.93 in 30 steps
