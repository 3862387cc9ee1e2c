"""Gaussian-mixture experiments: mode interpolation, the exact-score control,
and trajectory-variance detection (1D mixture, 5x5 grid, rotated grid)."""

import json
import numbers
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mode_interp import diffusion, exact_score, hallucination, pipeline, plots, samplers
from mode_interp.data import gaussians
from mode_interp.errors import ConfigError
from mode_interp.workdir import write_json
from typing import List

from experiments import config_check
from experiments.rows import Row, detection_rows, get, is_number, proportion_row, rate_block


def make_mixture(cfg) -> gaussians.Mixture:
  means = tuple(cfg.data.means) if cfg.data.name == "gaussian1d" else None
  return gaussians.make_mixture(
    cfg.data.name,
    means=means or (1.0, 2.0, 3.0),
    std=cfg.data.std,
    imbalance=float(cfg.data.get("imbalance", 1.0)),
  )


def hallucinations_between(samples, mixture) -> dict:
  """Where the hallucinations of an unequal mixture lie: counted by the weight class of
  their two nearest modes (``heavy-heavy``, ``heavy-light``, ``light-light``), and, for
  the heavy-light ones, ``position_heavy_to_light``: the median of their position along
  the segment from the heavy mode (0) to the light one (1), and the share nearer the
  heavy mode (``share_nearer_heavy``)."""
  heavy = gaussians.heavy_modes(mixture)
  x = np.asarray(samples, np.float64).reshape(len(samples), mixture.dim)  # N may be 0
  out = {
    "heavy-heavy": 0,
    "heavy-light": 0,
    "light-light": 0,
    "position_heavy_to_light": None,
    "share_nearer_heavy": None,
  }
  if len(x):
    two = hallucination.nearest_modes(x, mixture.means, 2)
    n_heavy = heavy[two].sum(axis=1)
    for name, k in (("heavy-heavy", 2), ("heavy-light", 1), ("light-light", 0)):
      out[name] = int((n_heavy == k).sum())
    mixed = n_heavy == 1
    if mixed.any():
      pair = two[mixed]
      h = np.where(heavy[pair[:, 0]], pair[:, 0], pair[:, 1])
      l = np.where(heavy[pair[:, 0]], pair[:, 1], pair[:, 0])
      a, b = mixture.means[h], mixture.means[l]
      pos = ((x[mixed] - a) * (b - a)).sum(1) / ((b - a) ** 2).sum(1)
      out["position_heavy_to_light"] = float(np.median(pos))
      out["share_nearer_heavy"] = float(np.mean(pos < 0.5))
  return out


def sample_and_cache(cfg, wd, name, sample_jit, params, num_samples, mesh, step):
  """Samples once per (checkpoint step, sampling settings); reruns reuse the file."""
  t0 = time.time()
  out = pipeline.draw_samples(
    cfg, sample_jit, params, num_samples, mesh=mesh, label=name, workdir=wd, cache=name, step=step
  )
  return out.samples, out.traj_variance, time.time() - t0


