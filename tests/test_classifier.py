"""Tests for the MNIST classifier and its collapse metrics (mode_interp.classifier).

The tests that need real images use the 10,000-image MNIST test split from
``$MODE_INTERP_MNIST_DIR`` (or the shared ``/work/shared/data/mnist``-style
folder beside the checkout) and are skipped when neither holds it. The
classifier is trained once per module, briefly, on 8,000 of those images; the
other 2,000 are held out.
"""

import math
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from mode_interp import classifier
from mode_interp.data import mnist

N_TRAIN = 8000
TRAIN_STEPS = 200  # ~94-96% held-out accuracy in ~15 s on two busy CPU cores.
TRAIN_LR = 4e-3


def _real_mnist_dir() -> Path:
  env = os.environ.get(mnist.ENV_VAR)
  if env and Path(env).is_dir():
    return Path(env)
  return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def real_test_split():
  """``(x float32 [10000, 32, 32, 1], labels int32 [10000])``, shuffled once."""
  directory = _real_mnist_dir()
  if not directory.is_dir():
    pytest.skip(
      f"real MNIST not available: ${mnist.ENV_VAR} is unset or absent and "
      f"{directory} does not exist"
    )
  try:
    split = mnist.load_mnist("test", data_dir=directory, download=False)
  except mnist.MnistNotFoundError as e:
    pytest.skip(f"real MNIST test split not found in {directory}: {e}")
  perm = np.random.default_rng(0).permutation(len(split))
  x = mnist.to_model_input(split.images[perm])
  return x, split.labels[perm].astype(np.int32)


@pytest.fixture(scope="module")
def trained(real_test_split):
  """Classifier variables trained briefly on the first ``N_TRAIN`` real images."""
  x, y = real_test_split
  return classifier.train_classifier(
    x[:N_TRAIN], y[:N_TRAIN], steps=TRAIN_STEPS, lr=TRAIN_LR, seed=0
  )


