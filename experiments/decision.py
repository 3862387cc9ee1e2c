r"""When is a SIMPLE SHAPES image decided? Per-column commit times along the reverse process.

  python -m experiments.decision --workdir=runs/shapes                  # a trained workdir
  python -m experiments.decision --workdir=runs/shapes --num_samples=512 --stride=2

Draws samples from the workdir's latest checkpoint (sample ``i`` is the main run's sample
``i``: same key, same noise) keeping the predicted x0 every ``--stride`` reverse steps, and
for each sample and column of the canvas finds the step from which the column is decided:

- ``checker``: the checker's blob count of that column, applied to x0 at every kept step,
  equals its count in the final image from that step on;
- ``distance``: the column's RMS distance to the final image stays below ``--tol`` from
  that step on.

Groups: the shape columns of in-support images; of images with two shapes in one column,
the doubled column and their other shape columns. If the second shape of a hallucination
were committed late, after a wavering, a trajectory score could see it; if it is committed
together with the rest of the image, no score over the last steps can. Writes
``WORKDIR/decision/``: results.json (commit timesteps per group: median, quartiles,
histogram), figures/commit_{checker,distance}.png (histograms per group) and
figures/column_traces.png (per-column distance to the final image for a few samples of each
kind), and the sample cache.
"""

import os

from mode_interp import sharding

sharding.configure_host_threads()

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import cli, detect  # noqa: E402
from mode_interp import pipeline, plots, samplers, train  # noqa: E402
from mode_interp import trajectory_scores as ts_lib  # noqa: E402
from mode_interp.data import shapes  # noqa: E402
from mode_interp.errors import WorkdirError  # noqa: E402
from mode_interp.workdir import Workdir, write_json  # noqa: E402

FLAGS = flags.FLAGS
OUT = "decision"


class DecisionError(ValueError):
  """Bad input, found before any work."""


def group_masks(counts_final: np.ndarray, verdicts: np.ndarray, sized: np.ndarray) -> dict:
  """``{group: bool [B, C]}`` of the (sample, column) pairs each group holds."""
  ins = (verdicts == shapes.IN_SUPPORT)[:, None]
  multi = (verdicts == shapes.MULTIPLE_IN_COLUMN)[:, None]
  doubled = sized >= 2
  occupied = counts_final >= 1
  return {
    "in-support columns": ins & occupied,
    "doubled column (two in one column)": multi & doubled,
    "other columns of two-in-one images": multi & occupied & ~doubled,
  }


def summarise(values: np.ndarray, T: int) -> dict:
  v = np.asarray(values, np.float64)
  if not len(v):
    return {"n": 0}
  hist, edges = np.histogram(v, bins=min(20, T), range=(0, T))
  return {
    "n": int(len(v)),
    "median": float(np.median(v)),
    "quartiles": [float(np.percentile(v, 25)), float(np.percentile(v, 75))],
    "mean": float(v.mean()),
    "histogram": hist.tolist(),
    "bin_edges": edges.tolist(),
  }


def later_commit_contrast(t_commit: np.ndarray, groups: dict, positive: str, negative: str) -> dict:
  """AUROC (DeLong interval) that a column of ``positive`` is committed later (at a smaller
  timestep; the reverse process runs from T down to 0) than a column of ``negative``."""
  return ts_lib.auroc_delong(
    -np.concatenate([t_commit[groups[positive]], t_commit[groups[negative]]]),
    np.r_[np.ones(groups[positive].sum(), bool), np.zeros(groups[negative].sum(), bool)],
  )


def latest_commit_score(t_commit: np.ndarray, occupied: np.ndarray, verdicts: np.ndarray) -> dict:
  """Per image, its last-decided occupied column's commit time as a hallucination score
  (later = higher): AUROC (DeLong interval) for two-in-one-column vs in-support images.
  It reads the final image, so it is a diagnosis of the mechanism, not a detector chosen
  on held-out data (nothing is selected: no split is needed)."""
  t = np.where(occupied, t_commit, np.inf).min(axis=1)
  pick = (verdicts == shapes.IN_SUPPORT) | (verdicts == shapes.MULTIPLE_IN_COLUMN)
  pick &= np.isfinite(t)
  return ts_lib.auroc_delong(-t[pick], verdicts[pick] == shapes.MULTIPLE_IN_COLUMN)


