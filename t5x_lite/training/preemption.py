"""SIGTERM (what a Cloud TPU VM gets before preemption) or Ctrl-C (SIGINT) -> finish the step,
save, exit 0 with the command that resumes; a second Ctrl-C stops at once (KeyboardInterrupt).
A signal that arrives before the first step (while compiling) stops the run before it.

With several processes every one must stop at the same step: the distributed runtime's
preemption sync point agrees on it.
"""

from __future__ import annotations

import logging
import signal

import jax
from jax.experimental import multihost_utils


class Preemption:
  """A context manager that catches SIGTERM and SIGINT; `should_stop(step)` says when to save
  and exit. `install()` may be called early (before compiling); entering installs if needed."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal_name = ""  # 'Ctrl-C' or 'SIGTERM': what asked the run to stop
    self._previous: dict[int, object] = {}

  def install(self) -> Preemption:
    if self._previous:
      return self
    try:
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
      self._previous = {}
    return self

  def __enter__(self) -> Preemption:
    return self.install()

  def _handle(self, signum, frame) -> None:
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
    self.requested = True
    name = self.signal_name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    logging.warning(
      "%s received: finishing this step, then saving a checkpoint%s",
      name,
      " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "",
    )

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step)) or self.requested
      except Exception:  # noqa: BLE001 - preemption service unavailable: local signal only
        return self.requested
    return self.requested

  def uninstall(self) -> None:
    """Puts the previous handlers back (idempotent)."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def __exit__(self, *exc) -> bool:
    self.uninstall()
    return False
