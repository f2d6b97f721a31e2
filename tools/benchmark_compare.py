"""`benchmark.py compare`: a peer implementation and t5x_lite on the same shape, interleaved.

Each pair runs the peer script (from ../shared/peers/, in its own venv, a fresh process that
compiles, warms up and times `--steps` steps) and then our step the same way: a fresh process
(this file run as a script) that compiles the loop's own jitted `train_step`, warms it up and
times `--steps` steps. So both sides see the same machine state, and neither runs while the
other's process holds its buffers: on these VMs a peer timed while our process merely held its
2 GB of idle state ran 1.4-1.9x slower (5.3 s alone, 7.5-10 s beside it; 2026-12-02).
`--ours-process shared` keeps the older protocol (ours compiled once in this process).
`--pairs` pairs, alternating peer, ours, peer, ours. Each pair gives a speed ratio
(peer step time / our step time: > 1 means t5x_lite is faster); the table shows every pair and
the median with the spread (min–max) of the pairs, the CPU model and the load before each run.

  python tools/benchmark.py compare --peer flax_gpt2 --dtype float32 --pairs 3 --steps 6
  python tools/benchmark.py compare --peer torch_gpt2 --dtype bfloat16      # torch autocast bf16
  python tools/benchmark.py compare --peer torch_gpt2 --dtype bfloat16 --peer-arg=--compile
  python tools/benchmark.py compare --peer flax_t5 --dtype float32
  python tools/benchmark.py compare --peer seqio_span                        # data pipeline

Peer python: --peer-python, else $PEERBENCH_DIR/venv_<name>/bin/python (PEERBENCH_DIR defaults
to /tmp/peerbench; make the venvs with ../shared/peers/setup_venvs.sh). Our side takes any
`--config.x=y` override (e.g. --config.model.loss_chunk_size=256).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
from benchmark_core import block, build_step, load_config, machine_info, tokens_per_step

from t5x_lite import config as config_lib
from t5x_lite import partitioning
from t5x_lite.models import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEERS_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "peers")

# name: (script, venv, our config, our overrides, kind)
PEERS: dict[str, dict[str, Any]] = {
  "flax_gpt2": dict(script="peer_flax_gpt2.py", venv="hfflax", config="gpt.py:gpt2_small"),
  "torch_gpt2": dict(script="peer_torch_gpt2.py", venv="torch", config="gpt.py:gpt2_small"),
  "flax_t5": dict(
    script="peer_flax_t5.py",
    venv="hfflax",
    config="t5.py:t5_small",
    overrides=[("optimizer.name", "adamw"), ("model.dropout_rate", "0.0")],
  ),  # fmt: skip
  "seqio_span": dict(script="peer_seqio_span.py", venv="seqio", config=""),
}


def peer_python(name: str, given: str) -> str:
  if given:
    return given
  root = os.environ.get("PEERBENCH_DIR", "/tmp/peerbench")
  path = os.path.join(root, f"venv_{PEERS[name]['venv']}", "bin", "python")
  if not os.path.exists(path):
    raise SystemExit(
      f"no python for peer {name!r} at {path}: make the venv with "
      f"`bash ../shared/peers/setup_venvs.sh {PEERS[name]['venv']}` or pass --peer-python"
    )
  return path


def peer_command(args, name: str) -> list[str]:
  """The peer script's command line for the compared shape."""
  script = os.path.join(args.peers_dir or DEFAULT_PEERS_DIR, PEERS[name]["script"])
  if not os.path.exists(script):
    raise SystemExit(f"peer script {script} does not exist (--peers-dir)")
  command = [peer_python(name, args.peer_python), script]
  peer_dtype = args.peer_dtype or args.dtype
  if name == "seqio_span":
    command += ["--vocab-size", "32000", "--batch", "8", "--seconds", str(args.data_seconds)]
  elif name == "flax_t5":
    inputs, targets = t5_lengths(args.length)
    command += ["--batch", str(args.batch), "--inputs-len", str(inputs), "--targets-len",
                str(targets), "--dtype", peer_dtype]  # fmt: skip
  else:
    command += ["--batch", str(args.batch), "--seq-len", args.length.split(",")[0]]
    if name == "flax_gpt2":
      command += ["--dtype", peer_dtype]
    elif peer_dtype == "bfloat16":
      command += ["--autocast-bf16"]
  if name != "seqio_span":
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
  return command + list(args.peer_arg)


def t5_lengths(text: str) -> tuple[int, int]:
  if "=" in text:
    parts = dict(p.split("=") for p in text.split(","))
    return int(parts["inputs"]), int(parts["targets"])
  return 512, 114


