"""Reverse-process samplers: the whole chain in one ``lax.scan``.

A sampler is built once by :func:`get_sampling_fn` (a registry keyed by name,
in the style of score_sde) and returns a pure function

    sample_chunk(params, key, indices) -> SampleOutput

that draws one sample per entry of ``indices`` (global sample indices). Each
sample's randomness is ``fold_in(key, index)``, so a sample does not depend on
the chunk it is drawn in, nor on how a chunk is split over devices.

Inside the scan the *trajectory variance* is accumulated in streaming form
(Welford): the variance of the predicted ``x0`` over the last ``window`` reverse
steps (the paper's score), or over the timesteps ``t_lo <= t <= t_hi`` anywhere in
the trajectory when those are set, reduced over dimensions by
``SamplerSpec.reduction`` (the mean, as in the paper, or the max). Memory is
O(N * D), independent of ``T``.

For detection studies, ``SamplerSpec.study_windows`` asks for per-pixel variances
over several windows at once, of several *sources* (the predicted x0, x0 on the
clipped, quantised 0..255 scale, and the predicted noise eps): W windows x S sources
of Welford statistics live in the scan carry (O(S * W * N * D), still independent
of ``T``), and the output's ``window_variance`` holds the per-pixel maps.

DDIM can take ancestral (stochastic, DDPM-like) steps near the end of its chain:
``SamplerSpec.stochastic_last = k`` runs its last ``k`` reverse steps at ``eta = 1`` (the
DDPM posterior variance), the others at ``SamplerSpec.eta`` (Ashiq et al., 2026, "Why DDIM
Hallucinates More Than DDPM", arXiv:2605.06831: a few stochastic steps after the critical
time let a trajectory leave the segment between two modes). ``k = 0`` is plain DDIM, and
``k`` = every step over all ``T`` timesteps is the DDPM update with the posterior
(fixed-small) variance.

Every ``sample_chunk`` also takes an optional ``x_init`` (the starting noise, one row per
index) in place of the noise it would draw itself, e.g. to run the deterministic sampler
from perturbed starting points (:mod:`mode_interp.detectors`).
"""

import dataclasses
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
  samples: jax.Array  # [B, *shape]
  traj_variance: jax.Array  # [B]: mean (or max) over dims of Var(x0_hat) over the window
  x0_trajectory: Optional[jax.Array] = None  # [B, K, *shape] every `traj_stride` steps, if asked
  # [B, S, W, *shape]: per-pixel variance of source s over study window w, if asked
  window_variance: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """What every sampler needs besides the network."""

  shape: tuple  # shape of one sample, e.g. (2,) or (32, 32, 1)
  window: int = 10  # trajectory-variance window, in reverse steps of this sampler
  variance: str = "fixed_large"  # DDPM only
  num_steps: int = 0  # DDIM only: number of reverse steps (0 -> all T)
  eta: float = 0.0  # DDIM only
  clip_x0: Optional[float] = None  # clip predicted x0 to [-c, c] (images); None for toy data
  traj_stride: int = 0  # >0: also return x0_hat every `traj_stride` steps (for plots)
  reduction: str = "mean"  # how the per-dimension variances become one score per sample
  # The main window by timesteps, inclusive: t_lo <= t <= t_hi (anywhere in the trajectory).
  # -1 (both): the last `window` reverse steps, the paper's score.
  t_lo: int = -1
  t_hi: int = -1
  # Detection studies: ((t_lo, t_hi), ...) windows (timesteps, inclusive) over which the
  # per-pixel variance of every source in `study_sources` is accumulated.
  study_windows: tuple = ()
  study_sources: tuple = ("x0", "x0_u8", "eps")
  # DDIM only: the last `stochastic_last` reverse steps are ancestral (eta = 1), the others
  # use `eta`; 0: plain DDIM.
  stochastic_last: int = 0


REDUCTIONS = ("mean", "max")
# What a study window's variance is taken of: the predicted x0 as the sampler uses it
# (clipped to [-clip_x0, clip_x0] for images), x0 mapped to 0..255 (clipped, rounded to
# integers, as an 8-bit image), and the network's predicted noise.
SOURCES = ("x0", "x0_u8", "eps")


