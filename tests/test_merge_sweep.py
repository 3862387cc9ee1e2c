"""experiments.merge_sweep: one record from workdirs that ran a sweep's axes apart."""

import json
import os

import pytest
from ml_collections import ConfigDict

from configs import gaussian1d
from experiments import gaussian, merge_sweep
from mode_interp.errors import ConfigError


def _cfg(**axes):
  c = gaussian1d.get_config("sweep_paper")
  for k, v in axes.items():
    c.sweep[k] = v
  return c


def _row(field, value, rate):
  return {
    "field": field,
    "value": value,
    "hallucination_rate": rate,
    "ci95": [rate * 0.8, rate * 1.2],
    "true_score_hallucination_rate": rate / 10,
    "true_score_ci95": [rate / 20, rate / 5],
    "auroc": 0.9,
    "hallucinations_removed": 0.5,
    "num_samples": 1000,
    "wall_seconds": 60.0,
  }


def _workdir(path, cfg, rows, drop=()):
  os.makedirs(path)
  d = cfg.to_dict()
  for dotted in drop:  # a field the code added after this run
    section, name = dotted.split(".")
    d[section].pop(name)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(d, f, default=list)
  with open(os.path.join(path, "sweep_table.json"), "w") as f:
    json.dump(rows, f)
  with open(os.path.join(path, "sweep_seconds.json"), "w") as f:
    json.dump(
      {f"sweep_{r['field']}_{r['value']}": {"seconds": 60.0, "done": True} for r in rows}, f
    )
  return str(path)


def test_merge_orders_points_rebuilds_same_as_and_writes_results_when_complete(tmp_path):
  full = _cfg(num_train=(2000, 20000), timesteps=(100, 1000), distance=(0.5, 1.0))
  base = full.data.num_train
  assert base == 20000 and full.diffusion.timesteps == 1000  # T = 1,000 and distance 1 repeat it
  a = _workdir(
    tmp_path / "points",
    _cfg(num_train=(2000, 20000), timesteps=(), distance=()),
    [_row("num_train", 2000, 0.03), _row("num_train", 20000, 0.001)],
    drop=("train.vsm_rho",),
  )
  b = _workdir(
    tmp_path / "distance",
    _cfg(num_train=(), timesteps=(), distance=(0.5,)),
    [_row("distance", 0.5, 0.005)],
  )
  into = str(tmp_path / "record")
  table, pending = merge_sweep.merge(full, [b, a], into)
  assert pending == ["sweep_timesteps_100"]
  assert [(r["field"], r["value"]) for r in table] == [
    ("num_train", 2000),
    ("num_train", 20000),
    ("timesteps", 1000),
    ("distance", 0.5),
    ("distance", 1.0),
  ]
  assert table[2]["same_as"] == table[4]["same_as"] == "sweep_num_train_20000"
  assert table[4]["hallucination_rate"] == 0.001 and table[4]["wall_seconds"] == 0.0
  assert table[4]["means"] == [1.0, 2.0, 3.0]
  assert not os.path.exists(os.path.join(into, "results.json"))  # a point is missing
  assert os.path.exists(os.path.join(into, "figures", "sweep.png"))
  assert os.path.exists(os.path.join(into, "figures", "sweep_detection.png"))

  # The last point arrives in a third workdir; the record is read back as one of the sources.
  c = _workdir(
    tmp_path / "T",
    _cfg(num_train=(), timesteps=(100,), distance=()),
    [_row("timesteps", 100, 0.004)],
  )
  table, pending = merge_sweep.merge(full, [c], into)
  assert pending == [] and len(table) == 6
  with open(os.path.join(into, "results.json")) as f:
    res = json.load(f)
  assert res["trends"]["num_train"]["direction"] == "falls"
  assert res["trends"]["timesteps"]["direction"] == "falls"
  with open(os.path.join(into, "sweep_seconds.json")) as f:
    assert set(json.load(f)) == {
      "sweep_num_train_2000",
      "sweep_num_train_20000",
      "sweep_distance_0.5",
      "sweep_timesteps_100",
    }


def test_merge_refuses_another_recipe_an_unknown_point_and_two_results(tmp_path):
  full = _cfg(num_train=(2000, 20000), timesteps=(), distance=())
  other = _cfg(num_train=(2000,), timesteps=(), distance=())
  other.train.lr = other.train.lr * 2
  bad = _workdir(tmp_path / "lr", other, [_row("num_train", 2000, 0.03)])
  with pytest.raises(ConfigError, match="train.lr"):
    merge_sweep.merge(full, [bad], str(tmp_path / "r1"))
  assert not os.path.exists(tmp_path / "r1")  # nothing written on a refusal

  stray = _workdir(
    tmp_path / "stray",
    _cfg(num_train=(5000,), timesteps=(), distance=()),
    [_row("num_train", 5000, 0.01)],
  )
  with pytest.raises(ConfigError, match=r"num_train=5000 is not a point.*num_train=2000"):
    merge_sweep.merge(full, [stray], str(tmp_path / "r2"))

  one = _workdir(tmp_path / "one", full, [_row("num_train", 2000, 0.03)])
  two = _workdir(tmp_path / "two", full, [_row("num_train", 2000, 0.02)])
  with pytest.raises(ConfigError, match="two different results"):
    merge_sweep.merge(full, [one, two], str(tmp_path / "r3"))


def test_point_key_ignores_the_axis_lists_only():
  a = _cfg(num_train=(2000,), timesteps=(), distance=())
  b = _cfg(num_train=(), timesteps=(100, 250), distance=(0.5,))
  assert gaussian.sweep_point_key(a, "distance", 1.0) == gaussian.sweep_point_key(
    b, "num_train", 20000
  )
  c = ConfigDict(b.to_dict())
  c.seed = b.seed + 1
  assert gaussian.sweep_point_key(c, "distance", 1.0) != gaussian.sweep_point_key(
    b, "distance", 1.0
  )
