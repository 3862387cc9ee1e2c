"""Tests for the reverse-process samplers and the streaming trajectory variance."""

import re

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

# XLA's CPU backend spends most of a small program's compile time in LLVM's passes; the
# samplers' arithmetic is the same without them (the tests compile a few dozen chains).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(fn):
  return jax.jit(fn, compiler_options=_FAST_COMPILE)


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
    fn = _jit(
      _sampler(
        name,
        eps_fn=_linear_eps,
        shape=(4, 3),
        window=6,
        num_steps=20,
        traj_stride=1,
        reduction=reduction,
      )
    )
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
    fn = _jit(
      _sampler(
        name,
        eps_fn=_linear_eps if name == "ddpm" else EXACT_EPS,
        shape=(2,) if name == "ddpm" else (1,),
        window=window,
        num_steps=num_steps,
        traj_stride=1,
      )
    )
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
  full = _jit(_sampler("ddpm", traj_stride=1))(None, jax.random.key(1), idx)
  strided = _jit(_sampler("ddpm", traj_stride=7))(None, jax.random.key(1), idx)
  keep = sorted(set(range(0, T, 7)) | {T - 1})
  np.testing.assert_allclose(
    strided.x0_trajectory, np.asarray(full.x0_trajectory)[:, keep], rtol=1e-6
  )
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
  jit_fn = _jit(_sampler("ddpm", window=5))
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
  np.testing.assert_allclose(
    middle.traj_variance, outs[0].traj_variance[100:200], rtol=1e-5, atol=1e-10
  )
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
  fn = _jit(
    _sampler("ddim", eps_fn=_linear_eps, shape=shape, num_steps=num_steps, traj_stride=1, window=3)
  )
  key = jax.random.key(5)
  idx = jnp.arange(16)
  out = fn(None, key, idx)
  again = fn(None, key, idx)
  np.testing.assert_array_equal(out.samples, again.samples)
  # The initial noise as the sampler derives it: normal(fold_in(fold_in(key, index), 0)).
  x_init = jax.vmap(
    lambda i: jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), 0), shape)
  )(idx)
  ts = samplers.ddim_timesteps(T, num_steps)
  abar = np.cumprod(1 - np.linspace(1e-3, 0.2, T))
  x_ref, x0_ref = _ddim_reference(x_init, ts, abar)
  np.testing.assert_allclose(out.samples, x_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.x0_trajectory, x0_ref, rtol=1e-4, atol=1e-4)
  # With eta > 0 the step noise enters.
  noisy = _jit(_sampler("ddim", eps_fn=_linear_eps, shape=shape, num_steps=num_steps, eta=1.0))(
    None, key, idx
  )
  assert not np.allclose(noisy.samples, out.samples, atol=1e-3)


def test_ddpm_matches_reference_step():
  """One full DDPM chain with the linear predictor against numpy, same noise."""
  shape = (2,)
  key = jax.random.key(9)
  idx = jnp.arange(4) + 10
  out = _jit(_sampler("ddpm", eps_fn=_linear_eps, shape=shape))(None, key, idx)
  keys = [jax.random.fold_in(key, int(i)) for i in idx]
  noise = lambda step: np.stack(
    [np.asarray(jax.random.normal(jax.random.fold_in(k, step), shape)) for k in keys]
  ).astype(np.float64)
  betas = np.linspace(1e-3, 0.2, T)
  abar = np.cumprod(1 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  x = noise(0)
  for i, t in enumerate(range(T - 1, -1, -1)):
    eps = 0.3 * x + 0.01 * t
    x0 = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
    mean = (
      betas[t] * np.sqrt(abar_prev[t]) * x0 + (1 - abar_prev[t]) * np.sqrt(1 - betas[t]) * x
    ) / (1 - abar[t])
    sd = np.sqrt(betas[t]) if t > 0 else 0.0  # fixed_large; no noise at the last step
    x = mean + sd * noise(i + 1)
  np.testing.assert_allclose(out.samples, x, rtol=1e-3, atol=1e-3)


def test_unknown_sampler_and_variance():
  with pytest.raises(ValueError) as e:
    samplers.get_sampling_fn("euler", SCHED, EXACT_EPS, samplers.SamplerSpec(shape=(1,)))
  assert "euler" in str(e.value) and "ddpm" in str(e.value) and "ddim" in str(e.value)
  assert set(samplers.sampler_names()) >= {"ddpm", "ddim"}
  with pytest.raises(ValueError, match="fixed_large"):
    samplers.get_sampling_fn(
      "ddpm", SCHED, EXACT_EPS, samplers.SamplerSpec(shape=(1,), variance="nope")
    )


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_single_step_chain(name):
  """T = 1 (which the config allows): one reverse step, the sample is the x0 estimate."""
  sched = diffusion.make_schedule("linear", 1, 1e-3, 0.2)
  fn = _jit(
    samplers.get_sampling_fn(name, sched, _linear_eps, samplers.SamplerSpec(shape=(2,), window=1))
  )
  key = jax.random.key(2)
  idx = jnp.arange(4)
  out = fn(None, key, idx)
  x_init = jax.vmap(
    lambda i: jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), 0), (2,))
  )(idx)
  abar = 1 - 1e-3
  want = (np.asarray(x_init) - np.sqrt(1 - abar) * 0.3 * np.asarray(x_init)) / np.sqrt(abar)
  np.testing.assert_allclose(out.samples, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out.traj_variance, 0.0)


