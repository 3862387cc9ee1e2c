r"""Training T vs sampling T', and a continuous-time VDM, on the 5x5 grid (the paper's appendix).

Run (CPU default: two DDPMs and two VDMs on 10,000 points; tens of minutes on 2 cores;
measured in reports/results.md)::

  python -m experiments.main --config=configs/timesteps.py

DDPMs trained with each ``tsteps.train_T`` and sampled with each ``tsteps.sample_T``
(T' <= T, ancestral sampling on an evenly respaced subsequence), VDMs (fixed and
learned log-SNR schedules) sampled with each T', and the exact score beside them.
What it should show: the learned models interpolate between neighbouring modes at
every T and T' (fewer steps do not remove it), while the exact score does not;
figures/tsteps_grid.png shows every cell, results.json["cells"] the rate per cell.
``:paper`` trains each model at the paper's budget (for accelerators); ``:tiny``
is a seconds-long smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "paper", "tiny"))
  c = common.gaussian_config("grid25", "")
  c.experiment = "timesteps"
  c.data.num_train = 10_000
  c.sample.num_samples = 10_000
  c.sample.chunk_size = 10_000
  c.tsteps = ml_collections.ConfigDict()
  c.tsteps.train_T = (100, 1_000)
  c.tsteps.sample_T = (10, 100, 1_000)
  c.tsteps.vdm_schedules = ("fixed", "learned")
  c.tsteps.gamma_min = -13.3  # VDM's log-SNR endpoints (gamma = -log SNR)
  c.tsteps.gamma_max = 5.0
  if arg == "paper":
    c.data.num_train = 10_000
    c.train.batch_size = 10_000
    c.train.steps = 10_000  # 10,000 epochs of 10,000 points
    common.reference_optimizer(c)
    c.train.log_every = 500
    c.train.ckpt_every = 5_000
    c.tsteps.train_T = (100, 250, 500, 1_000)
    c.tsteps.sample_T = (10, 50, 100, 250, 500, 1_000)
    c.sample.num_samples = 100_000
    c.sample.chunk_size = 100_000
  elif arg == "tiny":
    c.data.num_train = 512
    c.model.width = 32
    c.train.steps = 20
    c.train.batch_size = 128
    c.train.warmup_steps = 0
    c.train.log_every = 10
    c.train.ckpt_every = 10
    c.tsteps.train_T = (20, 40)
    c.tsteps.sample_T = (5, 20, 40)
    c.detect.window = 3
    c.sample.num_samples = 128
    c.sample.chunk_size = 128
  return c
