"""Every evaluation logs bits per byte next to the loss, and a Mixture's evaluation each
component task's loss and bits per byte (issue 13: vocabulary-independent, per-domain metrics)."""

import json
import math
import os
import random

import pytest

from t5x_lite.data import objectives, preprocessors
from t5x_lite.data.registry import Feature, Mixture, MixtureRegistry, Task, TaskRegistry
from t5x_lite.data.sources import InMemorySource
from t5x_lite.training import loop


def _texts(seed, words):
  rng = random.Random(seed)
  return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(60)]


@pytest.fixture(scope="module")
def two_domain_mixture():
  for name, seed, words in (
    ("bpb_prose", 0, ["the", "cat", "sat", "on", "a", "warm", "mat", "and", "slept"]),
    ("bpb_digits", 1, ["0", "17", "42", "365", "2048", "9", "31"]),
  ):
    if name not in TaskRegistry:
      TaskRegistry.add(
        Task(
          name,
          InMemorySource(_texts(seed, words), validation_fraction=0.25),
          [preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],
          {"targets": Feature(add_eos=True)},
        )
      )
  if "bpb_mix" not in MixtureRegistry:
    MixtureRegistry.add(Mixture("bpb_mix", ["bpb_prose", "bpb_digits"], default_rate=1.0))
  return "bpb_mix"


@pytest.mark.slow
def test_eval_logs_bits_per_byte_overall_and_per_task(tmp_path, make_config, two_domain_mixture):
  # A byte vocabulary: one token per byte (EOS one separator byte), so bpb = loss / ln 2 exactly.
  config = make_config(
    "gpt.py:tiny",
    **{
      "data.task": two_domain_mixture,
      "data.vocab": "byte",
      "model.vocab_size": "384",
      "data.feature_lengths": "{'targets': 64}",
      "model.max_length": "64",
      "train.steps": "4",
      "train.batch_size": "8",
      "train.eval_every": "2",
      "train.checkpoint_every": "4",
      "train.sample_prompt": "",
    },
  )
  result = loop.train_and_evaluate(config, str(tmp_path))
  final = result["eval"]
  assert final["bits_per_byte"] == pytest.approx(final["loss"] / math.log(2), rel=1e-6)
  assert final["bits_per_character"] == pytest.approx(final["bits_per_byte"], rel=1e-6)  # ASCII
  for task in ("bpb_prose", "bpb_digits"):
    assert final[f"{task}/bits_per_byte"] == pytest.approx(
      final[f"{task}/loss"] / math.log(2), rel=1e-6
    )
  # Two different domains: different held-out losses, and the mixture's lies between them.
  low, high = sorted([final["bpb_prose/loss"], final["bpb_digits/loss"]])
  assert low < high and low <= final["loss"] <= high
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  evals = [r for r in logged if "eval/bits_per_byte" in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all("eval/bpb_digits/bits_per_byte" in r for r in evals)
