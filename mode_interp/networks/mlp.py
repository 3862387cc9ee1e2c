"""The toy score network of the reference code (its ``Decoder``), in Flax Linen.

``Linear(d -> w, no bias)`` input; sinusoidal timestep embedding of width ``w``
-> ``Linear -> LeakyReLU(0.02)``; ``num_blocks`` residual temporal blocks
(``LayerNorm -> LeakyReLU -> Linear(no bias)``, ``+ Linear(t_emb)``,
``LayerNorm -> LeakyReLU -> Linear(no bias)``, plus the skip); output
``LayerNorm -> Linear(w -> d)``. In the reference the blocks are one module
object repeated, so they share weights: ``share_blocks=True`` reproduces that.
Linear layers use Xavier-uniform weights and zero biases, LayerNorm eps 1e-5,
as the reference (PyTorch) does.

With ``timesteps = T`` set (the pipeline does), a batch with more entries than T
computes the timestep path (embedding, ``t_proj``, each block's ``enc``) once per
timestep and gathers it per sample, instead of once per sample: the same function
and parameters, fewer FLOPs when training (batch 2,000 at T = 1000: half the rows;
batch 10,000: a tenth). Sampling passes one ``t`` per chunk and takes the direct path.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from mode_interp.networks.embedding import timestep_embedding

_dense = functools.partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
                           bias_init=nn.initializers.zeros)
_norm = functools.partial(nn.LayerNorm, epsilon=1e-5)


def _act(x):
  return nn.leaky_relu(x, negative_slope=0.02)


class TemporalBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, t_emb, t_index=None):
    """``t_emb``: ``[B, w]``, or with ``t_index [B]`` a table ``[T, w]`` to gather from."""
    h = _dense(self.features, use_bias=False, name="fc1")(_act(_norm(name="norm1")(x)))
    e = _dense(self.features, name="enc")(t_emb)
    h = h + (e if t_index is None else jnp.take(e, t_index, axis=0))
    h = _dense(self.features, use_bias=False, name="fc2")(_act(_norm(name="norm2")(h)))
    return h + x


class ToyMLP(nn.Module):
  """``apply({'params': p}, x [B, D], t [B]) -> eps [B, D]``."""
  width: int = 128
  num_blocks: int = 3
  share_blocks: bool = True
  timesteps: int = 0   # T: enables the per-timestep table for batches larger than T

  def setup(self):
    self.in_fc = _dense(self.width, use_bias=False)
    self.t_proj = _dense(self.width)
    if self.share_blocks:
      block = TemporalBlock(self.width)
      self.blocks = [block] * self.num_blocks
    else:
      self.blocks = [TemporalBlock(self.width) for _ in range(self.num_blocks)]
    self.out_norm = _norm()

  @nn.compact
  def __call__(self, x, t):
    t = jnp.asarray(t).reshape(-1)
    if self.timesteps and t.shape[0] > self.timesteps and jnp.issubdtype(t.dtype, jnp.integer):
      table = _act(self.t_proj(timestep_embedding(jnp.arange(self.timesteps), self.width)))
      t_emb, t_index = table, t
    else:
      t_emb, t_index = _act(self.t_proj(timestep_embedding(t, self.width))), None
    h = self.in_fc(x)
    for block in self.blocks:
      h = block(h, t_emb, t_index)
    return _dense(x.shape[-1], name="out_fc")(self.out_norm(h))
