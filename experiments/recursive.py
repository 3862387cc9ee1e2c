"""Recursive training on generated data, with and without trajectory-variance filtering.

Generation 0 trains on real data. Generation g >= 1 trains a fresh model on
``data.num_train`` samples kept from generation g-1, which drew
``data.num_train + recursive.oversample`` samples and kept them by
``recursive.filter``: ``none`` (the first ones), ``random`` (a uniform subset)
or ``variance`` (the lowest trajectory variance). Generation 0 is shared by
every filter. Each (filter, generation) has its own checkpoint folder and
sample cache, so a stopped run restarts where it stopped.
"""

import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from mode_interp import hallucination, pipeline, plots
from mode_interp.errors import ConfigError, DataError, TrainingDivergedError
from experiments import config_check, gaussian
from typing import List

from experiments.rows import Row, is_number, proportion_row


# -- data and measurements per kind of data -------------------------------------
class GridKind:
  """2D Gaussian grids: hallucination rule and mode coverage."""

  def __init__(self, cfg):
    self.mixture = gaussian.make_mixture(cfg)
    self.k = cfg.detect.k_sigma
    self.clip_x0 = None
    # The training data drawn in the figures beside each generation's samples.
    self.real_sample = self.real_data(cfg)[:20_000]

  def real_data(self, cfg):
    return self.mixture.sample(cfg.data.num_train, seed=cfg.seed)

  def measure(self, samples, traj_variance, kept_idx):
    means = self.mixture.means
    hal = hallucination.mixture_hallucinations(samples, means, self.mixture.std, self.k)
    ok = samples[~hal]
    counts = np.bincount(hallucination.nearest_mode(ok, means), minlength=len(means))
    kept_ok = samples[kept_idx][~hal[kept_idx]]
    kept_counts = np.bincount(hallucination.nearest_mode(kept_ok, means), minlength=len(means))
    # A mode counts as covered when at least 10% of its fair share of in-support samples lands on it.
    fair = len(samples) / len(means)
    return {
      "hallucination_rate": float(hal.mean()),
      "hallucination_rate_kept": float(hal[kept_idx].mean()),
      "modes_hit": int(np.count_nonzero(counts)),
      "mode_coverage": float(np.mean(counts >= 0.1 * fair)),
      "detection_auroc": hallucination.detection_metrics(traj_variance, hal)["auroc"],
      # In-support samples per mode (in the order of data.gaussians' means), drawn and
      # kept by the filter: shows which modes a filter starves.
      "in_support_per_mode": counts.tolist(),
      "in_support_per_mode_kept": kept_counts.tolist(),
    }

  def figure(self, path, samples, title):
    hal = hallucination.mixture_hallucinations(
      samples, self.mixture.means, self.mixture.std, self.k
    )
    plots.scatter_2d(path, self.real_sample, samples, hal, title=title)


class ShapesKind:
  """SIMPLE SHAPES: the checker's verdicts per generation (anything but in-support is a
  hallucination; multiple shapes in one column is the mode interpolation proper)."""

  def __init__(self, cfg):
    from mode_interp.data import shapes

    self.shapes = shapes
    self.scale = cfg.data.scale
    self.clip_x0 = 1.0

  def real_data(self, cfg):
    ds = self.shapes.generate(cfg.data.num_train, seed=cfg.seed, scale=cfg.data.scale)
    return self.shapes.to_model_input(ds.images)

  def verdicts(self, samples):
    return self.shapes.check(np.clip(samples, -1.0, 1.0), scale=self.scale).verdicts

  def measure(self, samples, traj_variance, kept_idx):
    s = self.shapes
    v = self.verdicts(samples)
    hal, multi = v != s.IN_SUPPORT, v == s.MULTIPLE_IN_COLUMN
    return {
      "hallucination_rate": float(hal.mean()),
      "hallucination_rate_kept": float(hal[kept_idx].mean()),
      "mode_interpolation_rate": float(multi.mean()),
      "mode_interpolation_rate_kept": float(multi[kept_idx].mean()),
      "counts": s.count_verdicts(v),
      "counts_kept": s.count_verdicts(v[kept_idx]),
      "detection_auroc": hallucination.detection_metrics(traj_variance, hal)["auroc"],
    }

  def figure(self, path, samples, title):
    from experiments.shapes import SHORT, VERDICT_COLORS

    images = np.clip(samples[:64], -1, 1)
    v = self.verdicts(images)
    plots.image_grid(
      path, images, labels=[SHORT[x] for x in v], colors=[VERDICT_COLORS[x] for x in v], title=title
    )


