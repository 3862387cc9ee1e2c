"""Data parallelism over 4 simulated CPU devices gives the 1-device results.

jax fixes its device count when it starts, so the 4-device work runs once in a
subprocess (``tests/_sharding_worker.py``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``); it prints one JSON
object and the tests below compare its parts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_sharding_worker.py"
NUM_DEVICES = 4
# Per-row results on 1 and 4 devices differ only by float summation order.
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sharding")
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  proc = subprocess.run(
    [sys.executable, str(WORKER), str(tmp)],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, f"worker failed:\n{proc.stderr[-5000:]}"
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert lines, f"worker printed no JSON:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
  res = json.loads(lines[-1])
  assert res["device_count"] == NUM_DEVICES and res["platform"] == "cpu"
  return res


def _part(worker, name):
  part = worker[name]
  if "error" in part:
    pytest.fail(f"{name} raised in the worker: {part['error']}\n{part['traceback']}")
  return part


def test_sampler_on_four_devices_matches_one_device(worker):
  res = _part(worker, "sampler")
  one, four = res["1"], res[str(NUM_DEVICES)]
  np.testing.assert_allclose(four["samples"], one["samples"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(four["traj_variance"], one["traj_variance"], rtol=RTOL, atol=ATOL)
  assert np.all(np.asarray(one["traj_variance"]) >= 0)
  # The output really is split over the 4 devices, a quarter of the rows each.
  n = len(one["samples"])
  assert one["num_output_devices"] == 1 and one["shard_rows"] == [n]
  assert four["num_output_devices"] == NUM_DEVICES
  assert four["shard_rows"] == [n // NUM_DEVICES] * NUM_DEVICES
  assert four["variance_shard_rows"] == [n // NUM_DEVICES] * NUM_DEVICES
  # Drawn tile by tile on each device (padded tiles): the same samples, split the same way.
  tiled = res[f"{NUM_DEVICES}_tiled"]
  np.testing.assert_allclose(tiled["samples"], one["samples"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(tiled["traj_variance"], one["traj_variance"], rtol=RTOL, atol=ATOL)
  assert tiled["shard_rows"] == [n // NUM_DEVICES] * NUM_DEVICES


def test_training_steps_on_four_devices_match_one_device(worker):
  res = _part(worker, "train")
  one, four = res["1"], res[str(NUM_DEVICES)]
  assert one["step"] == four["step"] == 5
  assert four["param_devices"] == NUM_DEVICES  # replicated over the mesh
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=RTOL, atol=ATOL)
  assert len(one["params"]) == len(four["params"]) > 0
  for key in ("params", "ema_params"):
    for a, b in zip(one[key], four[key]):
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
  # Each device's rows in micro-batches (gradients summed over them): the same steps.
  micro = res[f"{NUM_DEVICES}_micro"]
  np.testing.assert_allclose(micro["losses"], one["losses"], rtol=RTOL, atol=ATOL)
  for a, b in zip(one["params"], micro["params"]):
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
  # Training moved the weights (the comparison is not of two initialisations).
  assert not np.allclose(np.concatenate(one["params"]), np.concatenate(one["ema_params"]))


def test_batch_not_divisible_by_the_devices_is_refused(worker):
  res = _part(worker, "divisible")
  for how in ("main_run", "check_divisible"):
    err = res[how]
    assert err is not None, f"{how}: batch 6 on 4 devices was accepted"
    assert err["field"] == "train.batch_size"
    assert "train.batch_size" in err["message"] and "4" in err["message"]
  assert not res["workdir_created"]  # refused before any work


def test_main_run_at_full_width_on_four_devices_end_to_end_without_deadlock(worker):
  res = _part(worker, "full_width")
  assert res["device_count"] == NUM_DEVICES
  assert res["num_samples"] == res["num_saved"] == 400
  assert 0.0 <= res["hallucination_rate"] <= 1.0
  assert res["results_json"]
  assert res["width"] == 128 and res["batch_size"] == 2_000
  assert res["train_steps"] == 60
  assert len(res["losses"]) == 3 and np.all(np.isfinite(res["losses"]))
  assert res["losses"][-1] < res["losses"][0]
  # The entry point sized XLA's thread pool for the 4 devices.
  assert int(res["nproc"]) >= 4 * NUM_DEVICES
  assert res["non_finite"] == 0 and res["auroc"] is not None


def test_host_threads_are_sized_for_simulated_devices(monkeypatch):
  from mode_interp import sharding

  monkeypatch.setenv("XLA_FLAGS", "--foo --xla_force_host_platform_device_count=6")
  monkeypatch.delenv("NPROC", raising=False)
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  sharding.configure_host_threads()
  assert os.environ["NPROC"] == str(max(os.cpu_count(), 24))
  monkeypatch.setenv("NPROC", "100")  # a larger user setting is kept
  sharding.configure_host_threads()
  assert os.environ["NPROC"] == "100"
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "3")
  monkeypatch.setenv("NPROC", "1")
  sharding.configure_host_threads()
  assert os.environ["NPROC"] == str(max(os.cpu_count(), 12))
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES")
  monkeypatch.setenv("NPROC", "1")
  sharding.configure_host_threads()  # one device: nothing to do
  assert os.environ["NPROC"] == "1"
