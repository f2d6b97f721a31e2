"""Benchmarks of t5x_lite on this machine: each subcommand prints a table and writes JSON (--out).

  step        one training step of a config (the loop's jitted train_step, AdamW by default):
              compile time, median step time, tokens/s, model TFLOP/s, MFU against a matmul peak
              measured here in the same dtype, peak memory.
  compile     compile time of the gpt2_small-width decoder at several depths, scan on / off.
  generate    decoding tokens/s with and without the KV cache (tiny and gpt2_small shapes).
  checkpoint  how long an async Orbax save blocks the training loop, as a fraction of a step.
  presets     on 8 fake CPU devices: step time of each sharding preset relative to `data`.
  data        the data pipeline's throughput (tools/benchmark_data.py).
  compare     a peer implementation (../shared/peers/, own venv) and our step on the same shape,
              interleaved, with the speed ratio and its spread (tools/benchmark_compare.py).
  distill     a distillation teacher (2x the student's layers by default) and its student on
              the same batch: forward (inference) and train step medians, the student's
              speed-up over the teacher (DistilBERT: ~1.6x at inference for 6 vs 12 layers), and
              the distillation step (student + frozen teacher in one jitted step).

  python tools/benchmark.py distill --config distilbert.py:distilbert_base --batch 8 --length 128

  python tools/benchmark.py step --config gpt.py:gpt2_small --batch 4 --length 256 \\
      --dtype float32 --out step.json [--config.model.remat=full ...]

The measuring itself (peak probe, step built as the loop builds it) lives in benchmark_core.py.
See docs/benchmarks.md for the figures of this repository's CPU and how to read them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def _fake_devices_from_argv(argv: list[str]) -> int:
  """8 for `presets`, N for `--fake-devices N`, else 0 (read before jax is imported)."""
  count = 8 if argv[:1] == ["presets"] else 0
  for i, arg in enumerate(argv):
    if arg == "--fake-devices" and i + 1 < len(argv):
      count = int(argv[i + 1])
    elif arg.startswith("--fake-devices="):
      count = int(arg.split("=", 1)[1])
  return count


if __name__ == "__main__":
  _count = _fake_devices_from_argv(sys.argv[1:])
  if _count:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={_count}".strip()

import benchmark_compare  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from benchmark_core import (  # noqa: E402
  bench_step,
  block,
  build_step,
  compile_seconds,
  load_config,
  machine_info,
  measure_matmul_peak,
  parse_lengths,
  synthetic_batch,
  time_parts,
)

from t5x_lite import checkpoints, decoding, partitioning, reporting  # noqa: E402
from t5x_lite import config as config_lib  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402
from t5x_lite.training import distill  # noqa: E402
from t5x_lite.training.setup import RunSetup  # noqa: E402

__all__ = ["main", "synthetic_batch", "parse_lengths", "measure_matmul_peak", "build_step"]

# ---------------------------------------------------------------------------------------------
# Subcommands.


def _peak_for(dtype: str, args) -> tuple[float, float | None, str]:
  """(peak FLOP/s, peak FLOP/s per CPU-second or None, source) of one device in `dtype`:
  --peak-tflops, a known accelerator's table entry, or a matmul measured here."""
  if args.peak_tflops:
    return args.peak_tflops * 1e12, None, "given"
  known = reporting.peak_flops_per_device(dtype)
  if known:
    return known, None, "table"
  wall, cpu = measure_matmul_peak(dtype, tuple(args.peak_sizes))
  return wall, cpu, f"best matmul of sizes {args.peak_sizes}"


