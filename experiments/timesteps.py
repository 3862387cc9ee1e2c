"""Training T against sampling T', and a continuous-time VDM (the paper's appendix).

Models, all on the same 2D mixture (``data.num_train`` points): a DDPM for each
training ``T`` in ``tsteps.train_T``, and a VDM for each log-SNR schedule in
``tsteps.vdm_schedules`` (``fixed``, ``learned``). Each is sampled with each number
of reverse steps ``T'`` in ``tsteps.sample_T`` (DDPM: ancestral sampling on an evenly
respaced subsequence of its T steps, i.e. DDIM with eta = 1, only where T' <= T;
VDM: its own ancestral sampler, any T'), and so is the exact score of the DDPM
schedule with the largest T (the control: no interpolation at any T'). Every cell
reports the hallucination rate (farther than ``detect.k_sigma`` std from every mode)
with its Wilson interval and the trajectory variance's AUROC; figures: one scatter
per cell (rows: models, columns: T') and the rates as a table-like heat map.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mode_interp import exact_score, hallucination, pipeline, plots, vdm
from mode_interp.errors import ConfigError
from experiments import gaussian
from typing import List

from experiments.rows import Row, is_number, proportion_row


def _cell_cfg(cfg, sampler: str, num_steps: int, eta: float):
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.sample.sampler, c.sample.num_steps, c.sample.eta = sampler, num_steps, eta
  return c


def _ddpm_cfg(cfg, T: int):
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.diffusion.timesteps = T
  return c


def _vdm_trainer(cfg, schedule: str, mesh):
  model = pipeline.make_model(cfg)
  net_apply = lambda p, z, t: model.apply({"params": p}, z, t)
  gamma_init, gamma_apply = vdm.make_gamma(schedule, cfg.tsteps.gamma_min, cfg.tsteps.gamma_max)
  tc = cfg.train
  optimizer = pipeline.make_optimizer(cfg)
  from mode_interp import sharding

  repl = sharding.replicated(mesh)
  init = sharding.jit_once(
    lambda x1, key: vdm.init_state(model, gamma_init, optimizer, x1, key), mesh, out_shardings=repl
  )
  step = sharding.jit(
    vdm.make_train_step(
      net_apply,
      gamma_apply,
      optimizer,
      tc.batch_size,
      tc.ema_decay,
      learned_schedule=schedule == "learned",
    ),
    mesh,
    convolutional=False,
    training=True,
    donate_argnums=(0,),
    out_shardings=(repl, repl),
  )
  return pipeline.Trainer(init, step, mesh), net_apply, gamma_apply


def _measure(cfg, mixture, x, tv):
  ok = hallucination.finite_or_warn(x, tv)
  x, tv = x[ok], tv[ok]
  hal = hallucination.mixture_hallucinations(x, mixture.means, mixture.std, cfg.detect.k_sigma)
  det = hallucination.detection_metrics(
    tv, hal, cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  )
  return (
    {
      "hallucination": hallucination.rate_with_interval(hal),
      "hallucination_rate": float(hal.mean()) if len(hal) else None,
      "auroc": det["auroc"],
      "hallucinations_removed": det["hallucinations_removed"],
      "non_finite": hallucination.non_finite_report(ok),
    },
    x,
    hal,
  )


def check_config(cfg) -> None:
  """The T-vs-T' experiment's fields: positive step counts, known VDM schedules."""
  from experiments import config_check as cc

  for field in ("tsteps.train_T", "tsteps.sample_T"):
    values = cc.get(cfg, field)
    if (
      isinstance(values, (str, bytes))
      or not values
      or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
    ):
      raise ConfigError(field, f"must be a non-empty tuple of positive ints, got {values!r}")
  window = cfg.detect.window
  if min(cc.get(cfg, "tsteps.sample_T")) < window:
    raise ConfigError(
      "tsteps.sample_T",
      f"every T' must be >= detect.window={window}, got {tuple(cfg.tsteps.sample_T)!r}",
    )
  from mode_interp import vdm

  scheds = cc.get(cfg, "tsteps.vdm_schedules")
  if isinstance(scheds, str) or any(s not in vdm.SCHEDULES for s in scheds):
    raise ConfigError(
      "tsteps.vdm_schedules",
      f"{scheds!r}: entries must be from {', '.join(vdm.SCHEDULES)} (or empty)",
    )
  lo = cc.number(cfg, "tsteps.gamma_min")
  cc.number(cfg, "tsteps.gamma_max", lo=lo, lo_open=True)


def run(cfg, wd, mesh, info=None):
  t0 = time.time()
  mixture = gaussian.make_mixture(cfg)
  data = mixture.sample(cfg.data.num_train, seed=cfg.seed)
  ts = cfg.tsteps
  n = cfg.sample.num_samples
  shape = (mixture.dim,)
  cells, panels = [], {}

  def record(model_name, t_prime, x, tv, extra):
    m, xs, hal = _measure(cfg, mixture, x, tv)
    cells.append({"model": model_name, "sample_T": t_prime, **extra, **m})
    panels[(model_name, t_prime)] = (xs, hal)
    logging.info(
      "T vs T': %s, T' = %d: hallucination rate %s, AUROC %s",
      model_name,
      t_prime,
      m["hallucination_rate"],
      m["auroc"],
    )

  def draw(c, fn, params, cache, step, key):
    return pipeline.draw_samples(
      c,
      pipeline.jit_sampler(fn, c, mesh),
      params,
      n,
      mesh=mesh,
      key=key,
      label=cache,
      workdir=wd,
      cache=cache,
      step=step,
    )

  key = jax.random.key(cfg.seed + 1)
  for T in ts.train_T:
    c = _ddpm_cfg(cfg, T)
    tag = f"ddpm_T{T}"
    state = pipeline.train_model(
      c, data, wd, trainer=pipeline.make_trainer(c, mesh), subdir=tag, label=f"train/{tag}"
    )
    step = int(jax.device_get(state.step))
    for tp in ts.sample_T:
      if tp > T:
        continue
      cc = _cell_cfg(c, "ddim", tp, 1.0)
      fn = pipeline.make_sampler(cc, pipeline.eps_fn_for(pipeline.make_model(cc)), shape, mesh=mesh)
      out = pipeline.draw_samples(
        cc,
        fn,
        state.ema_params,
        n,
        mesh=mesh,
        key=key,
        label=f"{tag}_Tp{tp}",
        workdir=wd,
        cache=f"{tag}_Tp{tp}_samples.npz",
        step=step,
      )
      record(f"DDPM T={T}", tp, out.samples, out.traj_variance, {"train_T": T})

  for sched in ts.vdm_schedules:
    tag = f"vdm_{sched}"
    trainer, net_apply, gamma_apply = _vdm_trainer(cfg, sched, mesh)
    state = pipeline.train_model(cfg, data, wd, trainer=trainer, subdir=tag, label=f"train/{tag}")
    step = int(jax.device_get(state.step))
    for tp in ts.sample_T:
      cc = _cell_cfg(cfg, f"vdm_{sched}", tp, 0.0)
      fn = vdm.get_sampling_fn(
        net_apply, gamma_apply, shape, tp, cfg.detect.window, cfg.detect.reduction
      )
      out = draw(cc, fn, state.ema_params, f"{tag}_Tp{tp}_samples.npz", step, key)
      record(f"VDM {sched}", tp, out.samples, out.traj_variance, {"schedule": sched})
    g = np.asarray(gamma_apply(state.ema_params["gamma"], jnp.linspace(0.0, 1.0, 11)))
    cells.append(
      {
        "model": f"VDM {sched}",
        "gamma_at_t": [round(float(v), 4) for v in g],
        "t": [round(float(v), 1) for v in np.linspace(0, 1, 11)],
      }
    )

  T_max = max(ts.train_T)
  c = _ddpm_cfg(cfg, T_max)
  schedule = pipeline.make_schedule(c)
  exact = exact_score.make_exact_eps_fn(schedule, mixture.means, mixture.std, mixture.weights)
  for tp in ts.sample_T:
    if tp > T_max:
      continue
    cc = _cell_cfg(c, "ddim", tp, 1.0)
    fn = pipeline.make_sampler(cc, exact, shape, mesh=mesh, schedule=schedule)
    out = pipeline.draw_samples(
      cc,
      fn,
      None,
      n,
      mesh=mesh,
      key=key,
      label=f"exact_Tp{tp}",
      workdir=wd,
      cache=f"exact_T{T_max}_Tp{tp}_samples.npz",
      step=0,
    )
    record(f"exact score (T={T_max})", tp, out.samples, out.traj_variance, {"train_T": T_max})

  rows = list(dict.fromkeys(m for m, _ in panels))
  plots.cell_scatter_grid(
    wd.figure("tsteps_grid.png"), panels, rows, list(ts.sample_T), data[:5_000]
  )
  res = {
    "experiment": "timesteps",
    "data": cfg.data.name,
    "seed": cfg.seed,
    **(info or {}),
    "num_train": cfg.data.num_train,
    "num_samples": n,
    "cells": cells,
    "seconds_this_run": time.time() - t0,
  }
  wd.write_results(res)
  return res


# -- the report's rows ------------------------------------------------------------
def report_rows(res, cfg=None) -> List[Row]:
  """One hallucination-rate row (and AUROC) per (model, T') cell of the T-vs-T' experiment."""
  rows = []
  for c in res.get("cells") or []:
    if not isinstance(c, dict) or "sample_T" not in c:
      continue
    sel = {"model": c.get("model"), "sample_T": c.get("sample_T")}
    tag = f"{c.get('model')}, T' = {c.get('sample_T')}"
    h = c.get("hallucination") or {}
    rows.append(
      proportion_row(
        "hallucination_rate",
        f"Hallucination rate, {tag}",
        c.get("hallucination_rate"),
        h.get("n"),
        h.get("count"),
        h.get("ci95"),
        select=sel,
      )
    )
    if is_number(c.get("auroc")):
      rows.append(Row("auroc", f"Trajectory-variance AUROC, {tag}", c["auroc"], "num", select=sel))
  return rows
