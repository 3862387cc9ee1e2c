r"""Markdown report of finished runs, set against the paper's and the official code's figures.

  python -m experiments.report runs/gaussian1d runs/shapes runs/recursive_grid25
  python -m experiments.report runs/* --out=reports/report.md

Reads each workdir's ``results.json`` and ``config.json`` and writes one Markdown
file (default ``reports/report.md``; also printed) with, per experiment and
metric: this implementation's figure with its 95% interval, the paper's figure
where the paper states one ("not stated" otherwise), the official code's figure
where it was measured ("not measured" otherwise), and whether they agree. A
reference disagrees *beyond noise* when it lies outside this run's 95% interval
(for a bound such as "over 95%", when the whole interval is on the wrong side of
it). Intervals are Wilson score intervals for proportions and Hanley-McNeil
normal intervals for AUROC. Reference figures and their provenance live in
``experiments/references.json`` (``--references`` to use another file).

Every section tolerates missing keys: a run that stopped early still reports
what it wrote.
"""

import argparse
import dataclasses
import datetime
import glob
import importlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from experiments import registry
from experiments.rows import Row, get, is_number as _is_number, proportion_row  # noqa: F401

DEFAULT_REFERENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "references.json")
DEFAULT_OUT = os.path.join("reports", "report.md")
NOT_STATED = "not stated"
NOT_MEASURED = "not measured"
SOURCES = (("paper", NOT_STATED), ("official_code", NOT_MEASURED))


# -- small helpers ---------------------------------------------------------------
def fmt_value(x, kind: str = "pct") -> str:
  """A proportion as a percentage, anything else as a short number; '—' if missing."""
  if not _is_number(x):
    return "—"
  if kind == "pct":
    return f"{100 * x:.2f}%"
  if kind == "int":
    return f"{int(round(x)):,}"
  return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


def fmt_interval(ci, kind: str = "pct") -> str:
  if not ci or not all(_is_number(c) for c in ci):
    return ""
  if kind == "pct":
    return f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]%"
  return f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def _md(text) -> str:
  """Text safe inside a Markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


# -- what a run measured ---------------------------------------------------------
# The runner module of each experiment, which owns the rows of its results.
RUNNER_MODULES = {name: e.module for name, e in registry.EXPERIMENTS.items()}


@dataclasses.dataclass
class Run:
  path: str
  results: Dict[str, Any]
  config: Dict[str, Any]
  figures: List[str]
  problems: List[str]

  @property
  def experiment(self) -> str:
    return self.results.get("experiment") or self.config.get("experiment") or "unknown"

  @property
  def data(self) -> str:
    return self.results.get("data") or get(self.config, "data.name") or ""

  @property
  def is_sweep(self) -> bool:
    return self.experiment == "gaussian" and isinstance(self.results.get("sweep"), list)

  def rows(self) -> List[Row]:
    """The runner of this experiment turns its results into rows (``report_rows``)."""
    module = RUNNER_MODULES.get(self.experiment)
    if module is None:
      return []
    return importlib.import_module(module).report_rows(self.results, self.config)


def _read_json(path, problems):
  if not os.path.exists(path):
    problems.append(f"no {os.path.basename(path)}")
    return {}
  try:
    with open(path) as f:
      out = json.load(f)
    return out if isinstance(out, dict) else {}
  except (OSError, ValueError) as e:
    problems.append(f"unreadable {os.path.basename(path)} ({e})")
    return {}


def _sweep_in_progress(path, config, problems) -> Dict[str, Any]:
  """A sweep that has not written results.json yet: its finished points (sweep_table.json,
  written as they arrive), or {}."""
  table_path = os.path.join(path, "sweep_table.json")
  if not os.path.exists(table_path):
    return {}
  try:
    with open(table_path) as f:
      table = json.load(f)
  except (OSError, ValueError) as e:
    problems.append(f"unreadable sweep_table.json ({e})")
    return {}
  if not isinstance(table, list):
    problems.append("sweep_table.json is not a list of sweep points")
    return {}
  problems[:] = [p for p in problems if p != "no results.json"]
  problems.append(
    f"in progress: no results.json yet; the {len(table)} finished sweep point(s) of sweep_table.json"
  )
  return {
    "experiment": config.get("experiment") or "gaussian",
    "data": get(config, "data.name"),
    "seed": config.get("seed"),
    "sweep": table,
  }


def load_run(path: str) -> Run:
  problems: List[str] = []
  results = _read_json(os.path.join(path, "results.json"), problems)
  config = _read_json(os.path.join(path, "config.json"), problems)
  if not results:
    results = _sweep_in_progress(path, config, problems)
  figures = sorted(glob.glob(os.path.join(path, "figures", "*.png")))
  return Run(os.path.abspath(path), results, config, figures, problems)


# -- references ------------------------------------------------------------------
def load_references(path: Optional[str]) -> Dict[str, Any]:
  if not path or not os.path.exists(path):
    return {"figures": []}
  with open(path) as f:
    refs = json.load(f)
  refs.setdefault("figures", [])
  return refs


def matching_references(refs, run: Run, row: Row, source: str) -> List[dict]:
  """The reference figures of ``source`` for this run's experiment, data and metric."""
  out = []
  for ref in refs.get("figures", []):
    if ref.get("source") != source or ref.get("metric") != row.key:
      continue
    if ref.get("experiment") != ("gaussian_sweep" if run.is_sweep else run.experiment):
      continue
    if ref.get("data") not in (None, "", run.data):
      continue
    if any(row.select.get(k) != v for k, v in (ref.get("select") or {}).items()):
      continue
    # A figure measured under given settings applies only to runs with those settings.
    if any(get(run.config, k) != v for k, v in (ref.get("when") or {}).items()):
      continue
    if not _is_number(ref.get("value")):
      continue
    out.append(ref)
  return out


