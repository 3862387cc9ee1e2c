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
