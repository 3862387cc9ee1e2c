"""The training-set denoisers' experiment end to end on its :tiny config."""

import json
import os

import numpy as np
import pytest

from configs import shapes_denoisers
from experiments import config_check, denoisers, main
from mode_interp.errors import ConfigError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("denoisers"))
  res = main.run(shapes_denoisers.get_config("tiny"), path, "configs/shapes_denoisers.py:tiny")
  return path, res


def test_tiny_run_writes_the_contract_and_the_exact_denoiser_copies(tiny_run):
  path, res = tiny_run
  for name in (
    "config.json",
    "metrics.jsonl",
    "results.json",
    "figures/denoisers.png",
    "checkpoints",
  ):
    assert os.path.exists(os.path.join(path, name)), name
  names = [r["name"] for r in res["denoisers"]]
  assert names == ["exact", "local_p3"]
  exact, local = res["denoisers"]
  assert exact["copies"]["rate"] == 1.0  # the exact denoiser redraws training images
  assert local["copies"]["rate"] < exact["copies"]["rate"]
  assert res["unet_receptive_field"] == [32, 32]
  assert sum(exact["counts"].values()) == exact["num_samples"] == 8
  with open(os.path.join(path, "results.json")) as f:
    assert json.load(f)["denoisers"][0]["name"] == "exact"


def test_rerun_reuses_the_cached_samples(tiny_run):
  path, res = tiny_run
  again = main.run(shapes_denoisers.get_config("tiny"), path, "configs/shapes_denoisers.py:tiny")
  for a, b in zip(res["denoisers"], again["denoisers"]):
    assert a["counts"] == b["counts"]
    assert a["nearest_training_rms_median"] == b["nearest_training_rms_median"]


def test_nearest_training_rms():
  train = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))]).astype(np.float32)
  samples = np.stack([np.full((2, 2, 1), 0.25), np.ones((2, 2, 1))]).astype(np.float32)
  np.testing.assert_allclose(denoisers.nearest_training_rms(samples, train), [0.25, 0.0], atol=1e-6)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("denoisers.patches", (3, 4), "odd positive"),
    ("denoisers.patches", (3, 3), "distinct"),
    ("denoisers.num_samples", 0, ">= 1"),
    ("denoisers.copy_rms", 0.0, "> 0"),
  ],
)
def test_bad_settings_are_refused_before_any_work(field, value, match):
  cfg = shapes_denoisers.get_config("tiny")
  section, key = field.split(".")
  cfg[section][key] = value
  with pytest.raises(ConfigError, match=match):
    config_check.validate(cfg)


def test_nothing_to_sample_is_refused():
  cfg = shapes_denoisers.get_config("tiny")
  cfg.denoisers.patches = ()
  cfg.denoisers.exact = False
  with pytest.raises(ConfigError, match="nothing to sample"):
    config_check.validate(cfg)
