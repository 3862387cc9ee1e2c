"""Config validation: every bad value is refused before any work, in one line
naming the field and what is allowed.

The experiments and the data each accepts are named here; every other rule comes
from the module that knows it (data names, scales, schedules, samplers, reductions,
models, filters, learning-rate schedules).
"""

import numbers

from experiments import registry
from mode_interp import diffusion, hallucination, pipeline, samplers, sharding, train
from mode_interp.data.shapes import SUPPORTED_SCALES
from mode_interp.errors import ConfigError

EXPERIMENTS = tuple(registry.EXPERIMENTS)
DATA_NAMES = {name: e.data_names for name, e in registry.EXPERIMENTS.items()}
MODELS = pipeline.MODELS
FILTERS = hallucination.FILTERS


def _get(cfg, field):
  node = cfg
  for part in field.split("."):
    if part not in node:
      raise ConfigError(field, "missing from the config")
    node = node[part]
  return node


def _int(cfg, field, lo=None, hi=None, hi_desc=None):
  v = _get(cfg, field)
  if isinstance(v, bool) or not isinstance(v, numbers.Integral):
    raise ConfigError(field, f"must be an integer, got {v!r}")
  if lo is not None and v < lo:
    raise ConfigError(field, f"must be >= {lo}, got {v}")
  if hi is not None and v > hi:
    raise ConfigError(field, f"must be <= {hi_desc or hi}, got {v}")
  return v


