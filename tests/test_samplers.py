"""Tests for the reverse-process samplers and the streaming trajectory variance."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mode_interp import diffusion, exact_score, samplers

T = 40
SCHED = diffusion.make_schedule("linear", T, 1e-3, 0.2)
MEANS = np.array([[1.0], [2.0], [3.0]])
STD = 0.05
EXACT_EPS = exact_score.make_exact_eps_fn(SCHED, MEANS, STD)


def _linear_eps(params, x_t, t):
  """A fixed, time-dependent eps predictor (no network)."""
  del params
  return 0.3 * x_t + 0.01 * t.astype(x_t.dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))


def _sampler(name, eps_fn=EXACT_EPS, **spec_kw):
  spec_kw.setdefault("shape", (1,))
  return samplers.get_sampling_fn(name, SCHED, eps_fn, samplers.SamplerSpec(**spec_kw))


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_max_reduction_is_the_largest_per_dimension_variance(name):
  idx = jnp.arange(16)
  outs = {}
  for reduction in ("mean", "max"):
    fn = jax.jit(_sampler(name, eps_fn=_linear_eps, shape=(4, 3), window=6, num_steps=20,
                          traj_stride=1, reduction=reduction))
    outs[reduction] = fn(None, jax.random.key(2), idx)
  traj = np.asarray(outs["max"].x0_trajectory, np.float64)
  var = np.var(traj[:, -6:], axis=1).reshape(16, -1)
  np.testing.assert_allclose(outs["max"].traj_variance, var.max(axis=1), rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(outs["mean"].traj_variance, var.mean(axis=1), rtol=2e-4, atol=1e-7)
  assert np.all(np.asarray(outs["max"].traj_variance) > np.asarray(outs["mean"].traj_variance))
  np.testing.assert_array_equal(outs["max"].samples, outs["mean"].samples)
  with pytest.raises(ValueError, match="reduction 'median'.*mean, max"):
    _sampler(name, reduction="median")


@pytest.mark.parametrize("name,num_steps", [("ddpm", 0), ("ddim", 15)])
def test_streaming_variance_matches_numpy_over_the_trajectory(name, num_steps):
  n_steps = T if num_steps == 0 else len(samplers.ddim_timesteps(T, num_steps))
  idx = jnp.arange(32)
  # Window 1 (variance 0), 5, and one longer than the chain (capped: all steps).
  for window in (1, 5, 10 * T):
    fn = jax.jit(_sampler(name, eps_fn=_linear_eps if name == "ddpm" else EXACT_EPS,
                          shape=(2,) if name == "ddpm" else (1,), window=window,
                          num_steps=num_steps, traj_stride=1))
    out = fn(None, jax.random.key(0), idx)
    traj = np.asarray(out.x0_trajectory, np.float64)
    assert traj.shape == (32, n_steps) + out.samples.shape[1:]
    assert out.traj_variance.shape == (32,)
    w = min(window, n_steps)
    ref = np.var(traj[:, -w:], axis=1).reshape(32, -1).mean(axis=1)
    if window == 1:
      np.testing.assert_array_equal(out.traj_variance, 0.0)
    else:
      assert np.all(ref > 0)
      np.testing.assert_allclose(out.traj_variance, ref, rtol=2e-4, atol=1e-7)
    # The last stored x0 estimate is the one of the final step (t = 0).
    if name == "ddpm":
      np.testing.assert_allclose(traj[:, -1], out.samples, rtol=1e-5, atol=1e-6)


def test_traj_stride_keeps_every_kth_step_and_the_last():
  idx = jnp.arange(8)
  full = jax.jit(_sampler("ddpm", traj_stride=1))(None, jax.random.key(1), idx)
  strided = jax.jit(_sampler("ddpm", traj_stride=7))(None, jax.random.key(1), idx)
  keep = sorted(set(range(0, T, 7)) | {T - 1})
  np.testing.assert_allclose(strided.x0_trajectory, np.asarray(full.x0_trajectory)[:, keep],
                             rtol=1e-6)
  np.testing.assert_array_equal(strided.samples, full.samples)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_jitted_sampler_is_traced_once(name):
  fn = chex.assert_max_traces(_sampler(name, window=5), n=1)
  jit_fn = jax.jit(fn)
  # 250 samples in chunks of 100: three calls, the last one padded to 100.
  out = samplers.sample(jit_fn, None, jax.random.key(0), 250, chunk_size=100)
  assert out.samples.shape == (250, 1) and out.traj_variance.shape == (250,)
  assert out.x0_trajectory is None  # traj_stride = 0
  # Another key and start index: still no retrace.
  samplers.sample(jit_fn, None, jax.random.key(1), 100, chunk_size=100, start_index=300)
  chex.clear_trace_counter()


def test_chunk_size_and_start_index_do_not_change_samples():
  jit_fn = jax.jit(_sampler("ddpm", window=5))
  key = jax.random.key(42)
  outs = [samplers.sample(jit_fn, None, key, 256, chunk_size=c) for c in (64, 100, 256)]
  for o in outs:
    assert o.samples.shape == (256, 1) and o.traj_variance.shape == (256,)
  for o in outs[1:]:
    np.testing.assert_allclose(o.samples, outs[0].samples, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(o.traj_variance, outs[0].traj_variance, rtol=1e-5, atol=1e-10)
  # Samples differ from one another (each index has its own noise).
  assert len(np.unique(outs[0].samples)) == 256
  middle = samplers.sample(jit_fn, None, key, 100, chunk_size=64, start_index=100)
  np.testing.assert_allclose(middle.samples, outs[0].samples[100:200], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(middle.traj_variance, outs[0].traj_variance[100:200], rtol=1e-5,
                             atol=1e-10)
  # A different key gives different samples.
  other = samplers.sample(jit_fn, None, jax.random.key(43), 64, chunk_size=64)
  assert not np.allclose(other.samples, outs[0].samples[:64])


def test_ddim_timesteps():
  for t_total, steps in [(40, 0), (40, 40), (40, 10), (40, 7), (1000, 50), (1000, 999), (5, 1)]:
    ts = samplers.ddim_timesteps(t_total, steps)
    assert ts[-1] == 0
    assert np.all(np.diff(ts) < 0)  # strictly descending, hence unique
    assert ts.min() >= 0 and ts.max() <= t_total - 1
    if steps == 0 or steps == t_total:
      np.testing.assert_array_equal(ts, np.arange(t_total)[::-1])
    elif steps > 1:
      assert ts[0] == t_total - 1 and len(ts) == steps


def _ddim_reference(x_init, ts, abar):
  """DDIM eta = 0 in float64 numpy with the linear eps predictor."""
  x = np.asarray(x_init, np.float64)
  x0s = []
  for i, t in enumerate(ts):
    eps = 0.3 * x + 0.01 * t
    x0 = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
    a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
    x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    x0s.append(x0)
  return x, np.stack(x0s, axis=1)


def test_ddim_eta0_is_deterministic_given_initial_noise():
  num_steps = 9
  shape = (3,)
  fn = jax.jit(_sampler("ddim", eps_fn=_linear_eps, shape=shape, num_steps=num_steps,
                        traj_stride=1, window=3))
  key = jax.random.key(5)
  idx = jnp.arange(16)
  out = fn(None, key, idx)
  again = fn(None, key, idx)
  np.testing.assert_array_equal(out.samples, again.samples)
  # The initial noise as the sampler derives it: normal(fold_in(fold_in(key, index), 0)).
  x_init = jax.vmap(lambda i: jax.random.normal(
      jax.random.fold_in(jax.random.fold_in(key, i), 0), shape))(idx)
  ts = samplers.ddim_timesteps(T, num_steps)
  abar = np.cumprod(1 - np.linspace(1e-3, 0.2, T))
  x_ref, x0_ref = _ddim_reference(x_init, ts, abar)
  np.testing.assert_allclose(out.samples, x_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.x0_trajectory, x0_ref, rtol=1e-4, atol=1e-4)
  # With eta > 0 the step noise enters.
  noisy = jax.jit(_sampler("ddim", eps_fn=_linear_eps, shape=shape, num_steps=num_steps,
                           eta=1.0))(None, key, idx)
  assert not np.allclose(noisy.samples, out.samples, atol=1e-3)


def test_ddpm_matches_reference_step():
  """One full DDPM chain with the linear predictor against numpy, same noise."""
  shape = (2,)
  key = jax.random.key(9)
  idx = jnp.arange(4) + 10
  out = jax.jit(_sampler("ddpm", eps_fn=_linear_eps, shape=shape))(None, key, idx)
  keys = [jax.random.fold_in(key, int(i)) for i in idx]
  noise = lambda step: np.stack([np.asarray(jax.random.normal(jax.random.fold_in(k, step), shape))
                                 for k in keys]).astype(np.float64)
  betas = np.linspace(1e-3, 0.2, T)
  abar = np.cumprod(1 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  x = noise(0)
  for i, t in enumerate(range(T - 1, -1, -1)):
    eps = 0.3 * x + 0.01 * t
    x0 = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
    mean = (betas[t] * np.sqrt(abar_prev[t]) * x0
            + (1 - abar_prev[t]) * np.sqrt(1 - betas[t]) * x) / (1 - abar[t])
    sd = np.sqrt(betas[t]) if t > 0 else 0.0  # fixed_large; no noise at the last step
    x = mean + sd * noise(i + 1)
  np.testing.assert_allclose(out.samples, x, rtol=1e-3, atol=1e-3)


def test_unknown_sampler_and_variance():
  with pytest.raises(ValueError) as e:
    samplers.get_sampling_fn("euler", SCHED, EXACT_EPS, samplers.SamplerSpec(shape=(1,)))
  assert "euler" in str(e.value) and "ddpm" in str(e.value) and "ddim" in str(e.value)
  assert set(samplers.sampler_names()) >= {"ddpm", "ddim"}
  with pytest.raises(ValueError, match="fixed_large"):
    samplers.get_sampling_fn("ddpm", SCHED, EXACT_EPS,
                             samplers.SamplerSpec(shape=(1,), variance="nope"))


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_single_step_chain(name):
  """T = 1 (which the config allows): one reverse step, the sample is the x0 estimate."""
  sched = diffusion.make_schedule("linear", 1, 1e-3, 0.2)
  fn = jax.jit(samplers.get_sampling_fn(name, sched, _linear_eps,
                                        samplers.SamplerSpec(shape=(2,), window=1)))
  key = jax.random.key(2)
  idx = jnp.arange(4)
  out = fn(None, key, idx)
  x_init = jax.vmap(lambda i: jax.random.normal(
      jax.random.fold_in(jax.random.fold_in(key, i), 0), (2,)))(idx)
  abar = 1 - 1e-3
  want = (np.asarray(x_init) - np.sqrt(1 - abar) * 0.3 * np.asarray(x_init)) / np.sqrt(abar)
  np.testing.assert_allclose(out.samples, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out.traj_variance, 0.0)
