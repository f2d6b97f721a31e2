"""Config loading, overrides and validation: every bad value is one clear ConfigError."""

import glob
import os

import jax
import pytest

from t5x_lite import config as config_lib
from t5x_lite import partitioning
from t5x_lite.config import ConfigError
from t5x_lite.configs import CONFIG_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get(spec="gpt.py:tiny", **overrides):
  return config_lib.get_config(spec, list(overrides.items()))


def test_override_is_type_checked_and_applied():
  config = get(
    **{
      "train.steps": "7",
      "optimizer.learning_rate": "1e-4",
      "model.scan_layers": "false",
      "data.feature_lengths": "{'targets': 64}",
    }
  )
  assert config.train.steps == 7 and isinstance(config.train.steps, int)
  assert config.optimizer.learning_rate == pytest.approx(1e-4)
  assert config.model.scan_layers is False
  assert dict(config.data.feature_lengths) == {"targets": 64}


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("train.stepz", "3", "unknown config key 'train.stepz'; did you mean steps"),
    ("trian.steps", "3", "unknown config key 'trian'"),
    (
      "train.lm_loss_weight",
      "0.5",
      "unknown config key 'train.lm_loss_weight'; it is config.model.lm_loss_weight",
    ),
    ("train.steps", "many", "expected an int, found 'many'"),
    ("model.scan_layers", "maybe", "expected a bool"),
    ("model.num_heads", "3", "num_heads=3 does not divide model.d_model=64"),
    ("model.dtype", "float16", "model.dtype='float16': expected one of 'float32', 'bfloat16'"),
    (
      "data.feature_lengths",
      "{'targets': 512}",
      "sequence length 512 is over model.max_length=256",
    ),
    ("train.batch_size", "10", None),  # checked against the device count below
    ("model.vocab_size", "512", "model.vocab_size=512 is smaller than data.vocab_size=1024"),
    ("optimizer.decay", "exp", "optimizer.decay='exp'"),
    ("mesh.fsdp", "-1", "at most one axis may be -1"),
  ],
)
def test_bad_values_name_field_value_and_expectation(key, value, message):
  if message is None:
    config = get(**{key: value})
    with pytest.raises(ConfigError, match="batch_size=10 .* not divisible by the 8 data-parallel"):
      config_lib.validate(config, num_devices=8)
    return
  with pytest.raises(ConfigError) as info:
    get(**{key: value})
  assert message in str(info.value)


def test_missing_file_and_broken_variant():
  with pytest.raises(ConfigError, match="does not exist"):
    config_lib.get_config("nope.py:tiny")
  with pytest.raises(ConfigError, match="unknown variant"):
    get("gpt.py:huge")


def test_mesh_resolution():
  config = get(**{"mesh.fsdp": "2", "mesh.tensor": "2"})
  assert partitioning.resolve_mesh_shape(config, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ConfigError, match="do not divide the 6 devices"):
    partitioning.resolve_mesh_shape(get(**{"mesh.fsdp": "4"}), 6)


def test_mesh_presets():
  assert partitioning.resolve_mesh_shape(get(**{"mesh.preset": "data"}), 8) == {
    "data": 8,
    "fsdp": 1,
    "tensor": 1,
  }
  assert partitioning.resolve_mesh_shape(get(**{"mesh.preset": "fsdp"}), 8) == {
    "data": 1,
    "fsdp": 8,
    "tensor": 1,
  }
  assert partitioning.resolve_mesh_shape(get(**{"mesh.preset": "fsdp+tensor"}), 8) == {
    "data": 1,
    "fsdp": 4,
    "tensor": 2,
  }
  with pytest.raises(
    ConfigError, match="config.mesh.preset='zero3': expected one of 'data', 'fsdp'"
  ):
    get(**{"mesh.preset": "zero3"})


