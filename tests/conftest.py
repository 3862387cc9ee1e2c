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


# The slowest files, slowest first (end-to-end runs that compile U-Nets or train for real).
# `--dist loadfile` hands whole files to the workers in collection order: started first, the
# long files no longer come last and leave one worker running alone while the other idles.
# Every other file follows in its usual order.
SLOW_FILES_FIRST = (
    "test_bench.py", "test_recursive_mnist.py", "test_denoisers_e2e.py", "test_detect.py",
    "test_vdm.py", "test_profile_unet.py", "test_recursive_shapes.py", "test_scaling.py",
    "test_sharding.py", "test_preemption.py", "test_central_contrast.py", "test_crash.py",
    "test_recursive.py", "test_unet_bf16.py", "test_shapes_e2e.py", "test_decision.py",
    "test_gaussian_e2e.py", "test_parity.py", "test_compiler_options.py",
)


def pytest_configure(config):
  config.addinivalue_line("markers", "e2e: small end-to-end runs of an experiment "
                          "(deselect with -m 'not e2e' for a fast pass)")
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