# -- windows anywhere in the trajectory, study windows --------------------------


def _pattern_eps(params, x_t, t):
  """eps that depends on t and the pixel but not on x_t: its trajectory is known exactly."""
  del params
  d = int(np.prod(x_t.shape[1:]))
  tt = t.astype(jnp.float32).reshape((-1,) + (1,) * (x_t.ndim - 1))
  pix = jnp.arange(d, dtype=jnp.float32).reshape((1,) + x_t.shape[1:])
  return jnp.sin(0.37 * tt * (1.0 + pix)) + 0.1 * x_t * 0.0


@pytest.mark.parametrize("name,num_steps", [("ddpm", 0), ("ddim", 15)])
def test_main_window_by_timesteps_matches_numpy(name, num_steps):
  ts = samplers.reverse_timesteps(name, T, num_steps)
  idx = jnp.arange(8)
  for lo, hi in ((0, 4), (10, 20), (T - 5, T - 1), (7, 7)):
    mask = (ts >= lo) & (ts <= hi)
    if not mask.any():
      continue
    fn = _jit(
      _sampler(
        name, eps_fn=_linear_eps, shape=(3, 2), num_steps=num_steps, traj_stride=1, t_lo=lo, t_hi=hi
      )
    )
    out = fn(None, jax.random.key(1), idx)
    traj = np.asarray(out.x0_trajectory, np.float64)[:, mask]
    want = np.var(traj, axis=1).reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(out.traj_variance, want, rtol=2e-4, atol=1e-7)
  # -1 / -1 is the paper's last-`window` score, unchanged.
  a = _jit(_sampler(name, eps_fn=_linear_eps, shape=(3, 2), num_steps=num_steps, window=4))
  b = _jit(
    _sampler(
      name, eps_fn=_linear_eps, shape=(3, 2), num_steps=num_steps, window=4, t_lo=-1, t_hi=-1
    )
  )
  np.testing.assert_array_equal(
    a(None, jax.random.key(1), idx).traj_variance, b(None, jax.random.key(1), idx).traj_variance
  )


@pytest.mark.parametrize("name,num_steps", [("ddpm", 0), ("ddim", 15)])
def test_study_windows_match_numpy_on_the_stored_trajectory(name, num_steps):
  ts = samplers.reverse_timesteps(name, T, num_steps)
  windows = ((0, 1), (0, 9), (5, 15), (20, 35), (T - 3, T - 1))
  windows = tuple(w for w in windows if ((ts >= w[0]) & (ts <= w[1])).any())
  fn = _jit(
    _sampler(
      name,
      eps_fn=_pattern_eps,
      shape=(4, 3, 1),
      num_steps=num_steps,
      traj_stride=1,
      clip_x0=1.0,
      study_windows=windows,
    )
  )
  out = fn(None, jax.random.key(3), jnp.arange(6))
  assert out.window_variance.shape == (6, 3, len(windows), 4, 3, 1)
  traj = np.asarray(out.x0_trajectory, np.float64)  # [B, n, 4, 3, 1]
  u8 = np.round(np.clip((traj + 1.0) * 127.5, 0, 255))
  pix = np.arange(12, dtype=np.float64).reshape(4, 3, 1)
  eps = np.sin(0.37 * ts.astype(np.float64)[:, None, None, None] * (1 + pix))[None]
  for w, (lo, hi) in enumerate(windows):
    m = (ts >= lo) & (ts <= hi)
    for s, src in enumerate((traj, u8, np.broadcast_to(eps, traj.shape))):
      want = np.var(src[:, m], axis=1)
      np.testing.assert_allclose(
        out.window_variance[:, s, w], want, rtol=1e-3, atol=2e-6 * (1 if s != 1 else 255**2)
      )
  # The study's statistics do not change the samples or the main score.
  plain = _jit(
    _sampler(name, eps_fn=_pattern_eps, shape=(4, 3, 1), num_steps=num_steps, clip_x0=1.0)
  )(None, jax.random.key(3), jnp.arange(6))
  np.testing.assert_array_equal(plain.samples, out.samples)
  np.testing.assert_array_equal(plain.traj_variance, out.traj_variance)
  assert plain.window_variance is None


