"""The detector and mitigation benchmark: its config checks and a `:tiny` end-to-end run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import hallbench as hb_config
from experiments import config_check, hallbench, main, registry
from mode_interp import detectors, hallucination
from mode_interp.errors import ConfigError, WorkdirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set(cfg, field, value):
  node = cfg
  parts = field.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value


@pytest.mark.parametrize("variant", ["", "grid25", "shapes", "tiny", "tiny_shapes"])
def test_variants_validate(variant):
  cfg = hb_config.get_config(variant)
  config_check.validate(cfg)
  assert registry.EXPERIMENTS[cfg.experiment].module == "experiments.hallbench"
  for name in cfg.hallbench.testbeds:
    t = hallbench.testbed_config(cfg, name)
    want = "shapes" if name == "shapes" else "gaussian"
    assert t.experiment == want and t.data.name == name
  # The testbeds' recipes are the experiments' own.
  from configs import common, shapes

  if variant == "":
    assert tuple(cfg.hallbench.testbeds) == ("gaussian1d", "grid25", "shapes")
    for name in ("gaussian1d", "grid25", "shapes"):
      want = shapes.get_config("") if name == "shapes" else common.gaussian_config(name, "")
      for s in hallbench.RECIPE:
        assert cfg.testbeds[name][s].to_dict() == want[s].to_dict()
    # SIMPLE SHAPES samples and scores as its own experiment does (chunks of U-Net images,
    # its detection window), with its own settings over the shared ones.
    t = hallbench.testbed_config(cfg, "shapes")
    assert t.sample.chunk_size == shapes.get_config("").sample.chunk_size
    assert t.detect.window == 10
    hs = hallbench.testbed_settings(cfg, "shapes")
    assert hs.mi.design == "gaussian" and hs.renoise.t == 1 and hs.iq.t_hi == 5
    assert hs.lid.draws == cfg.hallbench.lid.draws  # not set for shapes: the shared value


T = 1000  # the default testbeds' timesteps
BAD = [
  ("hallbench.detectors", ("flipd", "lidl"), "hallbench.detectors", ("'lidl'", "flipd", "oracle")),
  ("hallbench.detectors", (), "hallbench.detectors", ("non-empty",)),
  ("hallbench.mitigations", ("ddpm", "cfg"), "hallbench.mitigations", ("'cfg'", "iq", "filter")),
  ("hallbench.testbeds", ("grid9",), "hallbench.testbeds", ("'grid9'", "grid25")),
  ("hallbench.iq.t_hi", T, "hallbench.iq.t_hi", ("999",)),
  ("hallbench.iq.t_lo", -1, "hallbench.iq.t_lo", (">= 0",)),
  ("hallbench.flipd.t0", T, "hallbench.flipd.t0", ("999",)),
  ("hallbench.renoise.t", 5000, "hallbench.renoise.t", ("999",)),
  ("hallbench.oracle.t", -3, "hallbench.oracle.t", (">= 0",)),
  ("hallbench.lid.t", 1000, "hallbench.lid.t", ("999",)),
  (
    "hallbench.ddim.stochastic_last",
    (10, 1001),
    "hallbench.ddim.stochastic_last",
    ("1001", "[0, 1000]"),
  ),
  ("hallbench.ddim.steps", 2000, "hallbench.ddim.steps", ("1000",)),
  ("hallbench.mi.perturbations", 6, "hallbench.mi.perturbations", ("2 * D = 4", "gaussian")),
  ("hallbench.mi.design", "sobol", "hallbench.mi.design", ("gaussian", "orthogonal")),
  ("hallbench.mi.num_samples", 20_000, "hallbench.mi.num_samples", ("hallbench.num_samples",)),
  ("hallbench.filter.drop", (0.1, 1.0), "hallbench.filter.drop", ("(0, 1)",)),
  ("hallbench.iq.quantile", 1.0, "hallbench.iq.quantile", ("< 1",)),
  ("hallbench.iq.calibration", 50_000, "hallbench.iq.calibration", ("num_train",)),
  ("hallbench.renoise.draws", 1, "hallbench.renoise.draws", (">= 2",)),
  ("hallbench.vsm.rho", -0.1, "hallbench.vsm.rho", (">= 0",)),
  ("hallbench.vsm.num_samples", 20_000, "hallbench.vsm.num_samples", ("hallbench.num_samples",)),
  ("hallbench.mitigations", ("vsm", "vsn"), "hallbench.mitigations", ("'vsn'", "vsm")),
  ("sample.sampler", "ddim", "sample.sampler", ("'ddpm'",)),
  ("train.lr", 0.5, "train.lr", ("testbeds.gaussian1d.train.lr",)),
  ("testbeds.grid25.train.batch_size", 0, "testbeds.grid25.train.batch_size", (">= 1",)),
  ("testbeds.grid25.data.name", "gaussian1d", "testbeds.grid25.data.name", ("'grid25'",)),
  # SIMPLE SHAPES' own settings are checked against its own T (100) and named where set.
  ("testbeds.shapes.hallbench.iq.t_hi", 100, "testbeds.shapes.hallbench.iq.t_hi", ("99",)),
  (
    "testbeds.shapes.hallbench.mi.design",
    "orthogonal",
    "testbeds.shapes.hallbench.mi.perturbations",
    ("2 * D = 2048", "gaussian"),
  ),
  (
    "testbeds.shapes.hallbench.ddim.stochastic_last",
    (5, 101),
    "testbeds.shapes.hallbench.ddim.stochastic_last",
    ("[0, 100]",),
  ),
  (
    "testbeds.shapes.hallbench.renoise.tt",
    3,
    "testbeds.shapes.hallbench.renoise.tt",
    ("renoise.t", "not a field"),
  ),
  ("testbeds.shapes.workdir", "/nonexistent/wd", "testbeds.shapes.workdir", ("does not exist",)),
  ("testbeds.shapes.model.ch", 0, "testbeds.shapes.model.ch", (">= 1",)),
]


@pytest.mark.parametrize("field,value,named,words", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_fields_are_refused_in_one_line(field, value, named, words):
  cfg = hb_config.get_config()
  _set(cfg, field, value)
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  assert e.value.field == named, str(e.value)
  msg = str(e.value)
  assert msg.startswith(named + ":") and "\n" not in msg
  for w in words:
    assert w in msg, (w, msg)


def test_iq_window_must_not_be_empty():
  cfg = hb_config.get_config()
  cfg.hallbench.iq.t_lo, cfg.hallbench.iq.t_hi = 40, 30
  with pytest.raises(ConfigError, match="hallbench.iq.t_hi: must be in \\[hallbench.iq.t_lo=40"):
    config_check.validate(cfg)


def test_cli_refuses_an_unknown_detector_before_any_work(tmp_path):
  wd = tmp_path / "wd"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/hallbench.py:tiny",
      "--config.hallbench.detectors=('flipd','magic')",
      f"--workdir={wd}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "hallbench.detectors" in lines[0] and "'magic'" in lines[0]
  assert "Traceback" not in proc.stderr
  assert not wd.exists() or not any(wd.iterdir())


# -- the :tiny run ------------------------------------------------------------------------


def _read(wd, name):
  with open(os.path.join(wd, name)) as f:
    return json.load(f)


def _lines(wd, name):
  with open(os.path.join(wd, name)) as f:
    return f.read().splitlines()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("hallbench") / "run")
  res = main.run(hb_config.get_config("tiny"), wd, config_name="configs/hallbench.py:tiny")
  return wd, res


@pytest.mark.e2e
def test_tiny_run_writes_the_workdir_contract_and_the_tables(tiny_run):
  wd, res = tiny_run
  cfg = hb_config.get_config("tiny")
  for f in ("config.json", "metrics.jsonl", "results.json", "figures/hallbench_gaussian1d.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  assert os.path.isdir(os.path.join(wd, "checkpoints", "gaussian1d"))
  recs = [json.loads(l) for l in _lines(wd, "metrics.jsonl")]
  # The testbed's model, and VSM's two learned-variance models (rho = 0 and the config's).
  models = {"gaussian1d", "gaussian1d_vsm_rho0", "gaussian1d_vsm_rho0.1"}
  assert recs and {r["model"] for r in recs} == models
  for m in models:
    assert os.path.isdir(os.path.join(wd, "checkpoints", m))
    steps = [r["step"] for r in recs if r["model"] == m]
    assert max(steps) == cfg.testbeds.gaussian1d.train.steps
  assert all("vb" in r and "smooth" in r for r in recs if r["model"] != "gaussian1d")
  on_disk = _read(wd, "results.json")
  t = on_disk["tables"]["gaussian1d"]
  assert [r[0] for r in t["detectors_ddpm"]["rows"]] == [
    n for n in detectors.NAMES if n != "manifold_instability"
  ] + ["study_best"]
  # The study's best score is one of its candidates, chosen on the selection half.
  chosen = on_disk["testbeds"]["gaussian1d"]["study_best"]
  assert chosen["candidates"] > 10 and chosen["name"].startswith(("x0|", "eps|"))
  assert [r[0] for r in t["detectors_ddim"]["rows"]] == list(detectors.NAMES)
  methods = [r[0] for r in t["mitigations"]["rows"]]
  assert methods == ["ddpm", "filter_0.1", "ddim", "ddim_k5", "iq", "vsm_rho0", "vsm"]
  assert t["mitigations"]["columns"] == hallbench.mitigation_columns()
  # Each detector row carries its AUROC interval, operating points and cost.
  for row in on_disk["testbeds"]["gaussian1d"]["detection"]["ddim"]["rows"]:
    a = row["held_out"]
    assert a["auroc"] is None or a["ci95"][0] <= a["auroc"] <= a["ci95"][1]
    assert row["network_evaluations_per_sample"] >= 0
  mi_row = on_disk["testbeds"]["gaussian1d"]["detection"]["ddim"]["rows"][1]
  assert mi_row["network_evaluations_per_sample"] == 4 * cfg.diffusion.timesteps
  assert on_disk["testbeds"]["gaussian1d"]["settings"]["t0_flipd"] == cfg.hallbench.flipd.t0


@pytest.mark.e2e
def test_tiny_run_measures_the_cached_samples(tiny_run):
  """The plain rate and the filter are recomputed from the DDPM cache with the rule; the
  DDIM cache holds the starting noise's deterministic images (same as DDPM's first step)."""
  wd, res = tiny_run
  from mode_interp.data import gaussians

  mix = gaussians.make_mixture("gaussian1d")
  with np.load(os.path.join(wd, "gaussian1d_ddpm.npz")) as z:
    x, tv = z["samples"], z["traj_variance"]
  hal = hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0)
  rows = {r["method"]: r for r in res["testbeds"]["gaussian1d"]["mitigation"]["rows"]}
  assert rows["ddpm"]["hallucination"]["count"] == int(hal.sum())
  keep = hallucination.filter_indices(int(round(len(x) * 0.9)), "variance", traj_variance=tv)
  assert rows["filter_0.1"]["hallucination"]["count"] == int(hal[keep].sum())
  assert rows["filter_0.1"]["network_evaluations_per_sample"] == pytest.approx(
    30 * len(x) / len(keep)
  )
  # VSM and its baseline: their own caches, measured by the same rule, beside plain DDPM
  # over the same starting noise.
  for method, tag in (("vsm_rho0", "vsm_rho0"), ("vsm", "vsm_rho0.1")):
    with np.load(os.path.join(wd, f"gaussian1d_{tag}.npz")) as z:
      xv = z["samples"]
    r = rows[method]
    assert len(xv) == r["num_samples"] == 128
    assert r["hallucination"]["count"] == int(
      hallucination.mixture_hallucinations(xv, mix.means, mix.std, 4.0).sum()
    )
    assert r["paired_baselines"]["ddpm"]["count"] == int(hal[:128].sum())
  assert rows["vsm"]["rho"] == 0.1 and rows["vsm_rho0"]["rho"] == 0.0
  # The oracle on the DDPM set, recomputed.
  from mode_interp import diffusion

  s = diffusion.make_schedule("linear", 30, 0.001, 0.2)
  ora = detectors.oracle_out_of_band(
    x, mix.means, mix.std, float(s.sqrt_alphas_bar[0]), float(s.sqrt_one_minus_alphas_bar[0])
  )
  row = [
    r for r in res["testbeds"]["gaussian1d"]["detection"]["ddpm"]["rows"] if r["method"] == "oracle"
  ][0]
  from mode_interp import trajectory_scores

  sel = trajectory_scores.split_halves(len(x), 0)
  assert row["held_out"]["auroc"] == pytest.approx(
    trajectory_scores.auroc_delong(ora[~sel], hal[~sel])["auroc"]
  )
  # The study's best: the study cache's column with the best selection-half AUROC, reported
  # on the held-out half (the study drew the DDPM set's samples).
  with np.load(os.path.join(wd, "gaussian1d_study.npz")) as z:
    np.testing.assert_allclose(z["samples"], x, rtol=1e-4, atol=1e-4)
    sc = z["scores"]
  best, _ = trajectory_scores.select_best(list(range(sc.shape[1])), sc, hal, sel)
  row = [
    r
    for r in res["testbeds"]["gaussian1d"]["detection"]["ddpm"]["rows"]
    if r["method"] == "study_best"
  ][0]
  assert row["held_out"]["auroc"] == pytest.approx(
    trajectory_scores.auroc_delong(sc[~sel, best], hal[~sel])["auroc"]
  )


@pytest.mark.e2e
def test_tiny_rerun_resumes_without_training_or_sampling_again(tiny_run):
  wd, res = tiny_run
  metrics = _lines(wd, "metrics.jsonl")
  caches = {
    f: os.path.getmtime(os.path.join(wd, f))
    for f in os.listdir(wd)
    if f.endswith(".npz") and "_scores_" not in f
  }  # sample caches, thresholds
  again = main.run(hb_config.get_config("tiny"), wd, config_name="configs/hallbench.py:tiny")
  assert _lines(wd, "metrics.jsonl") == metrics  # no training step taken
  for f, m in caches.items():
    assert os.path.getmtime(os.path.join(wd, f)) == m, f  # nothing drawn again
  assert again["tables"] == res["tables"]
  # A model-defining change under the checkpoint is refused before any work.
  cfg = hb_config.get_config("tiny")
  cfg.testbeds.gaussian1d.train.lr = 5e-3
  cfg.train.lr = 5e-3
  with pytest.raises(WorkdirError, match="train.lr: 0.001 -> 0.005"):
    main.run(cfg, wd)
  assert _read(wd, "results.json")["tables"] == res["tables"]
  # The testbed's own recipe record refuses it too (for a testbed after the first, the only
  # guard: the top-level sections mirror the first testbed alone).
  from mode_interp.workdir import Workdir

  with pytest.raises(WorkdirError, match="testbeds.gaussian1d.train.lr: 0.001 -> 0.005"):
    hallbench.check_recipe(Workdir(wd), "gaussian1d", hallbench.testbed_config(cfg, "gaussian1d"))


@pytest.mark.e2e
def test_report_rows_cover_every_method(tiny_run):
  wd, res = tiny_run
  rows = hallbench.report_rows(res, None)
  keys = {r.key for r in rows}
  assert "testbeds.gaussian1d.detection.ddim.manifold_instability.auroc" in keys
  assert "testbeds.gaussian1d.mitigation.iq.rate" in keys


# -- SIMPLE SHAPES ------------------------------------------------------------------------


def _shapes_testbed(tmp_path, cfg=None):
  from mode_interp.workdir import Workdir

  cfg = cfg or hb_config.get_config("tiny_shapes")
  tb = hallbench.make_testbed(cfg, "shapes", Workdir(str(tmp_path / "wd")), None)
  tb.train_data = tb.training_data()
  return tb


def test_shapes_measures_read_the_checker_and_the_nearest_training_image(tmp_path):
  """On SIMPLE SHAPES a mitigation's output is measured by the checker (a hallucination is
  anything not in support; two squares in the square column count as two in one column),
  its distance to the nearest training image (zero for a training image itself) and the
  column patterns of its in-support images."""
  from mode_interp.data import shapes as shapes_data

  tb = _shapes_testbed(tmp_path)
  assert tb.kind == "shapes" and not tb.has_oracle and tb.shape == (32, 32, 1)
  train = tb.train_data
  row = tb.measure("train", train, 0, 0)
  verdicts = shapes_data.check(train[..., 0], scale=0.5).verdicts
  assert row["in_support"]["count"] == int((verdicts == "in_support").sum()) > 0
  assert row["distance_to_data"]["mean"] == pytest.approx(0.0, abs=1e-3)
  # The tiny training set shows every pattern of occupied columns (each of three shapes
  # present with probability 1/2, the empty canvas aside).
  assert row["modes_covered"] == 7 == row["num_modes"]

  # Two squares in the square column (half scale: square of side 3, in column 1).
  g = shapes_data.get_geometry(0.5)
  img = np.zeros((32, 32), np.uint8)
  x0 = g.column_edges[1] + g.shapes[1].x_range[0]
  side = g.shapes[1].size + 1
  for y in (2, 20):
    img[y : y + side, x0 : x0 + side] = 255
  two = shapes_data.to_model_input(img[None])
  bad = np.full_like(two, np.nan)
  r2 = tb.measure("two", np.concatenate([two, two, bad]), 0, 0)
  assert r2["counts"]["multiple_in_column"] == 2 and r2["non_finite"]["count"] == 1
  assert r2["two_in_one_column"]["rate"] == 1.0 == r2["hallucination"]["rate"]
  assert r2["modes_covered"] == 0

  # The distance is the brute-force RMS distance to the nearest training image.
  x = np.clip(train[:5] + 0.3 * np.random.default_rng(0).normal(size=train[:5].shape), -1, 1)
  got = tb.nearest_training_distance(x)
  flat_t = train.reshape(len(train), -1).astype(np.float64)
  flat_x = x.reshape(len(x), -1)
  want = np.sqrt(((flat_x[:, None] - flat_t[None]) ** 2).mean(-1).min(1))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.e2e
def test_shapes_testbed_runs_from_a_trained_workdir(shapes_tiny_run, tmp_path):
  """The SIMPLE SHAPES testbed reads a trained configs/shapes.py:tiny workdir (its
  checkpoint, never written) instead of training: every detector but the oracle (left out,
  with the reason) on all hallucinations and on two-in-one-column vs in support, every
  mitigation with the checker's counts of its cached samples, the Markdown tables."""
  from mode_interp.data import shapes as shapes_data

  cfg = hb_config.get_config("tiny_shapes")
  cfg.testbeds.shapes.workdir = shapes_tiny_run
  # The U-Net's second-order IQ step and the DDIM-k sets are the Gaussian runs' to test: here
  # their compilations would double the test's time.
  cfg.testbeds.shapes.hallbench.mitigations = ("ddpm", "filter", "ddim")
  before = sorted(os.listdir(os.path.join(shapes_tiny_run, "checkpoints")))
  wd = str(tmp_path / "bench")
  res = main.run(cfg, wd, config_name="configs/hallbench.py:tiny_shapes")
  t = res["testbeds"]["shapes"]
  assert t["train"]["from_workdir"] == os.path.abspath(shapes_tiny_run)
  assert not os.path.exists(os.path.join(wd, "checkpoints", "shapes"))  # nothing trained here
  assert sorted(os.listdir(os.path.join(shapes_tiny_run, "checkpoints"))) == before
  assert set(t["omitted_detectors"]) == {"oracle"}
  assert set(t["detection"]) == {"ddpm", "ddpm_two_in_one", "ddim", "ddim_two_in_one"}
  methods = [r["method"] for r in t["detection"]["ddim"]["rows"]]
  assert methods == ["trajectory_variance", "manifold_instability", "lid_loss", "flipd", "renoise"]
  rows = {r["method"]: r for r in t["mitigation"]["rows"]}
  assert set(rows) == {"ddpm", "filter_0.1", "ddim"}
  with np.load(os.path.join(wd, "shapes_ddpm.npz")) as z:
    x = z["samples"]
  counts = shapes_data.count_verdicts(shapes_data.check(np.clip(x, -1, 1), scale=0.5).verdicts)
  assert rows["ddpm"]["counts"] == counts and rows["ddpm"]["num_samples"] == len(x) == 32
  two = t["detection"]["ddpm_two_in_one"]
  assert two["num_samples"] == counts["in_support"] + counts["multiple_in_column"]
  assert two["num_hallucinations"] == counts["multiple_in_column"]
  assert res["omitted_testbeds"]["mnist"]
  md = hallbench.render_markdown(res)
  assert "two in one column vs in support" in md and "RMS distance to nearest training image" in md
  assert "not run on shapes" in md and "mnist: not a testbed here" in md
  assert os.path.getsize(os.path.join(wd, "figures", "hallbench_shapes.png")) > 1000
  # The recorded source is part of the workdir: another trained model is refused.
  cfg.testbeds.shapes.workdir = ""
  with pytest.raises(WorkdirError, match="testbeds.shapes.workdir"):
    main.run(cfg, wd, config_name="configs/hallbench.py:tiny_shapes")
