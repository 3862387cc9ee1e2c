"""Tests for the closed-form score of a Gaussian mixture under the forward process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from mode_interp import diffusion, exact_score, hallucination, samplers
from mode_interp.data import gaussians

TOY = diffusion.make_schedule("linear", 100, 1e-3, 0.2)  # the toy experiments' betas
MEANS_1D = np.array([[1.0], [2.0], [3.0]])
STD = 0.05
GRID = gaussians.make_mixture("grid25")
TIMES = (0, 1, 3, 10, 30, 99)


def _ref_log_density(abar, means, std, x):
  """float64 numpy log p_t(x) of the noised mixture, ``x`` [N, D]."""
  v = abar * std**2 + 1 - abar
  d = means.shape[1]
  diff = x[:, None, :] - np.sqrt(abar) * means[None]
  comp = -0.5 * (diff**2).sum(-1) / v - 0.5 * d * np.log(2 * np.pi * v)
  return logsumexp(comp, axis=1) - np.log(len(means))


def _points(means, abar, n, seed):
  """Points at the scale of x_t: around and between the (scaled) modes."""
  rng = np.random.default_rng(seed)
  lo, hi = means.min(0) - 0.3, means.max(0) + 0.3
  x0 = lo + (hi - lo) * rng.random((n, means.shape[1]))
  return np.sqrt(abar) * x0


CASES = [("1d", MEANS_1D, STD), ("grid25", GRID.means, GRID.std)]


# Autodiff of the log density, jitted with the time an argument: one compilation per case
# instead of op-by-op dispatch of the gradient's many small operations.
@jax.jit
def _autodiff_score(means, std, x, t, weights=None):
  return jax.grad(
    lambda y: jnp.sum(exact_score.mixture_log_density(TOY, means, std, y, t, weights))
  )(x)


@jax.jit
def _autodiff_score_per_point(means, std, x, t, weights=None):
  return jax.vmap(
    jax.grad(lambda p: exact_score.mixture_log_density(TOY, means, std, p[None], t, weights)[0])
  )(x)


@pytest.mark.parametrize("name,means,std", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("t", TIMES)
def test_log_density_and_score(name, means, std, t):
  abar = float(np.float64(np.asarray(TOY.alphas_bar)[t]))
  x = _points(means, abar, 64, seed=t)
  xj = jnp.asarray(x, jnp.float32)
  x = np.asarray(xj, np.float64)  # compare at exactly the float32 points

  logp = np.asarray(exact_score.mixture_log_density(TOY, means, std, xj, t), np.float64)
  ref = _ref_log_density(abar, means, std, x)
  np.testing.assert_allclose(logp, ref, rtol=1e-4, atol=1e-3)

  score = np.asarray(exact_score.mixture_score(TOY, means, std, xj, t), np.float64)
  assert score.shape == x.shape
  v = abar * std**2 + 1 - abar
  scale = np.abs(x).max() / v + 1.0  # the size of the score's terms

  # Against autodiff of the log density (both float32).
  grad = _autodiff_score(means, std, xj, t)
  np.testing.assert_allclose(score, grad, rtol=1e-4, atol=1e-4 * scale)

  # Against central finite differences of the float64 reference density.
  h = 1e-5 * np.sqrt(v)
  fd = np.stack(
    [
      (
        _ref_log_density(abar, means, std, x + h * e)
        - _ref_log_density(abar, means, std, x - h * e)
      )
      / (2 * h)
      for e in np.eye(x.shape[1])
    ],
    axis=1,
  )
  np.testing.assert_allclose(score, fd, rtol=1e-4, atol=1e-4 * scale)

  # A time given per sample gives the same as a scalar time.
  tb = jnp.full((len(x),), t, jnp.int32)
  np.testing.assert_allclose(exact_score.mixture_score(TOY, means, std, xj, tb), score, rtol=1e-6)


def test_posterior_mean_at_small_t_is_a_step_function_between_modes():
  """Near t = 0 the posterior mean jumps from one mode to the next at the midpoint
  (no interpolation), and within a mode it is the Gaussian conditional mean."""
  t = 1
  abar = float(TOY.alphas_bar[t])
  u = np.array([1.3, 1.45, 1.55, 1.7, 2.3, 2.45, 2.55, 2.7])
  xs = np.sqrt(abar) * u[:, None]
  pm = np.asarray(exact_score.mixture_posterior_mean(TOY, MEANS_1D, STD, jnp.asarray(xs), t))[:, 0]
  nearest = np.round(u)  # 1, 1, 2, 2, 2, 2, 3, 3
  v = abar * STD**2 + 1 - abar
  np.testing.assert_allclose(
    pm, nearest + np.sqrt(abar) * STD**2 / v * (xs[:, 0] - np.sqrt(abar) * nearest), atol=2e-3
  )
  assert pm[2] - pm[1] > 0.6 and pm[6] - pm[5] > 0.6


@pytest.mark.parametrize("name,means,std", CASES, ids=[c[0] for c in CASES])
def test_posterior_mean_is_tweedie(name, means, std):
  for t in TIMES:
    abar = float(np.asarray(TOY.alphas_bar)[t])
    x = jnp.asarray(_points(means, abar, 50, seed=100 + t), jnp.float32)
    pm = np.asarray(exact_score.mixture_posterior_mean(TOY, means, std, x, t), np.float64)
    score = np.asarray(exact_score.mixture_score(TOY, means, std, x, t), np.float64)
    tweedie = (np.asarray(x, np.float64) + (1 - abar) * score) / np.sqrt(abar)
    tol = 2e-5 / np.sqrt(abar) * (1 + np.abs(score).max() * (1 - abar))
    np.testing.assert_allclose(pm, tweedie, atol=tol, err_msg=f"t={t}")
    # The exact eps, turned into x0 by the sampler's formula, is the same predictor.
    eps_fn = exact_score.make_exact_eps_fn(TOY, means, std)
    tb = jnp.full((x.shape[0],), t, jnp.int32)
    x0 = diffusion.x0_from_eps(TOY, x, tb, eps_fn(None, x, tb))
    np.testing.assert_allclose(x0, pm, atol=max(tol, 1e-4), err_msg=f"t={t}")


def test_exact_score_ddpm_does_not_hallucinate():
  """The paper's control: sampling with the exact score gives ~no samples between modes."""
  eps_fn = exact_score.make_exact_eps_fn(TOY, MEANS_1D, STD)
  spec = samplers.SamplerSpec(shape=(1,), window=10)
  fn = jax.jit(samplers.get_sampling_fn("ddpm", TOY, eps_fn, spec))
  out = samplers.sample(fn, None, jax.random.key(0), 2000, chunk_size=1000)
  x = out.samples
  assert x.shape == (2000, 1) and np.all(np.isfinite(x))
  hal = hallucination.mixture_hallucinations(x, MEANS_1D, STD, k=4.0)
  assert hal.mean() < 0.01
  shares = np.bincount(hallucination.nearest_mode(x, MEANS_1D), minlength=3) / len(x)
  assert np.all(np.abs(shares - 1 / 3) < 0.06), shares
  # The samples look like the data: within a mode, spread about STD, centred on it.
  modes = hallucination.nearest_mode(x, MEANS_1D)
  for k in range(3):
    xk = x[(modes == k) & ~hal, 0]
    assert abs(xk.mean() - MEANS_1D[k, 0]) < 0.02
    assert 0.5 * STD < xk.std() < 1.5 * STD