BOUND_WORDS = {"at_least": "≥ ", "at_most": "≤ ", "equal": ""}


def fmt_reference(ref, kind) -> str:
  text = BOUND_WORDS.get(ref.get("compare", "equal"), "") + fmt_value(ref["value"], kind)
  ci = ref.get("ci95")
  if ci:
    text += " " + fmt_interval(ci, kind)
  where = ref.get("where") or ref.get("label")
  return f"{text} ({where})" if where else text


def judge(row: Row, ref) -> Tuple[Optional[bool], str]:
  """``(disagrees, words)``; ``disagrees`` is None where there is no interval to judge by."""
  if row.value is None:
    return None, "no value in this run"
  if not row.ci:
    return None, "no interval to judge by"
  lo, hi = row.ci
  v, how = float(ref["value"]), ref.get("compare", "equal")
  ci = fmt_interval(row.ci, row.kind)
  if how in ("at_least", "at_most"):
    bad = hi < v if how == "at_least" else lo > v
    side = "below" if how == "at_least" else "above"
    return bad, (
      f"not met: this run's 95% interval {ci} lies entirely {side} it"
      if bad
      else f"met or not excluded by this run's 95% interval {ci}"
    )
  bad = not (lo <= v <= hi)
  return bad, f"{'outside' if bad else 'inside'} this run's 95% interval {ci}"


# -- rendering -------------------------------------------------------------------
def _rel(path, out_dir) -> str:
  return os.path.relpath(path, out_dir).replace(os.sep, "/")


def machine_text(m) -> str:
  if not isinstance(m, dict) or not m:
    return "not recorded"
  parts = []
  kind, plat = m.get("device_kind"), m.get("platform")
  if kind or plat:
    extra = f" ({plat})" if plat and kind and str(plat).lower() != str(kind).lower() else ""
    parts.append(f"{m.get('device_count', '?')}× {kind or plat}{extra}")
  if m.get("process_count", 1) not in (1, None):
    parts.append(f"{m['process_count']} processes")
  if m.get("cpu_count"):
    parts.append(f"{m['cpu_count']} CPUs")
  if m.get("host"):
    parts.append(f"host {m['host']}")
  if m.get("jax"):
    parts.append(f"jax {m['jax']}")
  return ", ".join(parts) or json.dumps(m, sort_keys=True)


def run_title(run: Run) -> str:
  exp = "gaussian (sweep)" if run.is_sweep else run.experiment
  return f"{exp} — {run.data}" if run.data else exp


def num_samples_text(run: Run) -> str:
  r = run.results
  if run.experiment == "recursive":
    drawn = (r.get("num_train") or 0) + (r.get("oversample") or 0)
    return f"{drawn:,} drawn per generation, {r.get('num_train', 0):,} kept" if drawn else "—"
  if run.is_sweep:
    ns = sorted(
      {
        e.get("num_samples")
        for e in r.get("sweep", [])
        if isinstance(e, dict) and _is_number(e.get("num_samples"))
      }
    )
    return ", ".join(f"{n:,}" for n in ns) + " per sweep point" if ns else "—"
  n = r.get("num_samples", get(run.config, "sample.num_samples"))
  return f"{n:,}" if _is_number(n) else "—"


