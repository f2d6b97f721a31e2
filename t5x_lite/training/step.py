"""Pure train and eval steps: functions of pytrees, jitted once by the loop.

Metrics travel as {name: (numerator, denominator)} sums so that microbatches and devices
combine exactly; `finalize_metrics` turns them into ratios on the host.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from t5x_lite import partitioning
from t5x_lite.partitioning import BATCH, LENGTH
from t5x_lite.training.state import TrainState

Metrics = dict[str, tuple[jax.Array, jax.Array]]


def _split_microbatches(batch: dict[str, jax.Array], k: int) -> dict[str, jax.Array]:
  """[batch, ...] -> [k, batch // k, ...], microbatch i = rows i, i + k, i + 2k, ...

  Interleaving (rather than contiguous blocks) keeps every microbatch spread over all the
  data-parallel devices, each of which holds a contiguous block of rows.
  """

  def split(x):
    rows = x.shape[0] // k
    return x.reshape((rows, k) + x.shape[1:]).swapaxes(0, 1)

  return jax.tree.map(split, batch)


def _add_metrics(a: Metrics, b: Metrics) -> Metrics:
  return {name: (a[name][0] + b[name][0], a[name][1] + b[name][1]) for name in a}


def compute_gradients(model, params, batch, rng, microbatches: int, rules) -> tuple[Any, Metrics]:
  """Gradients of the mean loss over all target tokens of `batch`, and summed metrics.

  With k microbatches, each microbatch's gradient is weighted by its share of the target
  tokens (metrics['loss'][1]), so the result equals the one-big-batch gradient; a lax.scan
  keeps one microbatch's activations in memory at a time.
  """

  def loss_fn(p, mb, mb_rng):
    loss, metrics = model.loss(p, mb, mb_rng, deterministic=False)
    return loss, metrics

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (_, metrics), grads = grad_fn(params, batch, rng)
    return grads, metrics

  split = _split_microbatches(batch, microbatches)
  batch_sharding_names = (BATCH, LENGTH)

  def constrain(x):
    names = batch_sharding_names[: x.ndim] + (None,) * max(0, x.ndim - 2)
    return nn.with_logical_constraint(x, names)

  first = jax.tree.map(lambda x: constrain(x[0]), split)
  abstract_grads = jax.eval_shape(lambda: grad_fn(params, first, rng))
  (_, abstract_metrics), _ = abstract_grads

  def body(carry, inputs):
    grad_sum, metric_sum = carry
    mb, index = inputs
    mb = jax.tree.map(constrain, mb)
    (_, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, index))
    weight = metrics["loss"][1]
    grad_sum = jax.tree.map(lambda g, s: s + g * weight, grads, grad_sum)
    return (grad_sum, _add_metrics(metric_sum, metrics)), None

  zero_grads = jax.tree.map(jnp.zeros_like, params)
  zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract_metrics)
  (grad_sum, metrics), _ = jax.lax.scan(
    body, (zero_grads, zero_metrics), (split, jnp.arange(microbatches))
  )
  total_weight = jnp.maximum(metrics["loss"][1], 1e-9)
  grads = jax.tree.map(lambda g: g / total_weight, grad_sum)
  return grads, metrics


def _all_finite(tree: Any) -> jax.Array:
  """True when every element of every leaf is finite (a cheap reduction, fused per leaf)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  teacher_params: Any = None,
  *,
  model,
  optimizer: optax.GradientTransformation,
  schedule,
  microbatches: int = 1,
  rules: partitioning.Rules = (),
  grad_clip: float = 0.0,
  skip_nonfinite: bool = True,
) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer step.

  `skip_nonfinite` (train.nonfinite='skip'): a non-finite loss or gradient leaves the state
  unchanged (`skipped_steps` counts it). Otherwise ('stop') the update is applied as is and the
  loop stops on `metrics['finite']` without saving. In both modes `metrics['params_finite']`
  checks the updated parameters: a finite gradient can still give a non-finite update
  (optimizer eps 0 on a zero second moment, an infinite learning rate); the loop then stops and
  never saves that state. Checking the update before applying it would need the whole update
  materialised and a select over params and optimizer state: measured at 8% of a GPT-2 small
  step on CPU, against 0.3% for this check after the fact (docs/benchmarks.md).

  `grad_clip` > 0: gradients scaled to that global norm as optax.clip_by_global_norm does (to
  float rounding; the optimizer then has no clip of its own: optimizers.clip_in_step).

  `teacher_params`: a distillation teacher's frozen params (training/distill.py), read by
  `model`, never updated."""
  if teacher_params is not None:
    model = model.with_teacher_params(teacher_params)
  with nn.logical_axis_rules(rules):
    step_rng = jax.random.fold_in(rng, state.step)
    grads, metrics = compute_gradients(model, state.params, batch, step_rng, microbatches, rules)
    grad_norm = optax.global_norm(grads)
    loss_sum, weight = metrics["loss"]
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
    if grad_clip > 0:  # optax.clip_by_global_norm's factor, from the norm computed above
      scale = jnp.where(grad_norm < grad_clip, 1.0, grad_clip / grad_norm)
      grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)

    def apply_update(params, opt_state):
      updates, new_opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_opt_state

    def keep(params, opt_state):
      return params, opt_state

    if skip_nonfinite:
      # The whole update inside the branch: computed outside it, the update and the new
      # optimizer state were materialised and copied (a select on every leaf cost more still).
      new_params, new_opt_state = jax.lax.cond(
        finite, apply_update, keep, state.params, state.opt_state
      )
      skipped = (~finite).astype(jnp.int32)
    else:
      new_params, new_opt_state = apply_update(state.params, state.opt_state)
      skipped = jnp.zeros((), jnp.int32)
    params_finite = _all_finite(new_params)
    new_state = state.replace(
      step=state.step + 1,
      params=new_params,
      opt_state=new_opt_state,
      skipped_steps=state.skipped_steps + skipped,
    )
    one = jnp.ones((), jnp.float32)
    metrics = dict(metrics)
    metrics["grad_norm"] = (grad_norm, one)
    metrics["learning_rate"] = (jnp.asarray(schedule(state.step), jnp.float32), one)
    metrics["finite"] = ((finite & params_finite).astype(jnp.float32), one)
    metrics["params_finite"] = (params_finite.astype(jnp.float32), one)
    metrics["target_tokens"] = (weight, one)
  return new_state, metrics


def eval_step(
  params: Any, batch: dict[str, jax.Array], *, model, rules: partitioning.Rules = ()
) -> Metrics:
  """Summed metrics of one held-out batch (no dropout)."""
  with nn.logical_axis_rules(rules):
    _, metrics = model.loss(params, batch, None, deterministic=True)
  return metrics


def finalize_metrics(metrics: dict[str, tuple[Any, Any]]) -> dict[str, float]:
  """{name: (numerator, denominator)} -> {name: numerator / denominator} as Python floats."""
  out = {}
  for name, (numerator, denominator) in jax.device_get(metrics).items():
    denominator = float(denominator)
    out[name] = float(numerator) / denominator if denominator else float("nan")
  return out


def accumulate(total: dict | None, metrics: dict) -> dict:
  """Sums (numerator, denominator) metrics on the host across eval batches."""
  metrics = jax.device_get(metrics)
  if total is None:
    return {k: (float(n), float(d)) for k, (n, d) in metrics.items()}
  return {k: (total[k][0] + float(n), total[k][1] + float(d)) for k, (n, d) in metrics.items()}


def jit_train_step(
  model,
  optimizer: optax.GradientTransformation,
  schedule,
  *,
  microbatches: int,
  rules: partitioning.Rules,
  state_shardings,
  batch_sharding,
  mesh,
  donate: bool = True,
  grad_clip: float = 0.0,
  skip_nonfinite: bool = True,
  teacher_shardings: Any = None,
):
  """`train_step` jitted once with explicit shardings, the state donated (its buffers reused).

  Returns f(state, batch, rng) -> (state, metrics); metrics come back replicated. With
  `teacher_shardings` (distillation): f(state, batch, rng, teacher_params), the teacher's params
  an argument laid out like that (not donated, not a constant folded into the program).
  """
  replicated = partitioning.replicated(mesh)
  step = functools.partial(
    train_step,
    model=model,
    optimizer=optimizer,
    schedule=schedule,
    microbatches=microbatches,
    rules=rules,
    grad_clip=grad_clip,
    skip_nonfinite=skip_nonfinite,
  )
  return jax.jit(
    step,
    in_shardings=(state_shardings, batch_sharding, replicated)
    + (() if teacher_shardings is None else (teacher_shardings,)),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,) if donate else (),
  )


def jit_eval_step(model, *, rules: partitioning.Rules, param_shardings, batch_sharding, mesh):
  """`eval_step` jitted with the params' and the batch's shardings."""
  step = functools.partial(eval_step, model=model, rules=rules)
  return jax.jit(
    step,
    in_shardings=(param_shardings, batch_sharding),
    out_shardings=partitioning.replicated(mesh),
  )
