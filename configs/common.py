"""Defaults shared by every experiment's config (imported by the config files only).

The fields every experiment has, so users learn them once: ``seed``,
``data.name``, ``data.num_train``, ``diffusion.timesteps``, ``train.steps``,
``train.batch_size``, ``sample.num_samples``, ``detect.window``.
"""

import ml_collections


def check_variant(arg: str, allowed) -> None:
  """Refuses a ``:variant`` the config file does not have, naming the ones it has."""
  if arg not in allowed:
    raise ValueError(f"unknown variant {arg!r}; allowed: {', '.join(repr(v) for v in allowed)}")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = ""
  c.seed = 0
  c.num_devices = 0  # 0: every device jax sees

  c.data = ml_collections.ConfigDict()
  c.data.name = ""
  c.data.num_train = 0

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.timesteps = 1000
  c.diffusion.schedule = "linear"
  c.diffusion.beta_start = 1e-4
  c.diffusion.beta_end = 0.02

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp"
  # A second output of the network's size: the interpolation v in [-1, 1] between the log of
  # beta_t and of the posterior variance (Nichol & Dhariwal's learned range), trained by the
  # variational bound (train.vsm_rho adds VSM's smoothness penalty); sample.variance="learned"
  # samples with it.
  c.model.learn_sigma = False

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 128
  c.train.lr = 1e-3
  c.train.lr_schedule = "constant"  # or "cosine": decays to 0 at train.steps
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.warmup_steps = 0
  c.train.grad_clip = 0.0
  c.train.ema_decay = 0.0
  c.train.log_every = 100
  c.train.ckpt_every = 1000
  # With model.learn_sigma: the weight rho of VSM's penalty (Bhosale et al. 2026,
  # arXiv:2606.00377), rho / sqrt(1 - alpha_bar_t) * mean(sigma^4 / (1 + sigma^4)); 0: the
  # learned-variance (hybrid loss) baseline.
  c.train.vsm_rho = 0.0

  # Rows per device and pass of the gradient (summed over micro-batches): -1 (auto) 2,048
  # on CPUs, everything at once on accelerators; 0: everything at once.
  c.train.micro_batch = -1

  c.sample = ml_collections.ConfigDict()
  c.sample.num_samples = 10_000
  c.sample.sampler = "ddpm"
  c.sample.variance = "fixed_large"
  c.sample.num_steps = 0  # DDIM only: reverse steps (0 = all)
  c.sample.eta = 0.0  # DDIM only
  c.sample.chunk_size = 10_000
  # Samples per device and pass through the network: -1 (auto) 2,048 on CPUs, where larger
  # blocks fall out of the cache, everything at once on accelerators; 0: everything at once.
  c.sample.tile_rows = -1

  c.detect = ml_collections.ConfigDict()
  c.detect.window = 10  # trajectory variance over the last `window` reverse steps
  c.detect.reduction = "mean"  # over dimensions: "mean" (the paper) or "max" (one pixel)
  c.detect.keep_in_support = 0.96
  c.detect.remove_hallucinations = 0.95
  return c


def unet(
  c: ml_collections.ConfigDict,
  ch: int,
  ch_mult: tuple,
  num_res_blocks: int = 1,
  attn_resolutions: tuple = (),
  dropout: float = 0.0,
  num_groups: int = 8,
) -> None:
  """The image experiments' DDPM U-Net fields."""
  c.model.name = "unet"
  c.model.ch = ch
  c.model.ch_mult = tuple(ch_mult)
  c.model.num_res_blocks = num_res_blocks
  c.model.attn_resolutions = tuple(attn_resolutions)
  c.model.dropout = dropout
  c.model.num_groups = num_groups


def toy_mlp(c: ml_collections.ConfigDict) -> None:
  """The reference toy network and optimiser (Adam 1e-3, betas 0.9/0.999)."""
  c.model.name = "mlp"
  c.model.width = 128
  c.model.num_blocks = 3
  c.model.share_blocks = True
  # "bfloat16": the hidden layers' products from bfloat16 operands, accumulated in float32
  # (faster sampling on a CPU with AVX512-BF16; per-sample results change slightly).
  c.model.dtype = "float32"
  # The toy experiments' schedule: linear betas 0.001 -> 0.2 (10x the usual end).
  c.diffusion.schedule = "linear"
  c.diffusion.beta_start = 0.001
  c.diffusion.beta_end = 0.2
  c.diffusion.timesteps = 1000


def reference_optimizer(c: ml_collections.ConfigDict) -> None:
  """The reference toy code's training: constant Adam 1e-3, no warm-up, no EMA."""
  c.train.lr = 1e-3
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.ema_decay = 0.0


def _paper(c, data_name):
  c.data.num_train = 20_000 if data_name == "gaussian1d" else 100_000
  c.train.batch_size = 10_000
  c.train.steps = 10_000 * c.data.num_train // c.train.batch_size  # 10,000 epochs
  reference_optimizer(c)
  c.train.log_every = 500
  c.train.ckpt_every = 5_000
  c.sample.num_samples = 100_000
  c.sample.chunk_size = 100_000


def _sweep(c, data_name):
  c.sweep.enabled = True
  if data_name != "gaussian1d":
    c.sweep.num_train = (2_000, 5_000, 20_000, 50_000)
    c.sweep.steps = 15_000


def _tiny(c, data_name):
  del data_name
  c.data.num_train = 512
  c.model.width = 32
  c.diffusion.timesteps = 30
  c.train.steps = 30
  c.train.batch_size = 128
  c.train.warmup_steps = 0
  c.train.log_every = 10
  c.train.ckpt_every = 10
  c.sample.num_samples = 256
  c.sample.chunk_size = 128
  c.detect.window = 5
  c.plots.predictor_times = (1, 10)


