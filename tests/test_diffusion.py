"""Tests for the Gaussian diffusion schedule and its pure functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mode_interp import diffusion

T = 50
SCHEDULE_ARGS = {
  "linear": (1e-4, 0.02),
  "quad": (1e-4, 0.02),
  "cosine": (1e-4, 0.02),  # the cosine schedule ignores beta_start / beta_end
}


def _reference_betas(name, timesteps, beta_start, beta_end):
  """Betas from the papers' definitions, float64."""
  if name == "linear":
    return beta_start + (beta_end - beta_start) * np.arange(timesteps) / (timesteps - 1)
  if name == "quad":
    r = np.sqrt(beta_start) + (np.sqrt(beta_end) - np.sqrt(beta_start)) * (
      np.arange(timesteps) / (timesteps - 1)
    )
    return r**2
  # Nichol & Dhariwal: alphas_bar(t) = f(t) / f(0), beta_t = 1 - abar_t / abar_{t-1}, <= 0.999.
  s = 0.008
  f = lambda u: np.cos((u / timesteps + s) / (1 + s) * np.pi / 2) ** 2
  t = np.arange(timesteps, dtype=np.float64)
  return np.minimum(1 - f(t + 1) / f(t), 0.999)


@pytest.mark.parametrize("name", sorted(SCHEDULE_ARGS))
def test_schedule_matches_float64_reference(name):
  b0, b1 = SCHEDULE_ARGS[name]
  s = diffusion.make_schedule(name, T, b0, b1)
  assert s.timesteps == T
  for field in s._fields:
    arr = getattr(s, field)
    assert arr.shape == (T,) and arr.dtype == jnp.float32, field
    assert np.all(np.isfinite(np.asarray(arr))), field

  betas = _reference_betas(name, T, b0, b1)
  np.testing.assert_allclose(s.betas, betas, rtol=1e-6, atol=1e-9)
  if name != "cosine":
    np.testing.assert_allclose([s.betas[0], s.betas[-1]], [b0, b1], rtol=1e-6)
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  np.testing.assert_allclose(s.alphas_bar, abar, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(s.alphas_bar_prev, abar_prev, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(s.sqrt_alphas_bar, np.sqrt(abar), rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(s.sqrt_one_minus_alphas_bar, np.sqrt(1 - abar), rtol=1e-5)
  np.testing.assert_allclose(s.sqrt_recip_alphas_bar, 1 / np.sqrt(abar), rtol=1e-5)
  np.testing.assert_allclose(s.sqrt_recipm1_alphas_bar, np.sqrt(1 / abar - 1), rtol=1e-5)
  if name == "cosine":  # the defining property, wherever the 0.999 clip is not active
    s_ = 0.008
    f = np.cos((np.arange(T + 1) / T + s_) / (1 + s_) * np.pi / 2) ** 2
    np.testing.assert_allclose(s.alphas_bar[:-1], (f[1:] / f[0])[:-1], rtol=1e-5, atol=1e-9)

  # Posterior q(x_{t-1} | x_t, x_0) by Gaussian conditioning (independent of the
  # closed-form coefficients): prior N(sqrt(abar_prev) x0, 1 - abar_prev), likelihood
  # N(x_t; sqrt(alpha_t) x_{t-1}, beta_t).
  alphas = 1 - betas
  t1 = np.arange(1, T)
  prec = 1 / (1 - abar_prev[t1]) + alphas[t1] / betas[t1]
  post_var = np.append(0.0, 1 / prec)
  np.testing.assert_allclose(s.posterior_variance, post_var, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(
    s.posterior_variance, betas * (1 - abar_prev) / (1 - abar), rtol=1e-5, atol=1e-12
  )
  # log-variance clipped: t = 0 takes the t = 1 value.
  np.testing.assert_allclose(
    s.posterior_log_variance_clipped,
    np.log(np.append(post_var[1], post_var[1:])),
    rtol=1e-5,
    atol=1e-5,
  )

  rng = np.random.default_rng(0)
  x0 = rng.standard_normal((T, 3))
  noise = rng.standard_normal((T, 3))
  t = np.arange(T)
  x_t = np.asarray(
    diffusion.q_sample(
      s, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32)
    ),
    np.float64,
  )
  np.testing.assert_allclose(
    x_t, np.sqrt(abar)[:, None] * x0 + np.sqrt(1 - abar)[:, None] * noise, rtol=1e-5, atol=1e-5
  )
  mean, var, logvar = diffusion.posterior_mean_variance(
    s, jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32), jnp.asarray(t)
  )
  ref_mean = np.empty_like(x0)
  ref_mean[0] = x0[0]  # abar_prev = 1 at t = 0: x_{-1} is x_0 itself
  ref_mean[1:] = (1 / prec)[:, None] * (
    np.sqrt(abar_prev[t1])[:, None] * x0[1:] / (1 - abar_prev[t1])[:, None]
    + np.sqrt(alphas[t1])[:, None] * x_t[1:] / betas[t1][:, None]
  )
  np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-4)
  assert var.shape == (T, 1) and logvar.shape == (T, 1)
  np.testing.assert_allclose(var[:, 0], post_var, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULE_ARGS))