def test_json_round_trip_keeps_types():
  config = get(**{"data.task_modules": "('a.b', 'c.py')"})
  restored = config_lib.from_json(config_lib.to_json(config))
  assert restored.data.task_modules == ("a.b", "c.py")
  assert restored.mesh.rules == config.mesh.rules
  assert restored.to_dict() == config.to_dict()


# curate.py configures `t5x-lite curate`, not a model: tests/test_curation_runner.py loads it.
TRAINING_CONFIGS = sorted(
  p for p in glob.glob(os.path.join(CONFIG_DIR, "[!_]*.py")) if os.path.basename(p) != "curate.py"
)


@pytest.mark.parametrize("path", TRAINING_CONFIGS)
def test_every_shipped_config_variant_parses(path):
  """Every variant named in a config file's docstring loads, validates and builds its model
  (abstractly: jax.eval_shape, nothing allocated or compiled), and every parameter axis name it
  uses (with and without a fine-tuning head) is in the logical axis rules."""
  import importlib.util
  import re

  from t5x_lite.models import build_model

  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  variants = re.findall(r"^\s{2}(\w+)\s{2,}", module.__doc__ or "", flags=re.M)
  assert variants, f"{path}: list the variants in the module docstring"
  for variant in variants:
    config = config_lib.get_config(f"{path}:{variant}")
    assert config.model.family in config_lib.FAMILIES
    model = build_model(config.model)
    lengths = {k: min(int(v), 16) for k, v in config.data.feature_lengths.items()}
    shapes = model.input_shapes(2, model.feature_converter(True).model_feature_lengths(lengths))
    params = jax.eval_shape(model.init, jax.random.key(0), shapes)
    assert jax.tree_util.tree_leaves(params), f"{path}:{variant} built no parameters"
    # Every logical axis a parameter names has a rule (a typo would silently replicate it).
    names = _logical_axis_names(params)
    ruled = {name for name, _ in config.mesh.rules}
    assert names and names <= ruled <= set(partitioning.LOGICAL_AXES), (variant, names - ruled)
    if model.generative and not model.encoder_decoder or model.reads_cls:  # a fine-tuning head
      with config.unlocked():
        config.model.update(head="classification", num_labels=3)
      head = build_model(config.model)
      params = jax.eval_shape(head.init, jax.random.key(0), head.input_shapes(2, lengths))
      assert _logical_axis_names(params) <= ruled, variant


def _logical_axis_names(params) -> set[str]:
  """The logical axis names of every (boxed) parameter leaf."""
  import flax.linen as nn
  from jax.sharding import PartitionSpec

  specs = nn.get_partition_spec(params)
  leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  return {name for spec in leaves for name in spec if name is not None}


def test_sharded_dimensions_must_divide_their_mesh_axes():
  config = get("gpt.py:gpt2_small", **{"mesh.preset": "fsdp+tensor"})
  with pytest.raises(
    ConfigError, match=r"model.vocab_size=50257 does not split over the 2 devices .* e.g. 50258"
  ):
    config_lib.validate(config, num_devices=8)
  config_lib.validate(get("gpt.py:gpt2_small", **{"mesh.preset": "fsdp"}), num_devices=8)


@pytest.mark.parametrize(
  "spec, remat",
  [("gpt.py:tiny", "none"), ("gpt.py:gpt2_small", "minimal"), ("gpt.py:gpt3_1_3b", "minimal"),
   ("t5.py:tiny", "none"), ("t5.py:t5_small", "minimal"), ("t5.py:t5_1_1_base", "minimal")],
)  # fmt: skip
def test_real_size_variants_recompute_non_matmul_activations(spec, remat):
  """The real-size GPT and T5 variants default to remat 'minimal' (docs/benchmarks.md measures it
  faster than keeping every activation on CPU, and it needs less memory); the tiny ones keep all."""
  assert get(spec).model.remat == remat
  assert get(spec, **{"model.remat": "none"}).model.remat == "none"  # still a plain override
