"""Measurement primitives of tools/benchmark.py: the machine, a matmul peak, and the training
step built and jitted exactly as training/loop.py does, on a synthetic packed batch.

Import after XLA_FLAGS is final (it imports jax): tools/benchmark.py sets fake CPU devices first.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5x_lite import config as config_lib
from t5x_lite import partitioning
from t5x_lite.models import build_model
from t5x_lite.training import optimizers
from t5x_lite.training import step as step_lib
from t5x_lite.training.setup import RunSetup

# ---------------------------------------------------------------------------------------------
# Machine, timing and memory.


def machine_info() -> dict[str, Any]:
  """CPU model, cores, jax version and devices: the context every figure needs."""
  cpu = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  device = jax.devices()[0]
  return {
    "cpu": cpu,
    "cpu_count": os.cpu_count(),
    "load_average_1m": os.getloadavg()[0],
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
  }


def block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def peak_rss_bytes() -> int:
  """High-water mark of this process's resident memory (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_bytes() -> int | None:
  """Peak device memory of device 0 where the backend reports it (GPU/TPU; not CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def measure_matmul_peak(
  mode: str, sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5
) -> tuple[float, float]:
  """(FLOP/s of wall time, FLOP/s of this process's CPU time): the best [n, n]² matmul over
  `sizes`, each the best of `repeats` after a warm-up.

  Several sizes because on CPUs a 4096² matmul (64 MB operands, beyond L3) runs ~20% slower
  than 1024²-2048² ones, the sizes of the models' matmuls: the peak is the best the machine does.
  mode 'float32': f32 operands; 'bfloat16': bf16 operands accumulated in f32 (what the models
  do with dtype bfloat16); 'bfloat16_out': bf16 in and out. The CPU-time rate is what the
  process gets per core-second it was given, so it holds up when other jobs share the cores.
  """
  operand = jnp.float32 if mode == "float32" else jnp.bfloat16
  accumulate = {"float32": None, "bfloat16": jnp.float32, "bfloat16_out": None}[mode]
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=accumulate))
  best_wall = best_cpu = 0.0
  for size in sizes:
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (size, size), operand)
    b = jax.random.normal(keys[1], (size, size), operand)
    block(matmul(a, b))
    walls, cpus = [], []
    for _ in range(repeats):
      wall, cpu = time.perf_counter(), time.process_time()
      block(matmul(a, b))
      walls.append(time.perf_counter() - wall)
      cpus.append(time.process_time() - cpu)
    flops = 2 * size**3
    # process_time ticks are coarse for small matmuls: never count less than 1 ms.
    best_wall = max(best_wall, flops / min(walls))
    best_cpu = max(best_cpu, flops / max(min(cpus), 1e-3))
  return best_wall, best_cpu


# ---------------------------------------------------------------------------------------------
# Config, synthetic batch, state and the jitted step (as training/loop.py builds them).


def load_config(
  spec: str,
  overrides: list[tuple[str, str]],
  *,
  batch: int | None = None,
  lengths: dict[str, int] | None = None,
  dtype: str | None = None,
):
  """The config file with overrides, the benchmark's batch / lengths / dtype, validated."""
  config = config_lib.get_config(spec, overrides, validate_config=False)
  with config.unlocked():
    if batch is not None:
      config.train.batch_size = batch
    if lengths:
      config.data.feature_lengths = dict(lengths)
    if dtype is not None:
      config.model.dtype = dtype
    config.train.microbatches = config.train.microbatches or 1
  config_lib.validate(config, num_devices=1)
  return config


def parse_lengths(text: str, config) -> dict[str, int]:
  """'256' (the config's only feature) or 'inputs=512,targets=114' -> {feature: length}."""
  current = dict(config.data.feature_lengths)
  if "=" not in text:
    if len(current) != 1:
      raise SystemExit(
        f"--length {text}: the config has features {sorted(current)}; "
        "use --length inputs=512,targets=114"
      )
    return {next(iter(current)): int(text)}
  lengths = {}
  for part in text.split(","):
    name, _, value = part.partition("=")
    lengths[name.strip()] = int(value)
  return lengths


def synthetic_batch(model, batch: int, lengths: dict[str, int], vocab: int, seed: int = 0):
  """A packed batch of every model feature: each row holds two documents (segments 1, 2).

  Tokens are uniform in [3, vocab); loss weights are 1 on every token (the FLOPs of the loss do
  not depend on which tokens count); positions restart at each document.
  """
  rng = np.random.default_rng(seed)
  batch_data = {}
  for name, shape in model.input_shapes(batch, lengths).items():
    rows, length = shape.shape[0], shape.shape[-1]
    half = max(1, length // 2)
    if name.endswith("segment_ids"):
      value = np.where(np.arange(length) < half, 1, 2)
      value = np.broadcast_to(value, (rows, length))
    elif name.endswith("positions"):
      index = np.arange(length)
      value = np.broadcast_to(np.where(index < half, index, index - half), (rows, length))
    elif name.endswith("loss_weights"):
      value = np.ones((rows, length))
    elif name.endswith("token_type_ids"):
      value = np.broadcast_to((np.arange(length) >= half).astype(int), (rows, length))
    elif name == "nsp_labels":
      value = rng.integers(0, 2, shape.shape)
    else:  # *_tokens
      value = rng.integers(3, vocab, (rows, length))
    batch_data[name] = np.ascontiguousarray(value, dtype=shape.dtype).reshape(shape.shape)
  return batch_data


def build_step(config, devices=None):
  """(jitted train_step, state, batch, rng, mesh, rules) for `config` on `devices`.

  The step is jitted exactly as training/loop.py does: in/out shardings from the logical rules,
  the state donated.
  """
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  setup = _setup(config, devices, config.train.batch_size // config.train.microbatches)
  state = setup.init_state()
  train_step = setup.jit_train_step()  # exactly as training/loop.py jits it
  numpy_batch = synthetic_batch(
    setup.model, config.train.batch_size, lengths, config.model.vocab_size
  )
  batch = setup.global_batch(numpy_batch)
  return train_step, state, batch, jax.random.key(1), setup.mesh, setup.rules


def _setup(config, devices, batch_size: int) -> RunSetup:
  """The run's RunSetup, with params shaped for [batch_size, the configured lengths]."""
  model = build_model(config.model)
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  return RunSetup.create(config, devices, input_shapes=model.input_shapes(batch_size, lengths))


def tokens_per_step(config) -> int:
  return config.train.batch_size * sum(int(v) for v in config.data.feature_lengths.values())


def _time_calls(fn, args, repeats: int) -> tuple[float, float]:
  """(wall s, CPU s) medians of `repeats` calls after a compiling call."""
  block(fn(*args))
  walls, cpus = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    block(fn(*args))
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return statistics.median(walls), statistics.median(cpus)


def time_parts(config, repeats: int = 3) -> dict[str, tuple[float, float]]:
  """(wall s, CPU s) of the step's parts, each jitted alone: the forward pass (loss), forward
  and backward (gradients), and the optimizer update. Their sum exceeds the fused step a little.
  """
  _, state, batch, rng, mesh, rules = build_step(config, jax.devices()[:1])
  model = build_model(config.model)
  optimizer, _ = optimizers.make_optimizer(config)

  def loss(params, batch):
    with nn.logical_axis_rules(rules):
      return model.loss(params, batch, rng, deterministic=False)[0]

  def update(grads, opt_state, params):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  grad = jax.jit(jax.grad(loss))
  with partitioning.use_mesh(mesh, rules):
    grads = grad(state.params, batch)
    parts = {
      "forward": (jax.jit(loss), (state.params, batch)),
      "forward+backward": (grad, (state.params, batch)),
      "optimizer": (jax.jit(update), (grads, state.opt_state, state.params)),
    }
    return {name: _time_calls(fn, args, repeats) for name, (fn, args) in parts.items()}


def bench_step(config, *, steps: int, warmup: int, devices=None) -> dict[str, Any]:
  """Compile time and the median step time after `warmup` steps, and the rates derived.

  `model_tflops` counts wall time; `model_tflops_per_cpu_s` counts this process's CPU time
  (FLOPs per core-second it got), which other jobs on shared cores disturb less.
  """
  train_step, state, batch, rng, mesh, rules = build_step(config, devices)
  with partitioning.use_mesh(mesh, rules):
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    times, cpu_times = [], []
    for i in range(warmup + steps):
      start, cpu = time.perf_counter(), time.process_time()
      state, step_metrics = compiled(state, batch, rng)
      block((state, step_metrics))
      if i >= warmup:
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
  loss = step_lib.finalize_metrics(step_metrics)["loss"]
  step_s = statistics.median(times)
  tokens = tokens_per_step(config)
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  flops_per_token = build_model(config.model).flops_per_token(lengths)
  model_flops = flops_per_token * tokens / step_s
  num_devices = mesh.devices.size
  result = {
    "family": config.model.family,
    "dtype": config.model.dtype,
    "optimizer": config.optimizer.name,
    "batch": config.train.batch_size,
    "lengths": lengths,
    "devices": num_devices,
    "compile_s": compile_s,
    "step_s": step_s,
    "step_s_min": min(times),
    "step_s_max": max(times),
    "step_cpu_s": statistics.median(cpu_times),
    "steps_timed": len(times),
    "tokens_per_step": tokens,
    "tokens_per_s": tokens / step_s,
    "flops_per_token": flops_per_token,
    "model_tflops": model_flops / 1e12,
    "model_tflops_per_cpu_s": flops_per_token * tokens / statistics.median(cpu_times) / 1e12,
    "loss_last": loss,
    "peak_rss_gib": peak_rss_bytes() / 2**30,
    "device_peak_gib": (device_peak_bytes() or 0) / 2**30 or None,
  }
  return result


def compile_seconds(config) -> tuple[float, float]:
  """(trace + lower seconds, XLA compile seconds) of the train step, from abstract state only."""
  setup = _setup(config, jax.devices()[:1], config.train.batch_size)
  shapes, abstract = setup.input_shapes, setup.abstract_state()
  step = jax.jit(
    functools.partial(
      step_lib.train_step, model=setup.model, optimizer=setup.optimizer,
      schedule=setup.schedule, rules=setup.rules,
      grad_clip=optimizers.clip_in_step(config),
    ),
    donate_argnums=(0,),
  )  # fmt: skip
  with setup.use_mesh():
    start = time.perf_counter()
    lowered = step.lower(abstract, shapes, jax.random.key(0))
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at
