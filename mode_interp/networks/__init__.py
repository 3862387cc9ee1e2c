"""The score networks (flax modules) and what they share."""

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """``model.dtype`` (a name) -> the jnp dtype a network computes its products in."""
  if name not in DTYPES:
    raise ValueError(f"unknown model dtype {name!r}; allowed: {', '.join(DTYPES)}")
  return DTYPES[name]
