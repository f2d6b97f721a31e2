"""The `t5x-lite` command: bad input gives one clear line and a non-zero exit; train works."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from t5x_lite import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "gpt.py:tiny"


def console_script():
  """The installed `t5x-lite` entry point (as a user runs it), else `python -m t5x_lite.cli`."""
  path = shutil.which("t5x-lite")
  return [path] if path else [sys.executable, "-m", "t5x_lite.cli"]


def run_main(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out + captured.err


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.train.stepz=5", "unknown config key 'train.stepz'; did you mean steps?"),
    ("--config.train.steps=five", "--config.train.steps=five: expected an int, found 'five'"),
    ("--config.model.num_heads=5", "config.model.num_heads=5 does not divide model.d_model=64"),
    (
      "--config.train.batch_size=12",
      "train.batch_size=12 (per microbatch 12) is not divisible by the 8",
    ),
  ],
)
def test_bad_config_is_one_line_and_exit_2(capsys, tmp_path, override, message):
  code, output = run_main(capsys, "train", "--config", TINY, "--workdir", str(tmp_path), override)
  assert code == 2
  assert message in output
  assert "Traceback" not in output
  assert not os.path.exists(tmp_path / "checkpoints")  # failed before anything ran


def test_unwritable_workdir(capsys, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  code, output = run_main(capsys, "train", "--config", TINY, "--workdir", str(blocker / "run"))
  assert code == 2 and "is not writable" in output and str(blocker / "run") in output


@pytest.mark.slow
def test_empty_corpus_file_names_the_file(capsys, tmp_path, shared_vocab_workdir):
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  registry_file = tmp_path / "empty_tasks.py"
  registry_file.write_text(
    "from t5x_lite.data import objectives, preprocessors\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "from t5x_lite.data.sources import TextFileSource\n"
    f"TaskRegistry.add(Task('empty_lm', source=TextFileSource({str(empty)!r}),\n"
    "    preprocessors=[preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],\n"
    "    output_features={'targets': Feature(add_eos=True)}))\n"
  )
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  code, output = run_main(
    capsys,
    "train",
    "--config",
    TINY,
    "--workdir",
    workdir,
    "--config.data.task=empty_lm",
    f"--config.data.task_modules=('{registry_file}',)",
  )
  assert code == 2
  assert "no documents" in output and "empty.txt" in output


def test_missing_checkpoint(capsys, tmp_path):
  code, output = run_main(capsys, "generate", "--workdir", str(tmp_path), "--prompt", "x")
  assert code == 2 and f"no complete checkpoint in {tmp_path}" in output


@pytest.mark.slow
def test_train_then_generate_in_a_subprocess(tmp_path, shared_vocab_workdir):
  """The installed console script, as a user runs it: train 5 steps, then generate."""
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
  train = subprocess.run(
    [
      *console_script(),
      "train",
      "--workdir",
      workdir,
      "--config.train.steps=5",
      "--config.train.log_every=1",
      "--config.train.sample_tokens=4",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert train.returncode == 0, train.stderr[-3000:]
  assert "step 5/5" in train.stdout and "sample (greedy)" in train.stdout
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5]
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["5"]

  prompts = tmp_path / "prompts.txt"
  prompts.write_text("The\nA list\n")
  out = tmp_path / "out.jsonl"
  generate = subprocess.run(
    [
      *console_script(),
      "generate",
      "--workdir",
      workdir,
      "--prompt-file",
      str(prompts),
      "--output",
      str(out),
      "--max-new-tokens",
      "5",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert generate.returncode == 0, generate.stderr[-3000:]
  lines = [json.loads(line) for line in open(out)]
  assert [line["prompt"] for line in lines] == ["The", "A list"]

  missing = subprocess.run(
    [
      *console_script(),
      "generate",
      "--workdir",
      workdir,
      "--prompt",
      "x",
      "--step",
      "999",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert missing.returncode == 2
  assert (
    "checkpoint step 999 does not exist" in missing.stderr
    and "available steps: [5]" in missing.stderr
  )
