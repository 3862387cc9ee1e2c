"""Tests for the detectors and Intrinsic Quenching: each against a closed form."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mode_interp import detectors, diffusion, samplers

SCHED = diffusion.make_schedule("linear", 200, 1e-4, 0.02)
MU = np.array([0.3, -0.2, 0.5])
VAR = np.array([0.5, 0.2, 0.0])  # a zero-variance direction: LID = 2 of D = 3


def _gauss_eps(mu=MU, var=VAR, sched=SCHED):
  """The exact noise predictor of data N(mu, diag(var)): eps = sigma (y - psi mu) / v_t."""
  mu_j, var_j = jnp.asarray(mu, jnp.float32), jnp.asarray(var, jnp.float32)

  def eps_fn(params, y, t):
    del params
    psi = sched.sqrt_alphas_bar[t].reshape(-1, 1)
    sig = sched.sqrt_one_minus_alphas_bar[t].reshape(-1, 1)
    return sig * (y - psi * mu_j) / (psi**2 * var_j + sig**2)

  return eps_fn


def _coefs(t):
  return float(SCHED.sqrt_alphas_bar[t]), float(SCHED.sqrt_one_minus_alphas_bar[t])


def _flipd_closed_form(x, t):
  psi, sig = _coefs(t)
  vt = psi**2 * VAR + sig**2
  return len(MU) - np.sum(sig**2 / vt) + sig**2 * psi**2 * np.sum((x - MU) ** 2 / vt**2, axis=-1)


X = np.stack([MU, MU + [0.1, 0.0, 0.0], MU + [0.0, 0.0, 0.02], MU + [0.3, -0.4, 0.1]])


@pytest.mark.parametrize("t0", [0, 3, 40])
def test_flipd_of_a_gaussian_is_its_closed_form(t0):
  chex.clear_trace_counter()  # one trace per t0
  fn = jax.jit(
    chex.assert_max_traces(lambda x: detectors.flipd(_gauss_eps(), None, SCHED, x, t0), n=1)
  )
  got = np.asarray(fn(jnp.asarray(X, jnp.float32)))
  np.testing.assert_allclose(got, _flipd_closed_form(X, t0), rtol=1e-4, atol=1e-4)


def test_flipd_at_small_t0_gives_the_intrinsic_dimension():
  """At the mean, FLIPD -> LID = 2 (the zero-variance direction does not count) as t0 -> 0;
  and it exceeds D off the data along the degenerate direction."""
  got = np.asarray(detectors.flipd(_gauss_eps(), None, SCHED, jnp.asarray(X[:1], jnp.float32), 0))
  assert abs(got[0] - 2.0) < 1e-3
  off = np.asarray(
    detectors.flipd(
      _gauss_eps(), None, SCHED, jnp.asarray(MU + [0.0, 0.0, 0.05], jnp.float32)[None], 0
    )
  )
  assert off[0] > len(MU)


def test_hutchinson_trace_is_exact_for_a_diagonal_jacobian():
  """Rademacher probes square to 1: for a diagonal Jacobian one probe gives the exact trace."""
  x = jnp.asarray(X, jnp.float32)
  exact = detectors.flipd(_gauss_eps(), None, SCHED, x, 5, method="exact")
  hutch = detectors.flipd(
    _gauss_eps(), None, SCHED, x, 5, method="hutchinson", key=jax.random.key(0), num_probes=1
  )
  np.testing.assert_allclose(hutch, exact, rtol=1e-5, atol=1e-5)
  assert detectors.trace_method(3, 16) == "exact" and detectors.trace_method(17, 16) == "hutchinson"
  with pytest.raises(ValueError, match="exact, hutchinson"):
    detectors.eps_and_trace(_gauss_eps(), None, x, 5, method="lanczos")


def test_hutchinson_estimates_a_full_jacobian_trace_without_bias():
  w = jnp.asarray([[1.0, 0.7, -0.3], [0.2, -0.5, 0.9], [0.4, 0.1, 2.0]])
  eps = lambda p, x, t: x @ w.T
  x = jnp.zeros((2, 3))
  _, exact = detectors.eps_and_trace(eps, None, x, 0)
  np.testing.assert_allclose(exact, np.trace(np.asarray(w)), rtol=1e-6)
  _, est = detectors.eps_and_trace(eps, None, x, 0, "hutchinson", jax.random.key(1), 4000)
  np.testing.assert_allclose(est, np.trace(np.asarray(w)), atol=0.08)


def test_denoising_loss_of_a_gaussian_matches_its_expectation():
  """E|eps(psi x + sigma e) - e|^2 = sum_i [sigma^2 psi^2 (x-mu)^2 + psi^4 v^2] / v_t^2,
  which tends to the LID (2) at the mean as t -> 0."""
  t = 2
  psi, sig = _coefs(t)
  vt = psi**2 * VAR + sig**2
  want = np.sum((sig**2 * psi**2 * (X - MU) ** 2 + psi**4 * VAR**2) / vt**2, axis=1)
  got = np.asarray(
    detectors.lid_denoising_loss(
      _gauss_eps(), None, SCHED, jnp.asarray(X, jnp.float32), t, jax.random.key(3), 4000
    )
  )
  np.testing.assert_allclose(got, want, rtol=0.06)
  assert abs(want[0] - 2.0) < 0.01


def test_renoise_spread_of_a_gaussian_matches_its_closed_form():
  """x0_hat = mu + psi v / v_t (x_t - psi mu): its variance over the draws is
  (psi v sigma / v_t)^2 per dimension, 0 along the zero-variance one."""
  t = 30
  psi, sig = _coefs(t)
  vt = psi**2 * VAR + sig**2
  want = np.sum((psi * VAR * sig / vt) ** 2)
  got = np.asarray(
    detectors.renoise_spread(
      _gauss_eps(), None, SCHED, jnp.asarray(X, jnp.float32), t, jax.random.key(4), 3000
    )
  )
  np.testing.assert_allclose(got, want, rtol=0.08)


# -- manifold instability: the covariance trace of a linear map ------------------------------

W = jnp.asarray([[0.4, 0.3], [-0.2, 0.6]])


def _linear_eps(params, x, t):
  del params
  return x @ W.T + 0.01 * t.astype(jnp.float32).reshape(-1, 1)


def _ddim(num_steps=8):
  return samplers.get_sampling_fn(
    "ddim", SCHED, _linear_eps, samplers.SamplerSpec(shape=(2,), num_steps=num_steps, window=2)
  )


def test_output_spread_through_a_linear_map_is_exact():
  """DDIM (eta = 0) with a linear noise predictor is an affine map z -> A z + b of its
  starting noise; with the orthogonal design the spread is exactly delta^2 tr(A A^T)."""
  ddim = _ddim()
  key = jax.random.key(0)
  z = jax.random.normal(key, (1, 2))
  jac = jax.jacfwd(lambda zz: ddim(None, key, jnp.zeros(1, jnp.int32), zz[None]).samples[0])(z[0])
  want = 0.05**2 * float(jnp.sum(jac**2))
  chunk = detectors.manifold_instability_sampler(
    ddim, (2,), 8, 0.05, jax.random.key(1), "orthogonal"
  )
  fn = jax.jit(chex.assert_max_traces(chunk, n=1))
  out = fn(None, key, jnp.arange(5))
  np.testing.assert_allclose(out.traj_variance, want, rtol=1e-4)
  assert out.samples.shape == (5, 8, 2)
  # The Gaussian design is unbiased: close with many perturbations.
  gauss = detectors.manifold_instability_sampler(ddim, (2,), 2000, 0.05, jax.random.key(2))
  np.testing.assert_allclose(jax.jit(gauss)(None, key, jnp.arange(2)).traj_variance, want, rtol=0.1)


def test_orthogonal_perturbations_have_identity_second_moment():
  p = np.asarray(detectors.perturbations(jax.random.key(5), 12, (3,), "orthogonal"), np.float64)
  np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(p.T @ p / len(p), np.eye(3), atol=1e-5)
  with pytest.raises(ValueError, match="multiple of 2 \\* D = 6"):
    detectors.perturbations(jax.random.key(5), 8, (3,), "orthogonal")
  with pytest.raises(ValueError, match="gaussian, orthogonal"):
    detectors.perturbations(jax.random.key(5), 8, (3,), "sobol")


def test_instability_uses_the_samples_own_starting_noise():
  """Perturbation scale 0: every perturbed run reproduces the DDIM sample of that index."""
  ddim = _ddim()
  key = jax.random.key(7)
  idx = jnp.arange(3) + 11
  base = jax.jit(ddim)(None, key, idx).samples
  out = jax.jit(
    detectors.manifold_instability_sampler(ddim, (2,), 4, 0.0, jax.random.key(1), "orthogonal")
  )(None, key, idx)
  np.testing.assert_allclose(out.samples, np.repeat(np.asarray(base)[:, None], 4, 1), rtol=1e-6)
  np.testing.assert_allclose(out.traj_variance, 0.0, atol=1e-10)


# -- the oracle against direct numerical integration -----------------------------------------


def _posterior_out_of_band_grid(y, means, std, psi, sigma, r, grid_axes, weights=None):
  """P(x0 outside every r-ball | x_t = y) by Bayes' rule on a grid (direct, brute force)."""
  pts = np.stack(np.meshgrid(*grid_axes, indexing="ij"), -1).reshape(-1, len(grid_axes))
  w = np.full(len(means), 1 / len(means)) if weights is None else weights
  prior = sum(wk * np.exp(-0.5 * ((pts - m) ** 2).sum(-1) / std**2) for wk, m in zip(w, means))
  lik = np.exp(-0.5 * ((y - psi * pts) ** 2).sum(-1) / sigma**2)
  post = prior * lik
  d = np.sqrt(((pts[:, None] - np.asarray(means)[None]) ** 2).sum(-1)).min(1)
  return post[d > r].sum() / post.sum()


