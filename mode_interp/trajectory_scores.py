"""A family of trajectory scores for hallucination detection studies, and their statistics.

A *score* is (source, window, reduction):

- ``source``: what varies along the reverse trajectory: ``x0`` (the predicted x0 as the
  sampler uses it), ``x0_u8`` (x0 on the clipped, rounded 0..255 scale), ``eps`` (the
  predicted noise); see :data:`mode_interp.samplers.SOURCES`.
- ``window``: the reverse timesteps ``t_lo <= t <= t_hi`` (inclusive) over which its
  per-pixel variance is taken (accumulated in the sampler's scan, Welford).
- ``reduction``: how the per-pixel variance map becomes one number per sample: ``mean``
  (the paper), ``max``, ``top16`` / ``top64`` (mean of the k largest pixels), ``patch8``
  (8x8 average pool, stride 4, then max).

Windows are written as ``lastK`` (the last K reverse steps: the paper's score is
``last{detect.window}``), ``pA-B`` (timesteps A..B of a T = 1000 chain, mapped
proportionally to this run's T: ``t_lo = floor(A * T / 1000)``, ``t_hi = max(t_lo,
ceil((B + 1) * T / 1000) - 1)``, i.e. the interval ``[A, B + 1)`` scaled and every step
it touches) or ``tA-B`` (this run's timesteps as they are).

Statistics (numpy only): AUROC with a DeLong 95% interval, operating points with Wilson
intervals, a seeded split into a selection and a held-out half, and selection of the best
score on the selection half alone.
"""

import dataclasses
import math
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mode_interp import hallucination

PAPER_T = 1000
REDUCTIONS = ("mean", "max", "top16", "top64", "patch8")
IMAGE_ONLY = ("top16", "top64", "patch8")
DEFAULT_WINDOWS = "last2,last5,last10,last20,p5-15,p10-20,p20-35,p30-60,p50-80,p100-200,p200-350"
WINDOW_FORMS = (
  "lastK (the last K reverse steps, K >= 1), pA-B (timesteps A..B of a "
  "T=1000 chain, mapped proportionally to this run's T), tA-B (this run's "
  "timesteps A..B, 0 <= A <= B < T)"
)


@dataclasses.dataclass(frozen=True)
class Window:
  name: str  # as written, e.g. "last10", "p20-35"
  t_lo: int  # this run's timesteps, inclusive
  t_hi: int
  aliases: tuple = ()  # other names that mapped to the same range

  @property
  def label(self) -> str:
    return f"{self.name}[t={self.t_lo}..{self.t_hi}]"


def map_paper_window(lo: int, hi: int, T: int) -> tuple:
  """Timesteps ``lo..hi`` of a T = 1000 chain mapped proportionally to a chain of ``T``."""
  t_lo = min(int(math.floor(lo * T / PAPER_T)), T - 1)
  t_hi = min(max(t_lo, int(math.ceil((hi + 1) * T / PAPER_T)) - 1), T - 1)
  return t_lo, t_hi


def parse_windows(spec: str, ts) -> list:
  """``spec`` (comma-separated window names) -> :class:`Window` s for a sampler visiting the
  descending timesteps ``ts``. Windows mapping to the same range are merged (the first name
  is kept). Raises ``ValueError`` with one line naming ``--windows`` and the allowed forms."""
  ts = np.asarray(ts)
  n, T = len(ts), int(ts.max()) + 1
  out, seen = [], {}
  items = [s.strip() for s in str(spec).split(",") if s.strip()]
  if not items:
    raise ValueError(f"--windows: empty; allowed: comma-separated {WINDOW_FORMS}")
  for item in items:
    m_last = re.fullmatch(r"last(\d+)", item)
    m_rng = re.fullmatch(r"([pt])(\d+)-(\d+)", item)
    if m_last and int(m_last.group(1)) >= 1:
      k = min(int(m_last.group(1)), n)
      lo, hi = 0, int(ts[n - k])
    elif m_rng:
      a, b = int(m_rng.group(2)), int(m_rng.group(3))
      top = PAPER_T if m_rng.group(1) == "p" else T
      if not a <= b < top:
        raise ValueError(
          f"--windows: {item!r} is not a window of timesteps 0 <= A <= B < {top}; "
          f"allowed: {WINDOW_FORMS}"
        )
      lo, hi = map_paper_window(a, b, T) if m_rng.group(1) == "p" else (a, b)
    else:
      raise ValueError(f"--windows: {item!r} is not allowed; allowed: {WINDOW_FORMS}")
    if not np.any((ts >= lo) & (ts <= hi)):
      raise ValueError(
        f"--windows: {item!r} (t={lo}..{hi}) holds none of the sampler's "
        f"{n} reverse timesteps; allowed: {WINDOW_FORMS}"
      )
    if (lo, hi) in seen:
      i = seen[(lo, hi)]
      out[i] = dataclasses.replace(out[i], aliases=out[i].aliases + (item,))
      continue
    seen[(lo, hi)] = len(out)
    out.append(Window(item, lo, hi))
  return out


