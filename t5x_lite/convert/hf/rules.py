"""The machinery of the Hugging Face mappings: `Rule` (one HF tensor <-> one parameter), the
conversions of one tensor each way, and helpers the family tables share.

Each family's table lives with the family: `gpt2.py`, `bert.py`, `t5.py` (big_vision's "the
model family owns its checkpoint surgery").
"""

from __future__ import annotations

import dataclasses

import numpy as np


class ConversionError(ValueError):
  """The HF directory or the params cannot be converted (names the file or tensor)."""


ACTIVATIONS = {
  "gelu": "gelu",
  "gelu_new": "gelu_new",
  "gelu_pytorch_tanh": "gelu_new",
  "relu": "relu",
}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One HF tensor <-> one t5x_lite parameter.

  kind: 'copy' (same values, maybe reshaped), 'linear' (torch Linear [out, in], transposed),
  'conv1d' (GPT-2 Conv1D [in, out]); `in_ndim` = how many leading axes of our kernel are its
  input; `part` = (i, n): the i-th of n equal slices of the HF tensor's last axis (GPT-2 c_attn).
  """

  hf: str
  path: tuple[str, ...]
  kind: str = "copy"
  in_ndim: int = 1
  part: tuple[int, int] | None = None


def activation_from_hf(name: str, source: str) -> str:
  if name not in ACTIVATIONS:
    raise ConversionError(f"{source}: activation {name!r} is not supported ({list(ACTIVATIONS)})")
  return ACTIVATIONS[name]


def activation_to_hf(name: str) -> str:
  return {v: k for k, v in ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[name]


def attention_rules(prefix: str, path: tuple[str, ...], names: dict[str, str], kind: str):
  rules = []
  for ours, theirs in names.items():
    in_ndim = 2 if ours == "out" else 1
    rules.append(Rule(f"{prefix}{theirs}.weight", path + (ours, "kernel"), kind, in_ndim))
  return rules


def norm_rules(hf: str, path: tuple[str, ...]) -> list[Rule]:
  return [Rule(hf + ".weight", path + ("scale",)), Rule(hf + ".bias", path + ("bias",))]


def dense_rules(hf: str, path: tuple[str, ...], in_ndim: int = 1) -> list[Rule]:
  return [
    Rule(hf + ".weight", path + ("kernel",), "linear", in_ndim),
    Rule(hf + ".bias", path + ("bias",)),
  ]


def to_ours(rule: Rule, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  if rule.part is not None:
    index, count = rule.part
    value = np.split(value, count, axis=-1)[index]
  if rule.kind == "linear":
    value = value.T
  if value.size != int(np.prod(shape)):
    raise ConversionError(
      f"HF tensor {rule.hf} has shape {value.shape}; {'/'.join(rule.path)} expects {shape}"
    )
  return np.ascontiguousarray(value.reshape(shape), np.float32)


def to_theirs(rule: Rule, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if rule.kind in ("linear", "conv1d"):
    rows = int(np.prod(value.shape[: rule.in_ndim]))
    value = value.reshape(rows, -1)
    return value.T if rule.kind == "linear" else value
  return value.reshape(-1) if rule.path[-1] in ("bias", "scale") else value