def cmd_step(args, overrides) -> dict[str, Any]:
  config = config_lib.get_config(args.config, overrides, validate_config=False)
  lengths = parse_lengths(args.length, config) if args.length else None
  config = load_config(args.config, overrides, batch=args.batch, lengths=lengths, dtype=args.dtype)
  peak, peak_cpu, peak_source = _peak_for(config.model.dtype, args)
  devices = None
  if args.preset:
    with config.unlocked():
      config.mesh.update(partitioning.PRESETS[args.preset])
  else:
    devices = jax.devices()[:1]
  result = bench_step(config, steps=args.steps, warmup=args.warmup, devices=devices)
  result.update(config=args.config, overrides=dict(overrides), preset=args.preset)
  if peak_cpu is not None:  # measured: again after the steps, the load may have changed
    wall, cpu = measure_matmul_peak(config.model.dtype, tuple(args.peak_sizes))
    result["peak_tflops_before_after"] = (peak / 1e12, wall / 1e12)
    peak, peak_cpu = (peak + wall) / 2, (peak_cpu + cpu) / 2
    result["peak_tflops_per_cpu_s"] = peak_cpu / 1e12
    result["mfu_cpu_time"] = result["model_tflops_per_cpu_s"] * 1e12 / peak_cpu
  # Fake CPU devices share the machine's cores: the machine's peak is the peak of them all.
  devices_peak = 1 if jax.default_backend() == "cpu" else result["devices"]
  result["peak_tflops"] = peak / 1e12
  result["peak_source"] = peak_source
  result["mfu"] = result["model_tflops"] * 1e12 / (peak * devices_peak)
  rows = [
    ("config", f"{args.config} {' '.join(f'{k}={v}' for k, v in overrides)}".strip()),
    ("batch x lengths", f"{result['batch']} x {result['lengths']}"),
    ("dtype / optimizer", f"{result['dtype']} / {result['optimizer']}"),
    ("devices", f"{result['devices']} ({args.preset or 'single device'})"),
    ("compile", f"{result['compile_s']:.1f} s"),
    (
      "step (median)",
      f"{result['step_s'] * 1e3:.0f} ms (min {result['step_s_min'] * 1e3:.0f}, "
      f"max {result['step_s_max'] * 1e3:.0f}, n={result['steps_timed']})",
    ),
    ("tokens/s", f"{result['tokens_per_s']:.0f}"),
    ("model TFLOP/s", f"{result['model_tflops']:.3f}"),
    ("peak TFLOP/s", f"{result['peak_tflops']:.3f} ({peak_source})"),
    ("MFU", f"{100 * result['mfu']:.1f}%"),
    ("MFU by CPU time", f"{100 * result.get('mfu_cpu_time', float('nan')):.1f}%"),
    ("step CPU time / wall", f"{result['step_cpu_s'] / result['step_s']:.2f} cores"),
    ("peak RSS", f"{result['peak_rss_gib']:.2f} GiB"),
  ]
  if result["device_peak_gib"]:
    rows.append(("device peak memory", f"{result['device_peak_gib']:.2f} GiB"))
  if args.breakdown:
    result["breakdown"] = time_parts(config)
    for name, (wall, cpu) in result["breakdown"].items():
      rows.append((f"  {name} alone", f"{wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU"))
  _print_table(["metric", "value"], rows)
  return result


def cmd_peak(args, overrides) -> dict[str, Any]:
  del overrides
  result = {}
  for mode in ("float32", "bfloat16", "bfloat16_out"):
    result[mode] = [x / 1e12 for x in measure_matmul_peak(mode, tuple(args.peak_sizes))]
  names = {
    "float32": "float32",
    "bfloat16": "bf16 operands, f32 accum",
    "bfloat16_out": "bf16 in/out",
  }
  _print_table(
    ["matmul mode", "TFLOP/s", "TFLOP per CPU-s"],
    [(names[m], f"{w:.3f}", f"{c:.3f}") for m, (w, c) in result.items()],
  )
  return {"sizes": args.peak_sizes, "tflops": result}


