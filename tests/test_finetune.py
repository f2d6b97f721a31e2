"""Fine-tuning: a tiny BERT pre-trained on pydoc_mlm, then fine-tuned on a synthetic JSONL
classification task through the registry; init_from by name, frozen params, GPT's L2 + λ·L1,
evaluation (deterministic, equal to the loop's), the inference API and CLI, and bad inputs."""

import json
import logging
import math
import os
import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import t5x_lite
from t5x_lite import cli
from t5x_lite import config as config_lib
from t5x_lite.data import DataError, pipeline, preprocessors, sources, task_metrics, vocabularies
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.ragged import KEY
from t5x_lite.data.tasks import finetune
from t5x_lite.evaluation.checkpoint import evaluate_checkpoint
from t5x_lite.models import build_model
from t5x_lite.training import init_from, loop, optimizers

pytestmark = pytest.mark.slow  # pre-trains and fine-tunes a BERT (module fixture, minutes)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "test_synthetic_contains_a"
STEPS = "100"  # fine-tuning budget, the same for the pre-trained and the from-scratch run
# "Does the sentence contain a word from set A?": A words are rare in the filler vocabulary.
SET_A = ["class", "function", "module", "method", "exception"]
FILLER = (
  "the value of a list is in to and for with by this that can be which are or an from as it "
  "not on when if its has"
).split()


# The tiny BERT of these tests (make_config overrides; plus the pre-trained vocabulary).
BERT = {
  "train.sample_prompt": "",
  "train.eval_every": "0",
  "train.log_every": "50",
  "train.batch_size": "16",
  "data.feature_lengths": "{'inputs': 32}",
  "model.max_length": "32",
  "mesh.data": "-1",
}


def _sentences(n, seed):
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 10))]
    positive = rng.random() < 0.5
    if positive:
      words[rng.randrange(len(words))] = rng.choice(SET_A)
    rows.append({"sentence": " ".join(words), "answer": "yes" if positive else "no"})
  return rows


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
  directory = tmp_path_factory.mktemp("synthetic")
  paths = {}
  for split, n, seed in (("train", 512, 0), ("validation", 128, 1)):
    paths[split] = str(directory / f"{split}.jsonl")
    with open(paths[split], "w") as f:
      for row in _sentences(n, seed):
        f.write(json.dumps(row) + "\n")
  # Configurable field names: 'sentence' and 'answer' instead of 'text' and 'label'.
  finetune.classification_task(
    TASK, paths["train"], paths["validation"], labels=["no", "yes"],
    text_field="sentence", label_field="answer",
  )  # fmt: skip
  return paths


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_vocab_workdir, data_files, make_config):
  """A short pre-training run on pydoc_mlm (only its checkpoint is used: init_from is tested,
  not what pre-training buys), then STEPS fine-tuning steps from it and from scratch."""
  root = tmp_path_factory.mktemp("finetune")
  pre = shared_vocab_workdir(str(root / "pretrained"))
  pretraining = {"train.steps": "20", "train.checkpoint_every": "20", "train.batch_size": "8"}
  vocab = {"data.vocab_path": vocabularies.pretrained_vocab_path(pre)}
  config = make_config("bert.py:tiny", **{**BERT, **vocab, **pretraining})
  pretrain = loop.train_and_evaluate(config, pre)
  finetune_overrides = {
    "data.task": TASK,
    "data.pack": "false",
    "model.head": "classification",
    "model.num_labels": "2",
    "train.steps": STEPS,
    "train.checkpoint_every": STEPS,
    "train.eval_steps": "8",  # 128 validation examples
    "optimizer.learning_rate": "1e-3",
    "optimizer.warmup_steps": "10",
  }
  results = {"pretrain": pretrain, "pre_workdir": pre}
  for name, source in (("finetuned", pre), ("scratch", "")):
    workdir = str(root / name)
    config = make_config(
      "bert.py:tiny", **{**BERT, **vocab, **finetune_overrides, "train.init_from": source}
    )
    handler = _Records()
    logging.getLogger().addHandler(handler)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
      results[name] = loop.train_and_evaluate(config, workdir)
    finally:
      logging.getLogger().removeHandler(handler)
      logging.getLogger().setLevel(previous)
    results[name]["workdir"] = workdir
    results[name]["log"] = handler.messages
  return results


