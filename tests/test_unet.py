"""Tests for the DDPM U-Net noise predictor."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mode_interp.networks.unet import UNet, count_params

SMALL = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, num_groups=4)

# XLA's CPU backend spends most of a small model's compile time in LLVM
# optimisation passes; the tests care about values, not speed.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _run(fn, *args):
  """Compiles ``fn`` for ``args`` with cheap backend passes and runs it."""
  return jax.jit(fn).lower(*args).compile(_FAST_COMPILE)(*args)


@functools.cache
def _small_params():
  """Parameters of ``UNet(**SMALL)``, initialised once per test session."""
  model = UNet(**SMALL)
  x = jnp.zeros((1, 8, 8, 1))
  t = jnp.zeros((1,), jnp.int32)
  return _run(model.init, jax.random.key(0), x, t)["params"]


def _perturb(params, seed=0, scale=0.05):
  """Adds Gaussian noise so that no (zero-initialised) layer is trivial."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
    lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), params
  )


def _random_params(model, x, t, seed=0, scale=0.1):
  """Random parameters shaped like ``model``'s, without compiling its init."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, t)["params"]
  rng = np.random.default_rng(seed)

  def fill(path, s):
    noise = scale * rng.standard_normal(s.shape).astype(s.dtype)
    return noise + 1.0 if path[-1].key == "scale" else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("size", [32, 16])
def test_output_shape_matches_input(size):
  model = UNet(**SMALL)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 1))
  t = jnp.array([0, 999])
  out = _run(lambda p, x, t: model.apply({"params": p}, x, t), _small_params(), x, t)
  assert out.shape == x.shape
  assert out.dtype == x.dtype
  # The final conv is zero-initialised, as in DDPM.
  np.testing.assert_array_equal(out, 0.0)
  assert count_params(_small_params()) > 0


def test_out_ch_overrides_channels():
  model = UNet(**SMALL, out_ch=2)
  x = jnp.zeros((1, 8, 8, 1))
  t = jnp.zeros((1,), jnp.int32)
  params = _random_params(model, x, t)
  out = jax.eval_shape(lambda p: model.apply({"params": p}, x, t), params)
  assert out.shape == (1, 8, 8, 2)


def test_time_conditioning_changes_output():
  model = UNet(**SMALL)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
  params = _perturb(_small_params())
  apply = lambda t: model.apply({"params": params}, x, t)
  out_a = _run(apply, jnp.array([10, 10]))
  out_b = _run(apply, jnp.array([500, 500]))
  assert float(jnp.abs(out_a).mean()) > 1e-4
  assert float(jnp.abs(out_a - out_b).mean()) > 1e-4
  # Real-valued and scalar timesteps are accepted too.
  np.testing.assert_allclose(out_a, _run(apply, jnp.array([10.0, 10.0])), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out_a, _run(apply, jnp.int32(10)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [30, 18])
def test_invalid_resolution_raises(size):
  model = UNet(ch=8, ch_mult=(1, 2, 2), num_groups=4)
  x = jnp.zeros((1, size, size, 1))
  with pytest.raises(ValueError, match="not divisible by 4"):
    jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros((1,), jnp.int32))


def test_invalid_num_groups_raises():
  model = UNet(ch=12, ch_mult=(1, 2), num_groups=8)
  x = jnp.zeros((1, 8, 8, 1))
  with pytest.raises(ValueError, match="num_groups=8"):
    jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros((1,), jnp.int32))


def test_attention_path_runs():
  model = UNet(**SMALL, attn_resolutions=(16, 8))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
  t = jnp.array([1, 2])
  params = _random_params(model, x, t)
  assert {"down_0_attn_0", "down_1_attn_0", "up_0_attn_0", "up_1_attn_1", "mid_attn"} <= set(params)
  out = _run(lambda p: model.apply({"params": p}, x, t), params)
  assert out.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.abs(out).mean()) > 1e-4


def test_dropout_in_train_mode():
  model = UNet(**SMALL, dropout=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  t = jnp.array([1, 2])
  params = _perturb(_small_params())
  eval_out = _run(lambda p: model.apply({"params": p}, x, t), params)
  train_out = _run(
    lambda p, k: model.apply({"params": p}, x, t, train=True, rngs={"dropout": k}),
    params,
    jax.random.key(3),
  )
  assert train_out.shape == x.shape
  assert float(jnp.abs(eval_out - train_out).max()) > 0.0


def test_jitted_apply_traces_once():
  model = UNet(**SMALL)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
  t = jnp.array([5, 6])
  params = _perturb(_small_params())

  @jax.jit
  @chex.assert_max_traces(n=1)
  def apply(p, x, t):
    return model.apply({"params": p}, x, t)

  try:
    out1 = apply(params, x, t)
    out2 = apply(params, x + 1.0, t + 1)
  finally:
    chex.clear_trace_counter()
  assert out1.shape == out2.shape == x.shape
  assert float(jnp.abs(out1 - out2).mean()) > 1e-4
