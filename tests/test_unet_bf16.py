"""The U-Net's bfloat16 path (``model.dtype = "bfloat16"``) against float32, on the
CPU: parameters stay float32, GroupNorm and the output head compute in float32, and the
forward pass, one training step and a short sampling run stay within stated tolerances.

Tolerances (relative L2 error, ||bf16 - f32|| / ||f32||): bfloat16 keeps 8 mantissa bits
(relative rounding 2^-9 ~ 2e-3 per operation); through a few dozen layers the error grows
to ~1e-2. Forward: < 3e-2. One training step: loss within 2e-2 (relative), updated
parameters within 3e-2 of the step's size. Sampling (T = 10 DDPM, same noise): samples
< 5e-2, paper's trajectory variance within 10% (relative) per sample on average.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mode_interp import diffusion, samplers, train
from mode_interp.networks import unet
from mode_interp.networks.unet import UNet

# Attention at 8x8 (the 16x16 input's second level) and in the middle.
SMALL = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, num_groups=4, attn_resolutions=(8,))
X_SHAPE = (4, 16, 16, 1)


# XLA's CPU backend spends most of a small model's compile time in LLVM passes.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(fn, *args):
  return jax.jit(fn).lower(*args).compile(_FAST_COMPILE)(*args)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _params(seed=0, scale=0.1):
  """Random float32 parameters (no zero-initialised layer stays trivial)."""
  x = jnp.zeros((1,) + X_SHAPE[1:])
  t = jnp.zeros((1,), jnp.int32)
  shapes = jax.eval_shape(UNet(**SMALL).init, jax.random.key(0), x, t)["params"]
  rng = np.random.default_rng(seed)

  def fill(path, s):
    noise = scale * rng.standard_normal(s.shape).astype(np.float32)
    return jnp.asarray(noise + 1.0 if path[-1].key == "scale" else noise)

  return jax.tree_util.tree_map_with_path(fill, shapes)


_FORWARD = {}  # compiled forward passes by dtype (two tests run the bfloat16 one at X_SHAPE)


def _apply(dtype):
  model = UNet(**SMALL, dtype=dtype)

  def apply(p, x, t):
    key = (jnp.dtype(dtype).name, x.shape, x.dtype, t.shape, t.dtype)
    if key not in _FORWARD:
      fn = lambda p, x, t: model.apply({"params": p}, x, t)
      _FORWARD[key] = jax.jit(fn).lower(p, x, t).compile(_FAST_COMPILE)
    return _FORWARD[key](p, x, t)

  return apply


def test_compute_dtype_names():
  assert unet.compute_dtype("float32") == jnp.float32
  assert unet.compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match="float16.*float32, bfloat16"):
    unet.compute_dtype("float16")


def test_bf16_keeps_float32_parameters_and_output():
  x = jnp.zeros(X_SHAPE)
  t = jnp.zeros((X_SHAPE[0],), jnp.int32)
  p32 = jax.eval_shape(UNet(**SMALL).init, jax.random.key(0), x, t)["params"]
  p16 = jax.eval_shape(UNet(**SMALL, dtype=jnp.bfloat16).init, jax.random.key(0), x, t)["params"]
  assert jax.tree.structure(p32) == jax.tree.structure(p16)  # checkpoints interchange
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(p16))
  out = _apply(jnp.bfloat16)(_params(), x, t)
  assert out.dtype == jnp.float32


def test_attention_matches_explicit_softmax_formula():
  """jax.nn.dot_product_attention computes the einsum-softmax attention of the original
  implementation (so old checkpoints give the same predictions)."""
  blk = unet.AttnBlock(num_groups=4)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  params = jax.jit(blk.init)(jax.random.key(0), x)["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), params)
  got = jax.jit(blk.apply)({"params": params}, x)

  def reference(p):
    gn = unet.nn.GroupNorm(num_groups=4)
    h = gn.apply({"params": p["norm"]}, x)
    dense = lambda name, v: v @ p[name]["kernel"] + p[name]["bias"]
    q, k, v = (dense(n, h).reshape(2, 64, 16) for n in "qkv")
    w = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(16), axis=-1)
    o = jnp.einsum("bqk,bkc->bqc", w, v).reshape(2, 8, 8, 16)
    return x + dense("proj_out", o)

  # Both compiled (one program each, not op by op); the reference stays the explicit formula.
  np.testing.assert_allclose(got, jax.jit(reference)(params), rtol=1e-5, atol=1e-5)


def test_bf16_forward_close_to_float32():
  params = _params()
  x = jax.random.normal(jax.random.key(0), X_SHAPE)
  t = jnp.array([0, 3, 50, 99])
  e32 = _apply(jnp.float32)(params, x, t)
  e16 = _apply(jnp.bfloat16)(params, x, t)
  err = _rel(e16, e32)
  assert 0 < err < 3e-2, err


def _one_step(dtype, params, data, sched):
  model = UNet(**SMALL, dtype=dtype)
  eps_fn = lambda p, x, t: model.apply({"params": p}, x, t)
  opt = optax.adam(1e-3)
  state = train.TrainState(jnp.zeros((), jnp.int32), params, params, opt.init(params))
  return _jit(
    train.make_train_step(eps_fn, sched, opt, batch_size=8), state, data, jax.random.key(5)
  )


def test_bf16_training_step_close_to_float32():
  sched = diffusion.make_schedule("linear", 100, 1e-3, 0.2)
  params = _params()
  data = jnp.tanh(jax.random.normal(jax.random.key(2), (16,) + X_SHAPE[1:]))
  s32, m32 = _one_step(jnp.float32, params, data, sched)
  s16, m16 = _one_step(jnp.bfloat16, params, data, sched)
  assert abs(float(m16["loss"]) - float(m32["loss"])) / float(m32["loss"]) < 2e-2
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(s16.params))
  # Adam's first step moves every weight by ~lr * sign(grad): compare the updates.
  d32 = jax.tree.map(lambda a, b: a - b, s32.params, params)
  d16 = jax.tree.map(lambda a, b: a - b, s16.params, params)
  v32 = np.concatenate([np.ravel(l) for l in jax.tree.leaves(d32)])
  v16 = np.concatenate([np.ravel(l) for l in jax.tree.leaves(d16)])
  agree = np.mean(np.sign(v16) == np.sign(v32))
  assert agree > 0.9, agree
  assert _rel(float(m16["grad_norm"]), float(m32["grad_norm"])) < 3e-2


def test_bf16_sampling_close_to_float32():
  sched = diffusion.make_schedule("linear", 10, 0.01, 0.5)
  params = _params(scale=0.05)
  spec = samplers.SamplerSpec(shape=X_SHAPE[1:], window=5, clip_x0=1.0)
  outs = {}
  for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
    model = UNet(**SMALL, dtype=dtype)
    fn = samplers.get_sampling_fn(
      "ddpm", sched, lambda p, x, t: model.apply({"params": p}, x, t), spec
    )
    outs[name] = _jit(fn, params, jax.random.key(0), jnp.arange(8))
  err = _rel(outs["bf16"].samples, outs["f32"].samples)
  assert err < 5e-2, err
  tv16, tv32 = np.asarray(outs["bf16"].traj_variance), np.asarray(outs["f32"].traj_variance)
  assert np.mean(np.abs(tv16 - tv32) / tv32) < 0.1


def test_model_dtype_config_field():
  from configs import shapes as shapes_config
  from experiments import detect
  from experiments import config_check
  from mode_interp.errors import ConfigError

  cfg = shapes_config.get_config("gpu")
  config_check.validate(cfg)
  assert cfg.model.dtype == "bfloat16" and cfg.diffusion.timesteps == 1000
  assert detect.make_model(cfg).dtype == jnp.bfloat16
  cfg = shapes_config.get_config("")
  assert cfg.model.dtype == "float32" and detect.make_model(cfg).dtype == jnp.float32
  cfg.model.dtype = "float16"
  with pytest.raises(
    ConfigError, match="^model.dtype: 'float16' is not allowed; allowed: float32, bfloat16$"
  ):
    config_check.validate(cfg)
