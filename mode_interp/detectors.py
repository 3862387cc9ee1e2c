"""Hallucination detectors that followed the paper, and a sampling-time correction, as pure
functions of a network (``eps_fn(params, x_t, t)``), a schedule and arrays.

Every detector gives one score per sample, oriented so that a *high* score flags a
hallucination; :func:`held_out_evaluation` picks its thresholds on one half of the samples
and reports them on the other. Costs are counted in network passes per sample
(:data:`COST_CONVENTION`).

- **Trajectory variance** (Aithal et al., 2024): computed by the sampler in its scan
  (:mod:`mode_interp.samplers`); nothing here.
- **Manifold instability** (Sobieski et al., 2026, "Local Intrinsic Dimension Unveils
  Hallucinations in Diffusion Models", arXiv:2605.05026): the trace of the covariance of the
  deterministic sampler's output when its starting noise is perturbed
  (:func:`manifold_instability_sampler`, :func:`output_spread`); and the same paper's local
  intrinsic dimension read from the denoising loss at a small ``t``
  (:func:`lid_denoising_loss`).
- **FLIPD** (Kamkari et al., 2024, arXiv:2406.03537): :func:`flipd`.
- **Re-noising consistency**: :func:`renoise_spread`.
- **Oracle** (Gaussian mixtures only): :func:`oracle_out_of_band`.
- **Intrinsic Quenching** (arXiv:2605.05026): :func:`iq_eps_fn`, a score correction that
  pushes the LID estimate down inside a window of timesteps, with thresholds from
  :func:`iq_thresholds`.

Only the abstracts of arXiv:2605.05026 and arXiv:2605.06831 could be read here (stored
copies of public pages); where a choice had to be made it is marked ``Choice:`` below.
FLIPD follows the paper's estimator and the authors' public code (the score evaluated at
``psi(t0) x``, the datum scaled by the forward process, without added noise).

Nothing here imports ``experiments/`` or ``configs/``; numpy-only functions say so.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from mode_interp import diffusion, hallucination, samplers, trajectory_scores

EpsFn = Callable[..., jax.Array]

NAMES = ("trajectory_variance", "manifold_instability", "lid_loss", "flipd", "renoise", "oracle")
PERTURBATION_DESIGNS = ("gaussian", "orthogonal")
TRACE_METHODS = ("exact", "hutchinson")
COST_CONVENTION = (
  "network passes per sample: a forward evaluation, each forward-mode "
  "(JVP) tangent and each reverse sweep (VJP) count one each"
)


def _dim(x) -> int:
  return int(np.prod(x.shape[1:]))


def _tvec(t, n=1):
  return jnp.full((n,), t, jnp.int32)


def _coefs(schedule: diffusion.Schedule, t):
  """``(psi, sigma)`` of ``x_t = psi x0 + sigma eps`` at timestep ``t``."""
  return schedule.sqrt_alphas_bar[t], schedule.sqrt_one_minus_alphas_bar[t]


# -- the divergence of the network ---------------------------------------------------------


def eps_and_trace(
  eps_fn: EpsFn, params, x, t, method: str = "exact", key=None, num_probes: int = 1
):
  """``eps(x)`` ``[B, ...]`` and ``tr(d eps / d x)`` ``[B]`` per row at timestep ``t``.

  ``exact``: the per-row Jacobian by ``jax.jacfwd`` (D forward-mode tangents per row, for
  low dimension). ``hutchinson``: ``mean_p v_p . (J v_p)`` over ``num_probes`` Rademacher
  probes ``v_p`` drawn from ``key`` (one JVP each; rows are independent, so one JVP of the
  batched network gives every row's ``J v``).
  """
  shape = x.shape[1:]
  tb = _tvec(t)
  if method == "exact":

    def single(xi):
      return eps_fn(params, xi[None], tb)[0]

    def both(xi):
      jac = jax.jacfwd(single)(xi).reshape(math.prod(shape), math.prod(shape))
      return single(xi), jnp.trace(jac)

    return jax.vmap(both)(x)
  if method == "hutchinson":
    f = lambda xx: eps_fn(params, xx, tb)
    eps = f(x)
    probes = jax.random.rademacher(key, (num_probes,) + x.shape, jnp.float32)

    def one(v):
      _, jv = jax.jvp(f, (x,), (v,))
      return jnp.sum((v * jv).reshape(x.shape[0], -1), axis=1)

    return eps, jnp.mean(jax.lax.map(one, probes), axis=0)
  raise ValueError(f"unknown trace method {method!r}; allowed: {', '.join(TRACE_METHODS)}")


def trace_method(dim: int, hutchinson_above: int) -> str:
  """The exact trace up to ``hutchinson_above`` dimensions, Hutchinson's estimate above."""
  return "exact" if dim <= hutchinson_above else "hutchinson"


def trace_cost(dim: int, method: str, num_probes: int) -> int:
  """Network passes of :func:`eps_and_trace` for one row (the primal comes with the JVPs)."""
  return dim if method == "exact" else 1 + num_probes


# -- FLIPD ---------------------------------------------------------------------------------


def flipd(
  eps_fn: EpsFn,
  params,
  schedule: diffusion.Schedule,
  x,
  t0: int,
  method: str = "exact",
  key=None,
  num_probes: int = 1,
):
  """FLIPD (Kamkari et al., 2024, arXiv:2406.03537, eq. (10) for the variance-preserving
  process) of each sample ``x`` ``[B, ...]`` at timestep ``t0``:

      FLIPD(x, t0) = D + sigma(t0)^2 [ tr grad s(psi(t0) x, t0) + |s(psi(t0) x, t0)|^2 ]

  with ``x_t = psi x0 + sigma eps`` and the score ``s = -eps / sigma`` of the marginal at
  ``t0``, evaluated at the datum scaled by the forward process, ``psi(t0) x``, without added
  noise (as the authors' code does). In terms of the network's noise prediction this is
  ``D - sigma tr(d eps / d y) + |eps|^2`` at ``y = psi x``. Where the data lie on a
  ``d``-dimensional affine piece it tends to ``d`` as ``t0 -> 0``; off the data (between
  modes) it exceeds ``D``. Sign: as in the paper (high = more intrinsic dimension = flagged).
  """
  psi, sigma = _coefs(schedule, t0)
  eps, tr = eps_and_trace(eps_fn, params, psi * x, t0, method, key, num_probes)
  sq = jnp.sum(eps.reshape(x.shape[0], -1) ** 2, axis=1)
  return _dim(x) - sigma * tr + sq


def lid_at(
  eps_fn: EpsFn,
  params,
  schedule: diffusion.Schedule,
  x_t,
  t: int,
  method: str = "exact",
  key=None,
  num_probes: int = 1,
):
  """The FLIPD form of the local intrinsic dimension at the *noisy* point ``x_t`` itself
  (``D - sigma_t tr(d eps/d x_t) + |eps(x_t)|^2``): what Intrinsic Quenching reads along the
  reverse chain (:func:`iq_eps_fn`)."""
  _, sigma = _coefs(schedule, t)
  eps, tr = eps_and_trace(eps_fn, params, x_t, t, method, key, num_probes)
  return _dim(x_t) - sigma * tr + jnp.sum(eps.reshape(x_t.shape[0], -1) ** 2, axis=1), eps


# -- the denoising loss as an LID estimate -------------------------------------------------


def lid_denoising_loss(
  eps_fn: EpsFn, params, schedule: diffusion.Schedule, x, t: int, key, num_draws: int
):
  """``mean_j |eps(psi x + sigma e_j, t) - e_j|^2`` over ``num_draws`` noise draws ``e_j``
  (summed over dimensions): the denoising loss of each sample at a small ``t``.

  At small noise the ideal denoiser recovers the noise's components normal to the data and
  none of those along it, so this loss counts the data's local dimensions (tends to the LID;
  Yeats et al., 2025, arXiv:2510.12975). Choice: arXiv:2605.05026 reads LID from the
  denoising loss; its exact estimator (weighting, t) could not be read, so this is the plain
  eps-prediction loss at one ``t``, averaged over draws. High = flagged.
  """
  psi, sigma = _coefs(schedule, t)
  tb = _tvec(t)

  def one(k):
    e = jax.random.normal(k, x.shape, x.dtype)
    err = eps_fn(params, psi * x + sigma * e, tb) - e
    return jnp.sum(err.reshape(x.shape[0], -1) ** 2, axis=1)

  return jnp.mean(jax.lax.map(one, jax.random.split(key, num_draws)), axis=0)


# -- re-noising consistency ----------------------------------------------------------------


def renoise_spread(
  eps_fn: EpsFn, params, schedule: diffusion.Schedule, x, t: int, key, num_draws: int
):
  """Noise each sample to timestep ``t`` ``num_draws`` times and predict x0 from each (one
  network call each); the spread is the trace of the variance of those predictions
  (population variance over draws, summed over dimensions). A sample between modes is
  pulled to different modes by different draws. High = flagged."""
  psi, sigma = _coefs(schedule, t)
  tb = _tvec(t)

  def one(k):
    e = jax.random.normal(k, x.shape, x.dtype)
    xt = psi * x + sigma * e
    return diffusion.x0_from_eps(schedule, xt, tb, eps_fn(params, xt, tb))

  x0s = jax.lax.map(one, jax.random.split(key, num_draws))  # [J, B, ...]
  return jnp.sum(jnp.var(x0s, axis=0).reshape(x.shape[0], -1), axis=1)


# -- manifold instability ------------------------------------------------------------------


def perturbations(key, num: int, shape, design: str = "gaussian"):
  """``[num, *shape]`` perturbation directions of the starting noise.

  ``gaussian``: standard normal draws. ``orthogonal``: ``+-sqrt(D) Q e_j`` for a random
  rotation ``Q`` per block of ``2 D`` (``num`` a multiple of ``2 D``): the directions sum to
  zero and their second moment is exactly the identity, so :func:`output_spread` of a
  linear map is exact (``delta^2 tr(A A^T)``) with as few as ``2 D`` runs."""
  d = math.prod(shape)
  if design == "gaussian":
    return jax.random.normal(key, (num,) + tuple(shape))
  if design == "orthogonal":
    if num % (2 * d):
      raise ValueError(
        f"the orthogonal design needs a multiple of 2 * D = {2 * d} perturbations, got {num}"
      )
    blocks = []
    for k in jax.random.split(key, num // (2 * d)):
      q, r = jnp.linalg.qr(jax.random.normal(k, (d, d)))
      q = q * jnp.sign(jnp.diag(r))[None]  # Haar-distributed rotation
      cols = math.sqrt(d) * q.T  # rows: sqrt(D) Q e_j
      blocks += [cols, -cols]
    return jnp.concatenate(blocks).reshape((num,) + tuple(shape))
  raise ValueError(
    f"unknown perturbation design {design!r}; allowed: {', '.join(PERTURBATION_DESIGNS)}"
  )


def output_spread(outputs, design: str = "gaussian"):
  """Trace of the covariance over perturbations of ``outputs`` ``[B, M, ...]``: the unbiased
  sample covariance (``ddof = 1``) for the Gaussian design, the population one for the
  orthogonal design (whose directions have mean zero and identity second moment)."""
  x = outputs.reshape(outputs.shape[0], outputs.shape[1], -1)
  ddof = 1 if design == "gaussian" else 0
  return jnp.sum(jnp.var(x, axis=1, ddof=ddof), axis=1)


def manifold_instability_sampler(
  sample_chunk, shape, num: int, scale: float, pert_key, design: str = "gaussian"
):
  """A ``chunk(params, key, indices) -> SampleOutput(outputs [B, M, *shape], score [B])``
  (a sampler-shaped function, so it runs, shards and caches as samplers do) for a
  deterministic ``sample_chunk`` (DDIM, ``eta = 0``, which accepts ``x_init``): the starting
  noise of sample ``i`` (drawn from ``key`` as the sampler draws it) is perturbed by
  ``scale`` times ``num`` directions (:func:`perturbations`, from ``fold_in(pert_key, i)``),
  each perturbed start is run through the sampler, and the score is the trace of the
  covariance of the outputs (:func:`output_spread`).

  Choice: arXiv:2605.05026 describes the filter as instability of the output under small
  perturbations of the starting noise; the perturbation size, count and design are this
  implementation's (config fields), the output is the final sample.
  """
  shape = tuple(shape)

  def chunk(params, key, indices):
    b = indices.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape))(keys)
    dirs = jax.vmap(lambda i: perturbations(jax.random.fold_in(pert_key, i), num, shape, design))(
      indices
    )  # [B, M, *shape]
    starts = (z[:, None] + scale * dirs).reshape((b * num,) + shape)
    rep = jnp.repeat(indices, num)
    out = sample_chunk(params, key, rep, starts).samples.reshape((b, num) + shape)
    return samplers.SampleOutput(out, output_spread(out, design))

  return chunk


