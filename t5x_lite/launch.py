"""`t5x-lite launch`: create a Cloud TPU VM, install t5x_lite on every worker, train, watch, delete.

Every action is a list of `gcloud compute tpus ...` commands (argv lists, no shell on this
side); `--dry-run` prints them as a shell script, otherwise they run in order and the first
failure stops the launch. The same `t5x-lite train` runs on every worker of the slice
(`--worker=all`): jax.distributed initializes itself on TPU VMs, and each host reads its own
shard of the data. The workdir must be on GCS so that every host sees the same checkpoints.

  t5x-lite launch up --name my-tpu --zone us-central2-b --accelerator-type v4-8 \\
      --config gpt.py:gpt2_small --workdir gs://my-bucket/gpt2 --config.train.steps=20000

See docs/tpu.md for the whole path (watching, preemption, resharding, deleting).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from t5x_lite.config import ConfigError, get_config, parse_overrides

# The checkout that `git archive` packs when no --repo-url is given.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/t5x_lite"  # the source tree on each worker; training runs from here
REMOTE_ARCHIVE = "t5x_lite.tar.gz"  # relative to the worker's home directory
LOG_FILE = "~/t5x_lite_train.log"
PID_FILE = "~/t5x_lite_train.pid"
EXTRA_PACKAGES = ("tensorboardX", "gcsfs", "google-cloud-storage")  # TensorBoard and gs:// I/O

# Runtime (software) version per TPU generation, for JAX (Cloud TPU "TPU software versions").
RUNTIME_VERSIONS = (
  ("v6e", "v2-alpha-tpuv6e"),
  ("v5litepod", "v2-alpha-tpuv5-lite"),
  ("v5e", "v2-alpha-tpuv5-lite"),
  ("v5p", "v2-alpha-tpuv5"),
  ("v4", "tpu-ubuntu2204-base"),
  ("v3", "tpu-ubuntu2204-base"),
  ("v2", "tpu-ubuntu2204-base"),
)


class LaunchError(ValueError):
  """A launch argument is missing or inconsistent."""


def default_runtime_version(accelerator_type: str) -> str:
  """The JAX runtime image for an accelerator type such as 'v4-8' or 'v5litepod-16'."""
  generation = accelerator_type.split("-")[0].lower()
  for prefix, version in RUNTIME_VERSIONS:
    if generation == prefix:
      return version
  raise LaunchError(
    f"--accelerator-type={accelerator_type}: no default runtime version for {generation!r} "
    f"(known: {', '.join(p for p, _ in RUNTIME_VERSIONS)}); pass --runtime-version"
  )


def _gcloud(
  group: str, verb: str, positionals: Sequence[str], zone: str, project: str | None, *flags: str
) -> list[str]:
  """`gcloud compute tpus GROUP VERB POSITIONALS --zone=ZONE FLAGS [--project=P]`."""
  command = ["gcloud", "compute", "tpus", group, verb, *positionals, f"--zone={zone}", *flags]
  if project:
    command.append(f"--project={project}")
  return command


def _ssh(name: str, zone: str, project: str | None, remote: str, worker: str = "all") -> list[str]:
  """Runs the shell command `remote` on the workers (`--worker=all`: all at once)."""
  return _gcloud(
    "tpu-vm", "ssh", [name], zone, project, f"--worker={worker}", f"--command={remote}"
  )


# True on a worker where the training process started by `train` is alive.
_IS_RUNNING = f'[ -f {PID_FILE} ] && kill -0 "$(cat {PID_FILE})" 2>/dev/null'


def create_steps(
  tpu_name: str,
  zone: str,
  accelerator_type: str,
  *,
  project: str | None = None,
  runtime_version: str | None = None,
  provisioning: str = "on-demand",
  queued: bool = False,
) -> list[tuple[str, list[str]]]:
  """(description, argv) steps that create the TPU VM; a queued resource is waited for.

  `provisioning`: 'on-demand' | 'spot' | 'preemptible' (spot and preemptible VMs cost less and
  can be preempted at any time; the trainer checkpoints on SIGTERM).
  """
  if provisioning not in ("on-demand", "spot", "preemptible"):
    raise LaunchError(f"provisioning={provisioning!r}: expected on-demand, spot or preemptible")
  version = runtime_version or default_runtime_version(accelerator_type)
  flags = [f"--accelerator-type={accelerator_type}"]
  if provisioning != "on-demand":
    flags.append(f"--{provisioning}")
  if not queued:
    create = _gcloud("tpu-vm", "create", [tpu_name], zone, project, *flags, f"--version={version}")
    return [(f"create the TPU VM {tpu_name} ({accelerator_type}, {version})", create)]
  if provisioning == "preemptible":
    raise LaunchError(
      "--queued takes --spot, not --preemptible (queued resources have no such flag)"
    )
  create = _gcloud(
    "queued-resources", "create", [tpu_name], zone, project,
    f"--node-id={tpu_name}", *flags, f"--runtime-version={version}",
  )  # fmt: skip
  describe = _gcloud(
    "queued-resources", "describe", [tpu_name], zone, project, "--format=value(state.state)"
  )
  wait = (
    f'while true; do state="$({shlex.join(describe)})"; echo "queued resource {tpu_name}: $state"; '
    'case "$state" in ACTIVE) exit 0;; FAILED|SUSPENDED) exit 1;; esac; sleep 30; done'
  )
  return [
    (f"queue a request for {tpu_name} ({accelerator_type}, {version})", create),
    ("wait until the queued resource is ACTIVE (its VM exists then)", ["bash", "-c", wait]),
  ]


def install_steps(
  tpu_name: str,
  zone: str,
  *,
  project: str | None = None,
  repo_url: str | None = None,
  branch: str = "main",
  archive: str | None = None,
) -> list[tuple[str, list[str]]]:
  """Steps that put the source on every worker and pip-install it with jax[tpu].

  Without `repo_url`, this checkout's committed HEAD is packed with `git archive` (uncommitted
  changes are not included) and copied to every worker with scp; with it, each worker clones
  `branch`. The package is installed editable from ~/t5x_lite; its configs ship inside it.
  """
  steps = []
  if repo_url:
    fetch = (
      f"rm -rf {REMOTE_DIR} && git clone --depth=1 --branch={shlex.quote(branch)} "
      f"{shlex.quote(repo_url)} {REMOTE_DIR}"
    )
  else:
    archive = archive or os.path.join(tempfile.gettempdir(), f"t5x_lite-{tpu_name}.tar.gz")
    pack = ["git", "-C", REPO_ROOT, "archive", "--format=tar.gz", "--prefix=t5x_lite/"]
    steps.append((f"pack this checkout's HEAD into {archive}", [*pack, "-o", archive, "HEAD"]))
    copy = _gcloud(
      "tpu-vm", "scp", [archive, f"{tpu_name}:{REMOTE_ARCHIVE}"], zone, project, "--worker=all"
    )
    steps.append(("copy it to every worker", copy))
    fetch = f"rm -rf {REMOTE_DIR} && tar -xzf ~/{REMOTE_ARCHIVE} -C ~"
  install = (
    f"{fetch} && python3 -m pip install -U 'jax[tpu]' && "
    f"python3 -m pip install -e {REMOTE_DIR} {' '.join(EXTRA_PACKAGES)}"
  )
  steps.append(
    ("install jax[tpu] and t5x_lite on every worker", _ssh(tpu_name, zone, project, install))
  )
  return steps


def train_command(config: str, workdir: str, overrides: Sequence[tuple[str, str]] = ()) -> str:
  """The shell command each worker runs: `t5x-lite train` under nohup, logging to ~/.

  It refuses to start a second run on a worker where one is alive, appends to the log (a
  rerun after preemption keeps the history), and records the pid for `stop` / `status`.
  """
  if not workdir.startswith("gs://"):
    raise LaunchError(
      f"--workdir={workdir}: expected a gs:// path (every host of the slice must see the "
      "same checkpoints and the run must outlive the VM)"
    )
  train = ["t5x-lite", "train", "--config", config, "--workdir", workdir]
  train += [f"--config.{key}={value}" for key, value in overrides]
  return (
    f"cd {REMOTE_DIR} || exit 1; "
    f'if {_IS_RUNNING}; then echo "$(hostname): t5x-lite train is already running"; exit 1; fi; '
    'export PATH="$HOME/.local/bin:$PATH"; '
    f"nohup {shlex.join(train)} >> {LOG_FILE} 2>&1 < /dev/null & "
    f'echo $! > {PID_FILE}; echo "$(hostname): started t5x-lite train (pid $!), log in {LOG_FILE}"'
  )


def train_steps(
  tpu_name: str,
  zone: str,
  config: str,
  workdir: str,
  *,
  project: str | None = None,
  overrides: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, list[str]]]:
  remote = train_command(config, workdir, overrides)
  return [("start the same training on every worker", _ssh(tpu_name, zone, project, remote))]


def build_commands(
  tpu_name: str,
  zone: str,
  accelerator_type: str,
  config: str,
  workdir: str,
  *,
  project: str | None = None,
  runtime_version: str | None = None,
  overrides: Sequence[tuple[str, str]] = (),
  provisioning: str = "on-demand",
  queued: bool = False,
  repo_url: str | None = None,
  branch: str = "main",
  archive: str | None = None,
) -> list[list[str]]:
  """Every command of `launch up`: create the VM, install on every worker, start training."""
  steps = _up_steps(
    tpu_name, zone, accelerator_type, config, workdir, project=project,
    runtime_version=runtime_version, overrides=overrides, provisioning=provisioning,
    queued=queued, repo_url=repo_url, branch=branch, archive=archive,
  )  # fmt: skip
  return [argv for _, argv in steps]


def _up_steps(
  tpu_name, zone, accelerator_type, config, workdir, *, project, runtime_version, overrides,
  provisioning, queued, repo_url, branch, archive,
) -> list[tuple[str, list[str]]]:  # fmt: skip
  train = train_steps(tpu_name, zone, config, workdir, project=project, overrides=overrides)
  create = create_steps(
    tpu_name, zone, accelerator_type, project=project, runtime_version=runtime_version,
    provisioning=provisioning, queued=queued,
  )  # fmt: skip
  install = install_steps(
    tpu_name, zone, project=project, repo_url=repo_url, branch=branch, archive=archive
  )
  return create + install + train


def status_steps(tpu_name: str, zone: str, *, project: str | None = None, queued: bool = False):
  """The VM's state, then on every worker whether training runs and the log's last lines."""
  group = "queued-resources" if queued else "tpu-vm"
  remote = (
    f'if {_IS_RUNNING}; then echo "$(hostname): running (pid $(cat {PID_FILE}))"; '
    f'else echo "$(hostname): not running"; fi; tail -n 3 {LOG_FILE} 2>/dev/null'
  )
  return [
    ("the TPU's state", _gcloud(group, "describe", [tpu_name], zone, project)),
    ("training on each worker", _ssh(tpu_name, zone, project, remote)),
  ]


def logs_steps(
  tpu_name: str,
  zone: str,
  *,
  project: str | None = None,
  worker: str = "0",
  lines: int = 50,
  follow: bool = False,
):
  """The last `lines` of the training log of one worker (process 0 logs metrics: worker 0)."""
  tail = f"tail -n {int(lines)}{' -f' if follow else ''} {LOG_FILE}"
  return [(f"the training log of worker {worker}", _ssh(tpu_name, zone, project, tail, worker))]


def stop_steps(tpu_name: str, zone: str, *, project: str | None = None):
  """SIGTERM to the training on every worker: as on preemption, it checkpoints and exits 0."""
  remote = (
    f'if {_IS_RUNNING}; then kill -TERM "$(cat {PID_FILE})" && '
    'echo "$(hostname): sent SIGTERM"; else echo "$(hostname): not running"; fi'
  )
  return [("stop training (checkpoint, then exit)", _ssh(tpu_name, zone, project, remote))]


def delete_steps(tpu_name: str, zone: str, *, project: str | None = None, queued: bool = False):
  """Deletes the VM (a queued resource with --force deletes its VM too). Data on GCS stays."""
  if queued:
    argv = _gcloud("queued-resources", "delete", [tpu_name], zone, project, "--force", "--quiet")
  else:
    argv = _gcloud("tpu-vm", "delete", [tpu_name], zone, project, "--quiet")
  return [(f"delete {tpu_name}", argv)]


# ---------------------------------------------------------------------------------------------
# Command line.

ACTIONS = ("up", "create", "install", "train", "status", "logs", "stop", "delete")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="t5x-lite launch",
    description="Run t5x-lite training on a Cloud TPU VM (every worker) with gcloud.",
    epilog="Trailing --config.KEY=VALUE arguments are passed to `t5x-lite train` on every worker.",
    allow_abbrev=False,  # `--config.train.steps=5` must not be read as an abbreviation
  )
  parser.add_argument("action", choices=ACTIONS, help="up = create + install + train")
  parser.add_argument("--name", required=True, help="TPU VM (node) name")
  parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
  parser.add_argument("--project", help="GCP project (default: gcloud's core/project)")
  parser.add_argument("--accelerator-type", help="e.g. v4-8, v5litepod-16, v5p-8, v6e-8")
  parser.add_argument("--runtime-version", help="TPU software version (default: by generation)")
  kind = parser.add_mutually_exclusive_group()
  kind.add_argument("--spot", action="store_true", help="a Spot VM (preemptible, cheaper)")
  kind.add_argument("--preemptible", action="store_true", help="a preemptible VM")
  parser.add_argument("--queued", action="store_true", help="create through a queued resource")
  parser.add_argument(
    "--config", help="config spec: a shipped config (e.g. t5.py:small) or a path in the repo"
  )
  parser.add_argument("--workdir", help="gs://bucket/run: checkpoints, metrics.jsonl, TensorBoard")
  parser.add_argument("--repo-url", help="git URL each worker clones (default: copy this checkout)")
  parser.add_argument("--branch", default="main", help="branch or tag to clone with --repo-url")
  parser.add_argument("--archive", help="local path of the packed checkout (default: a temp file)")
  parser.add_argument("--worker", default="0", help="logs: which worker")
  parser.add_argument("--lines", type=int, default=50, help="logs: how many lines")
  parser.add_argument("--follow", action="store_true", help="logs: keep following the log")
  parser.add_argument("--no-validate", action="store_true", help="skip checking the config here")
  parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  return parser


def _need(args: argparse.Namespace, *names: str) -> None:
  missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
  if missing:
    raise LaunchError(f"launch {args.action}: missing {', '.join(missing)}")


def _steps_for(args: argparse.Namespace, overrides: list[tuple[str, str]]):
  target = dict(project=args.project)
  provisioning = "spot" if args.spot else "preemptible" if args.preemptible else "on-demand"
  if args.action in ("up", "train"):
    _need(args, "config", "workdir")
    if not args.no_validate:
      _validate_config(args.config, overrides)
  if args.action in ("up", "create"):
    _need(args, "accelerator_type")
  if args.action == "up":
    return _up_steps(
      args.name, args.zone, args.accelerator_type, args.config, args.workdir,
      runtime_version=args.runtime_version, overrides=overrides, provisioning=provisioning,
      queued=args.queued, repo_url=args.repo_url, branch=args.branch, archive=args.archive,
      **target,
    )  # fmt: skip
  if args.action == "create":
    return create_steps(
      args.name, args.zone, args.accelerator_type, runtime_version=args.runtime_version,
      provisioning=provisioning, queued=args.queued, **target,
    )  # fmt: skip
  if args.action == "install":
    return install_steps(
      args.name, args.zone, repo_url=args.repo_url, branch=args.branch, archive=args.archive,
      **target,
    )  # fmt: skip
  if args.action == "train":
    return train_steps(
      args.name, args.zone, args.config, args.workdir, overrides=overrides, **target
    )
  if args.action == "status":
    return status_steps(args.name, args.zone, queued=args.queued, **target)
  if args.action == "logs":
    return logs_steps(
      args.name, args.zone, worker=args.worker, lines=args.lines, follow=args.follow, **target
    )
  if args.action == "stop":
    return stop_steps(args.name, args.zone, **target)
  return delete_steps(args.name, args.zone, queued=args.queued, **target)


def _validate_config(spec: str, overrides: list[tuple[str, str]]) -> None:
  """Loads and validates the config here, so a typo fails before a TPU is paid for."""
  get_config(spec, overrides)


def main(argv: Sequence[str] | None = None) -> int:
  """`t5x-lite launch ACTION ...`; returns the exit code (0, or that of the failed command)."""
  args, rest = _parser().parse_known_args(argv)
  try:
    overrides = parse_overrides(rest)
    steps = _steps_for(args, overrides)
  except (LaunchError, ConfigError) as e:
    print(f"t5x-lite launch: error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    for description, argv_ in steps:
      print(f"# {description}")
      print(shlex.join(argv_))
    return 0
  for index, (description, argv_) in enumerate(steps, 1):
    print(f"[{index}/{len(steps)}] {description}: {shlex.join(argv_)}", flush=True)
    try:
      code = subprocess.run(argv_, check=False).returncode
    except FileNotFoundError:
      print(
        f"t5x-lite launch: {argv_[0]!r} not found: install the Google Cloud CLI "
        "(https://cloud.google.com/sdk/docs/install) and run `gcloud init`",
        file=sys.stderr,
      )
      return 127
    if code != 0:
      print(
        f"t5x-lite launch: step {index}/{len(steps)} ({description}) failed with exit code "
        f"{code}; the steps after it did not run. Command:\n  {shlex.join(argv_)}",
        file=sys.stderr,
      )
      return code
  return 0


if __name__ == "__main__":
  sys.exit(main())
