"""Training-free denoisers of a finite training set: the exact one and a local one.

A diffusion model trained to optimality on a finite set ``{y_m}`` of ``M`` images learns
the *optimal (empirical) denoiser*: under the forward process ``x_t = s y + sqrt(v) eps``
(``s = sqrt(alpha_bar_t)``, ``v = 1 - alpha_bar_t``) the posterior over the training
images is a softmax of ``-|x_t - s y_m|^2 / (2 v)``, and

    E[x0 | x_t] = sum_m softmax_m(s <x_t, y_m> / v - s^2 |y_m|^2 / (2 v)) y_m

(the ``|x_t|^2`` term is the same for every ``m`` and drops out of the softmax). Sampling
with it reproduces training images: the image counterpart of the Gaussian testbeds' exact
score.

The *local* denoiser (the locality-constrained "LS machine" of Kamb and Ganguli, "An
analytic theory of creativity in convolutional diffusion models", arXiv 2412.20292)
restricts that posterior to a ``P x P`` patch: pixel ``p`` of ``x0_hat`` is the mean of
``y_m[p]`` under a softmax over ``m`` of the same expression computed on the patch around
``p`` only (zero padding at the borders, as a convolutional network's). Each pixel may
follow a different training image, so the local machine composes images it never saw, as
a network whose receptive field is smaller than the canvas might. Choices the paper leaves
open for this testbed, and made here: the patch is square and centred, patches are taken
at the same location in the training images (no translation equivariance: the columns of
SIMPLE SHAPES sit at fixed places and a U-Net with zero padding can tell where it is), and
the softmax over the ``M`` images is streamed over chunks of images (online max and sums),
so memory is ``O(B * chunk * H * W)`` whatever ``M``.

Both are ``eps_fn(train, x_t, t)`` for :mod:`mode_interp.samplers` (the training images in
the place of a network's parameters), so they sample through the same scan, with the same
trajectory variance, as a network.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mode_interp import diffusion, sharding

DENOISERS = ("exact", "local")


def _coefficients(schedule: diffusion.Schedule, t, x_t):
  t = jnp.broadcast_to(jnp.asarray(t).reshape(-1), (x_t.shape[0],))
  s = schedule.sqrt_alphas_bar[t].astype(jnp.float32)
  v = (1.0 - schedule.alphas_bar[t]).astype(jnp.float32)
  return t, s, v


def optimal_x0(train: jax.Array, x_t: jax.Array, s: jax.Array, v: jax.Array) -> jax.Array:
  """``E[x0 | x_t]`` under the empirical distribution of ``train``.

  Args:
    train: ``[M, *shape]`` training images.
    x_t: ``[B, *shape]`` noisy images.
    s, v: ``[B]`` ``sqrt(alpha_bar_t)`` and ``1 - alpha_bar_t`` of each row.
  """
  m = train.shape[0]
  y = train.reshape(m, -1).astype(jnp.float32)
  x = x_t.reshape(x_t.shape[0], -1).astype(jnp.float32)
  logits = s[:, None] * (x @ y.T) - 0.5 * s[:, None] ** 2 * jnp.sum(y * y, axis=1)[None, :]
  w = jax.nn.softmax(logits / v[:, None], axis=1)
  return (w @ y).reshape(x_t.shape)


def box_sum(x: jax.Array, patch: int) -> jax.Array:
  """Sum over the ``patch x patch`` window centred on every pixel of ``x [..., H, W]``,
  with zeros outside the image: separable, as ``patch`` shifted slices per axis that XLA
  fuses into one pass (XLA's CPU cumulative sums and windowed reductions are far slower)."""
  if patch % 2 != 1 or patch < 1:
    raise ValueError(f"patch must be an odd positive size, got {patch}")
  r = patch // 2
  for axis in (x.ndim - 2, x.ndim - 1):
    n = x.shape[axis]
    k = min(r, n - 1)  # offsets beyond the image only add zeros
    pad = [(0, 0)] * x.ndim
    pad[axis] = (k, k)
    xp = jnp.pad(x, pad)
    x = sum(jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * k + 1))
  return x


