"""A tiny end-to-end SIMPLE SHAPES run: the workdir contract and the results schema."""

import json
import os

import pytest

from configs import shapes as shapes_config
from experiments import main
from mode_interp.data import shapes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("shapes") / "run")
  res = main.run(shapes_config.get_config("tiny"), wd, config_name="configs/shapes.py:tiny")
  return wd, res


def test_workdir_contract(run):
  wd, _ = run
  for name in ("config.json", "metrics.jsonl", "results.json", "samples.npz"):
    assert os.path.exists(os.path.join(wd, name)), name
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    recs = [json.loads(l) for l in f if l.strip()]
  assert [r["step"] for r in recs] == [5, 10, 15, 20]
  assert all("loss" in r for r in recs)
  figs = os.listdir(os.path.join(wd, "figures"))
  assert "samples.png" in figs and "trajectory_variance.png" in figs
  assert "training_images.png" in figs
  assert "20" in os.listdir(os.path.join(wd, "checkpoints"))


def test_results_schema(run):
  wd, res = run
  with open(os.path.join(wd, "results.json")) as f:
    disk = json.load(f)
  assert disk["num_samples"] == 32
  assert disk["training_in_support_rate"] == 1.0
  assert set(disk["counts"]) == set(shapes.VERDICTS)
  assert sum(disk["counts"].values()) == 32
  assert disk["hallucination_rate"] == pytest.approx(1 - disk["counts"]["in_support"] / 32)
  for key in ("auroc", "threshold", "in_support_retained", "hallucinations_removed"):
    assert key in disk["detection"]
  assert disk["machine"]["device_count"] >= 1


def test_rerun_reuses_checkpoint_and_samples(run):
  wd, res = run
  before = os.path.getmtime(os.path.join(wd, "samples.npz"))
  again = main.run(shapes_config.get_config("tiny"), wd)
  assert again["train"]["steps"] == 20
  assert again["counts"] == res["counts"]  # same samples: nothing was redrawn
  assert os.path.getmtime(os.path.join(wd, "samples.npz")) == before


def test_every_reference_metric_is_in_a_real_results_json(run):
  """The report compares references.json's metrics with results.json: each must exist in
  what a real run writes (None only where a class of samples is empty)."""
  from experiments import report

  wd, _ = run
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  with open(
    os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "references.json"
    )
  ) as f:
    metrics = sorted({r["metric"] for r in json.load(f)["figures"] if r["experiment"] == "shapes"})
  assert metrics
  for m in metrics:
    parent, _, leaf = m.rpartition(".")
    node = report.get(res, parent) if parent else res
    assert isinstance(node, dict) and leaf in node, m
    if node[leaf] is None:
      det = res["detection"]
      assert det["num_in_support"] == 0 or det["num_hallucinations"] == 0, m
    else:
      assert isinstance(node[leaf], (int, float)), (m, node[leaf])


def test_bottleneck_map_of_the_run(run):
  from experiments import bottleneck

  wd, _ = run
  out = bottleneck.run(wd, column="square", per_group=40, log=lambda s: None)
  assert os.path.getsize(os.path.join(wd, out["figure"])) > 1000
  with open(os.path.join(wd, "bottleneck_square.json")) as f:
    saved = json.load(f)
  groups = saved["groups"]
  assert groups["top (training)"]["n"] > 1 and groups["bottom (training)"]["n"] > 1
  assert set(groups) == {"top (training)", "bottom (training)", "two squares (samples)"}
  assert saved["timestep"] == shapes_config.get_config("tiny").diffusion.timesteps // 10