def render_sweep_trends(results) -> List[str]:
  """One line per swept axis: the learned score's rate along it (``gaussian.sweep_trend``:
  falls / rises when the last point's 95% interval lies wholly beyond the first's) beside the
  paper's stated direction."""
  from experiments import gaussian  # the trend's rule lives beside the sweep

  table = [e for e in results.get("sweep") or [] if isinstance(e, dict)]
  trends = gaussian.sweep_trends(table)
  if not trends:
    return []
  lines = [
    "| Axis | Points | The rate (learned score) | Between neighbours | Paper |",
    "|---|---|---|---|---|",
  ]
  for field, t in trends.items():
    values = ", ".join(f"{v:,}" if _is_number(v) else str(v) for v in t.get("values") or [])
    direction = t["direction"]
    if t.get("monotone"):
      direction += ", monotone"
    elif t.get("monotone") is False and t["direction"] != "no clear trend":
      direction += ", not monotone"
    steps = ", ".join(t.get("steps") or []) or "—"
    lines.append(
      f"| {_md(field)} | {_md(values or t['points'])} | {_md(direction)} | {_md(steps)} | "
      f"{_md(t['paper'])} |"
    )
  return lines + [""]


def render_run(run: Run, refs, out_dir, disagreements: List[str]) -> List[str]:
  r, c = run.results, run.config
  lines = [f"## {run_title(run)}", ""]
  seed = r.get("seed", c.get("seed"))
  steps = get(r, "train.steps", get(c, "train.steps"))
  steps_text = f"{steps:,}" if _is_number(steps) else "—"
  if run.is_sweep:  # each point trains its own budget
    epochs, per_point = get(c, "sweep.epochs"), get(c, "sweep.steps")
    if _is_number(epochs) and epochs:
      steps_text = f"{epochs:,} epochs per point"
    elif _is_number(per_point):
      steps_text = f"{per_point:,} per point"
  facts = [
    ("Workdir", f"`{_rel(run.path, out_dir)}`"),
    ("Config", f"`{r.get('config_name')}`" if r.get("config_name") else "not recorded"),
    ("Seed", seed if seed is not None else "not recorded"),
    ("Samples", num_samples_text(run)),
    ("Training steps", steps_text),
    ("Batch size", fmt_value(get(c, "train.batch_size"), "int")),
    ("Diffusion steps T", fmt_value(get(c, "diffusion.timesteps"), "int")),
    ("Sampler", get(r, "sampling.sampler", get(c, "sample.sampler", "—"))),
    ("Machine", machine_text(r.get("machine"))),
  ]
  if run.problems:
    facts.append(("Problems", "; ".join(run.problems)))
  lines += ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in facts] + [""]
  rows = run.rows()
  if not rows:
    lines += ["No measurements found in results.json.", ""]
  else:
    lines += [
      "| Metric | This implementation [95% CI] | Paper | Official code | Agreement |",
      "|---|---|---|---|---|",
    ]
    for row in rows:
      found = {src: matching_references(refs, run, row, src) for src, _ in SOURCES}
      if row.value is None and not any(found.values()):
        continue  # a figure this run did not write, with nothing to compare it to
      this = fmt_value(row.value, row.kind)
      if row.ci:
        this += f" {fmt_interval(row.ci, row.kind)}"
      if row.count is not None and row.n:
        this += f" ({row.count:,}/{row.n:,})"
      cells, verdicts = [], []
      for source, missing in SOURCES:
        cells.append(
          "; ".join(fmt_reference(x, row.kind) for x in found[source]) if found[source] else missing
        )
        for ref in found[source]:
          bad, words = judge(row, ref)
          who = "paper" if source == "paper" else "official code"
          if bad:
            verdicts.append(f"**DISAGREES** with {who}: {fmt_reference(ref, row.kind)} is {words}")
            disagreements.append(
              f"{run_title(run)} (`{_rel(run.path, out_dir)}`), {row.label}: "
              f"{who} {fmt_reference(ref, row.kind)} is {words}"
            )
          elif bad is None:
            verdicts.append(f"{who}: cannot judge ({words})")
          else:
            verdicts.append(f"agrees with {who} ({words})")
      lines.append(
        f"| {_md(row.label)} | {_md(this)} | {_md(cells[0])} | {_md(cells[1])} | "
        f"{_md('; '.join(verdicts) or '—')} |"
      )
    lines.append("")
  if run.is_sweep:
    lines += render_sweep_trends(r)
  if run.experiment == "shapes" and isinstance(r.get("counts"), dict):
    lines += [
      "Verdict counts: "
      + ", ".join(f"{k} {v:,}" if _is_number(v) else f"{k} {v}" for k, v in r["counts"].items()),
      "",
    ]
  if run.figures:
    lines += [
      "Figures: " + " · ".join(f"[{os.path.basename(f)}]({_rel(f, out_dir)})" for f in run.figures),
      "",
    ]
  else:
    lines += ["Figures: none found.", ""]
  return lines