def test_q_sample_x0_from_eps_round_trip(name):
  s = diffusion.make_schedule(name, 1000)
  key_x, key_n = jax.random.split(jax.random.key(0))
  t = jnp.asarray(np.linspace(0, 999, 64).round().astype(np.int32))
  x0 = jax.random.normal(key_x, (64, 2, 3))
  noise = jax.random.normal(key_n, (64, 2, 3))
  x_t = diffusion.q_sample(s, x0, t, noise)
  rec = diffusion.x0_from_eps(s, x_t, t, noise)
  # Float32: the error grows with 1 / sqrt(alphas_bar_t) (up to ~1e3 for cosine at t = T-1).
  tol = 2e-6 * np.asarray(s.sqrt_recip_alphas_bar)[np.asarray(t)][:, None, None] + 1e-6
  assert np.all(np.abs(np.asarray(rec) - np.asarray(x0)) <= 4 * tol)
  # Scalar t broadcasts the same way.
  np.testing.assert_allclose(
    diffusion.x0_from_eps(s, x_t[:1], 7, noise[:1]),
    diffusion.x0_from_eps(s, x_t[:1], jnp.asarray([7]), noise[:1]),
  )


def test_eps_from_x0_inverts_x0_from_eps():
  s = diffusion.make_schedule("linear", 200, 1e-3, 0.2)
  kx, ke = jax.random.split(jax.random.key(1))
  t = jnp.arange(0, 200, 5)
  x_t = jax.random.normal(kx, (len(t), 4))
  eps = jax.random.normal(ke, (len(t), 4))
  x0 = diffusion.x0_from_eps(s, x_t, t, eps)
  np.testing.assert_allclose(diffusion.eps_from_x0(s, x_t, t, x0), eps, rtol=1e-3, atol=2e-3)
  # And the other way round.
  # (float32 cancellation: the error scales with 1 / sqrt(alphas_bar_t), ~2e4 at t = T-1).
  eps2 = diffusion.eps_from_x0(s, x_t, t, x_t * 0.5)
  err = np.abs(np.asarray(diffusion.x0_from_eps(s, x_t, t, eps2)) - np.asarray(x_t) * 0.5)
  tol = 1e-6 * np.asarray(s.sqrt_recip_alphas_bar)[np.asarray(t)][:, None] + 1e-6
  assert np.all(err <= 4 * tol)
  assert np.all(err[np.asarray(t) < 50] <= 1e-5)


def test_score_from_eps():
  s = diffusion.make_schedule("linear", 20)
  x = jnp.ones((20, 2))
  eps = jnp.full((20, 2), 0.5)
  t = jnp.arange(20)
  want = -0.5 / np.sqrt(1 - np.cumprod(1 - np.linspace(1e-4, 0.02, 20)))
  np.testing.assert_allclose(diffusion.score_from_eps(s, x, t, eps)[:, 0], want, rtol=1e-5)


def _linear_eps_fn(params, x_t, t):
  return params["w"] * x_t + params["b"] * t[:, None].astype(x_t.dtype)


