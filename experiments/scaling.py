"""SIMPLE SHAPES detection against the model: the detection study along training, per model.

For every model of ``scaling.models`` (a variant of the config's U-Net recipe: wider,
attention at a higher resolution, the paper's T = 1000, the paper's 64x64 canvas; see
:data:`MODEL_VARIANTS`) and every training seed, one model is trained in its own workdir
under ``points/``, and at each step count of ``scaling.steps`` (doubling: training
continues from the previous count, the constant learning rate makes that the same as
training there directly) the detection study of :mod:`experiments.detect` runs on its
checkpoint: the paper's score, the public reimplementation's, the best held-out score, each
with intervals, for all hallucinations and for multiple-in-column vs in-support alone,
beside the multiple-in-column rate. Extra seeds (``scaling.seeds`` beyond the first) train
the ``default`` model only, up to ``scaling.seed_steps``, to show the seed-to-seed spread.

Every point is resumable: a finished (model, seed, step) is never trained or studied again,
a point in progress resumes from its checkpoint and its cached study chunks. Training cost
is recorded as seconds and as FLOPs (XLA's cost analysis of one step times the steps).
"""

import dataclasses
import json
import os
import time
from typing import List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments import shapes as shapes_exp
from experiments.rows import Row, proportion_row
from mode_interp import hallucination, pipeline, plots, sharding
from mode_interp.errors import ConfigError
from mode_interp.workdir import Workdir, write_json


def _default(c):
  del c


def _attn16(c):
  c.model.attn_resolutions = tuple(sorted(set(c.model.attn_resolutions) | {16}))


def _wide(c):
  c.model.ch = 2 * c.model.ch


def _t1000(c):
  c.diffusion.timesteps = 1_000
  c.diffusion.beta_start = 1e-4
  c.diffusion.beta_end = 0.02


def _canvas64(c):
  c.data.scale = 1.0
  c.model.ch_mult = tuple(c.model.ch_mult) + (c.model.ch_mult[-1],)


# name -> (what it changes, the change): each a function of a point's config.
MODEL_VARIANTS = {
  "default": ("the config's U-Net", _default),
  "attn16": ("self-attention also at 16x16 (global mixing one level higher)", _attn16),
  "wide": ("twice the channels", _wide),
  "t1000": ("the paper's T = 1000 schedule (betas 1e-4 .. 0.02), all 1,000 steps sampled", _t1000),
  "canvas64": ("the paper's 64x64 canvas (data.scale = 1.0), one more level", _canvas64),
}


@dataclasses.dataclass(frozen=True)
class Point:
  model: str
  seed: int
  steps: tuple  # the step counts studied, increasing

  @property
  def name(self) -> str:
    return f"{self.model}_seed{self.seed}"


def model_names(cfg) -> list:
  return [m.strip() for m in str(cfg.scaling.models).split(",") if m.strip()]


def points(cfg) -> List[Point]:
  """Every trained model of the sweep, in the order they are run."""
  steps = tuple(int(s) for s in cfg.scaling.steps)
  seeds = tuple(int(s) for s in cfg.scaling.seeds)
  out = [Point(m, seeds[0], steps) for m in model_names(cfg)]
  extra = tuple(int(s) for s in cfg.scaling.seed_steps)
  for seed in seeds[1:]:
    out.append(Point("default", seed, extra))
  return out


ORDERS = ("breadth", "depth")


def schedule(cfg) -> List[Point]:
  """The training jobs in the order they run, each a point of :func:`points` cut to the step
  counts it has reached by the end of that job. ``depth``: each model to its last step count
  before the next model starts; ``breadth``: every model to its k-th step count before any
  goes further, so a run stopped early has every model's first points."""
  pts = points(cfg)
  if cfg.scaling.get("order", "depth") == "depth":
    return pts
  out = []
  for k in range(max(len(p.steps) for p in pts)):
    out += [Point(p.model, p.seed, p.steps[: k + 1]) for p in pts if k < len(p.steps)]
  return out