def test_windows_are_validated():
  ts = samplers.reverse_timesteps("ddpm", 100)
  assert samplers.window_mask(ts, 10).sum() == 10
  assert samplers.window_mask(ts, 10, 20, 35).sum() == 16
  for lo, hi, msg in (
    (100, 120, r"t_lo=100.*\[0, 99\]"),
    (30, 20, r"t_hi=20.*\[t_lo=30, 99\]"),
    (-3, 5, r"t_lo=-3"),
    (5, 100, r"t_hi=100"),
  ):
    with pytest.raises(ValueError, match=msg):
      samplers.window_mask(ts, 10, lo, hi)
  ddim = samplers.reverse_timesteps("ddim", 100, 5)  # 99, 74, 50, 25, 0
  with pytest.raises(ValueError, match="holds none"):
    samplers.window_mask(ddim, 10, 30, 40)
  with pytest.raises(ValueError, match=r"t_lo=100"):
    _sampler("ddpm", t_lo=100, t_hi=120)
  with pytest.raises(ValueError, match="study source 'x1'.*x0, x0_u8, eps"):
    _sampler("ddpm", study_windows=((0, 3),), study_sources=("x1",))


def test_config_check_names_the_window_fields():
  from configs import shapes as shapes_config
  from experiments import config_check
  from mode_interp.errors import ConfigError

  cfg = shapes_config.get_config("")
  config_check.validate(cfg)
  for lo, hi, field, allowed in (
    (100, 120, "detect.t_lo", "99"),
    (30, 20, "detect.t_hi", "99"),
    (5, -1, "detect.t_hi", "[0, 99]"),
    (-1, 5, "detect.t_lo", "[0, 99]"),
  ):
    cfg.detect.t_lo, cfg.detect.t_hi = lo, hi
    with pytest.raises(ConfigError, match=rf"^{field}: .*{re.escape(allowed)}") as e:
      config_check.validate(cfg)
    assert "\n" not in str(e.value)
  cfg.detect.t_lo, cfg.detect.t_hi = 20, 35
  config_check.validate(cfg)
  cfg.sample.sampler, cfg.sample.num_steps = "ddim", 5
  cfg.detect.window = 5
  cfg.detect.t_lo, cfg.detect.t_hi = 30, 40
  with pytest.raises(ConfigError, match=r"^detect.t_lo: .*none of the 5 timesteps"):
    config_check.validate(cfg)


@pytest.mark.parametrize("num_steps", [100, 1000])
def test_ddim_on_the_toy_schedule_stays_finite(num_steps):
  """The toy schedule's alpha-bar underflows float32 near t = T (about e^-113 at t = 999);
  DDIM's coefficients come from log alpha-bar in float64, so respaced ancestral sampling
  (eta = 1) with the exact score draws finite samples on the modes."""
  from mode_interp import exact_score, hallucination
  from mode_interp.data import gaussians

  sched = diffusion.make_schedule("linear", 1000, 0.001, 0.2)
  assert float(sched.alphas_bar[-1]) == 0.0  # underflowed in float32
  mix = gaussians.make_mixture("grid25")
  eps = exact_score.make_exact_eps_fn(sched, mix.means, mix.std)
  fn = jax.jit(
    samplers.get_sampling_fn(
      "ddim", sched, eps, samplers.SamplerSpec(shape=(2,), window=5, num_steps=num_steps, eta=1.0)
    )
  )
  out = fn(None, jax.random.key(0), jnp.arange(512))
  x = np.asarray(out.samples)
  assert np.isfinite(x).all() and np.isfinite(np.asarray(out.traj_variance)).all()
  hal = hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0)
  if num_steps == 1000:  # all steps: ancestral DDPM with the exact score stays on the modes
    assert hal.mean() < 0.01


_ONE_PASS = {}


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
@pytest.mark.parametrize("rows", [7, 10, 64])
def test_row_tiles_give_the_same_outputs(name, rows):
  """Tile by tile (``rows`` 7: 3 tiles of 7, 1 padded row; 10: exact; 64: one pass) every
  output, trajectories and study windows included, equals the one-pass result row by row."""
  kw = dict(
    eps_fn=_pattern_eps,
    shape=(4, 3, 1),
    traj_stride=3,
    clip_x0=1.0,
    study_windows=((0, 5), (10, 20)),
  )
  fn = _sampler(name, **kw)
  idx = jnp.arange(50, 70)
  if name not in _ONE_PASS:  # the same one-pass result for every ``rows``: computed once
    _ONE_PASS[name] = _jit(fn)(None, jax.random.key(5), idx)
  whole = _ONE_PASS[name]
  tiled = _jit(samplers.row_tiled(fn, rows))(None, jax.random.key(5), idx)
  for a, b in zip(whole, tiled):
    assert b.shape == a.shape
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  assert samplers.row_tiled(fn, 0) is fn


