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


@pytest.mark.parametrize("variant", ["", "grid25", "tiny"])
def test_variants_validate(variant):
  cfg = hb_config.get_config(variant)
  config_check.validate(cfg)
  assert registry.EXPERIMENTS[cfg.experiment].module == "experiments.hallbench"
  for name in cfg.hallbench.testbeds:
    t = hallbench.testbed_config(cfg, name)
    assert t.experiment == "gaussian" and t.data.name == name
  # The testbeds' recipes are the Gaussian experiments' own.
  from configs import common

  if variant == "":
    for name in ("gaussian1d", "grid25"):
      want = common.gaussian_config(name, "")
      for s in hallbench.RECIPE:
        assert cfg.testbeds[name][s].to_dict() == want[s].to_dict()


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
  ("sample.sampler", "ddim", "sample.sampler", ("'ddpm'",)),
  ("train.lr", 0.5, "train.lr", ("testbeds.gaussian1d.train.lr",)),
  ("testbeds.grid25.train.batch_size", 0, "testbeds.grid25.train.batch_size", (">= 1",)),
  ("testbeds.grid25.data.name", "gaussian1d", "testbeds.grid25.data.name", ("'grid25'",)),
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
  assert recs and all(r["model"] == "gaussian1d" for r in recs)
  assert max(r["step"] for r in recs) == cfg.testbeds.gaussian1d.train.steps
  on_disk = _read(wd, "results.json")
  t = on_disk["tables"]["gaussian1d"]
  assert [r[0] for r in t["detectors_ddpm"]["rows"]] == [
    n for n in detectors.NAMES if n != "manifold_instability"
  ]
  assert [r[0] for r in t["detectors_ddim"]["rows"]] == list(detectors.NAMES)
  methods = [r[0] for r in t["mitigations"]["rows"]]
  assert methods == ["ddpm", "filter_0.1", "ddim", "ddim_k5", "iq"]
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