def local_x0(
  train: jax.Array, x_t: jax.Array, s: jax.Array, v: jax.Array, patch: int, chunk: int = 256
) -> jax.Array:
  """The local denoiser: pixel ``p`` of ``x0_hat`` is ``E[y[p]]`` under the posterior over
  the training images computed from the ``patch x patch`` window around ``p`` alone.

  Args:
    train: ``[M, H, W]`` or ``[M, H, W, 1]`` single-channel training images.
    x_t: ``[B, H, W]`` or ``[B, H, W, 1]``.
    s, v: ``[B]`` as in :func:`optimal_x0`.
    patch: odd window side; ``2 * max(H, W) - 1`` or more makes every pixel see the whole
      image (the exact denoiser).
    chunk: training images per step of the streamed softmax.
  """
  shape = x_t.shape
  b, h, w = shape[0], shape[1], shape[2]
  x = x_t.reshape(b, h, w).astype(jnp.float32)
  y = train.reshape(train.shape[0], h, w).astype(jnp.float32)
  m = y.shape[0]
  chunk = max(1, min(chunk, m))
  pad = (-m) % chunk
  valid = jnp.concatenate([jnp.ones((m,), bool), jnp.zeros((pad,), bool)])
  y = jnp.concatenate([y, jnp.zeros((pad, h, w), y.dtype)])
  ys = y.reshape(-1, chunk, h, w)
  valid = valid.reshape(-1, chunk)
  y2 = box_sum(ys * ys, patch)  # [C, chunk, H, W]
  s_, v_ = s[:, None, None, None], v[:, None, None, None]

  def body(carry, inputs):
    run_max, norm, acc = carry
    yc, y2c, ok = inputs
    cross = box_sum(x[:, None] * yc[None], patch)  # [B, chunk, H, W]
    logits = (s_ * cross - 0.5 * s_**2 * y2c[None]) / v_
    logits = jnp.where(ok[None, :, None, None], logits, -jnp.inf)
    new_max = jnp.maximum(run_max, jnp.max(logits, axis=1))
    scale = jnp.exp(run_max - new_max)
    e = jnp.exp(logits - new_max[:, None])
    norm = norm * scale + jnp.sum(e, axis=1)
    acc = acc * scale + jnp.sum(e * yc[None], axis=1)
    return (new_max, norm, acc), None

  init = (jnp.full((b, h, w), -jnp.inf), jnp.zeros((b, h, w)), jnp.zeros((b, h, w)))
  (_, norm, acc), _ = jax.lax.scan(body, init, (ys, y2, valid))
  return (acc / norm).reshape(shape)


def make_eps_fn(
  schedule: diffusion.Schedule, kind: str = "exact", patch: Optional[int] = None, chunk: int = 256
):
  """``eps_fn(train, x_t, t)`` of the exact (``kind="exact"``) or local (``"local"``,
  ``patch`` wide) denoiser: the training images ``[M, *shape]`` take the place of a
  network's parameters (passed in, not closed over, so XLA does not fold them into
  constants)."""
  if kind not in DENOISERS:
    raise ValueError(f"unknown denoiser {kind!r}; allowed: {', '.join(DENOISERS)}")
  if kind == "local" and (patch is None or patch < 1 or patch % 2 != 1):
    raise ValueError(f"the local denoiser needs an odd positive patch size, got {patch}")

  def eps_fn(train, x_t, t):
    t, s, v = _coefficients(schedule, t, x_t)
    if kind == "exact":
      x0 = optimal_x0(train, x_t, s, v)
    else:
      x0 = local_x0(train, x_t, s, v, patch, chunk)
    return diffusion.eps_from_x0(schedule, x_t, t, x0)

  return eps_fn


def receptive_field(eps_fn, params, shape, key=None) -> tuple:
  """The rows and columns of the input that pixel ``(H // 2, W // 2)`` of the output
  depends on, as ``(height, width)``: the support of one row of the network's Jacobian
  (with the given ``params``; pass random ones, since zero-initialised layers hide paths)."""
  h, w = shape[0], shape[1]
  key = jax.random.key(0) if key is None else key
  x = jax.random.normal(key, (1,) + tuple(shape))
  # Jitted (once): run eagerly, the gradient is hundreds of one-op programs to compile.
  g = sharding.jit_once(
    jax.grad(
      lambda p, x: eps_fn(p, x, jnp.zeros((1,), jnp.int32))[0, h // 2, w // 2].sum(), argnums=1
    )
  )(params, x)
  nz = np.abs(np.asarray(g[0])).reshape(h, w, -1).max(-1) > 0
  rows, cols = np.flatnonzero(nz.any(1)), np.flatnonzero(nz.any(0))
  return (
    int(rows.max() - rows.min() + 1) if len(rows) else 0,
    int(cols.max() - cols.min() + 1) if len(cols) else 0,
  )
