"""Fault injection for the crash tests: a process that kills itself at a chosen point.

``MODE_INTERP_KILL_AT=POINT:N`` makes the process send itself SIGKILL (no
clean-up, no ``finally``, no flush: as a power cut or the out-of-memory killer
would) when it reaches ``POINT`` for the ``N``-th time:

- ``train:N``       after training step N, between checkpoints;
- ``checkpoint:N``  while the checkpoint of step N is being written (the write is
                    started, not finished);
- ``sample:N``      after the N-th sample chunk was saved to its cache.

Unset (the normal case) it does nothing. ``tests/test_crash.py`` uses it to prove
that a rerun after a kill at any of these points gives an uninterrupted run's results.
"""

import os
import signal

ENV = "MODE_INTERP_KILL_AT"


def maybe_kill(point: str, n: int) -> None:
  spec = os.environ.get(ENV)
  if not spec:
    return
  want, _, count = spec.partition(":")
  if want == point and count.isdigit() and int(count) == n:
    os.kill(os.getpid(), signal.SIGKILL)