def render_references(refs) -> List[str]:
  lines = ["## References used", ""]
  paper, code = refs.get("paper") or {}, refs.get("official_code") or {}
  if paper:
    lines += [
      f"- Paper: {paper.get('citation', '')} — read from: "
      + ", ".join(paper.get("read_from", []))
      + (f". {paper['note']}" if paper.get("note") else "")
    ]
  if code:
    lines += [
      f"- Official code: {code.get('repository', '')} at commit `{code.get('commit', '?')}`"
      + (f"; {code['note']}" if code.get("note") else "")
    ]
    for key in ("machine", "date"):
      if code.get(key):
        lines += [f"  - {key}: {code[key]}"]
  for fact in paper.get("setup_facts", []):
    lines += [f"- Paper setup ({fact.get('where', '')}): {fact.get('text', '')}"]
  diffs = code.get("differences_from_this_project") or []
  if diffs:
    lines += ["", "Official code settings that differ from (or match) this project's defaults:", ""]
    lines += [f"- {d}" for d in diffs]
  figs = refs.get("figures", [])
  if figs:
    lines += [
      "",
      "| Source | Experiment | Metric | Value | Where / command | Claim or conditions |",
      "|---|---|---|---|---|---|",
    ]
    for x in figs:
      kind = x.get("kind", "pct")
      sel = "".join(f", {k}={v}" for k, v in (x.get("select") or {}).items())
      sel += "".join(f", when {k}={v}" for k, v in (x.get("when") or {}).items())
      where = x.get("where") or ""
      if x.get("command"):
        where = (where + "; " if where else "") + f"`{x['command']}`"
      lines.append(
        f"| {_md(x.get('source'))} | {_md(x.get('experiment'))}"
        f"{_md(' / ' + x['data'] if x.get('data') else '')}{_md(sel)} | "
        f"`{_md(x.get('metric'))}` | {_md(fmt_reference(dict(x, where=None), kind))} | "
        f"{_md(where)} | {_md(x.get('claim') or x.get('conditions') or '')} |"
      )
  timings = refs.get("official_code_timings", [])
  if timings:
    lines += [
      "",
      "Official code timings (CPU, this project's machine):",
      "",
      "| What | ms | Conditions |",
      "|---|---|---|",
    ]
    for t in timings:
      lines.append(
        f"| {_md(t.get('what'))} | {fmt_value(t.get('ms'), 'num')} | "
        f"{_md(t.get('conditions', ''))} |"
      )
  return lines + [""]


def is_parity(run: Run) -> bool:
  """A workdir of ``experiments.parity`` (both implementations, per seed)."""
  return "per_seed" in run.results and "comparison" in run.results


def render_parity(run: Run, out_dir) -> List[str]:
  """Both sides per seed, then mean [min, max], and whether each side's mean lies in the
  other side's seed range."""
  from experiments import parity  # its metric list and number formats

  r = run.results
  seeds = [str(s) for s in r.get("seeds", [])]
  lines = [
    f"## parity — {r.get('config_name') or 'gaussian'} (`{os.path.basename(run.path)}`)",
    "",
    f"Workdir `{_rel(run.path, out_dir)}`; recipe: {_md(r.get('recipe', '—'))}; "
    f"official side: {_md((r.get('reference') or {}).get('status', '—'))}.",
    "",
  ]
  shown = parity.METRICS
  lines += [
    "| side | seed | " + " | ".join(label for _, label, _ in shown) + " |",
    "|---|---|" + "---|" * len(shown),
  ]
  for side in parity.SIDES:
    for seed in seeds:
      rec = (r["per_seed"].get(side) or {}).get(seed)
      cells = [parity._fmt(rec.get(k) if rec else None, kind) for k, _, kind in shown]
      lines.append(f"| {side} | {seed} | " + " | ".join(cells) + " |")
  for side in parity.SIDES:
    cells = []
    for k, _, kind in shown:
      m = (r.get("summary", {}).get(side) or {}).get(k) or {}
      cells.append(
        f"{parity._fmt(m['mean'], kind)} [{parity._fmt(m['min'], kind)}, "
        f"{parity._fmt(m['max'], kind)}]"
        if m.get("n")
        else "—"
      )
    lines.append(f"| **{side}** | mean [min, max] | " + " | ".join(cells) + " |")
  lines.append("")
  for k, label, _ in shown:
    c = r["comparison"].get(k)
    if c:
      lines.append(
        f"- {label}: this side's mean is {'inside' if c.get('this_mean_within_official_range') else '**outside**'} "
        f"the official seed range; the official mean is "
        f"{'inside' if c.get('official_mean_within_this_range') else 'outside'} this side's"
        + (
          f"; difference {c['welch_z']:+.1f} standard errors (Welch)"
          if c.get("welch_z") is not None
          else ""
        )
        + (f", rank test p = {c['rank_test_p']:.2f}" if c.get("rank_test_p") is not None else "")
        + "."
      )
  if r.get("errors"):
    lines.append(f"- errors: {_md(json.dumps(r['errors']))}")
  return lines + [""]


