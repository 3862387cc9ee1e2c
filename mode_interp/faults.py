"""Fault injection for the crash and preemption tests: a process that kills or signals
itself at a chosen point.

``MODE_INTERP_KILL_AT=POINT:N`` makes the process send itself SIGKILL (no
clean-up, no ``finally``, no flush: as a power cut or the out-of-memory killer
would) when it reaches ``POINT`` for the ``N``-th time:

- ``train:N``         after training step N, between checkpoints;
- ``checkpoint:N``    while the checkpoint of step N is being written (the write is
                      started, not finished);
- ``sample:N``        after the N-th sample chunk was saved to its cache;
- ``sample_chunk:N``  as the N-th chunk that this run draws for a sample cache starts;
- ``study_chunk:N``   as the N-th chunk that this run of the detection study draws starts.

``MODE_INTERP_SIGNAL_AT=POINT:N[,POINT:N...]`` sends SIGTERM instead, at each point
listed (as a scheduler's preemption notice would; ``train:15,checkpoint:15`` sends a
second one while the preemption's own checkpoint is written).

Unset (the normal case) they do nothing. ``tests/test_crash.py`` uses the kills to prove
that a rerun after a kill at any of these points gives an uninterrupted run's results;
``tests/test_preemption.py`` uses the signals.
"""

import os
import signal

ENV = "MODE_INTERP_KILL_AT"
SIGNAL_ENV = "MODE_INTERP_SIGNAL_AT"


def _listed(spec: str, point: str, n: int) -> bool:
  for item in spec.split(","):
    want, _, count = item.strip().partition(":")
    if want == point and count.isdigit() and int(count) == n:
      return True
  return False


def maybe_kill(point: str, n: int) -> None:
  kill, sig = os.environ.get(ENV), os.environ.get(SIGNAL_ENV)
  if kill and _listed(kill, point, n):
    os.kill(os.getpid(), signal.SIGKILL)
  if sig and _listed(sig, point, n):
    os.kill(os.getpid(), signal.SIGTERM)