class MnistKind:
  """MNIST: collapse measured with a small CNN trained once on real data."""

  def __init__(self, cfg, wd):
    from mode_interp import classifier
    from mode_interp.data import mnist

    self.classifier = classifier
    try:
      split = mnist.load_mnist(
        "train", data_dir=cfg.data.dir or None, download=cfg.data.download, allow_test_fallback=True
      )
    except (mnist.MnistNotFoundError, mnist.MnistFormatError) as e:
      raise DataError(str(e)) from e
    if split.split != "train":
      logging.warning(
        "MNIST train split not found: training on the %d-image %s split from %s",
        len(split),
        split.split,
        split.source_dir,
      )
    if cfg.data.num_train > len(split):
      raise DataError(
        f"data.num_train={cfg.data.num_train} but the MNIST {split.split} split in "
        f"{split.source_dir} has {len(split)} images: lower data.num_train, or put the train "
        f"split (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) there"
      )
    self.split = split
    self.x = mnist.to_model_input(split.images, 32)
    self.labels = split.labels
    self.clip_x0 = 1.0
    self.params = classifier.load_or_train(
      os.path.join(wd.path, "classifier"), self.x, self.labels, steps=cfg.recursive.classifier_steps
    )
    self.ref_features, _ = classifier.features_and_probs(self.params, self.x[:10_000])

  def real_data(self, cfg):
    idx = np.random.default_rng(cfg.seed).permutation(len(self.x))[: cfg.data.num_train]
    return self.x[idx]

  def measure(self, samples, traj_variance, kept_idx):
    m = self.classifier.collapse_metrics(self.params, np.clip(samples, -1, 1), self.ref_features)
    kept = self.classifier.collapse_metrics(
      self.params, np.clip(samples[kept_idx], -1, 1), self.ref_features
    )
    return {
      "frechet_distance": m["frechet_distance"],
      "entropy": m["entropy"],
      "coverage": m["coverage"],
      "low_confidence_rate": m["low_confidence_rate"],
      "frechet_distance_kept": kept["frechet_distance"],
      "low_confidence_rate_kept": kept["low_confidence_rate"],
    }

  def figure(self, path, samples, title):
    plots.image_grid(path, np.clip(samples[:64], -1, 1), title=title)

  def filter_figure(self, path, samples, traj_variance, kept_idx, title):
    """The first 32 kept samples next to the 32 dropped ones of highest variance, each
    captioned with the CNN's class and confidence."""
    dropped = np.setdiff1d(np.arange(len(samples)), kept_idx)
    dropped = dropped[np.argsort(-traj_variance[dropped])][:32]
    kept = np.sort(kept_idx)[:32]
    images = np.clip(samples[np.concatenate([kept, dropped])], -1, 1)
    _, probs = self.classifier.features_and_probs(self.params, images)
    pred, conf = probs.argmax(-1), probs.max(-1)
    labels = [
      f"{'keep' if i < len(kept) else 'drop'} {p} {c:.2f}"
      for i, (p, c) in enumerate(zip(pred, conf))
    ]
    colors = ["tab:blue"] * len(kept) + ["tab:red"] * len(dropped)
    plots.image_grid(path, images, labels=labels, colors=colors, title=title)