def test_classifier_fine_tuning_learns_the_task(runs):
  """The classification path learns the lexical task (>= 90% held-out accuracy in 100 steps),
  and the run started from the pre-trained checkpoint trains and evaluates through the same path.

  Measured after BERT's NSP became `create_instances_from_document` (issue 14), with 200 tiny
  pre-training steps (the suite now runs 20, enough for the checkpoint it needs): they *learn* NSP (accuracy ~0.75, it was at chance with the old fixed
  halves), and fine-tuning from that pre-trained [CLS] pooler learns this single-sentence task
  far more slowly than from scratch (100 steps: 61% at lr 1e-3, chance at 3e-3, 3e-4 and 1e-4;
  from scratch 100% at 1e-3). The task is lexical (is one of five words present?), which a
  2-layer model learns from its embeddings alone; a pooler tuned to sentence-pair features gives
  it nothing to start from. The comparison is printed, not asserted; a task where pre-training
  helps needs a real pre-training budget, which this suite cannot afford.
  """
  finetuned, scratch = runs["finetuned"]["eval"], runs["scratch"]["eval"]
  assert scratch["accuracy"] >= 0.9, scratch
  assert math.isfinite(finetuned["loss"]) and 0.0 <= finetuned["accuracy"] <= 1.0
  print(f"eval accuracy: fine-tuned {finetuned['accuracy']:.3f}, scratch {scratch['accuracy']:.3f}")
  print(f"eval loss: fine-tuned {finetuned['loss']:.4f}, scratch {scratch['loss']:.4f}")


def test_init_from_loads_backbone_and_logs_the_new_head(runs):
  log = "\n".join(runs["finetuned"]["log"])
  assert "classification_head/classifier/kernel is not in the checkpoint: initialized fresh" in log
  assert "classification_head/classifier/bias is not in the checkpoint" in log
  assert "encoder/layers" not in "".join(m for m in runs["finetuned"]["log"] if "fresh" in m)
  # Every pre-trained parameter (the MLM and NSP heads included) was loaded by name.
  count = len(jax.tree.leaves(runs["pretrain"]["params"]))
  assert any(f"loaded {count} parameters" in m for m in runs["finetuned"]["log"]), log
  assert "init_from" not in "\n".join(runs["scratch"]["log"])


def test_eval_is_deterministic_and_equals_the_loop(runs):
  workdir = runs["scratch"]["workdir"]  # the run that learned the task (see above)
  first = evaluate_checkpoint(workdir)
  second = evaluate_checkpoint(workdir, write=False)
  assert first == second
  loop_eval = runs["scratch"]["eval"]
  for name in ("loss", "accuracy"):
    assert first[name] == pytest.approx(loop_eval[name], rel=1e-6, abs=1e-7), name
  assert "perplexity" not in first  # a classifier's loss is not a language model's
  # The task's metric functions see the same 128 examples: the same accuracy, both in [0, 1].
  assert first["num_examples"] == 128
  assert first["task/accuracy"] == pytest.approx(first["accuracy"])  # one convention: [0, 1]
  assert 0.8 < first["task/f1_macro"] <= 1.0
  saved = json.load(open(os.path.join(workdir, "eval", f"{TASK}_step_{first['step']}.json")))
  assert saved["loss"] == first["loss"]
  lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
  assert lines[-1]["eval/loss"] == first["loss"]


