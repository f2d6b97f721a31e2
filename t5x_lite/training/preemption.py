"""SIGTERM (what a Cloud TPU VM gets before preemption) -> finish the step, save, exit 0.

With several processes every one must stop at the same step: the distributed runtime's
preemption sync point agrees on it.
"""

from __future__ import annotations

import logging
import signal

import jax
from jax.experimental import multihost_utils


class Preemption:
  """A context manager that catches SIGTERM; `should_stop(step)` says when to save and exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self) -> Preemption:
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
      self._previous = None
    return self

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.requested = True
    logging.warning("SIGTERM received: finishing this step, then saving a checkpoint")

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step)) or self.requested
      except Exception:  # noqa: BLE001 - preemption service unavailable: local signal only
        return self.requested
    return self.requested

  def __exit__(self, *exc) -> bool:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
