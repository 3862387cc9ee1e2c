"""Non-finite values never crash a run nor reach a metric unannounced; a diverging
run stops with one line and keeps its last good checkpoint; unreadable workdir
files are refused before any work; the EMA warm-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import gaussian1d
from experiments import main
from mode_interp import diffusion, hallucination, train
from mode_interp.errors import TrainingDivergedError, WorkdirError
from mode_interp.workdir import Workdir

REPO = Path(__file__).resolve().parents[1]


# -- the EMA warm-up -------------------------------------------------------------
def test_ema_decay_warms_up_then_holds():
  d = [float(train.ema_decay_at(s, 0.999)) for s in (0, 1, 10, 100, 10_000, 100_000)]
  np.testing.assert_allclose(d[:4], [1 / 10, 2 / 11, 11 / 20, 101 / 110], rtol=1e-6)
  assert d[4] == d[5] == pytest.approx(0.999)


def _share_of_init_after(steps, ema_decay):
  """Runs the real train step with an optimiser that sets the weights to 0 at the first
  step; the EMA then holds exactly (share of the initial weights) x init."""
  to_zero = optax.GradientTransformation(
    lambda p: optax.EmptyState(), lambda g, s, p: (jax.tree.map(lambda x: -x, p), s)
  )
  eps_fn = lambda p, x, t: x * p["w"]
  sched = diffusion.make_schedule("linear", 10)
  step = jax.jit(train.make_train_step(eps_fn, sched, to_zero, 4, ema_decay))
  p0 = {"w": jnp.ones(())}
  state = train.TrainState(jnp.zeros((), jnp.int32), p0, p0, to_zero.init(p0))
  data = jnp.ones((8, 1))
  for _ in range(steps):
    state, _ = step(state, data, jax.random.key(0))
  return float(state.ema_params["w"])


def test_short_run_ema_is_not_the_initial_weights():
  # Without the warm-up, 200 steps at 0.999 leave 0.999^199 = 82% of the average at the
  # random initialisation (whose samples diverge); with it, almost nothing.
  share = _share_of_init_after(200, 0.999)
  expected = np.prod([float(train.ema_decay_at(s, 0.999)) for s in range(1, 200)])
  assert share == pytest.approx(expected, rel=1e-4)
  assert share < 1e-6 < 0.999**199
  assert _share_of_init_after(5, 0.0) == 0.0  # no EMA: the weights themselves


# -- non-finite values in the metrics ---------------------------------------------
def test_detection_metrics_leave_out_and_count_non_finite_scores():
  rng = np.random.default_rng(0)
  scores = np.concatenate([rng.normal(0, 1, 500), rng.normal(2, 1, 100)])
  hal = np.arange(600) >= 500
  ref = hallucination.detection_metrics(scores, hal)
  spoiled = np.concatenate([scores, [np.nan, np.inf, -np.inf]])
  spoiled_hal = np.concatenate([hal, [True, False, True]])
  out = hallucination.detection_metrics(spoiled, spoiled_hal)
  assert out["num_non_finite"] == 3 and ref["num_non_finite"] == 0
  for k in ("auroc", "threshold", "in_support_retained", "hallucinations_removed"):
    assert out[k] == ref[k]
  assert out["num_in_support"] == 500 and out["num_hallucinations"] == 100
  fpr, tpr = hallucination.roc_curve(spoiled, spoiled_hal)
  assert np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr))


def test_finite_rows_and_variance_filter_with_nan():
  x = np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0], [4.0, 5.0]])
  tv = np.array([0.1, 0.2, np.inf, 0.05])
  np.testing.assert_array_equal(hallucination.finite_rows(x), [True, False, True, True])
  np.testing.assert_array_equal(hallucination.finite_rows(x, tv), [True, False, False, True])
  assert hallucination.non_finite_report([True, False, False, True]) == {"count": 2, "rate": 0.5}
  # The lowest variances are kept; NaN and inf come last.
  tv = np.array([0.3, np.nan, 0.1, np.inf, 0.2])
  np.testing.assert_array_equal(
    hallucination.filter_indices(3, "variance", traj_variance=tv), [0, 2, 4]
  )


def _tiny_1d(steps, **overrides):
  cfg = gaussian1d.get_config()  # the default EMA (0.999) and network
  cfg.train.steps = steps
  cfg.sample.num_samples = 1000
  cfg.sample.chunk_size = 1000
  for k, v in overrides.items():
    section, leaf = k.split(".")
    cfg[section][leaf] = v
  return cfg


@pytest.fixture
def cache_every_compilation():
  """Every compilation goes to the persistent cache (not only those over 0.5 s), so that the
  second run of the same programs loads them; put back after the test."""
  name = "jax_persistent_cache_min_compile_time_secs"
  old = getattr(jax.config, name)
  jax.config.update(name, 0.0)
  yield
  jax.config.update(name, old)


@pytest.mark.e2e
@pytest.mark.parametrize("steps", [20, 200])
def test_short_runs_with_the_default_ema_finish(tmp_path, steps, cache_every_compilation):
  """The first run a new user makes: a few steps of the default config. It finishes, and
  whatever diverged is counted, not passed to the metrics."""
  res = main.run(_tiny_1d(steps), str(tmp_path / "run"))
  nf = res["non_finite"]["count"]
  assert res["hallucination"]["n"] + nf == 1000
  assert res["detection"]["num_in_support"] + res["detection"]["num_hallucinations"] == 1000 - nf
  assert res["detection"]["num_non_finite"] == 0
  with open(tmp_path / "run" / "results.json") as f:
    saved = json.load(f)
  assert saved["non_finite"]["count"] == nf
  if steps == 200:  # with the warm-up, 200 steps give a model whose samples all stay finite
    assert nf == 0 and res["detection"]["auroc"] is not None
    assert os.path.exists(tmp_path / "run" / "figures" / "roc.png")


def test_diverging_run_stops_in_one_line_without_a_checkpoint(tmp_path):
  wd = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("MODE_INTERP_KILL_AT", None)
  # At lr 1e36 the weights overflow at the first update: the loss is non-finite from step 2
  # on, first read at step 10, the first checkpoint's step (whose state must not be saved).
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/gaussian1d.py",
      "--config.train.lr=1e36",
      "--config.train.steps=20",
      "--config.train.ckpt_every=10",
      "--config.train.batch_size=256",
      "--config.model.width=32",
      f"--workdir={wd}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "training diverged" in lines[0] and "train.lr" in lines[0]
  assert "at step 10)" in lines[0] and "no checkpoint was written" in lines[0]
  assert not (wd / "checkpoints").exists() or not [
    n for n in os.listdir(wd / "checkpoints") if n.isdigit()
  ]
  assert not (wd / "samples.npz").exists()


def test_divergence_after_a_checkpoint_keeps_it(tmp_path):
  """Weights that turn NaN between checkpoints are never saved; the last good checkpoint
  stays, and restores finite weights."""

  def fake_step(state, data, key):
    s = state.step + 1
    w = jnp.where(s > 150, jnp.nan, state.params["w"] + 1.0)
    return (
      train.TrainState(s, {"w": w}, {"w": w}, state.opt_state),
      {"loss": w * 0.0 + 1.0, "grad_norm": w},
    )

  manager = ocp.CheckpointManager(
    str(tmp_path / "ckpt"), options=ocp.CheckpointManagerOptions(create=True)
  )
  w0 = {"w": jnp.zeros(())}
  state = train.TrainState(jnp.zeros((), jnp.int32), w0, w0, optax.EmptyState())
  writer = Workdir(str(tmp_path)).metric_writer()
  with pytest.raises(TrainingDivergedError, match=r"step 160\).*step 150\)"):
    train.train_loop(
      state, fake_step, None, None, 300, manager=manager, writer=writer, log_every=20, ckpt_every=50
    )
  assert manager.all_steps() == [50, 100, 150]
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored, step = train.restore_checkpoint(manager, abstract)
  assert step == 150 and float(restored.params["w"]) == 150.0


# -- unreadable workdir files --------------------------------------------------------
@pytest.mark.parametrize(
  "name,content",
  [
    ("results.json", b'{"hallucination_rate": 0.1, "detec'),
    ("samples.npz", b"PK\x03\x04 truncated"),
    ("config.json", b"{"),
  ],
)
def test_unreadable_workdir_files_are_refused_before_any_work(tmp_path, name, content):
  wd = tmp_path / "run"
  wd.mkdir()
  (wd / name).write_bytes(content)
  cfg = _tiny_1d(5)
  with pytest.raises(WorkdirError) as e:
    main.run(cfg, str(wd))
  msg = str(e.value)
  assert name in msg and "\n" not in msg and ("Move it away" in msg or "delete it" in msg)
  assert not (wd / "checkpoints").exists()
  assert (wd / name).read_bytes() == content  # nothing written over it
  if name != "config.json":
    assert not (wd / "config.json").exists()
