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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mode_interp.networks.embedding import timestep_embedding


@jax.custom_vjp
def _bf16_matmul(x, w):
  """``x [..., k] @ w [k, n]`` from bfloat16 operands, accumulated and returned in float32.
  Backward: ``dx`` likewise from bfloat16 operands (the cotangent rounded); ``dw`` in float32
  (a product over the batch axis, which XLA's CPU kernels run no faster in bfloat16)."""
  return jnp.matmul(
    x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32
  )


def _bf16_matmul_fwd(x, w):
  return _bf16_matmul(x, w), (x, w.astype(jnp.bfloat16))


def _bf16_matmul_bwd(res, g):
  x, wb = res
  dx = jnp.matmul(g.astype(jnp.bfloat16), wb.T, preferred_element_type=jnp.float32)
  dw = jnp.matmul(x.reshape(-1, x.shape[-1]).T, g.reshape(-1, g.shape[-1]))
  return dx, dw  # float32, as the float32 primals


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _bf16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """A float32 Dense layer's ``dot_general`` (the last input axis with the kernel's first)
  through :func:`_bf16_matmul`."""
  del precision, preferred_element_type
  (lc, rc), (lb, rb) = dimension_numbers
  assert tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb, dimension_numbers
  return _bf16_matmul(lhs, rhs)


def _dense(features, dtype=jnp.float32, **kw):
  """Xavier-uniform, zero-bias Dense; ``dtype`` bfloat16: float32 in and out, the products
  (forward and backward) from bfloat16 operands accumulated in float32."""
  extra = {} if dtype == jnp.float32 else {"dot_general": _bf16_dot_general}
  return nn.Dense(
    features,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    kernel_init=nn.initializers.xavier_uniform(),
    bias_init=nn.initializers.zeros,
    **extra,
    **kw,
  )


_norm = functools.partial(nn.LayerNorm, epsilon=1e-5)


def _act(x):
  return nn.leaky_relu(x, negative_slope=0.02)


class TemporalBlock(nn.Module):
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    dense = functools.partial(_dense, self.features, self.dtype)
    self.norm1, self.norm2 = _norm(), _norm()
    self.fc1, self.fc2 = dense(use_bias=False), dense(use_bias=False)
    self.enc = dense()

  def encode(self, t_emb, t_index=None):
    """The block's timestep term ``[B, w]``: ``enc(t_emb)``, or with ``t_index [B]`` rows of
    ``enc`` applied to a table ``[T, w]``."""
    e = self.enc(t_emb)
    return e if t_index is None else jnp.take(e, t_index, axis=0)

  def __call__(self, x, e):
    """``e``: the block's timestep term (:meth:`encode`)."""
    h = self.fc1(_act(self.norm1(x))) + e
    h = self.fc2(_act(self.norm2(h)))
    return h + x


class ToyMLP(nn.Module):
  """``apply({'params': p}, x [B, D], t [B]) -> eps [B, D]``."""

  width: int = 128
  num_blocks: int = 3
  share_blocks: bool = True
  timesteps: int = 0  # T: enables the per-timestep table for batches larger than T
  # Product dtype of the hidden layers: float32, or bfloat16 (inputs and weights rounded to
  # bfloat16, float32 accumulation and outputs; CPUs with AVX512-BF16 or AMX run these
  # products at about twice the float32 rate). Input, output, LayerNorm, activations and
  # parameters stay float32.
  dtype: Any = jnp.float32
  # A second output of x's size (the learned variance's v; mode_interp.diffusion).
  learn_sigma: bool = False

  def setup(self):
    self.in_fc = _dense(self.width, use_bias=False)
    self.t_proj = _dense(self.width, self.dtype)
    if self.share_blocks:
      block = TemporalBlock(self.width, self.dtype)
      self.blocks = [block] * self.num_blocks
    else:
      self.blocks = [TemporalBlock(self.width, self.dtype) for _ in range(self.num_blocks)]
    self.out_norm = _norm()

  @nn.compact
  def __call__(self, x, t):
    t = jnp.asarray(t).reshape(-1)
    if self.timesteps and t.shape[0] > self.timesteps and jnp.issubdtype(t.dtype, jnp.integer):
      # The embeddings of 0..T-1 are a constant of the program (computed once, when traced):
      # evaluated in the step, their sines and cosines are a visible share of the toy step.
      with jax.ensure_compile_time_eval():
        emb = timestep_embedding(jnp.arange(self.timesteps), self.width)
      table = _act(self.t_proj(emb))
      t_emb, t_index = table, t
    else:
      t_emb, t_index = _act(self.t_proj(timestep_embedding(t, self.width))), None
    h = self.in_fc(x)
    # Shared blocks share their timestep term: computed (and, when training, differentiated
    # and scattered back through the table) once instead of once per block.
    shared = self.blocks[0].encode(t_emb, t_index) if self.share_blocks else None
    for block in self.blocks:
      h = block(h, shared if self.share_blocks else block.encode(t_emb, t_index))
    out = x.shape[-1] * (2 if self.learn_sigma else 1)
    return _dense(out, name="out_fc")(self.out_norm(h))