def test_inference_api_and_cli(runs, tmp_path, capsys):
  workdir = runs["scratch"]["workdir"]  # the run that learned the task
  model = t5x_lite.load(workdir)
  texts = ["the value of a class is in the list", "the value of a list is in it"]
  results = model.classify(texts)
  assert [r["label"] for r in results] == ["yes", "no"]
  assert sum(results[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
  embeddings = model.embed(texts, pooling="cls")
  assert embeddings.shape == (2, 64) and np.isfinite(embeddings).all()

  inputs = tmp_path / "texts.txt"
  inputs.write_text("\n".join(texts) + "\n")
  out = tmp_path / "pred.jsonl"
  assert (
    cli.main(["predict", "--workdir", workdir, "--input", str(inputs), "--output", str(out)]) == 0
  )
  predicted = [json.loads(line) for line in open(out)]
  assert [p["label"] for p in predicted] == ["yes", "no"]
  npy = tmp_path / "emb.npy"
  assert (
    cli.main(["embed", "--workdir", workdir, "--input", str(inputs), "--output", str(npy)]) == 0
  )
  np.testing.assert_allclose(np.load(npy), model.embed(texts), rtol=1e-5, atol=1e-6)

  # Bad input: clear one-line errors, exit status 2.
  capsys.readouterr()
  missing = ["predict", "--workdir", workdir, "--input", str(tmp_path / "nope.txt")]
  assert cli.main(missing) == 2
  assert "nope.txt does not exist" in capsys.readouterr().err
  assert cli.main(["predict", "--workdir", workdir, "--text", "  "]) == 2
  assert "is empty" in capsys.readouterr().err
  assert cli.main(["generate", "--workdir", workdir, "--prompt", "The"]) == 2
  assert "does not generate text" in capsys.readouterr().err


def test_init_from_that_does_not_exist_is_a_clear_error(runs, tmp_path, capsys):
  spec = "bert.py:tiny"
  vocab = vocabularies.pretrained_vocab_path(runs["pre_workdir"])
  argv = ["train", "--config", spec, "--workdir", str(tmp_path / "w"),
          f"--config.data.vocab_path={vocab}", f"--config.train.init_from={tmp_path / 'nope'}",
          "--config.train.steps=1", "--config.data.feature_lengths={'inputs': 32}",
          "--config.model.max_length=32", "--config.train.sample_prompt="]  # fmt: skip
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "train.init_from=" in err and "does not exist" in err, err
  # A run whose vocabulary differs from the checkpoint's would look embeddings up with the
  # wrong ids: refused.
  from t5x_lite import checkpoints
  from t5x_lite.data.vocabularies import ByteVocabulary

  source = checkpoints.open_existing(runs["pre_workdir"])
  with pytest.raises(init_from.InitFromError, match="trained with vocabulary sentencepiece:"):
    init_from.check_vocabulary(source, 20, "pre", ByteVocabulary(100))


# ---------------------------------------------------------------------------------------------
# Unit tests without training.


def test_init_from_matching_names_misfits():
  saved = {"encoder/kernel": (4, 4), "token_embedder/embedding": (10, 4), "nsp/kernel": (4, 2)}
  target = {"encoder/kernel": (4, 4), "token_embedder/embedding": (10, 4), "head/w": (4, 3)}
  loaded, initialized, ignored = init_from.match(target, saved, "src")
  assert loaded == ["encoder/kernel", "token_embedder/embedding"]
  assert initialized == ["head/w"] and ignored == ["nsp/kernel"]
  with pytest.raises(init_from.InitFromError, match=r"'token_embedder/embedding' has shape"):
    init_from.match({**target, "token_embedder/embedding": (12, 4)}, saved, "src")
  with pytest.raises(init_from.InitFromError, match="lacks backbone parameter 'encoder/bias'"):
    init_from.match({**target, "encoder/bias": (4,)}, saved, "src")


def test_frozen_parameters_do_not_move():
  config = config_lib.base_config()
  with config.unlocked():
    config.train.frozen = ("encoder/.*",)
    config.optimizer.warmup_steps = 0
  optimizer, _ = optimizers.make_optimizer(config)
  params = {"encoder": {"w": jnp.ones((3, 3))}, "head": {"w": jnp.ones((3, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["encoder"]["w"], params["encoder"]["w"])
  assert not np.allclose(new["head"]["w"], params["head"]["w"])
  with config.unlocked():
    config.train.frozen = ("decoder/.*",)
  optimizer, _ = optimizers.make_optimizer(config)
  with pytest.raises(config_lib.ConfigError, match="'decoder/.\\*' matches no parameter"):
    optimizer.init(params)


def _decoder_classifier_batch(model, vocab_size):
  from t5x_lite.data.ragged import Ragged

  rng = np.random.default_rng(0)
  rows = [rng.integers(3, vocab_size, n).tolist() for n in (5, 9, 3, 7)]
  examples = {"inputs": Ragged.from_rows(rows), "label": np.array([0, 2, 1, 2], np.int32)}
  return model.feature_converter(pack=True).convert(examples, {"inputs": 16})


def test_gpt_classification_loss_adds_exactly_lambda_times_lm_loss():
  config = config_lib.get_config("gpt.py:tiny")
  with config.unlocked():
    config.model.update(d_model=32, num_heads=2, d_ff=64, head="classification", num_labels=3)
  assert config.model.lm_loss_weight == 0.5  # the GPT paper's λ is the default
  assert config_lib.model_config(config).lm_loss_weight == 0.5
  with config.unlocked():
    config.model.lm_loss_weight = 0.0  # λ = 0 stays available: the classification loss alone
  model = build_model(config_lib.model_config(config))
  batch = _decoder_classifier_batch(model, 1024)
  # Packed: four examples in fewer rows, each labelled at its last token.
  assert batch["classification_loss_weights"].sum() == 4
  assert batch["decoder_input_tokens"].shape[0] < 4
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), model.input_shapes(2, {"decoder": 16})))
  base_loss, base_metrics = model.loss(params, batch, None, deterministic=True)
  lam = 0.37
  with config.unlocked():
    config.model.lm_loss_weight = lam
  weighted = build_model(config_lib.model_config(config))
  loss, metrics = weighted.loss(params, batch, None, deterministic=True)
  lm_loss = metrics["lm_loss"][0] / metrics["lm_loss"][1]
  assert float(lm_loss) > 1.0  # a real LM loss on random weights (about log 1024)
  np.testing.assert_allclose(float(loss), float(base_loss) + lam * float(lm_loss), rtol=1e-6)
  assert "lm_loss" not in base_metrics


def test_unseen_label_is_a_data_error():
  class Vocab:
    cls_id, sep_id, eos_id = 5, 6, 1

    def encode_batch(self, texts):
      lengths = [len(t.split()) for t in texts]
      return np.full(sum(lengths), 9, np.int32), np.asarray(lengths)

  examples = {"text": ["a b", "c"], "label": ["yes", "maybe"], KEY: np.arange(2, dtype=np.uint64)}
  context = Context(vocabulary=Vocab(), feature_lengths={"inputs": 8})
  with pytest.raises(
    DataError, match=r"label 'maybe' is not one of the task's labels \['no', 'yes'\]"
  ):
    preprocessors.classification(examples, context, labels=("no", "yes"))
  examples["label"] = ["yes", "no"]
  out = preprocessors.classification(examples, context, labels=("no", "yes"))
  assert out["inputs"].rows()[0].tolist() == [5, 9, 9, 6]
  assert out["label"].tolist() == [1, 0]


def test_record_source_reads_csv_with_named_fields(tmp_path):
  path = tmp_path / "data.csv"
  path.write_text('review,stars\n"good, very",5\nbad,1\n')
  source = sources.RecordSource(str(path), str(path), fields=["review", "stars"])
  docs = [json.loads(source.split("train")[i]["text"]) for i in range(2)]
  assert docs == [{"review": "good, very", "stars": "5"}, {"review": "bad", "stars": "1"}]
  with pytest.raises(DataError, match=r"data.csv:2: no field 'label'"):
    sources.RecordSource(str(path), fields=["review", "label"]).split("train")


def test_metric_functions_known_values():
  assert task_metrics.accuracy(["a", "b", "a", "a"], ["a", "b", "b", "a"]) == {"accuracy": 0.75}
  # label a: tp 2, fp 0, fn 1 -> F1 0.8; label b: tp 1, fp 1, fn 0 -> F1 2/3
  f1 = task_metrics.f1_macro(["a", "b", "a", "a"], ["a", "b", "b", "a"])["f1_macro"]
  assert f1 == pytest.approx((0.8 + 2 / 3) / 2)
  assert task_metrics.exact_match(["x y", "z"], [" x y", "w"]) == {"exact_match": 0.5}
  # LCS("the cat sat", "the cat on the mat sat") = 3: P = 3/6, R = 3/3 -> F = 2/3
  score = task_metrics.rouge_l(["the cat sat"], ["The cat on the mat sat"])["rouge_l"]
  assert score == pytest.approx(2 / 3)


def _eval_path(workdir, split="validation", rows=6):
  """(texts, unpacked model features, loaded model) of `rows` validation examples, through
  training's own path: the task's source and preprocessors, then the model's converter."""
  loaded = t5x_lite.load(workdir)
  config = loaded.config
  task = pipeline.get_task(config, config.data.task)
  lengths = dict(config.data.feature_lengths)
  converter = loaded.model.feature_converter(pack=False)
  stream = pipeline.TaskStream(task, split, loaded.vocabulary, converter, lengths, seed=0)
  history = stream.examples(0, stages=True)
  texts = [json.loads(t)["sentence"] for t in history[0][1]["text"][:rows]]
  features = converter.convert(history[-1][1], lengths)
  return texts, {k: v[:rows] for k, v in features.items()}, loaded


def test_inference_reads_text_exactly_as_training_does(runs):
  """The same text through training's eval path (task preprocessors -> converter -> model)
  and through t5x_lite.load(...).classify / embed gives the same numbers."""
  texts, batch, loaded = _eval_path(runs["finetuned"]["workdir"])
  log_probs = np.asarray(jax.jit(loaded.model.classify)(loaded.params, batch))
  weights = batch["classification_loss_weights"]
  assert (weights.sum(axis=1) == 1).all() and (weights[:, 0] == 1).all()  # BERT reads [CLS]
  training_probs = np.exp(log_probs[:, 0])  # [rows, labels]
  results = loaded.classify(texts)
  inference_probs = np.array(
    [[r["probabilities"][name] for name in ["no", "yes"]] for r in results]
  )
  np.testing.assert_allclose(inference_probs, training_probs, rtol=1e-5, atol=1e-6)
  hidden = np.asarray(jax.jit(loaded.model.hidden_states)(loaded.params, batch))
  np.testing.assert_allclose(loaded.embed(texts, pooling="cls"), hidden[:, 0], rtol=1e-5, atol=1e-5)
