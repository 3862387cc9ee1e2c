"""Shared test setup."""

import os
from pathlib import Path

import pytest

_MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
if _MNIST_DIR.is_dir():
  os.environ.setdefault("MODE_INTERP_MNIST_DIR", str(_MNIST_DIR))

# A persistent XLA compilation cache (inherited by the subprocesses the end-to-end tests
# start): a second run of the suite on the same checkout skips most compilations.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


# The slowest files, slowest first (end-to-end runs that compile U-Nets or train for real).
# `--dist loadfile` hands whole files to the workers in collection order: started first, the
# long files no longer come last and leave one worker running alone while the other idles.
# Every other file follows in its usual order.
# test_bench.py and test_recursive_mnist.py compile the same tiny U-Net training step: with
# a file between them, the second finds it in the persistent cache instead of compiling it
# at the same time as the first.
SLOW_FILES_FIRST = (
  "test_bench.py",
  "test_vdm.py",
  "test_recursive_mnist.py",
  "test_denoisers_e2e.py",
  "test_detect.py",
  "test_profile_unet.py",
  "test_recursive_shapes.py",
  "test_scaling.py",
  "test_sharding.py",
  "test_preemption.py",
  "test_central_contrast.py",
  "test_crash.py",
  "test_recursive.py",
  "test_unet_bf16.py",
  "test_shapes_e2e.py",
  "test_decision.py",
  "test_gaussian_e2e.py",
  "test_parity.py",
  "test_compiler_options.py",
)


def pytest_configure(config):
  config.addinivalue_line(
    "markers",
    "e2e: small end-to-end runs of an experiment (deselect with -m 'not e2e' for a fast pass)",
  )
  # xdist would otherwise order the files by their number of tests, many first.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  order = {}
  for item in items:
    order.setdefault(item.path.name, len(order))
  # A stable sort: the tests of a file keep their order.
  items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[item.path.name]))


# -- one trained `configs/shapes.py:tiny` workdir for the commands that read one ----------------


def _shared_root(tmp_path_factory) -> Path:
  """A folder every xdist worker of this session sees (the workers' base temps' parent)."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def _shapes_tiny_original(tmp_path_factory):
  """A finished ``configs/shapes.py:tiny`` run, trained once per session by whichever worker
  asks first (the others wait on a file lock), read by the tests of commands that take a
  trained workdir (the detection study, the decision analysis). Tests get a copy each
  (``shapes_tiny_run``); ``test_shapes_e2e`` keeps its own run, the contract under test."""
  import fcntl

  root = _shared_root(tmp_path_factory)
  path = root / "shapes_tiny_shared" / "run"
  with open(root / "shapes_tiny_shared.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not (path / "results.json").exists():
        from configs import shapes as shapes_config
        from experiments import main

        main.run(shapes_config.get_config("tiny"), str(path), "configs/shapes.py:tiny")
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return path


@pytest.fixture
def shapes_tiny_run(_shapes_tiny_original, tmp_path) -> str:
  """This test's own copy of the session's trained ``configs/shapes.py:tiny`` workdir."""
  import shutil

  dest = tmp_path / "shapes_tiny"
  shutil.copytree(_shapes_tiny_original, dest)
  return str(dest)
