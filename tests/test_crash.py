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
CKPT_EVERY = 100
ARGS = ["--config=configs/gaussian1d.py", "--config.model.width=32",
        "--config.data.num_train=2000", "--config.train.batch_size=256",
        "--config.train.steps=300", f"--config.train.ckpt_every={CKPT_EVERY}",
        "--config.train.log_every=50", "--config.diffusion.timesteps=50",
        "--config.detect.window=5", "--config.sample.num_samples=2000",
        "--config.sample.chunk_size=500", "--config.plots.predictor_times=(1,5)"]


def _run(workdir, kill_at=None, expect_killed=False):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("MODE_INTERP_KILL_AT", None)
  if kill_at:
    env["MODE_INTERP_KILL_AT"] = kill_at
  proc = subprocess.run([sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={workdir}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
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
  # 1. Killed at step 150, between the checkpoints of steps 100 and 200.
  _run(wd, "train:150", expect_killed=True)
  assert sorted(os.listdir(wd / "checkpoints")) == ["100"]
  # 2. Resumes at 100 (50 steps repeated, < one interval); killed while writing step 200.
  log = _run(wd, "checkpoint:200", expect_killed=True)
  assert _resumed_from(log) == 100
  # 3. The half-written 200 is not taken for a checkpoint: resumes at 100 again (100 steps
  #    repeated: one interval); finishes training, killed after 2 of 4 sample chunks.
  log = _run(wd, "sample:2", expect_killed=True)
  assert _resumed_from(log) == 100
  # 4. Nothing to train; the sampling continues at chunk 3.
  log = _run(wd)
  assert "checkpoint at step 300 >= train.steps=300" in log
  assert "samples.npz: 1000 of 2000 samples already drawn" in log
  _assert_same_as(baseline, wd)


def test_external_sigkill_during_training(baseline, tmp_path):
  wd = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("MODE_INTERP_KILL_AT", None)
  proc = subprocess.Popen([sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={wd}"],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
  for root, _, files in os.walk(wd / "checkpoints" / "300"):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  log = _run(wd)
  assert "checkpoint at step 300" in log and "unreadable" in log
  assert _resumed_from(log) == 200
  _assert_same_as(baseline, wd)


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path):
  from mode_interp.workdir import Workdir
  wd = Workdir(str(tmp_path / "run"))
  wd.lock()
  try:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.main", *ARGS,
                           f"--workdir={wd.path}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
  finally:
    wd.unlock()
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "in use by a running experiment" in lines[0]
  assert f"pid {os.getpid()}" in lines[0]
  assert not (Path(wd.path) / "config.json").exists()
