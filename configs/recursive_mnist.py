r"""Recursive training on MNIST: collapse, and the variance filter.

Run (CPU default: a small U-Net on 32x32 MNIST, three generations; tens of
minutes on 2 cores, measured in reports/results.md)::

  python -m experiments.main --config=configs/recursive_mnist.py

Data: the standard IDX files from ``data.dir``, ``$MODE_INTERP_MNIST_DIR`` or
``~/.cache/mode_interp/mnist`` (downloaded when the network allows). When only
the test split is present (as in CI), it trains on that and says so in the
log. Collapse is measured per generation with a small CNN trained once on real
MNIST and cached in the workdir: the Frechet distance of its penultimate
features to real data, the entropy and coverage of predicted classes, and the
share of low-confidence samples (figures/recursive_curves.png). What it should
show: the Frechet distance grows and the class entropy falls over generations,
more slowly with ``variance`` filtering; figures/filtered_gen<g>.png shows what the
filter keeps and drops. Measured numbers: reports/results.md and reports/report.md.

``:paper`` trains on the full 60,000-image split with a wider U-Net.
"""

from configs import common


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "paper", "tiny"))
  c = common.base_config()
  common.recursive_fields(c)
  c.data.name = "mnist"
  c.data.dir = ""  # "" -> $MODE_INTERP_MNIST_DIR, then ~/.cache/mode_interp/mnist
  c.data.download = True
  # CPU default: a small U-Net, 1,000 images per generation, three generations and
  # the random / variance filters (``none`` keeps the first samples drawn, which for
  # i.i.d. samples is the same distribution as ``random``; add it with
  # --config.recursive.filters="('none','random','variance')"). A cosine-decayed
  # learning rate is what makes 1,000 steps give digit-like samples.
  c.data.num_train = 1_000
  common.unet(c, ch=8, ch_mult=(1, 2, 2), num_groups=4)
  c.diffusion.timesteps = 100
  c.diffusion.beta_start = 1e-3
  c.diffusion.beta_end = 0.2
  c.train.steps = 1_000
  c.train.batch_size = 64
  c.train.lr = 3e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.995
  c.train.log_every = 50
  c.train.ckpt_every = 500
  c.sample.chunk_size = 250
  c.recursive.generations = 3
  c.recursive.filters = ("random", "variance")
  c.recursive.oversample = 500
  c.recursive.classifier_steps = 800
  if arg == "paper":
    c.data.num_train = 60_000
    common.unet(
      c, ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), num_groups=32
    )
    c.diffusion.timesteps = 1_000
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.02
    c.train.steps = 50_000
    c.train.batch_size = 128
    c.train.lr = 2e-4
    c.train.lr_schedule = "constant"
    c.train.warmup_steps = 1_000
    c.train.ema_decay = 0.9999
    c.train.log_every = 500
    c.train.ckpt_every = 5_000
    c.sample.chunk_size = 2_500
    c.recursive.generations = 5
    c.recursive.filters = ("none", "random", "variance")
    c.recursive.oversample = 10_000
  elif arg == "tiny":
    # The U-Net, schedule and optimiser of configs/recursive_shapes.py:tiny (64 images at
    # batch 16 too): the tests' compiled initialisation and training step are the same
    # programs, compiled once for both (the persistent compilation cache).
    c.data.num_train = 64
    common.unet(c, ch=8, ch_mult=(1, 2), num_groups=4)
    c.diffusion.timesteps = 20
    c.diffusion.beta_start = 0.005
    c.diffusion.beta_end = 0.5
    c.train.steps = 10
    c.train.batch_size = 16
    c.train.lr = 1e-3
    c.train.lr_schedule = "constant"
    c.train.warmup_steps = 0
    c.train.ema_decay = 0.9
    c.train.log_every = 5
    c.train.ckpt_every = 10
    c.sample.chunk_size = 48
    c.detect.window = 3
    c.recursive.generations = 2
    c.recursive.filters = ("none", "variance")
    c.recursive.oversample = 32
    c.recursive.classifier_steps = 50
  return c
