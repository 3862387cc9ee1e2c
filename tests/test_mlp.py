"""The toy network: the per-timestep table path is the same function as the direct one."""

import jax
import jax.numpy as jnp
import numpy as np

from mode_interp.networks.mlp import ToyMLP


def test_timestep_table_gives_the_same_outputs_and_gradients():
  direct, table = ToyMLP(width=32), ToyMLP(width=32, timesteps=50)
  x = jax.random.normal(jax.random.key(0), (200, 2))
  t = jax.random.randint(jax.random.key(1), (200,), 0, 50)
  params = direct.init(jax.random.key(2), x[:1], t[:1])["params"]
  # Same parameter tree: checkpoints and weights copied across work with either path.
  assert jax.tree.structure(params) == jax.tree.structure(
      table.init(jax.random.key(2), x[:1], t[:1])["params"])
  a = direct.apply({"params": params}, x, t)
  b = table.apply({"params": params}, x, t)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)

  def loss(model):
    return lambda p: jnp.mean((model.apply({"params": p}, x, t) - x) ** 2)
  ga, gb = jax.grad(loss(direct))(params), jax.grad(loss(table))(params)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-5, atol=1e-6)
  # A chunk at one timestep (the samplers' [1]-shaped t) takes the direct path.
  c = table.apply({"params": params}, x, jnp.full((1,), 7, jnp.int32))
  d = direct.apply({"params": params}, x, jnp.full((200,), 7, jnp.int32))
  np.testing.assert_allclose(np.asarray(c), np.asarray(d), rtol=1e-6, atol=1e-6)
