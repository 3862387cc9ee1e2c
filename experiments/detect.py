r"""Detection study: which trajectory score tells a trained model's hallucinations apart?

  python -m experiments.detect --workdir=runs/shapes                     # the CPU default run
  python -m experiments.detect --workdir=runs/shapes --num_samples=2000
  python -m experiments.detect --workdir=runs/g1d --windows=last5,p20-35 --reductions=mean,max

Reads ``WORKDIR/config.json`` and the latest readable checkpoint of an image (SIMPLE SHAPES)
or Gaussian workdir that ``experiments.main`` trained, samples ONCE (sample ``i`` draws the
noise it draws in the main run, so the first ``sample.num_samples`` are the run's own samples)
and, inside the sampler's scan, accumulates per-pixel Welford statistics for every (window,
source): the predicted x0 as the sampler uses it, x0 on the clipped 0..255 scale (images), and
the predicted noise eps. Each per-pixel variance map is reduced by mean, max, top-16 / top-64
mean and 8x8-patch max (images), giving a family of scores (see
:mod:`mode_interp.trajectory_scores`; windows are ``lastK``, ``pA-B`` = the paper's T=1000
timesteps mapped proportionally to this run's T, ``tA-B`` = this run's timesteps).

Verdicts: the shapes checker (hallucination = any verdict but ``in_support``; also
``multiple_in_column`` vs ``in_support``) or, for Gaussians, the ``detect.k_sigma`` rule.

Honest selection: the samples are split in two halves by ``--split_seed``; the best score is
chosen by AUROC on the selection half only, and reported on the held-out half (AUROC with a
DeLong 95% interval; hallucinations removed at ``detect.keep_in_support`` in-support kept and
in-support kept at ``detect.remove_hallucinations`` removed, with Wilson intervals), next to
the paper's score (``x0|last{detect.window}|mean``) and the reimplementation's
(``x0_u8|p20-35|mean``).

Writes ``WORKDIR/study/``: ``results.json`` (every score's metrics on both halves),
``study.md``, ``figures/`` (score histograms per verdict, ROC curves per score family, what
the best score removes and keeps) and ``scores_cache.npz``, the per-sample reduced scores saved
chunk by chunk (a killed study continues from the last chunk). SIGTERM or SIGINT stops it
after the chunk in flight, cached, with exit status 143 or 130 (:mod:`mode_interp.preemption`).
"""

import json
import os
import time
from typing import NamedTuple

from mode_interp import sharding

sharding.configure_host_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import cli, config_check  # noqa: E402
from mode_interp import faults, hallucination, pipeline, preemption, samplers, train  # noqa: E402
from mode_interp import trajectory_scores as ts_lib  # noqa: E402
from mode_interp.errors import ConfigError, Preempted, WorkdirError  # noqa: E402
from mode_interp.workdir import Workdir, write_json  # noqa: E402

FLAGS = flags.FLAGS

STUDY = "study"
CACHE = os.path.join(STUDY, "scores_cache.npz")
REIMPL_WINDOW = "p20-35"
EXPERIMENTS = ("shapes", "gaussian")
VERDICT_COLORS = {
  "in_support": "#2ca02c",
  "multiple_in_column": "#d62728",
  "malformed": "#ff7f0e",
  "blank": "#7f7f7f",
  "hallucination": "#d62728",
}


class StudyError(RuntimeError):
  """Reported as one line ``error: ...`` before any work."""


# -- the workdir ---------------------------------------------------------------------------