def run(workdir: str, num_samples: int = 256, stride: int = 1, tol: float = 0.05) -> dict:
  cfg = detect.read_workdir(workdir)
  if cfg.experiment != "shapes":
    raise DecisionError(
      f"--workdir: {workdir} holds a {cfg.experiment!r} run; the commit "
      "times need SIMPLE SHAPES (a per-column checker)"
    )
  T = cfg.diffusion.timesteps
  n_steps = len(samplers.reverse_timesteps(cfg.sample.sampler, T, cfg.sample.num_steps))
  if not 1 <= stride <= n_steps:
    raise DecisionError(
      f"--stride must be in [1, {n_steps}] (the sampler's reverse steps), got {stride}"
    )
  if num_samples < 1:
    raise DecisionError(f"--num_samples must be >= 1, got {num_samples}")
  if not 0 < tol < 2:
    raise DecisionError(
      f"--tol must be in (0, 2) (an RMS distance on the [-1, 1] scale), got {tol}"
    )
  mesh = sharding.make_mesh(cfg.num_devices or None)
  wd = Workdir(workdir)
  wd.lock()
  try:
    shape = pipeline.input_shape(cfg)
    trainer = pipeline.make_trainer(cfg, mesh)
    manager = wd.checkpoint_manager()
    state, step = train.restore_checkpoint(
      manager, trainer.abstract_state(jnp.zeros((1,) + shape, jnp.float32))
    )
    manager.close()
    if state is None:
      raise WorkdirError(f"--workdir: no readable checkpoint in {wd.checkpoints}")
    model = detect.make_model(cfg)
    sample_jit = pipeline.make_sampler(
      cfg, pipeline.eps_fn_for(model), shape, mesh=mesh, clip_x0=1.0, traj_stride=stride
    )
    os.makedirs(wd.file(os.path.join(OUT, "figures")), exist_ok=True)
    out = pipeline.draw_samples(
      cfg,
      sample_jit,
      state.ema_params,
      num_samples,
      mesh=mesh,
      label="decision",
      workdir=wd,
      cache=os.path.join(OUT, f"samples_stride{stride}.npz"),
      step=step,
      traj_stride=stride,
    )
    ok = np.all(np.isfinite(out.samples.reshape(len(out.samples), -1)), axis=1)
    final = np.clip(out.samples[ok], -1, 1)
    traj = np.clip(out.x0_trajectory[ok], -1, 1)  # [B, K, H, W, 1]
    b, k = traj.shape[:2]
    ts = samplers.reverse_timesteps(cfg.sample.sampler, T, cfg.sample.num_steps)
    kept = np.unique(np.append(np.arange(0, len(ts), stride), len(ts) - 1))
    t_of_frame = np.asarray(ts)[kept]  # descending timesteps
    res_final = shapes.check(final, scale=cfg.data.scale)
    frames = shapes.check(traj.reshape((b * k,) + traj.shape[2:]), scale=cfg.data.scale)
    counts_traj = frames.counts.reshape(b, k, -1)  # [B, K, C]
    commit_checker = ts_lib.last_change_index(np.moveaxis(counts_traj, 1, -1))  # [B, C]
    geom = shapes.get_geometry(cfg.data.scale)
    dist = ts_lib.column_distances(traj, final, geom.column_edges)  # [B, K, C]
    commit_dist = ts_lib.last_change_index(np.moveaxis(dist <= tol, 1, -1))
    # A column whose distance is above tol at the last kept frame (never) does not occur:
    # the last frame's x0 is the final image up to the last step's noise-free update.
    t_checker = t_of_frame[np.minimum(commit_checker, k - 1)]
    t_dist = t_of_frame[np.minimum(commit_dist, k - 1)]
    groups = group_masks(res_final.counts, res_final.verdicts, res_final.sized)
    res = {
      "workdir": wd.path,
      "checkpoint_step": int(step),
      "timesteps": T,
      "num_samples": int(b),
      "num_non_finite": int((~ok).sum()),
      "stride": stride,
      "tol": tol,
      "counts": shapes.count_verdicts(res_final.verdicts),
      "commit_timestep": {},
      "later_than_in_support": {},
      "latest_commit_score": {},
      "definition": {
        "checker": "the column's blob count in x0 equals the final image's from this timestep on",
        "distance": f"the column's RMS distance to the final image stays <= {tol} "
        "from this timestep on",
        "later_than_in_support": "AUROC that a column of the group is committed later "
        "(smaller t) than an in-support image's shape column",
        "latest_commit_score": "per image, the latest commit among its occupied "
        "columns as a score: AUROC for two in one column vs "
        "in support (reads the final image: a diagnosis, not a "
        "detector)",
      },
    }
    for name, t_commit in (("checker", t_checker), ("distance", t_dist)):
      res["commit_timestep"][name] = {g: summarise(t_commit[m], T) for g, m in groups.items()}
      res["later_than_in_support"][name] = {
        g: later_commit_contrast(t_commit, groups, g, "in-support columns")
        for g in groups
        if g != "in-support columns"
      }
      res["latest_commit_score"][name] = latest_commit_score(
        t_commit, res_final.counts >= 1, res_final.verdicts
      )
      plots.commit_histograms(
        wd.file(os.path.join(OUT, "figures", f"commit_{name}.png")),
        {g: t_commit[m] for g, m in groups.items()},
        T,
        f"commit timestep ({name}); the reverse process runs right to left",
      )
    examples = {}
    for v in (shapes.IN_SUPPORT, shapes.MULTIPLE_IN_COLUMN):
      for i in np.flatnonzero(res_final.verdicts == v)[:3]:
        examples[f"{v} #{i}"] = dist[i]
    plots.column_traces(
      wd.file(os.path.join(OUT, "figures", "column_traces.png")),
      t_of_frame,
      examples,
      ("left (triangle)", "middle (square)", "right (pentagon)"),
    )
    write_json(wd.file(os.path.join(OUT, "results.json")), res)
    for g in groups:
      s = res["commit_timestep"]["checker"][g]
      if s["n"]:
        logging.info(
          "decision: %s: n=%d, committed at t = %.1f (median; quartiles %.1f, %.1f)",
          g,
          s["n"],
          s["median"],
          *s["quartiles"],
        )
    for name in ("checker", "distance"):
      c = res["later_than_in_support"][name]["doubled column (two in one column)"]
      a = res["latest_commit_score"][name]
      if c["auroc"] is not None and a["auroc"] is not None:
        logging.info(
          "decision (%s): doubled column later than in-support columns: AUROC %.3f "
          "[%.3f, %.3f]; latest-commit image score: AUROC %.3f [%.3f, %.3f]",
          name,
          c["auroc"],
          *c["ci95"],
          a["auroc"],
          *a["ci95"],
        )
    return res
  finally:
    wd.unlock()


def main(argv):
  cli.start(argv)
  cli.run_or_exit(
    lambda: run(FLAGS.workdir, FLAGS.num_samples, FLAGS.stride, FLAGS.tol),
    (DecisionError, detect.StudyError, WorkdirError),
  )


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A trained SIMPLE SHAPES workdir.")
  flags.DEFINE_integer("num_samples", 256, "Samples to draw.")
  flags.DEFINE_integer("stride", 1, "Keep x0 every this many reverse steps.")
  flags.DEFINE_float("tol", 0.05, "RMS distance (on [-1, 1]) below which a column is decided.")
  app.run(main)
