r"""SIMPLE SHAPES without a network: the exact and local denoisers of the training set.

Run::

  python -m experiments.main --config=configs/shapes_denoisers.py \
      --config.denoisers.unet_workdir=runs/shapes

Samples the CPU-default SIMPLE SHAPES setting (the same 5,000 training images, 32x32,
T = 100 schedule, DDPM, trajectory variance over the last 10 steps) with the exact
denoiser E[x0 | x_t] of the training set, which should only redraw training images, and
with local denoisers whose every pixel is denoised from the ``P x P`` patch around it
(``denoisers.patches``), which can compose images never seen. Reports per denoiser the
checker's verdicts, the share of samples that copy a training image (nearest training image
within ``denoisers.copy_rms`` RMS on the [-1, 1] scale), the share of new in-support images,
the multiple-in-column rate with its interval and the trajectory variance's detection
figures; with ``denoisers.unet_workdir`` (a finished ``configs/shapes.py`` workdir) the
U-Net's multiple-in-column rate goes beside them. Also records the receptive field of the
config's U-Net (``model``), the scale a patch is compared with.

Variants: ``:tiny`` (seconds; tests), ``:paper`` (64x64, the paper's T = 1000; for
accelerators).
"""

import ml_collections

from configs import common, shapes


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "tiny", "paper"))
  c = shapes.get_config(arg)
  c.experiment = "denoisers"
  c.denoisers = ml_collections.ConfigDict()
  c.denoisers.exact = True
  c.denoisers.patches = (3, 7, 11, 15)  # odd patch sides of the local denoisers
  c.denoisers.num_samples = 128
  c.denoisers.chunk_images = 500  # training images per step of the streamed softmax
  c.denoisers.copy_rms = 0.1  # a sample within this RMS of a training image copies it
  c.denoisers.unet_workdir = ""  # a configs/shapes.py workdir: its U-Net's rates beside
  c.sample.chunk_size = 32
  if arg == "tiny":
    # The U-Net is only probed for its receptive field (two levels, as :tiny's: the whole
    # canvas). Equal widths at both levels leave fewer distinct parameter shapes; the
    # experiment initialises it eagerly, one compiled initialiser per shape.
    common.unet(c, ch=8, ch_mult=(1, 1), num_groups=4)
    c.denoisers.patches = (3,)
    c.denoisers.num_samples = 8
    c.denoisers.chunk_images = 64
    c.sample.chunk_size = 8
  elif arg == "paper":
    c.denoisers.patches = (5, 13, 21, 29)
    c.denoisers.num_samples = 1_000
    c.sample.chunk_size = 100
  return c