def _run_json(who: str, command: list[str], timeout: int, env=None) -> dict[str, Any]:
  """Runs `command` in a fresh process; its last JSON line, with the wall time and the load
  before it."""
  load = os.getloadavg()[0]
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    tail = (done.stderr or done.stdout)[-2000:]
    raise SystemExit(f"{who} {' '.join(command)} failed (exit {done.returncode}):\n{tail}")
  result = json.loads(lines[-1])
  result["_load_before"] = load
  result["_wall_s"] = time.perf_counter() - start
  return result


def run_peer(command: list[str], timeout: int) -> dict[str, Any]:
  """Runs the peer script (see `_run_json`)."""
  # Our own XLA CPU settings (e.g. YNNPACK off) are not the peer's: its jax is another version.
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "_ynn_" not in f)
  return _run_json("peer", command, timeout, env)


class OurStep:
  """Our training step for the peer's shape, compiled once; `run(n)` times n steps."""

  def __init__(self, args, overrides):
    spec = PEERS[args.peer]["config"]
    overrides = list(PEERS[args.peer].get("overrides", [])) + list(overrides)
    if args.peer == "flax_t5":
      inputs, targets = t5_lengths(args.length)
      lengths = {"inputs": inputs, "targets": targets}
    else:
      lengths = {"targets": int(args.length.split(",")[0])}
    self.config = load_config(spec, overrides, batch=args.batch, lengths=lengths, dtype=args.dtype)
    self.train_step, self.state, self.batch, self.rng, self.mesh, self.rules = build_step(
      self.config, jax.devices()[:1]
    )
    with partitioning.use_mesh(self.mesh, self.rules):
      start = time.perf_counter()
      self.compiled = self.train_step.lower(self.state, self.batch, self.rng).compile()
      self.compile_s = time.perf_counter() - start
    self.run(args.warmup)
    model = build_model(self.config.model)
    self.flops_per_step = model.flops_per_token(lengths) * tokens_per_step(self.config)

  def facts(self) -> dict[str, Any]:
    return {"dtype": self.config.model.dtype, "compile_s": self.compile_s,
            "flops_per_step": self.flops_per_step}  # fmt: skip

  def run(self, steps: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    times = []
    with partitioning.use_mesh(self.mesh, self.rules):
      for _ in range(steps):
        start = time.perf_counter()
        self.state, metrics = self.compiled(self.state, self.batch, self.rng)
        block((self.state, metrics))
        times.append(time.perf_counter() - start)
    return {"step_time_s_median": statistics.median(times) if times else None,
            "step_time_s_all": times, "_load_before": load}  # fmt: skip


_OURS_FIELDS = ("peer", "dtype", "batch", "length", "warmup")


def run_ours_fresh(args, overrides, timeout: int) -> dict[str, Any]:
  """Our step in a fresh process (this file as a script): compile, warm up, time `args.steps`."""
  spec = {k: getattr(args, k) for k in _OURS_FIELDS}
  spec.update(steps=args.steps, overrides=[list(o) for o in overrides])
  return _run_json(
    "our step", [sys.executable, os.path.abspath(__file__), json.dumps(spec)], timeout
  )


def _ours_main(spec_json: str) -> None:
  """Entry of `run_ours_fresh`'s process: prints one JSON line."""
  import argparse  # noqa: PLC0415

  spec = json.loads(spec_json)
  args = argparse.Namespace(**{k: spec[k] for k in _OURS_FIELDS})
  ours = OurStep(args, [tuple(o) for o in spec["overrides"]])
  print(json.dumps(dict(ours.run(spec["steps"]), **ours.facts())))


def our_data(args) -> dict[str, Any]:
  import benchmark_data  # noqa: PLC0415 (tools/ is on sys.path)

  load = os.getloadavg()[0]
  result = benchmark_data.run(min_tokens=args.data_tokens, vocab_path=args.data_vocab_path)
  return {"tokens_per_cpu_s": result["span_corruption"]["tokens_per_cpu_second"],
          "_load_before": load}  # fmt: skip


def cmd_compare(args, overrides) -> dict[str, Any]:
  name = args.peer
  command = peer_command(args, name)
  print("peer: " + " ".join(command), flush=True)
  data = name == "seqio_span"
  fresh = args.ours_process == "fresh" and not data
  ours_runner = None if data or fresh else OurStep(args, overrides)
  if ours_runner is not None:
    print(f"ours: {PEERS[name]['config']} {dict(overrides)} dtype {ours_runner.config.model.dtype}, "
          f"compiled in {ours_runner.compile_s:.1f} s", flush=True)  # fmt: skip
  elif fresh:
    print(f"ours: {PEERS[name]['config']} {dict(overrides)}, a fresh process each pair", flush=True)
  pairs = []
  for index in range(args.pairs):
    peer = run_peer(command, args.timeout)
    if data:
      ours = our_data(args)
    elif fresh:
      ours = run_ours_fresh(args, overrides, args.timeout)
    else:
      ours = ours_runner.run(args.steps)
    if data:  # rates: higher is better
      peer_value = peer["runs"][0]["nonpad_tokens_per_cpu_s"]
      our_value = ours["tokens_per_cpu_s"]
      ratio = our_value / peer_value
    else:  # step times: lower is better
      peer_value, our_value = peer["step_time_s_median"], ours["step_time_s_median"]
      ratio = peer_value / our_value
    pairs.append({"pair": index, "peer": peer_value, "ours": our_value, "speed_ratio": ratio,
                  "load_before_peer": peer["_load_before"], "load_before_ours": ours["_load_before"],
                  "peer_result": peer, "ours_result": ours})  # fmt: skip
    print(f"  pair {index}: peer {peer_value:.4g}, ours {our_value:.4g} -> {ratio:.2f}x "
          f"(load {peer['_load_before']:.1f} / {ours['_load_before']:.1f})", flush=True)  # fmt: skip
  ratios = [p["speed_ratio"] for p in pairs]
  unit = "non-padding tokens per CPU-s" if data else "step s (median)"
  summary = {
    "peer": name,
    "peer_command": command,
    "unit": unit,
    "speed_ratio_median": statistics.median(ratios),
    "speed_ratio_min": min(ratios),
    "speed_ratio_max": max(ratios),
    "pairs": pairs,
    "machine_at_end": machine_info(),
  }
  if not data:
    facts = pairs[0]["ours_result"] if fresh else ours_runner.facts()
    summary.update(
      ours_config=PEERS[name]["config"], ours_overrides=dict(overrides),
      ours_process=args.ours_process, ours_dtype=facts["dtype"],
      ours_compile_s=facts["compile_s"], ours_flops_per_step=facts["flops_per_step"],
      peer_flops_per_step=pairs[0]["peer_result"].get("flops_per_step"),
    )  # fmt: skip
  header = ["pair", f"peer {unit}", f"ours {unit}", "ours vs peer (speed)", "load peer / ours"]
  rows = [(p["pair"], f"{p['peer']:.4g}", f"{p['ours']:.4g}", f"{p['speed_ratio']:.2f}x",
           f"{p['load_before_peer']:.1f} / {p['load_before_ours']:.1f}") for p in pairs]  # fmt: skip
  rows.append(("median", "", "", f"{summary['speed_ratio_median']:.2f}x "
               f"({summary['speed_ratio_min']:.2f}-{summary['speed_ratio_max']:.2f})", ""))  # fmt: skip
  return summary, header, rows


def add_arguments(p) -> None:
  p.add_argument("--peer", choices=tuple(PEERS), required=True)
  p.add_argument("--peer-python", default="", help="the peer venv's python (else PEERBENCH_DIR)")
  p.add_argument("--peers-dir", default=os.environ.get("PEERS_DIR", ""),
                 help=f"the peer scripts (default {DEFAULT_PEERS_DIR})")  # fmt: skip
  p.add_argument("--peer-arg", action="append", default=[],
                 help="extra argument for the peer script, e.g. --peer-arg=--compile")  # fmt: skip
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--peer-dtype", choices=("float32", "bfloat16"), default="",
                 help="the peer's dtype (default: --dtype; torch: bfloat16 = autocast)")  # fmt: skip
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--length", default="256", help="'256', or 'inputs=512,targets=114' for T5")
  p.add_argument("--pairs", type=int, default=3)
  p.add_argument(
    "--ours-process",
    choices=("fresh", "shared"),
    default="fresh",
    help="fresh: our step in a new process each pair, as the peer (default)",
  )
  p.add_argument("--steps", type=int, default=6, help="timed steps per run, each side")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--timeout", type=int, default=1800, help="seconds for one peer run")
  p.add_argument("--data-seconds", type=float, default=20.0, help="seqio_span: peer seconds")
  p.add_argument("--data-tokens", type=int, default=4_000_000, help="seqio_span: our tokens")
  p.add_argument("--data-vocab-path", default="",
                 help="seqio_span: our vocabulary (a tokenizer folder from `t5x-lite tokenizer "
                      "train`, or a .model); default: the SentencePiece the peer uses too")  # fmt: skip


__all__ = ["PEERS", "add_arguments", "cmd_compare", "config_lib"]

if __name__ == "__main__":
  _ours_main(sys.argv[1])
