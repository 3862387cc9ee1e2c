"""Recursive training on the 5x5 grid: a two-generation tiny run, its records, and
resumption mid-way. (MNIST and SIMPLE SHAPES: tests/test_recursive_mnist.py and
tests/test_recursive_shapes.py, separate files so that parallel workers share them out.)"""

import json
import os

import numpy as np
import pytest

from configs import recursive_grid25
from experiments import main, recursive

pytestmark = pytest.mark.e2e


def _results(wd):
  with open(os.path.join(wd, "results.json")) as f:
    return json.load(f)


def test_grid_two_generations_and_resume(tmp_path, monkeypatch):
  wd = str(tmp_path / "run")
  cfg = recursive_grid25.get_config("tiny")
  # Stop the first attempt inside generation 1 of the second filter.
  calls = {"n": 0}
  real_one = recursive.pipeline.train_model

  def flaky(cfg_, data, wd_, **kw):
    calls["n"] += 1
    if kw.get("subdir") == "random_gen1":
      raise KeyboardInterrupt("simulated stop")
    return real_one(cfg_, data, wd_, **kw)

  monkeypatch.setattr(recursive.pipeline, "train_model", flaky)
  with pytest.raises(KeyboardInterrupt):
    main.run(cfg, wd)
  partial = _results(wd)
  assert {(r["filter"], r["generation"]) for r in partial["generations"]} >= {
    ("none", 0),
    ("none", 1),
    ("random", 0),
  }
  monkeypatch.setattr(recursive.pipeline, "train_model", real_one)

  # Resuming: earlier generations come from their checkpoints (no new metrics for them).
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    before = [json.loads(l) for l in f if l.strip()]
  res = main.run(cfg, wd)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    after = [json.loads(l) for l in f if l.strip()]
  assert after[: len(before)] == before
  new_models = {r["model"] for r in after[len(before) :]}
  assert new_models == {"random_gen1", "variance_gen1"}

  gens = res["generations"]
  assert len(gens) == 3 * 2
  for r in gens:
    assert r["num_train"] == 256 and r["num_drawn"] == 256 + 64
    # Recomputed from the generation's cached samples with the mixture rule.
    tag = "gen0" if r["generation"] == 0 else f"{r['filter']}_gen{r['generation']}"
    with np.load(os.path.join(wd, f"samples_{tag}.npz")) as z:
      drawn = z["samples"]
    mix = recursive.GridKind(cfg).mixture
    hal = recursive.hallucination.mixture_hallucinations(drawn, mix.means, mix.std, 4.0)
    assert r["hallucination_rate"] == float(hal.mean())
    per_mode, kept = np.array(r["in_support_per_mode"]), np.array(r["in_support_per_mode_kept"])
    assert per_mode.shape == kept.shape == (25,) and np.all(kept <= per_mode)
    assert per_mode.sum() == round((1 - r["hallucination_rate"]) * r["num_drawn"])
    assert kept.sum() == round((1 - r["hallucination_rate_kept"]) * r["num_train"])
    assert r["modes_hit"] == np.count_nonzero(per_mode)
  figs = os.listdir(os.path.join(wd, "figures"))
  assert "recursive_curves.png" in figs and "samples_variance_gen1.png" in figs

  # A rerun on the finished workdir recomputes the measurements from the cached samples;
  # stopped part-way, it leaves every record of the finished run in results.json.
  real_filter = recursive.hallucination.filter_indices
  seen = {"n": 0}

  def stop_second(*a, **kw):
    seen["n"] += 1
    if seen["n"] == 2:
      raise KeyboardInterrupt("simulated stop")
    return real_filter(*a, **kw)

  monkeypatch.setattr(recursive.hallucination, "filter_indices", stop_second)
  with pytest.raises(KeyboardInterrupt):
    main.run(cfg, wd)
  assert _results(wd)["generations"] == gens
  monkeypatch.setattr(recursive.hallucination, "filter_indices", real_filter)
  assert main.run(cfg, wd)["generations"] == gens


def test_grid_measure_counts_each_mode():
  cfg = recursive_grid25.get_config("tiny")
  kind = recursive.GridKind(cfg)
  means = kind.mixture.means
  # 4 samples on every mode but the centre, plus 10 points halfway between two modes.
  on_modes = np.repeat(np.delete(means, 12, axis=0), 4, axis=0)
  between = np.repeat((means[:1] + means[1:2]) / 2, 10, axis=0)
  samples = np.concatenate([on_modes, between])
  kept_idx = np.arange(48)  # the first 48 on-mode samples: modes 0..11 of the 24 covered
  m = kind.measure(samples, np.zeros(len(samples)), kept_idx)
  assert m["hallucination_rate"] == pytest.approx(10 / 106)
  assert m["hallucination_rate_kept"] == 0.0
  assert m["in_support_per_mode"][12] == 0 and m["modes_hit"] == 24
  assert sum(m["in_support_per_mode"]) == 96
  assert m["in_support_per_mode_kept"] == [4] * 12 + [0] * 13
  # 4 samples per mode is above 10% of the fair share 106 / 25: every mode but the centre.
  assert m["mode_coverage"] == pytest.approx(24 / 25)
