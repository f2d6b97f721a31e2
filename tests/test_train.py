"""End to end: the tiny GPT pre-trains on the default corpus, learns context, resumes exactly."""

import json
import os

import jax
import numpy as np
import pytest

from t5x_lite.data.sharded_stream import HostBatchStream
from t5x_lite.models import build_model
from t5x_lite.training import loop

pytestmark = pytest.mark.slow  # 200 training steps in a module fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Quick settings of the tiny GPT runs below (make_config overrides).
FAST = {
  "train.log_every": "10",
  "train.eval_steps": "4",
  "train.sample_prompt": "",
  "train.batch_size": "16",
  "mesh.data": "-1",
}


def read_metrics(workdir, prefix="train/"):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if any(k.startswith(prefix) for k in r)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_vocab_workdir, make_config):
  """200 steps of the tiny GPT on pydoc (shared by the tests below)."""
  workdir = str(tmp_path_factory.mktemp("gpt_tiny"))
  shared_vocab_workdir(workdir)
  config = make_config(
    "gpt.py:tiny",
    **{
      **FAST,
      "train.steps": "200",
      "train.eval_every": "100",
      "train.checkpoint_every": "100",
      "train.sample_prompt": "The",
    },
  )
  result = loop.train_and_evaluate(config, workdir)
  return config, workdir, result


def test_held_out_loss_beats_unigram_entropy(trained):
  """Below the unigram entropy of the training tokens = it uses context, not just frequencies."""
  config, workdir, result = trained
  from t5x_lite.data import pipeline

  vocabulary = pipeline.get_vocabulary(config, workdir)
  model = build_model(config.model)
  stream = HostBatchStream(
    config, vocabulary, model.feature_converter(True), split="train", num_shards=1
  )
  counts = np.zeros(config.model.vocab_size)
  for _ in range(100):
    batch = next(stream)
    targets = batch["decoder_target_tokens"][batch["decoder_loss_weights"] > 0]
    counts += np.bincount(targets, minlength=config.model.vocab_size)
  p = counts[counts > 0] / counts.sum()
  unigram_entropy = float(-(p * np.log(p)).sum())
  eval_loss = result["eval"]["loss"]
  assert 3.0 < unigram_entropy < 7.0  # a 1024-piece vocabulary on English prose
  assert eval_loss < unigram_entropy - 0.3, (eval_loss, unigram_entropy)
  losses = [r["train/loss"] for r in read_metrics(workdir)]
  assert losses[-1] < losses[0] - 1.0  # and the training loss fell


def test_run_writes_metrics_checkpoints_and_a_sample(trained):
  _, workdir, result = trained
  rows = read_metrics(workdir)
  assert [r["step"] for r in rows] == list(range(10, 201, 10))
  for key in (
    "train/loss",
    "train/accuracy",
    "train/learning_rate",
    "train/grad_norm",
    "train/tokens_per_second",
  ):
    assert np.isfinite(rows[-1][key]), key
  evals = read_metrics(workdir, "eval/")
  assert [r["step"] for r in evals] == [100, 200]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["100", "200"]
  assert isinstance(result["sample"], str) and result["sample"].strip()


def test_generate_is_deterministic_and_greedy_matches_no_cache(trained):
  config, workdir, _ = trained
  import t5x_lite

  first = t5x_lite.load(workdir).generate(["The", "A class"], max_new_tokens=12)
  again = t5x_lite.load(workdir).generate(["The", "A class"], max_new_tokens=12)
  assert first == again and all(isinstance(t, str) for t in first)


def test_resume_is_bit_identical(tmp_path, shared_vocab_workdir, make_config):
  """8 steps straight == 4 steps, stop, resume to 8: same loss at every step, same params.

  decay_steps is fixed so that both invocations see the same schedule (by default the decay
  runs to train.steps, which differs between a 4-step and an 8-step invocation).
  """
  common = {
    "optimizer.decay_steps": "6",
    "train.log_every": "1",
    "train.checkpoint_every": "4",
    "train.eval_every": "0",
    "train.eval_steps": "1",
    "optimizer.warmup_steps": "2",
    "model.dropout_rate": "0.1",
  }
  straight = str(tmp_path / "straight")
  shared_vocab_workdir(straight)
  result_straight = loop.train_and_evaluate(
    make_config("gpt.py:tiny", **{**FAST, **common, "train.steps": "8"}), straight
  )

  resumed = str(tmp_path / "resumed")
  shared_vocab_workdir(resumed)
  loop.train_and_evaluate(
    make_config("gpt.py:tiny", **{**FAST, **common, "train.steps": "4"}), resumed
  )
  result_resumed = loop.train_and_evaluate(
    make_config("gpt.py:tiny", **{**FAST, **common, "train.steps": "8"}), resumed
  )

  losses_straight = [r["train/loss"] for r in read_metrics(straight)]
  losses_resumed = [r["train/loss"] for r in read_metrics(resumed)]
  assert len(losses_straight) == 8 and losses_resumed == losses_straight
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(result_straight["params"]),
    jax.device_get(result_resumed["params"]),
  )


def test_generated_text_keeps_the_space_after_the_prompt(trained):
  """SentencePiece marks a word's leading space on its first piece: decoding the new ids alone
  would glue 'The class' + 'is' into 'The classis'."""
  config, workdir, _ = trained
  from t5x_lite import decoding
  from t5x_lite.data import pipeline

  vocabulary = pipeline.get_vocabulary(config, workdir)
  prompt, new = vocabulary.encode("The class"), vocabulary.encode("is here")
  assert decoding._continuation(vocabulary, prompt, new) == " is here"
