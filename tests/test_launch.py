"""launch.py: the gcloud commands printed by --dry-run, and the worker-side shell snippets."""

import os
import shlex
import signal
import subprocess
import time

import pytest

from t5x_lite import launch

PROMPT = 'It\'s a "test" $HOME'  # quotes and a $ that must reach the trainer unexpanded
BASE = ["--name", "my-tpu", "--zone", "us-central2-b"]
UP = BASE + [
  "--accelerator-type", "v4-16", "--config", "gpt.py:tiny", "--workdir", "gs://bucket/run1",
  "--archive", "/tmp/t5x_lite_test.tar.gz", "--spot",
]  # fmt: skip
OVERRIDES = ["--config.train.steps=20", "--config.train.sample_prompt", PROMPT]


def dry_run(capsys, *argv):
  assert launch.main([*argv, "--dry-run"]) == 0
  lines = capsys.readouterr().out.splitlines()
  comments = [line for line in lines if line.startswith("# ")]
  commands = [shlex.split(line) for line in lines if not line.startswith("# ")]
  assert len(comments) == len(commands)
  return commands


def remote_words(command):
  """The words of the shell command passed to `gcloud ... ssh --command=...`."""
  (option,) = [word for word in command if word.startswith("--command=")]
  return shlex.split(option[len("--command=") :])


def test_up_dry_run_prints_every_command(capsys):
  commands = dry_run(capsys, "up", *UP, *OVERRIDES)
  zone = "--zone=us-central2-b"
  assert commands[:3] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu", zone,
     "--accelerator-type=v4-16", "--spot", "--version=tpu-ubuntu2204-base"],
    ["git", "-C", launch.REPO_ROOT, "archive", "--format=tar.gz", "--prefix=t5x_lite/",
     "-o", "/tmp/t5x_lite_test.tar.gz", "HEAD"],
    ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/t5x_lite_test.tar.gz",
     "my-tpu:t5x_lite.tar.gz", zone, "--worker=all"],
  ]  # fmt: skip
  install, train = commands[3:]
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", zone, "--worker=all"]
  assert install[:-1] == ssh and train[:-1] == ssh  # the same command on every worker, at once
  assert install[-1] == (
    "--command=rm -rf ~/t5x_lite && tar -xzf ~/t5x_lite.tar.gz -C ~ && "
    "python3 -m pip install -U 'jax[tpu]' && "
    "python3 -m pip install -e ~/t5x_lite tensorboardX gcsfs google-cloud-storage"
  )
  words = remote_words(train)
  start, end = words.index("nohup"), words.index(">>")
  assert words[start + 1 : end] == [
    "t5x-lite", "train", "--config", "gpt.py:tiny", "--workdir", "gs://bucket/run1",
    "--config.train.steps=20", f"--config.train.sample_prompt={PROMPT}",
  ]  # fmt: skip
  assert words[end + 1] == "~/t5x_lite_train.log"


def test_build_commands_matches_the_dry_run(capsys):
  printed = dry_run(capsys, "up", *UP, *OVERRIDES, "--project", "my-proj")
  built = launch.build_commands(
    "my-tpu", "us-central2-b", "v4-16", "gpt.py:tiny", "gs://bucket/run1",
    project="my-proj", provisioning="spot", archive="/tmp/t5x_lite_test.tar.gz",
    overrides=[("train.steps", "20"), ("train.sample_prompt", PROMPT)],
  )  # fmt: skip
  assert printed == built
  assert all(c[-1] == "--project=my-proj" for c in built if c[0] == "gcloud")


def test_clone_from_a_repository(capsys):
  commands = dry_run(
    capsys, "install", *BASE, "--repo-url", "https://example.com/t5x_lite.git", "--branch", "v0.1"
  )
  assert len(commands) == 1  # nothing packed or copied from here
  assert remote_words(commands[0])[:10] == [
    "rm", "-rf", "~/t5x_lite", "&&", "git", "clone", "--depth=1", "--branch=v0.1",
    "https://example.com/t5x_lite.git", "~/t5x_lite",
  ]  # fmt: skip


def test_queued_spot_v5e(capsys):
  create, wait = dry_run(capsys, "create", *BASE, "--accelerator-type", "v5litepod-16", "--spot",
                         "--queued")  # fmt: skip
  assert create == [
    "gcloud", "compute", "tpus", "queued-resources", "create", "my-tpu", "--zone=us-central2-b",
    "--node-id=my-tpu", "--accelerator-type=v5litepod-16", "--spot",
    "--runtime-version=v2-alpha-tpuv5-lite",
  ]  # fmt: skip
  assert wait[:2] == ["bash", "-c"]
  assert "gcloud compute tpus queued-resources describe my-tpu" in wait[2]
  assert "ACTIVE) exit 0" in wait[2]
  (delete,) = dry_run(capsys, "delete", *BASE, "--queued")
  assert delete[3:] == ["queued-resources", "delete", "my-tpu", "--zone=us-central2-b",
                        "--force", "--quiet"]  # fmt: skip


