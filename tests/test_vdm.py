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
