r"""Recursive training on SIMPLE SHAPES: collapse, and the variance filter.

Run (CPU default: a small U-Net on the 32x32 canvas, three generations; about half an
hour on 2 cores)::

  python -m experiments.main --config=configs/recursive_shapes.py

Generation 0 trains on images with at most one triangle, square and pentagon (one
per column); each later generation trains a fresh model on ``data.num_train``
images kept from the previous one's ``num_train + recursive.oversample``, by
filter ``random`` (a uniform subset) or ``variance`` (the lowest trajectory
variance). Every generation's samples are judged by the shapes checker (the
paper's SIMPLE SHAPES panel of the recursive-training figure). What it should
show: the share of hallucinated images (any verdict but in-support; and
``multiple_in_column``, the mode interpolation proper) grows over generations,
more slowly with ``variance`` (figures/recursive_curves.png,
results.json["generations"], figures/samples_<filter>_gen<g>.png).

The CPU default is sized to finish, not to be sharp: its models are far smaller
and shorter-trained than the paper's, so many images are malformed from
generation 0. ``:gpu`` (the paper's U-Net, 10k steps, 5,000 images a generation;
not yet measured) and ``:paper`` (the paper's 64x64 scale, five generations) are
for accelerators. ``:tiny`` is a seconds-long smoke run (tests).
"""

from configs import common
from configs import shapes as shapes_config


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "gpu", "paper", "tiny"))
  base = {"": "", "gpu": "paper", "paper": "paper", "tiny": "tiny"}[arg]
  c = shapes_config.get_config(base)
  common.recursive_fields(c)
  c.recursive.filters = ("random", "variance")
  c.recursive.generations = 3
  if arg == "":
    c.data.num_train = 500
    c.recursive.oversample = 250
    c.train.steps = 500
    c.train.warmup_steps = 100
    c.train.ckpt_every = 250
    # DDIM over 25 of the 100 steps: sampling 750 images per generation in minutes.
    c.sample.sampler = "ddim"
    c.sample.num_steps = 25
    c.sample.chunk_size = 250
    c.detect.window = 5
  elif arg == "gpu":
    c.data.num_train = 5_000
    c.recursive.oversample = 1_250
    c.train.steps = 10_000
    c.sample.sampler = "ddim"
    c.sample.num_steps = 100
    c.sample.chunk_size = 1_250
  elif arg == "paper":
    c.data.num_train = 10_000
    c.recursive.oversample = 2_500
    c.recursive.generations = 5
    c.sample.chunk_size = 1_250
  elif arg == "tiny":
    c.data.num_train = 64
    c.recursive.oversample = 16
    c.recursive.generations = 2
    c.train.steps = 10
    c.sample.chunk_size = 40
  c.sample.num_samples = c.data.num_train + c.recursive.oversample
  return c
