"""Hallucination rules and the trajectory-variance detector's measurements.

Everything takes numpy arrays and returns numpy/python values: no model, no JAX.
"""

import statistics
from typing import Optional

import numpy as np
from absl import logging


# Every measured run needs nearest modes, AUROCs and Wilson intervals. scikit-learn and
# scipy.stats (its import) cost about 2 s of each process's start, as much as a tiny run's
# training: the few closed forms below are written with numpy and the standard library
# instead, and tests/test_hallucination.py checks them against scikit-learn and scipy.
_ROWS_PER_CHUNK_ELEMENTS = 1 << 22  # distance matrix entries per chunk (32 MiB of float64)


def normal_quantile(confidence: float) -> float:
  """The two-sided normal quantile of ``confidence`` (1.96 at 0.95)."""
  return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def _mode_distances(samples, means):
  """Yields, chunk of rows by chunk of rows of ``samples [N, D]``, the squared distances
  ``[n, K]`` to every mode of ``means [K, D]`` (computed as differences, not by the dot-product
  expansion); nothing when N is 0."""
  means = np.asarray(means, np.float64).reshape(len(means), -1)
  samples = np.asarray(samples, np.float64).reshape(len(samples), means.shape[1])  # N may be 0
  rows = max(1, _ROWS_PER_CHUNK_ELEMENTS // max(1, len(means) * means.shape[1]))
  for i in range(0, len(samples), rows):
    d = samples[i : i + rows, None, :] - means[None]
    yield np.einsum("nkd,nkd->nk", d, d)


def _nearest(samples, means):
  """Index of and Euclidean distance to the nearest mode ``[K, D]`` of each sample ``[N, D]``."""
  idx, dist = [np.zeros(0, np.int64)], [np.zeros(0)]
  for d2 in _mode_distances(samples, means):
    i = np.argmin(d2, axis=1)
    idx.append(i)
    dist.append(np.sqrt(d2[np.arange(len(i)), i]))
  return np.concatenate(idx), np.concatenate(dist)


def nearest_mode_distance(samples, means):
  """Euclidean distance of each sample ``[N, D]`` to its nearest mode ``[K, D]``."""
  return _nearest(samples, means)[1]


def mixture_hallucinations(samples, means, std, k: float = 4.0):
  """A sample is a hallucination when it lies farther than ``k * std`` from every mode."""
  return nearest_mode_distance(samples, means) > k * std


def nearest_mode(samples, means):
  """Index of the nearest mode of each sample."""
  return _nearest(samples, means)[0]


def nearest_modes(samples, means, k: int = 2):
  """Indices ``[N, k]`` of the ``k`` nearest modes of each sample, nearest first."""
  out = [np.zeros((0, k), np.int64)]
  for d2 in _mode_distances(samples, means):
    out.append(np.argsort(d2, axis=1, kind="stable")[:, :k])
  return np.concatenate(out)


def average_ranks(x) -> np.ndarray:
  """Ranks 1..N of ``x`` with ties given their average rank (scipy's ``rankdata``)."""
  x = np.asarray(x).ravel()
  order = np.argsort(x, kind="stable")
  xs = x[order]
  # Group starts in the sorted order; a group of ties at positions [a, b) shares (a + b + 1) / 2.
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]]) if len(x) else np.zeros(0, np.int64)
  ends = np.r_[starts[1:], len(x)]
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return ranks


def auroc(is_positive, scores) -> float:
  """Area under the ROC curve (positives scored high), ties counted half: the Mann-Whitney
  statistic over ``n_pos * n_neg`` (scikit-learn's ``roc_auc_score``)."""
  pos = np.asarray(is_positive, bool)
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if not n_pos or not n_neg:
    raise ValueError("the AUROC needs at least one positive and one negative")
  r = average_ranks(np.asarray(scores, np.float64))
  return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def rule_false_positive_rate(dim: int, k: float) -> float:
  """Probability that a true in-mode sample ``N(mu, s^2 I_dim)`` is farther than ``k s``."""
  from scipy import special  # a tenth of scipy.stats' import

  return float(special.gammaincc(dim / 2.0, k * k / 2.0))  # the chi-square(dim) tail at k^2


def binomial_interval(successes: int, trials: int, confidence: float = 0.95):
  """Wilson score interval for a proportion, as ``(low, high)`` (scipy's ``binomtest(...)
  .proportion_ci(method="wilson")``, without continuity correction)."""
  if trials == 0:
    return (float("nan"), float("nan"))
  n, p, z = float(trials), successes / trials, normal_quantile(confidence)
  centre, spread = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  lo, hi = (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)
  # Clamped to contain p: at p = 0 or 1 rounding can put an end a few ulps past it.
  return (float(max(0.0, min(p, lo))), float(min(1.0, max(p, hi))))


def auroc_interval(auroc, n_pos: int, n_neg: int, confidence: float = 0.95):
  """Hanley-McNeil (1982) normal interval for an AUROC from ``n_pos`` positives and
  ``n_neg`` negatives, clipped to [0, 1]; None when it cannot be formed."""
  if auroc is None or not np.isfinite(auroc) or not n_pos or not n_neg:
    return None
  a = float(auroc)
  z = normal_quantile(confidence)
  q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
  var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
  half = z * np.sqrt(max(var, 0.0))
  return (max(0.0, a - half), min(1.0, a + half))


def rate_with_interval(flags) -> dict:
  """Share of true ``flags`` with its count, total and Wilson 95% interval."""
  flags = np.asarray(flags, bool)
  lo, hi = binomial_interval(int(flags.sum()), len(flags))
  return {
    "rate": float(flags.mean()) if len(flags) else None,
    "count": int(flags.sum()),
    "n": len(flags),
    "ci95": [lo, hi],
  }


