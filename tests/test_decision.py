"""Commit times along the reverse process: the pure functions and a tiny trained run."""

import json
import os

import numpy as np
import pytest

from experiments import decision
from mode_interp import trajectory_scores as ts
from mode_interp.data import shapes


def test_last_change_index():
  v = np.array([[1, 2, 3, 3, 3], [3, 3, 3, 3, 3], [1, 3, 1, 3, 2]])
  np.testing.assert_array_equal(ts.last_change_index(v), [2, 0, 4])
  b = np.array([[False, True, False, True, True]])
  np.testing.assert_array_equal(ts.last_change_index(b), [3])


def test_column_distances_are_per_column_rms():
  final = np.zeros((1, 2, 6, 1), np.float32)
  traj = np.zeros((1, 2, 2, 6, 1), np.float32)
  traj[0, 0, :, 0:2] = 1.0  # frame 0 differs in the first column only
  traj[0, 1, 0, 4] = 2.0  # frame 1: one pixel of four in the last column, by 2
  d = ts.column_distances(traj, final, (0, 2, 4, 6))
  np.testing.assert_allclose(d[0, 0], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(d[0, 1], [0.0, 0.0, 1.0])


def test_later_commit_contrast_and_image_score():
  # Two images of three columns: image 0 in support, its columns committed at t = 40;
  # image 1 two-in-one, its doubled middle column committed at t = 10, the rest at 40.
  t = np.array([[40, 40, 40], [40, 10, 40]])
  groups = {
    "in-support columns": np.array([[1, 1, 1], [0, 0, 0]], bool),
    "doubled": np.array([[0, 0, 0], [0, 1, 0]], bool),
  }
  c = decision.later_commit_contrast(t, groups, "doubled", "in-support columns")
  assert c["auroc"] == 1.0 and (c["n_pos"], c["n_neg"]) == (1, 3)
  verdicts = np.array([shapes.IN_SUPPORT, shapes.MULTIPLE_IN_COLUMN])
  a = decision.latest_commit_score(t, np.ones((2, 3), bool), verdicts)
  assert a["auroc"] == 1.0
  # Committed earlier instead: the contrast turns over.
  t2 = np.array([[40, 40, 40], [40, 90, 40]])
  assert decision.later_commit_contrast(t2, groups, "doubled", "in-support columns")["auroc"] == 0.0
  assert decision.latest_commit_score(t2, np.ones((2, 3), bool), verdicts)["auroc"] == 0.5


@pytest.mark.e2e
def test_tiny_run_commit_times(shapes_tiny_run):
  path = shapes_tiny_run  # a trained configs/shapes.py:tiny workdir (conftest)
  res = decision.run(path, num_samples=8, stride=2)
  T = res["timesteps"]
  assert res["num_samples"] == 8 and sum(res["counts"].values()) == 8
  for name in ("checker", "distance"):
    for g, s in res["commit_timestep"][name].items():
      if s["n"]:
        assert 0 <= s["quartiles"][0] <= s["median"] <= s["quartiles"][1] <= T - 1
        assert sum(s["histogram"]) == s["n"]
  for f in ("results.json", "figures/commit_checker.png", "figures/column_traces.png"):
    assert os.path.exists(os.path.join(path, "decision", f))
  with open(os.path.join(path, "decision", "results.json")) as f:
    saved = json.load(f)
  assert saved["stride"] == 2
  assert set(saved["latest_commit_score"]) == {"checker", "distance"}
  with pytest.raises(decision.DecisionError, match="--stride"):
    decision.run(path, num_samples=8, stride=0)