def check_config(cfg) -> None:
  """The ``recursive`` section (and MNIST's data fields), before any work."""
  config_check.integer(cfg, "recursive.generations", lo=1)
  config_check.integer(cfg, "recursive.oversample", lo=0)
  if cfg.data.name == "mnist":
    config_check.integer(cfg, "recursive.classifier_steps", lo=1)
    if not isinstance(config_check.get(cfg, "data.download"), bool):
      raise ConfigError("data.download", "must be True or False")
    if not isinstance(config_check.get(cfg, "data.dir"), str):
      raise ConfigError(
        "data.dir", f"must be a path (a string; '' for the default), got {cfg.data.dir!r}"
      )
  filters = config_check.get(cfg, "recursive.filters")
  if isinstance(filters, str) or not filters:
    raise ConfigError(
      "recursive.filters",
      f"must be a non-empty tuple of names from "
      f"{', '.join(hallucination.FILTERS)}, got {filters!r}",
    )
  for f in filters:
    if f not in hallucination.FILTERS:
      hint = (
        (
          " (on the command line a tuple is written "
          "--config.recursive.filters=\"('random','variance')\")"
        )
        if "," in str(f)
        else ""
      )
      raise ConfigError(
        "recursive.filters",
        f"{f!r} is not allowed; allowed: {', '.join(hallucination.FILTERS)}{hint}",
      )
  if len(set(filters)) != len(filters):
    raise ConfigError("recursive.filters", f"names must not repeat, got {tuple(filters)!r}")


def _measure_keys(kind):
  if isinstance(kind, GridKind):
    return ("hallucination_rate", "mode_coverage")
  if isinstance(kind, ShapesKind):
    return ("hallucination_rate", "mode_interpolation_rate")
  return ("frechet_distance", "low_confidence_rate", "entropy")


# -- the loop --------------------------------------------------------------------
def run(cfg, wd, mesh, info=None):
  if cfg.data.name == "mnist":
    kind = MnistKind(cfg, wd)
  elif cfg.data.name == "shapes":
    kind = ShapesKind(cfg)
  else:
    kind = GridKind(cfg)
  real = kind.real_data(cfg)
  rc = cfg.recursive
  n_draw = cfg.data.num_train + rc.oversample
  gen_cfg = ml_collections.ConfigDict(cfg.to_dict())
  gen_cfg.sample.num_samples = n_draw
  model = pipeline.make_model(cfg)
  trainer = pipeline.make_trainer(gen_cfg, mesh)  # one compilation for every generation
  sample_jit = pipeline.make_sampler(
    gen_cfg, pipeline.eps_fn_for(model), real.shape[1:], mesh=mesh, clip_x0=kind.clip_x0
  )
  # Measurements are recomputed from the cached samples on every run (cheap next to
  # training and sampling), so a rerun on a finished workdir refreshes results and figures;
  # until a record is recomputed, the previous run's stands (an interrupted rerun loses none).
  previous = (wd.read_results() or {}).get("generations") or []
  records = {
    (r["filter"], r["generation"]): r
    for r in previous
    if r.get("filter") in rc.filters and r.get("generation", rc.generations) < rc.generations
  }
  t0 = time.time()

  def one_generation(filt, g, data):
    tag = "gen0" if g == 0 else f"{filt}_gen{g}"
    key = jax.random.fold_in(jax.random.key(cfg.seed), g)
    state = pipeline.train_model(
      gen_cfg, data, wd, trainer=trainer, subdir=tag, key=key, label=f"train/{tag}"
    )
    step = int(jax.device_get(state.step))
    out = pipeline.draw_samples(
      gen_cfg,
      sample_jit,
      state.ema_params,
      n_draw,
      mesh=mesh,
      key=jax.random.fold_in(key, 1),
      label=f"sample/{tag}",
      workdir=wd,
      cache=f"samples_{tag}.npz",
      step=step,
    )
    return out

  for filt in rc.filters:
    data = real
    for g in range(rc.generations):
      tag = "gen0" if g == 0 else f"{filt}_gen{g}"
      out = one_generation(filt, g, data)
      # Non-finite samples (diverged trajectories) are never passed on nor measured.
      ok = hallucination.finite_or_warn(
        out.samples,
        out.traj_variance,
        f"samples of {filt} generation {g}",
        "dropped before filtering and measuring",
      )
      if not ok.all():
        out = type(out)(*(None if a is None else a[ok] for a in out))
      if len(out.samples) < cfg.data.num_train:
        raise TrainingDivergedError(
          f"recursive {filt} gen {g}: only {len(out.samples)} of {n_draw} samples are finite, "
          f"fewer than data.num_train={cfg.data.num_train}; the model diverges when sampling "
          f"(train longer, or lower train.lr)"
        )
      kept_idx = hallucination.filter_indices(
        cfg.data.num_train,
        filt,
        key_seed=cfg.seed + g,
        traj_variance=out.traj_variance,
        num_total=len(out.samples),
      )
      rec = {
        "filter": filt,
        "generation": g,
        "num_train": len(data),
        "num_drawn": n_draw,
        "num_non_finite": int((~ok).sum()),
        **kind.measure(out.samples, out.traj_variance, kept_idx),
      }
      records[(filt, g)] = rec
      logging.info(
        "recursive %s gen %d: %s",
        filt,
        g,
        {k: v for k, v in rec.items() if not isinstance(v, list)},
      )
      if g > 0 or filt == rc.filters[0]:
        kind.figure(
          wd.figure(f"samples_{tag}.png"),
          out.samples,
          f"{cfg.data.name}, generation {g}" + (f", filter {filt}" if g else ""),
        )
      if filt == "variance" and hasattr(kind, "filter_figure"):
        kind.filter_figure(
          wd.figure(f"filtered_{tag}.png"),
          out.samples,
          out.traj_variance,
          kept_idx,
          f"generation {g}: first 32 kept | 32 dropped (highest "
          f"trajectory variance); caption: CNN class, confidence",
        )
      _write(cfg, wd, records, kind, info, t0)
      data = out.samples[kept_idx]
  return _write(cfg, wd, records, kind, info, t0)