@pytest.mark.parametrize("t", (0, 3, 30))
def test_weighted_mixture_density_score_and_posterior_mean(t):
  """Unequal weights (the imbalanced grid): log-density against float64 numpy, the score
  against its finite-difference gradient, and E[x0|x_t] sums to the weighted prior at
  t = T-1 (where x_t carries almost no information)."""
  mix = gaussians.make_mixture("grid25", imbalance=10.0)
  w = mix.mode_weights
  assert w.max() / w.min() == pytest.approx(10.0) and w.sum() == pytest.approx(1.0)
  abar = float(np.float64(np.asarray(TOY.alphas_bar)[t]))
  xj = jnp.asarray(_points(mix.means, abar, 32, seed=t), jnp.float32)
  x = np.asarray(xj, np.float64)
  v = abar * mix.std**2 + 1 - abar
  diff = x[:, None, :] - np.sqrt(abar) * mix.means[None]
  comp = -0.5 * (diff**2).sum(-1) / v - np.log(2 * np.pi * v) + np.log(w)[None]
  ref = logsumexp(comp, axis=1)
  logp = np.asarray(exact_score.mixture_log_density(TOY, mix.means, mix.std, xj, t, w))
  np.testing.assert_allclose(logp, ref, rtol=1e-4, atol=1e-3)
  score = np.asarray(exact_score.mixture_score(TOY, mix.means, mix.std, xj, t, w), np.float64)
  g = np.asarray(_autodiff_score_per_point(mix.means, mix.std, xj, t, w), np.float64)
  np.testing.assert_allclose(score, g, rtol=2e-3, atol=2e-3)
  # Far from the data the weights decide: the posterior mean is the weighted mean of the modes.
  big = jnp.zeros((1, 2), jnp.float32)
  pm = np.asarray(exact_score.mixture_posterior_mean(TOY, mix.means, mix.std, big, 99, w))[0]
  eq = np.asarray(exact_score.mixture_posterior_mean(TOY, mix.means, mix.std, big, 99))[0]
  np.testing.assert_allclose(pm, (w[:, None] * mix.means).sum(0), atol=0.05)
  np.testing.assert_allclose(eq, mix.means.mean(0), atol=0.05)


