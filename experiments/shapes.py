"""SIMPLE SHAPES: a U-Net trained on images with at most one triangle, square and
pentagon (one per column) composes combinations it never saw (two squares in
one column, ...), and the trajectory variance flags them."""

import time

import jax
import numpy as np
from absl import logging

from mode_interp import hallucination, pipeline, plots
from mode_interp.data import shapes
from typing import List

from experiments.rows import Row, detection_rows, get, proportion_row, rate_block

VERDICT_COLORS = {
  "in_support": "#2ca02c",
  "multiple_in_column": "#d62728",
  "malformed": "#ff7f0e",
  "blank": "#7f7f7f",
}
SHORT = {"in_support": "ok", "multiple_in_column": "multi", "malformed": "malf", "blank": "blank"}


def load_training_set(cfg):
  ds = shapes.generate(cfg.data.num_train, seed=cfg.seed, scale=cfg.data.scale)
  return ds, shapes.to_model_input(ds.images)


def evaluate(cfg, wd, verdicts, tv, images, prefix=""):
  """Counts, detection figures and plots from checker verdicts and variances."""
  verdicts = np.asarray(verdicts)
  ins = verdicts == shapes.IN_SUPPORT
  hal = ~ins
  det = hallucination.detection_metrics(
    tv, hal, cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  )
  # The paper's mode interpolation proper: multiple shapes in a column vs in-support only.
  multi = verdicts == shapes.MULTIPLE_IN_COLUMN
  sel = ins | multi
  det_multi = hallucination.detection_metrics(
    tv[sel], multi[sel], cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  )
  res = {
    "num_samples": int(len(verdicts)),
    "hallucination_rate": float(hal.mean()) if len(hal) else None,
    "hallucination": hallucination.rate_with_interval(hal),
    "mode_interpolation_rate": float(multi.mean()) if len(multi) else None,
    "counts": shapes.count_verdicts(verdicts),
    "detection": det,
    "detection_multiple_in_column": det_multi,
    "trajectory_variance_median": {
      v: float(np.median(tv[verdicts == v])) for v in shapes.VERDICTS if np.any(verdicts == v)
    },
  }
  f = wd.figure
  groups = {v: verdicts == v for v in shapes.VERDICTS}
  plots.detection_figures(
    f(f"{prefix}trajectory_variance.png"), f(f"{prefix}roc.png"), tv, groups, hal, det
  )
  n = min(len(verdicts), 64)
  colors = [VERDICT_COLORS[v] for v in verdicts[:n]]
  plots.image_grid(
    f(f"{prefix}samples.png"),
    images[:n],
    labels=[SHORT[v] for v in verdicts[:n]],
    colors=colors,
    title="samples, framed by verdict (green = in support)",
  )
  for v in ("multiple_in_column", "malformed"):
    idx = np.flatnonzero(verdicts == v)[:32]
    if len(idx):
      plots.image_grid(
        f(f"{prefix}examples_{v}.png"),
        images[idx],
        labels=[f"tv {tv[i]:.1e}" for i in idx],
        colors=[VERDICT_COLORS[v]] * len(idx),
        title=f"{v} ({int(np.sum(verdicts == v))})",
      )
  if det["threshold"] is not None:
    kept = np.flatnonzero(tv <= det["threshold"])
    removed = np.flatnonzero(tv > det["threshold"])
    # The most suspicious removed samples and a random slice of the retained ones.
    removed = removed[np.argsort(-tv[removed])][:32]
    kept = kept[:32]
    both = np.concatenate([kept, removed])
    plots.image_grid(
      f(f"{prefix}retained_removed.png"),
      images[both],
      labels=[("keep " if i in set(kept) else "drop ") + SHORT[verdicts[i]] for i in both],
      colors=[VERDICT_COLORS[verdicts[i]] for i in both],
      title=f"first 32 retained | 32 removed (highest variance); threshold {det['threshold']:.2e}",
    )
  return res


def run(cfg, wd, mesh, info=None):
  t0 = time.time()
  ds, train_x = load_training_set(cfg)
  train_check = shapes.check(ds.images, scale=cfg.data.scale)
  train_rate = float(np.mean(train_check.verdicts == shapes.IN_SUPPORT))
  logging.info(
    "shapes: %d training images %s, checker in-support rate %.4f",
    len(ds),
    train_x.shape[1:],
    train_rate,
  )
  plots.image_grid(wd.figure("training_images.png"), ds.images[:32], title="training images")

  t_train = time.time()
  state = pipeline.train_model(cfg, train_x, wd, trainer=pipeline.make_trainer(cfg, mesh))
  train_s = time.time() - t_train
  step = int(jax.device_get(state.step))

  model = pipeline.make_model(cfg)
  sample_jit = pipeline.make_sampler(
    cfg, pipeline.eps_fn_for(model), train_x.shape[1:], mesh=mesh, clip_x0=1.0
  )
  t_sample = time.time()
  out = pipeline.draw_samples(
    cfg,
    sample_jit,
    state.ema_params,
    cfg.sample.num_samples,
    mesh=mesh,
    label="sample",
    workdir=wd,
    cache="samples.npz",
    step=step,
  )
  sample_s = time.time() - t_sample
  # Non-finite images or variances (diverged trajectories) are counted and reported, and
  # left out of the verdicts, the detection metrics and the figures.
  ok = hallucination.finite_or_warn(
    out.samples,
    out.traj_variance,
    "samples",
    "left out of the verdicts, the detection metrics and the figures",
  )
  images = np.clip(out.samples[ok], -1.0, 1.0)
  result = shapes.check(images, scale=cfg.data.scale)
  res = evaluate(cfg, wd, result.verdicts, out.traj_variance[ok], images)
  res = {
    "experiment": "shapes",
    "data": cfg.data.name,
    "scale": cfg.data.scale,
    "image_size": int(train_x.shape[1]),
    "seed": cfg.seed,
    **(info or {}),
    "training_in_support_rate": train_rate,
    **res,
    "non_finite": hallucination.non_finite_report(ok),
    "train": {"steps": step, "seconds_this_run": train_s},
    "sampling": {"sampler": cfg.sample.sampler, "seconds_this_run": sample_s},
    "seconds_this_run": time.time() - t0,
  }
  wd.write_results(res)
  d = res["detection"]
  logging.info(
    "shapes: %s; hallucination rate %.4f; AUROC %s; removed %s at %s in-support kept",
    res["counts"],
    res["hallucination_rate"],
    d["auroc"],
    d["hallucinations_removed"],
    d["in_support_retained"],
  )
  return res


# -- the report's rows ------------------------------------------------------------
def report_rows(res, cfg) -> List[Row]:
  """``results.json`` of a SIMPLE SHAPES run as report rows."""
  n = res.get("num_samples", get(cfg, "sample.num_samples"))
  rows = [
    rate_block(res, "hallucination_rate", "Hallucination rate (any verdict but in support)", n),
    proportion_row(
      "mode_interpolation_rate",
      "Mode-interpolation rate (several shapes in one column)",
      res.get("mode_interpolation_rate"),
      n,
      get(res, "counts.multiple_in_column"),
    ),
    proportion_row(
      "training_in_support_rate",
      "Checker's in-support rate on training images",
      res.get("training_in_support_rate"),
      get(cfg, "data.num_train"),
    ),
  ]
  rows += detection_rows(res.get("detection"), "detection", "all hallucinations vs in support")
  rows += detection_rows(
    res.get("detection_multiple_in_column"),
    "detection_multiple_in_column",
    "several-in-a-column vs in support",
  )
  return rows