def render_bench(path: str, out_dir) -> List[str]:
  """A benchmark record file (``experiments.bench --json``) as its table and ratios."""
  from experiments import bench

  with open(path) as f:
    records = json.load(f)
  if not isinstance(records, list) or not records:
    return [f"## speed — `{_rel(path, out_dir)}`", "", "No records.", ""]
  r0 = next((r for r in records if r.get("speedup_vs_reference") is not None), None)
  ref = (
    None
    if r0 is None
    else {
      "torch": r0.get("reference_torch") or "?",
      "threads": r0.get("reference_threads"),
      "stubbed": [],
    }
  )
  return [
    f"## speed — `{_rel(path, out_dir)}`",
    "",
    "```",
    bench.format_table(records),
    "",
    bench.format_reference(records, ref),
    "```",
    "",
  ]


def render(runs: Sequence[Run], refs, out_dir: str, bench_files: Sequence[str] = ()) -> str:
  out_dir = os.path.abspath(out_dir)
  disagreements: List[str] = []
  body: List[str] = []
  for run in runs:
    body += (
      render_parity(run, out_dir)
      if is_parity(run)
      else render_run(run, refs, out_dir, disagreements)
    )
  for path in bench_files:
    body += render_bench(path, out_dir)
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  head = [
    "# Mode interpolation: results against the paper and the official code",
    "",
    f"Generated {now} from {len(runs)} run(s). Intervals are 95%: Wilson score intervals "
    "for proportions, Hanley-McNeil for AUROC. A reference *disagrees beyond noise* when it "
    'lies outside this run\'s interval (a bound such as "over 95%" when the whole interval '
    'is on its wrong side). "not stated": the reference file records no figure from the '
    'paper for it (see *References used* for which parts of the paper were read); "not '
    "measured\": no official-code figure was measured for it under this run's settings. "
    "Reference figures may come from another budget than the run's: see their conditions "
    "under *References used*.",
    "",
    "## Disagreements beyond noise",
    "",
  ]
  if disagreements:
    head += [f"- {d}" for d in disagreements]
  else:
    head += [
      "None: every stated or measured reference value lies inside the corresponding "
      "run's 95% interval (or meets its bound), or has no interval to judge by."
    ]
  gallery = ["## Figure gallery", ""]
  for run in runs:
    if run.figures:
      gallery += [f"### {run_title(run)} (`{_rel(run.path, out_dir)}`)", ""]
      for f in run.figures:
        name = os.path.basename(f)
        gallery += [f"![{name}]({_rel(f, out_dir)})", f"*{name}*", ""]
  if len(gallery) == 2:
    gallery += ["No figures found.", ""]
  return "\n".join(head + [""] + body + render_references(refs) + gallery).rstrip() + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m experiments.report",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "run_dirs",
    nargs="+",
    metavar="RUN_DIR",
    help="workdirs of finished runs (experiments.main or experiments.parity)",
  )
  p.add_argument(
    "--bench",
    action="append",
    default=[],
    metavar="JSON",
    help="an experiments.bench --json record file (repeatable): its table",
  )
  p.add_argument(
    "--out", default=DEFAULT_OUT, help=f"Markdown file to write (default {DEFAULT_OUT})"
  )
  p.add_argument(
    "--references",
    default=DEFAULT_REFERENCES,
    help="reference figures (default experiments/references.json)",
  )
  args = p.parse_args(argv)
  missing = [d for d in args.run_dirs if not os.path.isdir(d)]
  if missing:
    p.error(f"not a directory: {', '.join(missing)}")
  missing = [b for b in args.bench if not os.path.isfile(b)]
  if missing:
    p.error(f"--bench: no such file: {', '.join(missing)}")
  runs = [load_run(d) for d in args.run_dirs]
  out_dir = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(out_dir, exist_ok=True)
  text = render(runs, load_references(args.references), out_dir, args.bench)
  with open(args.out, "w") as f:
    f.write(text)
  sys.stdout.write(text)
  print(f"\n[report written to {args.out}]", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
