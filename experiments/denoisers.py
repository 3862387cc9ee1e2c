"""SIMPLE SHAPES sampled without a network: the exact denoiser of the training set and
local (patch) denoisers, beside the U-Net.

The image counterpart of the Gaussian testbeds' exact-score control. The exact denoiser
(E[x0 | x_t] of the training set) can only redraw training images; a local denoiser, whose
every pixel follows the training images that match the patch around it, composes new ones.
If a local denoiser draws two shapes in one column at a rate near the U-Net's, locality
accounts for the U-Net's mode interpolation (Kamb and Ganguli, arXiv 2412.20292); the
patch size is ``denoisers.patches``. Every sample goes through the same DDPM scan as a
network's, so its trajectory variance is the paper's score and is measured the same way.
"""

import json
import os
import time
from typing import List

import jax
import numpy as np
from absl import logging

from experiments import shapes as shapes_exp
from experiments.rows import Row, get, proportion_row
from mode_interp import empirical_denoiser, hallucination, pipeline, plots, sharding
from mode_interp.data import shapes
from mode_interp.errors import ConfigError


def denoiser_list(cfg) -> list:
  """``[(name, kind, patch)]`` in the order they are sampled."""
  out = [("exact", "exact", None)] if cfg.denoisers.exact else []
  return out + [(f"local_p{p}", "local", int(p)) for p in cfg.denoisers.patches]


def nearest_training_rms(samples: np.ndarray, train: np.ndarray, chunk: int = 256) -> np.ndarray:
  """Root-mean-square distance of each sample to its nearest training image."""
  y = train.reshape(len(train), -1).astype(np.float32)
  y2 = np.sum(y * y, axis=1)
  out = []
  for i in range(0, len(samples), chunk):
    x = samples[i : i + chunk].reshape(-1, y.shape[1]).astype(np.float32)
    d2 = np.sum(x * x, axis=1)[:, None] - 2 * x @ y.T + y2[None]
    out.append(np.sqrt(np.maximum(d2.min(axis=1), 0.0) / y.shape[1]))
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _unet_reference(path: str):
  """Counts and rates of a SIMPLE SHAPES workdir's results.json (None when not given)."""
  if not path:
    return None
  f = os.path.join(path, "results.json")
  if not os.path.exists(f):
    logging.warning("denoisers.unet_workdir=%s has no results.json: no U-Net column", path)
    return None
  with open(f) as fh:
    res = json.load(fh)
  counts = res.get("counts") or {}
  n = res.get("num_samples") or sum(counts.values())
  multi = counts.get("multiple_in_column", 0)
  lo, hi = hallucination.binomial_interval(int(multi), int(n))
  return {
    "workdir": path,
    "num_samples": n,
    "counts": counts,
    "mode_interpolation": {
      "rate": multi / n if n else None,
      "count": multi,
      "n": n,
      "ci95": [lo, hi],
    },
    "train_steps": (res.get("train") or {}).get("steps"),
  }


def check_config(cfg) -> None:
  """The training-set denoisers' section: refused with the field named, before any work."""
  import numbers
  from experiments import config_check as cc

  if not isinstance(cc.get(cfg, "denoisers.exact"), bool):
    raise ConfigError("denoisers.exact", "must be True or False")
  patches = cc.get(cfg, "denoisers.patches")
  bad = [
    p
    for p in patches
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1 or p % 2 == 0
  ]
  if bad or len(set(patches)) != len(patches):
    raise ConfigError(
      "denoisers.patches",
      f"must be distinct odd positive integers (a patch "
      f"is centred on its pixel), got {tuple(patches)!r}",
    )
  if not patches and not cfg.denoisers.exact:
    raise ConfigError(
      "denoisers.patches", "is empty and denoisers.exact is False: nothing to sample"
    )
  cc.integer(cfg, "denoisers.num_samples", lo=1)
  cc.integer(cfg, "denoisers.chunk_images", lo=1)
  cc.number(cfg, "denoisers.copy_rms", lo=0.0, lo_open=True)
  if not isinstance(cc.get(cfg, "denoisers.unet_workdir"), str):
    raise ConfigError("denoisers.unet_workdir", "must be a path (or empty)")


