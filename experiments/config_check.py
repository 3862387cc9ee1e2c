"""Config validation: every bad value is refused before any work, in one line
naming the field and what is allowed.

The experiments and the data each accepts are named here; every other rule comes
from the module that knows it (data names, scales, schedules, samplers, reductions,
models, filters, learning-rate schedules).
"""

import importlib
import numbers

from experiments import registry
from mode_interp import diffusion, hallucination, pipeline, samplers, sharding, train
from mode_interp.data.shapes import SUPPORTED_SCALES
from mode_interp.errors import ConfigError

EXPERIMENTS = tuple(registry.EXPERIMENTS)
DATA_NAMES = {name: e.data_names for name, e in registry.EXPERIMENTS.items()}
MODELS = pipeline.MODELS
FILTERS = hallucination.FILTERS


def get(cfg, field):
  node = cfg
  for part in field.split("."):
    if part not in node:
      raise ConfigError(field, "missing from the config")
    node = node[part]
  return node


def integer(cfg, field, lo=None, hi=None, hi_desc=None):
  v = get(cfg, field)
  if isinstance(v, bool) or not isinstance(v, numbers.Integral):
    raise ConfigError(field, f"must be an integer, got {v!r}")
  if lo is not None and v < lo:
    raise ConfigError(field, f"must be >= {lo}, got {v}")
  if hi is not None and v > hi:
    raise ConfigError(field, f"must be <= {hi_desc or hi}, got {v}")
  return v


