"""The training-set denoisers against brute force, each other, and what they must draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mode_interp import diffusion, empirical_denoiser as ed, samplers
from mode_interp.data import shapes


def _brute_optimal(train, x, s, v):
  out = []
  for i in range(len(x)):
    d2 = np.sum((x[i][None] - s[i] * train) ** 2, axis=tuple(range(1, train.ndim)))
    w = np.exp(-(d2 - d2.min()) / (2 * v[i]))
    w /= w.sum()
    out.append(np.tensordot(w, train, axes=1))
  return np.stack(out)


def test_optimal_x0_is_the_softmax_weighted_mean_of_the_training_images():
  rng = np.random.default_rng(0)
  train = rng.uniform(-1, 1, (7, 4, 5, 1)).astype(np.float32)
  x = rng.normal(size=(3, 4, 5, 1)).astype(np.float32)
  s, v = np.array([0.9, 0.5, 0.1], np.float32), np.array([0.19, 0.75, 0.99], np.float32)
  got = ed.optimal_x0(jnp.asarray(train), jnp.asarray(x), jnp.asarray(s), jnp.asarray(v))
  np.testing.assert_allclose(got, _brute_optimal(train, x, s, v), rtol=1e-4, atol=1e-5)


def test_box_sum_matches_a_window_sum_with_zero_padding():
  x = np.random.default_rng(1).normal(size=(2, 6, 7)).astype(np.float32)
  for patch in (1, 3, 5, 15):
    r = patch // 2
    xp = np.pad(x, ((0, 0), (r, r), (r, r)))
    want = np.stack(
      [
        [[xp[b, i : i + patch, j : j + patch].sum() for j in range(7)] for i in range(6)]
        for b in range(2)
      ]
    )
    np.testing.assert_allclose(ed.box_sum(jnp.asarray(x), patch), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="odd"):
    ed.box_sum(jnp.asarray(x), 4)


def test_local_denoiser_with_a_canvas_wide_patch_is_the_exact_one():
  rng = np.random.default_rng(2)
  train = rng.uniform(-1, 1, (11, 6, 6, 1)).astype(np.float32)
  x = rng.normal(size=(3, 6, 6, 1)).astype(np.float32)
  s, v = jnp.asarray([0.8, 0.4, 0.05]), jnp.asarray([0.36, 0.84, 0.9975])
  exact = ed.optimal_x0(jnp.asarray(train), jnp.asarray(x), s, v)
  local = ed.local_x0(jnp.asarray(train), jnp.asarray(x), s, v, patch=11, chunk=4)
  np.testing.assert_allclose(local, exact, rtol=1e-4, atol=1e-5)
  # A small patch is a different function: pixels follow different training images.
  small = ed.local_x0(jnp.asarray(train), jnp.asarray(x), s, v, patch=3, chunk=4)
  assert float(jnp.max(jnp.abs(small - exact))) > 1e-2


def _draw(eps_fn, train, schedule, n):
  spec = samplers.SamplerSpec(shape=train.shape[1:], window=5, clip_x0=1.0)
  fn = jax.jit(samplers.get_sampling_fn("ddpm", schedule, eps_fn, spec))
  return np.asarray(fn(jnp.asarray(train), jax.random.key(3), jnp.arange(n)).samples)


def test_exact_denoiser_reproduces_training_images_and_local_one_composes():
  ds = shapes.generate(64, seed=0, scale=0.5)
  train = shapes.to_model_input(ds.images)
  schedule = diffusion.make_schedule("linear", 50, 2e-3, 0.4)
  exact = _draw(ed.make_eps_fn(schedule, "exact"), train, schedule, 16)
  d = np.sqrt(((exact[:, None] - train[None]) ** 2).reshape(16, len(train), -1).mean(-1))
  assert np.all(d.min(axis=1) < 0.05)  # every sample is (nearly) a training image
  local = _draw(ed.make_eps_fn(schedule, "local", patch=3, chunk=32), train, schedule, 16)
  dl = np.sqrt(((local[:, None] - train[None]) ** 2).reshape(16, len(train), -1).mean(-1))
  assert np.median(dl.min(axis=1)) > 0.1  # a 3x3 window stitches new images


def test_make_eps_fn_refuses_bad_settings():
  schedule = diffusion.make_schedule("linear", 10, 1e-3, 0.2)
  with pytest.raises(ValueError, match="unknown denoiser"):
    ed.make_eps_fn(schedule, "nearest")
  with pytest.raises(ValueError, match="odd positive patch"):
    ed.make_eps_fn(schedule, "local", patch=4)


def test_receptive_field_of_a_single_convolution():
  k = jax.random.normal(jax.random.key(0), (5, 3, 1, 1))

  def eps_fn(params, x, t):
    return jax.lax.conv_general_dilated(
      x, params, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  assert ed.receptive_field(eps_fn, k, (9, 9, 1)) == (5, 3)