def evaluate(cfg, wd, mesh, mixture, train_data, params, step, figures=True, prefix=""):
  """Samples with the learned and the exact score and measures everything."""
  shape = (mixture.dim,)
  schedule = pipeline.make_schedule(cfg)
  model = pipeline.make_model(cfg)
  n = cfg.sample.num_samples
  learned_jit = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), shape, mesh=mesh)
  exact_eps = exact_score.make_exact_eps_fn(schedule, mixture.means, mixture.std, mixture.weights)
  exact_jit = pipeline.make_sampler(cfg, exact_eps, shape, mesh=mesh)

  x, tv, secs = sample_and_cache(
    cfg, wd, f"{prefix}samples.npz", learned_jit, params, n, mesh, step
  )
  xe, tve, _ = sample_and_cache(
    cfg, wd, f"{prefix}exact_samples.npz", exact_jit, None, n, mesh, step
  )
  k = cfg.detect.k_sigma
  # A diverged trajectory (an undertrained or unstable model) gives non-finite samples or
  # variances: counted and reported, left out of every rate, metric and figure.
  ok = hallucination.finite_or_warn(x, tv, "learned-score samples")
  ok_exact = hallucination.finite_or_warn(xe, tve, "exact-score samples")
  x, tv, xe = x[ok], tv[ok], xe[ok_exact]
  hal = hallucination.mixture_hallucinations(x, mixture.means, mixture.std, k)
  hal_exact = hallucination.mixture_hallucinations(xe, mixture.means, mixture.std, k)
  hal_train = hallucination.mixture_hallucinations(train_data, mixture.means, mixture.std, k)
  det = hallucination.detection_metrics(
    tv, hal, cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  )
  covered = (
    np.unique(hallucination.nearest_mode(x[~hal], mixture.means)).size if (~hal).any() else 0
  )
  steps = (
    cfg.diffusion.timesteps
    if cfg.sample.sampler == "ddpm"
    else len(samplers.ddim_timesteps(cfg.diffusion.timesteps, cfg.sample.num_steps))
  )
  res = {
    "num_samples": n,
    # Rates are over the finite samples; `non_finite` counts the others.
    "non_finite": hallucination.non_finite_report(ok),
    "hallucination_rate": float(hal.mean()) if len(hal) else None,
    "hallucination": hallucination.rate_with_interval(hal),
    "true_score_non_finite": hallucination.non_finite_report(ok_exact),
    "true_score_hallucination_rate": float(hal_exact.mean()) if len(hal_exact) else None,
    "true_score_hallucination": hallucination.rate_with_interval(hal_exact),
    "rule": {
      "k_sigma": k,
      "false_positive_rate_training_data": float(hal_train.mean()),
      "false_positive_rate_theory": hallucination.rule_false_positive_rate(mixture.dim, k),
    },
    "modes_covered": int(covered),
    "num_modes": len(mixture.means),
    "imbalance": float(cfg.data.get("imbalance", 1.0)),
    "detection": det,
    "trajectory_variance": {
      "median_in_support": float(np.median(tv[~hal])) if (~hal).any() else None,
      "median_hallucination": float(np.median(tv[hal])) if hal.any() else None,
    },
    # Wall time of this invocation (near 0 when the samples were cached by an
    # earlier run); `python -m experiments.bench` measures sampler speed.
    "sampling": {"sampler": cfg.sample.sampler, "reverse_steps": steps, "seconds_this_run": secs},
  }
  if mixture.weights is not None:
    res["hallucinations_between"] = hallucinations_between(x[hal], mixture)
    res["true_score_hallucinations_between"] = hallucinations_between(xe[hal_exact], mixture)
    # Per-mode in-support share against the weight: does the model keep the imbalance?
    counts = np.bincount(
      hallucination.nearest_mode(x[~hal], mixture.means), minlength=len(mixture.means)
    )
    res["in_support_share_heavy"] = float(
      counts[gaussians.heavy_modes(mixture)].sum() / max(counts.sum(), 1)
    )
    res["weight_share_heavy"] = float(mixture.mode_weights[gaussians.heavy_modes(mixture)].sum())
  if not figures:
    return res
  if not len(x):
    logging.warning("no finite learned-score samples: no figures drawn")
    return res
  f = wd.figure
  if mixture.dim == 1:
    plots.hist_1d(f(f"{prefix}histogram.png"), train_data, x, exact=xe, means=mixture.means)
  else:
    plots.scatter_2d(
      f(f"{prefix}scatter.png"), train_data[:20_000], x, hal, exact=xe, title=cfg.data.name
    )
  _predictor_figure(cfg, f(f"{prefix}predictor.png"), mixture, schedule, model, params)
  groups = {"in support": ~hal, "hallucination": hal}
  plots.detection_figures(
    f(f"{prefix}trajectory_variance.png"), f(f"{prefix}roc.png"), tv, groups, hal, det
  )
  return res