def _gaussian_samples(mean, std, n, seed):
  """Samples whose sample mean and (ddof=1) covariance are exactly ``mean``, ``diag(std**2)``."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  z = np.random.default_rng(seed).normal(size=(n, mean.size))
  z -= z.mean(0)
  chol = np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))
  z = z @ np.linalg.inv(chol).T  # whitened: sample covariance exactly I.
  return z * std + mean


# Frechet distance: pure numpy.


def test_frechet_identical_sets_is_zero():
  a = np.random.default_rng(0).normal(size=(500, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
  assert classifier.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  assert classifier.frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
  "mean_a,std_a,mean_b,std_b",
  [
    ([0.0], [1.0], [3.0], [2.0]),
    ([0.0, 1.0, -2.0], [1.0, 0.5, 3.0], [1.0, 1.0, 0.0], [2.0, 0.5, 1.0]),
  ],
)
def test_frechet_matches_closed_form_for_diagonal_gaussians(mean_a, std_a, mean_b, std_b):
  a = _gaussian_samples(mean_a, std_a, 400, seed=0)
  b = _gaussian_samples(mean_b, std_b, 300, seed=1)
  # For diagonal covariances: ||mu_a - mu_b||^2 + sum_i (s_a,i - s_b,i)^2.
  expected = np.sum((np.subtract(mean_a, mean_b)) ** 2) + np.sum((np.subtract(std_a, std_b)) ** 2)
  assert classifier.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
  assert classifier.frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)


def test_frechet_handles_singular_covariances():
  """A dead (constant) feature, as ReLU features have, gives a finite, correct value."""
  a = _gaussian_samples([0.0, 1.0], [1.0, 2.0], 400, seed=0)
  b = _gaussian_samples([1.0, 1.0], [2.0, 2.0], 400, seed=1)
  a = np.concatenate([a, np.zeros((400, 1))], axis=1)
  b = np.concatenate([b, np.zeros((400, 1))], axis=1)
  fd = classifier.frechet_distance(a, b)
  assert np.isfinite(fd)
  assert fd == pytest.approx(1.0 + 1.0, abs=1e-3)


def test_frechet_rejects_bad_shapes():
  with pytest.raises(ValueError):
    classifier.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError):
    classifier.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# Class metrics on constructed probabilities.


def test_class_metrics_balanced_one_hot():
  probs = np.eye(10)[np.arange(1000) % 10]
  m = classifier.class_metrics(probs)
  assert m["entropy"] == pytest.approx(math.log(10))
  assert m["coverage"] == 1.0
  assert m["low_confidence_rate"] == 0.0
  assert m["class_histogram"] == pytest.approx([0.1] * 10)


def test_class_metrics_single_class():
  probs = np.eye(10)[np.full(500, 3)]
  m = classifier.class_metrics(probs)
  assert m["entropy"] == pytest.approx(0.0, abs=1e-12)
  assert m["coverage"] == pytest.approx(0.1)
  assert m["class_histogram"][3] == 1.0
  assert sum(m["class_histogram"]) == pytest.approx(1.0)


def test_class_metrics_coverage_threshold_and_low_confidence():
  # 995 samples of class 0 (confident), 5 of class 1: 0.5% < 1% share, so not covered.
  probs = np.eye(10)[np.r_[np.zeros(995, int), np.ones(5, int)]]
  assert classifier.class_metrics(probs)["coverage"] == pytest.approx(0.1)
  assert classifier.class_metrics(probs, min_share=0.005)["coverage"] == pytest.approx(0.2)
  # 3 of 4 samples have max prob below 0.5; uniform rows give entropy log 10.
  uniform = np.full(10, 0.1)
  peaked = np.r_[0.9, np.full(9, 0.1 / 9)]
  split = np.r_[0.45, 0.4, np.full(8, 0.15 / 8)]
  probs = np.stack([uniform, uniform, split, peaked])
  m = classifier.class_metrics(probs)
  assert m["low_confidence_rate"] == pytest.approx(0.75)
  assert classifier.class_metrics(probs, low_confidence=0.95)["low_confidence_rate"] == 1.0
  assert classifier.class_metrics(probs, low_confidence=0.1)["low_confidence_rate"] == 0.0
  assert m["mean_confidence"] == pytest.approx((0.1 + 0.1 + 0.45 + 0.9) / 4)
  assert 0.0 < m["entropy"] < math.log(10)
  assert classifier.class_metrics(np.tile(uniform, (7, 1)))["entropy"] == pytest.approx(
    math.log(10)
  )


# Model plumbing (untrained weights; no data needed).


def test_model_shapes_and_batched_features_match():
  variables = classifier.init_params(0)
  x = np.random.default_rng(0).uniform(-1, 1, (70, 32, 32, 1)).astype(np.float32)
  logits, feats = classifier.MnistCNN().apply(variables, x, features=True)
  assert logits.shape == (70, 10) and feats.shape == (70, 64)
  assert classifier.MnistCNN().apply(variables, x).shape == (70, 10)
  f1, p1 = classifier.features_and_probs(variables, x, batch_size=1000)
  f2, p2 = classifier.features_and_probs(variables, x, batch_size=32)  # padded last batch
  assert f1.dtype == np.float64 and f1.shape == (70, 64) and p1.shape == (70, 10)
  np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p1.sum(1), 1.0, rtol=1e-5)
  # uint8 [N, 28, 28] MNIST arrays are accepted and converted.
  u8 = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
  f3, _ = classifier.features_and_probs(variables, u8)
  f4, _ = classifier.features_and_probs(variables, mnist.to_model_input(u8))
  np.testing.assert_allclose(f3, f4)


def test_load_or_train_caches(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (64, 32, 32, 1)).astype(np.float32)
  y = rng.integers(0, 10, 64)
  cache = tmp_path / "clf"
  first = classifier.load_or_train(cache, x, y, steps=3, batch_size=16)
  assert (cache / classifier.CHECKPOINT_NAME).exists()

  def no_training(*args, **kwargs):
    raise AssertionError("train_classifier called although a cached classifier exists")

  monkeypatch.setattr(classifier, "train_classifier", no_training)
  second = classifier.load_or_train(cache, x, y, steps=3, batch_size=16)
  assert jax.tree.structure(first) == jax.tree.structure(second)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A fresh folder does train (and here fails through the patched trainer).
  with pytest.raises(AssertionError, match="cached"):
    classifier.load_or_train(tmp_path / "other", x, y, steps=3)


# Trained briefly on real MNIST.


def test_heldout_accuracy(trained, real_test_split):
  x, y = real_test_split
  _, probs = classifier.features_and_probs(trained, x[N_TRAIN:])
  accuracy = float((probs.argmax(1) == y[N_TRAIN:]).mean())
  print(f"held-out accuracy after {TRAIN_STEPS} steps: {accuracy:.4f}")
  assert accuracy >= 0.9


def test_frechet_real_halves_vs_noise(trained, real_test_split):
  x, _ = real_test_split
  feats, _ = classifier.features_and_probs(trained, x)
  half = len(feats) // 2
  fd_halves = classifier.frechet_distance(feats[:half], feats[half:])
  noise = np.random.default_rng(0).uniform(-1, 1, (half,) + x.shape[1:]).astype(np.float32)
  noise_feats, _ = classifier.features_and_probs(trained, noise)
  fd_noise = classifier.frechet_distance(noise_feats, feats[half:])
  print(f"Frechet distance: real halves {fd_halves:.3f}, noise vs real {fd_noise:.1f}")
  assert fd_noise > 10.0
  assert fd_halves < 0.05 * fd_noise


def test_collapse_metrics_real_vs_collapsed(trained, real_test_split):
  x, y = real_test_split
  reference, _ = classifier.features_and_probs(trained, x[:5000])
  real = classifier.collapse_metrics(trained, x[5000:], reference)
  assert real["num_samples"] == 5000
  assert real["coverage"] == 1.0
  assert real["entropy"] > 0.95 * math.log(10)
  assert real["low_confidence_rate"] < 0.1
  # A "collapsed" generation: only images of digit 1.
  ones = x[5000:][y[5000:] == 1]
  collapsed = classifier.collapse_metrics(trained, ones, reference)
  assert collapsed["coverage"] < 0.5
  assert collapsed["entropy"] < 0.5 * math.log(10)
  assert collapsed["frechet_distance"] > 5 * real["frechet_distance"]