# -- the oracle (numpy) --------------------------------------------------------------------


def oracle_out_of_band(
  samples, means, std: float, psi: float, sigma: float, k_sigma: float = 4.0, weights=None
) -> np.ndarray:
  """For a Gaussian mixture ``sum_k w_k N(mu_k, s^2 I)`` (the true data), the probability
  under the exact posterior ``p(x0 | x_t = psi x)`` that ``x0`` lies outside every mode's
  ``k_sigma * s`` ball, for each sample ``x`` (numpy, float64).

  What this means for a sample (a choice): the sample ``x`` is read as the forward process
  would show a datum at noise level ``t`` (``psi = sqrt(alpha_bar_t)``, ``sigma =
  sqrt(1 - alpha_bar_t)``), i.e. the observation ``y = psi x`` without added noise, as
  FLIPD reads it; the oracle is the true mixture's posterior probability that the datum
  behind that observation is a hallucination by the 4-std rule. It is what a detector that
  knows the exact density at noise level ``t`` can know, an upper reference for detectors
  that read the score at ``t``; as ``t -> 0`` it tends to the rule itself. Each component's
  posterior is ``N(m_k, c^2 I)`` with ``c^2 = s^2 sigma^2 / (sigma^2 + psi^2 s^2)``, the
  probability of a ball is a noncentral chi-square CDF; the balls must be disjoint.
  """
  x = np.asarray(samples, np.float64)
  n = len(x)
  x = x.reshape(n, -1)
  mu = np.asarray(means, np.float64).reshape(len(means), -1)
  kk, d = mu.shape
  r = k_sigma * std
  gaps = np.sqrt(((mu[:, None] - mu[None]) ** 2).sum(-1))[~np.eye(kk, dtype=bool)]
  if kk > 1 and gaps.min() <= 2 * r:
    raise ValueError(
      f"the {k_sigma}-std balls of the modes overlap (closest modes "
      f"{gaps.min():.3g} apart, radius {r:.3g}); the oracle sums disjoint balls"
    )
  w = np.full(kk, 1.0 / kk) if weights is None else np.asarray(weights, np.float64)
  y = psi * x
  v = psi**2 * std**2 + sigma**2
  logits = -0.5 * ((y[:, None] - psi * mu[None]) ** 2).sum(-1) / v + np.log(w)[None]
  resp = np.exp(logits - logits.max(1, keepdims=True))
  resp /= resp.sum(1, keepdims=True)  # [N, K]
  c2 = std**2 * sigma**2 / v
  c = math.sqrt(c2)
  m = (mu[None] / std**2 + psi * y[:, None] / sigma**2) * c2  # [N, K, D]
  p_in = np.zeros(n)
  # Only components with weight and balls within reach contribute: evaluate those.
  ni, ki = np.nonzero(resp > 1e-300)
  dist2 = ((m[ni, ki][:, None] - mu[None]) ** 2).sum(-1)  # [P, K(balls)]
  pi, ji = np.nonzero(np.sqrt(dist2) < r + 40 * c)
  if len(pi):
    nc = dist2[pi, ji] / c2
    q = r**2 / c2
    cdf = np.where(nc < 1e-12, stats.chi2.cdf(q, d), stats.ncx2.cdf(q, d, np.maximum(nc, 1e-12)))
    np.add.at(p_in, ni[pi], resp[ni[pi], ki[pi]] * cdf)
  return np.clip(1.0 - p_in, 0.0, 1.0)


