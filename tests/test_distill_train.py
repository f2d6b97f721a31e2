"""Distillation through `t5x-lite train` (config.distill): a bad teacher is one line before
compiling, the teacher stays frozen and outside the checkpoint, the loss is the sum of its logged
parts, eval scores the student alone, resume is bit-exact, and (slow) a distilled tiny GPT beats
the same student trained without a teacher."""

import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from t5x_lite import checkpoints, cli
from t5x_lite.data.vocabularies import ByteVocabulary
from t5x_lite.evaluation.checkpoint import evaluate_checkpoint
from t5x_lite.training import loop
from t5x_lite.training.setup import RunSetup

# Tiny and quick: byte vocabulary (nothing to train), 8 rows of 64 tokens.
COMMON = [
  "--config.train.batch_size=8",
  "--config.data.feature_lengths={'targets': 64}",
  "--config.train.log_every=1",
  "--config.train.eval_every=0",
  "--config.train.eval_steps=1",
  "--config.train.sample_prompt=",
  "--config.data.vocab=byte",
  "--config.model.vocab_size=384",
  "--config.optimizer.warmup_steps=2",
  "--config.optimizer.decay_steps=6",
]


def train(workdir, *args, config="gpt.py:tiny"):
  return cli.main(["train", "--config", config, "--workdir", str(workdir), *COMMON, *args])


def rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def restore(workdir, step=None):
  source = checkpoints.open_existing(str(workdir))
  config = source.restore_config(step)
  return jax.device_get(RunSetup.create(config).restore_params(source, step))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A 4-layer tiny GPT trained 2 steps (a 2-layer student is every other layer of it)."""
  workdir = tmp_path_factory.mktemp("teacher")
  assert train(workdir, "--config.train.steps=2", "--config.model.num_layers=4") == 0
  return str(workdir)


# Held-out loss margin (plain - distilled) the slow test asserts. Measured with
# `distillation_margin` (8 fake CPU devices), seeds 0, 1, 2: 0.097, 0.147, 0.297 (teacher 3.28,
# 3.16, 3.10; plain 3.37, 3.28, 3.33; distilled 3.27, 3.13, 3.03). The KL alone, without the
# init from the teacher's layers, is not a robust win at this size: with batch 16, a 100-step
# teacher and 40 student steps it moved the loss by -0.008, -0.012, +0.022 (seeds 0, 1, 2).
MARGIN = 0.05
BYTES = ByteVocabulary(100)  # the teacher's (data.extra_ids=100)
BAD_TEACHERS = {
  "missing": (
    ["--config.distill.teacher={tmp}/nowhere"],
    "config.distill.teacher='{tmp}/nowhere' does not exist (expected a t5x_lite workdir or a "
    "Hugging Face folder)",
  ),
  "other vocabulary": (
    ["--config.distill.teacher={teacher}", "--config.data.extra_ids=0"],
    f"config.distill.teacher={{teacher}} reads text with vocabulary {BYTES.fingerprint}, the "
    f"student with {ByteVocabulary(0).fingerprint} (the KL compares one vocabulary's "
    "distributions; leave data.vocab_path empty to read with the teacher's)",
  ),
  "other family": (
    ["--config.distill.teacher={teacher}", "--config.data.feature_lengths={{'inputs': 64}}"],
    "config.distill.teacher is a DecoderModel; the student is an EncoderModel (expected the same kind "
    "of model)",
  ),
  "other width with alpha_cos": (
    ["--config.distill.teacher={teacher}", "--config.model.d_model=32"],
    "config.distill.alpha_cos=1.0 needs equal widths: teacher d_model=64, student 32 (set "
    "distill.alpha_cos=0)",
  ),
  "init_from_teacher impossible": (
    ["--config.distill.teacher={teacher}", "--config.model.d_model=32",
     "--config.distill.alpha_cos=0", "--config.distill.init_from_teacher=true"],
    "config.distill.init_from_teacher='true': the student's decoder/",
  ),
  "bad temperature": (
    ["--config.distill.teacher={teacher}", "--config.distill.temperature=0"],
    "config.distill.temperature=0.0: expected a number > 0",
  ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_TEACHERS))
def test_bad_teacher_is_one_line_before_compiling(case, teacher, tmp_path, capsys):
  args, message = BAD_TEACHERS[case]
  args = [a.format(tmp=tmp_path, teacher=teacher) for a in args]
  config = "distilbert.py:tiny" if case == "other family" else "gpt.py:tiny"
  workdir = tmp_path / "student"
  assert train(workdir, *args, config=config) == 2
  out, err = capsys.readouterr()
  last = err.strip().splitlines()[-1]
  assert last.startswith("t5x-lite train: error: " + message.format(tmp=tmp_path, teacher=teacher))
  assert "Traceback" not in err and "compiling" not in out + err
  saved = workdir / "checkpoints"
  assert not os.path.exists(saved) or not os.listdir(saved)  # nothing trained, nothing saved


def test_distill_run_frozen_teacher_logged_parts_student_eval(teacher, tmp_path, monkeypatch):
  """3 steps: the loss is α_ce·ce + α_lm·lm + α_cos·cos as logged; the teacher the step read is
  bit-identical to its checkpoint afterwards and is not in the student's checkpoint; the step-1
  checkpoint (learning rate 0 at step 0) is the teacher's layers 0 and 2; eval is the student's
  own loss, equal to `t5x-lite eval` of the checkpoint (no teacher there)."""
  loaded = []

  def capture(*args):
    loaded.append(load(*args))
    return loaded[-1]

  load = loop._load_teacher
  monkeypatch.setattr(loop, "_load_teacher", capture)
  workdir = tmp_path / "student"
  assert train(workdir, f"--config.distill.teacher={teacher}", "--config.train.steps=3",
               "--config.train.checkpoint_every=1", "--config.model.dropout_rate=0.1") == 0  # fmt: skip

  train_rows = [r for r in rows(workdir) if "train/loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3]
  for r in train_rows:
    parts = 5.0 * r["train/distill/ce"] + 2.0 * r["train/lm_loss"] + r["train/distill/cos"]
    np.testing.assert_allclose(r["train/loss"], parts, rtol=1e-5)
    assert r["train/distill/ce"] > 0 and r["train/distill/cos"] > 0
  final = [r for r in rows(workdir) if "eval/loss" in r][-1]
  assert not any(k.startswith("eval/distill") or k == "eval/lm_loss" for k in final)
  alone = evaluate_checkpoint(str(workdir), write=False)
  np.testing.assert_allclose(alone["loss"], final["eval/loss"], rtol=1e-6)
  assert alone["loss"] < train_rows[-1]["train/loss"] / 2  # not the distillation total

  # Frozen: what the step read is the teacher's checkpoint, bit for bit, after 3 steps.
  (used,) = loaded
  teacher_params = restore(teacher)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(used.params), teacher_params)
  # The student's checkpoint holds the student (2 layers), nothing of the teacher.
  source = checkpoints.open_existing(str(workdir))
  shapes = source.saved_param_shapes(3)
  student_shapes = {
    "/".join(k): v.shape for k, v in traverse_util.flatten_dict(restore(workdir)).items()
  }
  assert shapes == student_shapes
  assert shapes["decoder/layers/mlp/wi/kernel"] == (2, 64, 256)
  # DistilBERT's init: at step 1 (no update at learning rate 0) the student is layers 0 and 2.
  first = traverse_util.flatten_dict(restore(workdir, 1))
  flat_teacher = traverse_util.flatten_dict(teacher_params)
  for name, value in first.items():
    want = flat_teacher[name]
    if "layers" in name:
      want = want[np.array([0, 2])]
    np.testing.assert_array_equal(value, want, err_msg="/".join(name))


def test_distill_resume_is_bit_exact(teacher, tmp_path):
  """4 steps straight == 2 steps, stop, resume to 4 (the teacher reloaded): same loss and parts
  at every step, same params."""
  args = [f"--config.distill.teacher={teacher}", "--config.train.checkpoint_every=2",
          "--config.model.dropout_rate=0.1"]  # fmt: skip
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  assert train(straight, *args, "--config.train.steps=4") == 0
  assert train(resumed, *args, "--config.train.steps=2") == 0
  assert train(resumed, *args, "--config.train.steps=4") == 0
  keys = ("train/loss", "train/distill/ce", "train/distill/cos", "train/lm_loss")

  def losses(workdir):
    by_step = {r["step"]: [r[k] for k in keys] for r in rows(workdir) if "train/loss" in r}
    return [by_step[s] for s in sorted(by_step)]

  assert len(losses(straight)) == 4 and losses(resumed) == losses(straight)
  jax.tree.map(np.testing.assert_array_equal, restore(straight), restore(resumed))


@pytest.mark.slow  # ~25-45 s on 2 shared cores: two runs and a conversion
def test_hf_folder_teacher_equals_its_run(teacher, tmp_path):
  """The teacher exported to a Hugging Face folder (`t5x-lite convert --to hf`) teaches exactly
  as its run does: same losses and parts at every step (the student reads the folder's
  tokenizer, which it adopts with data.vocab_path empty)."""
  hf_dir = tmp_path / "hf"
  assert cli.main(["convert", "--to", "hf", "--model", teacher, "--out", str(hf_dir)]) == 0
  assert (
    train(tmp_path / "run", f"--config.distill.teacher={teacher}", "--config.train.steps=2") == 0
  )
  assert train(tmp_path / "hf_student", f"--config.distill.teacher={hf_dir}",
               "--config.train.steps=2", "--config.data.vocab=sentencepiece") == 0  # fmt: skip
  keys = ("train/loss", "train/distill/ce", "train/distill/cos", "train/lm_loss")
  run = [[r[k] for k in keys] for r in rows(tmp_path / "run") if "train/loss" in r]
  from_hf = [[r[k] for k in keys] for r in rows(tmp_path / "hf_student") if "train/loss" in r]
  assert len(run) == 2
  np.testing.assert_allclose(from_hf, run, rtol=1e-6)


@pytest.mark.slow  # ~25-45 s on 2 shared cores: two runs and a conversion
def test_encoder_student_from_bert_teacher(tmp_path):
  """DistilBERT from a tiny BERT (MLM + NSP, token types, pooler): MLM + KL + cos, the student
  starts from BERT's layer 0 of 2 (its token types, pooler and NSP head dropped), and eval
  reports the student's MLM loss alone."""
  lengths = "--config.data.feature_lengths={'inputs': 64}"
  bert = tmp_path / "bert"
  assert train(bert, lengths, "--config.train.steps=2", config="bert.py:tiny") == 0
  student = tmp_path / "distilbert"
  assert train(student, lengths, "--config.train.steps=2", "--config.train.checkpoint_every=1",
               f"--config.distill.teacher={bert}", config="distilbert.py:tiny") == 0  # fmt: skip
  train_rows = [r for r in rows(student) if "train/loss" in r]
  for r in train_rows:
    parts = 5.0 * r["train/distill/ce"] + 2.0 * r["train/lm_loss"] + r["train/distill/cos"]
    np.testing.assert_allclose(r["train/loss"], parts, rtol=1e-5)
  final = [r for r in rows(student) if "eval/loss" in r][-1]
  assert "eval/nsp_loss" not in final and final["eval/loss"] == final["eval/mlm_loss"]
  first = traverse_util.flatten_dict(restore(student, 1))
  taught = traverse_util.flatten_dict(restore(bert))
  assert not any(name[0] in ("token_type_embedder", "pooler") for name in first)
  for name, value in first.items():
    want = taught[name][:1] if "layers" in name else taught[name]
    np.testing.assert_array_equal(value, want, err_msg="/".join(name))