def _float(cfg, field, lo=None, hi=None, lo_open=False, hi_open=False):
  v = _get(cfg, field)
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    raise ConfigError(field, f"must be a number, got {v!r}")
  if lo is not None and (v < lo or (lo_open and v == lo)):
    raise ConfigError(field, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
  if hi is not None and (v > hi or (hi_open and v == hi)):
    raise ConfigError(field, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
  return v


def _choice(cfg, field, allowed):
  v = _get(cfg, field)
  if v not in allowed:
    raise ConfigError(field, f"{v!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
  return v


# Side of the images each image experiment feeds its U-Net.
IMAGE_SIZES = {"shapes": 64, "mnist": 32}


def _check_unet_resolutions(cfg, exp) -> None:
  """The U-Net halves its feature maps ``len(ch_mult) - 1`` times: the image side must
  divide evenly, and every attention resolution must be one of the maps' sides."""
  size = IMAGE_SIZES.get(cfg.data.name)
  if size is None:
    return
  if cfg.data.name == "shapes":
    size = int(round(size * cfg.data.scale))
  mult = tuple(cfg.model.ch_mult)
  sides = [size // 2 ** i for i in range(len(mult))]
  if size % 2 ** (len(mult) - 1):
    raise ConfigError("model.ch_mult", f"{len(mult)} levels halve the {size}-pixel images "
                      f"{len(mult) - 1} times, which does not divide evenly; use at most "
                      f"{(size & -size).bit_length()} levels")
  bad = [r for r in cfg.model.attn_resolutions if r not in sides]
  if bad:
    raise ConfigError("model.attn_resolutions",
                      f"{tuple(bad)} are not feature-map sides of this U-Net; allowed: "
                      f"{', '.join(map(str, sides))}")


def _check_timesteps(cfg) -> None:
  """The T-vs-T' experiment's fields: positive step counts, known VDM schedules."""
  for field in ("tsteps.train_T", "tsteps.sample_T"):
    values = _get(cfg, field)
    if isinstance(values, (str, bytes)) or not values or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
      raise ConfigError(field, f"must be a non-empty tuple of positive ints, got {values!r}")
  window = cfg.detect.window
  if min(_get(cfg, "tsteps.sample_T")) < window:
    raise ConfigError("tsteps.sample_T", f"every T' must be >= detect.window={window}, got "
                      f"{tuple(cfg.tsteps.sample_T)!r}")
  from mode_interp import vdm
  scheds = _get(cfg, "tsteps.vdm_schedules")
  if isinstance(scheds, str) or any(s not in vdm.SCHEDULES for s in scheds):
    raise ConfigError("tsteps.vdm_schedules", f"{scheds!r}: entries must be from "
                      f"{', '.join(vdm.SCHEDULES)} (or empty)")
  lo = _float(cfg, "tsteps.gamma_min")
  _float(cfg, "tsteps.gamma_max", lo=lo, lo_open=True)


def _check_denoisers(cfg) -> None:
  """The training-set denoisers' section (experiments/denoisers.py)."""
  if not isinstance(_get(cfg, "denoisers.exact"), bool):
    raise ConfigError("denoisers.exact", "must be True or False")
  patches = _get(cfg, "denoisers.patches")
  bad = [p for p in patches if isinstance(p, bool) or not isinstance(p, numbers.Integral)
         or p < 1 or p % 2 == 0]
  if bad or len(set(patches)) != len(patches):
    raise ConfigError("denoisers.patches", f"must be distinct odd positive integers (a patch "
                      f"is centred on its pixel), got {tuple(patches)!r}")
  if not patches and not cfg.denoisers.exact:
    raise ConfigError("denoisers.patches", "is empty and denoisers.exact is False: nothing to "
                      "sample")
  _int(cfg, "denoisers.num_samples", lo=1)
  _int(cfg, "denoisers.chunk_images", lo=1)
  _float(cfg, "denoisers.copy_rms", lo=0.0, lo_open=True)
  if not isinstance(_get(cfg, "denoisers.unet_workdir"), str):
    raise ConfigError("denoisers.unet_workdir", "must be a path (or empty)")


def _increasing(cfg, field, allow_empty=False):
  v = tuple(_get(cfg, field))
  bad = [x for x in v if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1]
  if bad or (not v and not allow_empty) or any(b <= a for a, b in zip(v, v[1:])):
    raise ConfigError(field, f"must be increasing positive integers, got {v!r}")
  return v


def _check_scaling(cfg) -> None:
  """The detection-along-training sweep (experiments/scaling.py): its own fields, then every
  model and step count it will train, validated as the shapes experiment it runs."""
  from experiments import scaling
  names = scaling.model_names(cfg)
  bad = [m for m in names if m not in scaling.MODEL_VARIANTS]
  if not names or bad or len(set(names)) != len(names):
    raise ConfigError("scaling.models", f"must name distinct models of "
                      f"{', '.join(scaling.MODEL_VARIANTS)} (comma-separated), got "
                      f"{cfg.scaling.models!r}")
  steps = _increasing(cfg, "scaling.steps")
  seeds = tuple(_get(cfg, "scaling.seeds"))
  if (not seeds or len(set(seeds)) != len(seeds)
      or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds)):
    raise ConfigError("scaling.seeds", f"must be distinct non-negative integers, got {seeds!r}")
  extra = _increasing(cfg, "scaling.seed_steps", allow_empty=len(seeds) == 1)
  if set(extra) - set(steps):
    raise ConfigError("scaling.seed_steps", f"must be among scaling.steps {steps}, got {extra}")
  _int(cfg, "scaling.num_samples", lo=4)
  _int(cfg, "scaling.study_chunk", lo=0)
  for p in scaling.points(cfg):
    c = scaling.point_config(cfg, p, p.steps[-1])
    if c.train.warmup_steps >= p.steps[0]:
      raise ConfigError("scaling.steps", f"the first step count {p.steps[0]} must exceed "
                        f"train.warmup_steps={c.train.warmup_steps}")
    try:
      validate(c)
    except ConfigError as e:
      raise ConfigError("scaling.models", f"model {p.model!r} gives an invalid config: {e}") \
          from None


def validate(cfg) -> None:
  """Raises :class:`ConfigError` on the first bad field."""
  exp = _choice(cfg, "experiment", EXPERIMENTS)
  _int(cfg, "seed", lo=0)
  _int(cfg, "num_devices", lo=0)
  _choice(cfg, "data.name", DATA_NAMES[exp])
  _int(cfg, "data.num_train", lo=1)

  T = _int(cfg, "diffusion.timesteps", lo=1)
  _choice(cfg, "diffusion.schedule", diffusion.SCHEDULES)
  b0 = _float(cfg, "diffusion.beta_start", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  _float(cfg, "diffusion.beta_end", lo=b0, hi=1.0, hi_open=True)

  model = _choice(cfg, "model.name", MODELS)
  if "dtype" in cfg.model and _choice(cfg, "model.dtype", ("float32", "bfloat16")) == "bfloat16":
    ok, what = sharding.bfloat16_support()
    if not ok:
      raise ConfigError("model.dtype", f"'bfloat16' needs bfloat16 arithmetic (a GPU of compute "
                        f"capability >= 8.0, a TPU, or a CPU with AVX512-BF16 or AMX-BF16); "
                        f"this backend is {what}; allowed here: 'float32'")
  if model == "mlp":
    _int(cfg, "model.width", lo=2)
    _int(cfg, "model.num_blocks", lo=1)
    if not isinstance(_get(cfg, "model.share_blocks"), bool):
      raise ConfigError("model.share_blocks", "must be True or False")
  else:
    ch = _int(cfg, "model.ch", lo=1)
    _int(cfg, "model.num_res_blocks", lo=1)
    groups = _int(cfg, "model.num_groups", lo=1)
    mult = _get(cfg, "model.ch_mult")
    if not mult or any(not isinstance(m, int) or m < 1 for m in mult):
      raise ConfigError("model.ch_mult", f"must be a non-empty tuple of positive ints, got {mult!r}")
    bad = [ch * m for m in mult if (ch * m) % groups]
    if ch % groups or bad:
      raise ConfigError("model.num_groups",
                        f"{groups} must divide every channel count ({ch} x {tuple(mult)})")
    _float(cfg, "model.dropout", lo=0.0, hi=1.0, hi_open=True)
    attn = _get(cfg, "model.attn_resolutions")
    if isinstance(attn, (str, bytes)) or any(
        isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in attn):
      raise ConfigError("model.attn_resolutions",
                        f"must be a tuple of positive ints (feature-map sizes), got {attn!r}")

  _int(cfg, "train.steps", lo=0)
  bs = _int(cfg, "train.batch_size", lo=1)
  _float(cfg, "train.lr", lo=0.0, lo_open=True)
  _choice(cfg, "train.lr_schedule", train.LR_SCHEDULES)
  _float(cfg, "train.b1", lo=0.0, hi=1.0, hi_open=True)
  _float(cfg, "train.b2", lo=0.0, hi=1.0, hi_open=True)
  warmup = _int(cfg, "train.warmup_steps", lo=0)
  if warmup and warmup >= cfg.train.steps:
    raise ConfigError("train.warmup_steps", f"must be < train.steps ({cfg.train.steps}), "
                      f"got {warmup}; set it to 0 for short runs")
  _float(cfg, "train.grad_clip", lo=0.0)
  _float(cfg, "train.ema_decay", lo=0.0, hi=1.0, hi_open=True)
  _int(cfg, "train.log_every", lo=1)
  _int(cfg, "train.ckpt_every", lo=1)
  if "micro_batch" in cfg.train:
    _int(cfg, "train.micro_batch", lo=-1)   # -1 auto, 0 whole batch, else rows per pass
  num_train = _get(cfg, "data.num_train")
  if bs > num_train and exp != "shapes":
    raise ConfigError("train.batch_size", f"{bs} exceeds data.num_train={num_train}")

  _int(cfg, "sample.num_samples", lo=1)
  sampler = _choice(cfg, "sample.sampler", samplers.sampler_names())
  _choice(cfg, "sample.variance", diffusion.VARIANCES)
  _int(cfg, "sample.chunk_size", lo=1)
  if "tile_rows" in cfg.sample:
    _int(cfg, "sample.tile_rows", lo=-1)    # -1 auto, 0 whole chunk, else rows per pass
  steps = _int(cfg, "sample.num_steps", lo=0, hi=T, hi_desc=f"diffusion.timesteps={T}")
  _float(cfg, "sample.eta", lo=0.0)
  reverse_steps = T if sampler == "ddpm" or steps == 0 else \
      len(samplers.ddim_timesteps(T, steps))
  _int(cfg, "detect.window", lo=1, hi=reverse_steps,
       hi_desc=f"the {reverse_steps} reverse steps of sample.sampler={sampler!r}")
  _choice(cfg, "detect.reduction", samplers.REDUCTIONS)
  _check_detect_window(cfg, T, sampler, steps)  # detect.t_lo / detect.t_hi
  _float(cfg, "detect.keep_in_support", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  _float(cfg, "detect.remove_hallucinations", lo=0.0, hi=1.0, lo_open=True, hi_open=True)

  if exp in ("gaussian", "timesteps") or (
      exp == "recursive" and cfg.data.name not in ("mnist", "shapes")):
    _float(cfg, "data.std", lo=0.0, lo_open=True)
    _float(cfg, "detect.k_sigma", lo=0.0, lo_open=True)
    if cfg.data.name == "gaussian1d":
      means = _get(cfg, "data.means")
      if len(means) < 2 or any(not isinstance(m, numbers.Real) for m in means):
        raise ConfigError("data.means", f"must hold at least two numbers, got {means!r}")
  if cfg.data.name == "shapes":
    _choice(cfg, "data.scale", tuple(sorted(SUPPORTED_SCALES)))
  if model == "unet":
    _check_unet_resolutions(cfg, exp)
  if "plots" in cfg and "predictor_times" in cfg.plots:
    times = _get(cfg, "plots.predictor_times")
    # Times >= diffusion.timesteps are skipped by the figure (a sweep over T shares them).
    if isinstance(times, (str, bytes)) or any(
        isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in times):
      raise ConfigError("plots.predictor_times",
                        f"must be a tuple of timesteps >= 0 (those >= diffusion.timesteps are "
                        f"skipped), got {times!r}")
  if exp == "gaussian" and "sweep" in cfg:
    if not isinstance(_get(cfg, "sweep.enabled"), bool):
      raise ConfigError("sweep.enabled", "must be True or False")
    _int(cfg, "sweep.steps", lo=0)
    _int(cfg, "sweep.num_samples", lo=1)
  if exp in ("gaussian", "recursive") and "imbalance" in cfg.data:
    _float(cfg, "data.imbalance", lo=0.0, lo_open=True)
  if exp == "gaussian" and "sweep" in cfg and cfg.sweep.enabled:
    epochs = _int(cfg, "sweep.epochs", lo=0) if "epochs" in cfg.sweep else 0
    # Under sweep.epochs the batch shrinks to a point's data when larger.
    least, least_desc = (1, "1") if epochs else (bs, "train.batch_size")
    for v in _get(cfg, "sweep.num_train"):
      if not isinstance(v, int) or isinstance(v, bool) or v < least:
        raise ConfigError("sweep.num_train", f"entries must be ints >= {least_desc}, got {v!r}")
    for v in _get(cfg, "sweep.timesteps"):
      if not isinstance(v, int) or v < cfg.detect.window:
        raise ConfigError("sweep.timesteps", f"entries must be ints >= detect.window, got {v!r}")
    for field in ("distance", "imbalance"):
      values = cfg.sweep.get(field, ())
      if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or v <= 0 for v in values):
        raise ConfigError(f"sweep.{field}", f"entries must be numbers > 0, got {tuple(values)!r}")
    if cfg.sweep.get("distance", ()) and cfg.data.name != "gaussian1d":
      raise ConfigError("sweep.distance", f"is for data.name='gaussian1d' (the 1D modes' "
                        f"spacing), not {cfg.data.name!r}; leave it empty ()")
    if not any(cfg.sweep.get(f, ()) for f in ("num_train", "timesteps", "distance", "imbalance")):
      raise ConfigError("sweep.enabled", "a sweep needs values in at least one of sweep.num_train, "
                        "sweep.timesteps, sweep.distance, sweep.imbalance")
  if exp == "denoisers":
    _check_denoisers(cfg)
  if exp == "scaling":
    _check_scaling(cfg)
  if exp == "timesteps":
    _check_timesteps(cfg)
  if exp == "hallbench":
    _check_hallbench(cfg)
  if exp == "recursive":
    _int(cfg, "recursive.generations", lo=1)
    _int(cfg, "recursive.oversample", lo=0)
    if cfg.data.name == "mnist":
      _int(cfg, "recursive.classifier_steps", lo=1)
      if not isinstance(_get(cfg, "data.download"), bool):
        raise ConfigError("data.download", "must be True or False")
      if not isinstance(_get(cfg, "data.dir"), str):
        raise ConfigError("data.dir", f"must be a path (a string; '' for the default), "
                          f"got {cfg.data.dir!r}")
    filters = _get(cfg, "recursive.filters")
    if isinstance(filters, str) or not filters:
      raise ConfigError("recursive.filters", f"must be a non-empty tuple of names from "
                        f"{', '.join(FILTERS)}, got {filters!r}")
    for f in filters:
      if f not in FILTERS:
        hint = (" (on the command line a tuple is written "
                "--config.recursive.filters=\"('random','variance')\")") if "," in str(f) else ""
        raise ConfigError("recursive.filters",
                          f"{f!r} is not allowed; allowed: {', '.join(FILTERS)}{hint}")
    if len(set(filters)) != len(filters):
      raise ConfigError("recursive.filters", f"names must not repeat, got {tuple(filters)!r}")


# -- the main detector's window anywhere in the trajectory ----------------------
def _check_detect_window(cfg, T, sampler, num_steps) -> None:
  """``detect.t_lo`` / ``detect.t_hi``: timesteps (inclusive) in [0, T), t_lo <= t_hi, holding
  at least one of the sampler's reverse steps; both -1 (or absent): the last
  ``detect.window`` steps."""
  if "t_lo" not in cfg.detect and "t_hi" not in cfg.detect:
    return
  lo = _int(cfg, "detect.t_lo", lo=-1, hi=T - 1, hi_desc=f"diffusion.timesteps - 1 = {T - 1}")
  hi = _int(cfg, "detect.t_hi", lo=-1, hi=T - 1, hi_desc=f"diffusion.timesteps - 1 = {T - 1}")
  if (lo == -1) != (hi == -1):
    field = "detect.t_hi" if lo != -1 else "detect.t_lo"
    raise ConfigError(field, f"must be in [0, {T - 1}] when the other end is set (or both -1 "
                      f"for the last detect.window steps), got detect.t_lo={lo}, "
                      f"detect.t_hi={hi}")
  if lo == -1:
    return
  if hi < lo:
    raise ConfigError("detect.t_hi", f"must be in [detect.t_lo={lo}, {T - 1}] (an empty "
                      f"window otherwise), got {hi}")
  try:
    samplers.window_mask(samplers.reverse_timesteps(sampler, T, num_steps), 0, lo, hi)
  except ValueError:
    raise ConfigError("detect.t_lo", f"the window {lo}..{hi} holds none of the "
                      f"{len(samplers.reverse_timesteps(sampler, T, num_steps))} timesteps that "
                      f"sample.sampler={sampler!r} visits; widen it") from None


# -- the detector and mitigation benchmark (experiments/hallbench.py) -----------
def _names(cfg, field, allowed, allow_empty=False):
  v = _get(cfg, field)
  if isinstance(v, str) or (not v and not allow_empty):
    raise ConfigError(field, f"must be a {'' if allow_empty else 'non-empty '}tuple of names "
                      f"from {', '.join(allowed)}, got {v!r}")
  bad = [x for x in v if x not in allowed]
  if bad:
    raise ConfigError(field, f"{bad[0]!r} is not allowed; allowed: {', '.join(allowed)}")
  if len(set(v)) != len(v):
    raise ConfigError(field, f"names must not repeat, got {tuple(v)!r}")
  return tuple(v)


def _timestep(cfg, field, T, name):
  return _int(cfg, field, lo=0, hi=T - 1,
              hi_desc=f"testbeds.{name}.diffusion.timesteps - 1 = {T - 1}")


def _check_hallbench(cfg) -> None:
  """Every field of ``hallbench`` and every testbed's recipe, before any work: names from
  the allowed lists, timesteps inside each testbed's schedule, windows inside ``[0, T)``."""
  from experiments import hallbench
  from mode_interp import detectors
  from mode_interp.data import gaussians
  names = _names(cfg, "hallbench.testbeds", gaussians.NAMES)
  _names(cfg, "hallbench.detectors", detectors.NAMES)
  _names(cfg, "hallbench.mitigations", hallbench.MITIGATIONS)
  if "testbeds" not in cfg:
    raise ConfigError("testbeds", "missing from the config (one recipe per hallbench.testbeds "
                      "entry: data, diffusion, model, train)")
  for name in names:
    if name not in cfg.testbeds:
      raise ConfigError(f"testbeds.{name}", f"missing: hallbench.testbeds names {name!r}, "
                        f"recipes are given for {', '.join(cfg.testbeds) or 'none'}")
    for s in hallbench.RECIPE:
      if s not in cfg.testbeds[name]:
        raise ConfigError(f"testbeds.{name}.{s}", "missing from the testbed's recipe")
    if cfg.testbeds[name].data.name != name:
      raise ConfigError(f"testbeds.{name}.data.name", f"must be {name!r} (the testbed's "
                        f"name), got {cfg.testbeds[name].data.name!r}")
  # The top-level sections mirror the first testbed's recipe (the shared checks read them).
  first = cfg.testbeds[names[0]]
  for s in hallbench.RECIPE:
    mine, theirs = cfg[s].to_dict(), first[s].to_dict()
    for k in sorted(set(mine) | set(theirs)):
      if mine.get(k) != theirs.get(k):
        raise ConfigError(f"{s}.{k}", f"the top-level {s} section mirrors the first testbed's "
                          f"recipe; set testbeds.{names[0]}.{s}.{k} instead (here "
                          f"{mine.get(k)!r}, there {theirs.get(k)!r})")
  if _get(cfg, "sample.sampler") != "ddpm":
    raise ConfigError("sample.sampler", "must be 'ddpm': the plain sampler every mitigation is "
                      "measured against (DDIM is a mitigation of its own); allowed: 'ddpm'")
  h = "hallbench."
  n = _int(cfg, h + "num_samples", lo=4)
  _int(cfg, h + "split_seed", lo=0)
  _int(cfg, h + "chunk_size", lo=1)
  drops = _get(cfg, h + "filter.drop")
  if isinstance(drops, (str, bytes)) or any(
      isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1 for q in drops):
    raise ConfigError(h + "filter.drop", f"must be a tuple of shares in (0, 1), got {drops!r}")
  ddim_steps = _int(cfg, h + "ddim.steps", lo=0)
  _int(cfg, h + "ddim.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
  ks = _get(cfg, h + "ddim.stochastic_last")
  if isinstance(ks, (str, bytes)) or any(
      isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in ks):
    raise ConfigError(h + "ddim.stochastic_last", f"must be a tuple of step counts, got {ks!r}")
  _int(cfg, h + "mi.num_samples", lo=4, hi=n, hi_desc=f"hallbench.num_samples={n}")
  m = _int(cfg, h + "mi.perturbations", lo=2)
  _float(cfg, h + "mi.scale", lo=0.0, lo_open=True)
  design = _choice(cfg, h + "mi.design", detectors.PERTURBATION_DESIGNS)
  _int(cfg, h + "flipd.hutchinson_above", lo=1)
  _int(cfg, h + "flipd.probes", lo=1)
  _int(cfg, h + "lid.draws", lo=1)
  _int(cfg, h + "renoise.draws", lo=2)
  _float(cfg, h + "iq.quantile", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  _float(cfg, h + "iq.strength", lo=0.0)
  cal = _int(cfg, h + "iq.calibration", lo=2)
  _int(cfg, h + "iq.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
  for name in names:
    tcfg = hallbench.testbed_config(cfg, name)
    try:
      validate(tcfg)
    except ConfigError as e:
      raise ConfigError(f"testbeds.{name}.{e.field}",
                        str(e)[len(e.field) + 2:]) from None
    T = tcfg.diffusion.timesteps
    if ddim_steps > T:
      raise ConfigError(h + "ddim.steps", f"must be <= testbeds.{name}.diffusion.timesteps={T} "
                        f"(0: all), got {ddim_steps}")
    steps = len(samplers.ddim_timesteps(T, ddim_steps))
    if cfg.detect.window > steps:
      raise ConfigError("detect.window", f"must be <= the {steps} DDIM steps of testbed "
                        f"{name!r} (hallbench.ddim.steps={ddim_steps}), got {cfg.detect.window}")
    bad = [k for k in ks if not 0 <= k <= steps]
    if bad:
      raise ConfigError(h + "ddim.stochastic_last", f"{bad[0]} is outside [0, {steps}] (the "
                        f"DDIM steps of testbed {name!r})")
    dim = 1 if name == "gaussian1d" else 2
    if design == "orthogonal" and m % (2 * dim):
      raise ConfigError(h + "mi.perturbations", f"the orthogonal design needs a multiple of "
                        f"2 * D = {2 * dim} (testbed {name!r}), got {m}; or use "
                        f"hallbench.mi.design='gaussian'")
    for field in ("flipd.t0", "lid.t", "renoise.t", "oracle.t"):
      _timestep(cfg, h + field, T, name)
    lo = _timestep(cfg, h + "iq.t_lo", T, name)
    hi = _timestep(cfg, h + "iq.t_hi", T, name)
    if hi < lo:
      raise ConfigError(h + "iq.t_hi", f"must be in [hallbench.iq.t_lo={lo}, {T - 1}], got {hi}")
    if cal > tcfg.data.num_train:
      raise ConfigError(h + "iq.calibration", f"must be <= testbeds.{name}.data.num_train="
                        f"{tcfg.data.num_train} (the calibration points are training points), "
                        f"got {cal}")
