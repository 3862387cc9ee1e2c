r"""Hallucination detectors and mitigations that followed the paper, on common ground.

Run (the CPU default: three testbeds; its time on a 2-core CPU is in reports/hallbench.md)::

  python -m experiments.main --config=configs/shapes.py --workdir=runs/shapes   # once
  python -m experiments.main --config=configs/hallbench.py --workdir=/tmp/hallbench \
    --config.testbeds.shapes.workdir=runs/shapes

(without ``testbeds.shapes.workdir`` the benchmark trains its own SIMPLE SHAPES U-Net.)

Variants: ``:grid25`` / ``:shapes`` (one testbed alone), ``:tiny`` / ``:tiny_shapes`` (the 1D
mixture / SIMPLE SHAPES at toy sizes, seconds; tests). Override any field,
e.g. ``--config.hallbench.iq.strength=0.5``; a testbed's model recipe lives under
``testbeds.<name>`` (``--config.testbeds.grid25.train.steps=...``).

Per testbed (``hallbench.testbeds``: the 1D mixture at 1, 2, 3, the 5x5 grid and SIMPLE
SHAPES; each model trained with its experiment's CPU recipe, ``configs/gaussian1d.py`` /
``configs/grid25.py`` / ``configs/shapes.py``), one checkpoint is sampled by DDPM and by DDIM (eta = 0) with the same
starting noise, and

- every detector scores the same samples (the DDPM set, and a subset of the DDIM set, where
  the manifold-instability filter, which needs a deterministic sampler, joins): the paper's
  trajectory variance and the detection study's best trajectory score (``experiments.detect``'s
  windows x sources x reductions, chosen on the selection half), manifold instability and its
  LID from the denoising loss
  (arXiv:2605.05026), FLIPD (arXiv:2406.03537), re-noising consistency, and the oracle (the
  true mixture's posterior probability of a hallucination); thresholds are chosen on one half
  and reported on the other (AUROC with DeLong interval, removed at 96% kept, kept at 95%
  removed, network passes per sample);
- every mitigation is measured against plain DDPM of the same checkpoint: the paper's filter
  at generation time (drop the highest-variance share), DDIM, DDIM with its last k steps
  ancestral (arXiv:2605.06831), Intrinsic Quenching (arXiv:2605.05026), and VSM
  (arXiv:2606.00377: a learned variance trained with its smoothness penalty, beside the same
  learned-variance model trained with rho = 0): hallucination rate (Wilson interval),
  in-support share, distance to the nearest mode, network passes per delivered sample.

What it should show: which detector separates the hallucinations best on each testbed and
at what cost, and which mitigation lowers the rate at what cost. Writes config.json,
metrics.jsonl, results.json (``tables``: one per testbed), figures/hallbench_<testbed>.png
(ROC curves, rate against cost), checkpoints/<testbed>/ and the sample caches.

The top-level ``data``/``diffusion``/``model``/``train`` sections mirror the first testbed's
recipe (the shared checks read them); set a recipe under ``testbeds.<name>``.

SIMPLE SHAPES (``shapes``: the ``configs/shapes.py`` CPU default; ``:shapes`` alone) joins with
the checker's verdicts as labels (a hallucination is any image not in support; the detectors
are also scored on two shapes in one column vs in support, the paper's mode interpolation),
the distance of each sample to its nearest training image in place of the distance to a
mode, and the column patterns drawn in place of the modes; its timesteps, sample counts and
perturbation design are set for its T = 100 under ``testbeds.shapes.hallbench`` (any field
of ``hallbench`` can be set per testbed there). It has no oracle: no closed form says whether
an image lies in the data's support. ``testbeds.<name>.workdir`` names a workdir that
``experiments.main`` trained with that testbed's experiment (e.g. ``configs/shapes.py``): its
checkpoint and recipe are read (never written) instead of training here. MNIST is left out:
nothing labels an MNIST sample as a hallucination (reports/hallbench.md).
"""

import ml_collections

from configs import common, shapes
from mode_interp import trajectory_scores

DETECTORS = (
  "trajectory_variance",
  "manifold_instability",
  "lid_loss",
  "flipd",
  "renoise",
  "oracle",
  "study_best",
)
MITIGATIONS = ("ddpm", "filter", "ddim", "ddim_stochastic", "iq", "vsm")
RECIPE = ("data", "diffusion", "model", "train")


# Sections a testbed's recipe may carry beyond RECIPE: how its samples are drawn and scored
# (the U-Net's chunk of images, its detection window), where they differ from the top level.
SAMPLING = ("sample", "detect")


def _experiment_config(name: str, tiny: bool) -> ml_collections.ConfigDict:
  variant = "tiny" if tiny else ""
  return shapes.get_config(variant) if name == "shapes" else common.gaussian_config(name, variant)


def _shapes_settings(tiny: bool) -> dict:
  """The benchmark's settings for SIMPLE SHAPES (T = 100, a U-Net, 1,024 dimensions): the
  Gaussian testbeds' timesteps scaled to its T, sample counts to the U-Net's cost, and the
  Gaussian perturbation design (the orthogonal one needs 2 D = 2,048 runs per sample)."""
  # VSM would train two more U-Nets (about twice the main job's training): left out of the
  # CPU default; add "vsm" to testbeds.shapes.hallbench.mitigations to run it.
  mitigations = ("ddpm", "filter", "ddim", "ddim_stochastic", "iq")
  if tiny:
    return {
      "mitigations": mitigations,
      "num_samples": 32,
      "ddim": {"stochastic_last": (2,), "num_samples": 16},
      "mi": {"num_samples": 8, "perturbations": 2, "design": "gaussian"},
      "renoise": {"t": 1, "draws": 2},
      "lid": {"draws": 2},
      "flipd": {"probes": 1},
      "iq": {"t_lo": 0, "t_hi": 1, "calibration": 8, "num_samples": 8},
      "vsm": {"num_samples": 16},
      "study": {"reductions": ",".join(trajectory_scores.REDUCTIONS)},
      "chunk_size": 16,
    }
  return {
    "mitigations": mitigations,
    "num_samples": 1_024,
    "ddim": {"stochastic_last": (1, 5, 20), "num_samples": 512},
    "mi": {"num_samples": 128, "perturbations": 4, "design": "gaussian"},
    "renoise": {"t": 1},
    "iq": {"t_lo": 0, "t_hi": 5, "calibration": 256, "num_samples": 256},
    "vsm": {"num_samples": 512},
    "study": {"reductions": ",".join(trajectory_scores.REDUCTIONS)},
    "chunk_size": 256,
  }


