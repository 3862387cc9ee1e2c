"""The learned variance and VSM's penalty (Bhosale et al. 2026): closed forms, the training
step, the sampler, the config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gaussian1d
from experiments import config_check
from mode_interp import diffusion, pipeline, samplers, train
from mode_interp.errors import ConfigError
from mode_interp.networks import mlp

T = 50
SCHED = diffusion.make_schedule("linear", T, 1e-3, 0.2)
FAST = {"xla_backend_optimization_level": 0}


def test_learned_range_spans_the_two_fixed_variances():
  t = jnp.arange(1, T)
  x = jnp.zeros((T - 1, 3))
  hi = diffusion.learned_log_variance(SCHED, t, jnp.ones_like(x))
  lo = diffusion.learned_log_variance(SCHED, t, -jnp.ones_like(x))
  mid = diffusion.learned_log_variance(SCHED, t, jnp.zeros_like(x))
  for got, name in ((hi, "fixed_large"), (lo, "fixed_small")):
    want = np.broadcast_to(diffusion.model_log_variance(SCHED, t, x, name), got.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(mid, 0.5 * (hi + lo), rtol=1e-6)


def test_kl_nll_and_penalty_closed_forms():
  rng = np.random.default_rng(0)
  m1, m2 = rng.normal(size=5), rng.normal(size=5)
  l1, l2 = rng.normal(size=5), rng.normal(size=5)
  s1, s2 = np.exp(0.5 * l1), np.exp(0.5 * l2)
  want = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
  np.testing.assert_allclose(diffusion.normal_kl(m1, l1, m2, l2), want, rtol=1e-5)
  assert float(diffusion.normal_kl(0.3, -1.0, 0.3, -1.0)) == pytest.approx(0.0, abs=1e-7)
  x = rng.normal(size=5)
  want = 0.5 * np.log(2 * np.pi * s2**2) + (x - m2) ** 2 / (2 * s2**2)
  np.testing.assert_allclose(diffusion.gaussian_nll(x, m2, l2), want, rtol=1e-5)
  sig2 = np.exp(l1)
  np.testing.assert_allclose(diffusion.vsm_penalty(l1), sig2**2 / (1 + sig2**2), rtol=1e-5)


def _net(params, x, t):
  """A network whose eps and v come from separate parameters."""
  del t
  return params["a"] * x, jnp.tanh(params["b"] + 0.0 * x)


def test_hybrid_loss_terms_and_where_their_gradients_go():
  x0 = jax.random.normal(jax.random.key(0), (64, 2))
  t, noise = diffusion.loss_inputs(SCHED, x0, jax.random.key(1))
  p = {"a": jnp.asarray(0.4), "b": jnp.asarray(0.2)}
  base, terms = diffusion.hybrid_losses(_net, p, SCHED, x0, t, noise, 0.0)
  with_rho, terms2 = diffusion.hybrid_losses(_net, p, SCHED, x0, t, noise, 0.5)
  # The MSE term is the simple loss; rho adds rho / sqrt(1 - alpha_bar_t) times the penalty.
  x_t = diffusion.q_sample(SCHED, x0, t, noise)
  np.testing.assert_allclose(terms["mse"], jnp.mean((0.4 * x_t - noise) ** 2, axis=1), 1e-5)
  w = 0.5 / SCHED.sqrt_one_minus_alphas_bar[t]
  np.testing.assert_allclose(with_rho - base, w * terms2["smooth"], rtol=1e-4, atol=1e-7)
  kl_rows = np.asarray(t) > 0  # a KL there (>= 0); at t = 0 a negative log-likelihood
  assert kl_rows.any() and np.all(np.asarray(terms["vb"])[kl_rows] >= -1e-6)
  # The bound trains the variance only: its gradient in the eps parameter is zero.
  g_vb = jax.grad(
    lambda q: jnp.mean(diffusion.hybrid_losses(_net, q, SCHED, x0, t, noise)[1]["vb"])
  )(p)
  assert float(g_vb["a"]) == 0.0 and float(g_vb["b"]) != 0.0
  # The penalty pushes the variance down (towards the posterior's): d/d b > 0.
  g_s = jax.grad(
    lambda q: jnp.mean(diffusion.hybrid_losses(_net, q, SCHED, x0, t, noise)[1]["smooth"])
  )(p)
  assert float(g_s["b"]) > 0.0


def _train(micro_batch, rho):
  model = mlp.ToyMLP(width=16, num_blocks=1, timesteps=T, learn_sigma=True)
  eps_fn = pipeline.eps_fn_for(model)
  opt = train.make_optimizer(1e-2)
  data = jax.random.normal(jax.random.key(0), (512, 1))
  state = train.init_state(model, opt, data[:1], jax.random.key(1))
  step = jax.jit(
    train.make_train_step(eps_fn, SCHED, opt, 256, micro_batch=micro_batch, vsm_rho=rho),
    compiler_options=FAST,
  )
  s, m = state, None
  for _ in range(3):
    s, m = step(s, data, jax.random.key(2))
  return s, m


def test_learned_variance_training_step_and_micro_batches():
  s0, m0 = _train(0, 0.1)
  s1, m1 = _train(64, 0.1)  # four micro-batches: the same loss and update
  for k in ("loss", "mse", "vb", "smooth"):
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5)
  assert m0["loss"] > m0["mse"] + m0["vb"]  # the penalty adds a positive term
  for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
  out = jax.tree.leaves(s0.params)
  assert all(np.all(np.isfinite(np.asarray(v))) for v in out)
  with pytest.raises(ValueError, match="learn_sigma"):
    train.make_train_step(lambda p, x, t: x, SCHED, train.make_optimizer(1e-2), 8, vsm_rho=0.0)


@pytest.mark.parametrize("v, fixed", [(1.0, "fixed_large"), (-1.0, "fixed_small")])
def test_learned_variance_sampler_at_the_ends_is_the_fixed_one(v, fixed):
  """v = +1 everywhere samples with beta_t, v = -1 with the posterior variance: the DDPM
  sampler with learned variance then draws the fixed samplers' samples (same noise)."""

  def eps(params, x, t):
    return 0.3 * x + 0.01 * t.astype(x.dtype)

  def learned(params, x, t):
    return eps(params, x, t), jnp.full_like(x, v)

  eps_l = lambda p, x, t: learned(p, x, t)[0]
  eps_l.with_variance = learned
  key, idx = jax.random.key(3), jnp.arange(6)
  spec = samplers.SamplerSpec(shape=(2,), window=5, variance="learned")
  a = samplers.get_sampling_fn("ddpm", SCHED, eps_l, spec)(None, key, idx)
  spec_f = samplers.SamplerSpec(shape=(2,), window=5, variance=fixed)
  b = samplers.get_sampling_fn("ddpm", SCHED, eps, spec_f)(None, key, idx)
  np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a.traj_variance, b.traj_variance, rtol=1e-4, atol=1e-9)
  with pytest.raises(ValueError, match="learn_sigma"):
    samplers.get_sampling_fn("ddpm", SCHED, eps, spec)


def test_config_checks_name_the_missing_variance_head():
  cfg = gaussian1d.get_config("tiny")
  cfg.sample.variance = "learned"
  with pytest.raises(
    ConfigError, match="sample.variance: 'learned' needs .*model.learn_sigma=True"
  ):
    config_check.validate(cfg)
  cfg = gaussian1d.get_config("tiny")
  cfg.train.vsm_rho = 0.1
  with pytest.raises(ConfigError, match="train.vsm_rho: .*model.learn_sigma=True"):
    config_check.validate(cfg)
  cfg.model.learn_sigma = True
  cfg.sample.variance = "learned"
  config_check.validate(cfg)
  cfg.sample.sampler = "ddim"
  with pytest.raises(ConfigError, match="sample.variance: 'learned' is for sample.sampler='ddpm'"):
    config_check.validate(cfg)