# -- DDIM with ancestral steps at the end; x_init; one name per sampler ---------


def test_ddim_with_every_step_stochastic_is_the_ddpm_posterior_update():
  """DDIM over all T timesteps with every step at eta = 1 is the DDPM update with the
  posterior (fixed-small) variance: same chain, same noise."""
  idx = jnp.arange(64)
  key = jax.random.key(3)
  ddim = _jit(_sampler("ddim", eps_fn=_linear_eps, shape=(2,), stochastic_last=T))
  ddpm = _jit(_sampler("ddpm", eps_fn=_linear_eps, shape=(2,), variance="fixed_small"))
  a, b = ddim(None, key, idx), ddpm(None, key, idx)
  np.testing.assert_allclose(a.samples, b.samples, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(a.traj_variance, b.traj_variance, rtol=2e-3, atol=1e-7)
  # Not the deterministic chain: the noise entered.
  det = _jit(_sampler("ddim", eps_fn=_linear_eps, shape=(2,)))(None, key, idx)
  assert np.abs(np.asarray(det.samples) - np.asarray(a.samples)).max() > 1e-2


@pytest.mark.parametrize("num_steps", [0, 12])
def test_ddim_with_no_stochastic_step_is_plain_ddim_bit_for_bit(num_steps):
  idx = jnp.arange(32)
  key = jax.random.key(4)
  plain = _jit(_sampler("ddim", shape=(1,), num_steps=num_steps, window=4))(None, key, idx)
  k0 = _jit(_sampler("ddim", shape=(1,), num_steps=num_steps, window=4, stochastic_last=0))(
    None, key, idx
  )
  for a, b in zip(plain, k0):
    if a is not None:
      np.testing.assert_array_equal(a, b)


def test_stochastic_last_k_changes_only_the_last_k_steps():
  """With k ancestral steps at the end, the trajectory equals plain DDIM's up to step n - k
  and leaves it from there on (per-step eta array)."""
  n, k = 12, 3
  kw = dict(eps_fn=_linear_eps, shape=(2,), num_steps=n, traj_stride=1, window=2)
  idx = jnp.arange(16)
  key = jax.random.key(6)
  plain = _jit(_sampler("ddim", **kw))(None, key, idx)
  mixed = _jit(_sampler("ddim", stochastic_last=k, **kw))(None, key, idx)
  # x0 at step i is read from x_i; the first stochastic step (n - k) changes x_{n-k+1}.
  tp, tm = np.asarray(plain.x0_trajectory), np.asarray(mixed.x0_trajectory)
  np.testing.assert_array_equal(tp[:, : n - k + 1], tm[:, : n - k + 1])
  assert np.abs(tp[:, n - k + 1 :] - tm[:, n - k + 1 :]).max() > 1e-3
  etas = samplers.ddim_etas(n, 0.0, k)
  np.testing.assert_array_equal(etas, [0.0] * (n - k) + [1.0] * k)


def test_stochastic_last_is_validated():
  with pytest.raises(ValueError, match=r"stochastic_last=41.*\[0, 40\]"):
    _sampler("ddim", stochastic_last=T + 1)
  with pytest.raises(ValueError, match="stochastic_last=-1"):
    _sampler("ddim", stochastic_last=-1)
  with pytest.raises(ValueError, match="'ddim' sampler"):
    _sampler("ddpm", stochastic_last=2)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_x_init_replaces_the_drawn_starting_noise(name):
  fn = _jit(_sampler(name, eps_fn=_linear_eps, shape=(2,), num_steps=10))
  key = jax.random.key(8)
  idx = jnp.arange(8)
  out = fn(None, key, idx)
  x_init = jax.vmap(
    lambda i: jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), 0), (2,))
  )(idx)
  again = fn(None, key, idx, x_init)
  np.testing.assert_array_equal(out.samples, again.samples)
  other = fn(None, key, idx, x_init + 0.5)
  assert np.abs(np.asarray(other.samples) - np.asarray(out.samples)).min() > 1e-4


def test_register_sampler_refuses_a_taken_name():
  with pytest.raises(ValueError, match="'ddim' is already registered.*choose another name"):

    @samplers.register_sampler("ddim")
    def _other(schedule, eps_fn, spec):  # pragma: no cover - never registered
      raise AssertionError

  # The registered sampler is untouched.
  assert samplers._SAMPLERS["ddim"].__name__ == "_ddim"
