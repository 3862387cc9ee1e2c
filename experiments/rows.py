"""Rows of the report: one measured figure of a run (value, interval, selector).

Each experiment's runner turns its ``results.json`` into rows (``report_rows``) with
these builders; ``experiments.report`` judges them against the references and renders.
"""

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

from mode_interp import hallucination
from mode_interp.hallucination import binomial_interval


def get(d: Any, path: str, default=None):
  """``d["a"]["b"]`` for ``path="a.b"``; ``default`` where any step is missing."""
  for part in path.split("."):
    if not isinstance(d, dict) or part not in d:
      return default
    d = d[part]
  return default if d is None else d


def is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass
class Row:
  """One measured figure of one run."""

  key: str  # metric path in results.json, e.g. "detection.auroc"
  label: str
  value: Optional[float]
  kind: str = "pct"  # "pct" (a proportion), "num" or "int"
  ci: Optional[Tuple[float, float]] = None
  count: Optional[int] = None
  n: Optional[int] = None
  interval: str = ""  # how the interval was made ("Wilson", "Hanley-McNeil")
  select: Dict[str, Any] = dataclasses.field(default_factory=dict)  # sweep / generation selectors


def proportion_row(key, label, rate, n, count=None, ci=None, select=None) -> Row:
  """A proportion with its Wilson interval (``count`` derived from ``rate * n`` if absent)."""
  n = int(n) if is_number(n) and n > 0 else None
  if count is None and is_number(rate) and n:
    count = int(round(rate * n))
  if not is_number(rate) and count is not None and n:
    rate = count / n
  if ci is None and count is not None and n:
    ci = binomial_interval(int(count), n)
  ok = ci is not None and all(is_number(c) for c in ci)
  return Row(
    key,
    label,
    rate if is_number(rate) else None,
    "pct",
    tuple(ci) if ok else None,
    count,
    n,
    "Wilson" if ok else "",
    dict(select or {}),
  )


def rate_block(results, key, label, n_default, select=None) -> Row:
  """``results[key]`` with ``results[<key without _rate>]`` = {count, n, ci95} if present."""
  block = get(results, key[: -len("_rate")]) if key.endswith("_rate") else None
  block = block if isinstance(block, dict) else {}
  return proportion_row(
    key,
    label,
    get(results, key, block.get("rate")),
    block.get("n", n_default),
    block.get("count"),
    block.get("ci95"),
    select,
  )


def detection_rows(det, prefix: str, what: str) -> List[Row]:
  """AUROC, retained and removed fractions of a ``detection_metrics`` dict."""
  if not isinstance(det, dict):
    return []
  n_in, n_hal = det.get("num_in_support"), det.get("num_hallucinations")
  auroc = det.get("auroc")
  ci = hallucination.auroc_interval(auroc, n_hal, n_in) if is_number(auroc) else None
  keep = det.get("keep_in_support")
  at = f" at the {100 * keep:.0f}%-retention threshold" if is_number(keep) else ""
  rows = [
    Row(
      f"{prefix}.auroc",
      f"Trajectory-variance AUROC ({what})",
      auroc if is_number(auroc) else None,
      "num",
      ci,
      None,
      None,
      "Hanley-McNeil" if ci else "",
    ),
    proportion_row(
      f"{prefix}.in_support_retained",
      f"In-support samples retained{at}",
      det.get("in_support_retained"),
      n_in,
    ),
    proportion_row(
      f"{prefix}.hallucinations_removed",
      f"Hallucinations removed{at}",
      det.get("hallucinations_removed"),
      n_hal,
    ),
  ]
  rem = det.get("at_removal")
  if isinstance(rem, dict):
    frac = rem.get("remove_hallucinations")
    tag = f"{100 * frac:.0f}%" if is_number(frac) else "the set share of"
    rows += [
      proportion_row(
        f"{prefix}.at_removal.hallucinations_removed",
        f"Hallucinations removed (threshold removing {tag})",
        rem.get("hallucinations_removed"),
        n_hal,
      ),
      proportion_row(
        f"{prefix}.at_removal.in_support_retained",
        f"In-support retained when removing {tag} of hallucinations",
        rem.get("in_support_retained"),
        n_in,
      ),
    ]
  return rows