# -- Intrinsic Quenching -------------------------------------------------------------------


def iq_thresholds(
  eps_fn: EpsFn,
  params,
  schedule: diffusion.Schedule,
  data,
  t_lo: int,
  t_hi: int,
  quantile: float,
  key,
  method: str = "exact",
  num_probes: int = 1,
  lid_fn=None,
) -> np.ndarray:
  """Per-timestep LID thresholds ``[T]`` for :func:`iq_eps_fn`: at each ``t`` in
  ``t_lo..t_hi`` the ``quantile`` of :func:`lid_at` over the training points ``data``
  noised to ``t`` (``inf`` elsewhere).

  Choice: the threshold is a quantile of the LID that real data show at the same noise
  level, so that a sample is corrected only where its LID exceeds what the data's own
  trajectories show; a quantile over the batch being sampled would make each sample depend
  on the others in its chunk."""
  T = schedule.timesteps
  thr = np.full(T, np.inf, np.float32)
  x0 = jnp.asarray(data, jnp.float32)
  # One compilation for every t (a traced argument).
  lid_fn = lid_fn or jax.jit(
    lambda p, xt, t, k: lid_at(eps_fn, p, schedule, xt, t, method, k, num_probes)[0]
  )
  for t in range(t_lo, t_hi + 1):
    k1, k2 = jax.random.split(jax.random.fold_in(key, t))
    xt = diffusion.q_sample(schedule, x0, t, jax.random.normal(k1, x0.shape))
    lid = np.asarray(lid_fn(params, xt, jnp.int32(t), k2))
    thr[t] = np.quantile(lid[np.isfinite(lid)], quantile)
  return thr