def run(cfg, wd, mesh, info=None):
  t0 = time.time()
  ds, train_x = shapes_exp.load_training_set(cfg)
  schedule = pipeline.make_schedule(cfg)
  model = pipeline.make_model(cfg)
  shape = train_x.shape[1:]
  # The receptive field of the config's U-Net (random weights: zero-initialised layers
  # would hide paths), the scale a local denoiser's patch is compared with.
  x1 = np.zeros((1,) + shape, np.float32)

  def random_params(k):  # one program (eagerly: one compilation per parameter shape)
    p = model.init(k, x1, np.zeros((1,), np.int32))["params"]
    return jax.tree.map(lambda a: 0.1 * jax.random.normal(jax.random.key(1), a.shape), p)

  params = sharding.jit_once(random_params)(jax.random.key(0))
  rf = empirical_denoiser.receptive_field(pipeline.eps_fn_for(model), params, shape)
  logging.info(
    "denoisers: %d training images %s; the U-Net's receptive field %s", len(ds), shape, rf
  )
  train_dev = jax.numpy.asarray(train_x)
  os.makedirs(wd.checkpoints, exist_ok=True)  # the contract's folder: nothing here is trained
  n = cfg.denoisers.num_samples
  table = []
  for name, kind, patch in denoiser_list(cfg):
    t1 = time.time()
    eps_fn = empirical_denoiser.make_eps_fn(schedule, kind, patch, cfg.denoisers.chunk_images)
    sample_jit = pipeline.make_sampler(cfg, eps_fn, shape, mesh=mesh, clip_x0=1.0)
    out = pipeline.draw_samples(
      cfg,
      sample_jit,
      train_dev,
      n,
      mesh=mesh,
      label=name,
      workdir=wd,
      cache=f"samples_{name}.npz",
      step=0,
    )
    ok = hallucination.finite_rows(out.samples, out.traj_variance)
    images = np.clip(out.samples[ok], -1.0, 1.0)
    verdicts = shapes.check(images, scale=cfg.data.scale).verdicts
    res = shapes_exp.evaluate(cfg, wd, verdicts, out.traj_variance[ok], images, prefix=f"{name}_")
    rms = nearest_training_rms(images, train_x)
    copies = rms < cfg.denoisers.copy_rms
    ins = verdicts == shapes.IN_SUPPORT
    row = {
      "name": name,
      "kind": kind,
      "patch": patch,
      **res,
      "non_finite": hallucination.non_finite_report(ok),
      "copies": hallucination.rate_with_interval(copies),
      "new_in_support": hallucination.rate_with_interval(ins & ~copies),
      "mode_interpolation": hallucination.rate_with_interval(verdicts == shapes.MULTIPLE_IN_COLUMN),
      "nearest_training_rms_median": float(np.median(rms)) if len(rms) else None,
      "seconds_this_run": time.time() - t1,
    }
    logging.info(
      "denoisers: %s: %s; copies %.3f; AUROC %s",
      name,
      res["counts"],
      row["copies"]["rate"],
      res["detection"]["auroc"],
    )
    table.append(row)
    wd.metric_writer(model=name).write(
      0,
      multiple_in_column_rate=row["mode_interpolation"]["rate"],
      copy_rate=row["copies"]["rate"],
      new_in_support_rate=row["new_in_support"]["rate"],
      auroc=res["detection"]["auroc"],
      seconds=row["seconds_this_run"],
    )
  canvas = int(shape[0])
  if table:
    # By patch size; the exact denoiser is a canvas-wide patch, at the right.
    order = sorted(table, key=lambda r: r["patch"] or 2 * canvas - 1)
    xs = [r["patch"] or 2 * canvas - 1 for r in order]

    def band(key):
      return (
        [r[key]["rate"] for r in order],
        [r[key]["ci95"][0] for r in order],
        [r[key]["ci95"][1] for r in order],
      )

    plots.sweep_lines(
      wd.figure("denoisers.png"),
      {
        "patch size (exact at right)": {
          "xs": xs,
          "xscale": "log",
          "two shapes in one column": band("mode_interpolation"),
          "copies of a training image": band("copies"),
          "new in-support images": band("new_in_support"),
        }
      },
      ylabel="share of samples",
    )
  res = {
    "experiment": "denoisers",
    "data": cfg.data.name,
    "scale": cfg.data.scale,
    "image_size": canvas,
    "seed": cfg.seed,
    **(info or {}),
    "num_train": len(ds),
    "unet_receptive_field": list(rf),
    "copy_rms": cfg.denoisers.copy_rms,
    "denoisers": table,
    "unet": _unet_reference(cfg.denoisers.unet_workdir),
    "seconds_this_run": time.time() - t0,
  }
  wd.write_results(res)
  return res


def report_rows(res, cfg) -> List[Row]:
  """One mode-interpolation and one copy row per denoiser, and the U-Net's beside."""
  rows = []
  for r in res.get("denoisers") or []:
    for key, what in (
      ("mode_interpolation", "two shapes in one column"),
      ("copies", "copies of a training image"),
    ):
      b = r.get(key) or {}
      rows.append(
        proportion_row(
          f"{r['name']}.{key}",
          f"{r['name']}: {what}",
          b.get("rate"),
          b.get("n"),
          b.get("count"),
          b.get("ci95"),
        )
      )
  u = get(res, "unet.mode_interpolation")
  if isinstance(u, dict):
    rows.append(
      proportion_row(
        "unet.mode_interpolation",
        "U-Net: two shapes in one column",
        u.get("rate"),
        u.get("n"),
        u.get("count"),
        u.get("ci95"),
      )
    )
  return rows