def parse_reductions(spec: str, image: bool) -> tuple:
  items = tuple(s.strip() for s in str(spec).split(",") if s.strip())
  allowed = REDUCTIONS if image else tuple(r for r in REDUCTIONS if r not in IMAGE_ONLY)
  bad = [r for r in items if r not in allowed]
  if bad or not items:
    raise ValueError(
      f"--reductions: {bad[0] if bad else spec!r} is not allowed; allowed: "
      f"{', '.join(allowed)}{'' if image else ' (non-image data)'}"
    )
  return tuple(dict.fromkeys(items))


def reduce_maps(var, reductions: Sequence[str]):
  """Per-sample scores ``[..., R]`` from per-pixel variance maps ``var`` ``[..., H, W, C]``
  (images) or ``[..., D]`` (vectors; only ``mean`` and ``max``). Pure jnp (jit-able)."""
  image = var.ndim >= 4 and any(r in IMAGE_ONLY for r in reductions)
  lead = var.shape[:-3] if image else var.shape[:-1]
  flat = var.reshape(lead + (-1,))
  outs = []
  for r in reductions:
    if r == "mean":
      outs.append(jnp.mean(flat, -1))
    elif r == "max":
      outs.append(jnp.max(flat, -1))
    elif r in ("top16", "top64"):
      k = min(int(r[3:]), flat.shape[-1])
      outs.append(jnp.mean(jax.lax.top_k(flat, k)[0], -1))
    elif r == "patch8":
      h, w = var.shape[-3], var.shape[-2]
      p = min(8, h, w)
      s = max(p // 2, 1)
      img = jnp.mean(var, -1).reshape((-1, h, w))  # channels averaged
      pooled = jax.lax.reduce_window(img, 0.0, jax.lax.add, (1, p, p), (1, s, s), "VALID")
      outs.append((jnp.max(pooled.reshape(pooled.shape[0], -1), -1) / (p * p)).reshape(lead))
    else:
      raise ValueError(f"unknown reduction {r!r}; allowed: {', '.join(REDUCTIONS)}")
  return jnp.stack(outs, -1)


def score_names(sources, windows, reductions) -> list:
  """Names ``source|window|reduction`` in the order of a ``[S, W, R]`` score array."""
  return [f"{s}|{w.name}|{r}" for s in sources for w in windows for r in reductions]


# -- statistics ----------------------------------------------------------------------------


def split_halves(n: int, seed: int = 0) -> np.ndarray:
  """Bool mask of the *selection* half of ``n`` samples (a seeded permutation's first
  ``n // 2``); its complement is the held-out half."""
  sel = np.zeros(n, bool)
  sel[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
  return sel


def auroc_delong(scores, labels, confidence: float = 0.95) -> dict:
  """AUROC (positives = ``labels``; high score = positive) with DeLong's interval
  (DeLong et al., 1988; the midrank formulation of Sun & Xu, 2014). Non-finite scores are
  left out. ``None`` entries when a class is empty."""
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels, bool)
  ok = np.isfinite(s)
  s, y = s[ok], y[ok]
  pos, neg = s[y], s[~y]
  m, n = len(pos), len(neg)
  if m == 0 or n == 0:
    return {"auroc": None, "ci95": [None, None], "n_pos": m, "n_neg": n}
  ranks = hallucination.average_ranks
  tz = ranks(np.concatenate([pos, neg]))
  tx, ty = ranks(pos), ranks(neg)
  auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
  v10 = (tz[:m] - tx) / n  # per positive: share of negatives below it
  v01 = 1.0 - (tz[m:] - ty) / m  # per negative: share of positives above it
  var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
  z = hallucination.normal_quantile(confidence)
  half = z * math.sqrt(max(var, 0.0))
  return {
    "auroc": float(auc),
    "ci95": [float(max(0.0, auc - half)), float(min(1.0, auc + half))],
    "n_pos": m,
    "n_neg": n,
  }


def evaluate_score(
  scores,
  is_hallucination,
  keep_in_support: float = 0.96,
  remove_hallucinations: float = 0.95,
  threshold=None,
) -> dict:
  """AUROC [DeLong CI]; hallucinations removed at ``keep_in_support`` in-support kept and
  in-support kept at ``remove_hallucinations`` removed, each with its count and Wilson
  interval (thresholds from these samples, as :func:`hallucination.detection_metrics`);
  with ``threshold`` (e.g. from the selection half), also what that fixed threshold does."""
  s = np.asarray(scores, np.float64)
  hal = np.asarray(is_hallucination, bool)
  det = hallucination.detection_metrics(s, hal, keep_in_support, remove_hallucinations)
  out = {
    **auroc_delong(s, hal),
    "num_hallucinations": det["num_hallucinations"],
    "num_in_support": det["num_in_support"],
    "num_non_finite": det["num_non_finite"],
    "threshold": det["threshold"],
  }
  nh, ni = det["num_hallucinations"], det["num_in_support"]

  def frac(p, total):
    if p is None:
      return {"rate": None, "count": None, "n": total, "ci95": [None, None]}
    c = int(round(p * total))
    return {
      "rate": float(p),
      "count": c,
      "n": total,
      "ci95": list(hallucination.binomial_interval(c, total)),
    }

  out["removed_at_keep"] = frac(det["hallucinations_removed"], nh)
  out["kept_at_keep"] = frac(det["in_support_retained"], ni)
  ar = det["at_removal"] or {}
  out["kept_at_removal"] = frac(ar.get("in_support_retained"), ni)
  out["removed_at_removal"] = frac(ar.get("hallucinations_removed"), nh)
  if threshold is not None:
    ok = np.isfinite(s)
    out["fixed_threshold"] = {
      "threshold": float(threshold),
      "removed": frac(float(np.mean(s[ok & hal] > threshold)) if (ok & hal).any() else None, nh),
      "kept": frac(float(np.mean(s[ok & ~hal] <= threshold)) if (ok & ~hal).any() else None, ni),
    }
  return out


def _nan_if_none(x):
  return np.nan if x is None else x


def select_best(names, scores, is_hallucination, selection) -> tuple:
  """Index and AUROCs of the score (column of ``scores`` ``[N, K]``) with the highest AUROC
  on the ``selection`` rows alone (ties: the first). The other rows are never read."""
  sel = np.asarray(selection, bool)
  s = np.asarray(scores)[sel]
  hal = np.asarray(is_hallucination, bool)[sel]
  aurocs = np.array([_nan_if_none(auroc_delong(s[:, k], hal)["auroc"]) for k in range(len(names))])
  if np.all(np.isnan(aurocs)):
    return 0, aurocs
  return int(np.nanargmax(aurocs)), aurocs


def last_change_index(values) -> np.ndarray:
  """For ``values [..., K]`` (a per-frame quantity along a trajectory), the first frame
  index from which the value equals the final frame's for good (0: it never changed)."""
  v = np.asarray(values)
  same = v == v[..., -1:]
  # Reversed cumulative AND: True where this frame and every later one equal the final.
  settled = np.flip(np.cumprod(np.flip(same, axis=-1), axis=-1), axis=-1).astype(bool)
  k = v.shape[-1]
  return k - settled.sum(axis=-1)


def column_distances(traj, final, column_edges) -> np.ndarray:
  """RMS distance of every frame of ``traj [B, K, H, W, ...]`` to ``final [B, H, W, ...]``,
  per column of the canvas (``column_edges``, x edges ``(0, e1, e2, W)``): ``[B, K, C]``."""
  traj = np.asarray(traj, np.float32)
  final = np.asarray(final, np.float32)
  d = (traj - final[:, None]) ** 2
  d = d.reshape(d.shape[:4] + (-1,)).mean(axis=-1)  # [B, K, H, W]
  edges = list(column_edges[:-1]) + [d.shape[3]]
  return np.stack(
    [np.sqrt(d[:, :, :, a:b].mean(axis=(2, 3))) for a, b in zip(edges[:-1], edges[1:])], axis=-1
  )
