"""The detection-along-training sweep: points, configs, validation, and a tiny run."""

import json
import os

import pytest

from configs import shapes_scaling
from experiments import config_check, main, scaling
from mode_interp.errors import ConfigError


def test_points_and_their_configs():
  cfg = shapes_scaling.get_config("")
  pts = scaling.points(cfg)
  assert [p.name for p in pts] == [
    "default_seed0",
    "attn16_seed0",
    "wide_seed0",
    "t1000_seed0",
    "canvas64_seed0",
    "default_seed1",
  ]
  assert pts[-1].steps == (1_000, 4_000)
  c = scaling.point_config(cfg, pts[2], 1_000)
  assert c.model.ch == 2 * cfg.model.ch and c.train.steps == 1_000 and "scaling" not in c
  c = scaling.point_config(cfg, pts[4], 500)
  assert c.data.scale == 1.0 and len(c.model.ch_mult) == len(cfg.model.ch_mult) + 1
  c = scaling.point_config(cfg, pts[3], 500)
  assert c.diffusion.timesteps == 1_000 and c.detect.window == cfg.detect.window
  assert 16 in scaling.point_config(cfg, pts[1], 500).model.attn_resolutions


def test_breadth_first_trains_every_model_to_each_step_count_in_turn():
  cfg = shapes_scaling.get_config("")
  cfg.scaling.models = "default,attn16"
  cfg.scaling.steps = (250, 500)
  cfg.scaling.seed_steps = (500,)
  jobs = [(p.name, p.steps) for p in scaling.schedule(cfg)]
  assert jobs == [
    ("default_seed0", (250,)),
    ("attn16_seed0", (250,)),
    ("default_seed1", (500,)),
    ("default_seed0", (250, 500)),
    ("attn16_seed0", (250, 500)),
  ]
  cfg.scaling.order = "depth"
  assert scaling.schedule(cfg) == scaling.points(cfg)
  cfg.scaling.order = "sideways"
  with pytest.raises(ConfigError, match="scaling.order.*allowed: breadth, depth"):
    config_check.validate(cfg)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("models", "default,huge", "distinct models of"),
    ("models", "default,default", "distinct models of"),
    ("steps", (1_000, 500), "increasing"),
    ("seed_steps", (3_000,), "among scaling.steps"),
    ("seeds", (0, 0), "distinct"),
    ("steps", (100, 1_000, 4_000), "exceed train.warmup_steps"),
  ],
)
def test_bad_sweeps_are_refused_before_any_work(field, value, match):
  cfg = shapes_scaling.get_config("")
  cfg.scaling[field] = value
  with pytest.raises(ConfigError, match=match):
    config_check.validate(cfg)


def test_a_model_the_canvas_cannot_take_is_refused():
  cfg = shapes_scaling.get_config("")
  cfg.model.attn_resolutions = (5,)
  with pytest.raises(ConfigError, match="attn"):
    config_check.validate(cfg)


@pytest.mark.e2e
def test_tiny_sweep_runs_and_resumes_without_retraining(tmp_path):
  cfg = shapes_scaling.get_config("tiny")
  cfg.scaling.models = "default"
  cfg.scaling.seeds = (0,)
  cfg.scaling.seed_steps = ()
  cfg.scaling.num_samples = 8
  res = main.run(cfg, str(tmp_path), "configs/shapes_scaling.py:tiny")
  assert [(r["model"], r["step"]) for r in res["table"]] == [("default", 4), ("default", 8)]
  for r in res["table"]:
    assert r["num_samples"] == 8 and r["train_flops"] > 0
    assert set(r["scores"]) == {"paper", "reimplementation", "best"}
  assert res["table"][1]["train_flops"] == 2 * res["table"][0]["train_flops"]
  assert os.path.exists(tmp_path / "figures" / "detection_vs_compute.png")
  point = tmp_path / "points" / "default_seed0"
  assert "8" in os.listdir(point / "checkpoints")
  mtime = os.path.getmtime(point / "study_step8.json")
  again = main.run(cfg, str(tmp_path), "configs/shapes_scaling.py:tiny")
  assert again["table"] == json.loads(json.dumps(res["table"]))
  assert os.path.getmtime(point / "study_step8.json") == mtime  # not studied again
  # Step counts below what a point has trained and not studied: refused with the reason.
  os.remove(point / "study_step4.json")
  with pytest.raises(ConfigError, match="cannot be trained back"):
    main.run(cfg, str(tmp_path), "configs/shapes_scaling.py:tiny")