def checkpoint_steps(path: str) -> list:
  d = os.path.join(path, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def read_workdir(path: str):
  """The workdir's config (validated), or :class:`StudyError`; creates nothing."""
  if not path:
    raise StudyError("--workdir is required (a workdir that experiments.main trained)")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise StudyError(
      f"--workdir: {path} does not exist; train one first, e.g. python -m "
      f"experiments.main --config=configs/shapes.py --workdir={path}"
    )
  if not os.path.isfile(cfg_path):
    raise StudyError(
      f"--workdir: {path} has no config.json (not a workdir of "
      f"experiments.main); train one first, e.g. python -m experiments.main "
      f"--config=configs/shapes.py --workdir={path}"
    )
  try:
    with open(cfg_path) as f:
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise StudyError(f"{cfg_path} is unreadable ({type(e).__name__}: {e})") from None
  cfg = ml_collections.ConfigDict(raw)
  exp = raw.get("experiment")
  if exp not in EXPERIMENTS:
    raise StudyError(
      f"--workdir: {path} holds a {exp!r} run; the study reads {' or '.join(EXPERIMENTS)} workdirs"
    )
  if exp == "gaussian" and raw.get("sweep", {}).get("enabled"):
    raise StudyError(
      f"--workdir: {path} holds a sweep (one model per point); the study reads "
      f"single-model workdirs"
    )
  if not checkpoint_steps(path):
    raise StudyError(
      f"--workdir: {path} holds no checkpoint (checkpoints/ is empty or "
      f"missing); train first: python -m experiments.main --config=... "
      f"--workdir={path}"
    )
  try:
    config_check.validate(cfg)
  except ConfigError as e:
    raise StudyError(f"{cfg_path}: {e}") from None
  return cfg


def data_spec(cfg):
  """(sample shape, clip_x0, is_image, hallucination labeller)."""
  if cfg.experiment == "shapes":
    from mode_interp.data import shapes

    def label(x):
      images = np.clip(x, -1.0, 1.0)
      verdicts = shapes.check(images, scale=cfg.data.scale).verdicts
      return np.asarray(verdicts)

    return pipeline.input_shape(cfg), 1.0, True, label
  from experiments import gaussian

  mixture = gaussian.make_mixture(cfg)

  def label(x):
    hal = hallucination.mixture_hallucinations(x, mixture.means, mixture.std, cfg.detect.k_sigma)
    return np.where(hal, "hallucination", "in_support")

  return (mixture.dim,), None, False, label


def make_model(cfg):
  """The config's network; a U-Net computes in ``model.dtype`` (float32 parameters)."""
  model = pipeline.make_model(cfg)
  if cfg.model.name == "unet":
    from mode_interp.networks import unet

    dtype = unet.compute_dtype(cfg.model.get("dtype", "float32"))
    if model.dtype != dtype:
      model = model.clone(dtype=dtype)
  return model


# -- the plan ------------------------------------------------------------------------------


class Plan:
  """Everything decided before any work: windows, sources, reductions, names, chunking."""

  def __init__(
    self, cfg, num_samples, chunk_size, windows_spec, reductions_spec, max_carry_mb, n_dev
  ):
    self.shape, self.clip, self.image, self.label = data_spec(cfg)
    T = cfg.diffusion.timesteps
    self.ts = samplers.reverse_timesteps(cfg.sample.sampler, T, cfg.sample.num_steps)
    paper_name = f"last{cfg.detect.window}"
    spec = ",".join([windows_spec, paper_name, REIMPL_WINDOW])  # both always present
    try:
      self.windows = ts_lib.parse_windows(windows_spec, self.ts)  # the user's own, for errors
      self.windows = ts_lib.parse_windows(spec, self.ts)
      self.reductions = ts_lib.parse_reductions(reductions_spec, self.image)
    except ValueError as e:
      raise StudyError(str(e)) from None
    if num_samples < 0:
      raise StudyError(f"--num_samples: must be >= 0 (0: sample.num_samples), got {num_samples}")
    if num_samples == 1:
      raise StudyError("--num_samples: need at least 2 samples (two halves)")
    if chunk_size < 0:
      raise StudyError(f"--chunk_size: must be >= 0 (0: automatic), got {chunk_size}")
    if max_carry_mb < 1:
      raise StudyError(f"--max_carry_mb: must be >= 1, got {max_carry_mb}")
    self.sources = samplers.SOURCES if self.image else ("x0", "eps")
    self.num_samples = num_samples or cfg.sample.num_samples
    d = int(np.prod(self.shape))
    S, W = len(self.sources), len(self.windows)
    # Carry: mean and M2 per (source, window) plus ~3 temporaries of that size per step.
    per_sample = 5 * S * W * d * 4
    cap = max(1, (max_carry_mb << 20) // per_sample)
    chunk = chunk_size or min(cfg.sample.chunk_size, cap)
    chunk = min(chunk, self.num_samples)
    self.chunk = -(-chunk // n_dev) * n_dev
    self.carry_mb = per_sample * self.chunk / 2**20
    self.names = ts_lib.score_names(self.sources, self.windows, self.reductions)
    rng = lambda name: next(w for w in self.windows if name == w.name or name in w.aliases)
    self.paper = f"x0|{rng(paper_name).name}|mean"
    self.reimpl = f"{'x0_u8' if self.image else 'x0'}|{rng(REIMPL_WINDOW).name}|mean"

  def fingerprint(self, cfg, step) -> str:
    s = cfg.sample
    return json.dumps(
      {
        "step": int(step),
        "sampler": s.sampler,
        "variance": s.variance,
        "num_steps": s.num_steps,
        "eta": s.eta,
        "clip": self.clip,
        "seed": cfg.seed,
        "window": cfg.detect.window,
        "windows": [[w.t_lo, w.t_hi] for w in self.windows],
        "sources": list(self.sources),
        "reductions": list(self.reductions),
        "dtype": cfg.model.get("dtype", "float32"),
      },
      sort_keys=True,
    )


def make_study_fn(cfg, plan, model, mesh):
  spec = samplers.SamplerSpec(
    shape=plan.shape,
    window=cfg.detect.window,
    variance=cfg.sample.variance,
    num_steps=cfg.sample.num_steps,
    eta=cfg.sample.eta,
    clip_x0=plan.clip,
    reduction="mean",
    study_windows=tuple((w.t_lo, w.t_hi) for w in plan.windows),
    study_sources=tuple(plan.sources),
  )
  fn = samplers.get_sampling_fn(
    cfg.sample.sampler, pipeline.make_schedule(cfg), pipeline.eps_fn_for(model), spec
  )

  def study_chunk(params, key, indices):
    out = fn(params, key, indices)
    scores = ts_lib.reduce_maps(out.window_variance, plan.reductions)  # [B, S, W, R]
    return out.samples, out.traj_variance, scores.reshape(scores.shape[0], -1)

  return pipeline.jit_sampler(study_chunk, cfg, mesh)


def draw(cfg, plan, wd, study_jit, params, step, mesh, cache_name=CACHE):
  """Samples and scores, chunk by chunk, with the resumable cache (``cache_name`` in the
  workdir); a stop signal is acted on between chunks (:class:`Preempted`, the finished chunks
  cached)."""
  fp = plan.fingerprint(cfg, step)
  cache = wd.load_sample_cache(cache_name, step, fp)  # None (and a log line) if stale
  parts = {"samples": [], "traj_variance": [], "scores": []}
  have = 0
  if cache is not None:
    have = min(len(cache["scores"]), plan.num_samples)
    for k in parts:
      parts[k].append(cache[k][:have])
    logging.info("%s: %d of %d samples already scored", cache_name, have, plan.num_samples)
  key = jax.random.key(cfg.seed + 1)  # the main run's sampling key: the same samples
  progress = train.Progress("study", plan.num_samples, start=have, unit="samples", every_s=0.0)
  t0 = time.time()
  drawn = 0
  while have < plan.num_samples:
    if preemption.should_stop():
      raise Preempted(
        f"study: preempted while sampling ({have} of {plan.num_samples} samples "
        f"scored and saved in {cache_name}); rerun the same command to resume"
      )
    drawn += 1
    faults.maybe_kill("study_chunk", drawn)
    n = min(plan.chunk, plan.num_samples - have)
    idx = jax.device_put(
      np.arange(have, have + plan.chunk, dtype=np.int32), sharding.data_sharding(mesh)
    )
    tc = time.time()
    out = [sharding.to_host(a)[:n] for a in study_jit(params, key, idx)]
    for k, v in zip(("samples", "traj_variance", "scores"), out):
      parts[k].append(np.asarray(v))
    have += n
    merged = {k: np.concatenate(v) for k, v in parts.items()}
    parts = {k: [v] for k, v in merged.items()}
    wd.save_sample_cache(cache_name, step, fp, merged)
    progress(have, extra=f"({time.time() - tc:.1f} s this chunk of {plan.chunk})")
  merged = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
  return merged, time.time() - t0


# -- the measurements ----------------------------------------------------------------------


def _parts(name):
  s, w, r = name.split("|")
  return s, w, r


class Measurement(NamedTuple):
  """What :func:`measure` finds (a tuple, so it unpacks in this order)."""

  rows: list  # one per score: its AUROC on the selection and held-out halves
  best: int  # index into ``plan.names`` of the best score by selection-half AUROC
  headline: dict  # role ("best", "paper", "reimplementation") -> its evaluation
  counts: dict  # verdict -> number of finite samples with it
  halves: dict  # "selection" / "held_out" -> sizes
  selection: np.ndarray  # bool [N]: in the selection half
  finite: np.ndarray  # bool [N]: every score finite


def measure(cfg, plan, scores, verdicts, split_seed) -> Measurement:
  """Every score on both halves; the best by selection-half AUROC; the headline scores."""
  n = len(verdicts)
  sel = ts_lib.split_halves(n, split_seed)
  ok = np.all(np.isfinite(scores), axis=1)
  hal = verdicts != "in_support"
  multi = verdicts == "multiple_in_column"
  keep, remove = cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  rows = []
  for k, name in enumerate(plan.names):
    s, w, r = _parts(name)
    win = next(x for x in plan.windows if x.name == w)
    row = {
      "name": name,
      "source": s,
      "window": w,
      "t_lo": win.t_lo,
      "t_hi": win.t_hi,
      "aliases": list(win.aliases),
      "reduction": r,
    }
    for half, mask in (("selection", sel & ok), ("held_out", ~sel & ok)):
      row[half] = ts_lib.auroc_delong(scores[mask, k], hal[mask])
    rows.append(row)
  best, sel_aurocs = ts_lib.select_best(plan.names, scores[ok], hal[ok], sel[ok])
  headline = {}
  requested = {"best": None, "paper": f"last{cfg.detect.window}", "reimplementation": REIMPL_WINDOW}
  for role, name in (
    ("best", plan.names[best]),
    ("paper", plan.paper),
    ("reimplementation", plan.reimpl),
  ):
    k = plan.names.index(name)
    on_sel = ts_lib.evaluate_score(scores[sel & ok, k], hal[sel & ok], keep, remove)
    held = ts_lib.evaluate_score(
      scores[~sel & ok, k], hal[~sel & ok], keep, remove, threshold=on_sel["threshold"]
    )
    m = (~sel & ok) & (multi | ~hal)
    held_multi = ts_lib.evaluate_score(scores[m, k], multi[m], keep, remove)
    s, w, r = _parts(name)
    win = next(x for x in plan.windows if x.name == w)
    headline[role] = {
      "name": name,
      "requested_window": requested[role] or w,
      "source": s,
      "window": w,
      "t_lo": win.t_lo,
      "t_hi": win.t_hi,
      "reduction": r,
      "selection": on_sel,
      "held_out": held,
      "held_out_multiple_in_column": held_multi,
    }
  counts = {str(v): int(np.sum(verdicts[ok] == v)) for v in np.unique(verdicts[ok])}
  halves = {
    h: {
      "n": int(np.sum(m & ok)),
      "hallucinations": int(np.sum(m & ok & hal)),
      "multiple_in_column": int(np.sum(m & ok & multi)),
    }
    for h, m in (("selection", sel), ("held_out", ~sel))
  }
  return Measurement(rows, best, headline, counts, halves, sel, ok)


def _fmt_ci(d):
  if d.get("auroc") is None:
    return "n/a"
  return f"{d['auroc']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def _fmt_rate(d):
  if d.get("rate") is None:
    return "n/a"
  return f"{100 * d['rate']:.1f}% [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}] ({d['count']}/{d['n']})"


def write_markdown(path, res):
  h = res["headline"]
  keep = res["keep_in_support"]
  remove = res["remove_hallucinations"]
  lines = [
    f"# Detection study: {res['workdir']}",
    "",
    f"Checkpoint step {res['checkpoint_step']}, {res['num_samples']} samples "
    f"(T = {res['timesteps']}, sampler {res['sampler']}), counts {res['counts']}; "
    f"selection half {res['halves']['selection']}, held-out half "
    f"{res['halves']['held_out']} (split seed {res['split_seed']}).",
    "",
    "## Held-out half (the best score was chosen on the selection half only)",
    "",
    f"| role | score | window (t) | scale | reduction | AUROC [95% CI] | removed at "
    f"{100 * keep:.0f}% kept | kept at {100 * remove:.0f}% removed | removed at the "
    f"selection half's threshold | AUROC multi vs in-support |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for role in ("best", "paper", "reimplementation"):
    r = h[role]
    ho = r["held_out"]
    ft = ho.get("fixed_threshold", {})
    wname = (
      r["window"]
      if r["requested_window"] == r["window"]
      else f"{r['requested_window']} = {r['window']}"
    )
    lines.append(
      f"| {role} | `{r['name']}` | {wname} ({r['t_lo']}..{r['t_hi']}) | "
      f"{r['source']} | {r['reduction']} | {_fmt_ci(ho)} | "
      f"{_fmt_rate(ho['removed_at_keep'])} | {_fmt_rate(ho['kept_at_removal'])} | "
      f"{_fmt_rate(ft.get('removed', {}))} (kept {_fmt_rate(ft.get('kept', {}))}) | "
      f"{_fmt_ci(r['held_out_multiple_in_column'])} |"
    )
  lines += [
    "",
    f"Verdict: {res['verdict']}",
    "",
    "## Every score (sorted by selection-half AUROC)",
    "",
    "| score | t | AUROC selection | AUROC held-out [95% CI] |",
    "|---|---|---|---|",
  ]
  for row in sorted(res["scores"], key=lambda r: -(r["selection"]["auroc"] or 0)):
    lines.append(
      f"| `{row['name']}` | {row['t_lo']}..{row['t_hi']} | "
      f"{_fmt_ci(row['selection']).split(' ')[0]} | {_fmt_ci(row['held_out'])} |"
    )
  lines += ["", f"Timing: {res['timing']}", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def figures(fig_dir, plan, res, scores, verdicts, samples, sel, ok):
  import matplotlib.pyplot as plt
  from mode_interp import plots

  os.makedirs(fig_dir, exist_ok=True)
  held = ~sel & ok
  hal = verdicts != "in_support"
  col = {n: i for i, n in enumerate(plan.names)}

  def hist(path, name, thr):
    s = scores[held, col[name]].astype(np.float64)
    v = verdicts[held]
    fig, ax = plt.subplots(figsize=(7, 4))
    pos = s[s > 0]
    lo = np.log10(pos.min()) if pos.size else -12
    hi = np.log10(max(s.max(), 1e-12))
    edges = np.logspace(lo - 0.1, hi + 0.1, 60)
    for verdict in np.unique(v):
      m = v == verdict
      ax.hist(
        np.maximum(s[m], edges[0]),
        edges,
        alpha=0.5,
        density=True,
        color=VERDICT_COLORS.get(verdict),
        label=f"{verdict} ({int(m.sum())})",
      )
    if thr is not None:
      ax.axvline(thr, color="k", ls="--", label="96% in-support kept")
    ax.set_xscale("log")
    ax.set_xlabel(f"{name} (held-out half)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    plots.save(fig, path)

  def roc(path, names, title):
    fig, ax = plt.subplots(figsize=(5, 5))
    for name in names:
      s = scores[held, col[name]]
      fpr, tpr = hallucination.roc_curve(s, hal[held])
      a = ts_lib.auroc_delong(s, hal[held])["auroc"]
      ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({a:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls=":")
    ax.axvline(1 - res["keep_in_support"], color="k", lw=0.5, ls="--")
    ax.set_xlabel("in-support removed (FPR)")
    ax.set_ylabel("hallucinations removed (TPR)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    plots.save(fig, path)

  h = res["headline"]
  if held.sum() and hal[held].any() and (~hal[held]).any():
    hist(
      os.path.join(fig_dir, "hist_paper.png"),
      h["paper"]["name"],
      h["paper"]["held_out"]["threshold"],
    )
    hist(
      os.path.join(fig_dir, "hist_best.png"), h["best"]["name"], h["best"]["held_out"]["threshold"]
    )
    roc(
      os.path.join(fig_dir, "roc_headline.png"),
      list(dict.fromkeys(h[r]["name"] for r in ("best", "paper", "reimplementation"))),
      "held-out half: best (selected), paper, reimplementation",
    )
    sel_auc = {r["name"]: r["selection"]["auroc"] or 0 for r in res["scores"]}
    for source in plan.sources:
      # A family: one source; per reduction, the window with the best selection AUROC.
      names = []
      for red in plan.reductions:
        cands = [n for n in plan.names if n.startswith(source + "|") and n.endswith("|" + red)]
        names.append(max(cands, key=lambda n: sel_auc[n]))
      roc(
        os.path.join(fig_dir, f"roc_{source}.png"),
        names,
        f"source {source}: best window per reduction (held-out half)",
      )
    thr = h["best"]["held_out"]["threshold"]
    if plan.image and thr is not None:
      idx = np.flatnonzero(held)
      s = scores[idx, col[h["best"]["name"]]]
      removed = idx[s > thr][np.argsort(-s[s > thr])][:32]
      kept = idx[s <= thr][:32]
      both = np.concatenate([kept, removed])
      short = {
        "in_support": "ok",
        "multiple_in_column": "multi",
        "malformed": "malf",
        "blank": "blank",
      }
      plots.image_grid(
        os.path.join(fig_dir, "best_kept_removed.png"),
        np.clip(samples[both], -1, 1),
        labels=[
          ("keep " if i < len(kept) else "drop ") + short.get(verdicts[j], "?")
          for i, j in enumerate(both)
        ],
        colors=[VERDICT_COLORS.get(verdicts[j], "k") for j in both],
        title=f"held-out: first {len(kept)} kept | {len(removed)} removed "
        f"(highest {h['best']['name']})",
      )


def verdict_line(res) -> str:
  target_removed, keep = res["remove_hallucinations"], res["keep_in_support"]
  parts = []
  for role in ("paper", "reimplementation", "best"):
    r = res["headline"][role]["held_out"]["removed_at_keep"]
    if r["rate"] is None:
      return "no verdict: a class is empty on the held-out half"
    parts.append(
      f"{role} removes {100 * r['rate']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
    )
  best = max(
    res["headline"][r]["held_out"]["removed_at_keep"]["rate"]
    for r in ("paper", "reimplementation", "best")
  )
  reached = best >= target_removed
  return (
    f"{'REACHED' if reached else 'NOT reached'}: at {100 * keep:.0f}% in-support kept, "
    + "; ".join(parts)
    + f" of the held-out hallucinations (target >= "
    f"{100 * target_removed:.0f}%"
    + ("" if reached else f"; short by {100 * (target_removed - best):.1f} points")
    + ")"
  )


# -- the command ---------------------------------------------------------------------------


def run_study(
  workdir: str,
  num_samples: int = 0,
  chunk_size: int = 0,
  windows: str = ts_lib.DEFAULT_WINDOWS,
  reductions: str = ",".join(ts_lib.REDUCTIONS),
  split_seed: int = 0,
  max_carry_mb: int = 768,
) -> dict:
  """The study (see the module docstring); raises :class:`StudyError` / :class:`WorkdirError`
  for what can be found before any work. Returns the results dict."""
  t_start = time.time()
  cfg = read_workdir(workdir)
  mesh = sharding.make_mesh(cfg.num_devices or None)
  plan = Plan(
    cfg, num_samples, chunk_size, windows, reductions, max_carry_mb, sharding.num_shards(mesh)
  )
  wd = Workdir(workdir)
  wd.lock()
  try:
    os.makedirs(wd.file(STUDY), exist_ok=True)
    logging.info(
      "study: %s, %d samples in chunks of %d (carry ~%.0f MB), %d windows x %d "
      "sources x %d reductions = %d scores",
      wd.path,
      plan.num_samples,
      plan.chunk,
      plan.carry_mb,
      len(plan.windows),
      len(plan.sources),
      len(plan.reductions),
      len(plan.names),
    )
    for w in plan.windows:
      logging.info(
        "study: window %s", w.label + (f" (= {', '.join(w.aliases)})" if w.aliases else "")
      )
    trainer = pipeline.make_trainer(cfg, mesh)
    manager = wd.checkpoint_manager()
    state, step = train.restore_checkpoint(
      manager, trainer.abstract_state(jnp.zeros((1,) + plan.shape, jnp.float32))
    )
    manager.close()
    if state is None:
      raise StudyError(f"--workdir: no readable checkpoint in {wd.checkpoints}")
    logging.info("study: checkpoint at step %d", step)
    model = make_model(cfg)
    study_jit = make_study_fn(cfg, plan, model, mesh)
    arrays, sample_s = draw(cfg, plan, wd, study_jit, state.ema_params, step, mesh)
    t_eval = time.time()
    samples, tv, scores = arrays["samples"], arrays["traj_variance"], arrays["scores"]
    finite = hallucination.finite_rows(samples)
    verdicts = np.full(len(samples), "non_finite", dtype="<U20")
    verdicts[finite] = plan.label(samples[finite])
    scores = np.where(finite[:, None], scores, np.nan)
    rows, best, headline, counts, halves, sel, ok = measure(cfg, plan, scores, verdicts, split_seed)
    # Consistency: the family's paper score is the sampler's own trajectory variance, and
    # (same key, same indices) the main run's cached one.
    k_paper = plan.names.index(plan.paper)
    consistency = {
      "paper_vs_sampler_max_rel_diff": float(
        np.nanmax(np.abs(scores[:, k_paper] - tv) / np.maximum(np.abs(tv), 1e-30))
      )
      if len(tv)
      else None
    }
    main = wd.load_arrays("samples.npz")
    if main is not None and int(main.get("step", -1)) == step and "traj_variance" in main:
      m = min(len(main["traj_variance"]), len(tv))
      if m:
        consistency["main_run_samples_compared"] = m
        consistency["main_run_max_abs_sample_diff"] = float(
          np.max(np.abs(main["samples"][:m] - samples[:m]))
        )
        consistency["main_run_traj_variance_max_rel_diff"] = float(
          np.max(np.abs(main["traj_variance"][:m] - tv[:m]) / np.maximum(np.abs(tv[:m]), 1e-30))
        )
    res = {
      "workdir": wd.path,
      "experiment": cfg.experiment,
      "checkpoint_step": step,
      "num_samples": int(len(samples)),
      "num_non_finite": int((~ok).sum()),
      "timesteps": cfg.diffusion.timesteps,
      "sampler": cfg.sample.sampler,
      "keep_in_support": cfg.detect.keep_in_support,
      "remove_hallucinations": cfg.detect.remove_hallucinations,
      "split_seed": split_seed,
      "counts": counts,
      "halves": halves,
      "windows": [
        {"name": w.name, "t_lo": w.t_lo, "t_hi": w.t_hi, "aliases": list(w.aliases)}
        for w in plan.windows
      ],
      "window_mapping": "pA-B: t_lo = floor(A*T/1000), t_hi = max(t_lo, ceil((B+1)*T/1000)-1)",
      "sources": list(plan.sources),
      "reductions": list(plan.reductions),
      "best_selected_on_selection_half": plan.names[best],
      "headline": headline,
      "consistency": consistency,
      "scores": rows,
      "machine": {
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
      },
    }
    res["verdict"] = verdict_line(res)
    figures(wd.file(os.path.join(STUDY, "figures")), plan, res, scores, verdicts, samples, sel, ok)
    res["timing"] = {
      "sampling_s_this_run": round(sample_s, 1),
      "chunk_size": plan.chunk,
      "evaluation_s": round(time.time() - t_eval, 1),
      "total_s_this_run": round(time.time() - t_start, 1),
    }
    write_json(wd.file(os.path.join(STUDY, "results.json")), res)
    write_markdown(wd.file(os.path.join(STUDY, "study.md")), res)
    logging.info("study: best (selection half) %s; %s", plan.names[best], res["verdict"])
    return res
  finally:
    wd.unlock()


def main(argv):
  cli.start(argv)
  cli.run_or_exit(
    lambda: run_study(
      FLAGS.workdir,
      FLAGS.num_samples,
      FLAGS.chunk_size,
      FLAGS.windows,
      FLAGS.reductions,
      FLAGS.split_seed,
      FLAGS.max_carry_mb,
    ),
    (StudyError, WorkdirError, ConfigError),
  )


def define_flags():
  """The command's flags (defined only when run as a program: ``experiments.main``, which
  tests import alongside, has its own ``--workdir``)."""
  flags.DEFINE_string("workdir", None, "A trained workdir (config.json + checkpoints/).")
  flags.DEFINE_integer("num_samples", 0, "Samples to draw (0: the run's sample.num_samples).")
  flags.DEFINE_integer(
    "chunk_size",
    0,
    "Samples per sampler call (0: sample.chunk_size, capped "
    "so the scan's per-window statistics fit in --max_carry_mb).",
  )
  flags.DEFINE_string(
    "windows", ts_lib.DEFAULT_WINDOWS, "Comma-separated windows: " + ts_lib.WINDOW_FORMS + "."
  )
  flags.DEFINE_string(
    "reductions",
    ",".join(ts_lib.REDUCTIONS),
    "Comma-separated reductions of "
    "each per-pixel variance map: " + ", ".join(ts_lib.REDUCTIONS) + ".",
  )
  flags.DEFINE_integer("split_seed", 0, "Seed of the selection / held-out split.")
  flags.DEFINE_integer("max_carry_mb", 768, "Memory budget of the per-window statistics.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
