"""Reverse-process samplers: the whole chain in one ``lax.scan``.

A sampler is built once by :func:`get_sampling_fn` (a registry keyed by name,
in the style of score_sde) and returns a pure function

    sample_chunk(params, key, indices) -> SampleOutput

that draws one sample per entry of ``indices`` (global sample indices). Each
sample's randomness is ``fold_in(key, index)``, so a sample does not depend on
the chunk it is drawn in, nor on how a chunk is split over devices.

Inside the scan the *trajectory variance* is accumulated in streaming form
(Welford): the variance of the predicted ``x0`` over the last ``window`` reverse
steps, reduced over dimensions by ``SamplerSpec.reduction`` (the mean, as in the
paper, or the max). Memory is O(N * D), independent of ``T``.
"""

import dataclasses
import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mode_interp import diffusion, sharding

# eps_fn(params, x_t [B, ...], t [B] or [1]) -> eps [B, ...]. Samplers pass t of shape [1]
# (every sample of a chunk is at the same step), so networks must broadcast it.
EpsFn = Callable[..., jax.Array]


class SampleOutput(NamedTuple):
  samples: jax.Array            # [B, *shape]
  traj_variance: jax.Array      # [B]: mean (or max) over dims of Var(x0_hat) over the window
  x0_trajectory: Optional[jax.Array] = None  # [B, K, *shape] every `traj_stride` steps, if asked


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """What every sampler needs besides the network."""
  shape: tuple           # shape of one sample, e.g. (2,) or (32, 32, 1)
  window: int = 10       # trajectory-variance window, in reverse steps of this sampler
  variance: str = "fixed_large"   # DDPM only
  num_steps: int = 0     # DDIM only: number of reverse steps (0 -> all T)
  eta: float = 0.0       # DDIM only
  clip_x0: Optional[float] = None  # clip predicted x0 to [-c, c] (images); None for toy data
  traj_stride: int = 0   # >0: also return x0_hat every `traj_stride` steps (for plots)
  reduction: str = "mean"  # how the per-dimension variances become one score per sample


REDUCTIONS = ("mean", "max")


_SAMPLERS = {}


def register_sampler(name):
  def deco(fn):
    _SAMPLERS[name] = fn
    return fn
  return deco


def sampler_names():
  return tuple(sorted(_SAMPLERS))


def get_sampling_fn(name: str, schedule: diffusion.Schedule, eps_fn: EpsFn, spec: SamplerSpec):
  """Returns ``sample_chunk(params, key, indices) -> SampleOutput`` (not jitted)."""
  if name not in _SAMPLERS:
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(sampler_names())}")
  if spec.reduction not in REDUCTIONS:
    raise ValueError(f"unknown reduction {spec.reduction!r}; allowed: {', '.join(REDUCTIONS)}")
  return _SAMPLERS[name](schedule, eps_fn, spec)


