"""Fingerprint of training behaviour: per-step losses and a hash of the final params.

Trains the tiny GPT, BERT and T5 configs for a few steps (log every step, no intermediate
evaluation or checkpoint) and prints, per config, the losses of every step and a SHA-256 of the
final parameters (leaf paths, dtypes, shapes and bytes). A refactoring that claims "no change in
behaviour" must leave this output bit-identical.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
    python tools/behaviour_fingerprint.py --steps 20 --out fingerprint.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile

import jax
import numpy as np

from t5x_lite import config as config_lib
from t5x_lite.training import loop

CONFIGS = ("gpt.py:tiny", "bert.py:tiny", "t5.py:tiny")


def params_hash(params) -> str:
  """SHA-256 over (path, dtype, shape, bytes) of every leaf, in tree order."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    value = np.asarray(jax.device_get(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{value.dtype}{value.shape}".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def fingerprint(spec: str, steps: int, vocab_workdir: str | None = None) -> dict:
  """Trains `spec` for `steps` steps in a fresh workdir; returns losses, param hash, eval."""
  config = config_lib.get_config(spec)  # a shipped config (t5x_lite/configs/) or a path
  with config.unlocked():
    config.train.update(
      steps=steps, log_every=1, eval_every=0, checkpoint_every=10 * steps, eval_steps=2
    )
  with tempfile.TemporaryDirectory() as workdir:
    if vocab_workdir:
      shutil.copytree(os.path.join(vocab_workdir, "vocab"), os.path.join(workdir, "vocab"))
    result = loop.train_and_evaluate(config, workdir)
    losses = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        record = json.loads(line)
        if "train/loss" in record:
          losses.append(record["train/loss"])
  return {
    "losses": losses,
    "params_sha256": params_hash(result["params"]),
    "eval_loss": result["eval"].get("loss"),
    "sample": result.get("sample"),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  results = {spec: fingerprint(spec, args.steps) for spec in args.configs}
  text = json.dumps(results, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
