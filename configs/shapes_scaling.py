r"""SIMPLE SHAPES: how the hallucination detector moves with training, width, attention,
T and canvas (the detection study along training, per model).

Run (in the background: hours on a 2-core CPU; resumable point by point)::

  python -m experiments.main --config=configs/shapes_scaling.py

Each model of ``scaling.models`` (see ``experiments/scaling.py``: ``default`` = the
``configs/shapes.py`` U-Net, ``attn16``, ``wide``, ``t1000``, ``canvas64``) is trained from
the CPU-default recipe and studied (``experiments.detect``: the paper's score, the public
reimplementation's, the best held-out score, for all hallucinations and for two shapes in
one column vs in support) at each step count of ``scaling.steps``; extra seeds of
``scaling.seeds`` train the default model to ``scaling.seed_steps``. Writes results.json
(one row per model, seed and step count, with train and study seconds and training FLOPs),
table.json (as the rows arrive), figures/detection_vs_compute.png, and points/<model>_seed<s>/
(each a workdir of its own, with its study).

Variants: ``:tiny`` (seconds; tests). ``scaling.order`` (``breadth`` by default) sets
whether every model reaches its first step count before any goes further.
"""

import ml_collections

from configs import common, shapes


def get_config(arg: str = ""):
  common.check_variant(arg, ("", "tiny"))
  c = shapes.get_config(arg)
  c.experiment = "scaling"
  c.scaling = ml_collections.ConfigDict()
  c.scaling.models = "default,attn16,wide,t1000,canvas64"
  c.scaling.steps = (250, 500, 1_000, 2_000, 4_000)  # a 16x range of training
  c.scaling.seeds = (0, 1)  # seeds after the first train the default model only
  c.scaling.seed_steps = (1_000, 4_000)
  c.scaling.num_samples = 512
  c.scaling.study_chunk = 0  # samples per study call (0: the study's default)
  # "breadth": every model to its first step count, then every model to its second, ...: a
  # run stopped early has a point of every model; "depth": one model after the other.
  c.scaling.order = "breadth"
  if arg == "tiny":
    c.scaling.models = "default,attn16"
    c.scaling.steps = (4, 8)
    c.scaling.seed_steps = (8,)
    c.scaling.num_samples = 16
    c.train.warmup_steps = 0
  return c
