"""Shared test setup."""

import os
from pathlib import Path

_MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
if _MNIST_DIR.is_dir():
  os.environ.setdefault("MODE_INTERP_MNIST_DIR", str(_MNIST_DIR))


def pytest_configure(config):
  config.addinivalue_line("markers", "e2e: small end-to-end runs of an experiment")