def cmd_compile(args, overrides) -> dict[str, Any]:
  results = []
  for layers in args.layers:
    for scan in args.scan:
      config = load_config(
        args.config, overrides, batch=args.batch, lengths={"targets": args.length}
      )
      with config.unlocked():
        config.model.num_layers = layers
        config.model.scan_layers = scan == "on"
      lower_s, compile_s = compile_seconds(config)
      results.append({"layers": layers, "scan": scan, "lower_s": lower_s, "compile_s": compile_s})
      print(
        f"  layers {layers:3d} scan {scan:3s}: lower {lower_s:.1f} s, compile {compile_s:.1f} s"
      )
  _print_table(
    ["layers", "scan", "trace+lower s", "XLA compile s", "total s"],
    [
      (r["layers"], r["scan"], f"{r['lower_s']:.1f}", f"{r['compile_s']:.1f}",
       f"{r['lower_s'] + r['compile_s']:.1f}")
      for r in results
    ],
  )  # fmt: skip
  return {"config": args.config, "batch": args.batch, "length": args.length, "runs": results}


def _random_params(model, lengths: dict[str, int]):
  shapes = model.input_shapes(1, lengths)
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), shapes))


def cmd_generate(args, overrides) -> dict[str, Any]:
  runs = []
  for spec in args.configs:
    config = load_config(spec, overrides)
    model = build_model(config.model)
    params = _random_params(model, {"targets": 8})
    for batch in args.batches:
      prompts = np.random.default_rng(0).integers(3, config.model.vocab_size, (batch, args.prompt))
      lengths = np.full((batch,), args.prompt, np.int32)
      for use_cache in (True, False):
        generate = functools.partial(
          decoding.generate_tokens,
          model,
          params,
          jnp.asarray(prompts, jnp.int32),
          jnp.asarray(lengths),
          jax.random.key(0),
          max_new_tokens=args.new_tokens,
          eos_id=-1,  # random weights may emit EOS early: never stop, time every token
          use_cache=use_cache,
        )
        start = time.perf_counter()
        block(generate())
        first_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
          start = time.perf_counter()
          block(generate())
          times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        runs.append(
          {
            "config": spec,
            "batch": batch,
            "prompt": args.prompt,
            "new_tokens": args.new_tokens,
            "kv_cache": use_cache,
            "compile_and_first_s": first_s,
            "seconds": seconds,
            "tokens_per_s": batch * args.new_tokens / seconds,
          }
        )
        print(f"  {spec} batch {batch} cache {use_cache}: {runs[-1]['tokens_per_s']:.1f} tok/s")
  _print_table(
    ["config", "batch", "KV cache", "new tokens/s", "s per call", "compile+first s"],
    [
      (r["config"], r["batch"], "on" if r["kv_cache"] else "off", f"{r['tokens_per_s']:.1f}",
       f"{r['seconds']:.2f}", f"{r['compile_and_first_s']:.1f}")
      for r in runs
    ],
  )  # fmt: skip
  return {"prompt": args.prompt, "new_tokens": args.new_tokens, "runs": runs}