def test_watch_and_delete_commands(capsys):
  (logs,) = dry_run(capsys, "logs", *BASE, "--worker", "1", "--lines", "20", "--follow")
  assert logs[-2:] == ["--worker=1", "--command=tail -n 20 -f ~/t5x_lite_train.log"]
  (delete,) = dry_run(capsys, "delete", *BASE)
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu",
                    "--zone=us-central2-b", "--quiet"]  # fmt: skip
  describe, _ = dry_run(capsys, "status", *BASE)
  assert describe == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "my-tpu",
                      "--zone=us-central2-b"]  # fmt: skip


@pytest.mark.parametrize(
  "argv, message",
  [
    (["train", *BASE, "--config", "gpt.py:tiny"], "missing --workdir"),
    (["train", *BASE, "--config", "gpt.py:tiny", "--workdir", "/tmp/run"], "gs:// path"),
    (["create", *BASE, "--accelerator-type", "v9-8"], "no default runtime version for 'v9'"),
    (["create", *BASE, "--accelerator-type", "v4-8", "--preemptible", "--queued"], "--spot"),
    (["up", *UP, "--config.train.stepz=3"], "unknown config key 'train.stepz'"),
  ],
)
def test_bad_arguments_fail_before_running_anything(capsys, argv, message):
  assert launch.main([*argv, "--dry-run"]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert message in captured.err


def test_run_stops_at_the_first_failure(monkeypatch, capsys):
  ran = []

  def fake_run(argv, check):
    ran.append(argv)
    return subprocess.CompletedProcess(argv, 0 if len(ran) < 3 else 7)

  monkeypatch.setattr(launch.subprocess, "run", fake_run)
  assert launch.main(["up", *UP]) == 7
  assert [argv[:5] for argv in ran] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "create"],
    ["git", "-C", launch.REPO_ROOT, "archive", "--format=tar.gz"],
    ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
  ]
  assert "step 3/5 (copy it to every worker) failed with exit code 7" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The worker-side snippets, run here with a fake `t5x-lite` in a fake home directory.

FAKE_TRAINER = """#!/bin/bash
printf '%s\\n' "$@" > "$HOME/args.txt"
trap 'echo "terminated" >> "$HOME/events.txt"; kill $child; exit 0' TERM
sleep 60 & child=$!
echo "ready" >> "$HOME/events.txt"
wait $child
"""


def _alive(pid):
  """False once the process exited (a zombie nobody reaped yet counts as exited)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def _wait_for(predicate, what):
  deadline = time.monotonic() + 30
  while not predicate():
    assert time.monotonic() < deadline, f"gave up waiting for {what}"
    time.sleep(0.05)


def test_worker_snippets_start_refuse_report_and_stop(tmp_path):
  home = tmp_path
  (home / "t5x_lite").mkdir()
  (home / ".local" / "bin").mkdir(parents=True)
  trainer = home / ".local" / "bin" / "t5x-lite"
  trainer.write_text(FAKE_TRAINER)
  trainer.chmod(0o755)
  env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}

  def remote(command):
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)

  train = launch.train_command("gpt.py:tiny", "gs://b/r", [("train.sample_prompt", PROMPT)])
  (stop_ssh,) = [argv for _, argv in launch.stop_steps("t", "z")]
  (_, status_ssh) = [argv for _, argv in launch.status_steps("t", "z")]
  started = remote(train)
  assert started.returncode == 0, started.stderr
  pid = int((home / "t5x_lite_train.pid").read_text())
  try:
    _wait_for(lambda: (home / "events.txt").exists(), "the fake trainer to start")
    assert (home / "args.txt").read_text().splitlines() == [
      "train", "--config", "gpt.py:tiny", "--workdir", "gs://b/r",
      f"--config.train.sample_prompt={PROMPT}",
    ]  # fmt: skip
    again = remote(train)  # a second start on the same worker is refused
    assert again.returncode == 1 and "already running" in again.stdout
    assert f"running (pid {pid})" in remote(status_ssh[-1][len("--command=") :]).stdout
    assert "sent SIGTERM" in remote(stop_ssh[-1][len("--command=") :]).stdout
    _wait_for(lambda: "terminated" in (home / "events.txt").read_text(), "SIGTERM to arrive")
    _wait_for(lambda: not _alive(pid), "the fake trainer to exit")
    if not os.path.exists(f"/proc/{pid}"):  # reaped (kill -0 still succeeds on a zombie)
      assert "not running" in remote(status_ssh[-1][len("--command=") :]).stdout
  finally:
    if _alive(pid):
      os.kill(pid, signal.SIGKILL)
