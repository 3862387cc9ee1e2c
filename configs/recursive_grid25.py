r"""Recursive training on the 5x5 grid: collapse, and the variance filter.

Run (tens of minutes on a 2-core CPU; measured times: reports/results.md)::

  python -m experiments.main --config=configs/recursive_grid25.py

Generation 0 trains on real data; each later generation trains a fresh model on
``data.num_train`` samples kept from the previous one's
``num_train + recursive.oversample``, by filter ``none`` / ``random`` /
``variance`` (lowest trajectory variance). What it should show: the
hallucination rate grows over generations with ``none`` and ``random`` and
more slowly with ``variance`` (figures/recursive_curves.png,
results.json["generations"]); the price of the filter shows in
``in_support_per_mode`` (which modes it starves). Measured numbers: reports/results.md and
reports/report.md.

``:paper`` is the paper's scale (five generations of 100,000 points, batch
10,000, 10,000 epochs; 102,500 drawn and 100,000 kept per generation, as the
official filter script does) for accelerators.
"""

from configs import common


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "paper", "tiny"))
  c = common.gaussian_config("grid25", "")
  common.recursive_fields(c)
  # Each generation trains as configs/grid25.py does (cosine learning rate at batch 1,024):
  # its off-mode samples must be interpolations, not blur (a constant learning rate at a
  # small batch leaves most of generation 0 off-mode).
  c.data.num_train = 10_000
  c.sample.chunk_size = 12_500
  c.recursive.generations = 3
  c.recursive.oversample = 2_500
  if arg == "paper":
    c.data.num_train = 100_000
    c.train.batch_size = 10_000
    c.train.steps = 100_000
    common.reference_optimizer(c)
    c.train.log_every = 1_000
    c.train.ckpt_every = 10_000
    c.recursive.generations = 5
    # As the official filter script: it draws 500,000 but filters only the first
    # num_train + 2,500 (keeps 100,000 of 102,500).
    c.recursive.oversample = 2_500
    c.sample.chunk_size = 102_500  # one chunk per generation
  elif arg == "tiny":
    c.data.num_train = 256
    c.train.steps = 20
    c.train.batch_size = 64
    c.train.warmup_steps = 0
    c.train.log_every = 10
    c.train.ckpt_every = 10
    c.model.width = 32
    c.diffusion.timesteps = 30
    c.detect.window = 5
    c.recursive.generations = 2
    c.recursive.oversample = 64
    c.sample.chunk_size = 160
  return c