def _distance(c, data_name):
  if data_name != "gaussian1d":
    raise ValueError("variant 'distance' is for configs/gaussian1d.py (the 1D modes' spacing)")
  c.sweep.enabled = True
  c.sweep.num_train, c.sweep.timesteps = (), ()
  c.sweep.distance = (0.5, 1.0, 1.5, 2.0)


def _imbalance(c, data_name):
  del data_name
  c.sweep.enabled = True
  c.sweep.num_train, c.sweep.timesteps = (), ()
  c.sweep.imbalance = (1.0, 3.0, 10.0)
  c.sweep.steps = c.train.steps
  c.sweep.num_samples = 20_000


def _sweep_paper(c, data_name):
  c.sweep.enabled = True
  reference_optimizer(c)
  c.train.batch_size = 10_000
  c.sweep.epochs = 10_000
  c.sweep.num_samples = 100_000
  c.sample.chunk_size = 100_000
  c.train.log_every = 500
  c.train.ckpt_every = 5_000
  if data_name == "gaussian1d":
    c.sweep.distance = (0.5, 1.0, 1.5, 2.0)


def _official(c, data_name):
  # The parity recipe (python -m experiments.parity): the reference code's model, schedule
  # and optimiser (constant Adam 1e-3, no warm-up, no EMA), random minibatches of 2,000,
  # 20,000 steps, 20,000 samples: the budget of a run of the official code on a 2-core CPU.
  del data_name
  c.train.batch_size = 2_000
  c.train.steps = 20_000
  reference_optimizer(c)
  c.train.log_every = 100
  c.train.ckpt_every = 1_000
  c.sample.num_samples = 20_000


# variant name -> its changes to the CPU default, f(config, data_name); "" is the default.
GAUSSIAN_VARIANTS = {
  "": lambda c, data_name: None,
  "paper": _paper,
  "sweep": _sweep,
  "distance": _distance,
  "imbalance": _imbalance,
  "sweep_paper": _sweep_paper,
  "official": _official,
  "tiny": _tiny,
}


def gaussian_config(data_name: str, arg: str) -> ml_collections.ConfigDict:
  """Config of the Gaussian-mixture experiments (1D mixture, 5x5 grid, rotated grid).

  Variants (``arg``): ``""`` CPU default (a few minutes on 2 cores); ``paper``
  the paper's scale (batch 10,000, 10,000 epochs, at least 100k samples);
  ``sweep`` hallucination rate against the number of training points and T;
  ``distance`` (1D) against the distance between the modes; ``imbalance``
  against unequal mode weights (even modes ``imbalance`` times heavier);
  ``sweep_paper`` the number of points, T and (1D) the distance at the paper's
  budget (10,000 epochs at batch 10,000, no EMA), for accelerators;
  ``official`` the reference code's own defaults for a side-by-side run; ``tiny``
  a seconds-long smoke run (tests).
  """
  check_variant(arg, tuple(GAUSSIAN_VARIANTS))
  c = base_config()
  c.experiment = "gaussian"
  toy_mlp(c)
  c.data.name = data_name
  c.data.std = 0.05
  if data_name == "gaussian1d":
    c.data.means = (1.0, 2.0, 3.0)
  c.data.num_train = 20_000
  c.data.imbalance = 1.0  # even modes weigh this many times the others (1: equal)
  # CPU defaults (a few minutes on 2 cores), far below the paper's 10,000 epochs at
  # batch 10,000; an EMA of the weights recovers much of the sharpness of the modes.
  if data_name == "gaussian1d":
    c.train.steps = 6_000
    c.train.batch_size = 2_000
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1_000
  else:
    # 25 tight 2D modes: a cosine-decayed learning rate at batch 1,024 makes the modes
    # sharp, so that the off-mode samples are interpolations between neighbouring modes
    # rather than blur around them (a constant 1e-3 at batch 256 stayed blurred far
    # longer; reports/results.md).
    c.train.steps = 15_000
    c.train.batch_size = 1_024
    c.train.lr = 3e-3
    c.train.lr_schedule = "cosine"
    c.train.warmup_steps = 500
    c.train.ema_decay = 0.999
    c.train.log_every = 1_000
    c.train.ckpt_every = 5_000
  c.sample.num_samples = 20_000
  c.sample.chunk_size = 10_000
  c.detect.k_sigma = 4.0  # hallucination: farther than k std from every mode
  c.plots = ml_collections.ConfigDict()
  c.plots.predictor_times = (1, 5, 10, 25, 50)  # timesteps at which to draw learned vs exact x0
  c.sweep = ml_collections.ConfigDict()
  c.sweep.enabled = False
  c.sweep.num_train = (2_000, 5_000, 20_000, 50_000)
  c.sweep.timesteps = (100, 250, 500, 1_000)
  # Each point trains as long as the 1D default: much shorter, the EMA (0.999) average still
  # holds a sizeable share of the initial weights and every point is mostly off-mode.
  c.sweep.steps = 6_000
  c.sweep.epochs = 0  # > 0: each point trains this many epochs instead of sweep.steps
  c.sweep.distance = ()  # 1D: spacing of the modes around their centre
  c.sweep.imbalance = ()  # weight ratio of even to odd modes
  c.sweep.num_samples = 10_000

  GAUSSIAN_VARIANTS[arg](c, data_name)
  return c


def recursive_fields(c: ml_collections.ConfigDict) -> None:
  c.experiment = "recursive"
  c.recursive = ml_collections.ConfigDict()
  c.recursive.generations = 3
  c.recursive.filters = ("none", "random", "variance")
  c.recursive.oversample = 2_500  # the reference samples num_train + 2,500 and keeps num_train
  c.recursive.classifier_steps = 800  # MNIST only: the CNN behind the collapse metrics