def window_mask(ts, window: int, t_lo: int = -1, t_hi: int = -1) -> np.ndarray:
  """Which of the reverse steps ``ts`` (descending timesteps) a window holds, as a bool mask.

  ``t_lo = t_hi = -1``: the last ``window`` steps (capped at all of them); otherwise the
  steps with ``t_lo <= t <= t_hi``. Raises ``ValueError`` (naming ``t_lo`` / ``t_hi``
  and the allowed range) for a window outside ``[0, T)`` where ``T = ts[0] + 1``, or one
  that holds none of the steps.
  """
  ts = np.asarray(ts)
  n = len(ts)
  if t_lo == -1 and t_hi == -1:
    return np.arange(n) >= n - min(window, n)
  T = int(ts.max()) + 1
  if not (0 <= t_lo < T):
    raise ValueError(f"t_lo={t_lo} is outside the timesteps [0, {T - 1}] (or set both to -1)")
  if not (t_lo <= t_hi < T):
    raise ValueError(f"t_hi={t_hi} must lie in [t_lo={t_lo}, {T - 1}] (or set both to -1)")
  mask = (ts >= t_lo) & (ts <= t_hi)
  if not mask.any():
    raise ValueError(
      f"the window t_lo={t_lo}..t_hi={t_hi} holds none of the sampler's {n} reverse timesteps"
    )
  return mask


def reverse_timesteps(name: str, T: int, num_steps: int = 0) -> np.ndarray:
  """The descending timesteps sampler ``name`` visits."""
  return np.arange(T - 1, -1, -1) if name == "ddpm" else ddim_timesteps(T, num_steps)


_SAMPLERS = {}


def register_sampler(name):
  """Registers a sampler factory under ``name``; a name already taken is refused (a second
  registration would silently replace the first for every caller)."""
  if name in _SAMPLERS:
    raise ValueError(
      f"a sampler named {name!r} is already registered "
      f"({_SAMPLERS[name].__module__}.{_SAMPLERS[name].__qualname__}); "
      f"registered: {', '.join(sampler_names())}; choose another name"
    )

  def deco(fn):
    if name in _SAMPLERS:  # registered between the call and the decoration
      raise ValueError(f"a sampler named {name!r} is already registered; choose another name")
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
  bad = [s for s in spec.study_sources if s not in SOURCES]
  if bad:
    raise ValueError(f"unknown study source {bad[0]!r}; allowed: {', '.join(SOURCES)}")
  ts = reverse_timesteps(name, schedule.timesteps, spec.num_steps)
  window_mask(ts, spec.window, spec.t_lo, spec.t_hi)  # validates the main window
  k = spec.stochastic_last
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= len(ts):
    raise ValueError(
      f"stochastic_last={k!r} must be an integer in [0, {len(ts)}] (the "
      f"{len(ts)} reverse steps of sampler {name!r})"
    )
  if k and name != "ddim":
    raise ValueError(
      f"stochastic_last={k} is for the 'ddim' sampler (every 'ddpm' step is "
      f"already stochastic); use 0 with {name!r}"
    )
  for lo, hi in spec.study_windows:
    window_mask(ts, 0, int(lo), int(hi))
  return _SAMPLERS[name](schedule, eps_fn, spec)