def test_imbalanced_counts_follow_the_weights():
  mix = gaussians.make_mixture("grid25", imbalance=3.0)
  heavy = gaussians.heavy_modes(mix)
  assert heavy.sum() == 13 and heavy[0] and not heavy[1] and heavy[12]  # checkerboard
  counts = mix.mode_counts(10_000)
  assert counts.sum() == 10_000
  np.testing.assert_allclose(counts / 10_000, mix.mode_weights, atol=1e-4)
  x = mix.sample(10_000, seed=0)
  got = np.bincount(hallucination.nearest_mode(x, mix.means), minlength=25)
  np.testing.assert_array_equal(got, counts)
  assert gaussians.make_mixture("gaussian1d", imbalance=1.0).weights is None


def test_hallucinations_between_counts_pairs_and_handles_none():
  from experiments.gaussian import hallucinations_between

  mix = gaussians.make_mixture("grid25", imbalance=3.0)
  m = mix.means
  heavy = gaussians.heavy_modes(mix)
  assert heavy[0] and not heavy[1] and heavy[2]  # a checkerboard: neighbours alternate
  # Between neighbouring modes 0-1 and 1-2: both heavy-light.
  pts = np.stack([0.6 * m[0] + 0.4 * m[1], 0.4 * m[1] + 0.6 * m[2]])
  got = hallucinations_between(pts, mix)
  assert (got["heavy-heavy"], got["heavy-light"], got["light-light"]) == (0, 2, 0)
  # 0.4 of the way from the heavy mode 0 to 1, and from the heavy mode 2 to 1.
  assert got["position_heavy_to_light"] == pytest.approx(0.4)
  assert got["share_nearer_heavy"] == 1.0
  assert hallucinations_between(np.zeros((0, 2)), mix) == {
    "heavy-heavy": 0,
    "heavy-light": 0,
    "light-light": 0,
    "position_heavy_to_light": None,
    "share_nearer_heavy": None,
  }