def test_loss_fn_matches_manual_computation():
  s = diffusion.make_schedule("linear", 30, 1e-3, 0.2)
  x0 = jax.random.normal(jax.random.key(3), (64, 2))
  params = {"w": jnp.asarray(0.3), "b": jnp.asarray(0.01)}
  key = jax.random.key(7)
  loss, metrics = diffusion.loss_fn(_linear_eps_fn, params, s, x0, key)
  assert set(metrics) == {"loss"}
  assert loss.shape == () and float(metrics["loss"]) == float(loss)

  kt, kn = jax.random.split(key)
  t = np.asarray(jax.random.randint(kt, (64,), 0, 30))
  noise = np.asarray(jax.random.normal(kn, (64, 2)), np.float64)
  assert t.min() >= 0 and t.max() < 30 and len(np.unique(t)) > 10
  abar = np.cumprod(1 - np.linspace(1e-3, 0.2, 30))
  x0n = np.asarray(x0, np.float64)
  x_t = np.sqrt(abar[t])[:, None] * x0n + np.sqrt(1 - abar[t])[:, None] * noise
  pred = 0.3 * x_t + 0.01 * t[:, None]
  np.testing.assert_allclose(float(loss), np.mean((pred - noise) ** 2), rtol=1e-5)

  # The loss is differentiable in the params (what training needs).
  g = jax.grad(lambda p: diffusion.loss_fn(_linear_eps_fn, p, s, x0, key)[0])(params)
  assert np.isfinite(float(g["w"])) and float(g["w"]) != 0.0
  # Another key gives another loss.
  other, _ = diffusion.loss_fn(_linear_eps_fn, params, s, x0, jax.random.key(8))
  assert float(other) != float(loss)


def test_unknown_schedule_raises():
  with pytest.raises(ValueError) as e:
    diffusion.make_schedule("sigmoid", 10)
  for name in ("sigmoid", "linear", "quad", "cosine"):
    assert name in str(e.value)


def test_model_log_variance():
  s = diffusion.make_schedule("linear", 40, 1e-3, 0.2)
  x = jnp.zeros((40, 3))
  t = jnp.arange(40)
  large = np.asarray(diffusion.model_log_variance(s, t, x, "fixed_large"))
  assert large.shape == (40, 1)
  np.testing.assert_allclose(large[1:, 0], np.log(np.asarray(s.betas))[1:], rtol=1e-6)
  np.testing.assert_allclose(large[0, 0], np.log(float(s.posterior_variance[1])), rtol=1e-6)
  small = np.asarray(diffusion.model_log_variance(s, t, x, "fixed_small"))
  np.testing.assert_allclose(small[:, 0], s.posterior_log_variance_clipped, rtol=1e-6)
  assert np.all(small[1:, 0] <= large[1:, 0] + 1e-6)  # posterior variance <= beta
  with pytest.raises(ValueError, match="fixed_large"):
    diffusion.model_log_variance(s, t, x, "nope")
  with pytest.raises(ValueError, match="second output"):
    diffusion.model_log_variance(s, t, x, "learned")


_WHOLE_BATCH = {}  # the whole-batch reference: the same for every micro-batch size


def _two_steps(micro_batch):
  """Parameters, state and metrics after two training steps of the toy MLP."""
  from mode_interp import train
  from mode_interp.networks import mlp

  model = mlp.ToyMLP(width=32, num_blocks=2, timesteps=100)
  sched = diffusion.make_schedule("linear", 100, 1e-3, 0.2)
  eps_fn = lambda p, x, t: model.apply({"params": p}, x, t)
  opt = train.make_optimizer(1e-2)
  data = jax.random.normal(jax.random.key(0), (4000, 1))
  state = train.init_state(model, opt, data[:1], jax.random.key(1))
  # LLVM's passes are most of a small program's compile time; the arithmetic is the same.
  step = jax.jit(
    train.make_train_step(eps_fn, sched, opt, 2000, micro_batch=micro_batch),
    compiler_options={"xla_backend_optimization_level": 0},
  )
  s, m = state, None
  for _ in range(2):
    s, m = step(s, data, jax.random.key(2))
  return state, s, m


@pytest.mark.parametrize("micro_batch, want_k", [(0, 1), (500, 4), (300, 8), (4000, 1)])
def test_micro_batched_train_step_equals_the_whole_batch(micro_batch, want_k):
  """The gradient summed over micro-batches is the whole batch's: same loss, same update."""
  from mode_interp import train

  assert train.num_micro_batches(2000, micro_batch) == want_k
  if 0 not in _WHOLE_BATCH:
    _WHOLE_BATCH[0] = _two_steps(0)
  state, s0, m0 = _WHOLE_BATCH[0]
  _, s1, m1 = _WHOLE_BATCH[0] if micro_batch == 0 else _two_steps(micro_batch)
  np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m0["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
  assert not np.allclose(jax.tree.leaves(s0.params)[0], jax.tree.leaves(state.params)[0])
