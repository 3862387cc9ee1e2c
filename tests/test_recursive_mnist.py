"""Recursive training on MNIST: a two-generation tiny run, and the data errors."""

import os

import numpy as np
import pytest

from configs import recursive_mnist
from experiments import main
from mode_interp.data import mnist

pytestmark = pytest.mark.e2e


def test_mnist_two_generations(tmp_path):
  try:
    mnist.load_mnist("test", download=False)
  except mnist.MnistNotFoundError:
    pytest.skip("MNIST test split not found (set MODE_INTERP_MNIST_DIR)")
  wd = str(tmp_path / "run")
  cfg = recursive_mnist.get_config("tiny")
  # The variance filter only: what is MNIST's own here is the classifier's measurements and the
  # filter's figures; the filters' bookkeeping (several of them, generation 0 shared) is
  # tests/test_recursive.py's.
  cfg.recursive.filters = ("variance",)
  res = main.run(cfg, wd)
  gens = {(r["filter"], r["generation"]): r for r in res["generations"]}
  assert set(gens) == {("variance", 0), ("variance", 1)}
  for r in gens.values():
    assert np.isfinite(r["frechet_distance"]) and r["frechet_distance"] > 0
    assert 0.0 <= r["low_confidence_rate"] <= 1.0
  assert os.path.isdir(os.path.join(wd, "classifier"))
  figs = set(os.listdir(os.path.join(wd, "figures")))
  assert {
    "samples_gen0.png",
    "samples_variance_gen1.png",
    "filtered_gen0.png",
    "filtered_variance_gen1.png",
    "recursive_curves.png",
  } <= figs


def test_missing_mnist_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("MODE_INTERP_MNIST_DIR", str(tmp_path / "nothing"))
  monkeypatch.setenv("HOME", str(tmp_path))
  cfg = recursive_mnist.get_config("tiny")
  cfg.data.download = False
  from mode_interp.errors import DataError

  with pytest.raises(DataError, match="MODE_INTERP_MNIST_DIR"):
    main.run(cfg, str(tmp_path / "run"))


def test_more_mnist_images_than_the_split_holds_is_refused(tmp_path):
  try:
    split = mnist.load_mnist("train", download=False, allow_test_fallback=True)
  except mnist.MnistNotFoundError:
    pytest.skip("MNIST not found (set MODE_INTERP_MNIST_DIR)")
  cfg = recursive_mnist.get_config("tiny")
  cfg.data.num_train = len(split) + 1
  cfg.data.download = False
  from mode_interp.errors import DataError

  with pytest.raises(DataError, match=f"data.num_train={len(split) + 1}.*{len(split)} images"):
    main.run(cfg, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "classifier")  # refused before any training
