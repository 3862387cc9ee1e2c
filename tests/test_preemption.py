"""Preempted, nothing repeated: real runs in subprocesses receive SIGTERM (or SIGINT) during
training, while the preemption's checkpoint is written, during sampling and during the
detection study; each exits with 128 + the signal's number, with its work saved at the point
reached, and the rerun ends with exactly an uninterrupted run's results.

Signals come from ``mode_interp.faults`` (``MODE_INTERP_SIGNAL_AT=POINT:N``: the process sends
itself SIGTERM at that point, so the moment is exact), plus one SIGINT from this process at a
moment it does not choose, and one run on two simulated hosts (CPU processes) where one host
alone receives the signal.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mode_interp import preemption

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config=configs/gaussian1d.py:tiny"]  # 30 steps, checkpoints every 10, 2 chunks
LINE = "preempted at step {}: checkpoint saved; rerun the same command to resume"


def _env(signal_at=None, **extra):
  # Every compilation goes to the persistent cache (not only those over the default 0.5 s):
  # the many runs of this file compile the same programs, and the first one's serve the rest.
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS="cpu",
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    **extra,
  )
  for name in ("MODE_INTERP_KILL_AT", "MODE_INTERP_SIGNAL_AT"):
    env.pop(name, None)
  if signal_at:
    env["MODE_INTERP_SIGNAL_AT"] = signal_at
  return env


def _run(args, signal_at=None, expect=0, module="experiments.main"):
  proc = subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=_env(signal_at),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == expect, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert not [l for l in proc.stderr.splitlines() if l.startswith("error:")], proc.stderr[-3000:]
  return proc.stderr


def _main(wd, signal_at=None, expect=0):
  return _run([*ARGS, f"--workdir={wd}"], signal_at, expect)


def _study(wd, signal_at=None, expect=0):
  return _run(
    [f"--workdir={wd}", "--reductions=mean,max"], signal_at, expect, module="experiments.detect"
  )


def _one_line(log, text):
  lines = [l for l in log.splitlines() if text in l]
  assert len(lines) == 1, (text, log[-3000:])
  return lines[0]


def _steps(wd):
  return sorted(int(n) for n in os.listdir(Path(wd) / "checkpoints") if n.isdigit())


def _resumed_from(log):
  m = re.findall(r"resumed from checkpoint at step (\d+)", log)
  return int(m[-1]) if m else None


def _assert_same_as(baseline, wd):
  for name in ("samples.npz", "exact_samples.npz"):
    with np.load(Path(baseline) / name) as a, np.load(Path(wd) / name) as b:
      assert sorted(a.files) == sorted(b.files)
      for k in a.files:
        np.testing.assert_array_equal(b[k], a[k], err_msg=f"{name}:{k}")
  metrics = [
    [json.loads(l) for l in open(Path(d) / "metrics.jsonl") if l.strip()] for d in (baseline, wd)
  ]
  assert [(r["step"], r["loss"], r["grad_norm"]) for r in metrics[1]] == [
    (r["step"], r["loss"], r["grad_norm"]) for r in metrics[0]
  ]
  r0, r1 = (json.load(open(Path(d) / "results.json")) for d in (baseline, wd))
  for key in ("hallucination", "true_score_hallucination", "detection", "modes_covered"):
    assert r1[key] == r0[key], key


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  wd = tmp_path_factory.mktemp("preemption") / "baseline"
  _main(wd)
  return wd


# -- the signal flag, in this process ---------------------------------------------------------


@pytest.fixture
def handlers():
  """Puts this process's signal handlers and the module's flag back after a test."""
  saved = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  yield
  for s, h in saved.items():
    signal.signal(s, h)
  preemption._received = None


def test_first_signal_sets_the_flag_and_a_second_one_acts_at_once(handlers):
  preemption.install()
  assert not preemption.should_stop()
  os.kill(os.getpid(), signal.SIGINT)
  assert preemption.requested() and preemption.should_stop()
  assert preemption.exit_status() == 130
  # Disarmed: a second signal takes the default action (here: would end the process).
  assert all(signal.getsignal(s) == signal.SIG_DFL for s in preemption.SIGNALS)
  preemption.install()
  os.kill(os.getpid(), signal.SIGTERM)
  assert preemption.exit_status() == 143


def test_several_processes_agree_by_all_gather_without_the_preemption_service(
  monkeypatch, handlers
):
  from jax.experimental import multihost_utils

  gathered = []
  others = [0]

  def allgather(x):
    gathered.append(int(np.asarray(x).item()))
    return np.asarray([int(np.asarray(x).item()), others[0]], np.int32)

  monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
  preemption.install()
  assert not preemption.should_stop()
  others[0] = 1  # another host received the signal: this one stops too
  assert preemption.should_stop()
  assert gathered == [0, 0]
  assert preemption.exit_status() == 143


def test_with_the_preemption_service_jax_keeps_sigterm_and_the_sync_point_counts_calls(
  monkeypatch, handlers
):
  from jax.experimental import multihost_utils

  calls = []
  monkeypatch.setattr(preemption, "_sync_manager", lambda: object())
  monkeypatch.setattr(
    multihost_utils, "reached_preemption_sync_point", lambda n: calls.append(n) or n == calls[0] + 2
  )
  before = signal.getsignal(signal.SIGTERM)
  preemption.install()
  assert signal.getsignal(signal.SIGTERM) == before  # jax's notifier keeps it
  assert signal.getsignal(signal.SIGINT) == preemption._handler
  assert [preemption.should_stop() for _ in range(3)] == [False, False, True]
  assert calls == [calls[0], calls[0] + 1, calls[0] + 2]  # one counter, one per call


# -- real runs ---------------------------------------------------------------------------------


def test_sigterm_in_training_while_saving_and_in_sampling_then_resume(baseline, tmp_path):
  wd = tmp_path / "run"
  # 1. SIGTERM after step 15, a second one while step 15's checkpoint is written: the second
  #    ends the process at once (the default action); the cut-short checkpoint is not used.
  _main(wd, "train:15,checkpoint:15", expect=-signal.SIGTERM)
  assert _steps(wd) == [10]
  # 2. Resumes at 10; SIGTERM after step 15: that step is checkpointed, status 143.
  log = _main(wd, "train:15", expect=143)
  assert _resumed_from(log) == 10
  assert _one_line(log, "preempted").endswith("train: " + LINE.format(15))
  assert _steps(wd) == [10, 15]
  # 3. Resumes at 15 (no step repeated); SIGTERM while the first sample chunk is drawn: it is
  #    finished and cached, the second is not started.
  log = _main(wd, "sample_chunk:1", expect=143)
  assert _resumed_from(log) == 15
  assert _one_line(log, "preempted").endswith(
    "samples.npz: preempted while sampling (128 of 256 samples saved in samples.npz); rerun "
    "the same command to resume"
  )
  with np.load(wd / "samples.npz") as z:
    assert len(z["samples"]) == 128
  assert not (wd / "results.json").exists()
  # 4. Continues at the second chunk; everything equals the uninterrupted run.
  log = _main(wd)
  assert "samples.npz: 128 of 256 samples already drawn" in log
  _assert_same_as(baseline, wd)


def test_sigterm_during_the_detection_study_then_resume(baseline, tmp_path):
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  for d in (whole, cut):
    shutil.copytree(baseline, d)
  _study(whole)
  log = _study(cut, "study_chunk:1", expect=143)
  assert _one_line(log, "preempted").endswith(
    "study: preempted while sampling (128 of 256 samples scored and saved in "
    "study/scores_cache.npz); rerun the same command to resume"
  )
  assert not (cut / "study" / "results.json").exists()
  log = _study(cut)
  assert "study/scores_cache.npz: 128 of 256 samples already scored" in log
  with (
    np.load(whole / "study" / "scores_cache.npz") as a,
    np.load(cut / "study" / "scores_cache.npz") as b,
  ):
    for k in a.files:
      np.testing.assert_array_equal(b[k], a[k], err_msg=k)
  r0, r1 = (json.load(open(d / "study" / "results.json")) for d in (whole, cut))
  for key in set(r0) - {"workdir", "timing"}:
    assert r1[key] == r0[key], key


def test_external_sigint_during_training_checkpoints_the_step_reached(tmp_path):
  wd = tmp_path / "run"
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "experiments.main",
      *ARGS,
      "--config.train.steps=100000",
      "--config.train.ckpt_every=100000",
      f"--workdir={wd}",
    ],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if (wd / "metrics.jsonl").exists() and (wd / "metrics.jsonl").stat().st_size:
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  _, log = proc.communicate(timeout=120)
  assert proc.returncode == 130, log[-3000:]
  step = int(re.search(r"preempted at step (\d+)", _one_line(log, "preempted")).group(1))
  assert step >= 10 and _steps(wd) == [step]  # no periodic checkpoint came before it


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("service", ["true", "false"])
def test_two_hosts_stop_at_the_same_step_when_one_is_signalled(tmp_path, service):
  """Two processes joined by jax's distributed runtime; only process 1 receives SIGTERM.
  Both must stop after the same step, save that checkpoint and exit with 143: a process
  that went on would wait forever in the next all-reduce. With jax's preemption service
  they agree on a step a little later (its notice travels in the background); without it,
  by an all-gather of the flag after every step, at once."""
  wd, port = tmp_path / "run", _free_port()
  args = [*ARGS, "--config.train.steps=1000", "--config.train.ckpt_every=1000", f"--workdir={wd}"]
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "tests._preemption_worker", str(port), "2", str(i), "--", *args],
      cwd=REPO,
      env=_env("train:15" if i == 1 else None, JAX_ENABLE_PREEMPTION_SERVICE=service),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=240)[1])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [143, 143], [l[-2000:] for l in logs]
  lines = [_one_line(l, "preempted") for l in logs]
  step = int(re.search(r"preempted at step (\d+)", lines[0]).group(1))
  assert all(l.endswith("train: " + LINE.format(step)) for l in lines), lines
  assert 15 <= step < 1000 and _steps(wd) == [step]
  if service == "false":
    assert step == 15