def iq_eps_fn(
  eps_fn: EpsFn,
  schedule: diffusion.Schedule,
  thresholds,
  t_lo: int,
  t_hi: int,
  strength: float,
  method: str = "exact",
  num_probes: int = 1,
  key=None,
) -> EpsFn:
  """Intrinsic Quenching (arXiv:2605.05026) as a corrected noise predictor for any sampler.

  At a reverse step with ``t_lo <= t <= t_hi``, each row whose LID estimate (:func:`lid_at`)
  exceeds ``thresholds[t]`` has its score moved down the LID's gradient,
  ``s' = s - strength * grad_x LID``, i.e. ``eps' = eps + strength * sigma_t * grad_x LID``;
  other rows and steps are left alone (``lax.cond`` skips the derivatives outside the
  window). Choice: the paper's abstract describes IQ as a corrective mechanism that deflates
  the LID; the gradient step on the FLIPD-form LID at the current point, its gate (a
  per-timestep quantile of the data's LID, :func:`iq_thresholds`) and its strength are this
  implementation's. Rows stay independent (the network sees each row alone), so the
  correction of a sample does not depend on the others in its chunk.
  """
  thr = jnp.asarray(thresholds, jnp.float32)
  key = jax.random.key(0) if key is None else key

  def corrected(params, x, t):
    tt = t.reshape(-1)[0]
    _, sigma = _coefs(schedule, tt)
    k = jax.random.fold_in(key, tt)

    def lid_sum(xx):
      lid, eps = lid_at(eps_fn, params, schedule, xx, tt, method, k, num_probes)
      return jnp.sum(lid), (lid, eps)

    grad, (lid, _) = jax.grad(lid_sum, has_aux=True)(x)
    gate = (lid > thr[tt]).reshape((-1,) + (1,) * (x.ndim - 1))
    # The batched prediction, so that rows left alone are exactly the plain predictor's.
    eps = eps_fn(params, x, t)
    return jnp.where(gate, eps + strength * sigma * grad, eps)

  def wrapped(params, x, t):
    tt = t.reshape(-1)[0]
    inside = (tt >= t_lo) & (tt <= t_hi)
    return jax.lax.cond(inside, lambda: corrected(params, x, t), lambda: eps_fn(params, x, t))

  return wrapped


