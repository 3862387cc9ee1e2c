"""Tiny end-to-end runs of the Gaussian-mixture experiment and the workdir contract."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import gaussian1d, grid25
from experiments import main
from mode_interp.errors import WorkdirError

pytestmark = pytest.mark.e2e


def _tiny(cfg, steps=30):
  """A config's sizes brought down to the ``:tiny`` variant's (train.steps = ``steps``)."""
  tiny = gaussian1d.get_config("tiny")
  for field in (
    "data.num_train",
    "train.batch_size",
    "train.warmup_steps",
    "train.log_every",
    "train.ckpt_every",
    "diffusion.timesteps",
    "sample.num_samples",
    "sample.chunk_size",
    "model.width",
    "detect.window",
  ):
    section, leaf = field.split(".")
    cfg[section][leaf] = tiny[section][leaf]
  cfg.train.steps = steps
  return cfg


def _metrics(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def _read(wd, name):
  with open(os.path.join(wd, name)) as f:
    return json.load(f)


def _ckpt_steps(wd):
  d = os.path.join(wd, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


@pytest.fixture(scope="module")
def run1d(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("g1d") / "run")
  res = main.run(_tiny(gaussian1d.get_config()), wd)
  return wd, res


def test_first_run_honours_the_workdir_contract(run1d):
  wd, res = run1d
  cfg = _read(wd, "config.json")
  assert cfg["data"]["name"] == "gaussian1d" and cfg["train"]["steps"] == 30
  assert cfg["model"]["width"] == 32

  recs = _metrics(wd)
  assert [r["step"] for r in recs] == [10, 20, 30]
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in recs)

  on_disk = _read(wd, "results.json")
  assert on_disk["num_samples"] == 256
  for key in ("hallucination_rate", "true_score_hallucination_rate"):
    assert on_disk[key] == res[key]
  # The exact score barely hallucinates, even with T = 30 and 256 samples.
  assert on_disk["true_score_hallucination_rate"] < 0.05
  # Every number is recomputed from the saved samples with the rule and the metric code:
  # the runner must have measured exactly these samples.
  from mode_interp import hallucination
  from mode_interp.data import gaussians

  with np.load(os.path.join(wd, "samples.npz")) as z:
    x, tv = z["samples"], z["traj_variance"]
  assert x.shape == (256, 1) and np.isfinite(x).all() and np.isfinite(tv).all()
  assert on_disk["non_finite"] == {"count": 0, "rate": 0.0}
  mix = gaussians.make_mixture("gaussian1d")
  hal = hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0)
  assert on_disk["hallucination_rate"] == float(hal.mean())
  # A 30-step model both hallucinates and lands on modes: both classes are present.
  assert 0 < hal.sum() < len(hal)
  det = on_disk["detection"]
  expected = hallucination.detection_metrics(tv, hal)
  for key in ("auroc", "threshold", "in_support_retained", "hallucinations_removed"):
    assert det[key] == pytest.approx(expected[key], rel=1e-12)
  assert det["in_support_retained"] >= 0.96
  assert on_disk["train"]["steps"] == 30

  figs = os.listdir(os.path.join(wd, "figures"))
  assert "histogram.png" in figs and all(f.endswith(".png") for f in figs)
  for f in figs:
    assert os.path.getsize(os.path.join(wd, "figures", f)) > 1000
  assert 30 in _ckpt_steps(wd)


def test_resume_continues_and_rerun_does_not_train(run1d, tmp_path):
  src, _ = run1d
  wd = str(tmp_path / "run")
  shutil.copytree(src, wd)
  first = _metrics(wd)

  res = main.run(_tiny(gaussian1d.get_config(), steps=50), wd)
  recs = _metrics(wd)
  steps = [r["step"] for r in recs]
  assert steps == [10, 20, 30, 40, 50]  # strictly increasing, no duplicates
  assert recs[:3] == first  # resumed at 30: the first run's records kept as they were
  assert _ckpt_steps(wd)[-1] == 50
  assert res["train"]["steps"] == 50
  assert _read(wd, "config.json")["train"]["steps"] == 50
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    before = f.read()
  with np.load(os.path.join(wd, "samples.npz")) as z:
    assert int(z["step"]) == 50  # resampled from the new checkpoint

  res2 = main.run(_tiny(gaussian1d.get_config(), steps=50), wd)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    assert f.read() == before  # no training, nothing appended
  assert _ckpt_steps(wd)[-1] == 50
  assert res2["hallucination_rate"] == res["hallucination_rate"]


def test_changing_a_frozen_field_is_refused(run1d, tmp_path):
  src, _ = run1d
  wd = str(tmp_path / "run")
  shutil.copytree(src, wd)
  cfg = _tiny(gaussian1d.get_config())
  cfg.model.width = 16
  with pytest.raises(WorkdirError, match="model.width"):
    main.run(cfg, wd)
  assert _read(wd, "config.json")["model"]["width"] == 32  # left as it was


def test_grid25_tiny_run(tmp_path):
  cfg = _tiny(grid25.get_config(), steps=20)
  cfg.sample.num_samples = 128
  cfg.plots.predictor_times = (1, 10)
  wd = str(tmp_path / "grid")
  res = main.run(cfg, wd)
  assert res["num_samples"] == 128 and res["num_modes"] == 25
  assert os.path.getsize(os.path.join(wd, "figures", "scatter.png")) > 1000
  from mode_interp import hallucination
  from mode_interp.data import gaussians

  with np.load(os.path.join(wd, "samples.npz")) as z:
    x = z["samples"]
  mix = gaussians.make_mixture("grid25")
  expected = hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0).mean()
  assert _read(wd, "results.json")["hallucination_rate"] == float(expected)


def _reference_metrics(experiment):
  path = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "references.json"
  )
  with open(path) as f:
    figures = json.load(f)["figures"]
  return sorted({f["metric"] for f in figures if f["experiment"] == experiment})


def test_every_reference_metric_is_in_a_real_results_json(run1d):
  """The report compares references.json's metrics with results.json: each must exist, as a
  number, in what a real run writes (not in a hand-built dict)."""
  from experiments import report

  wd, _ = run1d
  res = _read(wd, "results.json")
  metrics = _reference_metrics("gaussian")
  assert metrics
  for m in metrics:
    v = report.get(res, m)
    assert isinstance(v, (int, float)) and not isinstance(v, bool), (m, v)


def test_distance_and_imbalance_sweeps(tmp_path):
  """The paper's 1D distance axis and the imbalanced grid, each on two tiny points: rows
  per point with the exact-score control, and where the imbalanced grid's hallucinations
  lie (their counts add up to the hallucinations)."""
  cfg = _tiny(gaussian1d.get_config("distance"), steps=20)
  # T's default value on the T axis and distance 1 (the means as they are) are one config:
  # trained once, the second row repeats the first.
  cfg.sweep.timesteps = (cfg.diffusion.timesteps,)
  cfg.sweep.distance = (0.5, 1.0, 2.0)
  cfg.sweep.steps = 20
  cfg.sweep.num_samples = 256
  cfg.plots.predictor_times = (1, 10)
  wd = str(tmp_path / "distance")
  res = main.run(cfg, wd)
  first, near, same, far = res["sweep"]
  t_tag = f"sweep_timesteps_{cfg.diffusion.timesteps}"
  assert (same["field"], same["value"], same["same_as"]) == ("distance", 1.0, t_tag)
  assert same["wall_seconds"] == 0.0 and same["means"] == [1.0, 2.0, 3.0]
  assert same["hallucination_rate"] == first["hallucination_rate"] and "same_as" not in first
  rows = [near, far]
  assert [(r["field"], r["value"]) for r in rows] == [("distance", 0.5), ("distance", 2.0)]
  assert rows[0]["means"] == [1.5, 2.0, 2.5] and rows[1]["means"] == [0.0, 2.0, 4.0]
  for r in rows:
    assert r["true_score_hallucination_rate"] is not None and len(r["true_score_ci95"]) == 2
  assert os.path.getsize(os.path.join(wd, "figures", "sweep.png")) > 1000
  with open(os.path.join(wd, "sweep_table.json")) as f:  # the rows as they arrived
    assert [r["value"] for r in json.load(f)] == [cfg.diffusion.timesteps, 0.5, 1.0, 2.0]
  with open(os.path.join(wd, "sweep_seconds.json")) as f:  # each point's wall time
    spent = json.load(f)
  assert set(spent) == {t_tag, "sweep_distance_0.5", "sweep_distance_2.0"}
  assert [r["wall_seconds"] for r in (first, near, far)] == [
    spent[t_tag]["seconds"],
    spent["sweep_distance_0.5"]["seconds"],
    spent["sweep_distance_2.0"]["seconds"],
  ]
  assert all(e["done"] and e["seconds"] > 0 for e in spent.values())
  # A rerun finds every point done: their wall times stay those of the runs that made them.
  again = main.run(cfg, wd)["sweep"]
  assert [b["wall_seconds"] for b in again] == [a["wall_seconds"] for a in res["sweep"]]
  assert [b["hallucination_rate"] for b in again] == [a["hallucination_rate"] for a in res["sweep"]]
  # A budget that would train the finished points on is refused before anything is written;
  # a point dropped from an axis is not a conflict.
  from mode_interp.errors import WorkdirError

  longer = cfg.copy_and_resolve_references()
  longer.sweep.steps = 40
  with open(os.path.join(wd, "config.json")) as f:
    before = f.read()
  with pytest.raises(WorkdirError, match=r"sweep_distance_0.5 \(train.steps: 20 -> 40\)"):
    main.run(longer, wd)
  with open(os.path.join(wd, "config.json")) as f:
    assert f.read() == before
  from experiments import gaussian
  from mode_interp.workdir import Workdir

  fewer = cfg.copy_and_resolve_references()
  fewer.sweep.distance = (0.5,)
  gaussian.check_resume(fewer, json.loads(before), Workdir(wd))

  cfg = _tiny(grid25.get_config("imbalance"), steps=20)
  cfg.sweep.imbalance = (1.0, 10.0)
  cfg.sweep.steps = 20
  cfg.sweep.num_samples = 256
  cfg.plots.predictor_times = (1, 10)
  res = main.run(cfg, str(tmp_path / "imbalance"))
  equal, heavy = res["sweep"]
  assert "hallucinations_between" not in equal
  between = heavy["hallucinations_between"]
  with np.load(os.path.join(tmp_path, "imbalance", "sweep_imbalance_10.0_samples.npz")) as z:
    x = z["samples"]
  from mode_interp import hallucination
  from mode_interp.data import gaussians

  mix = gaussians.make_mixture("grid25", imbalance=10.0)
  n_hal = int(hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0).sum())
  assert between["heavy-heavy"] + between["heavy-light"] + between["light-light"] == n_hal
  assert heavy["weight_share_heavy"] == pytest.approx(130 / 142)


def test_sweep_trend_reads_the_intervals():
  from experiments import gaussian

  def row(v, lo, hi):
    return {"value": v, "hallucination_rate": (lo + hi) / 2, "ci95": [lo, hi]}

  falling = [row(1, 0.030, 0.032), row(2, 0.006, 0.007), row(3, 0.0062, 0.0068)]
  t = gaussian.sweep_trend(falling)
  assert (t["direction"], t["monotone"], t["steps"]) == ("falls", True, ["down", "flat"])
  t = gaussian.sweep_trend([row(1, 0.01, 0.02), row(2, 0.03, 0.04), row(3, 0.05, 0.06)])
  assert (t["direction"], t["monotone"]) == ("rises", True)
  t = gaussian.sweep_trend([row(1, 0.01, 0.02), row(2, 0.03, 0.04), row(3, 0.012, 0.018)])
  assert (t["direction"], t["monotone"]) == ("no clear trend", False)
  t = gaussian.sweep_trend([row(1, 0.05, 0.06), row(2, 0.07, 0.08), row(3, 0.01, 0.02)])
  assert (t["direction"], t["monotone"]) == ("falls", False)
  assert gaussian.sweep_trend(falling[:1])["direction"] == "too few points"
