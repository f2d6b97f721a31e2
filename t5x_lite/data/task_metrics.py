"""Task metric functions, seqio's convention: `fn(targets, predictions) -> {name: value}`.

Every value is a fraction in [0, 1] (not a percentage), the convention of the loop's own
`accuracy`, `nsp_accuracy` and the few-shot harness, so `task/accuracy` and `accuracy` compare
directly.

Pure Python over label names or texts; a `Task` lists the ones it reports (`Task.metric_fns`),
and evaluation (`evaluation/evaluator.py`) calls them on the model's predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Fraction of predictions equal to their target, in [0, 1]."""
  _check(targets, predictions)
  hits = sum(t == p for t, p in zip(targets, predictions))
  return {"accuracy": hits / max(len(targets), 1)}


def f1_macro(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Mean over the labels seen in targets or predictions of each label's F1, in [0, 1]."""
  _check(targets, predictions)
  labels = sorted(set(targets) | set(predictions), key=str)
  scores = []
  for label in labels:
    tp = sum(t == label and p == label for t, p in zip(targets, predictions))
    fp = sum(t != label and p == label for t, p in zip(targets, predictions))
    fn = sum(t == label and p != label for t, p in zip(targets, predictions))
    scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
  return {"f1_macro": float(np.mean(scores)) if scores else 0.0}


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Fraction of predictions equal to the target after stripping surrounding whitespace."""
  _check(targets, predictions)
  hits = sum(str(t).strip() == str(p).strip() for t, p in zip(targets, predictions))
  return {"exact_match": hits / max(len(targets), 1)}


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Longest common subsequence of two token lists (O(len(a)·len(b)) dynamic programme)."""
  if not a or not b:
    return 0
  previous = [0] * (len(b) + 1)
  for x in a:
    current = [0]
    for j, y in enumerate(b):
      current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
    previous = current
  return previous[-1]


def rouge_l(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Mean sentence-level ROUGE-L F-measure over lower-cased whitespace tokens, in [0, 1]
  (rouge_score's `rougeL` without stemming)."""
  _check(targets, predictions)
  scores = []
  for target, prediction in zip(targets, predictions):
    t, p = str(target).lower().split(), str(prediction).lower().split()
    lcs = _lcs_length(t, p)
    if lcs == 0:
      scores.append(0.0)
      continue
    precision, recall = lcs / len(p), lcs / len(t)
    scores.append(2 * precision * recall / (precision + recall))
  return {"rouge_l": float(np.mean(scores)) if scores else 0.0}


def _check(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
