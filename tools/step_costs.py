"""What XLA will do for one training step, without running it: HLO cost analysis (FLOPs, bytes
accessed), the compiled memory analysis (temp / argument / output bytes: the step's peak), and
op counts of the optimized HLO (fusions, dots by operand type, transposes, copies).

Wall-clock timings on a shared machine are noise; these counts are not. Use them to decide
what to change, then confirm with `benchmark.py compare` on an idle machine.

  python tools/step_costs.py --config gpt.py:gpt2_small --batch 4 --length 256 --dtype float32 \\
      [--part step|forward|grad] [--config.model.loss_chunk_size=1024 ...] [--out costs.json]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
from benchmark_core import load_config, parse_lengths  # noqa: E402

from t5x_lite import config as config_lib  # noqa: E402
from t5x_lite.models import build_model  # noqa: E402
from t5x_lite.training import optimizers  # noqa: E402
from t5x_lite.training import step as step_lib  # noqa: E402
from t5x_lite.training.setup import RunSetup  # noqa: E402


def hlo_counts(text: str) -> dict[str, int]:
  """Op counts of an optimized HLO module's text: fusions, copies, transposes, and dots by
  operand types (e.g. 'dot bf16,bf16->f32'), inside fusions too."""
  counts: collections.Counter = collections.Counter()
  for line in text.splitlines():
    dot = re.search(r"= (\w+)\[[^=]*? dot\((\w+)\[[^,]*?, (\w+)\[", line)
    if dot:
      counts[f"dot {dot.group(2)},{dot.group(3)}->{dot.group(1)}"] += 1
      continue
    op = re.search(r"= \S+ (fusion|transpose|copy|custom-call)\(", line)
    if op:
      counts[op.group(1)] += 1
  return dict(counts)


def analyse(config, part: str) -> dict:
  model = build_model(config.model)
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  setup = RunSetup.create(config, jax.devices()[:1],
                          input_shapes=model.input_shapes(config.train.batch_size, lengths))  # fmt: skip
  shapes, abstract = setup.input_shapes, setup.abstract_state()
  rng = jax.random.key(0)
  if part == "step":
    fn = jax.jit(
      functools.partial(step_lib.train_step, model=setup.model, optimizer=setup.optimizer,
                        schedule=setup.schedule, rules=setup.rules,
                        grad_clip=optimizers.clip_in_step(config)),
      donate_argnums=(0,),
    )  # fmt: skip
    args = (abstract, shapes, rng)
  else:

    def loss(params, batch):
      with nn.logical_axis_rules(setup.rules):
        return setup.model.loss(params, batch, rng, deterministic=False)[0]

    fn = jax.jit(loss if part == "forward" else jax.grad(loss))
    args = (abstract.params, shapes)
  with setup.use_mesh():
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  memory = compiled.memory_analysis()
  result = {
    "part": part,
    "compile_s": compile_s,
    "flops": cost.get("flops"),
    "bytes_accessed": cost.get("bytes accessed"),
    "transcendentals": cost.get("transcendentals"),
    "model_flops": model.flops_per_token(lengths) * config.train.batch_size * sum(lengths.values()),
  }
  if memory is not None:
    for name in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                 "alias_size_in_bytes", "generated_code_size_in_bytes"):  # fmt: skip
      result[name] = getattr(memory, name, None)
    result["peak_bytes"] = (
      memory.temp_size_in_bytes
      + memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
    )
  result["hlo"] = hlo_counts(compiled.as_text())
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="gpt.py:gpt2_small")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--length", default="256")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
  parser.add_argument("--part", choices=("step", "forward", "grad"), nargs="+", default=["step"])
  parser.add_argument("--out", default="")
  args, rest = parser.parse_known_args(argv)
  overrides = config_lib.parse_overrides(rest)
  base = config_lib.get_config(args.config, overrides, validate_config=False)
  lengths = parse_lengths(args.length, base)
  config = load_config(args.config, overrides, batch=args.batch, lengths=lengths, dtype=args.dtype)
  results = []
  for part in args.part:
    r = analyse(config, part)
    r.update(config=args.config, overrides=dict(overrides), batch=args.batch, lengths=lengths,
             dtype=config.model.dtype)  # fmt: skip
    results.append(r)
    gb = lambda x: f"{x / 2**30:.2f} GiB" if x is not None else "-"  # noqa: E731
    print(
      f"{part:8s} flops {r['flops'] / 1e9:.1f} G (model {r['model_flops'] / 1e9:.1f} G)  "
      f"bytes {r['bytes_accessed'] / 1e9:.1f} GB  temp {gb(r.get('temp_size_in_bytes'))}  "
      f"peak {gb(r.get('peak_bytes'))}  compile {r['compile_s']:.1f} s",
      flush=True,
    )
    print("          " + ", ".join(f"{k} {v}" for k, v in sorted(r["hlo"].items())), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
  return {"runs": results}


if __name__ == "__main__":
  main()
