"""docs/tasks.md's example registry file trains for a few steps, in a subprocess like a user."""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # trains from the example registry file in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_example_registry_file_trains(tmp_path):
  from pydoc_data import topics

  corpus = tmp_path / "corpus" / "part"
  corpus.mkdir(parents=True)
  for i, (name, text) in enumerate(sorted(topics.topics.items())[:40]):
    (corpus / f"{i}_{name}.txt").write_text(text)
  workdir = tmp_path / "run"
  command = [
    sys.executable, "-m", "t5x_lite.cli", "train",
    "--config", "gpt.py:tiny",
    "--workdir", str(workdir),
    "--config.data.task=my_mixture",
    "--config.data.task_modules=docs/examples/my_tasks.py",
    "--config.train.steps=3", "--config.train.log_every=1", "--config.train.eval_every=0",
    "--config.train.eval_steps=1", "--config.train.batch_size=8", "--config.train.sample_prompt=",
  ]  # fmt: skip
  env = dict(os.environ, MY_CORPUS_DIR=str(tmp_path / "corpus"), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device is enough
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
  assert all(math.isfinite(x) and 5.0 < x < 8.0 for x in losses)  # near ln(1024) = 6.93 at init
  vocab_files = os.listdir(workdir / "vocab")
  assert len(vocab_files) == 1 and vocab_files[0].startswith("spm_1024_")
