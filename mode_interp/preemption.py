"""Preemption: SIGTERM or SIGINT stops a run at its next safe point, with its work saved.

A scheduler that preempts a job sends SIGTERM and, after a grace period, SIGKILL. Without
a handler the process dies at once and a rerun repeats up to one checkpoint interval. With
:func:`install` (the entry points call it) the signal only sets a flag; the loops ask
:func:`should_stop` at their safe points -- after every training step, before every sample
chunk -- save what they have (a checkpoint at the step reached; finished chunks are already
in their caches) and raise :class:`mode_interp.errors.Preempted`, which the entry point turns
into one log line and :func:`exit_status` (128 + the signal's number: 143 for SIGTERM, 130
for SIGINT, what a shell reports for a process that the signal ended).

The first signal disarms the handlers: a second one ends the process at once, as if none
were installed (a checkpoint cut short is skipped on resume, the one before it is used).

Several processes must stop at the same point, or the ones that go on wait forever in the
next collective. So :func:`should_stop` is collective: every process calls it at the same
points in the same order, and they all get the same answer. Where jax's preemption service
runs (after ``jax.distributed.initialize``, unless ``jax_enable_preemption_service`` is off),
it owns SIGTERM and the answer is ``multihost_utils.reached_preemption_sync_point`` at this
module's own call count (a SIGINT is passed on to it as a SIGTERM); it costs nothing until a
notice arrives, then the processes agree on the next call in the background. Without the
service the processes all-gather their flags at every call (a host round trip per step).
"""

import os
import signal
from typing import Optional

import jax
import numpy as np
from absl import logging

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: Optional[int] = None  # the first signal's number, once one arrived
_calls = 0  # should_stop calls so far: the sync point's counter


def _sync_manager():
  """jax's preemption sync manager, or None (no distributed runtime, or the service off)."""
  try:
    from jax._src import distributed
  except ImportError:  # a jax without it: the all-gather below still agrees
    return None
  state = distributed.global_state
  return state.preemption_sync_manager if state.client is not None else None


def install() -> None:
  """Makes SIGTERM and SIGINT request a stop at the next :func:`should_stop` (call after
  ``jax.distributed.initialize``, so that jax's preemption service keeps SIGTERM)."""
  global _received
  _received = None
  for sig in SIGNALS:
    if sig == signal.SIGTERM and _sync_manager() is not None:
      continue  # jax's notifier listens to SIGTERM itself and tells every process
    signal.signal(sig, _handler)


def _handler(signum, frame):  # noqa: ARG001 - the signal module's signature
  global _received
  if _received is None:
    _received = signum
  jax_sigterm = _sync_manager() is not None
  for sig in SIGNALS:
    if not (sig == signal.SIGTERM and jax_sigterm):
      signal.signal(sig, signal.SIG_DFL)  # a second signal ends the process at once
  if jax_sigterm:
    os.kill(os.getpid(), signal.SIGTERM)  # jax's notifier tells the other processes


def requested() -> bool:
  """Whether this process received a stop signal (its own view; see :func:`should_stop`)."""
  return _received is not None


def should_stop() -> bool:
  """Whether every process agrees to stop here. Collective: call it at the same points on
  every process; on one process it only reads the flag."""
  global _calls
  _calls += 1
  if _sync_manager() is not None:
    from jax.experimental import multihost_utils

    if multihost_utils.reached_preemption_sync_point(_calls):
      logging.warning("preemption: every process reached the sync point (call %d)", _calls)
      return True
    return False
  if jax.process_count() == 1:
    return _received is not None
  from jax.experimental import multihost_utils

  flags = multihost_utils.process_allgather(np.asarray([_received is not None], np.int32))
  return bool(np.any(flags))


def exit_status() -> int:
  """The exit status of a preempted run: 128 + the number of the signal received (SIGTERM,
  143, where this process received none: another process's notice stopped it)."""
  return 128 + int(_received if _received is not None else signal.SIGTERM)
