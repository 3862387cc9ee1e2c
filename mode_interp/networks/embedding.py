"""Sinusoidal timestep embedding shared by every score network."""

import math

import jax.numpy as jnp


def timestep_embedding(t, dim: int):
  """Sinusoidal embedding of integer (or real) timesteps.

  Half the channels are sines, half cosines, with frequencies
  ``exp(-log(10000) * k / (dim/2 - 1))`` -- the fairseq layout that DDPM
  implementations (and the reference toy model) use.

  Args:
    t: timesteps, shape ``[B]``.
    dim: embedding width.

  Returns:
    ``[B, dim]`` float32 array.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = jnp.asarray(t, jnp.float32).reshape(-1)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if dim % 2 == 1:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb
