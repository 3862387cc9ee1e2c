"""Hallucination detectors and mitigations on common ground (configs/hallbench.py).

Per testbed (a Gaussian mixture of ``hallbench.testbeds``): the testbed's recipe
(``testbeds.<name>``) trains one model (checkpoints/<name>/, resumable, metrics tagged
``model=<name>``); that checkpoint is sampled by DDPM and by DDIM (eta = 0) from the same
starting noise (``<name>_*.npz`` caches, chunk by chunk), and

- every detector of ``hallbench.detectors`` scores the same samples: all of the DDPM set, and
  the first ``hallbench.mi.num_samples`` of the DDIM set (where the manifold-instability
  filter, defined for a deterministic sampler, joins); thresholds are chosen on one half
  (``trajectory_scores.split_halves``) and reported on the other
  (:func:`mode_interp.detectors.held_out_evaluation`);
- every mitigation of ``hallbench.mitigations`` is measured beside plain DDPM of the same
  checkpoint.

Costs are network passes per sample (:data:`mode_interp.detectors.COST_CONVENTION`); the
wall seconds of the run are recorded beside them (near 0 for what a rerun found cached).
"""

import hashlib
import json
import numbers
import os
import time
from typing import List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments import config_check, gaussian
from experiments import shapes as shapes_experiment
from experiments.rows import Row, proportion_row
from mode_interp import detectors, hallucination, pipeline, plots, samplers, sharding
from mode_interp import trajectory_scores
from mode_interp.data import gaussians
from mode_interp.data import shapes as shapes_data
from mode_interp.errors import ConfigError, WorkdirError
from mode_interp.workdir import flatten, frozen_fields

RECIPE = ("data", "diffusion", "model", "train")
SAMPLING = ("sample", "detect")  # a testbed's own, where its recipe gives them
TESTBEDS = tuple(gaussians.NAMES) + ("shapes",)
# Testbeds this benchmark cannot hold, and why (written into results.json and the report).
OMITTED_TESTBEDS = {
  "mnist": "no label of hallucination exists for an MNIST sample: the classifier names a "
  "digit for every image, and no checker or closed form says whether an image lies in the "
  "data's support, so no detector can be scored and no rate measured",
}
# Detectors a testbed cannot run, and why.
UNAVAILABLE = {
  ("shapes", "oracle"): "no closed form gives the probability that an image lies outside the "
  "support of SIMPLE SHAPES (the checker's verdict is the label itself)",
}
SET_TITLES = {
  "ddpm": "DDPM samples",
  "ddim": "DDIM samples",
  "ddpm_two_in_one": "DDPM samples, two in one column vs in support",
  "ddim_two_in_one": "DDIM samples, two in one column vs in support",
}
MITIGATIONS = ("ddpm", "filter", "ddim", "ddim_stochastic", "iq", "vsm")
LABELS = {
  "trajectory_variance": "trajectory variance (Aithal et al.)",
  "manifold_instability": "manifold instability (2605.05026)",
  "lid_loss": "LID from the denoising loss (2605.05026)",
  "flipd": "FLIPD (2406.03537)",
  "renoise": "re-noising consistency",
  "oracle": "oracle (true mixture's posterior)",
  "study_best": "study's best trajectory score (selected on one half)",
}
# The detectors in the tables' order: the library's, then the detection study's best score
# (experiments.detect's windows x sources x reductions, chosen on the selection half).
DETECTORS = tuple(detectors.NAMES) + ("study_best",)

# The papers' own figures where they report them on this kind of testbed (only abstracts
# could be read: see reports/hallbench.md).
PAPER = {
  ("detector", "trajectory_variance"): {
    "source": "Aithal et al. 2024, abstract (arXiv:2406.09358)",
    "claim": "removes over 95% of hallucinations while retaining 96% of in-support samples "
    "(synthetic data; no per-testbed figure could be read)",
    "removed_at_keep": 0.95,
    "compare": "at_least",
  },
  ("mitigation", "iq", "grid25"): {
    "source": "issue's summary of arXiv:2605.05026 (the figure was not in the text that "
    "could be read: the abstract only)",
    "claim": "2D grid: hallucination rate 20.2% (baseline) -> 8.9% with IQ",
    "rate_baseline": 0.202,
    "rate": 0.089,
  },
  ("mitigation", "vsm"): {
    "source": "Bhosale et al. 2026, abstract (arXiv:2606.00377); its per-dataset tables "
    "could not be read",
    "claim": "reduces hallucinations by up to ~25% (image datasets; relative to the "
    "learned-variance baseline, rho = 0)",
  },
}


# -- configs ---------------------------------------------------------------------------


def trained_workdir(cfg, name: str) -> str:
  """``testbeds.<name>.workdir``: a workdir trained by ``experiments.main`` to read instead
  of training here ("" when the testbed trains its own model)."""
  return str(cfg.testbeds[name].get("workdir", "") or "")


def _trained_recipe(cfg, name: str) -> dict:
  """The recipe sections of ``testbeds.<name>.workdir``'s config.json, checked: it must be a
  single-model run of the testbed's experiment with a checkpoint."""
  from experiments import detect

  path = trained_workdir(cfg, name)
  field = f"testbeds.{name}.workdir"
  try:
    wcfg = detect.read_workdir(path)
  except detect.StudyError as e:
    raise ConfigError(field, str(e).replace("--workdir: ", "", 1)) from None
  want = "shapes" if name == "shapes" else "gaussian"
  if wcfg.experiment != want or wcfg.data.name != name:
    raise ConfigError(
      field,
      f"{path} holds a {wcfg.experiment!r} run of {wcfg.data.name!r}; testbed {name!r} "
      f"reads a {want!r} run of {name!r} (e.g. python -m experiments.main "
      f"--config=configs/{'shapes' if name == 'shapes' else name}.py --workdir={path})",
    )
  # Its seed made its training data (IQ's calibration points, the nearest training images).
  return {**{s: wcfg[s].to_dict() for s in RECIPE}, "seed": wcfg.seed}


def testbed_config(cfg, name: str) -> ml_collections.ConfigDict:
  """The experiment config of testbed ``name``: the shared sections of ``cfg`` with the
  testbed's recipe (``testbeds.<name>``: data, diffusion, model, train, and its own sample
  and detect sections where given); with ``testbeds.<name>.workdir``, the recipe of that
  trained workdir."""
  d = cfg.to_dict()
  for k in ("testbeds", "hallbench"):
    d.pop(k, None)
  for s in RECIPE + SAMPLING:
    if s in cfg.testbeds[name]:
      d[s] = cfg.testbeds[name][s].to_dict()
  if trained_workdir(cfg, name):
    d.update(_trained_recipe(cfg, name))
    d["source_workdir"] = os.path.abspath(trained_workdir(cfg, name))
  d["experiment"] = "shapes" if name == "shapes" else "gaussian"
  return ml_collections.ConfigDict(d)


def _merge(base: dict, over: dict) -> dict:
  out = dict(base)
  for k, v in over.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def testbed_settings(cfg, name: str) -> ml_collections.ConfigDict:
  """``hallbench`` with testbed ``name``'s own settings (``testbeds.<name>.hallbench``) over
  it."""
  over = cfg.testbeds[name].get("hallbench")
  base = cfg.hallbench.to_dict()
  return ml_collections.ConfigDict(_merge(base, over.to_dict()) if over else base)


def _variant(tcfg, **sample):
  c = ml_collections.ConfigDict(tcfg.to_dict())
  for k, v in sample.items():
    c.sample[k] = v
  return c


def check_recipe(wd, name: str, tcfg) -> None:
  """Refuses (before any work) a testbed recipe whose model-defining fields changed under
  its checkpoint, with the workdir's own rules (:func:`mode_interp.workdir.frozen_fields`),
  and records the recipe (``<name>_recipe.json``) for the next run."""
  path = wd.file(f"{name}_recipe.json")
  new = {s: tcfg[s].to_dict() for s in RECIPE}
  new = json.loads(json.dumps(new, default=list))
  source = tcfg.get("source_workdir", "")
  if source:
    new["source_workdir"] = source
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get("source_workdir", "") != source:
      raise WorkdirError(
        f"{wd.path} holds testbed {name!r} from "
        f"{old.get('source_workdir') or 'its own training'}, not "
        f"{source or 'its own training'} (testbeds.{name}.workdir): its caches belong to "
        f"that model. Use a new --workdir, or delete this one."
      )
    frozen = frozen_fields(old)
    fo, fn = flatten(old), flatten(new)
    bad = [
      (k, fo.get(k), fn.get(k))
      for k in sorted(set(fo) | set(fn))
      if k in fo
      and fo.get(k) != fn.get(k)
      and any(k.startswith(f) if f.endswith(".") else k == f for f in frozen)
    ]
    if bad:
      lines = ", ".join(f"testbeds.{name}.{k}: {o!r} -> {n!r}" for k, o, n in bad)
      raise WorkdirError(
        f"{wd.path} holds testbed {name!r} trained with a different recipe "
        f"({lines}); these fields define its model, so resuming would mix two "
        f"experiments. Use a new --workdir, or delete this one."
      )
  if wd.main:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def vsm_config(tcfg, h, rho: float) -> ml_collections.ConfigDict:
  """The testbed's recipe with a learned variance (``model.learn_sigma``) trained with VSM's
  penalty ``rho`` (0: its learned-variance baseline), ``hallbench.vsm.steps`` steps (0: the
  recipe's), sampled by DDPM with that variance."""
  c = ml_collections.ConfigDict(tcfg.to_dict())
  c.model.learn_sigma = True
  c.train.vsm_rho = float(rho)
  if int(h.vsm.steps):
    c.train.steps = int(h.vsm.steps)
  c.sample.variance = "learned"
  return c


def vsm_tag(name: str, rho: float) -> str:
  return f"{name}_vsm_rho{float(rho):g}"


def _digest(**settings) -> str:
  return hashlib.sha1(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:10]


# -- helpers ---------------------------------------------------------------------------


def diverged_radius(mixture) -> float:
  """Samples farther than this from every mode (ten times the data's extent) are counted as
  diverged: they stay hallucinations, but are left out of the mean distance to the modes,
  which a single overflowing trajectory (DDIM's first steps divide by sqrt(alpha_bar) ~
  1e-25 on the toy schedule) would otherwise swamp."""
  return 10.0 * float(np.max(np.linalg.norm(mixture.means, axis=1)))


def _mode_distance(x, mixture) -> dict:
  d = hallucination.nearest_mode_distance(x, mixture.means)
  far = d > diverged_radius(mixture)
  d = d[~far]
  if not len(d):
    return {"mean": None, "mean_in_std": None, "median_in_std": None, "diverged": int(far.sum())}
  return {
    "mean": float(d.mean()),
    "mean_in_std": float(d.mean() / mixture.std),
    "median_in_std": float(np.median(d) / mixture.std),
    "diverged": int(far.sum()),
  }


def mitigation_row(method, x, mixture, k_sigma, cost, seconds, **extra) -> dict:
  """The measures of one mitigation's output ``x``: the hallucination rate over its finite
  samples (non-finite ones counted apart), the in-support share, the distance of its samples
  to the nearest mode (mean and median, in units of the modes' std; diverged samples
  counted apart), the modes it covers and its cost."""
  ok = hallucination.finite_rows(x)
  xs = x[ok]
  hal = hallucination.mixture_hallucinations(xs, mixture.means, mixture.std, k_sigma)
  covered = (
    np.unique(hallucination.nearest_mode(xs[~hal], mixture.means)).size if (~hal).any() else 0
  )
  return {
    "method": method,
    "num_samples": int(len(x)),
    "non_finite": hallucination.non_finite_report(ok),
    "hallucination": hallucination.rate_with_interval(hal),
    "in_support": hallucination.rate_with_interval(~hal),
    "distance_to_nearest_mode": _mode_distance(xs, mixture),
    "modes_covered": int(covered),
    "num_modes": int(len(mixture.means)),
    "network_evaluations_per_sample": float(cost),
    "seconds_this_run": round(float(seconds), 2),
    **extra,
  }


# -- one testbed -----------------------------------------------------------------------


class _Testbed:
  """The trained model of one testbed (a Gaussian mixture) and the samplers and detectors
  built on it. :class:`_ShapesTestbed` holds SIMPLE SHAPES."""

  kind = "gaussian"
  clip_x0 = None  # the sampler's clip of the predicted x0 (the images' range for shapes)
  has_oracle = True

  def __init__(self, cfg, name, wd, mesh):
    self.cfg, self.name, self.wd, self.mesh = cfg, name, wd, mesh
    self.h = testbed_settings(cfg, name)
    self.tcfg = testbed_config(cfg, name)
    self.schedule = pipeline.make_schedule(self.tcfg)
    self.model = pipeline.make_model(self.tcfg)
    self.eps_fn = pipeline.eps_fn_for(self.model)
    self.T = int(self.tcfg.diffusion.timesteps)
    self.k_sigma = float(self.tcfg.detect.get("k_sigma", 0.0))  # Gaussian testbeds
    self.seconds = {}
    self.setup()
    self.dim = int(np.prod(self.shape))

  def setup(self):
    self.mixture = gaussian.make_mixture(self.tcfg)
    self.shape = (self.mixture.dim,)

  def training_data(self) -> np.ndarray:
    return self.mixture.sample(self.tcfg.data.num_train, seed=self.tcfg.seed)

  def train(self):
    self.train_data = self.training_data()
    source = self.tcfg.get("source_workdir", "")
    trainer = pipeline.make_trainer(self.tcfg, self.mesh)
    t0 = time.time()
    if source:  # a trained workdir's checkpoint, read and never written
      from mode_interp import train as train_lib
      from mode_interp.workdir import Workdir

      manager = Workdir(source).checkpoint_manager()
      abstract = trainer.abstract_state(jnp.asarray(self.train_data[:1]))
      state, _ = train_lib.restore_checkpoint(manager, abstract)
      manager.close()
      if state is None:
        raise WorkdirError(
          f"testbeds.{self.name}.workdir: no readable checkpoint in {source}/checkpoints; "
          f"train it again (python -m experiments.main --workdir={source} ...)"
        )
    else:
      sharding.check_divisible(
        self.tcfg.train.batch_size, self.mesh, f"testbeds.{self.name}.train.batch_size"
      )
      state = pipeline.train_model(
        self.tcfg,
        self.train_data,
        self.wd,
        trainer=trainer,
        subdir=self.name,
        label=f"train/{self.name}",
      )
    self.seconds["train"] = round(time.time() - t0, 2)
    self.step = int(jax.device_get(state.step))
    self.params = state.ema_params

  def labels(self, x):
    return hallucination.mixture_hallucinations(
      x, self.mixture.means, self.mixture.std, self.k_sigma
    )

  def measure(self, method, x, cost, seconds, **extra) -> dict:
    """:func:`mitigation_row` of ``x`` on this testbed."""
    return mitigation_row(method, x, self.mixture, self.k_sigma, cost, seconds, **extra)

  def oracle(self, x):
    t = int(self.h.oracle.t)
    return detectors.oracle_out_of_band(
      x,
      self.mixture.means,
      self.mixture.std,
      float(self.schedule.sqrt_alphas_bar[t]),
      float(self.schedule.sqrt_one_minus_alphas_bar[t]),
      self.k_sigma,
      self.mixture.weights,
    )

  # -- sampling ------------------------------------------------------------------------
  def draw(self, label, vcfg, fn, n, cache):
    t0 = time.time()
    out = pipeline.draw_samples(
      vcfg,
      pipeline.jit_sampler(fn, vcfg, self.mesh),
      self.params,
      n,
      mesh=self.mesh,
      label=f"{self.name}/{label}",
      workdir=self.wd,
      cache=f"{self.name}_{cache}.npz",
      step=self.step,
    )
    self.seconds[label] = round(time.time() - t0, 2)
    return out

  def spec(self, vcfg, **kw):
    import dataclasses

    return dataclasses.replace(pipeline.sampler_spec(vcfg, self.shape, self.clip_x0), **kw)

  def ddpm(self):
    return self.draw(
      "ddpm",
      self.tcfg,
      samplers.get_sampling_fn("ddpm", self.schedule, self.eps_fn, self.spec(self.tcfg)),
      self.h.num_samples,
      "ddpm",
    )

  def ddim_cfg(self):
    return _variant(self.tcfg, sampler="ddim", eta=0.0, num_steps=int(self.h.ddim.steps))

  def ddim_fn(self, k=0, vcfg=None):
    vcfg = vcfg or self.ddim_cfg()
    return samplers.get_sampling_fn(
      "ddim", self.schedule, self.eps_fn, self.spec(vcfg, stochastic_last=int(k))
    )

  def ddim_steps(self):
    return len(samplers.ddim_timesteps(self.T, int(self.h.ddim.steps)))

  def ddim(self):
    return self.draw("ddim", self.ddim_cfg(), self.ddim_fn(), self.h.num_samples, "ddim")

  def ddim_stochastic(self, k):
    return self.draw(
      f"ddim_k{k}", self.ddim_cfg(), self.ddim_fn(k), self.h.ddim.num_samples, f"ddim_k{k}"
    )

  def vsm(self, rho: float):
    """A learned-variance model of this testbed's recipe trained with VSM's penalty ``rho``
    (checkpoints/<name>_vsm_rho<rho>/, resumable) and its DDPM samples with that variance
    (the DDPM set's starting noise)."""
    c = vsm_config(self.tcfg, self.h, rho)
    tag = vsm_tag(self.name, rho)
    model = pipeline.make_model(c)
    t0 = time.time()
    state = pipeline.train_model(
      c,
      self.train_data,
      self.wd,
      trainer=pipeline.make_trainer(c, self.mesh),
      subdir=tag,
      label=f"train/{tag}",
    )
    self.seconds[f"train_{tag}"] = round(time.time() - t0, 2)
    step = int(jax.device_get(state.step))
    fn = samplers.get_sampling_fn("ddpm", self.schedule, pipeline.eps_fn_for(model), self.spec(c))
    t0 = time.time()
    out = pipeline.draw_samples(
      c,
      pipeline.jit_sampler(fn, c, self.mesh),
      state.ema_params,
      int(self.h.vsm.num_samples),
      mesh=self.mesh,
      label=f"{tag}/ddpm",
      workdir=self.wd,
      cache=f"{tag}.npz",
      step=step,
    )
    self.seconds[tag] = round(time.time() - t0, 2)
    return out, step

  def study_scores(self, n: int):
    """The detection study's scores (``experiments.detect``: every window x source x
    reduction of ``hallbench.study``) of the DDPM set's first ``n`` samples, accumulated in
    the sampler's scan; drawn here in a pass of their own by the study's own resumable loop
    (``detect.draw``: the DDPM set's starting noise, checked against its samples), cached in
    ``<name>_study.npz``. Returns (samples, names, scores [n, K])."""
    from experiments import detect

    st = self.h.study
    plan = detect.Plan(
      self.tcfg,
      n,
      0,
      str(st.windows),
      str(st.reductions),
      int(st.max_carry_mb),
      sharding.num_shards(self.mesh),
    )
    study_jit = detect.make_study_fn(self.tcfg, plan, self.model, self.mesh)
    merged, seconds = detect.draw(
      self.tcfg,
      plan,
      self.wd,
      study_jit,
      self.params,
      self.step,
      self.mesh,
      cache_name=f"{self.name}_study.npz",
    )
    self.seconds["study"] = round(seconds, 2)
    return merged["samples"], plan.names, merged["scores"]

  def manifold_instability(self):
    mi = self.h.mi
    vcfg = self.ddim_cfg()
    fn = detectors.manifold_instability_sampler(
      self.ddim_fn(0, vcfg),
      self.shape,
      int(mi.perturbations),
      float(mi.scale),
      jax.random.key(self.tcfg.seed + 7),
      str(mi.design),
    )
    # The DDIM set's starting noise (draw_samples' default key) is perturbed.
    dig = _digest(p=int(mi.perturbations), s=float(mi.scale), d=str(mi.design))
    return self.draw("manifold_instability", vcfg, fn, int(mi.num_samples), f"mi_{dig}")

  def iq(self):
    q = self.h.iq
    t0 = time.time()
    method = detectors.trace_method(self.dim, int(self.h.flipd.hutchinson_above))
    probes = int(self.h.flipd.probes)
    cache = self.wd.file(f"{self.name}_iq_thresholds.npz")
    dig = _digest(
      t_lo=int(q.t_lo),
      t_hi=int(q.t_hi),
      q=float(q.quantile),
      n=int(q.calibration),
      m=method,
      p=probes,
      step=self.step,
    )
    done = self.wd.load_arrays(os.path.basename(cache))
    if done is not None and str(done.get("digest")) == dig:
      thr = done["thresholds"]
    else:
      cal = self.train_data[: int(q.calibration)]
      thr = detectors.iq_thresholds(
        self.eps_fn,
        self.params,
        self.schedule,
        cal,
        int(q.t_lo),
        int(q.t_hi),
        float(q.quantile),
        jax.random.key(self.tcfg.seed + 11),
        method,
        probes,
      )
      self.wd.save_arrays(os.path.basename(cache), thresholds=thr, digest=np.asarray(dig))
    self.seconds["iq_calibration"] = round(time.time() - t0, 2)
    eps_iq = detectors.iq_eps_fn(
      self.eps_fn,
      self.schedule,
      thr,
      int(q.t_lo),
      int(q.t_hi),
      float(q.strength),
      method,
      probes,
      jax.random.key(self.tcfg.seed + 13),
    )
    fn = samplers.get_sampling_fn("ddpm", self.schedule, eps_iq, self.spec(self.tcfg))
    dig2 = _digest(thr=dig, s=float(q.strength))
    out = self.draw("iq", self.tcfg, fn, int(q.num_samples), f"iq_{dig2}")
    steps = int(q.t_hi) - int(q.t_lo) + 1
    per_step = detectors.iq_step_cost(self.dim, method, probes)
    cost = self.T + steps * (per_step - 1)
    cal_cost = steps * int(q.calibration) * detectors.trace_cost(self.dim, method, probes)
    return out, cost, cal_cost, thr

  # -- detectors -----------------------------------------------------------------------
  def _network_detectors(self, names):
    """One jitted ``fn(params, x, key) -> {name: scores}`` for the network-based
    final-sample detectors among ``names`` (compiled once per testbed: every set is scored
    in chunks of the same size)."""
    names = tuple(n for n in ("lid_loss", "flipd", "renoise") if n in names)
    cached = getattr(self, "_net_fn", None)
    if cached is not None and cached[0] == names:
      return cached[1]
    h = self.h
    method = detectors.trace_method(self.dim, int(h.flipd.hutchinson_above))

    def fn(p, xx, key):
      k1, k2, k3 = jax.random.split(key, 3)
      out = {}
      if "lid_loss" in names:
        out["lid_loss"] = detectors.lid_denoising_loss(
          self.eps_fn, p, self.schedule, xx, int(h.lid.t), k1, int(h.lid.draws)
        )
      if "flipd" in names:
        out["flipd"] = detectors.flipd(
          self.eps_fn, p, self.schedule, xx, int(h.flipd.t0), method, k2, int(h.flipd.probes)
        )
      if "renoise" in names:
        out["renoise"] = detectors.renoise_spread(
          self.eps_fn, p, self.schedule, xx, int(h.renoise.t), k3, int(h.renoise.draws)
        )
      return out

    jitted = jax.jit(fn)
    self._net_fn = (names, jitted)
    return jitted

  def detector_scores(self, x, names) -> tuple:
    """Scores of the final-sample detectors (``lid_loss``, ``flipd``, ``renoise``,
    ``oracle``) of ``x`` and their costs in network passes per sample. Chunk ``c`` of
    ``hallbench.chunk_size`` rows draws its noise from ``fold_in(key, c)``."""
    h, chunk = self.h, int(self.h.chunk_size)
    method = detectors.trace_method(self.dim, int(h.flipd.hutchinson_above))
    costs = {
      "lid_loss": int(h.lid.draws),
      "renoise": int(h.renoise.draws),
      "flipd": detectors.trace_cost(self.dim, method, int(h.flipd.probes)),
      "oracle": 0,
    }
    scores, secs = {}, {}
    net = [n for n in ("lid_loss", "flipd", "renoise") if n in names]
    if net:
      t0 = time.time()
      fn = self._network_detectors(names)
      key = jax.random.key(int(self.tcfg.seed) + 21)
      parts = []
      for c, lo in enumerate(range(0, len(x), chunk)):
        part = x[lo : lo + chunk]
        pad = chunk - len(part)
        if pad:
          part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
        out = fn(self.params, jnp.asarray(part), jax.random.fold_in(key, c))
        parts.append({k: np.asarray(v)[: chunk - pad] for k, v in out.items()})
      for n in net:
        scores[n] = np.concatenate([p[n] for p in parts]) if parts else np.zeros(0)
        secs[n] = (time.time() - t0) / len(net)  # one program computes them all
    if "oracle" in names and self.has_oracle:
      t0 = time.time()
      scores["oracle"] = self.oracle(x)
      secs["oracle"] = time.time() - t0
    return scores, {n: costs[n] for n in scores}, secs

  def detection_table(self, set_name, x, scores, costs, secs, hal=None):
    hal = self.labels(x) if hal is None else hal
    sel = trajectory_scores.split_halves(len(x), int(self.h.split_seed))
    keep = float(self.tcfg.detect.keep_in_support)
    rem = float(self.tcfg.detect.remove_hallucinations)
    rows, rocs = [], {}
    for name in [n for n in DETECTORS if n in scores]:
      ev = detectors.held_out_evaluation(scores[name], hal, sel, keep, rem)
      row = {
        "method": name,
        "label": LABELS[name],
        **ev,
        "network_evaluations_per_sample": costs[name],
        "seconds_this_run": round(float(secs.get(name, 0.0)), 2),
      }
      paper = PAPER.get(("detector", name))
      if paper and set_name == "ddpm":
        row["paper"] = paper
      rows.append(row)
      s = np.asarray(scores[name], np.float64)
      if ev["held_out"]["auroc"] is not None:
        fpr, tpr = hallucination.roc_curve(s[~sel], hal[~sel])
        rocs[name] = (fpr, tpr, ev["held_out"]["auroc"])
    held = ~sel
    return {
      "set": set_name,
      "num_samples": int(len(x)),
      "num_hallucinations": int(hal.sum()),
      "held_out": {"num_samples": int(held.sum()), "num_hallucinations": int(hal[held].sum())},
      "rows": rows,
    }, rocs


# Column patterns an in-support SIMPLE SHAPES image can show (which of the three columns hold
# their shape; the empty canvas is "blank", not in support): the testbed's "modes".
SHAPES_PATTERNS = 7


class _ShapesTestbed(_Testbed):
  """SIMPLE SHAPES: the checker's verdicts are the labels, the nearest training image
  stands in for the nearest mode, and the column patterns drawn for the modes covered."""

  kind = "shapes"
  clip_x0 = 1.0  # as the shapes experiment samples: images live in [-1, 1]
  has_oracle = False

  def setup(self):
    self.shape = pipeline.input_shape(self.tcfg)
    self.scale = float(self.tcfg.data.scale)

  def training_data(self) -> np.ndarray:
    return shapes_experiment.load_training_set(self.tcfg)[1]

  def check(self, x):
    return shapes_data.check(np.clip(np.asarray(x), -1.0, 1.0), scale=self.scale)

  def labels(self, x):
    return self.check(x).verdicts != shapes_data.IN_SUPPORT

  def verdicts(self, x):
    return self.check(x).verdicts

  def nearest_training_distance(self, x) -> np.ndarray:
    """RMS per-pixel distance of each row of ``x`` to its nearest training image."""
    t = np.asarray(self.train_data, np.float32).reshape(len(self.train_data), -1)
    tt = (t * t).sum(1)
    out = []
    for lo in range(0, len(x), 256):
      xs = np.clip(np.asarray(x[lo : lo + 256], np.float32), -1, 1).reshape(-1, t.shape[1])
      d2 = (xs * xs).sum(1)[:, None] + tt[None] - 2.0 * xs @ t.T
      out.append(np.sqrt(np.maximum(d2.min(1), 0.0) / t.shape[1]))
    return np.concatenate(out) if out else np.zeros(0)

  def measure(self, method, x, cost, seconds, **extra) -> dict:
    """The measures of one mitigation's output ``x`` on SIMPLE SHAPES: the checker's
    hallucination rate (anything not in support) and two-in-one-column rate over the finite
    images (non-finite ones counted apart), the verdict counts, the RMS distance to the
    nearest training image, and the column patterns of the in-support images."""
    ok = hallucination.finite_rows(x)
    xs = x[ok]
    res = self.check(xs)
    v = res.verdicts
    ins = v == shapes_data.IN_SUPPORT
    d = self.nearest_training_distance(xs)
    patterns = {tuple(row) for row in (res.counts[ins] > 0).tolist()}
    return {
      "method": method,
      "num_samples": int(len(x)),
      "non_finite": hallucination.non_finite_report(ok),
      "hallucination": hallucination.rate_with_interval(~ins),
      "in_support": hallucination.rate_with_interval(ins),
      "two_in_one_column": hallucination.rate_with_interval(v == shapes_data.MULTIPLE_IN_COLUMN),
      "counts": shapes_data.count_verdicts(v),
      "distance_to_data": {
        "mean": float(d.mean()) if len(d) else None,
        "median": float(np.median(d)) if len(d) else None,
        "unit": "RMS per-pixel distance to the nearest training image (pixels in [-1, 1])",
        "diverged": 0,
      },
      "modes_covered": len(patterns),
      "num_modes": SHAPES_PATTERNS,
      "network_evaluations_per_sample": float(cost),
      "seconds_this_run": round(float(seconds), 2),
      **extra,
    }


def make_testbed(cfg, name, wd, mesh) -> _Testbed:
  return (_ShapesTestbed if name == "shapes" else _Testbed)(cfg, name, wd, mesh)


def _finite(out, *extra):
  ok = hallucination.finite_rows(out.samples, out.traj_variance)
  for e in extra:
    ok &= np.isfinite(np.asarray(e, np.float64))
  return ok


def _two_in_one(tb, set_name, x, scores, costs, secs, tables, rocs):
  """On SIMPLE SHAPES, the detectors again on two shapes in one column (the paper's mode
  interpolation) against in-support images only: the all-hallucination figure mixes it
  with malformed and blank images, which the scores treat differently."""
  if tb.kind != "shapes":
    return
  v = tb.verdicts(x)
  multi = v == shapes_data.MULTIPLE_IN_COLUMN
  sel = multi | (v == shapes_data.IN_SUPPORT)
  key = f"{set_name}_two_in_one"
  table, roc = tb.detection_table(
    key, x[sel], {k: np.asarray(s)[sel] for k, s in scores.items()}, costs, secs, hal=multi[sel]
  )
  tables[key], rocs[key] = table, roc


def run_testbed(cfg, name, wd, mesh) -> tuple:
  tb = make_testbed(cfg, name, wd, mesh)
  h = tb.h
  dets, mits = tuple(h.detectors), tuple(h.mitigations)
  omitted = {d: UNAVAILABLE[(tb.kind, d)] for d in dets if (tb.kind, d) in UNAVAILABLE}
  dets = tuple(d for d in dets if d not in omitted)
  t_start = time.time()
  tb.train()
  logging.info("%s: model at step %d", name, tb.step)
  res = {
    "testbed": name,
    "kind": tb.kind,
    "train": {
      "steps": tb.step,
      "recipe": {s: tb.tcfg[s].to_dict() for s in RECIPE},
      "from_workdir": tb.tcfg.get("source_workdir", "") or None,
    },
    "omitted_detectors": omitted,
    "settings": {
      "t0_flipd": int(h.flipd.t0),
      "t_lid": int(h.lid.t),
      "t_renoise": int(h.renoise.t),
      "t_oracle": int(h.oracle.t),
      "sigma_t0_flipd": float(tb.schedule.sqrt_one_minus_alphas_bar[int(h.flipd.t0)]),
      "sigma_oracle": float(tb.schedule.sqrt_one_minus_alphas_bar[int(h.oracle.t)]),
      "trace_method": detectors.trace_method(tb.dim, int(h.flipd.hutchinson_above)),
      "dimensions": tb.dim,
      "reverse_steps": {"ddpm": tb.T, "ddim": tb.ddim_steps()},
      "detect_window": int(tb.tcfg.detect.window),
      "k_sigma": tb.k_sigma,
      "cost_convention": detectors.COST_CONVENTION,
    },
  }

  # The plain DDPM set: the baseline, and the first detection table.
  ddpm = tb.ddpm()
  ok = _finite(ddpm)
  x, tv = ddpm.samples[ok], ddpm.traj_variance[ok]
  scores, costs, secs = tb.detector_scores(x, dets)
  if "trajectory_variance" in dets:
    scores["trajectory_variance"], costs["trajectory_variance"] = tv, 0
  if "study_best" in dets:
    sx, names, sscores = tb.study_scores(len(ddpm.samples))
    if not np.allclose(sx[ok], x, rtol=1e-4, atol=1e-4):
      raise RuntimeError(f"{name}: the study's samples are not the DDPM set's (same noise)")
    sscores = sscores[ok]
    # The score is chosen on the selection half (the rows the thresholds are chosen on) and
    # reported, like every other, on the held-out half.
    hal_x = tb.labels(x)
    sel_x = trajectory_scores.split_halves(len(x), int(h.split_seed))
    good = np.all(np.isfinite(sscores), axis=1)
    best, _ = trajectory_scores.select_best(names, sscores[good], hal_x[good], sel_x[good])
    scores["study_best"] = np.where(good, sscores[:, best], np.nan)
    costs["study_best"], secs["study_best"] = 0, tb.seconds["study"]
    res["study_best"] = {"name": names[best], "candidates": len(names)}
  table_ddpm, roc_ddpm = tb.detection_table("ddpm", x, scores, costs, secs)
  wd.save_arrays(f"{name}_scores_ddpm.npz", **scores)  # per sample, for re-analysis
  table_ddpm["non_finite"] = hallucination.non_finite_report(ok)
  tables = {"ddpm": table_ddpm}
  rocs = {"ddpm": roc_ddpm}
  _two_in_one(tb, "ddpm", x, scores, costs, secs, tables, rocs)

  mit_rows = []
  mit_rows.append(tb.measure("ddpm", ddpm.samples, tb.T, tb.seconds["ddpm"], label="DDPM (plain)"))
  if "filter" in mits:
    n = len(ddpm.samples)
    tv_all = np.where(np.isfinite(ddpm.traj_variance), ddpm.traj_variance, np.inf)
    fin = hallucination.finite_rows(ddpm.samples)
    hal_all = np.ones(n, bool)  # a non-finite sample is in no mode's support
    hal_all[fin] = tb.labels(ddpm.samples[fin])
    for q in h.filter.drop:
      keep_n = int(round(n * (1 - float(q))))
      idx = hallucination.filter_indices(keep_n, "variance", traj_variance=tv_all)
      kept_in = int((~hal_all[idx]).sum())
      mit_rows.append(
        tb.measure(
          f"filter_{q:g}",
          ddpm.samples[idx],
          tb.T * n / keep_n,
          0.0,
          label=f"filter: drop {q:.0%} highest trajectory variance",
          drop=float(q),
          in_support_kept={"count": kept_in, "of": int((~hal_all).sum())},
        )
      )

  # The DDIM set (same starting noise).
  ddim = None
  if "ddim" in mits or "ddim_stochastic" in mits or "manifold_instability" in dets:
    ddim = tb.ddim()
  if "ddim" in mits:
    mit_rows.append(
      tb.measure(
        "ddim",
        ddim.samples,
        tb.ddim_steps(),
        tb.seconds["ddim"],
        label=f"DDIM (eta = 0, {tb.ddim_steps()} steps)",
        stochastic_last=0,
      )
    )

  def paired(n, **sets):
    """Rates of the plain sets over the same first ``n`` indices (same starting noise)."""
    return {
      k: tb.measure(k, v.samples[:n], 0, 0)["hallucination"]
      for k, v in sets.items()
      if v is not None
    }

  if "ddim_stochastic" in mits:
    nk = int(h.ddim.num_samples)
    for k in h.ddim.stochastic_last:
      k = int(k)
      out = ddim if k == 0 else tb.ddim_stochastic(k)
      mit_rows.append(
        tb.measure(
          f"ddim_k{k}",
          out.samples[:nk],
          tb.ddim_steps(),
          tb.seconds.get(f"ddim_k{k}", 0.0),
          label=f"DDIM, last {k} steps ancestral",
          stochastic_last=k,
          paired_baselines=paired(nk, ddpm=ddpm, ddim=ddim),
        )
      )
  if "manifold_instability" in dets:
    mi = tb.manifold_instability()
    m = len(mi.traj_variance)
    sub_x, sub_tv = ddim.samples[:m], ddim.traj_variance[:m]
    # The perturbation-free DDIM run reproduces the DDIM sample: the instability belongs to it.
    ok = hallucination.finite_rows(sub_x, sub_tv) & np.isfinite(mi.traj_variance)
    xs = sub_x[ok]
    sc, co, se = tb.detector_scores(xs, dets)
    if "trajectory_variance" in dets:
      sc["trajectory_variance"], co["trajectory_variance"] = sub_tv[ok], 0
    sc["manifold_instability"] = mi.traj_variance[ok]
    co["manifold_instability"] = int(h.mi.perturbations) * tb.ddim_steps()
    se["manifold_instability"] = tb.seconds["manifold_instability"]
    table_ddim, roc_ddim = tb.detection_table("ddim", xs, sc, co, se)
    wd.save_arrays(f"{name}_scores_ddim.npz", **sc)
    table_ddim["non_finite"] = hallucination.non_finite_report(ok)
    tables["ddim"], rocs["ddim"] = table_ddim, roc_ddim
    _two_in_one(tb, "ddim", xs, sc, co, se, tables, rocs)
  if "iq" in mits:
    out, cost, cal_cost, thr = tb.iq()
    mit_rows.append(
      tb.measure(
        "iq",
        out.samples,
        cost,
        tb.seconds["iq"],
        label=f"Intrinsic Quenching (t {int(h.iq.t_lo)}..{int(h.iq.t_hi)}, "
        f"q {float(h.iq.quantile):g}, strength {float(h.iq.strength):g})",
        settings={k: h.iq[k] for k in h.iq},
        calibration_network_evaluations=int(cal_cost),
        calibration_seconds_this_run=tb.seconds.get("iq_calibration"),
        thresholds={
          "t": list(range(int(h.iq.t_lo), int(h.iq.t_hi) + 1)),
          "lid": [float(v) for v in thr[int(h.iq.t_lo) : int(h.iq.t_hi) + 1]],
        },
        paired_baselines=paired(len(out.samples), ddpm=ddpm),
        paper=PAPER.get(("mitigation", "iq", name)),
      )
    )
  if "vsm" in mits:
    rho = float(h.vsm.rho)
    for r_, method, label in (
      (0.0, "vsm_rho0", "learned variance, rho = 0 (VSM's baseline)"),
      (rho, "vsm", f"VSM (learned variance, rho = {rho:g})"),
    ):
      out, step = tb.vsm(r_)
      tag = vsm_tag(name, r_)
      mit_rows.append(
        tb.measure(
          method,
          out.samples,
          tb.T,
          tb.seconds[tag],
          label=label,
          rho=r_,
          train_steps=step,
          train_seconds_this_run=tb.seconds[f"train_{tag}"],
          paired_baselines=paired(len(out.samples), ddpm=ddpm),
          paper=PAPER.get(("mitigation", "vsm")) if method == "vsm" else None,
        )
      )
  res["detection"] = tables
  res["mitigation"] = {"rows": mit_rows}
  res["seconds_this_run"] = {**tb.seconds, "total": round(time.time() - t_start, 2)}
  return res, rocs


# -- tables, figures, the runner ----------------------------------------------------------


def _r(x, nd=4):
  return None if x is None else round(float(x), nd)


def detector_columns():
  return [
    "method",
    "auroc",
    "auroc_ci95",
    "removed_at_96_kept",
    "removed_ci95",
    "kept_at_95_removed",
    "kept_ci95",
    "network_evaluations_per_sample",
    "paper",
  ]


def mitigation_columns(kind: str = "gaussian"):
  if kind == "shapes":
    return [
      "method",
      "num_samples",
      "hallucination_rate",
      "ci95",
      "two_in_one_column_rate",
      "two_in_one_ci95",
      "in_support_share",
      "mean_rms_distance_to_nearest_training_image",
      "non_finite",
      "column_patterns_covered",
      "network_evaluations_per_sample",
      "paper",
    ]
  return [
    "method",
    "num_samples",
    "hallucination_rate",
    "ci95",
    "in_support_share",
    "mean_distance_to_mode_in_std",
    "diverged_or_non_finite",
    "modes_covered",
    "network_evaluations_per_sample",
    "paper",
  ]


def _distance(row):
  """(mean distance to the data, diverged or non-finite count) of a mitigation row: to the
  nearest mode in the modes' std (Gaussian testbeds), or RMS to the nearest training image
  (SIMPLE SHAPES)."""
  d = row.get("distance_to_data") or row["distance_to_nearest_mode"]
  value = d.get("mean_in_std", d.get("mean"))
  return value, d["diverged"] + row["non_finite"]["count"]


def tables_of(res) -> dict:
  """One table per testbed: ``detectors_<set>`` (methods as rows, measures as columns, the
  papers' figures beside) and ``mitigations``."""
  out = {}
  for name, r in res["testbeds"].items():
    t = {}
    for set_name, table in r["detection"].items():
      rows = []
      for row in table["rows"]:
        paper = row.get("paper")
        rows.append(
          [
            row["method"],
            _r(row["held_out"]["auroc"]),
            [_r(c) for c in row["held_out"]["ci95"]],
            _r(row["removed_at_keep"]["rate"]),
            [_r(c) for c in row["removed_at_keep"]["ci95"]],
            _r(row["kept_at_removal"]["rate"]),
            [_r(c) for c in row["kept_at_removal"]["ci95"]],
            row["network_evaluations_per_sample"],
            paper["claim"] if paper else None,
          ]
        )
      t[f"detectors_{set_name}"] = {
        "columns": detector_columns(),
        "rows": rows,
        "samples": table["num_samples"],
        "hallucinations": table["num_hallucinations"],
        "held_out": table["held_out"],
      }
    rows = []
    kind = r.get("kind", "gaussian")
    for row in r["mitigation"]["rows"]:
      paper = row.get("paper")
      dist, bad = _distance(row)
      two = (
        [_r(row["two_in_one_column"]["rate"]), [_r(c) for c in row["two_in_one_column"]["ci95"]]]
        if kind == "shapes"
        else []
      )
      rows.append(
        [
          row["method"],
          row["num_samples"],
          _r(row["hallucination"]["rate"]),
          [_r(c) for c in row["hallucination"]["ci95"]],
          *two,
          _r(row["in_support"]["rate"]),
          _r(dist, 3),
          bad,
          row["modes_covered"],
          _r(row["network_evaluations_per_sample"], 1),
          paper["claim"] if paper else None,
        ]
      )
    t["mitigations"] = {"columns": mitigation_columns(kind), "rows": rows}
    out[name] = t
  return out


def _figure(wd, name, res, rocs):
  mits = []
  for row in res["mitigation"]["rows"]:
    h = row["hallucination"]
    mits.append(
      (row["method"], row["network_evaluations_per_sample"], h["rate"], h["ci95"][0], h["ci95"][1])
    )
  panels = {
    f"ROC, {SET_TITLES.get(s, s)} (held-out half)": {LABELS[k]: v for k, v in curves.items()}
    for s, curves in rocs.items()
  }
  krows = [r for r in res["mitigation"]["rows"] if r["method"].startswith("ddim_k")]
  k_curve = None
  if krows:
    pts = [
      (0, r["paired_baselines"]["ddim"])
      for r in krows[:1]
      if "ddim" in (r.get("paired_baselines") or {})
    ]
    pts += [(r["stochastic_last"], r["hallucination"]) for r in krows if r["stochastic_last"]]
    k_curve = {
      "k": [p[0] for p in pts],
      "rate": [p[1]["rate"] for p in pts],
      "lo": [p[1]["ci95"][0] for p in pts],
      "hi": [p[1]["ci95"][1] for p in pts],
      "ddpm": krows[0]["paired_baselines"]["ddpm"]["rate"],
    }
  plots.hallbench_testbed(
    wd.figure(f"hallbench_{name}.png"), panels, mits, title=name, k_curve=k_curve
  )


def run(cfg, wd, mesh, info=None):
  t0 = time.time()
  names = tuple(cfg.hallbench.testbeds)
  for name in names:  # every recipe checked before any work
    tcfg = testbed_config(cfg, name)
    check_recipe(wd, name, tcfg)
    hs = testbed_settings(cfg, name)
    if "vsm" in hs.mitigations:
      for rho in (0.0, float(hs.vsm.rho)):
        check_recipe(wd, vsm_tag(name, rho), vsm_config(tcfg, hs, rho))
  res = {
    "experiment": "hallbench",
    "seed": cfg.seed,
    **(info or {}),
    "omitted_testbeds": OMITTED_TESTBEDS,
    "testbeds": {},
  }
  for name in names:
    logging.info("hallbench: testbed %s", name)
    r, rocs = run_testbed(cfg, name, wd, mesh)
    res["testbeds"][name] = r
    if wd.main:
      _figure(wd, name, r, rocs)
  res["tables"] = tables_of(res)
  res["wall_seconds_this_run"] = round(time.time() - t0, 1)
  wd.write_results(res)
  for name, t in res["tables"].items():
    for key, table in t.items():
      logging.info("%s %s:", name, key)
      for row in table["rows"]:
        logging.info("  %s", row[:-1])
  return res


# -- the report's rows ----------------------------------------------------------------


def report_rows(res, cfg) -> List[Row]:
  """Every detector's held-out AUROC and removed-at-keep, every mitigation's rate."""
  rows = []
  for name, r in (res.get("testbeds") or {}).items():
    if not isinstance(r, dict):
      continue
    for set_name, table in (r.get("detection") or {}).items():
      for row in table.get("rows", []):
        m = row.get("method")
        a = row.get("held_out", {})
        ci = a.get("ci95")
        rows.append(
          Row(
            f"testbeds.{name}.detection.{set_name}.{m}.auroc",
            f"{name}, {SET_TITLES.get(set_name, set_name)}: {LABELS.get(m, m)} AUROC",
            a.get("auroc"),
            "num",
            tuple(ci) if ci and None not in ci else None,
            interval="DeLong" if ci and None not in ci else "",
            select={"testbed": name, "set": set_name, "method": m},
          )
        )
        rk = row.get("removed_at_keep", {})
        rows.append(
          proportion_row(
            f"testbeds.{name}.detection.{set_name}.{m}.removed_at_keep",
            f"{name}, {SET_TITLES.get(set_name, set_name)}: {LABELS.get(m, m)}, removed at 96% kept",
            rk.get("rate"),
            rk.get("n"),
            rk.get("count"),
            select={"testbed": name, "set": set_name, "method": m},
          )
        )
    for row in (r.get("mitigation") or {}).get("rows", []):
      hh = row.get("hallucination", {})
      rows.append(
        proportion_row(
          f"testbeds.{name}.mitigation.{row.get('method')}.rate",
          f"{name}: hallucination rate, {row.get('label', row.get('method'))}",
          hh.get("rate"),
          hh.get("n"),
          hh.get("count"),
          hh.get("ci95"),
          select={"testbed": name, "method": row.get("method")},
        )
      )
  return rows


# -- Markdown (reports/hallbench.md) -------------------------------------------------------


def _pct(x, nd=1):
  return "—" if x is None else f"{100 * x:.{nd}f}%"


def _ci(ci, nd=1):
  if not ci or ci[0] is None:
    return ""
  return f" [{100 * ci[0]:.{nd}f}, {100 * ci[1]:.{nd}f}]"


def render_markdown(res) -> str:
  """The tables of a run's ``results.json`` as Markdown: per testbed, the detectors on each
  sample set and the mitigations."""
  out = []
  for name, r in res["testbeds"].items():
    out.append(f"### {name}\n")
    st = r["settings"]
    for set_name, table in r["detection"].items():
      held = table["held_out"]
      what = "two in one column" if set_name.endswith("_two_in_one") else "hallucinations"
      out.append(
        f"**Detectors, {SET_TITLES.get(set_name, set_name)}** ({table['num_samples']:,} "
        f"samples, {table['num_hallucinations']} {what}; thresholds from one half, "
        f"reported on the other: {held['num_samples']:,} samples, "
        f"{held['num_hallucinations']} {what})\n"
      )
      out.append(
        "| detector | AUROC [DeLong 95%] | removed at 96% kept | kept at 95% removed "
        "| network passes / sample | paper |"
      )
      out.append("|---|---|---|---|---|---|")
      for row in table["rows"]:
        a = row["held_out"]
        auc = (
          "—"
          if a["auroc"] is None
          else f"{a['auroc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
        )
        rk, kr = row["removed_at_keep"], row["kept_at_removal"]
        paper = row.get("paper", {}).get("claim", "") if row.get("paper") else ""
        out.append(
          f"| {LABELS[row['method']]} | {auc} | {_pct(rk['rate'])}{_ci(rk['ci95'])} "
          f"({rk['count']}/{rk['n']}) | {_pct(kr['rate'])}{_ci(kr['ci95'])} | "
          f"{row['network_evaluations_per_sample']:,} | {paper} |"
        )
      out.append("")
    for det, why in (r.get("omitted_detectors") or {}).items():
      out.append(f"*{LABELS.get(det, det)}: not run on {name}: {why}.*\n")
    out.append(
      f"**Mitigations** (against plain DDPM of the same checkpoint; DDPM {st['reverse_steps']['ddpm']} "
      f"steps, DDIM {st['reverse_steps']['ddim']})\n"
    )
    shapes_kind = r.get("kind") == "shapes"
    if shapes_kind:
      out.append(
        "| method | samples | hallucination rate [Wilson 95%] | same indices, plain | "
        "two in one column | in support | RMS distance to nearest training image | "
        "non-finite | column patterns | network passes / sample | paper |"
      )
      out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
      out.append(
        "| method | samples | hallucination rate [Wilson 95%] | same indices, plain | "
        "in support | mean distance to mode (std) | diverged / non-finite | modes | "
        "network passes / sample | paper |"
      )
      out.append("|---|---|---|---|---|---|---|---|---|---|")
    for row in r["mitigation"]["rows"]:
      h = row["hallucination"]
      pb = row.get("paired_baselines") or {}
      paired = ", ".join(f"{k.upper()} {_pct(v['rate'], 2)}" for k, v in pb.items())
      value, bad = _distance(row)
      dist = "—" if value is None else f"{value:.{3 if shapes_kind else 2}f}"
      paper = row.get("paper", {}).get("claim", "") if row.get("paper") else ""
      two = ""
      if shapes_kind:
        t2 = row["two_in_one_column"]
        two = f"{_pct(t2['rate'], 2)}{_ci(t2['ci95'], 2)} | "
      out.append(
        f"| {row.get('label', row['method'])} | {row['num_samples']:,} | "
        f"{_pct(h['rate'], 2)}{_ci(h['ci95'], 2)} | {paired} | {two}"
        f"{_pct(row['in_support']['rate'], 2)} | {dist} | {bad} | "
        f"{row['modes_covered']}/{row['num_modes']} | "
        f"{row['network_evaluations_per_sample']:,.0f} | {paper} |"
      )
    out.append("")
  for name, why in (res.get("omitted_testbeds") or {}).items():
    out.append(f"*{name}: not a testbed here: {why}.*\n")
  return "\n".join(out)


def check_config(cfg) -> None:
  """Every field of ``hallbench`` and every testbed's recipe, before any work: names from
  the allowed lists, timesteps inside each testbed's schedule, windows inside ``[0, T)``."""
  names = config_check.name_list(cfg, "hallbench.testbeds", TESTBEDS)
  config_check.name_list(cfg, "hallbench.detectors", DETECTORS)
  config_check.name_list(cfg, "hallbench.mitigations", MITIGATIONS)
  if "testbeds" not in cfg:
    raise ConfigError(
      "testbeds",
      "missing from the config (one recipe per hallbench.testbeds "
      "entry: data, diffusion, model, train)",
    )
  for name in names:
    if name not in cfg.testbeds:
      raise ConfigError(
        f"testbeds.{name}",
        f"missing: hallbench.testbeds names {name!r}, "
        f"recipes are given for {', '.join(cfg.testbeds) or 'none'}",
      )
    for s in RECIPE:
      if s not in cfg.testbeds[name]:
        raise ConfigError(f"testbeds.{name}.{s}", "missing from the testbed's recipe")
    if cfg.testbeds[name].data.name != name:
      raise ConfigError(
        f"testbeds.{name}.data.name",
        f"must be {name!r} (the testbed's name), got {cfg.testbeds[name].data.name!r}",
      )
  # The top-level sections mirror the first testbed's recipe (the shared checks read them).
  first = cfg.testbeds[names[0]]
  for s in RECIPE:
    mine, theirs = cfg[s].to_dict(), first[s].to_dict()
    for k in sorted(set(mine) | set(theirs)):
      if mine.get(k) != theirs.get(k):
        raise ConfigError(
          f"{s}.{k}",
          f"the top-level {s} section mirrors the first testbed's "
          f"recipe; set testbeds.{names[0]}.{s}.{k} instead (here "
          f"{mine.get(k)!r}, there {theirs.get(k)!r})",
        )
  if config_check.get(cfg, "sample.sampler") != "ddpm":
    raise ConfigError(
      "sample.sampler",
      "must be 'ddpm': the plain sampler every mitigation is "
      "measured against (DDIM is a mitigation of its own); allowed: 'ddpm'",
    )
  for name in names:
    over = cfg.testbeds[name].get("hallbench")
    if over:  # a testbed's own settings name fields of hallbench
      known = flatten(cfg.hallbench.to_dict())
      for k in flatten(over.to_dict()):
        if k not in known:
          raise ConfigError(
            f"testbeds.{name}.hallbench.{k}",
            f"is not a field of hallbench; allowed: {', '.join(sorted(known))}",
          )
    tcfg = testbed_config(cfg, name)
    try:
      config_check.validate(tcfg)
    except ConfigError as e:
      raise ConfigError(f"testbeds.{name}.{e.field}", str(e)[len(e.field) + 2 :]) from None
    hs = ml_collections.ConfigDict({"hallbench": testbed_settings(cfg, name).to_dict()})
    overridden = set(flatten(over.to_dict())) if over else set()
    try:
      _check_settings(hs, tcfg, name)
    except ConfigError as e:
      leaf = e.field[len("hallbench.") :]
      if leaf in overridden:  # name the field where the value was set
        raise ConfigError(f"testbeds.{name}.hallbench.{leaf}", str(e)[len(e.field) + 2 :]) from None
      raise


def _check_settings(cfg, tcfg, name) -> None:
  """The ``hallbench`` fields that testbed ``name`` (config ``tcfg``) runs with."""
  h = "hallbench."
  config_check.name_list(cfg, h + "detectors", DETECTORS)
  config_check.name_list(cfg, h + "mitigations", MITIGATIONS)
  n = config_check.integer(cfg, h + "num_samples", lo=4)
  config_check.integer(cfg, h + "split_seed", lo=0)
  config_check.integer(cfg, h + "chunk_size", lo=1)
  drops = config_check.get(cfg, h + "filter.drop")
  if isinstance(drops, (str, bytes)) or any(
    isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1 for q in drops
  ):
    raise ConfigError(h + "filter.drop", f"must be a tuple of shares in (0, 1), got {drops!r}")
  ddim_steps = config_check.integer(cfg, h + "ddim.steps", lo=0)
  config_check.integer(
    cfg, h + "ddim.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}"
  )
  ks = config_check.get(cfg, h + "ddim.stochastic_last")
  if isinstance(ks, (str, bytes)) or any(
    isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in ks
  ):
    raise ConfigError(h + "ddim.stochastic_last", f"must be a tuple of step counts, got {ks!r}")
  config_check.integer(cfg, h + "mi.num_samples", lo=4, hi=n, hi_desc=f"hallbench.num_samples={n}")
  m = config_check.integer(cfg, h + "mi.perturbations", lo=2)
  config_check.number(cfg, h + "mi.scale", lo=0.0, lo_open=True)
  design = config_check.choice(cfg, h + "mi.design", detectors.PERTURBATION_DESIGNS)
  config_check.integer(cfg, h + "flipd.hutchinson_above", lo=1)
  config_check.integer(cfg, h + "flipd.probes", lo=1)
  config_check.integer(cfg, h + "lid.draws", lo=1)
  config_check.integer(cfg, h + "renoise.draws", lo=2)
  config_check.number(cfg, h + "iq.quantile", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  config_check.number(cfg, h + "iq.strength", lo=0.0)
  cal = config_check.integer(cfg, h + "iq.calibration", lo=2)
  config_check.integer(cfg, h + "iq.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
  config_check.integer(cfg, h + "study.max_carry_mb", lo=1)
  image = name == "shapes"
  try:
    times = samplers.reverse_timesteps("ddpm", tcfg.diffusion.timesteps)
    trajectory_scores.parse_windows(str(config_check.get(cfg, h + "study.windows")), times)
  except ValueError as e:
    raise ConfigError(h + "study.windows", str(e).split(": ", 1)[-1]) from None
  try:
    trajectory_scores.parse_reductions(str(config_check.get(cfg, h + "study.reductions")), image)
  except ValueError as e:
    raise ConfigError(h + "study.reductions", str(e).split(": ", 1)[-1]) from None
  config_check.number(cfg, h + "vsm.rho", lo=0.0)
  config_check.integer(cfg, h + "vsm.steps", lo=0)
  config_check.integer(cfg, h + "vsm.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
  T = tcfg.diffusion.timesteps
  if ddim_steps > T:
    raise ConfigError(
      h + "ddim.steps",
      f"must be <= testbeds.{name}.diffusion.timesteps={T} (0: all), got {ddim_steps}",
    )
  steps = len(samplers.ddim_timesteps(T, ddim_steps))
  if tcfg.detect.window > steps:
    raise ConfigError(
      "detect.window",
      f"must be <= the {steps} DDIM steps of testbed "
      f"{name!r} (hallbench.ddim.steps={ddim_steps}), got {tcfg.detect.window}",
    )
  bad = [k for k in ks if not 0 <= k <= steps]
  if bad:
    raise ConfigError(
      h + "ddim.stochastic_last",
      f"{bad[0]} is outside [0, {steps}] (the DDIM steps of testbed {name!r})",
    )
  dim = int(np.prod(pipeline.input_shape(tcfg)))
  if design == "orthogonal" and m % (2 * dim):
    raise ConfigError(
      h + "mi.perturbations",
      f"the orthogonal design needs a multiple of "
      f"2 * D = {2 * dim} (testbed {name!r}), got {m}; or use "
      f"hallbench.mi.design='gaussian'",
    )
  for field in ("flipd.t0", "lid.t", "renoise.t", "oracle.t"):
    config_check.timestep(cfg, h + field, T, name)
  lo = config_check.timestep(cfg, h + "iq.t_lo", T, name)
  hi = config_check.timestep(cfg, h + "iq.t_hi", T, name)
  if hi < lo:
    raise ConfigError(h + "iq.t_hi", f"must be in [hallbench.iq.t_lo={lo}, {T - 1}], got {hi}")
  if cal > tcfg.data.num_train:
    raise ConfigError(
      h + "iq.calibration",
      f"must be <= testbeds.{name}.data.num_train="
      f"{tcfg.data.num_train} (the calibration points are training points), "
      f"got {cal}",
    )