def _predictor_figure(cfg, path, mixture, schedule, model, params):
  """Learned vs exact E[x0 | x_t] along a line through neighbouring modes."""
  means = mixture.means
  if mixture.dim == 1:
    xs = np.linspace(means.min() - 0.5, means.max() + 0.5, 600)
    pts = xs[:, None]
  else:  # the line through the row of modes nearest the origin, along the first axis
    row = means[np.argmin(np.abs(means[:, 1]))][1]
    xs = np.linspace(means[:, 0].min() - 0.2, means[:, 0].max() + 0.2, 600)
    pts = np.stack([xs, np.full_like(xs, row)], 1)
  learned, exact = [], []
  times = [t for t in cfg.plots.predictor_times if t < schedule.timesteps]
  apply = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
  for t in times:
    # Points at the scale of x_t: the mode line scaled by sqrt(alphas_bar_t).
    xt = jnp.asarray(pts * float(schedule.sqrt_alphas_bar[t]), jnp.float32)
    tb = jnp.full((len(xt),), t, jnp.int32)
    eps = apply(params, xt, tb)
    learned.append(np.asarray(diffusion.x0_from_eps(schedule, xt, tb, eps))[:, 0])
    exact.append(
      np.asarray(
        exact_score.mixture_posterior_mean(schedule, means, mixture.std, xt, tb, mixture.weights)
      )[:, 0]
    )
  plots.predictor_curves(
    path, xs, learned, exact, times, means=np.unique(means[:, 0]), xlabel="x_t / sqrt(alpha_bar_t)"
  )


def run_single(cfg, wd, mesh, mixture, train_data, subdir="", prefix=""):
  t0 = time.time()
  state = pipeline.train_model(
    cfg,
    train_data,
    wd,
    trainer=pipeline.make_trainer(cfg, mesh),
    subdir=subdir,
    label=f"train{'/' + subdir if subdir else ''}",
  )
  train_s = time.time() - t0
  step = int(jax.device_get(state.step))
  res = evaluate(
    cfg, wd, mesh, mixture, train_data, state.ema_params, step, figures=not subdir, prefix=prefix
  )
  res["train"] = {"steps": step, "seconds_this_run": train_s}
  return res


def check_config(cfg) -> None:
  """The sweep's fields (``sweep``), before any work (``config_check.validate`` has checked
  the shared sections)."""
  if "sweep" not in cfg:
    return
  if not isinstance(config_check.get(cfg, "sweep.enabled"), bool):
    raise ConfigError("sweep.enabled", "must be True or False")
  config_check.integer(cfg, "sweep.steps", lo=0)
  config_check.integer(cfg, "sweep.num_samples", lo=1)
  if not cfg.sweep.enabled:
    return
  epochs = config_check.integer(cfg, "sweep.epochs", lo=0) if "epochs" in cfg.sweep else 0
  # Under sweep.epochs the batch shrinks to a point's data when larger.
  least, least_desc = (1, "1") if epochs else (cfg.train.batch_size, "train.batch_size")
  for v in config_check.get(cfg, "sweep.num_train"):
    if not isinstance(v, int) or isinstance(v, bool) or v < least:
      raise ConfigError("sweep.num_train", f"entries must be ints >= {least_desc}, got {v!r}")
  for v in config_check.get(cfg, "sweep.timesteps"):
    if not isinstance(v, int) or v < cfg.detect.window:
      raise ConfigError("sweep.timesteps", f"entries must be ints >= detect.window, got {v!r}")
  for field in ("distance", "imbalance"):
    values = cfg.sweep.get(field, ())
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or v <= 0 for v in values):
      raise ConfigError(f"sweep.{field}", f"entries must be numbers > 0, got {tuple(values)!r}")
  if cfg.sweep.get("distance", ()) and cfg.data.name != "gaussian1d":
    raise ConfigError(
      "sweep.distance",
      f"is for data.name='gaussian1d' (the 1D modes' "
      f"spacing), not {cfg.data.name!r}; leave it empty ()",
    )
  if not any(cfg.sweep.get(f, ()) for f in ("num_train", "timesteps", "distance", "imbalance")):
    raise ConfigError(
      "sweep.enabled",
      "a sweep needs values in at least one of sweep.num_train, "
      "sweep.timesteps, sweep.distance, sweep.imbalance",
    )


