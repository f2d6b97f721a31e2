"""Evaluation and generation for text-to-text: a tiny T5 run on a JSONL task (configurable
fields, task prefix), `eval` with exact match / ROUGE-L, `generate` for the encoder-decoder
(greedy and beams, JSONL out); the decoder's prompt -> completion layout; token classification."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite import config as config_lib
from t5x_lite.data import preprocessors, vocabularies
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY
from t5x_lite.data.tasks import finetune
from t5x_lite.evaluation import evaluator
from t5x_lite.evaluation.checkpoint import evaluate_checkpoint
from t5x_lite.models import build_model
from t5x_lite.training import loop

pytestmark = pytest.mark.slow  # trains a tiny T5 in a module fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "test_t2t_copy"
WORDS = "the value of a list is in to and for with by this that can be".split()


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory, shared_vocab_workdir):
  root = tmp_path_factory.mktemp("t2t")
  rng = np.random.default_rng(0)
  for split, n in (("train", 64), ("validation", 16)):
    with open(root / f"{split}.jsonl", "w") as f:
      for _ in range(n):
        words = " ".join(rng.choice(WORDS, 4))
        f.write(json.dumps({"source": words, "summary": words.split()[0]}) + "\n")
  finetune.text_to_text_task(
    TASK, str(root / "train.jsonl"), str(root / "validation.jsonl"), input_field="source",
    target_field="summary", prefix="summarize: ",
  )  # fmt: skip
  workdir = shared_vocab_workdir(str(root / "run"))
  overrides = {
    "data.task": TASK,
    "data.vocab_path": vocabularies.pretrained_vocab_path(workdir),
    "data.feature_lengths": "{'inputs': 16, 'targets': 8}",
    "data.pack": "false",
    "model.d_model": "32",
    "model.d_ff": "64",
    "model.num_heads": "2",
    "train.steps": "2",
    "train.batch_size": "8",
    "train.eval_steps": "2",
    "train.eval_every": "0",
    "train.checkpoint_every": "2",
    "train.sample_prompt": "",
    "mesh.data": "-1",
  }
  config = config_lib.get_config("t5.py:tiny", list(overrides.items()))
  result = loop.train_and_evaluate(config, workdir)
  return workdir, result


def test_eval_of_text_to_text_reports_task_metrics(t5_run):
  workdir, result = t5_run
  first = evaluate_checkpoint(workdir, write=False)
  assert first == evaluate_checkpoint(workdir, write=False)
  assert first["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-6)
  assert first["task"] == TASK and first["step"] == 2
  assert first["num_examples"] == 16  # 2 batches of 8 unpacked examples
  assert 0.0 <= first["task/exact_match"] <= 1.0  # fractions, as `accuracy`
  assert 0.0 <= first["task/rouge_l"] <= 1.0
  # The training loop's evaluation reports the same task metrics.
  for key in ("task/exact_match", "task/rouge_l", "num_examples"):
    assert result["eval"][key] == pytest.approx(first[key]), key


def test_generate_cli_for_the_encoder_decoder(t5_run, tmp_path, capsys):
  workdir, _ = t5_run
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("summarize: the value of a list\nsummarize: this\n")
  outputs = {}
  for beams in ("1", "3"):
    out = tmp_path / f"out{beams}.jsonl"
    argv = ["generate", "--workdir", workdir, "--prompt-file", str(prompts), "--output", str(out),
            "--max-new-tokens", "5", "--num-beams", beams]  # fmt: skip
    assert cli.main(argv) == 0
    outputs[beams] = [json.loads(line) for line in open(out)]
    assert [o["prompt"] for o in outputs[beams]] == [
      "summarize: the value of a list",
      "summarize: this",
    ]
  import t5x_lite

  model = t5x_lite.load(workdir)
  assert [o["output"] for o in outputs["1"]] == model.generate(
    ["summarize: the value of a list", "summarize: this"], max_new_tokens=5
  )
  scores = model.score(["summarize: this"], ["this"])
  assert scores.shape == (1,) and scores[0] < 0
  capsys.readouterr()
  # Printed, a T5 output is not glued to its prompt (it is no continuation of it).
  argv = ["generate", "--workdir", workdir, "--prompt", "summarize: this", "--max-new-tokens", "5"]
  assert cli.main(argv) == 0
  (expected,) = model.generate(["summarize: this"], max_new_tokens=5)
  assert capsys.readouterr().out.splitlines() == ["summarize: this", f"  -> {expected}"]
  assert cli.main(["generate", "--workdir", workdir, "--prompt-file", str(tmp_path / "x")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert cli.main(["generate", "--workdir", workdir, "--prompt", ""]) == 2
  assert "empty" in capsys.readouterr().err


def test_decoder_prompt_completion_pairs():
  """Unpacked prefix-LM rows: the prompt is the weight-0 part, the target the weight-1 part."""
  config = config_lib.get_config("gpt.py:tiny")
  with config.unlocked():
    config.model.update(d_model=32, num_heads=2, d_ff=64, vocab_size=64, max_length=32)
  model = build_model(config_lib.model_config(config))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(1, {"decoder": 16})))

  class Vocab:
    eos_id = 1

    def decode(self, ids):
      return " ".join(map(str, ids))

  targets = np.zeros((2, 12), np.int32)
  weights = np.zeros((2, 12), np.float32)
  targets[0, :7] = [5, 6, 7, 8, 9, 10, 1]  # prompt 5 6 7, completion 8 9 10 EOS
  weights[0, 3:7] = 1
  targets[1, :4] = [11, 12, 13, 1]
  weights[1, 2:4] = 1
  batch = {"decoder_target_tokens": targets, "decoder_loss_weights": weights}
  truth, predicted = evaluator._generation_pairs(model, params, batch, Vocab(), max_new_tokens=4)
  assert truth == ["8 9 10", "13"]
  assert len(predicted) == 2
  from t5x_lite import decoding

  expected = decoding.generate_ids(model, params, [[5, 6, 7], [11, 12]], max_new_tokens=4)
  assert predicted[0] == Vocab().decode(decoding.strip_after_eos(expected[0], 1))


def test_token_classification_head_and_converter():
  class Vocab:
    cls_id, sep_id, eos_id, unk_id = 5, 6, 1, 2

    def encode(self, word):
      return [10 + len(word)] * (2 if len(word) > 3 else 1)  # long words: two pieces

  examples = {
    "tokens": [["John", "is", "in", "Paris"], ["ok"]],
    "tags": [["PER", "O", "O", "LOC"], ["O"]],
    KEY: np.arange(2, dtype=np.uint64),
  }
  context = Context(vocabulary=Vocab(), feature_lengths={"inputs": 16})
  labels = ("O", "PER", "LOC")
  out = preprocessors.token_classification(examples, context, labels=labels)
  # [CLS] Jo hn is in Par is [SEP]: tags on the first piece of each word only.
  assert out["inputs"].rows()[0].tolist() == [5, 14, 14, 12, 12, 15, 15, 6]
  assert out["tag_ids"].rows()[0].tolist() == [0, 1, 0, 0, 0, 2, 0, 0]
  assert out["tag_weights"].rows()[0].tolist() == [0, 1, 0, 1, 1, 1, 0, 0]

  config = config_lib.get_config("bert.py:tiny")
  with config.unlocked():
    config.model.update(d_model=32, num_heads=2, d_ff=64, vocab_size=64, max_length=16)
    config.model.update(head="token_classification", num_labels=3)
  model = build_model(config_lib.model_config(config))
  batch = model.feature_converter(pack=True).convert(out, {"inputs": 16})
  assert batch["encoder_input_tokens"].shape == (1, 16)  # both examples packed in one row
  assert batch["classification_loss_weights"].sum() == 5  # one per word
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(1, {"encoder": 16})))
  loss, metrics = model.loss(params, batch, None, deterministic=True)
  assert float(metrics["loss"][1]) == 5
  assert abs(float(loss) - np.log(3)) < 0.5  # about uniform over 3 tags at init


def test_eval_cli_prints_json_and_rejects_unknown_task(t5_run, capsys):
  workdir, _ = t5_run
  capsys.readouterr()
  assert cli.main(["eval", "--workdir", workdir, "--num-batches", "1"]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["num_examples"] == 8 and "task/rouge_l" in printed and printed["step"] == 2
  assert cli.main(["eval", "--workdir", workdir, "--task", "no_such_task"]) == 2
  assert "no Task or Mixture named 'no_such_task'" in capsys.readouterr().err


def test_score_reads_text_exactly_as_training_does(t5_run):
  """A validation example through training's path (task preprocessors -> converter ->
  model.score) and through t5x_lite.load(...).score(input, target): the same log-likelihood."""
  import t5x_lite
  from t5x_lite.data import pipeline

  workdir, _ = t5_run
  loaded = t5x_lite.load(workdir)
  task = pipeline.get_task(loaded.config, TASK)
  lengths = dict(loaded.config.data.feature_lengths)
  converter = loaded.model.feature_converter(pack=False)
  stream = pipeline.TaskStream(task, "validation", loaded.vocabulary, converter, lengths, seed=0)
  history = stream.examples(0, stages=True)
  records = [json.loads(t) for t in history[0][1]["text"][:4]]
  batch = converter.convert(history[-1][1], lengths)
  training = np.asarray(jax.jit(loaded.model.score)(loaded.params, batch))[:4]
  inference = loaded.score(
    ["summarize: " + r["source"] for r in records], [r["summary"] for r in records]
  )
  np.testing.assert_allclose(inference, training, rtol=1e-5)
  assert (training < 0).all()
