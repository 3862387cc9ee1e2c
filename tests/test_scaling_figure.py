"""The detection-against-compute figure from finished points, with an outside point added."""

import json
import os
import shutil

import pytest

from configs import shapes as shapes_config
from experiments import scaling
from mode_interp.errors import ConfigError

ROWS = "reports/latest/shapes_scaling"
STUDY = "reports/latest/shapes/study/results.json"


def test_collect_rows_reads_the_committed_points():
  rows = scaling.collect_rows([ROWS])
  assert rows and all(r["model"] and r["step"] > 0 for r in rows)
  steps = [
    r["step"] for r in rows if (r["model"], r["seed"]) == (rows[0]["model"], rows[0]["seed"])
  ]
  assert steps == sorted(steps)
  with pytest.raises(ConfigError, match="--points"):
    scaling.collect_rows([os.path.dirname(STUDY) + "/figures"])


def test_external_row_joins_the_figure(tmp_path):
  w = tmp_path / "gpu_run"
  os.makedirs(w / "study")
  cfg = shapes_config.get_config("tiny")
  with open(w / "config.json", "w") as f:
    json.dump(cfg.to_dict(), f)
  shutil.copy(STUDY, w / "study" / "results.json")
  with open(STUDY) as f:
    study = json.load(f)
  row = scaling.external_row(str(w), "gpu")
  assert (row["model"], row["step"]) == ("gpu", study["checkpoint_step"])
  assert row["train_flops"] == pytest.approx(row["flops_per_step"] * row["step"])
  assert row["num_samples"] == sum(study["counts"].values())
  assert row["scores"]["paper"]["auroc"] == study["headline"]["paper"]["held_out"]["auroc"]
  # Not a SIMPLE SHAPES workdir, or not studied: refused, naming the flag.
  cfg.experiment = "gaussian"
  with open(w / "config.json", "w") as f:
    json.dump(cfg.to_dict(), f)
  with pytest.raises(ConfigError, match="--add_study"):
    scaling.external_row(str(w), "gpu")
  cfg.experiment = "shapes"
  with open(w / "config.json", "w") as f:
    json.dump(cfg.to_dict(), f)
  os.remove(w / "study" / "results.json")
  with pytest.raises(ConfigError, match="experiments.detect"):
    scaling.external_row(str(w), "gpu")


def _row(model, seed, step, tflop, rate, auroc):
  return {
    "model": model,
    "seed": seed,
    "step": step,
    "train_flops": tflop * 1e12,
    "multiple_in_column": {"rate": rate},
    "scores": {
      "paper": {
        "multiple_in_column_auroc": auroc,
        "multiple_in_column_auroc_ci95": [auroc - 0.05, auroc + 0.05],
      }
    },
  }


def test_fits_tell_a_predictor_that_carries_to_other_models_from_one_that_does_not():
  # AUROC is a line in the two-in-one rate for every model; a wider model spends four times
  # the compute per step, so against compute it sits off the default's line.
  def auroc(rate):
    return 0.45 + 0.9 * rate

  table = [
    _row("default", 0, s, 5.0 * s / 250, r, auroc(r))
    for s, r in ((250, 0.45), (500, 0.3), (1000, 0.18), (2000, 0.1))
  ]
  table += [_row("wide", 0, s, 20.0 * s / 250, r, auroc(r)) for s, r in ((250, 0.42), (500, 0.25))]
  table.append(_row("default", 1, 1000, 20.0, 0.15, auroc(0.15)))
  out = scaling.fits(table)
  by_rate, by_compute = out["multiple_in_column_rate"], out["log2_train_tflop"]
  assert by_rate["fitted_to"] == "default seed 0" and by_rate["points"] == 4
  assert by_rate["slope"] == pytest.approx(0.9) and by_rate["intercept"] == pytest.approx(0.45)
  assert by_rate["others_rms_residual"] == pytest.approx(0.0, abs=1e-9)
  assert all(o["within_interval"] for o in by_rate["others"])
  assert len(by_rate["others"]) == 3
  wide = [o for o in by_compute["others"] if o["model"] == "wide"]
  assert all(o["residual"] > 0.05 and not o["within_interval"] for o in wide)
  # Too few rows of the reference model: no fit rather than a line through one point.
  assert scaling.fits(table[3:]) == {}
  assert scaling.fits(table, model="attn16") == {}