def test_oracle_is_exact_in_1d():
  means = np.array([[1.0], [2.0], [3.0]])
  std, psi, sigma = 0.05, 0.98, 0.04
  xs = np.array([[1.0], [1.12], [1.21], [1.5], [2.6], [3.3], [0.5]])
  got = detectors.oracle_out_of_band(xs, means, std, psi, sigma, 4.0)
  grid = (np.linspace(0.0, 4.0, 400_001),)
  want = [_posterior_out_of_band_grid(psi * x, means, std, psi, sigma, 0.2, grid) for x in xs]
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)  # the grid: step 1e-5
  assert got[0] < 1e-6 and got[3] > 0.99  # at a mode / midway


def test_oracle_is_exact_in_2d_with_unequal_weights():
  means = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])
  weights = np.array([0.4, 0.3, 0.2, 0.1])
  std, psi, sigma = 0.03, 0.99, 0.03
  xs = np.array([[0.12, 0.02], [0.25, 0.02]])
  got = detectors.oracle_out_of_band(xs, means, std, psi, sigma, 4.0, weights)
  # A grid of step 2e-4 around each sample (the posterior's mass lies within it); its
  # error falls with the step (1e-5 relative at step 1e-4), the closed form's does not.
  want = [
    _posterior_out_of_band_grid(
      psi * x,
      means,
      std,
      psi,
      sigma,
      0.12,
      [np.linspace(c - 0.22, c + 0.22, 2201) for c in x],
      weights,
    )
    for x in xs
  ]
  np.testing.assert_allclose(got, want, rtol=1.5e-3, atol=1e-6)