def detection_metrics(
  scores,
  is_hallucination,
  keep_in_support: float = 0.96,
  remove_hallucinations: Optional[float] = 0.95,
):
  """How well thresholding ``scores`` (high = suspicious) separates hallucinations.

  The threshold keeps ``keep_in_support`` of the in-support samples (the
  paper's operating point: 96%); samples above it are removed. Also reports the
  operating point that removes ``remove_hallucinations`` of the hallucinations.

  Samples whose score is not finite (NaN or inf, from a diverged trajectory)
  are left out and counted in ``num_non_finite``.

  Returns a dict with ``auroc``, ``threshold``, ``in_support_retained``,
  ``hallucinations_removed``, the counts, and ``at_removal`` (or ``None``
  entries where a class is empty).
  """
  scores = np.asarray(scores, np.float64)
  hal = np.asarray(is_hallucination, bool)
  if scores.shape != hal.shape:
    raise ValueError(f"scores {scores.shape} and labels {hal.shape} differ in shape")
  finite = np.isfinite(scores)
  scores, hal = scores[finite], hal[finite]
  ins = ~hal
  out = {
    "num_in_support": int(ins.sum()),
    "num_hallucinations": int(hal.sum()),
    "num_non_finite": int((~finite).sum()),
    "keep_in_support": keep_in_support,
  }
  if ins.sum() == 0 or hal.sum() == 0:
    out.update(
      auroc=None,
      threshold=None,
      in_support_retained=None,
      hallucinations_removed=None,
      at_removal=None,
    )
    return out
  thr = float(np.quantile(scores[ins], keep_in_support, method="higher"))
  out["auroc"] = auroc(hal, scores)
  out["threshold"] = thr
  out["in_support_retained"] = float(np.mean(scores[ins] <= thr))
  out["hallucinations_removed"] = float(np.mean(scores[hal] > thr))
  if remove_hallucinations is not None:
    thr2 = float(np.quantile(scores[hal], 1 - remove_hallucinations, method="lower"))
    # Remove everything >= thr2, so at least `remove_hallucinations` of them go.
    out["at_removal"] = {
      "remove_hallucinations": remove_hallucinations,
      "threshold": thr2,
      "hallucinations_removed": float(np.mean(scores[hal] >= thr2)),
      "in_support_retained": float(np.mean(scores[ins] < thr2)),
    }
  return out


def roc_curve(scores, is_hallucination):
  """False- and true-positive rates (hallucination = positive) for plotting; non-finite
  scores are left out, as in :func:`detection_metrics`."""
  scores = np.asarray(scores, np.float64)
  finite = np.isfinite(scores)
  y, s = np.asarray(is_hallucination, bool)[finite], scores[finite]
  order = np.argsort(-s, kind="stable")
  y, s = y[order], s[order]
  # One point per distinct threshold (the last sample scored at it), from (0, 0).
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.zeros(0, int)
  tps = np.r_[0, np.cumsum(y)[last]].astype(np.float64)
  fps = np.r_[0, last + 1 - tps[1:]]
  with np.errstate(invalid="ignore", divide="ignore"):
    return fps / fps[-1], tps / tps[-1]


def finite_rows(samples, scores=None):
  """Mask of the samples (rows of ``samples``) that are finite everywhere, and whose
  ``scores`` entry is finite when given."""
  x = np.asarray(samples)
  ok = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
  if scores is not None:
    ok &= np.isfinite(np.asarray(scores, np.float64))
  return ok


def finite_or_warn(
  samples,
  scores=None,
  what: str = "samples",
  fate: str = "left out of the rates, the detection metrics and the figures",
):
  """:func:`finite_rows`, with a warning naming how many rows are not finite (a diverged
  trajectory: an undertrained or unstable model) and what becomes of them (``fate``)."""
  ok = finite_rows(samples, scores)
  if not ok.all():
    logging.warning(
      "%d of %d %s are not finite (diverged trajectories): %s",
      int((~ok).sum()),
      len(ok),
      what,
      fate,
    )
  return ok


def non_finite_report(ok) -> dict:
  """``{"count", "rate"}`` of the rows where ``ok`` is false."""
  ok = np.asarray(ok, bool)
  bad = int((~ok).sum())
  return {"count": bad, "rate": float(bad / len(ok)) if len(ok) else 0.0}


FILTERS = ("none", "random", "variance")


def filter_indices(
  num_keep: int, how: str, key_seed: int = 0, traj_variance=None, num_total: Optional[int] = None
):
  """Which of the generated samples to keep for the next generation.

  ``none``: the first ``num_keep``; ``random``: a uniform subset (seeded);
  ``variance``: the ``num_keep`` with the lowest trajectory variance.
  """
  n = num_total if num_total is not None else len(traj_variance)
  if num_keep > n:
    raise ValueError(f"cannot keep {num_keep} of {n} samples")
  if how == "none":
    return np.arange(num_keep)
  if how == "random":
    return np.sort(np.random.default_rng(key_seed).choice(n, num_keep, replace=False))
  if how == "variance":
    if traj_variance is None:
      raise ValueError("filter 'variance' needs the trajectory variance")
    # NaN sorts last in numpy, so non-finite variances are the last to be kept.
    tv = np.where(np.isfinite(traj_variance), traj_variance, np.inf)
    return np.sort(np.argsort(tv, kind="stable")[:num_keep])
  raise ValueError(f"unknown filter {how!r}; allowed: {', '.join(FILTERS)}")
