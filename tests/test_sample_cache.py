"""The chunk-level sample cache of pipeline.draw_samples: reused only for the same
checkpoint step and sampling settings."""

import jax
import numpy as np
import pytest

from configs import gaussian1d
from mode_interp import pipeline, sharding
from mode_interp.workdir import Workdir


def _setup(tmp_path, **detect):
  cfg = gaussian1d.get_config()
  cfg.diffusion.timesteps = 20
  cfg.model.width = 16
  cfg.sample.chunk_size = 32
  for k, v in detect.items():
    cfg.detect[k] = v
  mesh = sharding.make_mesh(1)
  model = pipeline.make_model(cfg)
  params = (
    pipeline.make_trainer(cfg, mesh)
    .init(np.zeros((1, 1), np.float32), jax.random.key(0))
    .ema_params
  )
  sample_jit = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), (1,), mesh=mesh)
  return cfg, mesh, params, sample_jit


def _never(*a, **kw):
  raise AssertionError("the sampler ran although the cache was valid")


def test_cache_is_reused_only_for_the_same_step_and_settings(tmp_path):
  wd = Workdir(str(tmp_path / "run"))
  cfg, mesh, params, sample_jit = _setup(tmp_path, window=5)
  draw = lambda c, fn, step: pipeline.draw_samples(
    c, fn, params, 80, mesh=mesh, workdir=wd, cache="s.npz", step=step
  )
  first = draw(cfg, sample_jit, 7)
  assert first.samples.shape == (80, 1)
  again = draw(cfg, _never, 7)  # same step and settings: nothing is sampled
  np.testing.assert_array_equal(again.samples, first.samples)
  np.testing.assert_array_equal(again.traj_variance, first.traj_variance)

  # Another window (or reduction, sampler, ...) must not reuse the cached variances.
  cfg2, _, _, sample_jit2 = _setup(tmp_path, window=2)
  with pytest.raises(AssertionError, match="the sampler ran"):
    draw(cfg2, _never, 7)
  second = draw(cfg2, sample_jit2, 7)
  np.testing.assert_array_equal(second.samples, first.samples)  # same noise per index
  assert not np.allclose(second.traj_variance, first.traj_variance)
  # ... and another checkpoint step samples again as well.
  with pytest.raises(AssertionError, match="the sampler ran"):
    draw(cfg2, _never, 8)


def test_cache_without_settings_is_not_trusted(tmp_path):
  wd = Workdir(str(tmp_path / "run"))
  cfg, mesh, params, sample_jit = _setup(tmp_path)
  out = pipeline.draw_samples(
    cfg, sample_jit, params, 40, mesh=mesh, workdir=wd, cache="s.npz", step=3
  )
  # A cache written before the settings were recorded (step only) is sampled again.
  wd.save_arrays("s.npz", step=3, samples=out.samples, traj_variance=out.traj_variance)
  with pytest.raises(AssertionError, match="the sampler ran"):
    pipeline.draw_samples(cfg, _never, params, 40, mesh=mesh, workdir=wd, cache="s.npz", step=3)


def test_cache_without_trajectories_does_not_serve_a_request_for_them(tmp_path):
  import json

  wd = Workdir(str(tmp_path / "run"))
  cfg, mesh, params, sample_jit = _setup(tmp_path)
  first = pipeline.draw_samples(
    cfg, sample_jit, params, 40, mesh=mesh, workdir=wd, cache="s.npz", step=3
  )
  assert first.x0_trajectory is None
  model = pipeline.make_model(cfg)
  strided = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), (1,), mesh=mesh, traj_stride=5)
  out = pipeline.draw_samples(
    cfg, strided, params, 40, mesh=mesh, workdir=wd, cache="s.npz", step=3, traj_stride=5
  )
  # 20 steps, every 5th and the last: steps 0, 5, 10, 15, 19.
  assert out.x0_trajectory is not None and out.x0_trajectory.shape == (40, 5, 1)
  np.testing.assert_array_equal(out.samples, first.samples)
  # A fingerprint written before traj_stride was recorded means traj_stride 0: still valid.
  fp = json.loads(pipeline.sampling_fingerprint(cfg))
  del fp["traj_stride"]
  wd.save_arrays(
    "s.npz",
    step=3,
    fingerprint=np.asarray(json.dumps(fp)),
    samples=first.samples,
    traj_variance=first.traj_variance,
  )
  again = pipeline.draw_samples(
    cfg, _never, params, 40, mesh=mesh, workdir=wd, cache="s.npz", step=3
  )
  np.testing.assert_array_equal(again.samples, first.samples)