# The axes a sweep can vary (each a tuple in the config's `sweep` section; empty: not swept),
# with the figure's x scale.
SWEEP_FIELDS = {"num_train": "log", "timesteps": "log", "distance": "linear", "imbalance": "log"}


def sweep_point_config(cfg, field, value):
  """The config of one sweep point: the base config with ``field`` set to ``value``."""
  import ml_collections

  c = ml_collections.ConfigDict(cfg.to_dict())
  c.train.steps = cfg.sweep.steps
  c.sample.num_samples = cfg.sweep.num_samples
  if field == "num_train":
    c.data.num_train = value
  elif field == "timesteps":
    c.diffusion.timesteps = value
  elif field == "distance":  # the 1D modes `value` apart, centred where they were
    means = np.asarray(cfg.data.means, np.float64)
    centre, k = means.mean(), len(means)
    c.data.means = tuple(float(centre + value * (i - (k - 1) / 2)) for i in range(k))
  elif field == "imbalance":
    c.data.imbalance = float(value)
  else:
    raise ValueError(f"unknown sweep field {field!r}; allowed: {', '.join(SWEEP_FIELDS)}")
  if cfg.sweep.get("epochs", 0):  # the paper's budget: epochs over this point's data
    c.train.batch_size = min(cfg.train.batch_size, c.data.num_train)
    c.train.steps = max(1, cfg.sweep.epochs * c.data.num_train // c.train.batch_size)
  return c


def sweep_tag(field, value) -> str:
  """A sweep point's name: its checkpoint subdirectory, file prefix and wall-time key."""
  return f"sweep_{field}_{value}"


def sweep_point_key(cfg, field, value) -> str:
  """What makes two sweep points the same training: the point's config (:func:`sweep_point_config`)
  without the ``sweep`` block, whose budget the point has already applied and whose axis lists
  say only which other points a run trains (so points of workdirs that split one sweep's axes
  between them compare equal)."""
  c = sweep_point_config(cfg, field, value).to_dict()
  c.pop("sweep", None)
  return json.dumps(c, sort_keys=True, default=str)


def check_resume(cfg, old: dict, wd) -> None:
  """Before a sweep resumes on ``wd`` (whose ``config.json`` was ``old``): a point that has
  trained there (its checkpoints exist) and whose training this config changes (its steps, from
  ``sweep.epochs`` / ``sweep.steps``, or a field frozen under a checkpoint) would be trained
  on under another recipe, or its finished result kept beside points of the new one: refused
  with the fields, as for any frozen field. Points only added, removed, or sampled differently
  are not a conflict."""
  import ml_collections
  from mode_interp.errors import WorkdirError
  from mode_interp.workdir import FROZEN, _is_frozen, flatten

  if not cfg.get("sweep", {}).get("enabled", False) or not old.get("sweep", {}).get("enabled"):
    return
  old_cfg = ml_collections.ConfigDict(old)
  bad = []
  for field in SWEEP_FIELDS:
    for v in cfg.sweep.get(field, ()):
      tag = sweep_tag(field, v)
      if not os.path.isdir(os.path.join(wd.checkpoints, tag)):
        continue
      try:
        a = flatten(sweep_point_config(old_cfg, field, v).to_dict())
      except (AttributeError, KeyError, TypeError, ValueError):
        continue  # the old config cannot describe this point: nothing to compare
      b = flatten(sweep_point_config(cfg, field, v).to_dict())
      changed = [
        f"{k}: {a[k]!r} -> {b.get(k)!r}"
        for k in sorted(a)
        if (k == "train.steps" or _is_frozen(k, FROZEN)) and a[k] != b.get(k)
      ]
      if changed:
        bad.append(f"{tag} ({', '.join(changed)})")
  if bad:
    raise WorkdirError(
      f"{wd.path} holds sweep points trained under another recipe than this config gives them: "
      f"{'; '.join(bad)}; resuming would train them on under the new one. Use a new --workdir "
      f"(experiments.merge_sweep joins sweeps run apart), or delete those points' checkpoints."
    )


def _add_seconds(path, tag, seconds, done):
  """Adds ``seconds`` to ``tag``'s wall time in ``path`` unless the point had finished in an
  earlier run (a point resumed over several runs sums their seconds; a run killed outright
  loses its share). Returns the point's seconds."""
  spent = {}
  if os.path.exists(path):
    with open(path) as f:
      spent = json.load(f)
  entry = spent.get(tag, {"seconds": 0.0, "done": False})
  if not entry["done"]:
    entry = {**entry, "seconds": round(entry["seconds"] + seconds, 1), "done": bool(done)}
    spent[tag] = entry
    write_json(path, spent)
  return entry["seconds"]


# The paper's direction for each axis, where the text read for this project states one
# (experiments/references.json records what could be read: the abstract and a caption).
PAPER_TRENDS = {
  "num_train": "not recorded",
  "timesteps": "not recorded",
  "distance": "not recorded",
  "imbalance": "not recorded",
}


def sweep_trend(rows) -> dict:
  """The learned score's rate along one axis (rows in axis order): ``falls`` / ``rises`` when
  the last point's 95% interval lies wholly below / above the first's, else ``no clear
  trend``; ``monotone`` whether every step between neighbours goes the same way beyond the
  intervals' overlap."""
  rows = [r for r in rows if r.get("hallucination_rate") is not None]
  if len(rows) < 2:
    return {
      "direction": "too few points",
      "monotone": None,
      "points": len(rows),
      "values": [r["value"] for r in rows],
    }
  first, last = rows[0]["ci95"], rows[-1]["ci95"]
  direction = "falls" if last[1] < first[0] else "rises" if last[0] > first[1] else "no clear trend"
  steps = []
  for a, b in zip(rows[:-1], rows[1:]):
    steps.append(
      "down" if b["ci95"][1] < a["ci95"][0] else "up" if b["ci95"][0] > a["ci95"][1] else "flat"
    )
  monotone = direction != "no clear trend" and all(
    s in ("flat", "down" if direction == "falls" else "up") for s in steps
  )
  return {
    "direction": direction,
    "monotone": monotone,
    "steps": steps,
    "points": len(rows),
    "values": [r["value"] for r in rows],
  }


def sweep_trends(table) -> dict:
  """:func:`sweep_trend` of each swept field of ``table`` (its rows in axis order), with the
  paper's stated direction beside (``PAPER_TRENDS``)."""
  return {
    field: {
      **sweep_trend([r for r in table if r.get("field") == field]),
      "paper": PAPER_TRENDS.get(field, "not recorded"),
    }
    for field in SWEEP_FIELDS
    if any(r.get("field") == field for r in table)
  }


def run_sweep(cfg, wd, mesh, mixture):
  """Hallucination rate (learned and exact score) against each swept field: the number of
  training points, T, the distance between 1D modes, the mixture's imbalance."""
  del mixture
  table = []
  # A point whose config equals an earlier point's (the paper's defaults sit on every axis:
  # T = 1,000 on the T axis is the default-points point of the points axis) is not trained
  # again: its row repeats the earlier result, marked ``same_as`` with no seconds of its own.
  finished = {}
  for field in SWEEP_FIELDS:
    for v in cfg.sweep.get(field, ()):
      c = sweep_point_config(cfg, field, v)
      tag = sweep_tag(field, v)
      key = sweep_point_key(cfg, field, v)
      same_as = None
      if key in finished:
        same_as, r = finished[key]
        seconds = 0.0
        logging.info("sweep: %s = %s is the config of %s: not trained again", field, v, same_as)
      else:
        mix = make_mixture(c)
        data = mix.sample(c.data.num_train, seed=cfg.seed)
        logging.info("sweep: %s = %s", field, v)
        t0, r = time.time(), None
        try:
          r = run_single(c, wd, mesh, mix, data, subdir=tag, prefix=f"{tag}_")
        finally:
          seconds = _add_seconds(
            wd.file("sweep_seconds.json"), tag, time.time() - t0, done=r is not None
          )
        finished[key] = (tag, r)
      row = {
        "field": field,
        "value": v,
        "num_train": c.data.num_train,
        "timesteps": c.diffusion.timesteps,
        "hallucination_rate": r["hallucination_rate"],
        "ci95": r["hallucination"]["ci95"],
        "true_score_hallucination_rate": r["true_score_hallucination_rate"],
        "true_score_ci95": r["true_score_hallucination"]["ci95"],
        "auroc": r["detection"]["auroc"],
        "hallucinations_removed": r["detection"]["hallucinations_removed"],
        "num_samples": r["num_samples"],
        "non_finite": r["non_finite"]["count"],
        "wall_seconds": seconds,
      }
      if same_as:
        row["same_as"] = same_as
      if field == "distance":
        row["means"] = list(c.data.means)
      for k in ("hallucinations_between", "in_support_share_heavy", "weight_share_heavy"):
        if k in r:
          row[k] = r[k]
      table.append(row)
      # The rows so far, as they arrive (a long sweep's finished points can be read and
      # committed before it ends; results.json is written at the end).
      write_json(wd.file("sweep_table.json"), table)
  return sweep_summary(table, wd.figure("sweep.png"))


def sweep_summary(table, figure_path) -> dict:
  """The sweep's results from its rows (in axis order): the figure of the rate (learned and
  exact score, 95% intervals) against each swept field, written to ``figure_path``, and each
  axis's trend (:func:`sweep_trends`)."""
  panels = {}
  for field, scale in SWEEP_FIELDS.items():
    rows = [r for r in table if r["field"] == field]
    if rows:
      panels[field] = {
        "xs": [r["value"] for r in rows],
        "xscale": scale,
        "learned score": (
          [r["hallucination_rate"] for r in rows],
          [r["ci95"][0] for r in rows],
          [r["ci95"][1] for r in rows],
        ),
        "exact score": (
          [r["true_score_hallucination_rate"] for r in rows],
          [r["true_score_ci95"][0] for r in rows],
          [r["true_score_ci95"][1] for r in rows],
        ),
      }
  if panels:
    plots.sweep_lines(figure_path, panels, yscale="log")
    # The detector per point: AUROC and the share of hallucinations removed at the threshold
    # that keeps 96% of in-support samples (points without a hallucination have neither).
    detection = {}
    for field, panel in panels.items():
      rows = [r for r in table if r["field"] == field]
      detection[field] = {"xs": panel["xs"], "xscale": panel["xscale"]}
      for label, key in (("AUROC", "auroc"), ("removed at 96% kept", "hallucinations_removed")):
        ys = [r.get(key) if is_number(r.get(key)) else None for r in rows]
        detection[field][label] = (ys, ys, ys)
    root, ext = os.path.splitext(figure_path)
    plots.sweep_lines(f"{root}_detection{ext}", detection, ylabel="trajectory-variance detector")
  trends = sweep_trends(table)
  for field, t in trends.items():
    logging.info("sweep: the rate against %s: %s (paper: %s)", field, t["direction"], t["paper"])
  return {"sweep": table, "trends": trends}


def run(cfg, wd, mesh, info=None):
  mixture = make_mixture(cfg)
  train_data = mixture.sample(cfg.data.num_train, seed=cfg.seed)
  if cfg.sweep.enabled:
    res = run_sweep(cfg, wd, mesh, mixture)
  else:
    res = run_single(cfg, wd, mesh, mixture, train_data)
  res = {"experiment": "gaussian", "data": cfg.data.name, "seed": cfg.seed, **(info or {}), **res}
  wd.write_results(res)
  if "hallucination_rate" in res:
    d = res["detection"]
    logging.info(
      "hallucination rate %s (exact score %s); detection AUROC %s, removed %s at %s "
      "kept; %d non-finite samples",
      res["hallucination_rate"],
      res["true_score_hallucination_rate"],
      d["auroc"],
      d["hallucinations_removed"],
      d["in_support_retained"],
      res["non_finite"]["count"],
    )
  return res


# -- the report's rows ------------------------------------------------------------
def _single_rows(res, cfg) -> List[Row]:
  n = res.get("num_samples", get(cfg, "sample.num_samples"))
  rows = [
    rate_block(res, "hallucination_rate", "Hallucination rate (learned score)", n),
    rate_block(res, "true_score_hallucination_rate", "Hallucination rate (exact score)", n),
    proportion_row(
      "rule.false_positive_rate_training_data",
      "Rule's false-positive rate on the training data",
      get(res, "rule.false_positive_rate_training_data"),
      get(cfg, "data.num_train"),
    ),
  ]
  rows += detection_rows(res.get("detection"), "detection", "hallucination vs in support")
  if is_number(res.get("modes_covered")):
    rows.append(
      Row(
        "modes_covered",
        f"Modes covered (of {res.get('num_modes', '?')})",
        res["modes_covered"],
        "int",
      )
    )
  return rows


def _sweep_rows(res) -> List[Row]:
  rows = []
  for e in res.get("sweep") or []:
    if not isinstance(e, dict):
      continue
    field, value = e.get("field"), e.get("value")
    sel = {"field": field, "value": value}
    tag = f"{field} = {value:,}" if is_number(value) else f"{field} = {value}"
    n = e.get("num_samples")
    rows.append(
      proportion_row(
        "hallucination_rate",
        f"Hallucination rate, {tag}",
        e.get("hallucination_rate"),
        n,
        ci=e.get("ci95"),
        select=sel,
      )
    )
    rows.append(
      proportion_row(
        "true_score_hallucination_rate",
        f"Hallucination rate (exact score), {tag}",
        e.get("true_score_hallucination_rate"),
        n,
        select=sel,
      )
    )
    # The detector over all of the point's samples: its hallucinations are the rate's count.
    rate = e.get("hallucination_rate")
    n_hal = int(round(rate * n)) if is_number(rate) and is_number(n) else None
    n_in = n - n_hal if n_hal is not None else None
    if is_number(e.get("auroc")):
      ci = hallucination.auroc_interval(e["auroc"], n_hal, n_in) if n_hal else None
      rows.append(
        Row(
          "auroc",
          f"Trajectory-variance AUROC, {tag}",
          e["auroc"],
          "num",
          ci,
          None,
          None,
          "Hanley-McNeil" if ci else "",
          sel,
        )
      )
    if is_number(e.get("hallucinations_removed")):
      rows.append(
        proportion_row(
          "hallucinations_removed",
          f"Hallucinations removed at 96% in-support kept, {tag}",
          e["hallucinations_removed"],
          n_hal,
          select=sel,
        )
      )
  return rows


def report_rows(res, cfg) -> List[Row]:
  """``results.json`` of a Gaussian run (single or sweep) as report rows."""
  if isinstance(res.get("sweep"), list):
    return _sweep_rows(res)
  return _single_rows(res, cfg)