def cmd_checkpoint(args, overrides) -> dict[str, Any]:
  config = config_lib.get_config(args.config, overrides, validate_config=False)
  lengths = parse_lengths(args.length, config) if args.length else None
  config = load_config(args.config, overrides, batch=args.batch, lengths=lengths)
  train_step, state, batch, rng, mesh, rules = build_step(config, jax.devices()[:1])
  directory = tempfile.mkdtemp(prefix="t5x_lite_benchmark_ckpt_")
  checkpointer = checkpoints.Checkpointer(directory, keep=1, async_save=True)

  def timed_step(state):
    start = time.perf_counter()
    state, step_metrics = train_step(state, batch, rng)
    block((state, step_metrics))
    return state, time.perf_counter() - start

  saves = []
  with partitioning.use_mesh(mesh, rules):
    for _ in range(args.warmup):
      state, _ = timed_step(state)
    baseline = []
    for _ in range(args.steps):
      state, seconds = timed_step(state)
      baseline.append(seconds)
    step_s = statistics.median(baseline)
    for save_index in range(args.saves):
      step = int(jax.device_get(state.step))
      start = time.perf_counter()
      checkpointer.save(step, state, {0: {}}, 1, config, force=True)
      blocked_s = time.perf_counter() - start
      after = []
      for _ in range(args.steps_after):
        state, seconds = timed_step(state)
        after.append(seconds)
      start = time.perf_counter()
      checkpointer.wait()
      wait_s = time.perf_counter() - start
      saves.append(
        {
          "save": save_index,
          "blocked_s": blocked_s,
          "blocked_fraction_of_step": blocked_s / step_s,
          "steps_after_s": after,
          "slowdown_steps_after": (sum(after) - len(after) * step_s) / step_s,
          "remaining_wait_s": wait_s,
        }
      )
  checkpointer.close()
  size = sum(
    os.path.getsize(os.path.join(root, name))
    for root, _, names in os.walk(directory)
    for name in names
  )
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  shutil.rmtree(directory, ignore_errors=True)  # a 1.3 GB checkpoint of gpt2_small: not kept
  blocked = statistics.median(s["blocked_s"] for s in saves)
  _print_table(
    ["metric", "value"],
    [
      ("config", f"{args.config} batch {config.train.batch_size} {dict(config.data.feature_lengths)}"),
      ("train state", f"{state_bytes / 2**20:.0f} MiB ({size / 2**20:.0f} MiB on disk, 1 step)"),
      ("step (median, no save)", f"{step_s * 1e3:.0f} ms"),
      ("save() blocks the loop (median)", f"{blocked * 1e3:.0f} ms = {100 * blocked / step_s:.1f}% of a step"),
      ("slowdown of the next steps (mean)",
       f"{100 * statistics.mean(s['slowdown_steps_after'] for s in saves):.0f}% of a step"),
    ],
  )  # fmt: skip
  return {
    "config": args.config,
    "batch": config.train.batch_size,
    "lengths": dict(config.data.feature_lengths),
    "state_mib": state_bytes / 2**20,
    "disk_mib": size / 2**20,
    "step_s": step_s,
    "blocked_s_median": blocked,
    "blocked_fraction_of_step": blocked / step_s,
    "saves": saves,
  }


def cmd_presets(args, overrides) -> dict[str, Any]:
  if jax.device_count() < 2:
    raise SystemExit("presets needs several devices: run it as `benchmark.py presets ...`")
  runs = []
  for preset in args.presets:
    config = config_lib.get_config(args.config, overrides, validate_config=False)
    with config.unlocked():
      config.train.batch_size = args.batch
      config.data.feature_lengths = {"targets": args.length}
      config.mesh.update(partitioning.PRESETS[preset])
    config_lib.validate(config, num_devices=jax.device_count())
    result = bench_step(config, steps=args.steps, warmup=args.warmup)
    result["preset"] = preset
    runs.append(result)
    print(f"  {preset}: {result['step_s'] * 1e3:.0f} ms/step, compile {result['compile_s']:.0f} s")
  base = runs[0]["step_s"]
  for r in runs:
    r["relative_to_first"] = r["step_s"] / base
  _print_table(
    ["preset", "step ms", f"vs {runs[0]['preset']}", "compile s", "tokens/s"],
    [
      (r["preset"], f"{r['step_s'] * 1e3:.0f}", f"{r['relative_to_first']:.2f}x",
       f"{r['compile_s']:.1f}", f"{r['tokens_per_s']:.0f}")
      for r in runs
    ],
  )  # fmt: skip
  return {"config": args.config, "batch": args.batch, "length": args.length, "runs": runs}


def cmd_data(args, overrides) -> dict[str, Any]:
  del overrides
  sys.path.insert(0, HERE)
  try:
    import benchmark_data  # noqa: PLC0415
  except ImportError as e:
    raise SystemExit(f"tools/benchmark_data.py is not importable: {e}") from e
  kwargs = {"min_tokens": args.min_tokens}
  if args.corpus:
    kwargs["corpus"] = args.corpus
  result = benchmark_data.run(**kwargs)
  print(json.dumps(result, indent=2, default=str))
  return result


def cmd_compare(args, overrides) -> dict[str, Any]:
  summary, header, rows = benchmark_compare.cmd_compare(args, overrides)
  _print_table(header, rows)
  return summary


# ---------------------------------------------------------------------------------------------
# Output and command line.


