"""Killed at any moment, nothing lost: real runs in subprocesses, SIGKILLed during
training, while a checkpoint is being written and during sampling, then rerun.

Each rerun must continue where the killed one stopped (at most one checkpoint
interval of training repeated) and the final samples, variances and metrics
must equal those of a run that was never interrupted. Kills come from
``mode_interp.faults`` (``MODE_INTERP_KILL_AT=POINT:N``: the process SIGKILLs
itself at that point, so the moment is exact and the test is not timing-bound),
plus one external SIGKILL from this process at a moment it does not choose.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
# The tests' smoke config (30 steps, a checkpoint every 10, timesteps 30; the same shapes as
# tests/test_preemption.py's runs, so their compilations are shared through the persistent
# cache), with 512 samples: 4 chunks of 128.
ARGS = ["--config=configs/gaussian1d.py:tiny", "--config.sample.num_samples=512"]


def _env():
  # Every compilation goes to the persistent cache (not only those over the default 0.5 s):
  # the many runs of this file compile the same programs, and the first one's serve the rest.
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS="cpu",
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  env.pop("MODE_INTERP_KILL_AT", None)
  return env


def _run(workdir, kill_at=None, expect_killed=False):
  env = _env()
  if kill_at:
    env["MODE_INTERP_KILL_AT"] = kill_at
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={workdir}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  if expect_killed:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
  else:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


def _resumed_from(log):
  m = re.findall(r"resumed from checkpoint at step (\d+)", log)
  return int(m[-1]) if m else None


def _metrics(wd):
  with open(Path(wd) / "metrics.jsonl") as f:
    return [json.loads(l) for l in f if l.strip()]


def _arrays(wd):
  with np.load(Path(wd) / "samples.npz") as z:
    return z["samples"], z["traj_variance"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  wd = tmp_path_factory.mktemp("crash") / "baseline"
  _run(wd)
  return wd


def _assert_same_as(baseline, wd):
  x0, v0 = _arrays(baseline)
  x1, v1 = _arrays(wd)
  np.testing.assert_array_equal(x1, x0)
  np.testing.assert_array_equal(v1, v0)
  m0, m1 = _metrics(baseline), _metrics(wd)
  assert [r["step"] for r in m1] == [r["step"] for r in m0]  # one record per step, in order
  np.testing.assert_array_equal([r["loss"] for r in m1], [r["loss"] for r in m0])
  with open(Path(baseline) / "results.json") as f:
    r0 = json.load(f)
  with open(Path(wd) / "results.json") as f:
    r1 = json.load(f)
  assert r1["hallucination"] == r0["hallucination"]
  assert r1["detection"] == r0["detection"]


def test_kills_in_training_checkpointing_and_sampling_lose_nothing(baseline, tmp_path):
  wd = tmp_path / "run"
  # 1. Killed at step 15, between the checkpoints of steps 10 and 20.
  _run(wd, "train:15", expect_killed=True)
  assert sorted(os.listdir(wd / "checkpoints")) == ["10"]
  # 2. Resumes at 10 (5 steps repeated, < one interval); killed while writing step 20.
  log = _run(wd, "checkpoint:20", expect_killed=True)
  assert _resumed_from(log) == 10
  # 3. The half-written 20 is not taken for a checkpoint: resumes at 10 again (10 steps
  #    repeated: one interval); finishes training, killed after 2 of 4 sample chunks.
  log = _run(wd, "sample:2", expect_killed=True)
  assert _resumed_from(log) == 10
  # 4. Nothing to train; the sampling continues at chunk 3.
  log = _run(wd)
  assert "checkpoint at step 30 >= train.steps=30" in log
  assert "samples.npz: 256 of 512 samples already drawn" in log
  _assert_same_as(baseline, wd)


def test_external_sigkill_during_training(baseline, tmp_path):
  wd = tmp_path / "run"
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={wd}"],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if (wd / "metrics.jsonl").exists() and (wd / "metrics.jsonl").stat().st_size:
      break
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  _run(wd)
  _assert_same_as(baseline, wd)


def test_unreadable_latest_checkpoint_falls_back_to_the_one_before(baseline, tmp_path):
  import shutil

  wd = tmp_path / "run"
  shutil.copytree(baseline, wd)
  os.remove(wd / "samples.npz")
  # Damage every file of the latest checkpoint (as a disk error or a partial copy would).
  for root, _, files in os.walk(wd / "checkpoints" / "30"):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  log = _run(wd)
  assert "checkpoint at step 30" in log and "unreadable" in log
  assert _resumed_from(log) == 20
  _assert_same_as(baseline, wd)


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path):
  from mode_interp.workdir import Workdir

  wd = Workdir(str(tmp_path / "run"))
  wd.lock()
  try:
    proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={wd.path}"],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=120,
    )
  finally:
    wd.unlock()
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "in use by a running experiment" in lines[0]
  assert f"pid {os.getpid()}" in lines[0]
  assert not (Path(wd.path) / "config.json").exists()