def _write(cfg, wd, records, kind, info, t0):
  gens = [records[k] for k in sorted(records, key=lambda k: (k[1], k[0]))]
  res = {
    "experiment": "recursive",
    "data": cfg.data.name,
    "seed": cfg.seed,
    **(info or {}),
    "num_train": cfg.data.num_train,
    "oversample": cfg.recursive.oversample,
    "filters": list(cfg.recursive.filters),
    "generations": gens,
    "seconds_this_run": time.time() - t0,
  }
  wd.write_results(res)
  plots.generation_curves(
    wd.figure("recursive_curves.png"), gens, cfg.recursive.filters, _measure_keys(kind)
  )
  return res


# -- the report's rows ------------------------------------------------------------
RECURSIVE_SKIP = ("filter", "generation", "num_train", "num_drawn")


def report_rows(res, cfg=None) -> List[Row]:
  """``results.json`` of a recursive run: every numeric field of every (filter, generation)."""
  rows = []
  for r in res.get("generations") or []:
    if not isinstance(r, dict):
      continue
    sel = {"filter": r.get("filter"), "generation": r.get("generation")}
    tag = f"filter {sel['filter']}, generation {sel['generation']}"
    for k, v in r.items():
      if k in RECURSIVE_SKIP or not is_number(v):
        continue
      if "rate" in k or k in ("mode_coverage",):
        n = r.get("num_train") if k.endswith("_kept") else r.get("num_drawn")
        if k == "mode_coverage":  # a share of modes, not of samples: no binomial interval
          rows.append(Row(k, f"{k} ({tag})", v, "pct", select=sel))
        else:
          rows.append(proportion_row(k, f"{k} ({tag})", v, n, select=sel))
      else:
        rows.append(Row(k, f"{k} ({tag})", v, "num", select=sel))
  return rows
