"""The benchmark's quick mode runs and writes well-formed records.

Times are reported (printed), never asserted: the machines that run the tests
are shared and noisy.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import bench

REPO = Path(__file__).resolve().parents[1]
POSITIVE = ("ms_per_step", "samples_steps_per_s", "peak_mem_mb", "compile_s", "wall_s",
            "timesteps", "devices", "steps_timed", "dim")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "bench.json"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  proc = subprocess.run([sys.executable, "-m", "experiments.bench", "--quick", f"--json={path}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(path) as f:
    return json.load(f), proc.stdout


def test_quick_records_have_the_stable_keys_and_positive_numbers(quick_run):
  records, stdout = quick_run
  print("\n" + stdout)  # the table, for whoever reads the test log
  assert isinstance(records, list)
  assert sorted(r["case"] for r in records) == ["sampler", "train"]
  for r in records:
    assert set(r) == set(bench.RECORD_KEYS), set(r) ^ set(bench.RECORD_KEYS)
    for k in POSITIVE:
      assert isinstance(r[k], (int, float)) and r[k] > 0, (r["case"], k, r[k])
    assert r["model"] == "mlp" and r["dim"] == 1 and r["shape"] == [1]
    assert r["devices"] >= 1 and r["quick"] is True
    assert r["platform"] and r["device_kind"] and r["mem_source"]
    assert r["xla_temp_mb"] is None or r["xla_temp_mb"] >= 0
  sampler = next(r for r in records if r["case"] == "sampler")
  assert sampler["num_samples"] >= 1_000 and sampler["num_samples"] % sampler["devices"] == 0
  assert sampler["batch_size"] is None and sampler["timesteps"] == 100
  train = next(r for r in records if r["case"] == "train")
  assert train["batch_size"] >= 2_000 and train["batch_size"] % train["devices"] == 0
  assert train["num_samples"] is None
  # The quick train row is the reference's training row (batch 2,000).
  if train["batch_size"] == 2_000:
    assert train["reference_ms_per_step"] == 36.0 and train["speedup_vs_reference"] > 0


def test_quick_prints_the_table_and_the_reference(quick_run):
  _, stdout = quick_run
  assert "ms/step" in stdout and "sampler" in stdout and "train" in stdout
  assert "71 ms per reverse step" in stdout and "36 ms per training step" in stdout


def test_unknown_case_is_refused():
  with pytest.raises(ValueError, match="bogus"):
    bench.run(["bogus"])


def test_table_formats_records_without_memory_figures():
  rec = dict.fromkeys(bench.RECORD_KEYS)
  rec.update(case="train", model="unet", dim=1024, shape=[32, 32, 1], batch_size=64,
             timesteps=250, devices=1, ms_per_step=120.0, samples_steps_per_s=533.0,
             compile_s=3.0, platform="cpu", device_kind="cpu", jax_version="x",
             mem_source="process_peak_rss_lifetime")
  table = bench.format_table([rec])
  assert "unet" in table and "120.000" in table
  assert len(bench.format_reference([rec]).splitlines()) == 3  # no matching reference row