def test_oracle_refuses_overlapping_balls():
  with pytest.raises(ValueError, match="overlap"):
    detectors.oracle_out_of_band(np.zeros((1, 1)), np.array([[0.0], [0.3]]), 0.05, 1.0, 0.1)


# -- Intrinsic Quenching ---------------------------------------------------------------------


def test_iq_correction_is_the_lid_gradient_step_inside_its_window():
  """For a single Gaussian, LID(x_t) = D - sigma tr J + |eps|^2 with a constant Jacobian, so
  the correction is eps + strength sigma * 2 sigma^2 (x - psi mu) / v_t^2 (towards the
  mean), only inside the window and above the threshold."""
  base = _gauss_eps()
  thr = np.full(SCHED.timesteps, -np.inf, np.float32)
  fn = detectors.iq_eps_fn(base, SCHED, thr, 5, 20, strength=0.3)
  x = jnp.asarray(X, jnp.float32)
  t = 10
  psi, sig = _coefs(t)
  vt = psi**2 * VAR + sig**2
  grad = 2 * sig**2 * (X - psi * MU) / vt**2
  want = np.asarray(base(None, x, jnp.full((1,), t))) + 0.3 * sig * grad
  got = jax.jit(chex.assert_max_traces(fn, n=1))(None, x, jnp.full((1,), t, jnp.int32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Outside the window, or with a threshold nobody exceeds, the predictor is untouched (up to
  # the rounding of a compiled program against an eager one).
  for tt, th in ((30, thr), (t, np.full(SCHED.timesteps, np.inf, np.float32))):
    f = detectors.iq_eps_fn(base, SCHED, th, 5, 20, strength=0.3)
    np.testing.assert_allclose(
      f(None, x, jnp.full((1,), tt, jnp.int32)),
      base(None, x, jnp.full((1,), tt, jnp.int32)),
      rtol=1e-6,
      atol=0,
    )


def test_iq_thresholds_are_quantiles_of_the_noised_data():
  base = _gauss_eps()
  data = np.asarray(
    MU + np.sqrt(VAR) * np.random.default_rng(0).standard_normal((256, 3)), np.float32
  )
  thr = detectors.iq_thresholds(base, None, SCHED, data, 3, 5, 0.9, jax.random.key(0))
  assert np.isinf(thr[:3]).all() and np.isinf(thr[6:]).all()
  k1, k2 = jax.random.split(jax.random.fold_in(jax.random.key(0), 4))
  xt = diffusion.q_sample(SCHED, jnp.asarray(data), 4, jax.random.normal(k1, data.shape))
  lid = np.asarray(detectors.lid_at(base, None, SCHED, xt, 4)[0])
  np.testing.assert_allclose(thr[4], np.quantile(lid, 0.9), rtol=1e-5)


def test_iq_inside_a_sampler_compiles_once_and_runs():
  base = _gauss_eps(mu=MU[:2], var=np.array([0.05, 0.05]))
  thr = np.zeros(SCHED.timesteps, np.float32)
  fn = samplers.get_sampling_fn(
    "ddpm",
    SCHED,
    detectors.iq_eps_fn(base, SCHED, thr, 0, 10, 0.2),
    samplers.SamplerSpec(shape=(2,), window=3),
  )
  out = jax.jit(chex.assert_max_traces(fn, n=1))(None, jax.random.key(0), jnp.arange(16))
  assert np.isfinite(np.asarray(out.samples)).all()


# -- held-out evaluation ---------------------------------------------------------------------


def test_held_out_thresholds_come_from_the_selection_half_only():
  rng = np.random.default_rng(0)
  n = 2000
  hal = rng.random(n) < 0.2
  s = rng.standard_normal(n) + 1.5 * hal
  sel = np.arange(n) < n // 2
  res = detectors.held_out_evaluation(s, hal, sel)
  ins_sel = np.sort(s[sel & ~hal])
  thr = float(np.quantile(ins_sel, 0.96, method="higher"))
  assert res["threshold_keep"] == thr
  held = ~sel
  assert res["removed_at_keep"]["count"] == int((s[held & hal] > thr).sum())
  assert res["kept_at_keep"]["count"] == int((s[held & ~hal] <= thr).sum())
  thr2 = float(np.quantile(s[sel & hal], 0.05, method="lower"))
  assert res["threshold_remove"] == thr2
  assert res["kept_at_removal"]["count"] == int((s[held & ~hal] < thr2).sum())
  # Shuffling the held-out scores moves no threshold; the AUROC is the held-out half's.
  s2 = s.copy()
  s2[held] = rng.permutation(s2[held])
  res2 = detectors.held_out_evaluation(s2, hal, sel)
  assert res2["threshold_keep"] == thr and res2["threshold_remove"] == thr2
  from sklearn.metrics import roc_auc_score

  assert math.isclose(res["held_out"]["auroc"], roc_auc_score(hal[held], s[held]), rel_tol=1e-9)
  lo, hi = res["held_out"]["ci95"]
  assert lo < res["held_out"]["auroc"] < hi
