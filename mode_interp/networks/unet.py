"""DDPM-style U-Net noise predictor (Ho et al., 2020) in Flax Linen.

The network maps a noisy image ``x_t`` (NHWC) and its timestep ``t`` to a
prediction of the noise ``eps`` with the same shape as ``x_t``. The layout
follows the original DDPM model: a sinusoidal time embedding fed through a
two-layer MLP, ResNet blocks conditioned on that embedding, optional
single-head self-attention at chosen spatial resolutions, strided-conv
downsampling, nearest-neighbour upsampling and concatenated skip connections.

Mixed precision: ``dtype`` is the computation dtype of the convolutions, dense layers and
attention (``bfloat16`` on accelerators); parameters stay float32 (``param_dtype``), and
every GroupNorm, the time embedding's sinusoids, the output head (last GroupNorm and
``conv_out``) and the attention softmax compute in float32, so the returned ``eps`` is a
float32 prediction whatever ``dtype``.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mode_interp.networks import DTYPES, compute_dtype  # noqa: F401 - model.dtype names
from mode_interp.networks.embedding import timestep_embedding

Dtype = Any

_zeros = nn.initializers.zeros


def _norm(num_groups, name):
  """GroupNorm, always computed (and returned) in float32."""
  return nn.GroupNorm(num_groups=num_groups, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


def _check_group_norm(channels: tuple[int, ...], num_groups: int) -> None:
  """Raises ``ValueError`` unless ``num_groups`` divides every channel count."""
  if num_groups < 1:
    raise ValueError(f"num_groups must be positive, got {num_groups}.")
  bad = sorted({c for c in channels if c % num_groups})
  if bad:
    raise ValueError(
      f"num_groups={num_groups} must divide every channel count of the "
      f"U-Net; it does not divide {bad}."
    )


def _check_resolution(height: int, width: int, num_levels: int) -> None:
  """Raises ``ValueError`` unless both sizes survive every downsampling."""
  factor = 2 ** (num_levels - 1)
  if height % factor or width % factor:
    raise ValueError(
      f"Input spatial size {height}x{width} is not divisible by {factor} "
      f"(= 2**(len(ch_mult) - 1) for {num_levels} resolution levels); the "
      "skip connections of the U-Net would not line up."
    )


class ResnetBlock(nn.Module):
  """Pre-activation ResNet block conditioned on the time embedding."""

  out_ch: int
  num_groups: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, train: bool = False):
    h = _norm(self.num_groups, "norm1")(x)
    h = nn.swish(h)
    h = nn.Conv(self.out_ch, (3, 3), dtype=self.dtype, param_dtype=jnp.float32, name="conv1")(h)
    h = (
      h
      + nn.Dense(self.out_ch, dtype=self.dtype, param_dtype=jnp.float32, name="temb_proj")(
        nn.swish(temb)
      )[:, None, None, :]
    )
    h = _norm(self.num_groups, "norm2")(h)
    h = nn.swish(h)
    h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
    h = nn.Conv(
      self.out_ch,
      (3, 3),
      kernel_init=_zeros,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="conv2",
    )(h)
    if x.shape[-1] != self.out_ch:
      x = nn.Conv(self.out_ch, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="skip")(x)
    return (x + h).astype(self.dtype)


class AttnBlock(nn.Module):
  """Single-head spatial self-attention with a residual connection."""

  num_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, height, width, c = x.shape
    h = _norm(self.num_groups, "norm")(x)
    dense = lambda name, **kw: nn.Dense(
      c, dtype=self.dtype, param_dtype=jnp.float32, name=name, **kw
    )
    # [B, L, heads=1, C]; scale 1/sqrt(C), softmax in float32 (jax's XLA path; cuDNN's
    # fused kernel where it applies).
    q = dense("q")(h).reshape(b, height * width, 1, c)
    k = dense("k")(h).reshape(b, height * width, 1, c)
    v = dense("v")(h).reshape(b, height * width, 1, c)
    h = jax.nn.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))
    h = h.reshape(b, height, width, c)
    h = dense("proj_out", kernel_init=_zeros)(h)
    return (x + h).astype(self.dtype)


class Downsample(nn.Module):
  """Halves the spatial size with a stride-2 3x3 convolution."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # 'SAME' padding on even sizes pads (0, 1), as in the DDPM reference.
    return nn.Conv(
      x.shape[-1],
      (3, 3),
      strides=(2, 2),
      padding="SAME",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="conv",
    )(x)


