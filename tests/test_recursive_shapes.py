"""Recursive training on SIMPLE SHAPES: a two-generation tiny run and its records."""

import os

import numpy as np
import pytest

from configs import recursive_shapes
from experiments import main
from mode_interp.data import shapes

pytestmark = pytest.mark.e2e


def test_shapes_two_generations(tmp_path):
  wd = str(tmp_path / "run")
  cfg = recursive_shapes.get_config("tiny")
  res = main.run(cfg, wd)
  gens = res["generations"]
  assert {(r["filter"], r["generation"]) for r in gens} == {
    ("random", 0),
    ("variance", 0),
    ("random", 1),
    ("variance", 1),
  }
  for r in gens:
    tag = "gen0" if r["generation"] == 0 else f"{r['filter']}_gen{r['generation']}"
    with np.load(os.path.join(wd, f"samples_{tag}.npz")) as z:
      drawn = z["samples"]
    assert len(drawn) == 64 + 16 == r["num_drawn"]
    v = shapes.check(np.clip(drawn, -1, 1), scale=cfg.data.scale).verdicts
    assert r["counts"] == shapes.count_verdicts(v)
    assert r["hallucination_rate"] == float(np.mean(v != shapes.IN_SUPPORT))
    assert r["mode_interpolation_rate"] == float(np.mean(v == shapes.MULTIPLE_IN_COLUMN))
    assert sum(r["counts_kept"].values()) == 64
  figs = os.listdir(os.path.join(wd, "figures"))
  assert "recursive_curves.png" in figs and "samples_variance_gen1.png" in figs