def per_sample_normal(keys, step, shape):
  """One standard normal of ``shape`` per sample key, for reverse step ``step``."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape))(keys)


class Welford(NamedTuple):
  count: jax.Array  # scalar
  mean: jax.Array  # [B, *shape]
  m2: jax.Array  # [B, *shape]


def welford_init(x):
  return Welford(jnp.zeros((), jnp.float32), jnp.zeros_like(x), jnp.zeros_like(x))


def welford_update(w: Welford, x, include):
  """Adds ``x`` to the running statistics when ``include`` (a traced bool) holds."""
  inc = include.astype(jnp.float32)
  count = w.count + inc
  delta = x - w.mean
  mean = w.mean + inc * delta / jnp.maximum(count, 1.0)
  m2 = w.m2 + inc * delta * (x - mean)
  return Welford(count, mean, m2)


def welford_update_windows(w: Welford, x, include):
  """Like :func:`welford_update` for stacked windows: ``w.count`` is ``[W]``, ``w.mean`` and
  ``w.m2`` are ``[S, W, *x.shape[1:]]``, ``x`` is ``[S, *...]`` (one value per source) and
  ``include`` a ``[W]`` bool (the step lies in window ``w``)."""
  inc = include.astype(jnp.float32)
  count = w.count + inc
  bshape = (1, -1) + (1,) * (x.ndim - 1)
  incb = inc.reshape(bshape)
  xb = x[:, None]
  delta = xb - w.mean
  mean = w.mean + incb * delta / jnp.maximum(count, 1.0).reshape(bshape)
  m2 = w.m2 + incb * delta * (xb - mean)
  return Welford(count, mean, m2)


def to_uint8_scale(x0):
  """x0 in [-1, 1] on the 0..255 scale of an 8-bit image: clipped, rounded to integers."""
  return jnp.round(jnp.clip((x0 + 1.0) * 127.5, 0.0, 255.0))


def _source_values(sources, x0_hat, eps):
  vals = {"x0": lambda: x0_hat, "x0_u8": lambda: to_uint8_scale(x0_hat), "eps": lambda: eps}
  return jnp.stack([vals[s]().astype(jnp.float32) for s in sources], axis=0)


def welford_variance(w: Welford, reduction: str = "mean"):
  """Population variance (numpy's ``ddof=0``), reduced over every non-batch axis by
  ``reduction``: ``mean`` (the paper's score) or ``max`` (the most uncertain pixel)."""
  var = (w.m2 / jnp.maximum(w.count, 1.0)).reshape(w.m2.shape[0], -1)
  return jnp.max(var, axis=1) if reduction == "max" else jnp.mean(var, axis=1)


def scan_reverse(step_fn, params, ts, window, spec, x_init, keys):
  """Runs ``step_fn`` over the reverse timesteps ``ts`` (descending) in one scan.

  ``step_fn(params, x, t, t_prev, i, keys) -> (x_next, x0_hat, eps)`` where ``i`` is the
  step number (0 = first reverse step). The x0 estimates of the main window (the last
  ``window`` steps, or ``spec.t_lo <= t <= spec.t_hi``) feed the streaming variance;
  those of every study window (and the eps predictions) feed the study's statistics.
  """
  n = len(ts)
  ts_arr = jnp.asarray(ts, jnp.int32)
  ts_prev = jnp.asarray(np.append(ts[1:], -1), jnp.int32)
  in_main = jnp.asarray(window_mask(ts, window, spec.t_lo, spec.t_hi))
  study = tuple((int(lo), int(hi)) for lo, hi in spec.study_windows)
  sources = tuple(spec.study_sources)
  if study:
    in_study = jnp.asarray(np.stack([window_mask(ts, 0, lo, hi) for lo, hi in study], axis=1))
  else:
    in_study = jnp.zeros((n, 0), bool)
  stride = spec.traj_stride
  # With a stride, x0 of every `stride`-th step (and of the last) is written into a buffer
  # carried by the scan: memory O(K * N * D) for the K kept steps, never O(T * N * D).
  kept = np.unique(np.append(np.arange(0, n, stride), n - 1)) if stride else np.zeros(0, int)
  slot_of = np.full(n, -1, np.int32)
  slot_of[kept] = np.arange(len(kept), dtype=np.int32)

  def body(carry, inp):
    x, w, ws, buf = carry
    i, t, t_prev, slot, inc_main, inc_study = inp
    x_next, x0_hat, eps = step_fn(params, x, t, t_prev, i, keys)
    w = welford_update(w, x0_hat, inc_main)
    if study:
      ws = welford_update_windows(ws, _source_values(sources, x0_hat, eps), inc_study)
    if stride:
      k = jnp.maximum(slot, 0)
      buf = jax.lax.dynamic_update_index_in_dim(buf, jnp.where(slot >= 0, x0_hat, buf[k]), k, 0)
    return (x_next, w, ws, buf), None

  buf0 = jnp.zeros((len(kept),) + x_init.shape, x_init.dtype) if stride else None
  ws0 = None
  if study:
    zeros = jnp.zeros((len(sources), len(study)) + x_init.shape, jnp.float32)
    ws0 = Welford(jnp.zeros((len(study),), jnp.float32), zeros, zeros)
  (x, w, ws, traj), _ = jax.lax.scan(
    body,
    (x_init, welford_init(x_init), ws0, buf0),
    (jnp.arange(n), ts_arr, ts_prev, jnp.asarray(slot_of), in_main, in_study),
  )
  traj = jnp.swapaxes(traj, 0, 1) if stride else None  # [B, K, ...]
  wvar = None
  if study:
    cnt = jnp.maximum(ws.count, 1.0).reshape((1, -1) + (1,) * x_init.ndim)
    wvar = jnp.moveaxis(ws.m2 / cnt, 2, 0)  # [B, S, W, *shape]
  return SampleOutput(x, welford_variance(w, spec.reduction), traj, wvar)


def _maybe_clip(x0, clip):
  return x0 if clip is None else jnp.clip(x0, -clip, clip)


@register_sampler("ddpm")
def _ddpm(schedule: diffusion.Schedule, eps_fn: EpsFn, spec: SamplerSpec):
  """Ancestral sampling with fixed-large, fixed-small or learned variance (the network's
  second output: ``eps_fn.with_variance``, see :func:`mode_interp.pipeline.eps_fn_for`), all
  T steps."""
  T = schedule.timesteps
  window = min(spec.window, T)
  learned = spec.variance == "learned"
  if not learned:  # validates the name
    diffusion.model_log_variance(schedule, 0, jnp.zeros(()), spec.variance)
  if learned and not hasattr(eps_fn, "with_variance"):
    raise ValueError("variance='learned' needs a learned-variance network (model.learn_sigma)")

  def step_fn(params, x, t, t_prev, i, keys):
    del t_prev
    tb = jnp.full((1,), t, jnp.int32)  # one t for the chunk: the embedding is computed once
    eps, v = eps_fn.with_variance(params, x, tb) if learned else (eps_fn(params, x, tb), None)
    x0_hat = _maybe_clip(diffusion.x0_from_eps(schedule, x, t, eps), spec.clip_x0)
    mean, _, _ = diffusion.posterior_mean_variance(schedule, x0_hat, x, t)
    logvar = diffusion.model_log_variance(schedule, t, x, spec.variance, v)
    noise = per_sample_normal(keys, i + 1, spec.shape)
    x_next = mean + jnp.where(t > 0, jnp.exp(0.5 * logvar), 0.0) * noise
    return x_next, x0_hat, eps

  def sample_chunk(params, key, indices, x_init=None):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    if x_init is None:
      x_init = per_sample_normal(keys, 0, spec.shape)
    return scan_reverse(step_fn, params, reverse_timesteps("ddpm", T), window, spec, x_init, keys)

  return sample_chunk


def tile_counts(n: int, rows: int) -> tuple:
  """``(tiles, rows per tile)`` of :func:`row_tiled` for ``n`` samples in tiles of at most
  ``rows`` (``rows`` <= 0: one tile of all ``n``)."""
  if rows <= 0 or n <= rows:
    return 1, n
  k = -(-n // rows)
  return k, -(-n // k)


def row_tiled(sample_chunk, rows: int):
  """``sample_chunk`` run over tiles of at most ``rows`` samples, one tile after another.

  Every sample depends only on its own index, so the result is the same function; what
  changes is the working set. On a CPU the toy network's activations for 2,000 rows
  (128 floats each, 1 MB) stay in a core's cache; at 10,000 rows they do not, and a
  reverse step costs 2.6x more per sample (measured on a 2-core AMD EPYC: 2.2 us per row
  up to 2,000 rows, 5.7 us from 8,000 on). The chunk is padded to a whole number of
  equal tiles with copies of its last index; the copies are dropped.
  """
  if rows <= 0:
    return sample_chunk

  def tiled(params, key, indices):
    n = indices.shape[0]
    if n <= rows:
      return sample_chunk(params, key, indices)
    k, r = tile_counts(n, rows)
    pad = k * r - n
    idx = jnp.concatenate([indices, jnp.broadcast_to(indices[-1:], (pad,))]) if pad else indices
    out = jax.lax.map(lambda i: sample_chunk(params, key, i), idx.reshape(k, r))
    return jax.tree.map(lambda a: a.reshape((k * r,) + a.shape[2:])[:n], out)

  return tiled


def ddim_timesteps(T: int, num_steps: int) -> np.ndarray:
  """Evenly spaced DDIM timesteps, descending, always ending at 0."""
  num_steps = T if num_steps in (0, None) else num_steps
  ts = np.unique(np.round(np.linspace(0, T - 1, num_steps)).astype(np.int64))
  return ts[::-1]


def ddim_etas(num_steps: int, eta: float, stochastic_last: int = 0) -> np.ndarray:
  """Per-step eta of a DDIM chain of ``num_steps`` reverse steps: ``eta``, and 1 (the
  ancestral, DDPM-like step) for the last ``stochastic_last``."""
  etas = np.full(num_steps, float(eta), np.float64)
  if stochastic_last:
    etas[num_steps - stochastic_last :] = 1.0
  return etas


def ddim_coefficients(schedule: diffusion.Schedule, ts, eta):
  """Per-step ``(sqrt(a_prev), sqrt(1 - a_prev - sigma^2), sigma)`` of DDIM over the
  descending timesteps ``ts``, computed in float64 from log alpha-bar. ``eta`` is one
  number or one per step (:func:`ddim_etas`).

  In float32, alpha-bar of a steep schedule underflows (the toy schedule's betas rise to
  0.2: alpha-bar at t = 999 is about e^-113), and ``a_t / a_prev`` becomes 0/0; in log
  space the ratio, and so ``sigma``, stay exact.
  """
  log_ab = np.cumsum(np.log1p(-np.asarray(schedule.betas, np.float64)))
  ts = np.asarray(ts)
  ts_prev = np.append(ts[1:], -1)
  log_a_t = log_ab[ts]
  log_a_prev = np.where(ts_prev >= 0, log_ab[np.maximum(ts_prev, 0)], 0.0)
  a_t, a_prev = np.exp(log_a_t), np.exp(log_a_prev)
  ratio = np.exp(log_a_t - log_a_prev)  # a_t / a_prev
  sigma = np.asarray(eta, np.float64) * np.sqrt(
    np.maximum((1 - a_prev) / (1 - a_t) * (1 - ratio), 0.0)
  )
  return np.sqrt(a_prev), np.sqrt(np.maximum(1 - a_prev - sigma**2, 0.0)), sigma


@register_sampler("ddim")
def _ddim(schedule: diffusion.Schedule, eps_fn: EpsFn, spec: SamplerSpec):
  """DDIM (Song et al., 2021) over a subset of timesteps; ``eta=0`` is deterministic. The
  last ``spec.stochastic_last`` steps run at ``eta = 1`` (ancestral steps)."""
  T = schedule.timesteps
  ts = ddim_timesteps(T, spec.num_steps)
  window = min(spec.window, len(ts))
  coefs = ddim_coefficients(schedule, ts, ddim_etas(len(ts), spec.eta, spec.stochastic_last))
  # A deterministic chain (every sigma 0) draws no step noise: it would be multiplied by 0.
  stochastic = bool(np.any(coefs[2] > 0))
  c_x0, c_eps, c_noise = (jnp.asarray(c, jnp.float32) for c in coefs)

  def step_fn(params, x, t, t_prev, i, keys):
    del t_prev
    tb = jnp.full((1,), t, jnp.int32)  # one t for the chunk: the embedding is computed once
    eps_pred = eps = eps_fn(params, x, tb)
    x0_hat = _maybe_clip(diffusion.x0_from_eps(schedule, x, t, eps), spec.clip_x0)
    if spec.clip_x0 is not None:
      eps = diffusion.eps_from_x0(schedule, x, t, x0_hat)
    x_next = c_x0[i] * x0_hat + c_eps[i] * eps
    if stochastic:
      x_next = x_next + c_noise[i] * per_sample_normal(keys, i + 1, spec.shape)
    return x_next, x0_hat, eps_pred

  def sample_chunk(params, key, indices, x_init=None):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    if x_init is None:
      x_init = per_sample_normal(keys, 0, spec.shape)
    return scan_reverse(step_fn, params, ts, window, spec, x_init, keys)

  return sample_chunk


def concat(outputs):
  """Concatenates :class:`SampleOutput` s along the sample axis."""

  def cat(*xs):
    return None if xs[0] is None else np.concatenate(xs, axis=0)

  return SampleOutput(*(cat(*[getattr(o, f) for o in outputs]) for f in SampleOutput._fields))


def sample(
  sample_chunk_jit,
  params,
  key,
  num_samples: int,
  chunk_size: int,
  start_index: int = 0,
  progress: Optional[Callable] = None,
  index_sharding=None,
):
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