def distillation_margin(root, seed: int = 0) -> dict[str, float]:
  """Held-out losses on the bundled corpus: a 4-layer tiny GPT teacher (60 steps), then its
  2-layer student for 30 steps with the teacher (DistilBERT's recipe: every other layer, then
  5·KL + 2·LM + cos) and without (fresh init, LM only), same data, seed and schedule."""
  common = ["--config.train.batch_size=8", "--config.train.eval_steps=4", f"--config.train.seed={seed}",
            f"--config.data.seed={seed}", "--config.optimizer.warmup_steps=10",
            "--config.optimizer.decay_steps=0", "--config.train.checkpoint_every=1000",
            "--config.train.log_every=10"]  # fmt: skip
  root = str(root)
  assert (
    train(f"{root}/teacher", *common, "--config.train.steps=60", "--config.model.num_layers=4") == 0
  )
  assert train(f"{root}/plain", *common, "--config.train.steps=30") == 0
  assert train(f"{root}/distilled", *common, "--config.train.steps=30",
               f"--config.distill.teacher={root}/teacher") == 0  # fmt: skip
  return {
    name: [r for r in rows(f"{root}/{name}") if "eval/loss" in r][-1]["eval/loss"]
    for name in ("teacher", "plain", "distilled")
  }


@pytest.mark.slow
def test_distilled_student_beats_the_same_student_without_teacher(tmp_path):
  """The distilled 2-layer student's held-out loss is MARGIN below the same student trained
  without a teacher for the same 30 steps (margins measured over 3 seeds: see MARGIN)."""
  losses = distillation_margin(tmp_path, seed=0)
  assert losses["plain"] - losses["distilled"] > MARGIN, losses
