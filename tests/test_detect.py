"""The detection study (experiments/detect.py, mode_interp/trajectory_scores.py): scores,
statistics, honest selection, and the command end to end on a tiny SIMPLE SHAPES workdir."""

import json
import os
import subprocess
import sys
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn import metrics as skm

from mode_interp import samplers
from mode_interp import trajectory_scores as ts_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- windows, reductions, statistics --------------------------------------------------------


def test_paper_windows_map_proportionally():
  assert ts_lib.map_paper_window(20, 35, 1000) == (20, 35)  # identity at T = 1000
  assert ts_lib.map_paper_window(20, 35, 100) == (2, 3)
  assert ts_lib.map_paper_window(10, 20, 100) == (1, 2)
  assert ts_lib.map_paper_window(5, 15, 100) == (0, 1)
  assert ts_lib.map_paper_window(50, 80, 100) == (5, 8)
  assert ts_lib.map_paper_window(20, 35, 20) == (0, 0)
  ts = samplers.reverse_timesteps("ddpm", 100)
  ws = ts_lib.parse_windows("last10,p20-35,t20-35,p0-99", ts)
  assert [(w.name, w.t_lo, w.t_hi) for w in ws] == [
    ("last10", 0, 9),
    ("p20-35", 2, 3),
    ("t20-35", 20, 35),
  ]
  assert ws[0].aliases == ("p0-99",)  # merged: same range
  ddim = samplers.reverse_timesteps("ddim", 100, 10)
  assert ts_lib.parse_windows("last2", ddim)[0].t_hi == int(ddim[-2])


@pytest.mark.parametrize(
  "spec,match",
  [
    ("foo", "'foo' is not allowed"),
    ("", "empty"),
    ("last0", "'last0'"),
    ("p30-20", "'p30-20'"),
    ("t5-100", "'t5-100'"),
    ("p0-1000", "'p0-1000'"),
  ],
)
def test_bad_windows_name_the_flag_and_the_forms(spec, match):
  with pytest.raises(ValueError, match=f"^--windows: .*{match}") as e:
    ts_lib.parse_windows(spec, samplers.reverse_timesteps("ddpm", 100))
  assert "\n" not in str(e.value)
  if spec:
    assert "lastK" in str(e.value) and "pA-B" in str(e.value)


def test_reductions_parse_and_match_numpy():
  assert ts_lib.parse_reductions("mean,max", image=False) == ("mean", "max")
  with pytest.raises(ValueError, match="^--reductions: 'median' .*mean, max, top16"):
    ts_lib.parse_reductions("mean,median", image=True)
  with pytest.raises(ValueError, match="'top16' .*non-image"):
    ts_lib.parse_reductions("top16", image=False)
  rng = np.random.default_rng(0)
  v = rng.random((3, 2, 16, 16, 1)).astype(np.float32)
  got = np.asarray(ts_lib.reduce_maps(jnp.asarray(v), ts_lib.REDUCTIONS))
  assert got.shape == (3, 2, 5)
  flat = v.reshape(3, 2, -1)
  np.testing.assert_allclose(got[..., 0], flat.mean(-1), rtol=1e-5)
  np.testing.assert_allclose(got[..., 1], flat.max(-1), rtol=1e-6)
  np.testing.assert_allclose(got[..., 2], -np.sort(-flat, -1)[..., :16].mean(-1), rtol=1e-5)
  np.testing.assert_allclose(got[..., 3], -np.sort(-flat, -1)[..., :64].mean(-1), rtol=1e-5)
  img = v[..., 0]
  pools = np.array(
    [
      [img[..., i : i + 8, j : j + 8].mean((-1, -2)) for i in range(0, 9, 4)]
      for j in range(0, 9, 4)
    ]
  )
  np.testing.assert_allclose(got[..., 4], pools.max((0, 1)), rtol=1e-5)