def iq_step_cost(dim: int, method: str = "exact", num_probes: int = 1) -> int:
  """Network passes of one corrected step per row: the LID's forward and tangent passes, the
  reverse sweep through them (counted as many again) and the plain prediction."""
  fwd = trace_cost(dim, method, num_probes)
  return 2 * fwd + 1


# -- evaluation (numpy) --------------------------------------------------------------------


def _frac(mask_num, mask_den) -> dict:
  n = int(mask_den.sum())
  c = int((mask_num & mask_den).sum())
  lo, hi = hallucination.binomial_interval(c, n) if n else (None, None)
  return {"rate": c / n if n else None, "count": c, "n": n, "ci95": [lo, hi]}


def held_out_evaluation(
  scores,
  is_hallucination,
  selection,
  keep_in_support: float = 0.96,
  remove_hallucinations: float = 0.95,
) -> dict:
  """A detector's thresholds chosen on the ``selection`` rows, reported on the others.

  On the selection half: the threshold that keeps ``keep_in_support`` of the in-support
  samples and the one that removes ``remove_hallucinations`` of the hallucinations
  (:func:`hallucination.detection_metrics`). On the held-out half: AUROC with DeLong's
  interval, hallucinations removed and in-support kept at each threshold (Wilson intervals).
  Non-finite scores are left out and counted (numpy).
  """
  s = np.asarray(scores, np.float64)
  hal = np.asarray(is_hallucination, bool)
  sel = np.asarray(selection, bool)
  det = hallucination.detection_metrics(s[sel], hal[sel], keep_in_support, remove_hallucinations)
  thr_keep = det["threshold"]
  thr_rem = (det["at_removal"] or {}).get("threshold")
  held = ~sel
  ok = np.isfinite(s) & held
  sh, yh = s[ok], hal[ok]
  out = {
    "held_out": auroc_block(sh, yh),
    "threshold_keep": thr_keep,
    "threshold_remove": thr_rem,
    "num_non_finite": int((~np.isfinite(s) & held).sum()),
    "selection": {
      "num_hallucinations": det["num_hallucinations"],
      "num_in_support": det["num_in_support"],
    },
  }
  none = {"rate": None, "count": None, "n": None, "ci95": [None, None]}
  if thr_keep is None:
    out.update(
      removed_at_keep=none, kept_at_keep=none, removed_at_removal=none, kept_at_removal=none
    )
    return out
  out["removed_at_keep"] = _frac(sh > thr_keep, yh)
  out["kept_at_keep"] = _frac(sh <= thr_keep, ~yh)
  out["removed_at_removal"] = _frac(sh >= thr_rem, yh)
  out["kept_at_removal"] = _frac(sh < thr_rem, ~yh)
  return out


def auroc_block(scores, labels) -> dict:
  """AUROC with DeLong's 95% interval (:func:`trajectory_scores.auroc_delong`)."""
  return trajectory_scores.auroc_delong(scores, labels)