class Upsample(nn.Module):
  """Doubles the spatial size (nearest neighbour) and applies a 3x3 conv."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, param_dtype=jnp.float32, name="conv")(x)


class UNet(nn.Module):
  """DDPM U-Net that predicts the noise added to an image.

  Attributes:
    ch: base channel width; level ``i`` uses ``ch * ch_mult[i]`` channels.
    ch_mult: channel multipliers, one per resolution level. The input is
      downsampled ``len(ch_mult) - 1`` times.
    num_res_blocks: ResNet blocks per level on the way down (the way up uses
      one more per level, as in DDPM).
    attn_resolutions: spatial sizes (feature-map height) at which a
      self-attention block follows each ResNet block.
    dropout: dropout rate inside the ResNet blocks (active when
      ``train=True``; needs a ``'dropout'`` rng then).
    num_groups: GroupNorm groups; must divide every channel count.
    out_ch: output channels; ``None`` means the input's channel count.
    dtype: computation dtype (parameters are kept in float32; GroupNorm, the
      output head and the attention softmax compute in float32).
  """

  ch: int = 32
  ch_mult: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 1
  attn_resolutions: tuple[int, ...] = ()
  dropout: float = 0.0
  num_groups: int = 8
  out_ch: int | None = None
  # Twice the output channels: the noise and the learned variance's v (mode_interp.diffusion).
  learn_sigma: bool = False
  dtype: Dtype = jnp.float32

  def channel_counts(self) -> tuple[int, ...]:
    """Every feature width that a GroupNorm in the network normalises."""
    return (self.ch,) + tuple(self.ch * m for m in self.ch_mult)

  @nn.compact
  def __call__(self, x, t, train: bool = False):
    """Predicts ``eps`` for noisy images ``x`` at timesteps ``t``.

    Args:
      x: ``[B, H, W, C]`` float images; ``H`` and ``W`` must be divisible by
        ``2**(len(ch_mult) - 1)``.
      t: ``[B]`` (or scalar) integer or real timesteps.
      train: enables dropout.

    Returns:
      ``[B, H, W, out_ch or C]`` noise prediction, in ``x.dtype``.
    """
    if x.ndim != 4:
      raise ValueError(f"Expected NHWC input, got shape {x.shape}.")
    if not self.ch_mult:
      raise ValueError("ch_mult must have at least one level.")
    _check_group_norm(self.channel_counts(), self.num_groups)
    batch, height, width, in_ch = x.shape
    num_levels = len(self.ch_mult)
    _check_resolution(height, width, num_levels)
    out_ch = in_ch if self.out_ch is None else self.out_ch
    out_ch *= 2 if self.learn_sigma else 1
    t = jnp.asarray(t)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, (batch,))

    resblock = lambda c, name: ResnetBlock(
      out_ch=c, num_groups=self.num_groups, dropout=self.dropout, dtype=self.dtype, name=name
    )
    attnblock = lambda name: AttnBlock(num_groups=self.num_groups, dtype=self.dtype, name=name)

    # Time embedding.
    temb = timestep_embedding(t, self.ch)
    temb = nn.Dense(4 * self.ch, dtype=self.dtype, param_dtype=jnp.float32, name="temb_dense0")(
      temb
    )
    temb = nn.Dense(4 * self.ch, dtype=self.dtype, param_dtype=jnp.float32, name="temb_dense1")(
      nn.swish(temb)
    )

    # Downsampling path.
    h = nn.Conv(self.ch, (3, 3), dtype=self.dtype, param_dtype=jnp.float32, name="conv_in")(
      x.astype(self.dtype)
    )
    hs = [h]
    for level, mult in enumerate(self.ch_mult):
      for block in range(self.num_res_blocks):
        h = resblock(self.ch * mult, f"down_{level}_res_{block}")(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attnblock(f"down_{level}_attn_{block}")(h)
        hs.append(h)
      if level != num_levels - 1:
        hs.append(Downsample(dtype=self.dtype, name=f"down_{level}_downsample")(hs[-1]))

    # Middle.
    h = hs[-1]
    mid_ch = h.shape[-1]
    h = resblock(mid_ch, "mid_res_0")(h, temb, train)
    h = attnblock("mid_attn")(h)
    h = resblock(mid_ch, "mid_res_1")(h, temb, train)

    # Upsampling path, consuming the skips in reverse order.
    for level in reversed(range(num_levels)):
      for block in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, hs.pop()], axis=-1)
        h = resblock(self.ch * self.ch_mult[level], f"up_{level}_res_{block}")(h, temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attnblock(f"up_{level}_attn_{block}")(h)
      if level != 0:
        h = Upsample(dtype=self.dtype, name=f"up_{level}_upsample")(h)
    assert not hs, "every skip connection must be consumed"

    # Output head.
    # Output head in float32.
    h = _norm(self.num_groups, "norm_out")(h)
    h = nn.swish(h)
    h = nn.Conv(
      out_ch,
      (3, 3),
      kernel_init=_zeros,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name="conv_out",
    )(h)
    return h.astype(x.dtype)


def count_params(params) -> int:
  """Total number of scalar entries in a parameter pytree."""
  return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