def _per_sample_normal(keys, step, shape):
  """One standard normal of ``shape`` per sample key, for reverse step ``step``."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape))(keys)


class _Welford(NamedTuple):
  count: jax.Array  # scalar
  mean: jax.Array   # [B, *shape]
  m2: jax.Array     # [B, *shape]


def _welford_init(x):
  return _Welford(jnp.zeros((), jnp.float32), jnp.zeros_like(x), jnp.zeros_like(x))


def _welford_update(w: _Welford, x, include):
  """Adds ``x`` to the running statistics when ``include`` (a traced bool) holds."""
  inc = include.astype(jnp.float32)
  count = w.count + inc
  delta = x - w.mean
  mean = w.mean + inc * delta / jnp.maximum(count, 1.0)
  m2 = w.m2 + inc * delta * (x - mean)
  return _Welford(count, mean, m2)


def _welford_variance(w: _Welford, reduction: str = "mean"):
  """Population variance (numpy's ``ddof=0``), reduced over every non-batch axis by
  ``reduction``: ``mean`` (the paper's score) or ``max`` (the most uncertain pixel)."""
  var = (w.m2 / jnp.maximum(w.count, 1.0)).reshape(w.m2.shape[0], -1)
  return jnp.max(var, axis=1) if reduction == "max" else jnp.mean(var, axis=1)


def _scan_reverse(step_fn, params, ts, window, spec, x_init, keys):
  """Runs ``step_fn`` over the reverse timesteps ``ts`` (descending) in one scan.

  ``step_fn(params, x, t, t_prev, i, keys) -> (x_next, x0_hat)`` where ``i`` is the step
  number (0 = first reverse step). The x0 estimates of the last ``window``
  steps feed the streaming variance.
  """
  n = len(ts)
  ts_arr = jnp.asarray(ts, jnp.int32)
  ts_prev = jnp.asarray(np.append(ts[1:], -1), jnp.int32)
  first_in_window = n - window
  stride = spec.traj_stride
  # With a stride, x0 of every `stride`-th step (and of the last) is written into a buffer
  # carried by the scan: memory O(K * N * D) for the K kept steps, never O(T * N * D).
  kept = np.unique(np.append(np.arange(0, n, stride), n - 1)) if stride else np.zeros(0, int)
  slot_of = np.full(n, -1, np.int32)
  slot_of[kept] = np.arange(len(kept), dtype=np.int32)

  def body(carry, inp):
    x, w, buf = carry
    i, t, t_prev, slot = inp
    x_next, x0_hat = step_fn(params, x, t, t_prev, i, keys)
    w = _welford_update(w, x0_hat, i >= first_in_window)
    if stride:
      k = jnp.maximum(slot, 0)
      buf = jax.lax.dynamic_update_index_in_dim(
          buf, jnp.where(slot >= 0, x0_hat, buf[k]), k, 0)
    return (x_next, w, buf), None

  buf0 = jnp.zeros((len(kept),) + x_init.shape, x_init.dtype) if stride else None
  (x, w, traj), _ = jax.lax.scan(body, (x_init, _welford_init(x_init), buf0),
                                 (jnp.arange(n), ts_arr, ts_prev, jnp.asarray(slot_of)))
  traj = jnp.swapaxes(traj, 0, 1) if stride else None  # [B, K, ...]
  return SampleOutput(x, _welford_variance(w, spec.reduction), traj)


def _maybe_clip(x0, clip):
  return x0 if clip is None else jnp.clip(x0, -clip, clip)


@register_sampler("ddpm")
def _ddpm(schedule: diffusion.Schedule, eps_fn: EpsFn, spec: SamplerSpec):
  """Ancestral sampling with fixed-large or fixed-small variance, all T steps."""
  T = schedule.timesteps
  window = min(spec.window, T)
  diffusion.model_log_variance(schedule, 0, jnp.zeros(()), spec.variance)  # validates the name

  def step_fn(params, x, t, t_prev, i, keys):
    del t_prev
    tb = jnp.full((1,), t, jnp.int32)  # one t for the chunk: the embedding is computed once
    eps = eps_fn(params, x, tb)
    x0_hat = _maybe_clip(diffusion.x0_from_eps(schedule, x, t, eps), spec.clip_x0)
    mean, _, _ = diffusion.posterior_mean_variance(schedule, x0_hat, x, t)
    logvar = diffusion.model_log_variance(schedule, t, x, spec.variance)
    noise = _per_sample_normal(keys, i + 1, spec.shape)
    x_next = mean + jnp.where(t > 0, jnp.exp(0.5 * logvar), 0.0) * noise
    return x_next, x0_hat

  def sample_chunk(params, key, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    x_init = _per_sample_normal(keys, 0, spec.shape)
    return _scan_reverse(step_fn, params, np.arange(T - 1, -1, -1), window, spec, x_init, keys)

  return sample_chunk


def ddim_timesteps(T: int, num_steps: int) -> np.ndarray:
  """Evenly spaced DDIM timesteps, descending, always ending at 0."""
  num_steps = T if num_steps in (0, None) else num_steps
  ts = np.unique(np.round(np.linspace(0, T - 1, num_steps)).astype(np.int64))
  return ts[::-1]


@register_sampler("ddim")
def _ddim(schedule: diffusion.Schedule, eps_fn: EpsFn, spec: SamplerSpec):
  """DDIM (Song et al., 2021) over a subset of timesteps; ``eta=0`` is deterministic."""
  T = schedule.timesteps
  ts = ddim_timesteps(T, spec.num_steps)
  window = min(spec.window, len(ts))
  def step_fn(params, x, t, t_prev, i, keys):
    tb = jnp.full((1,), t, jnp.int32)  # one t for the chunk: the embedding is computed once
    eps = eps_fn(params, x, tb)
    x0_hat = _maybe_clip(diffusion.x0_from_eps(schedule, x, t, eps), spec.clip_x0)
    if spec.clip_x0 is not None:
      eps = diffusion.eps_from_x0(schedule, x, t, x0_hat)
    a_t = schedule.alphas_bar[t]
    a_prev = jnp.where(t_prev >= 0, schedule.alphas_bar[jnp.maximum(t_prev, 0)], 1.0)
    sigma = spec.eta * jnp.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    noise = _per_sample_normal(keys, i + 1, spec.shape)
    x_next = (jnp.sqrt(a_prev) * x0_hat + jnp.sqrt(jnp.maximum(1 - a_prev - sigma ** 2, 0.0)) * eps
              + sigma * noise)
    return x_next, x0_hat

  def sample_chunk(params, key, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    x_init = _per_sample_normal(keys, 0, spec.shape)
    return _scan_reverse(step_fn, params, ts, window, spec, x_init, keys)

  return sample_chunk


def concat(outputs):
  """Concatenates :class:`SampleOutput` s along the sample axis."""
  def cat(*xs):
    return None if xs[0] is None else np.concatenate(xs, axis=0)
  return SampleOutput(*(cat(*[getattr(o, f) for o in outputs]) for f in SampleOutput._fields))


def sample(sample_chunk_jit, params, key, num_samples: int, chunk_size: int,
           start_index: int = 0, progress: Optional[Callable] = None, index_sharding=None):
  """Draws ``num_samples`` samples (global indices ``start_index, ...``) in
  fixed-size chunks with a jitted chunk function.

  The last chunk is padded to ``chunk_size`` (so the function is traced once)
  and the padding dropped. Returns a :class:`SampleOutput` of numpy arrays.
  """
  outs = []
  for c in range(math.ceil(num_samples / chunk_size)):
    lo = start_index + c * chunk_size
    idx = np.arange(lo, lo + chunk_size, dtype=np.int32)
    idx = jnp.asarray(idx) if index_sharding is None else jax.device_put(idx, index_sharding)
    outs.append(jax.tree.map(sharding.to_host, sample_chunk_jit(params, key, idx)))
    if progress is not None:
      progress(min((c + 1) * chunk_size, num_samples), num_samples)
  out = concat(outs)
  return SampleOutput(*(None if x is None else x[:num_samples] for x in out))
