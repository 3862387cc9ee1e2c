"""The toy network: the per-timestep table path is the same function as the direct one."""

import jax
import jax.numpy as jnp
import numpy as np

from mode_interp.networks.mlp import ToyMLP


def test_timestep_table_gives_the_same_outputs_and_gradients():
  direct, table = ToyMLP(width=32), ToyMLP(width=32, timesteps=50)
  x = jax.random.normal(jax.random.key(0), (200, 2))
  t = jax.random.randint(jax.random.key(1), (200,), 0, 50)
  params = jax.jit(direct.init)(jax.random.key(2), x[:1], t[:1])["params"]
  # Same parameter tree: checkpoints and weights copied across work with either path.
  assert jax.tree.structure(params) == jax.tree.structure(
    jax.eval_shape(table.init, jax.random.key(2), x[:1], t[:1])["params"]
  )

  def loss(model):
    return lambda p: jnp.mean((model.apply({"params": p}, x, t) - x) ** 2)

  # Every comparison in one compiled program (the path taken depends on static shapes only).
  @jax.jit
  def outputs(params):
    a = direct.apply({"params": params}, x, t)
    b = table.apply({"params": params}, x, t)
    ga, gb = jax.grad(loss(direct))(params), jax.grad(loss(table))(params)
    # A chunk at one timestep (the samplers' [1]-shaped t) takes the direct path.
    c = table.apply({"params": params}, x, jnp.full((1,), 7, jnp.int32))
    d = direct.apply({"params": params}, x, jnp.full((200,), 7, jnp.int32))
    return a, b, ga, gb, c, d

  a, b, ga, gb, c, d = outputs(params)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(c), np.asarray(d), rtol=1e-6, atol=1e-6)


def test_bfloat16_products_stay_close_to_float32_with_float32_parameters():
  """``dtype=bfloat16``: same parameters (float32), outputs within bfloat16 rounding of the
  float32 network's, on both the direct and the per-timestep-table path."""
  x = jax.random.normal(jax.random.key(0), (300, 2))
  t = jax.random.randint(jax.random.key(1), (300,), 0, 100)
  f32, bf16 = ToyMLP(width=64, timesteps=100), ToyMLP(width=64, timesteps=100, dtype=jnp.bfloat16)
  params = jax.jit(f32.init)(jax.random.key(2), x[:1], t[:1])["params"]
  assert jax.tree.structure(
    jax.eval_shape(bf16.init, jax.random.key(2), x[:1], t[:1])["params"]
  ) == jax.tree.structure(params)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))

  @jax.jit
  def outputs(params):  # table path (300 > T rows) and direct path
    return [
      (f32.apply({"params": params}, x, tt), bf16.apply({"params": params}, x, tt))
      for tt in (t, t[:1])
    ]

  for a, b in outputs(params):
    assert b.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(a - b))) / float(jnp.max(jnp.abs(a)))
    assert 1e-5 < err < 3e-2, err  # rounded (not float32), but only by bfloat16's 8 bits


def test_bfloat16_product_gradients():
  """The custom backward pass: ``dx`` from bfloat16 operands, ``dw`` in float32."""
  from mode_interp.networks import mlp

  x = jax.random.normal(jax.random.key(0), (50, 16))
  w = jax.random.normal(jax.random.key(1), (16, 8))
  g = jax.random.normal(jax.random.key(2), (50, 8))
  out, vjp = jax.vjp(mlp._bf16_matmul, x, w)
  bf = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  np.testing.assert_allclose(out, bf(x) @ bf(w), rtol=1e-5, atol=1e-5)
  dx, dw = vjp(g)
  assert dx.dtype == dw.dtype == jnp.float32
  np.testing.assert_allclose(dx, bf(g) @ bf(w).T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, x.T @ g, rtol=1e-5, atol=1e-4)
