"""The toy score network of the reference code (its ``Decoder``), in Flax Linen.

``Linear(d -> w, no bias)`` input; sinusoidal timestep embedding of width ``w``
-> ``Linear -> LeakyReLU(0.02)``; ``num_blocks`` residual temporal blocks
(``LayerNorm -> LeakyReLU -> Linear(no bias)``, ``+ Linear(t_emb)``,
``LayerNorm -> LeakyReLU -> Linear(no bias)``, plus the skip); output
``LayerNorm -> Linear(w -> d)``. In the reference the blocks are one module
object repeated, so they share weights: ``share_blocks=True`` reproduces that.
Linear layers use Xavier-uniform weights and zero biases, LayerNorm eps 1e-5,
as the reference (PyTorch) does.
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
  def __call__(self, x, t_emb):
    h = _dense(self.features, use_bias=False, name="fc1")(_act(_norm(name="norm1")(x)))
    h = h + _dense(self.features, name="enc")(t_emb)
    h = _dense(self.features, use_bias=False, name="fc2")(_act(_norm(name="norm2")(h)))
    return h + x


class ToyMLP(nn.Module):
  """``apply({'params': p}, x [B, D], t [B]) -> eps [B, D]``."""
  width: int = 128
  num_blocks: int = 3
  share_blocks: bool = True

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
    t_emb = _act(self.t_proj(timestep_embedding(t, self.width)))
    h = self.in_fc(x)
    for block in self.blocks:
      h = block(h, t_emb)
    return _dense(x.shape[-1], name="out_fc")(self.out_norm(h))
