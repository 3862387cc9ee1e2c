"""The continuous-time VDM: schedules, sampler correctness with the exact eps, a training
step, and the T-vs-T' experiment end to end on a tiny config."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import timesteps as timesteps_config
from experiments import main
from mode_interp import vdm
from mode_interp.networks.mlp import ToyMLP


@pytest.mark.parametrize("kind", vdm.SCHEDULES)
def test_schedules_are_monotone_with_pinned_ends(kind):
  init, apply = vdm.make_gamma(kind, -10.0, 6.0)
  p = init(jax.random.key(0))
  g = np.asarray(apply(p, jnp.linspace(0.0, 1.0, 101)))
  assert g[0] == pytest.approx(-10.0, abs=1e-4) and g[-1] == pytest.approx(6.0, abs=1e-4)
  assert np.all(np.diff(g) > 0)


def test_sampler_with_the_exact_eps_draws_the_data_distribution():
  """For data N(mu, s^2) the exact eps-predictor is known in closed form; the ancestral
  sampler with it must return that distribution (mean and std to sampling error)."""
  mu, s = np.array([1.5, -0.5], np.float32), 0.3
  _, gamma = vdm.make_gamma("fixed", -13.3, 5.0)

  def exact_eps(params, z, t_scaled):
    g = gamma(None, t_scaled / vdm.T_SCALE)[:, None]
    a, sg = jnp.sqrt(jax.nn.sigmoid(-g)), jnp.sqrt(jax.nn.sigmoid(g))
    return sg * (z - a * mu) / (a**2 * s**2 + sg**2)

  fn = jax.jit(vdm.get_sampling_fn(exact_eps, gamma, (2,), 200, 10))
  out = fn({"net": None, "gamma": None}, jax.random.key(0), jnp.arange(4000))
  x = np.asarray(out.samples)
  np.testing.assert_allclose(x.mean(0), mu, atol=0.03)
  np.testing.assert_allclose(x.std(0), [s, s], rtol=0.06)
  assert np.all(np.asarray(out.traj_variance) >= 0)


@pytest.mark.parametrize("num_steps,window,reduction", [(12, 4, "mean"), (5, 9, "max")])
def test_trajectory_variance_is_that_of_x0_over_the_last_window_steps(num_steps, window, reduction):
  """The scan's streaming variance against an explicit step-by-step loop of the same
  ancestral update that keeps every x0 estimate (the window: the last ``window`` steps)."""
  from mode_interp import samplers

  init, gamma = vdm.make_gamma("learned", -13.3, 5.0)
  params = {"net": jnp.array([[0.7, -0.2], [0.1, 0.9]]), "gamma": init(jax.random.key(2))}

  def net(w, z, t_scaled):
    return jnp.tanh(z @ w + t_scaled[:, None] / vdm.T_SCALE)

  idx = jnp.arange(16)
  out = jax.jit(vdm.get_sampling_fn(net, gamma, (2,), num_steps, window, reduction))(
    params, jax.random.key(5), idx
  )
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(idx)
  z = samplers.per_sample_normal(keys, 0, (2,))
  x0s = []
  for i in range(num_steps):
    t = np.float32(num_steps - i) / np.float32(num_steps)
    g_t = gamma(params["gamma"], jnp.asarray([t]))[0]
    g_s = gamma(params["gamma"], jnp.asarray([t - np.float32(1.0 / num_steps)]))[0]
    a_t, s_t = jnp.sqrt(jax.nn.sigmoid(-g_t)), jnp.sqrt(jax.nn.sigmoid(g_t))
    a_s, s_s = jnp.sqrt(jax.nn.sigmoid(-g_s)), jnp.sqrt(jax.nn.sigmoid(g_s))
    eps = net(params["net"], z, jnp.full((1,), t * vdm.T_SCALE))
    x0s.append(np.asarray((z - s_t * eps) / a_t))
    c = -jnp.expm1(g_s - g_t)
    noise = samplers.per_sample_normal(keys, i + 1, (2,))
    z = a_s / a_t * (z - c * s_t * eps) + jnp.sqrt(jnp.maximum(s_s**2 * c, 0.0)) * noise
  var = np.var(np.stack(x0s[-min(window, num_steps) :]), axis=0)
  want = var.max(axis=1) if reduction == "max" else var.mean(axis=1)
  np.testing.assert_allclose(np.asarray(out.traj_variance), want, rtol=2e-4, atol=1e-7)
  a0 = jnp.sqrt(jax.nn.sigmoid(-gamma(params["gamma"], jnp.zeros((1,)))[0]))
  np.testing.assert_allclose(np.asarray(out.samples), np.asarray(z / a0), rtol=2e-4, atol=1e-5)


def test_training_lowers_the_loss_and_learned_schedule_moves():
  net = ToyMLP(width=32)
  napply = lambda p, z, t: net.apply({"params": p}, z, t)
  init, gamma = vdm.make_gamma("learned", -13.3, 5.0)
  opt = optax.adam(3e-3)
  st = jax.jit(lambda k: vdm.init_state(net, init, opt, jnp.zeros((1, 2)), k))(jax.random.key(0))
  g0 = np.asarray(gamma(st.params["gamma"], jnp.array([0.3, 0.7])))
  step = jax.jit(vdm.make_train_step(napply, gamma, opt, 256, 0.0, learned_schedule=True))
  data = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], (2000, 2)).astype(np.float32))
  losses = []
  for _ in range(150):
    st, m = step(st, data, jax.random.key(1))
    losses.append(float(m["loss"]))
  assert np.mean(losses[-20:]) < np.mean(losses[:20])
  assert not np.allclose(np.asarray(gamma(st.params["gamma"], jnp.array([0.3, 0.7]))), g0)


@pytest.mark.e2e
def test_t_vs_t_prime_tiny_run(tmp_path):
  wd = str(tmp_path / "run")
  cfg = timesteps_config.get_config("tiny")
  # One (shared) residual block instead of three: the run compiles 14 samplers and 4 training
  # steps of this network, and what is checked here is the experiment's grid, not the network.
  cfg.model.num_blocks = 1
  # Two sampling T' and the learned VDM schedule only (fewer programs to compile; the fixed
  # one is the unit tests'); the rule below still shows.
  cfg.tsteps.sample_T = (5, 40)
  cfg.tsteps.vdm_schedules = ("learned",)
  res = main.run(cfg, wd)
  cells = [c for c in res["cells"] if "sample_T" in c]
  got = {(c["model"], c["sample_T"]) for c in cells}
  # DDPM T=20 has no T'=40 cell; the exact score uses the largest T (40).
  assert got == {
    ("DDPM T=20", 5),
    ("DDPM T=40", 5),
    ("DDPM T=40", 40),
    ("VDM learned", 5),
    ("VDM learned", 40),
    ("exact score (T=40)", 5),
    ("exact score (T=40)", 40),
  }
  for c in cells:
    assert c["hallucination"]["n"] + c["non_finite"]["count"] == 128
  assert os.path.getsize(os.path.join(wd, "figures", "tsteps_grid.png")) > 1000
  with open(os.path.join(wd, "results.json")) as f:
    assert json.load(f)["experiment"] == "timesteps"
  for sub in ("ddpm_T20", "ddpm_T40", "vdm_learned"):
    assert "20" in os.listdir(os.path.join(wd, "checkpoints", sub))
  # The report reads the real results.json: one rate row per cell.
  from experiments import report

  rows = report.load_run(wd).rows()
  assert len([r for r in rows if r.key == "hallucination_rate"]) == len(cells)
