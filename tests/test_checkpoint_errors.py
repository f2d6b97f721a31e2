"""Issue 14, points 16 and 21: a checkpoint that cannot be restored is ONE line naming the
checkpoint and the cause (it was 6 to 83 lines: TensorStore's spec, Orbax's advice, and one
"Event loop is closed" traceback per read still in flight); the loop closes its checkpoint
manager on every error path; Ctrl-C twice leaves no Orbax thread printing a traceback."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from t5x_lite import checkpoints, cli
from t5x_lite.training.setup import RunSetup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--config", "gpt.py:tiny", "--config.data.vocab=byte"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ckpt") / "run"
  assert cli.main(["train", *TRAIN, "--workdir", str(workdir), "--config.train.steps=2",
                   "--config.train.sample_tokens=0"]) == 0  # fmt: skip
  return workdir


def _state_dir(workdir):
  return workdir / "checkpoints" / "2" / "state"


def _delete_data(workdir):
  for path in (_state_dir(workdir) / "d").iterdir():
    path.unlink()


def _garbage_manifest(workdir):
  (_state_dir(workdir) / "manifest.ocdbt").write_text("garbage")


def _garbage_metadata(workdir):
  (_state_dir(workdir) / "_METADATA").write_text("{bad")


def _garbage_config(workdir):
  (workdir / "checkpoints" / "2" / "config" / "metadata").write_text("{bad")


CORRUPTIONS = {
  "data_files_deleted": (_delete_data, "NOT_FOUND: Error reading"),
  "manifest_garbage": (_garbage_manifest, "DATA_LOSS"),
  "metadata_garbage": (_garbage_metadata, "JSONDecodeError"),
  "config_garbage": (_garbage_config, "is unreadable"),
}


def _copy(trained, tmp_path, corrupt):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  corrupt(workdir)
  return workdir


def _the_line(err):
  assert "Traceback" not in err and "Event loop is closed" not in err, err
  lines = [line for line in err.splitlines() if line.strip() and not line[:9].count(":") == 2]
  assert len(lines) == 1, err  # only log lines (HH:MM:SS L ...) besides the error
  return lines[0]


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_broken_checkpoint_is_one_line(capsys, trained, tmp_path, case, command):
  corrupt, cause = CORRUPTIONS[case]
  workdir = _copy(trained, tmp_path, corrupt)
  argv = (
    ["train", *TRAIN, "--workdir", str(workdir), "--config.train.steps=4"]
    if command == "train"
    else ["eval", "--workdir", str(workdir)]
  )
  code = cli.main(argv)
  line = _the_line(capsys.readouterr().err)
  assert code == 2
  assert line.startswith(f"t5x-lite {command}: error: ")
  assert f"step 2 in {workdir / 'checkpoints'}" in line and cause in line, line
  assert "tensorstore_spec" not in line and len(line) < 600, line
  if case != "config_garbage":
    assert line.endswith("(t5x-lite -v shows the full error)")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]  # nothing lost


def test_a_changed_model_shape_says_so(capsys, trained, tmp_path):
  workdir = _copy(trained, tmp_path, lambda w: None)
  code = cli.main(["train", *TRAIN, "--workdir", str(workdir), "--config.train.steps=4",
                   "--config.model.d_ff=512"])  # fmt: skip
  line = _the_line(capsys.readouterr().err)
  assert code == 2
  assert re.search(
    r"a parameter of shape \([^)]*512[^)]*\) is stored as \([^)]*256[^)]*\): "
    "the model config differs from the one the checkpoint was saved with",
    line,
  ), line
  assert "strict=False" not in line  # Orbax's advice is about its API, not for our users


def test_the_full_error_is_in_the_debug_log(capsys, trained, tmp_path):
  workdir = _copy(trained, tmp_path, _delete_data)
  assert cli.main(["-v", "eval", "--workdir", str(workdir)]) == 2
  err = capsys.readouterr().err
  assert "tensorstore_spec" in err  # the detail, at -v
  assert err.strip().splitlines()[-1].startswith("t5x-lite eval: error: ")


def test_in_a_subprocess_no_straggler_traceback(trained, tmp_path):
  """The "Event loop is closed" tracebacks came from threads after the restore failed: the
  real entry point, stderr as a user sees it."""
  workdir = _copy(trained, tmp_path, _delete_data)
  result = subprocess.run(
    [sys.executable, "-m", "t5x_lite.cli", "train", *TRAIN, "--workdir", str(workdir),
     "--config.train.steps=4"],
    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=300,
  )  # fmt: skip
  assert result.returncode == 2
  line = _the_line(result.stderr)
  assert "could not be restored: ValueError: NOT_FOUND" in line


def test_the_loop_closes_its_checkpointer_on_an_error(monkeypatch, tmp_path):
  closed = []
  original = checkpoints.Checkpointer.close

  def close(self, wait=True):
    closed.append((self.directory, wait))
    original(self, wait)

  def out_of_memory(self):
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory while trying to allocate (a test)")

  monkeypatch.setattr(checkpoints.Checkpointer, "close", close)
  monkeypatch.setattr(RunSetup, "init_state", out_of_memory)
  from t5x_lite.config import get_config
  from t5x_lite.training import loop

  config = get_config("gpt.py:tiny", [("data.vocab", "byte"), ("train.steps", "2")])
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert closed == [(str(tmp_path / "run" / "checkpoints"), True)]


@pytest.mark.slow
def test_ctrl_c_twice_leaves_no_traceback(tmp_path):
  """Ctrl-C once: finish the step and save; again: stop at once (exit 130). Either way no
  Orbax thread prints a traceback after the main thread has reported."""
  workdir = tmp_path / "run"
  process = subprocess.Popen(
    [sys.executable, "-m", "t5x_lite.cli", "train", *TRAIN, "--workdir", str(workdir),
     "--config.train.steps=100000", "--config.train.log_every=1",
     "--config.train.checkpoint_every=1"],
    stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    env={**os.environ, "PYTHONPATH": REPO},
  )  # fmt: skip
  deadline = time.time() + 240
  while time.time() < deadline and not (workdir / "checkpoints" / "2").exists():
    time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=120)
  assert process.returncode in (0, 130), err
  assert "Traceback" not in err, err