def _recipe(name: str, tiny: bool) -> ml_collections.ConfigDict:
  g = _experiment_config(name, tiny)
  sections = RECIPE + (SAMPLING if name == "shapes" else ())
  r = ml_collections.ConfigDict({s: g[s].to_dict() for s in sections})
  r.workdir = ""  # a trained workdir of the testbed's experiment to read instead of training
  if name == "shapes":
    r.hallbench = _shapes_settings(tiny)
  return r


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "grid25", "shapes", "tiny", "tiny_shapes"))
  tiny = arg.startswith("tiny")
  # :tiny keeps one testbed (the 1D mixture) so that the end-to-end test stays short.
  testbeds = {
    "grid25": ("grid25",),
    "shapes": ("shapes",),
    "tiny": ("gaussian1d",),
    "tiny_shapes": ("shapes",),
  }.get(arg, ("gaussian1d", "grid25", "shapes"))
  c = _experiment_config(testbeds[0], tiny)
  for k in ("sweep", "plots"):
    if k in c:
      del c[k]
  c.experiment = "hallbench"
  c.testbeds = ml_collections.ConfigDict({n: _recipe(n, tiny) for n in testbeds})

  h = c.hallbench = ml_collections.ConfigDict()
  h.testbeds = testbeds
  h.detectors = DETECTORS
  h.mitigations = MITIGATIONS
  h.num_samples = 10_000  # the DDPM and DDIM sets (the same starting noise)
  h.split_seed = 0  # which half selects thresholds, which reports them
  # The paper's filter at generation time: draw, drop this share with the highest trajectory
  # variance (each a point of the rate-against-cost figure).
  h.filter = ml_collections.ConfigDict({"drop": (0.05, 0.1, 0.2)})
  # DDIM (eta = 0) over `steps` reverse steps (0: all T), and with its last k steps ancestral.
  h.ddim = ml_collections.ConfigDict(
    {"steps": 0, "stochastic_last": (10, 50, 200), "num_samples": 5_000}
  )
  # Manifold instability: `perturbations` runs of DDIM per sample from the starting noise
  # plus `scale` times a direction (`design`: gaussian, or orthogonal = +-sqrt(D) along the
  # axes of a random rotation, a multiple of 2 D runs), on the first `num_samples` DDIM samples.
  h.mi = ml_collections.ConfigDict(
    {"num_samples": 2_000, "perturbations": 4, "scale": 0.05, "design": "orthogonal"}
  )
  # FLIPD at timestep t0 (the exact trace up to `hutchinson_above` dimensions, else
  # Hutchinson with `probes` Rademacher probes).
  h.flipd = ml_collections.ConfigDict({"t0": 0, "hutchinson_above": 16, "probes": 4})
  h.lid = ml_collections.ConfigDict({"t": 0, "draws": 8})  # LID from the denoising loss
  h.renoise = ml_collections.ConfigDict({"t": 10, "draws": 8})  # noise to t, predict x0
  h.oracle = ml_collections.ConfigDict({"t": 0})  # the noise level the sample is read at
  # Intrinsic Quenching: inside timesteps t_lo..t_hi, rows whose LID exceeds the `quantile`
  # of the training data's LID at that t (from `calibration` points) move down its
  # gradient with `strength`; on the first `num_samples` of the DDPM set's starting noise.
  h.iq = ml_collections.ConfigDict(
    {
      "t_lo": 0,
      "t_hi": 50,
      "quantile": 0.9,
      "strength": 0.1,
      "calibration": 2_000,
      "num_samples": 5_000,
    }
  )
  # VSM (arXiv:2606.00377): two more models of the testbed's recipe with a learned variance,
  # trained `steps` steps (0: the recipe's), one with VSM's penalty `rho` and its baseline
  # with rho = 0, each drawing `num_samples` DDPM samples with its variance. (A third of the
  # 1D recipe is not enough: its plain model hallucinates 61% of 2,000 samples at 2,000 steps,
  # against 0.5% at the recipe's 6,000.)
  h.vsm = ml_collections.ConfigDict({"rho": 0.1, "steps": 0, "num_samples": 5_000})
  # The detection study's best score (experiments.detect): its windows x sources x
  # reductions on the DDPM set, the best chosen on the selection half.
  h.study = ml_collections.ConfigDict(
    {"windows": trajectory_scores.DEFAULT_WINDOWS, "reductions": "mean,max", "max_carry_mb": 768}
  )
  h.chunk_size = 4_096  # rows per detector call

  if tiny:
    h.num_samples = 256
    h.filter.drop = (0.1,)
    h.ddim.stochastic_last = (5,)
    h.ddim.num_samples = 128
    h.mi.num_samples = 64
    h.iq.t_lo, h.iq.t_hi = 0, 5
    h.iq.calibration = 64
    h.iq.num_samples = 128
    h.renoise.t = 3
    h.vsm.num_samples = 128
    h.chunk_size = 128
  return c
