r"""Mode interpolation on three 1D Gaussians at 1, 2, 3 (std 0.05).

Run (a few minutes on a 2-core CPU)::

  python -m experiments.main --config=configs/gaussian1d.py --workdir=runs/gaussian1d

Variants: `configs/gaussian1d.py:paper` (paper scale, for accelerators),
`:sweep` (hallucination rate vs training points and T), `:official`
(the reference code's batch size). Override any field on the command line,
e.g. `--config.train.steps=5000`.

What it should show: the learned model puts samples between the modes (around 1.5 and 2.5), the exact-score sampler does not; the trajectory variance separates the two.
Writes config.json, metrics.jsonl, results.json (hallucination_rate,
true_score_hallucination_rate, detection), figures/ and checkpoints/.
"""

from configs import common


def get_config(arg: str = ""):
  return common.gaussian_config("gaussian1d", arg)
