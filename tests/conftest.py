"""Shared test setup."""

import os
from pathlib import Path

_MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
if _MNIST_DIR.is_dir():
  os.environ.setdefault("MODE_INTERP_MNIST_DIR", str(_MNIST_DIR))

# A persistent XLA compilation cache (inherited by the subprocesses the end-to-end tests
# start): a second run of the suite on the same checkout skips most compilations.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_configure(config):
  config.addinivalue_line("markers", "e2e: small end-to-end runs of an experiment "
                          "(deselect with -m 'not e2e' for a fast pass)")
