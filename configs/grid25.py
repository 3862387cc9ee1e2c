r"""Mode interpolation on a 5x5 grid of 2D Gaussians.

Run (a few minutes on a 2-core CPU)::

  python -m experiments.main --config=configs/grid25.py --workdir=runs/grid25

Variants: `configs/grid25.py:paper` (paper scale, for accelerators),
`:sweep` (hallucination rate vs training points and T), `:official`
(the reference code's batch size). Override any field on the command line,
e.g. `--config.train.steps=5000`.

What it should show: samples land between neighbouring modes (hallucinations), coloured in figures/scatter.png; the exact score does not produce them; thresholding the trajectory variance removes most of them.
Writes config.json, metrics.jsonl, results.json (hallucination_rate,
true_score_hallucination_rate, detection), figures/ and checkpoints/.
"""

from configs import common


def get_config(arg: str = ""):
  return common.gaussian_config("grid25", arg)
