"""The XLA compile options of training steps and convolutional networks on CPUs
(``sharding.compiler_options``): which programs get them, the fallbacks (the user's own
``XLA_FLAGS``, a jaxlib without the option), and that a U-Net computes the same function with
them (float32 tolerance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gaussian1d, shapes
from mode_interp import pipeline, sharding
from mode_interp.networks.unet import UNet


@pytest.fixture
def fresh_probe():
  sharding.cpu_ynn_options.cache_clear()
  yield
  sharding.cpu_ynn_options.cache_clear()


def test_training_steps_and_convolutional_networks_on_cpus_get_options(fresh_probe, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  mesh = sharding.make_mesh(1)
  assert sharding.compiler_options(mesh, convolutional=False) == {}  # the toy's sampler
  opts = sharding.compiler_options(mesh, convolutional=True)
  assert sharding.compiler_options(mesh, convolutional=False, training=True) == opts
  with sharding.xla_default_options():
    assert sharding.compiler_options(mesh, convolutional=True, training=True) == {}
  # The option where this jaxlib has it, none where it does not (the probe's fallback):
  # either way what the probe found, so the test does not pin one jaxlib's options.
  assert opts == dict(sharding.cpu_ynn_options())
  assert opts in ({}, {sharding.CPU_YNN_OPTION: sharding.CPU_YNN_FUSIONS})
  assert sharding.compiler_options(None, convolutional=True) == opts  # default backend: CPU
  assert pipeline.is_convolutional(shapes.get_config("tiny"))
  assert not pipeline.is_convolutional(gaussian1d.get_config("tiny"))


def test_user_xla_flags_win(fresh_probe, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{sharding.CPU_YNN_OPTION}=individual_dot")
  assert sharding.compiler_options(sharding.make_mesh(1)) == {}


def test_a_jaxlib_without_the_option_compiles_with_defaults(fresh_probe, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(sharding, "CPU_YNN_FUSIONS", "NO_SUCH_FUSION_TYPE")
  assert sharding.compiler_options(sharding.make_mesh(1)) == {}
  f = sharding.jit(lambda x: 2 * x, sharding.make_mesh(1))
  np.testing.assert_array_equal(f(jnp.ones(3)), 2 * np.ones(3))


def test_unet_same_function_with_the_options(fresh_probe, monkeypatch):
  """Forward pass and gradient of a small U-Net (convolutions, GroupNorm, attention) compiled
  with and without the options agree to float32 rounding."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  # Two levels (a strided convolution, an upsampling), attention at 8x8 and in the middle; no
  # ResNet block on the way down (one per level on the way up): every kind of layer, fewer
  # of them to compile.
  model = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=0, num_groups=4, attn_resolutions=(8,))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 1))
  t = jnp.array([0, 3, 50, 99], jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), x, t)["params"]  # one program, not op by op

  def loss(p):
    return jnp.mean(model.apply({"params": p}, x, t) ** 2)

  mesh = sharding.make_mesh(1)
  assert sharding.compiler_options(mesh)
  fast = {"xla_backend_optimization_level": 0}  # LLVM's passes: most of the compile time
  with_opts = jax.jit(
    jax.value_and_grad(loss), compiler_options={**sharding.compiler_options(mesh), **fast}
  )
  without = jax.jit(jax.value_and_grad(loss), compiler_options=fast)
  (l1, g1), (l0, g0) = with_opts(params), without(params)
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(
      np.asarray(a),
      np.asarray(b),
      rtol=1e-4,
      atol=1e-5 * float(np.abs(np.asarray(b)).max() + 1e-30),
    )