def point_config(cfg, point: Point, steps: int):
  """The ``configs/shapes.py``-experiment config of one model at one step count."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  del c["scaling"]
  c.experiment = "shapes"
  c.seed = point.seed
  MODEL_VARIANTS[point.model][1](c)
  c.train.steps = int(steps)
  c.train.ckpt_every = min(int(c.train.ckpt_every), int(steps))
  return c


def step_flops(cfg, train_x, mesh):
  """FLOPs of one training step of ``cfg`` (XLA's cost analysis, without micro-batches)."""
  c = cfg.copy_and_resolve_references()
  c.train.micro_batch = 0
  trainer = pipeline.make_trainer(c, mesh)
  state = jax.eval_shape(trainer.init, jnp.asarray(train_x[:1]), jax.random.key(0))
  batch = jnp.zeros((c.train.batch_size,) + train_x.shape[1:], jnp.float32)
  try:
    ca = trainer.step.lower(state, batch, jax.random.key(0)).compile().cost_analysis()
  except Exception:  # noqa: BLE001 - a backend without cost analysis: no FLOPs column
    return None
  ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
  return float((ca or {}).get("flops") or 0.0) or None


def _headline(res: dict) -> dict:
  """The study's headline scores (held-out half), reduced to what the table shows."""
  out = {}
  for role in ("paper", "reimplementation", "best"):
    h = res["headline"][role]
    held, multi = h["held_out"], h["held_out_multiple_in_column"]
    out[role] = {
      "name": h["name"],
      "auroc": held.get("auroc"),
      "auroc_ci95": held.get("ci95"),
      "removed_at_keep": held["removed_at_keep"],
      "multiple_in_column_auroc": multi.get("auroc"),
      "multiple_in_column_auroc_ci95": multi.get("ci95"),
      "multiple_in_column_removed_at_keep": multi["removed_at_keep"],
    }
  return out


def _rate(count: int, n: int) -> dict:
  lo, hi = hallucination.binomial_interval(int(count), int(n))
  return {"rate": count / n if n else None, "count": int(count), "n": int(n), "ci95": [lo, hi]}


def study_row(
  model: str, seed: int, steps: int, description: str, flops, train_s, study_s, res: dict
) -> dict:
  """One row of the table: a model at a step count, from its detection study ``res``."""
  counts = res["counts"]
  n = sum(counts.values())
  multi = counts.get("multiple_in_column", 0)
  return {
    "model": model,
    "seed": seed,
    "step": steps,
    "description": description,
    "flops_per_step": flops,
    "train_flops": flops * steps if flops else None,
    "train_seconds_segment": None if train_s is None else round(train_s, 1),
    "study_seconds": None if study_s is None else round(study_s, 1),
    "num_samples": n,
    "counts": counts,
    "multiple_in_column": _rate(multi, n),
    "hallucination": _rate(n - counts.get("in_support", 0), n),
    "scores": _headline(res),
    "verdict": res["verdict"],
  }


def run_point(cfg, wd, mesh, point: Point, train_x) -> list:
  """Trains one model along its step counts and studies each; returns its table rows."""
  from experiments import detect  # the study (imports the sampler stack)

  path = wd.file(os.path.join("points", point.name))
  os.makedirs(path, exist_ok=True)
  rows = []
  flops = None
  for steps in point.steps:
    done = os.path.join(path, f"study_step{steps}.json")
    if os.path.exists(done):
      with open(done) as f:
        rows.append(json.load(f))
      continue
    c = point_config(cfg, point, steps)
    beyond = [s_ for s_ in detect.checkpoint_steps(path) if s_ > steps]
    if beyond:
      raise ConfigError(
        "scaling.steps",
        f"{path} already holds a checkpoint at step "
        f"{max(beyond)}, past the step count {steps} not yet studied there; a "
        "model cannot be trained back: keep the step counts of this workdir "
        "or use a new --workdir",
      )
    pwd = Workdir(path)
    pwd.lock()
    try:
      pwd.write_config(c.to_dict())
      trainer = pipeline.make_trainer(c, mesh)
      t0 = time.time()
      state = pipeline.train_model(c, train_x, pwd, trainer=trainer, label=f"train/{point.name}")
      train_s = time.time() - t0
    finally:
      pwd.unlock()
    if int(jax.device_get(state.step)) != steps:
      raise RuntimeError(f"{point.name}: trained to step {int(state.step)}, expected {steps}")
    if flops is None:
      flops = step_flops(c, train_x, mesh)
    t0 = time.time()
    res = detect.run_study(
      path, num_samples=int(cfg.scaling.num_samples), chunk_size=int(cfg.scaling.study_chunk)
    )
    study_s = time.time() - t0
    row = study_row(
      point.model, point.seed, steps, MODEL_VARIANTS[point.model][0], flops, train_s, study_s, res
    )
    write_json(done, row)
    logging.info(
      "scaling: %s step %d: multiple in column %d/%d; paper AUROC %s; %s",
      point.name,
      steps,
      row["multiple_in_column"]["count"],
      row["num_samples"],
      row["scores"]["paper"]["auroc"],
      res["verdict"],
    )
    rows.append(row)
  return rows


def collect_rows(paths) -> list:
  """Every table row (``study_step<N>.json``) under ``paths`` (directories, searched
  recursively, or the files themselves), in model, seed, step order."""
  import glob

  rows = []
  for p in paths:
    files = (
      [p]
      if os.path.isfile(p)
      else glob.glob(os.path.join(p, "**", "study_step*.json"), recursive=True)
    )
    for f in files:
      with open(f) as fh:
        rows.append(json.load(fh))
  if not rows:
    raise ConfigError("--points", f"no study_step<N>.json under {', '.join(paths)}")
  return sorted(rows, key=lambda r: (r["model"], r["seed"], r["step"]))


def external_row(workdir: str, label: str) -> dict:
  """The row of a SIMPLE SHAPES workdir trained by ``experiments.main`` and studied by
  ``experiments.detect`` elsewhere (an accelerator's ``configs/shapes.py:gpu`` run), so its
  point joins the figure: FLOPs from XLA's cost analysis of its training step on this
  machine's backend, no seconds (they are the other machine's)."""
  cfg_path = os.path.join(workdir, "config.json")
  study = os.path.join(workdir, "study", "results.json")
  if not os.path.isfile(cfg_path):
    raise ConfigError(
      "--add_study", f"{cfg_path} does not exist: not a workdir of experiments.main"
    )
  with open(cfg_path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  if cfg.get("experiment") != "shapes":
    raise ConfigError(
      "--add_study", f"{workdir} holds a {cfg.get('experiment')!r} run; allowed: a 'shapes' workdir"
    )
  if not os.path.isfile(study):
    raise ConfigError(
      "--add_study",
      f"{study} does not exist: run python -m experiments.detect --workdir={workdir} first",
    )
  with open(study) as f:
    res = json.load(f)
  x = jnp.zeros((1,) + pipeline.input_shape(cfg), jnp.float32)
  mesh = sharding.make_mesh(cfg.num_devices or None)
  flops = step_flops(cfg, x, mesh)
  return study_row(
    label, int(cfg.seed), int(res["checkpoint_step"]), f"{label}: {workdir}", flops, None, None, res
  )


# The two predictors of detection that fits() compares: training compute and how often the
# model still draws two shapes in one column (how far training has gone).
PREDICTORS = {
  "log2_train_tflop": lambda r: float(np.log2(r["train_flops"] / 1e12)),
  "multiple_in_column_rate": lambda r: float(r["multiple_in_column"]["rate"]),
}


def fits(table, model: str = "default", seed=None) -> dict:
  """The paper's score for two-in-one vs in-support images (AUROC) as a straight line in each
  of ``PREDICTORS``, fitted by least squares to ``model``'s rows (of ``seed``; default the
  first seed it has), with every other row's residual from that line beside its interval's
  half-width: a predictor that carries to other models and seeds leaves residuals within
  their intervals."""

  def y(r):
    return r["scores"]["paper"].get("multiple_in_column_auroc")

  rows = [r for r in table if y(r) is not None and r.get("train_flops")]
  ref_seeds = sorted({r["seed"] for r in rows if r["model"] == model})
  if not ref_seeds:
    return {}
  seed = ref_seeds[0] if seed is None else seed
  ref = [r for r in rows if r["model"] == model and r["seed"] == seed]
  if len(ref) < 2:
    return {}
  out = {}
  for name, fx in PREDICTORS.items():
    xs = np.array([fx(r) for r in ref])
    ys = np.array([y(r) for r in ref])
    slope, intercept = np.polyfit(xs, ys, 1)
    others = []
    for r in rows:
      if r in ref:
        continue
      lo, hi = r["scores"]["paper"].get("multiple_in_column_auroc_ci95") or (None, None)
      resid = y(r) - (intercept + slope * fx(r))
      half = None if lo is None or hi is None else (hi - lo) / 2
      others.append(
        {
          "model": r["model"],
          "seed": r["seed"],
          "step": r["step"],
          "auroc": y(r),
          "residual": float(resid),
          "ci_half_width": half,
          "within_interval": None if half is None else bool(abs(resid) <= half),
        }
      )
    res = ys - (intercept + slope * xs)
    out[name] = {
      "fitted_to": f"{model} seed {seed}",
      "points": len(ref),
      "intercept": float(intercept),
      "slope": float(slope),
      "rms_residual": float(np.sqrt(np.mean(res**2))),
      "others": others,
      "others_rms_residual": float(np.sqrt(np.mean([o["residual"] ** 2 for o in others])))
      if others
      else None,
    }
  return out


def _curves(table):
  lines = {}
  for r in table:
    key = f"{r['model']} seed {r['seed']}"
    lines.setdefault(key, []).append(r)
  return lines


def check_config(cfg) -> None:
  """The detection-along-training sweep (experiments/scaling.py): its own fields, then every
  model and step count it will train, validated as the shapes experiment it runs."""
  import numbers
  from experiments import config_check as cc

  names = model_names(cfg)
  bad = [m for m in names if m not in MODEL_VARIANTS]
  if not names or bad or len(set(names)) != len(names):
    raise ConfigError(
      "scaling.models",
      f"must name distinct models of "
      f"{', '.join(MODEL_VARIANTS)} (comma-separated), got "
      f"{cfg.scaling.models!r}",
    )
  steps = cc.increasing(cfg, "scaling.steps")
  seeds = tuple(cc.get(cfg, "scaling.seeds"))
  if (
    not seeds
    or len(set(seeds)) != len(seeds)
    or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds)
  ):
    raise ConfigError("scaling.seeds", f"must be distinct non-negative integers, got {seeds!r}")
  extra = cc.increasing(cfg, "scaling.seed_steps", allow_empty=len(seeds) == 1)
  if set(extra) - set(steps):
    raise ConfigError("scaling.seed_steps", f"must be among scaling.steps {steps}, got {extra}")
  cc.choice(cfg, "scaling.order", ORDERS)
  cc.integer(cfg, "scaling.num_samples", lo=4)
  cc.integer(cfg, "scaling.study_chunk", lo=0)
  for p in points(cfg):
    c = point_config(cfg, p, p.steps[-1])
    if c.train.warmup_steps >= p.steps[0]:
      raise ConfigError(
        "scaling.steps",
        f"the first step count {p.steps[0]} must exceed train.warmup_steps={c.train.warmup_steps}",
      )
    try:
      cc.validate(c)
    except ConfigError as e:
      raise ConfigError(
        "scaling.models", f"model {p.model!r} gives an invalid config: {e}"
      ) from None


def run(cfg, wd, mesh, info=None):
  t0 = time.time()
  pts = points(cfg)
  os.makedirs(wd.checkpoints, exist_ok=True)  # empty: each model's live in points/*/checkpoints
  # One training set per scale (the canvas variant draws its own, the same seed).
  train_sets = {}
  order = [(p.model, p.seed, n) for p in pts for n in p.steps]  # the table's order
  done = {}
  table = []
  for p in schedule(cfg):
    scale = point_config(cfg, p, p.steps[0]).data.scale
    if scale not in train_sets:
      c = point_config(cfg, p, p.steps[0])
      train_sets[scale] = shapes_exp.load_training_set(c)[1]
    for r in run_point(cfg, wd, mesh, p, train_sets[scale]):
      done[(r["model"], r["seed"], r["step"])] = r
    table = [done[k] for k in order if k in done]
    write_json(wd.file("table.json"), table)
  lines = _curves(table)
  if table:
    plots.scaling_curves(wd.figure("detection_vs_compute.png"), lines)
  res = {
    "experiment": "scaling",
    "data": cfg.data.name,
    **(info or {}),
    "models": {m: MODEL_VARIANTS[m][0] for m in model_names(cfg)},
    "steps": list(cfg.scaling.steps),
    "seeds": list(cfg.scaling.seeds),
    "seed_steps": list(cfg.scaling.seed_steps),
    "num_samples": cfg.scaling.num_samples,
    "table": table,
    "fits": fits(table),
    "seconds_this_run": time.time() - t0,
  }
  wd.write_results(res)
  return res


def report_rows(res, cfg) -> List[Row]:
  """The multiple-in-column rate and the paper's score per (model, seed, step)."""
  del cfg
  rows = []
  for r in res.get("table") or []:
    tag = f"{r['model']}/seed{r['seed']}/step{r['step']}"
    m = r["multiple_in_column"]
    rows.append(
      proportion_row(
        f"{tag}.multiple_in_column",
        f"{tag}: two shapes in one column",
        m["rate"],
        m["n"],
        m["count"],
        m["ci95"],
      )
    )
    p = r["scores"]["paper"]["removed_at_keep"]
    rows.append(
      proportion_row(
        f"{tag}.paper_removed",
        f"{tag}: paper's score, removed at 96% kept (held out)",
        p["rate"],
        p["n"],
        p["count"],
        p["ci95"],
      )
    )
  return rows


def main(argv):
  """``python -m experiments.scaling --points=DIR [--add_study=W --label=L] --out=FIG``:
  the figure of detection against training compute from finished points, with the points
  of other studied workdirs added (``experiments/device_check.sh`` adds its accelerator's)."""
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {argv[1:]}")
  from absl import flags

  f = flags.FLAGS
  try:
    table = collect_rows(f.points)
    extra = [external_row(w, f.label or os.path.basename(os.path.normpath(w))) for w in f.add_study]
  except ConfigError as e:
    raise SystemExit(f"error: {e}")
  table += extra
  plots.scaling_curves(f.out, _curves(table))
  if f.json:
    write_json(f.json, extra)
  fitted = fits(table)
  if fitted:
    path = os.path.join(os.path.dirname(os.path.abspath(f.out)), "detection_fits.json")
    write_json(path, fitted)
    for name, fit in fitted.items():
      logging.info(
        "scaling: AUROC (two-in-one vs in support) = %.3f %+.3f * %s over %s (%d points, rms "
        "%.3f); the other %d rows' rms residual %s",
        fit["intercept"],
        fit["slope"],
        name,
        fit["fitted_to"],
        fit["points"],
        fit["rms_residual"],
        len(fit["others"]),
        None if fit["others_rms_residual"] is None else round(fit["others_rms_residual"], 3),
      )
  for r in extra:
    logging.info(
      "scaling: added %s step %d (%s training FLOPs): two in one column %.3f; paper's AUROC %s; %s",
      r["model"],
      r["step"],
      r["train_flops"],
      r["multiple_in_column"]["rate"],
      r["scores"]["paper"]["auroc"],
      r["verdict"],
    )
  logging.info("scaling: wrote %s (%d rows)", f.out, len(table))


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_multi_string(
    "points",
    ["reports/latest/shapes_scaling"],
    "Directories (searched recursively) or files of finished points.",
  )
  flags.DEFINE_multi_string(
    "add_study",
    [],
    "Workdirs trained by experiments.main and studied by experiments.detect to add as points.",
  )
  flags.DEFINE_string("label", "", "The added points' label (default: the workdir's name).")
  flags.DEFINE_string("out", "detection_vs_compute.png", "The figure to write.")
  flags.DEFINE_string("json", "", "Where to write the added rows (optional).")
  app.run(main)