def test_delong_auroc_and_interval():
  rng = np.random.default_rng(1)
  y = rng.random(400) < 0.3
  s = rng.normal(size=400) + 0.8 * y
  s[:20] = np.round(s[:20])  # ties
  r = ts_lib.auroc_delong(s, y)
  assert r["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  lo, hi = r["ci95"]
  assert lo < r["auroc"] < hi and 0.05 < hi - lo < 0.25
  # The interval covers a bootstrap's spread.
  boot = []
  for _ in range(200):
    i = rng.integers(0, 400, 400)
    boot.append(skm.roc_auc_score(y[i], s[i]))
  assert abs((hi - lo) / (2 * 1.96) - np.std(boot)) < 0.01
  assert ts_lib.auroc_delong(s, np.zeros(400, bool))["auroc"] is None


def test_operating_points_with_wilson_intervals():
  rng = np.random.default_rng(2)
  hal = np.r_[np.ones(100, bool), np.zeros(400, bool)]
  s = np.r_[rng.normal(3, 1, 100), rng.normal(0, 1, 400)]
  r = ts_lib.evaluate_score(s, hal, 0.96, 0.95, threshold=1.5)
  assert r["kept_at_keep"]["rate"] >= 0.96
  rem = r["removed_at_keep"]
  assert rem["n"] == 100 and rem["count"] == round(rem["rate"] * 100)
  assert rem["ci95"][0] <= rem["rate"] <= rem["ci95"][1]
  assert r["removed_at_removal"]["rate"] >= 0.95
  assert r["fixed_threshold"]["removed"]["rate"] == pytest.approx(np.mean(s[:100] > 1.5))


# -- honest selection -----------------------------------------------------------------------


def _fake_plan(k):
  w = ts_lib.Window("last2", 0, 1)
  names = [f"x0|last2|r{i}" for i in range(k)]
  names[0], names[1] = "x0|last2|mean", "x0_u8|last2|mean"
  return types.SimpleNamespace(names=names, windows=[w], paper=names[0], reimpl=names[1])


def _cfg():
  c = ml_collections.ConfigDict()
  c.detect = ml_collections.ConfigDict(
    dict(window=2, keep_in_support=0.96, remove_hallucinations=0.95)
  )
  return c


def test_selection_reads_the_selection_half_only():
  from experiments import detect

  n, k = 400, 6
  rng = np.random.default_rng(0)
  sel = ts_lib.split_halves(n, seed=7)
  assert sel.sum() == n // 2 and not np.array_equal(sel, ts_lib.split_halves(n, seed=8))
  verdicts = np.where(rng.random(n) < 0.3, "multiple_in_column", "in_support")
  hal = verdicts != "in_support"
  scores = rng.normal(size=(n, k))
  # Score 3 separates well on the selection half; score 5 separates perfectly on the
  # held-out half only. Honest selection must pick 3.
  scores[sel, 3] += 1.0 * hal[sel]
  scores[~sel, 5] += 10.0 * hal[~sel]
  plan = _fake_plan(k)
  m = detect.measure(_cfg(), plan, scores, verdicts, 7)
  best, headline, halves = m.best, m.headline, m.halves
  np.testing.assert_array_equal(m.selection, sel)
  assert plan.names[best] == plan.names[3]
  assert headline["best"]["held_out"]["auroc"] < 0.75
  assert halves["selection"]["n"] + halves["held_out"]["n"] == n
  # Any change to the held-out half (scores and labels) leaves the choice unchanged.
  for seed in range(3):
    r = np.random.default_rng(seed + 10)
    s2, v2 = scores.copy(), verdicts.copy()
    s2[~sel] = r.normal(size=((~sel).sum(), k)) * 100
    s2[~sel, 0] += 1000 * hal[~sel]
    v2[~sel] = r.permutation(v2[~sel])
    assert detect.measure(_cfg(), plan, s2, v2, 7).best == best
  # ... while a change on the selection half can change it.
  s3 = scores.copy()
  s3[sel, 2] += 10.0 * hal[sel]
  assert detect.measure(_cfg(), plan, s3, verdicts, 7).best == 2


# -- the command end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_workdir(_shapes_tiny_original, tmp_path_factory):
  """A copy of the session's trained ``configs/shapes.py:tiny`` run (conftest), shared by
  this file's tests (the study's cache carries over from one to the next)."""
  import shutil

  wd = str(tmp_path_factory.mktemp("detect") / "run")
  shutil.copytree(_shapes_tiny_original, wd)
  return wd


def test_study_end_to_end_writes_its_files_and_resumes(tiny_workdir, monkeypatch):
  from experiments import detect

  calls = []
  real = detect.make_study_fn

  def counting(*a, **kw):
    fn = real(*a, **kw)

    def wrapped(*args):
      calls.append(1)
      return fn(*args)

    return wrapped

  monkeypatch.setattr(detect, "make_study_fn", counting)
  detect.run_study(tiny_workdir, num_samples=32)
  assert len(calls) == 2  # chunks of 16 (sample.chunk_size)
  res = detect.run_study(tiny_workdir, num_samples=64)
  assert len(calls) == 4  # continued from the 32 cached samples
  study = os.path.join(tiny_workdir, "study")
  for name in ("results.json", "study.md", "scores_cache.npz"):
    assert os.path.exists(os.path.join(study, name)), name
  with open(os.path.join(study, "results.json")) as f:
    disk = json.load(f)
  assert disk["num_samples"] == 64
  assert sum(disk["counts"].values()) == 64
  n_scores = len(disk["windows"]) * 3 * 5
  assert len(disk["scores"]) == n_scores
  assert {"best", "paper", "reimplementation"} <= set(disk["headline"])
  assert disk["headline"]["paper"]["name"] == "x0|last5|mean"  # tiny: detect.window = 5
  assert disk["headline"]["reimplementation"]["requested_window"] == "p20-35"
  # The family's paper score is the sampler's own trajectory variance, and the samples
  # are the main run's (same key, same indices).
  assert disk["consistency"]["paper_vs_sampler_max_rel_diff"] < 1e-5
  assert disk["consistency"]["main_run_max_abs_sample_diff"] == 0.0
  cache = np.load(os.path.join(study, "scores_cache.npz"))
  assert cache["scores"].shape == (64, n_scores)
  assert res["verdict"]


def test_study_metrics_and_figures_with_both_classes(tiny_workdir, monkeypatch):
  """A tiny model draws no in-support image: a stand-in checker (by image brightness) gives
  both classes, so every metric and figure is exercised on the cached scores."""
  from experiments import detect

  real = detect.data_spec

  def spec(cfg):
    shape, clip, image, _ = real(cfg)

    def label(x):
      m = x.reshape(len(x), -1).mean(1)
      return np.where(m > np.median(m), "multiple_in_column", "in_support")

    return shape, clip, image, label

  monkeypatch.setattr(detect, "data_spec", spec)
  res = detect.run_study(tiny_workdir, num_samples=64)
  assert res["timing"]["sampling_s_this_run"] < 1.0  # all from the cache
  h = res["headline"]
  for role in ("best", "paper", "reimplementation"):
    ho = h[role]["held_out"]
    assert ho["auroc"] is not None and len(ho["ci95"]) == 2
    assert ho["removed_at_keep"]["rate"] is not None
    assert ho["kept_at_removal"]["rate"] is not None
  figs = os.listdir(os.path.join(tiny_workdir, "study", "figures"))
  for name in (
    "hist_paper.png",
    "hist_best.png",
    "roc_headline.png",
    "roc_x0.png",
    "roc_x0_u8.png",
    "roc_eps.png",
    "best_kept_removed.png",
  ):
    assert name in figs, name
  md = open(os.path.join(tiny_workdir, "study", "study.md")).read()
  assert "| paper |" in md and "| best |" in md


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "experiments.detect", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_bad_workdir_and_flags_one_line(tmp_path, tiny_workdir):
  """Each refusal is one error naming the flag, before any work. The command prints it as one
  ``error:`` line (checked once, in a subprocess); the other cases call what it calls."""
  from experiments import detect
  from mode_interp.errors import ConfigError, WorkdirError

  missing = str(tmp_path / "nope")
  empty = tmp_path / "untrained"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(tiny_workdir, "config.json")).read())
  p = _cli(f"--workdir={tiny_workdir}", "--windows=last3,bogus")
  assert p.returncode != 0
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "--windows: 'bogus'" in errors[0], p.stderr[-2000:]
  assert "Traceback" not in p.stderr
  cases = [
    (dict(workdir=missing), "does not exist"),
    (dict(workdir=str(tmp_path)), "has no config.json"),
    (dict(workdir=str(empty)), "holds no checkpoint"),
    (dict(workdir=tiny_workdir, reductions="median"), "--reductions: 'median'"),
  ]
  for kwargs, msg in cases:
    with pytest.raises((detect.StudyError, WorkdirError, ConfigError)) as e:
      detect.run_study(**kwargs)
    assert msg in str(e.value) and "\n" not in str(e.value), (kwargs, str(e.value))
  assert not os.path.exists(missing)
  assert not os.path.exists(empty / "study")
