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


@pytest.mark.parametrize(
  "field", ["b1", "b2", "warmup_steps", "grad_clip", "lr_schedule", "lr", "batch_size", "ema_decay"]
)
def test_every_optimiser_field_is_frozen(tmp_path, field):
  wd = Workdir(str(tmp_path))
  train = {
    "steps": 10,
    "lr": 1e-3,
    "lr_schedule": "constant",
    "b1": 0.9,
    "b2": 0.999,
    "warmup_steps": 0,
    "grad_clip": 0.0,
    "batch_size": 8,
    "ema_decay": 0.0,
    "log_every": 5,
  }
  wd.write_config({"train": train})
  changed = dict(train, **{field: "cosine" if field == "lr_schedule" else train[field] + 1})
  with pytest.raises(WorkdirError, match=f"train.{field}: "):
    wd.write_config({"train": changed})
  # Free fields (logging, more steps of a constant schedule) may change.
  assert wd.write_config({"train": dict(train, log_every=1, steps=20)}) == [
    ("train.log_every", 5, 1),
    ("train.steps", 10, 20),
  ]


def test_more_steps_are_refused_under_a_cosine_schedule(tmp_path):
  wd = Workdir(str(tmp_path))
  train = {"steps": 100, "lr": 1e-3, "lr_schedule": "cosine"}
  wd.write_config({"train": train})
  with pytest.raises(WorkdirError, match="train.steps: 100 -> 200.*cosine"):
    wd.write_config({"train": dict(train, steps=200)})
  assert wd.write_config({"train": train}) == []


def test_metric_writer_drops_records_past_the_checkpoint_of_its_model_only(tmp_path):
  wd = Workdir(str(tmp_path))
  w = wd.metric_writer(model="a")
  for s in (10, 20, 30):
    w.write(s, loss=1.0 / s)
  wd.metric_writer(model="b").write(10, loss=0.5)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "model": "a", "lo')  # a line cut short by a crash
  wd.metric_writer(resume_step=20, model="a")
  with open(tmp_path / "metrics.jsonl") as f:
    recs = [json.loads(l) for l in f]
  assert [(r["model"], r["step"]) for r in recs] == [("a", 10), ("a", 20), ("b", 10)]


def test_default_workdir_from_either_flag_form():
  from absl import flags
  from ml_collections import config_flags
  from experiments.main import default_workdir

  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
  for argv, want in (
    (["m", "--config", "configs/shapes.py:paper"], "runs/shapes_paper"),
    (["m", "--config=configs/grid25.py"], "runs/grid25"),
  ):
    fv.unparse_flags()
    fv(argv)
    assert default_workdir(config_flags.get_config_filename(fv["config"])) == want