def _median_seconds(call, steps: int, warmup: int) -> float:
  """Median wall seconds of `call()` (blocked on its result) over `steps` after `warmup`."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    block(call())
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def _distill_setup(config, devices) -> tuple[RunSetup, Any, dict]:
  """(RunSetup, fresh state, global synthetic batch) of `config` at its batch and lengths."""
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  model = build_model(config.model)
  batch_size = config.train.batch_size
  setup = RunSetup.create(config, devices, input_shapes=model.input_shapes(batch_size, lengths))
  batch = synthetic_batch(setup.model, batch_size, lengths, config.model.vocab_size)
  return setup, setup.init_state(), setup.global_batch(batch)


def cmd_distill(args, overrides) -> dict[str, Any]:
  config = config_lib.get_config(args.config, overrides, validate_config=False)
  lengths = parse_lengths(args.length, config) if args.length else None
  student = load_config(args.config, overrides, batch=args.batch, lengths=lengths, dtype=args.dtype)
  layers = args.teacher_layers or 2 * student.model.num_layers
  teacher = load_config(args.teacher_config or args.config,
                        overrides + [("model.num_layers", str(layers))], batch=args.batch,
                        lengths=lengths, dtype=args.dtype)  # fmt: skip
  devices = jax.devices()[:1]
  result: dict[str, Any] = {"config": args.config, "overrides": dict(overrides)}
  for name, config in (("teacher", teacher), ("student", student)):
    step = bench_step(config, steps=args.steps, warmup=args.warmup, devices=devices)
    setup, state, batch = _distill_setup(config, devices)
    forward = setup.jit_eval_step()
    with setup.use_mesh():
      forward_s = _median_seconds(lambda: forward(state.params, batch), args.steps, args.warmup)  # noqa: B023
    result[name] = {
      "layers": config.model.num_layers, "params": setup.num_params, "batch": step["batch"],
      "lengths": step["lengths"], "forward_s": forward_s, "train_step_s": step["step_s"],
    }  # fmt: skip
    print(f"  {name}: {config.model.num_layers} layers, "
          f"forward {forward_s * 1e3:.1f} ms, train step {step['step_s'] * 1e3:.1f} ms")  # fmt: skip
  # The distillation step: the student's train step with the frozen teacher's forward inside.
  setup, state, batch = _distill_setup(student, devices)
  teacher_setup = setup.teacher_setup(teacher)
  params = teacher_setup.init_state().params  # random weights time the same as trained ones
  frozen = distill.Teacher(teacher_setup.model, params, teacher_setup.param_shardings, "random")
  step = setup.jit_train_step(teacher=frozen)
  rng = jax.random.key(1)
  with setup.use_mesh():
    compiled = step.lower(state, batch, rng, params).compile()
    holder = [state]

    def distill_call():
      holder[0], metrics = compiled(holder[0], batch, rng, params)
      return holder[0], metrics

    result["distill_step_s"] = _median_seconds(distill_call, args.steps, args.warmup)
  t, s = result["teacher"], result["student"]
  result["speedup_forward"] = t["forward_s"] / s["forward_s"]
  result["speedup_train_step"] = t["train_step_s"] / s["train_step_s"]
  _print_table(
    ["", "layers", "params", "forward (ms)", "train step (ms)"],
    [
      ("teacher", t["layers"], f"{t['params']:,}", f"{t['forward_s'] * 1e3:.1f}",
       f"{t['train_step_s'] * 1e3:.1f}"),
      ("student", s["layers"], f"{s['params']:,}", f"{s['forward_s'] * 1e3:.1f}",
       f"{s['train_step_s'] * 1e3:.1f}"),
      ("distillation step", "", "", "", f"{result['distill_step_s'] * 1e3:.1f}"),
      ("student speed-up", "", "", f"{result['speedup_forward']:.2f}x",
       f"{result['speedup_train_step']:.2f}x"),
    ],
  )  # fmt: skip
  return result


def _print_table(header: list[str], rows: list[tuple]) -> None:
  cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
  lines.insert(1, "-+-".join("-" * w for w in widths))
  print("\n".join(lines), flush=True)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)

  def add(name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--out", default="", help="write the results (and the machine) as JSON here")
    p.add_argument("--fake-devices", type=int, default=0, help="fake CPU devices (set before jax)")
    p.add_argument("--peak-sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="matmul sizes of the peak probe (the best counts)")  # fmt: skip
    p.add_argument("--peak-tflops", type=float, default=0.0, help="use this peak, measure none")
    return p

  p = add("step", "one training step: time, tokens/s, TFLOP/s, MFU, memory")
  p.add_argument("--config", default="gpt.py:gpt2_small")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--length", default="256", help="'256' or 'inputs=512,targets=114'")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--breakdown", action="store_true", help="also time fwd, fwd+bwd, optimizer")
  p.add_argument("--preset", choices=tuple(partitioning.PRESETS), default="",
                 help="shard over all devices with this mesh preset (default: one device)")  # fmt: skip

  p = add("peak", "matmul FLOP/s in float32, bf16 with f32 accumulation, bf16 in/out")

  p = add("compile", "compile time vs depth, scan on / off")
  p.add_argument("--config", default="gpt.py:gpt2_small")
  p.add_argument("--layers", type=int, nargs="+", default=[6, 24])
  p.add_argument("--scan", choices=("on", "off"), nargs="+", default=["on", "off"])
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--length", type=int, default=256)

  p = add("generate", "decoding tokens/s with and without the KV cache")
  p.add_argument("--configs", nargs="+", default=["gpt.py:tiny", "gpt.py:gpt2_small"])
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
  p.add_argument("--new-tokens", type=int, default=32)
  p.add_argument("--repeats", type=int, default=3)

  p = add("checkpoint", "how long an async save blocks the loop")
  p.add_argument("--config", default="gpt.py:gpt2_small")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--length", default="256")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--saves", type=int, default=3)
  p.add_argument("--steps-after", type=int, default=2)

  p = add("presets", "8 fake devices: step time of each sharding preset vs data parallel")
  p.add_argument("--config", default="gpt.py:gpt2_small")
  p.add_argument("--presets", nargs="+", choices=tuple(partitioning.PRESETS),
                 default=list(partitioning.PRESETS))  # fmt: skip
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", type=int, default=128)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)

  p = add("data", "data pipeline throughput (tools/benchmark_data.py)")
  p.add_argument("--corpus", default="")
  p.add_argument("--min-tokens", type=int, default=1_000_000)

  p = add("distill", "teacher vs student: forward and train step, the student's speed-up")
  p.add_argument("--config", default="distilbert.py:distilbert_base", help="the student")
  p.add_argument("--teacher-config", default="", help="default: --config")
  p.add_argument("--teacher-layers", type=int, default=0, help="default: 2x the student's")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", default="128", help="'128' or 'inputs=512,targets=114'")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)

  p = add("compare", "a peer (HF Flax, PyTorch, SeqIO) and ours, interleaved: speed ratios")
  benchmark_compare.add_arguments(p)
  return parser


COMMANDS = {
  "compare": cmd_compare,
  "step": cmd_step,
  "peak": cmd_peak,
  "compile": cmd_compile,
  "generate": cmd_generate,
  "checkpoint": cmd_checkpoint,
  "presets": cmd_presets,
  "data": cmd_data,
  "distill": cmd_distill,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs one subcommand; returns (and with --out writes) {'machine': ..., 'command': ...}."""
  args, rest = _parser().parse_known_args(argv)
  overrides = config_lib.parse_overrides(rest)
  machine = machine_info()
  print(
    f"{machine['cpu']}, {machine['cpu_count']} cores, load {machine['load_average_1m']:.1f}, "
    f"jax {machine['jax']} ({machine['backend']}, {machine['device_count']} devices)",
    flush=True,
  )
  measured = COMMANDS[args.command](args, overrides)
  if "machine" in measured:  # benchmark_data.run reports its own (a string): keep it aside
    measured["reported_machine"] = measured.pop("machine")
  result = {"command": args.command, "machine": machine, **measured}
  result["machine"]["load_average_1m_end"] = os.getloadavg()[0]
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2, default=str)
  return result


if __name__ == "__main__":
  main()
