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
  sides = [size // 2**i for i in range(len(mult))]
  if size % 2 ** (len(mult) - 1):
    raise ConfigError(
      "model.ch_mult",
      f"{len(mult)} levels halve the {size}-pixel images "
      f"{len(mult) - 1} times, which does not divide evenly; use at most "
      f"{(size & -size).bit_length()} levels",
    )
  bad = [r for r in cfg.model.attn_resolutions if r not in sides]
  if bad:
    raise ConfigError(
      "model.attn_resolutions",
      f"{tuple(bad)} are not feature-map sides of this U-Net; allowed: "
      f"{', '.join(map(str, sides))}",
    )


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
      raise ConfigError(
        "model.dtype",
        f"'bfloat16' needs bfloat16 arithmetic (a GPU of compute "
        f"capability >= 8.0, a TPU, or a CPU with AVX512-BF16 or AMX-BF16); "
        f"this backend is {what}; allowed here: 'float32'",
      )
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
      raise ConfigError(
        "model.ch_mult", f"must be a non-empty tuple of positive ints, got {mult!r}"
      )
    bad = [ch * m for m in mult if (ch * m) % groups]
    if ch % groups or bad:
      raise ConfigError(
        "model.num_groups", f"{groups} must divide every channel count ({ch} x {tuple(mult)})"
      )
    number(cfg, "model.dropout", lo=0.0, hi=1.0, hi_open=True)
    attn = get(cfg, "model.attn_resolutions")
    if isinstance(attn, (str, bytes)) or any(
      isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in attn
    ):
      raise ConfigError(
        "model.attn_resolutions",
        f"must be a tuple of positive ints (feature-map sizes), got {attn!r}",
      )

  integer(cfg, "train.steps", lo=0)
  bs = integer(cfg, "train.batch_size", lo=1)
  number(cfg, "train.lr", lo=0.0, lo_open=True)
  choice(cfg, "train.lr_schedule", train.LR_SCHEDULES)
  number(cfg, "train.b1", lo=0.0, hi=1.0, hi_open=True)
  number(cfg, "train.b2", lo=0.0, hi=1.0, hi_open=True)
  warmup = integer(cfg, "train.warmup_steps", lo=0)
  if warmup and warmup >= cfg.train.steps:
    raise ConfigError(
      "train.warmup_steps",
      f"must be < train.steps ({cfg.train.steps}), got {warmup}; set it to 0 for short runs",
    )
  number(cfg, "train.grad_clip", lo=0.0)
  number(cfg, "train.ema_decay", lo=0.0, hi=1.0, hi_open=True)
  integer(cfg, "train.log_every", lo=1)
  integer(cfg, "train.ckpt_every", lo=1)
  if "micro_batch" in cfg.train:
    integer(cfg, "train.micro_batch", lo=-1)  # -1 auto, 0 whole batch, else rows per pass
  num_train = get(cfg, "data.num_train")
  if bs > num_train and exp != "shapes":
    raise ConfigError("train.batch_size", f"{bs} exceeds data.num_train={num_train}")

  integer(cfg, "sample.num_samples", lo=1)
  sampler = choice(cfg, "sample.sampler", samplers.sampler_names())
  variance = choice(cfg, "sample.variance", diffusion.VARIANCES)
  learn_sigma = cfg.model.get("learn_sigma", False)
  if not isinstance(learn_sigma, bool):
    raise ConfigError("model.learn_sigma", f"must be True or False, got {learn_sigma!r}")
  if variance == "learned" and not learn_sigma:
    raise ConfigError(
      "sample.variance",
      "'learned' needs a network with a variance head (model.learn_sigma=True); "
      "allowed here: fixed_large, fixed_small",
    )
  if variance == "learned" and sampler != "ddpm":
    raise ConfigError(
      "sample.variance", f"'learned' is for sample.sampler='ddpm' (got {sampler!r})"
    )
  if "vsm_rho" in cfg.train:
    rho = number(cfg, "train.vsm_rho", lo=0.0)
    if rho and not learn_sigma:
      raise ConfigError(
        "train.vsm_rho",
        f"VSM's penalty (here {rho}) acts on the learned variance: set "
        f"model.learn_sigma=True, or train.vsm_rho=0",
      )
  integer(cfg, "sample.chunk_size", lo=1)
  if "tile_rows" in cfg.sample:
    integer(cfg, "sample.tile_rows", lo=-1)  # -1 auto, 0 whole chunk, else rows per pass
  steps = integer(cfg, "sample.num_steps", lo=0, hi=T, hi_desc=f"diffusion.timesteps={T}")
  number(cfg, "sample.eta", lo=0.0)
  reverse_steps = T if sampler == "ddpm" or steps == 0 else len(samplers.ddim_timesteps(T, steps))
  integer(
    cfg,
    "detect.window",
    lo=1,
    hi=reverse_steps,
    hi_desc=f"the {reverse_steps} reverse steps of sample.sampler={sampler!r}",
  )
  choice(cfg, "detect.reduction", samplers.REDUCTIONS)
  _check_detect_window(cfg, T, sampler, steps)  # detect.t_lo / detect.t_hi
  number(cfg, "detect.keep_in_support", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
  number(cfg, "detect.remove_hallucinations", lo=0.0, hi=1.0, lo_open=True, hi_open=True)

  if exp in ("gaussian", "timesteps") or (
    exp == "recursive" and cfg.data.name not in ("mnist", "shapes")
  ):
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
      isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in times
    ):
      raise ConfigError(
        "plots.predictor_times",
        f"must be a tuple of timesteps >= 0 (those >= diffusion.timesteps are "
        f"skipped), got {times!r}",
      )
  if exp in ("gaussian", "recursive") and "imbalance" in cfg.data:
    number(cfg, "data.imbalance", lo=0.0, lo_open=True)
  check = getattr(importlib.import_module(registry.EXPERIMENTS[exp].module), "check_config", None)
  if check is not None:  # the rules of the experiment's own fields, beside its code
    check(cfg)


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
    raise ConfigError(
      field,
      f"must be in [0, {T - 1}] when the other end is set (or both -1 "
      f"for the last detect.window steps), got detect.t_lo={lo}, "
      f"detect.t_hi={hi}",
    )
  if lo == -1:
    return
  if hi < lo:
    raise ConfigError(
      "detect.t_hi", f"must be in [detect.t_lo={lo}, {T - 1}] (an empty window otherwise), got {hi}"
    )
  try:
    samplers.window_mask(samplers.reverse_timesteps(sampler, T, num_steps), 0, lo, hi)
  except ValueError:
    raise ConfigError(
      "detect.t_lo",
      f"the window {lo}..{hi} holds none of the "
      f"{len(samplers.reverse_timesteps(sampler, T, num_steps))} timesteps that "
      f"sample.sampler={sampler!r} visits; widen it",
    ) from None


# -- helpers the experiments' own checks share ---------------------------------
def name_list(cfg, field, allowed, allow_empty=False):
  v = get(cfg, field)
  if isinstance(v, str) or (not v and not allow_empty):
    raise ConfigError(
      field,
      f"must be a {'' if allow_empty else 'non-empty '}tuple of names "
      f"from {', '.join(allowed)}, got {v!r}",
    )
  bad = [x for x in v if x not in allowed]
  if bad:
    raise ConfigError(field, f"{bad[0]!r} is not allowed; allowed: {', '.join(allowed)}")
  if len(set(v)) != len(v):
    raise ConfigError(field, f"names must not repeat, got {tuple(v)!r}")
  return tuple(v)


def timestep(cfg, field, T, name):
  return integer(
    cfg, field, lo=0, hi=T - 1, hi_desc=f"testbeds.{name}.diffusion.timesteps - 1 = {T - 1}"
  )
