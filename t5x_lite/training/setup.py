"""RunSetup: mesh -> rules -> model -> optimizer -> input shapes -> abstract state -> shardings.

Every entry point that touches parameters builds this once and reads from it: the training loop,
checkpoint evaluation (`evaluation/checkpoint.py`), inference (`t5x_lite.load`), HF export
(`convert/hf`) and `tools/benchmark_core.py`. So they agree on the mesh, the shardings and the
model, and parameters are always created or restored already sharded (flax lm1b's
`setup_initial_state`, as one dataclass instead of a tuple).

  setup = RunSetup.create(config)                    # devices: all by default
  state = setup.init_state()                         # fresh, sharded (no full copy on a device)
  state, data = setup.restore_state(checkpointer, step, data_shards, num_shards)
  params = setup.restore_params(checkpointer, step)  # params only, sharded on the mesh
  train_step, eval_step = setup.jit_train_step(), setup.jit_eval_step()
  teacher_setup = setup.teacher_setup(teacher_config)  # distillation: same mesh and rules
  train_step = setup.jit_train_step(teacher=distill.Teacher(...))  # f(state, batch, rng, t_params)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from t5x_lite import checkpoints, partitioning
from t5x_lite import config as config_lib
from t5x_lite.errors import ConfigError
from t5x_lite.models import BaseModel, build_model
from t5x_lite.training import distill, optimizers
from t5x_lite.training import state as state_lib
from t5x_lite.training import step as step_lib


def model_feature_lengths(config: ml_collections.ConfigDict, model: BaseModel) -> dict[str, int]:
  """The model feature lengths of `config.data.feature_lengths` under the model's converter."""
  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  return model.feature_converter(config.data.pack).model_feature_lengths(lengths)