def number(cfg, field, lo=None, hi=None, lo_open=False, hi_open=False):
  v = get(cfg, field)
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    raise ConfigError(field, f"must be a number, got {v!r}")
  if lo is not None and (v < lo or (lo_open and v == lo)):
    raise ConfigError(field, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
  if hi is not None and (v > hi or (hi_open and v == hi)):
    raise ConfigError(field, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
  return v


def choice(cfg, field, allowed):
  v = get(cfg, field)
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


def increasing(cfg, field, allow_empty=False):
  v = tuple(get(cfg, field))
  bad = [x for x in v if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1]
  if bad or (not v and not allow_empty) or any(b <= a for a, b in zip(v, v[1:])):
    raise ConfigError(field, f"must be increasing positive integers, got {v!r}")
  return v


def validate(cfg) -> None:
  """Raises :class:`ConfigError` on the first bad field."""
  exp = choice(cfg, "experiment", EXPERIMENTS)
  integer(cfg, "seed", lo=0)
  integer(cfg, "num_devices", lo=0)
  choice(cfg, "data.name", DATA_NAMES[exp])
  integer(cfg, "data.num_train", lo=1)

  T = integer(cfg, "diffusion.timesteps", lo=1)
  choice(cfg, "diffusion.schedule", diffusion.SCHEDULES)
  b0 = number(cfg, "diffusion.beta_start", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  number(cfg, "diffusion.beta_end", lo=b0, hi=1.0, hi_open=True)

  model = choice(cfg, "model.name", MODELS)
  if "dtype" in cfg.model and choice(cfg, "model.dtype", ("float32", "bfloat16")) == "bfloat16":
    ok, what = sharding.bfloat16_support()
    if not ok:
      raise ConfigError("model.dtype", f"'bfloat16' needs bfloat16 arithmetic (a GPU of compute "
                        f"capability >= 8.0, a TPU, or a CPU with AVX512-BF16 or AMX-BF16); "
                        f"this backend is {what}; allowed here: 'float32'")
  if model == "mlp":
    integer(cfg, "model.width", lo=2)
    integer(cfg, "model.num_blocks", lo=1)
    if not isinstance(get(cfg, "model.share_blocks"), bool):
      raise ConfigError("model.share_blocks", "must be True or False")
  else:
    ch = integer(cfg, "model.ch", lo=1)
    integer(cfg, "model.num_res_blocks", lo=1)
    groups = integer(cfg, "model.num_groups", lo=1)
    mult = get(cfg, "model.ch_mult")
    if not mult or any(not isinstance(m, int) or m < 1 for m in mult):
      raise ConfigError("model.ch_mult", f"must be a non-empty tuple of positive ints, got {mult!r}")
    bad = [ch * m for m in mult if (ch * m) % groups]
    if ch % groups or bad:
      raise ConfigError("model.num_groups",
                        f"{groups} must divide every channel count ({ch} x {tuple(mult)})")
    number(cfg, "model.dropout", lo=0.0, hi=1.0, hi_open=True)
    attn = get(cfg, "model.attn_resolutions")
    if isinstance(attn, (str, bytes)) or any(
        isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in attn):
      raise ConfigError("model.attn_resolutions",
                        f"must be a tuple of positive ints (feature-map sizes), got {attn!r}")

  integer(cfg, "train.steps", lo=0)
  bs = integer(cfg, "train.batch_size", lo=1)
  number(cfg, "train.lr", lo=0.0, lo_open=True)
  choice(cfg, "train.lr_schedule", train.LR_SCHEDULES)
  number(cfg, "train.b1", lo=0.0, hi=1.0, hi_open=True)
  number(cfg, "train.b2", lo=0.0, hi=1.0, hi_open=True)
  warmup = integer(cfg, "train.warmup_steps", lo=0)
  if warmup and warmup >= cfg.train.steps:
    raise ConfigError("train.warmup_steps", f"must be < train.steps ({cfg.train.steps}), "
                      f"got {warmup}; set it to 0 for short runs")
  number(cfg, "train.grad_clip", lo=0.0)
  number(cfg, "train.ema_decay", lo=0.0, hi=1.0, hi_open=True)
  integer(cfg, "train.log_every", lo=1)
  integer(cfg, "train.ckpt_every", lo=1)
  if "micro_batch" in cfg.train:
    integer(cfg, "train.micro_batch", lo=-1)   # -1 auto, 0 whole batch, else rows per pass
  num_train = get(cfg, "data.num_train")
  if bs > num_train and exp != "shapes":
    raise ConfigError("train.batch_size", f"{bs} exceeds data.num_train={num_train}")

  integer(cfg, "sample.num_samples", lo=1)
  sampler = choice(cfg, "sample.sampler", samplers.sampler_names())
  choice(cfg, "sample.variance", diffusion.VARIANCES)
  integer(cfg, "sample.chunk_size", lo=1)
  if "tile_rows" in cfg.sample:
    integer(cfg, "sample.tile_rows", lo=-1)    # -1 auto, 0 whole chunk, else rows per pass
  steps = integer(cfg, "sample.num_steps", lo=0, hi=T, hi_desc=f"diffusion.timesteps={T}")
  number(cfg, "sample.eta", lo=0.0)
  reverse_steps = T if sampler == "ddpm" or steps == 0 else \
      len(samplers.ddim_timesteps(T, steps))
  integer(cfg, "detect.window", lo=1, hi=reverse_steps,
       hi_desc=f"the {reverse_steps} reverse steps of sample.sampler={sampler!r}")
  choice(cfg, "detect.reduction", samplers.REDUCTIONS)
  _check_detect_window(cfg, T, sampler, steps)  # detect.t_lo / detect.t_hi
  number(cfg, "detect.keep_in_support", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  number(cfg, "detect.remove_hallucinations", lo=0.0, hi=1.0, lo_open=True, hi_open=True)

  if exp in ("gaussian", "timesteps") or (
      exp == "recursive" and cfg.data.name not in ("mnist", "shapes")):
    number(cfg, "data.std", lo=0.0, lo_open=True)
    number(cfg, "detect.k_sigma", lo=0.0, lo_open=True)
    if cfg.data.name == "gaussian1d":
      means = get(cfg, "data.means")
      if len(means) < 2 or any(not isinstance(m, numbers.Real) for m in means):
        raise ConfigError("data.means", f"must hold at least two numbers, got {means!r}")
  if cfg.data.name == "shapes":
    choice(cfg, "data.scale", tuple(sorted(SUPPORTED_SCALES)))
  if model == "unet":
    _check_unet_resolutions(cfg, exp)
  if "plots" in cfg and "predictor_times" in cfg.plots:
    times = get(cfg, "plots.predictor_times")
    # Times >= diffusion.timesteps are skipped by the figure (a sweep over T shares them).
    if isinstance(times, (str, bytes)) or any(
        isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in times):
      raise ConfigError("plots.predictor_times",
                        f"must be a tuple of timesteps >= 0 (those >= diffusion.timesteps are "
                        f"skipped), got {times!r}")
  if exp == "gaussian" and "sweep" in cfg:
    if not isinstance(get(cfg, "sweep.enabled"), bool):
      raise ConfigError("sweep.enabled", "must be True or False")
    integer(cfg, "sweep.steps", lo=0)
    integer(cfg, "sweep.num_samples", lo=1)
  if exp in ("gaussian", "recursive") and "imbalance" in cfg.data:
    number(cfg, "data.imbalance", lo=0.0, lo_open=True)
  if exp == "gaussian" and "sweep" in cfg and cfg.sweep.enabled:
    epochs = integer(cfg, "sweep.epochs", lo=0) if "epochs" in cfg.sweep else 0
    # Under sweep.epochs the batch shrinks to a point's data when larger.
    least, least_desc = (1, "1") if epochs else (bs, "train.batch_size")
    for v in get(cfg, "sweep.num_train"):
      if not isinstance(v, int) or isinstance(v, bool) or v < least:
        raise ConfigError("sweep.num_train", f"entries must be ints >= {least_desc}, got {v!r}")
    for v in get(cfg, "sweep.timesteps"):
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
  check = getattr(importlib.import_module(registry.EXPERIMENTS[exp].module), "check_config", None)
  if check is not None:  # the rules of the experiment's own fields, beside its code
    check(cfg)
  if exp == "hallbench":
    _check_hallbench(cfg)
  if exp == "recursive":
    integer(cfg, "recursive.generations", lo=1)
    integer(cfg, "recursive.oversample", lo=0)
    if cfg.data.name == "mnist":
      integer(cfg, "recursive.classifier_steps", lo=1)
      if not isinstance(get(cfg, "data.download"), bool):
        raise ConfigError("data.download", "must be True or False")
      if not isinstance(get(cfg, "data.dir"), str):
        raise ConfigError("data.dir", f"must be a path (a string; '' for the default), "
                          f"got {cfg.data.dir!r}")
    filters = get(cfg, "recursive.filters")
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
  lo = integer(cfg, "detect.t_lo", lo=-1, hi=T - 1, hi_desc=f"diffusion.timesteps - 1 = {T - 1}")
  hi = integer(cfg, "detect.t_hi", lo=-1, hi=T - 1, hi_desc=f"diffusion.timesteps - 1 = {T - 1}")
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
def name_list(cfg, field, allowed, allow_empty=False):
  v = get(cfg, field)
  if isinstance(v, str) or (not v and not allow_empty):
    raise ConfigError(field, f"must be a {'' if allow_empty else 'non-empty '}tuple of names "
                      f"from {', '.join(allowed)}, got {v!r}")
  bad = [x for x in v if x not in allowed]
  if bad:
    raise ConfigError(field, f"{bad[0]!r} is not allowed; allowed: {', '.join(allowed)}")
  if len(set(v)) != len(v):
    raise ConfigError(field, f"names must not repeat, got {tuple(v)!r}")
  return tuple(v)


def timestep(cfg, field, T, name):
  return integer(cfg, field, lo=0, hi=T - 1,
              hi_desc=f"testbeds.{name}.diffusion.timesteps - 1 = {T - 1}")


def _check_hallbench(cfg) -> None:
  """Every field of ``hallbench`` and every testbed's recipe, before any work: names from
  the allowed lists, timesteps inside each testbed's schedule, windows inside ``[0, T)``."""
  from experiments import hallbench
  from mode_interp import detectors
  from mode_interp.data import gaussians
  names = name_list(cfg, "hallbench.testbeds", gaussians.NAMES)
  name_list(cfg, "hallbench.detectors", detectors.NAMES)
  name_list(cfg, "hallbench.mitigations", hallbench.MITIGATIONS)
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
  if get(cfg, "sample.sampler") != "ddpm":
    raise ConfigError("sample.sampler", "must be 'ddpm': the plain sampler every mitigation is "
                      "measured against (DDIM is a mitigation of its own); allowed: 'ddpm'")
  h = "hallbench."
  n = integer(cfg, h + "num_samples", lo=4)
  integer(cfg, h + "split_seed", lo=0)
  integer(cfg, h + "chunk_size", lo=1)
  drops = get(cfg, h + "filter.drop")
  if isinstance(drops, (str, bytes)) or any(
      isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1 for q in drops):
    raise ConfigError(h + "filter.drop", f"must be a tuple of shares in (0, 1), got {drops!r}")
  ddim_steps = integer(cfg, h + "ddim.steps", lo=0)
  integer(cfg, h + "ddim.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
  ks = get(cfg, h + "ddim.stochastic_last")
  if isinstance(ks, (str, bytes)) or any(
      isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in ks):
    raise ConfigError(h + "ddim.stochastic_last", f"must be a tuple of step counts, got {ks!r}")
  integer(cfg, h + "mi.num_samples", lo=4, hi=n, hi_desc=f"hallbench.num_samples={n}")
  m = integer(cfg, h + "mi.perturbations", lo=2)
  number(cfg, h + "mi.scale", lo=0.0, lo_open=True)
  design = choice(cfg, h + "mi.design", detectors.PERTURBATION_DESIGNS)
  integer(cfg, h + "flipd.hutchinson_above", lo=1)
  integer(cfg, h + "flipd.probes", lo=1)
  integer(cfg, h + "lid.draws", lo=1)
  integer(cfg, h + "renoise.draws", lo=2)
  number(cfg, h + "iq.quantile", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  number(cfg, h + "iq.strength", lo=0.0)
  cal = integer(cfg, h + "iq.calibration", lo=2)
  integer(cfg, h + "iq.num_samples", lo=1, hi=n, hi_desc=f"hallbench.num_samples={n}")
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
      timestep(cfg, h + field, T, name)
    lo = timestep(cfg, h + "iq.t_lo", T, name)
    hi = timestep(cfg, h + "iq.t_hi", T, name)
    if hi < lo:
      raise ConfigError(h + "iq.t_hi", f"must be in [hallbench.iq.t_lo={lo}, {T - 1}], got {hi}")
    if cal > tcfg.data.num_train:
      raise ConfigError(h + "iq.calibration", f"must be <= testbeds.{name}.data.num_train="
                        f"{tcfg.data.num_train} (the calibration points are training points), "
                        f"got {cal}")
