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
  cfg.data.num_train = 512
  cfg.train.batch_size = 128
  cfg.train.steps = steps
  cfg.train.warmup_steps = 0
  cfg.train.log_every = 10
  cfg.train.ckpt_every = 10
  cfg.diffusion.timesteps = 30
  cfg.sample.num_samples = 256
  cfg.sample.chunk_size = 128
  cfg.model.width = 32
  cfg.detect.window = 5
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
    assert 0.0 <= on_disk[key] <= 1.0
    assert on_disk[key] == res[key]
  # The exact score barely hallucinates, even with T = 30 and 256 samples.
  assert on_disk["true_score_hallucination_rate"] < 0.05
  det = on_disk["detection"]
  for key in ("auroc", "threshold", "in_support_retained", "hallucinations_removed"):
    assert key in det
  if det["auroc"] is not None:  # both classes present
    assert 0.0 <= det["auroc"] <= 1.0 and det["in_support_retained"] >= 0.96
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
  assert 0.0 <= _read(wd, "results.json")["hallucination_rate"] <= 1.0
