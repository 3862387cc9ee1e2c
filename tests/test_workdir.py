"""The workdir's config check and metric writer."""

import json

import pytest

from mode_interp.errors import WorkdirError
from mode_interp.workdir import Workdir


def test_frozen_fields_refused_new_and_free_fields_allowed(tmp_path):
  wd = Workdir(str(tmp_path))
  base = {"experiment": "gaussian", "model": {"width": 128}, "train": {"steps": 10, "lr": 1e-3}}
  assert wd.write_config(base) == []
  # More steps is a resume, not a new experiment.
  changes = wd.write_config({**base, "train": {"steps": 20, "lr": 1e-3}})
  assert changes == [("train.steps", 10, 20)]
  # A field that a newer version added is not a conflict.
  wd.write_config({**base, "train": {"steps": 20, "lr": 1e-3, "lr_schedule": "constant"}})
  with pytest.raises(WorkdirError, match="model.width"):
    wd.write_config({**base, "model": {"width": 64}})
  with pytest.raises(WorkdirError, match="train.lr_schedule"):
    wd.write_config({**base, "train": {"steps": 20, "lr": 1e-3, "lr_schedule": "cosine"}})
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["train"]["lr_schedule"] == "constant"


def test_metric_writer_drops_records_past_the_checkpoint_of_its_model_only(tmp_path):
  wd = Workdir(str(tmp_path))
  w = wd.metric_writer(model="a")
  for s in (10, 20, 30):
    w.write(s, loss=1.0 / s)
  wd.metric_writer(model="b").write(10, loss=0.5)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "model": "a", "lo')   # a line cut short by a crash
  wd.metric_writer(resume_step=20, model="a")
  with open(tmp_path / "metrics.jsonl") as f:
    recs = [json.loads(l) for l in f]
  assert [(r["model"], r["step"]) for r in recs] == [("a", 10), ("a", 20), ("b", 10)]


def test_default_workdir_from_either_flag_form():
  from experiments.main import _config_arg, default_workdir
  assert default_workdir(_config_arg(["m", "--config", "configs/shapes.py:paper"])) == \
      "runs/shapes_paper"
  assert default_workdir(_config_arg(["m", "--config=configs/grid25.py"])) == "runs/grid25"
