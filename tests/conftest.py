"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere."""

import os

# LLVM at -O1 instead of -O2 for the CPU code XLA emits (the HLO passes, hence the programs and
# what the tests check, are the same): the suite is mostly compiles of tiny models, and -O1
# compiles them up to 1.6x faster while the runs take as long (suite, 2 cores: 29m40 of CPU
# instead of 32m41-33m35; -O0 was slower overall, its runs were 2.6x slower).
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1"
).strip()


def _jaxlib_knows(flag: str) -> bool:
  """Whether this jaxlib defines an XLA flag: XLA aborts the process on an unknown one, so a
  flag that a later jaxlib drops must not be set (its name is a string in libjax_common.so)."""
  import importlib.util
  import mmap

  spec = importlib.util.find_spec("jaxlib")
  path = os.path.join(os.path.dirname(spec.origin), "libjax_common.so") if spec else ""
  if not os.path.isfile(path):
    return False
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
    return data.find(b"\0" + flag.encode() + b"\0") >= 0


# XLA:CPU's older (non-MLIR) emitter for the element-wise fusions: same HLO passes and the same
# programs as with the default, emitted by XLA's legacy code generator, which compiles faster.
# Three compile-bound test files (2 cores, one worker): 114-125 s -> 97 s.
# A setting of the caller's own XLA_FLAGS wins.
if "fusion_emitters" not in os.environ["XLA_FLAGS"] and _jaxlib_knows(
  "xla_cpu_use_fusion_emitters"
):
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A persistent compilation cache shared by this session's tests and the subprocesses they start:
# the many short training runs compile the same few programs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile

  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="t5x_lite_jax_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


import shutil  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


def build_config(spec: str = "gpt.py:tiny", **overrides: Any):
  """`spec` with `--config.KEY=VALUE` overrides, parsed and validated as on the command line:
  build_config("bert.py:tiny", **{"train.steps": 5, "data.feature_lengths": {"inputs": 32}})."""
  from t5x_lite import config as config_lib

  pairs = [
    (key, value if isinstance(value, str) else str(value)) for key, value in overrides.items()
  ]
  return config_lib.get_config(spec, pairs)


@pytest.fixture(scope="session")
def make_config():
  """The one config factory of the tests: make_config(spec="gpt.py:tiny", **overrides)."""
  return build_config


@pytest.fixture(scope="session")
def pydoc_vocab_dir(tmp_path_factory):
  """A workdir whose `vocab/` holds the default SentencePiece model, trained once per session."""
  from t5x_lite.data import pipeline

  workdir = tmp_path_factory.mktemp("vocab_cache")
  config = build_config("gpt.py:tiny")
  pipeline.get_vocabulary(config, str(workdir))
  return workdir


@pytest.fixture(scope="session")
def shared_vocab_workdir(pydoc_vocab_dir):
  """Call with a workdir to give it the session's trained vocabulary (saves re-training)."""

  def copy(workdir):
    os.makedirs(workdir, exist_ok=True)
    shutil.copytree(
      os.path.join(pydoc_vocab_dir, "vocab"), os.path.join(workdir, "vocab"), dirs_exist_ok=True
    )
    return workdir

  return copy