@dataclasses.dataclass
class RunSetup:
  """What a run needs before it touches data or parameters; built by `RunSetup.create`."""

  config: ml_collections.ConfigDict
  devices: list[jax.Device]
  mesh: Mesh
  rules: tuple[tuple[str, Any], ...]
  batch_sharding: NamedSharding
  model: BaseModel
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  input_shapes: dict[str, jax.ShapeDtypeStruct]  # per step (microbatch): [batch, length]
  init_rng: jax.Array
  abstract_boxed_params: Any  # eval_shape of model.init: leaves nn.LogicallyPartitioned
  state_shardings: state_lib.TrainState  # NamedShardings of every state leaf

  @classmethod
  def create(
    cls,
    config: ml_collections.ConfigDict,
    devices: Sequence[jax.Device] | None = None,
    *,
    input_shapes: Mapping[str, jax.ShapeDtypeStruct] | None = None,
  ) -> RunSetup:
    """Builds everything from `config` over `devices` (default: all); nothing is allocated.

    `input_shapes`: the batch the params are initialized for (default: the model's features at
    train.batch_size // train.microbatches and the configured feature lengths).
    """
    # 1. mesh and logical-axis rules
    devices = list(devices) if devices is not None else jax.devices()
    mesh = partitioning.make_mesh(config, devices)
    rules = partitioning.logical_rules(config)
    # 2. model and optimizer
    model = build_model(config_lib.model_config(config))
    optimizer, schedule = optimizers.make_optimizer(config, clip=False)  # the step clips
    # 3. shapes -> abstract params -> shardings of the whole train state
    if input_shapes is None:
      per_step = config.train.batch_size // config.train.microbatches
      input_shapes = model.input_shapes(per_step, model_feature_lengths(config, model))
    init_rng = jax.random.key(config.train.seed)
    abstract_boxed = jax.eval_shape(lambda: model.init(init_rng, input_shapes))
    return cls(
      config=config,
      devices=devices,
      mesh=mesh,
      rules=rules,
      batch_sharding=partitioning.batch_sharding(mesh, rules),
      model=model,
      optimizer=optimizer,
      schedule=schedule,
      input_shapes=dict(input_shapes),
      init_rng=init_rng,
      abstract_boxed_params=abstract_boxed,
      state_shardings=state_lib.state_shardings(abstract_boxed, optimizer, mesh, rules),
    )

  # -- shapes and shardings ---------------------------------------------------------------------

  @property
  def param_shardings(self) -> Any:
    return self.state_shardings.params

  @property
  def num_params(self) -> int:
    leaves = jax.tree.leaves(nn.unbox(self.abstract_boxed_params))
    return sum(int(np.prod(x.shape)) for x in leaves)

  def init_params(self) -> Any:
    """Boxed params of `model.init` (traced under jit or eval_shape, never run eagerly here)."""
    return self.model.init(self.init_rng, self.input_shapes)

  def abstract_params(self) -> Any:
    """ShapeDtypeStructs of the (unboxed) params, each with its sharding: a restore target."""
    return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      nn.unbox(self.abstract_boxed_params),
      self.param_shardings,
    )

  def abstract_state(self) -> state_lib.TrainState:
    """ShapeDtypeStructs (with shardings) of the whole TrainState: the resume target."""
    return state_lib.abstract_state(self.init_params, self.optimizer, self.state_shardings)

  @contextlib.contextmanager
  def use_mesh(self):
    """The mesh and the logical-axis rules in effect (needed while tracing the model)."""
    with partitioning.use_mesh(self.mesh, self.rules):
      yield

  # -- state: fresh, resumed, or params only ------------------------------------------------------

  def init_state(self) -> state_lib.TrainState:
    """A fresh TrainState, created already sharded."""
    state, _ = state_lib.init_sharded(self.init_params, self.optimizer, self.mesh, self.rules)
    return state

  def restore_state(
    self,
    checkpointer: checkpoints.Checkpointer,
    step: int,
    *,
    data_shards: tuple[int, ...] = (),
    num_shards: int = 1,
  ) -> tuple[state_lib.TrainState, dict[int, Any]]:
    """The TrainState of `step` on this mesh, and the data states of `data_shards`."""
    return checkpointer.restore(
      self.abstract_state(), step=step, data_shards=data_shards, num_shards=num_shards
    )

  def restore_params(self, checkpointer: checkpoints.Checkpointer, step: int | None = None) -> Any:
    """Only the params of `step` (latest when None), sharded on this mesh."""
    return checkpointer.restore_params(self.abstract_params(), step)

  # -- a distillation teacher on this run's mesh ------------------------------------------------

  def teacher_setup(self, teacher_config: ml_collections.ConfigDict) -> RunSetup:
    """The RunSetup of a teacher (its own model config) on this run's devices, mesh, logical-axis
    rules and batch shapes: its params are restored or placed with the student's sharding rules.
    ConfigError when it cannot teach this run's model (`distill.check_compatible`) or its learned
    positions do not cover the student's sequences."""
    config = ml_collections.ConfigDict(teacher_config.to_dict())
    config.mesh = ml_collections.ConfigDict(self.config.mesh.to_dict())
    config.train.update(batch_size=self.config.train.batch_size,
                        microbatches=self.config.train.microbatches)  # fmt: skip
    config.data.pack = self.config.data.pack
    config.data.feature_lengths = dict(self.config.data.feature_lengths)
    teacher = build_model(config_lib.model_config(config))
    distill.check_compatible(self.model, teacher, float(self.config.distill.alpha_cos))
    lengths = model_feature_lengths(config, teacher)
    m = config.model
    if m.position == "learned" and max(lengths.values()) + m.position_offset > m.max_length:
      raise ConfigError(
        f"config.distill.teacher has model.max_length={m.max_length} learned positions; the "
        f"student reads sequences of {max(lengths.values())} (data.feature_lengths)"
      )
    return RunSetup.create(config, self.devices)

  def place_params(self, params: Any) -> Any:
    """Params (host or device arrays) -> new buffers on this mesh with this run's param
    shardings (never aliases of the input: a train state's buffers are donated each step)."""
    return jax.device_put(params, self.param_shardings, may_alias=False)

  # -- the jitted steps ---------------------------------------------------------------------------

  def jit_train_step(self, donate: bool = True, teacher: distill.Teacher | None = None):
    """f(state, batch, rng) -> (state, metrics), jitted with the state's and batch's shardings.

    With a distillation `teacher`: f(state, batch, rng, teacher.params), the loss is
    `distill.DistillationModel`'s with `config.distill`'s weights (the teacher runs in the step).
    """
    model, teacher_shardings = self.model, None
    if teacher is not None:
      weights = {name: float(self.config.distill[name]) for name in distill.WEIGHTS}
      model = distill.DistillationModel(self.model, teacher.model, None, **weights)
      teacher_shardings = teacher.param_shardings
    return step_lib.jit_train_step(
      model, self.optimizer, self.schedule, microbatches=self.config.train.microbatches,
      rules=self.rules, state_shardings=self.state_shardings, batch_sharding=self.batch_sharding,
      mesh=self.mesh, donate=donate, grad_clip=optimizers.clip_in_step(self.config),
      skip_nonfinite=self.config.train.nonfinite == "skip",
      teacher_shardings=teacher_shardings,
    )  # fmt: skip

  def jit_eval_step(self):
    """f(params, batch) -> {name: (numerator, denominator)} summed over the batch."""
    return step_lib.jit_eval_step(
      self.model, rules=self.rules, param_shardings=self.param_shardings,
      batch_sharding=self.batch_sharding, mesh=self.mesh,
    )  # fmt: skip

  def global_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's rows -> global arrays laid out by `batch_sharding`."""
    return partitioning.make_global_batch(dict(local_batch), self.batch_sharding)
