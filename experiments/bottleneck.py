r"""The U-Net's bottleneck map (the paper's appendix figure): where hallucinations sit.

  python -m experiments.bottleneck --workdir=runs/shapes [--column=square] [--timestep=10]

From a trained SIMPLE SHAPES workdir (its ``config.json``, latest checkpoint and
``samples.npz``), for one column (``--column``: triangle, square or pentagon) it
takes three groups of images: training images with that shape in the top half of
the column, training images with it in the bottom half, and the model's samples
that hold *two* blobs in that column (the checker's ``multiple_in_column``, the
hallucinations). Each image is noised to ``x_t`` at ``--timestep`` (the same noise
per image index), passed through the EMA network, and the output of the U-Net's
last middle block (``mid_res_1``), flattened (position in the column is spatial, so
it is not averaged away), is its feature vector.

Outputs: ``WORKDIR/figures/bottleneck_tsne_<column>.png`` (a t-SNE of the
features, coloured by group) and ``WORKDIR/bottleneck_<column>.json`` with the
group sizes and, measured in the feature space itself (t-SNE distorts distances),
where each group lies along the line from the "top" centroid (0) to the "bottom"
centroid (1): the median position and the share strictly between 0 and 1. The
paper's observation is that the hallucinations sit between the two in-support
regions: their median near 0.5, most of them in (0, 1).
"""

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def _define_flags():
  """Flags of the command (defined when run, so importing this module next to
  ``experiments.main`` does not define ``--workdir`` twice)."""
  flags.DEFINE_string("workdir", None, "A SIMPLE SHAPES workdir with a checkpoint and samples.")
  flags.DEFINE_enum("column", "square", ["triangle", "square", "pentagon"], "The column to map.")
  flags.DEFINE_integer("timestep", -1, "Timestep of x_t fed to the network (-1: T // 10).")
  flags.DEFINE_integer("per_group", 300, "At most this many images per group.")
  flags.DEFINE_integer("seed", 0, "Seed of the noise, the subsets and t-SNE.")


COLUMNS = ("triangle", "square", "pentagon")


class StudyError(RuntimeError):
  """A workdir that cannot be mapped; the message says why and what to do."""


def load_run(workdir: str):
  """``(cfg, ema_params, step)`` of a trained workdir, or :class:`StudyError`."""
  import ml_collections
  from mode_interp import pipeline, sharding, train
  from mode_interp.workdir import Workdir

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise StudyError(
      f"{workdir}: no config.json; run the experiment first "
      f"(python -m experiments.main --config=configs/shapes.py --workdir={workdir})"
    )
  with open(path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  if cfg.data.name != "shapes":
    raise StudyError(
      f"{workdir}: data.name is {cfg.data.name!r}; the bottleneck map needs a "
      f"SIMPLE SHAPES run (data.name 'shapes')"
    )
  if cfg.experiment != "shapes":
    raise StudyError(
      f"{workdir}: experiment {cfg.experiment!r}; pass the workdir of a configs/shapes.py run"
    )
  mesh = sharding.make_mesh(1)
  trainer = pipeline.make_trainer(cfg, mesh)
  x1 = np.zeros((1,) + pipeline.input_shape(cfg), np.float32)
  manager = Workdir(workdir).checkpoint_manager()
  state, step = train.restore_checkpoint(manager, trainer.abstract_state(x1))
  manager.close()
  if state is None:
    raise StudyError(f"{workdir}: no readable checkpoint in {workdir}/checkpoints; train first")
  return cfg, state.ema_params, step


def column_mass_row(images, geometry, column: int):
  """Ink-weighted mean row of each image inside ``column`` (NaN where the column is empty),
  as a fraction of the picture height."""
  x = (np.asarray(images, np.float64)[..., 0] + 1.0) / 2.0  # [N, H, W] in [0, 1]
  lo, hi = geometry.column_edges[column], geometry.column_edges[column + 1]
  ink = np.clip(x[:, : geometry.height, lo:hi], 0, 1)
  rows = np.arange(ink.shape[1])[None, :, None]
  mass = ink.sum(axis=(1, 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    return (ink * rows).sum(axis=(1, 2)) / mass / geometry.height


def bottleneck_features(cfg, params, images, timestep: int, seed: int, batch: int = 64):
  """The U-Net's ``mid_res_1`` feature map at ``x_t`` of each image, flattened."""
  import jax
  import jax.numpy as jnp
  from mode_interp import diffusion, pipeline, sharding

  model = pipeline.make_model(cfg)
  schedule = pipeline.make_schedule(cfg)

  @sharding.jit
  def feats(p, x0, idx):
    noise = jax.vmap(
      lambda i: jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), x0.shape[1:])
    )(idx)
    t = jnp.full((x0.shape[0],), timestep, jnp.int32)
    xt = diffusion.q_sample(schedule, x0, t, noise)
    _, state = model.apply(
      {"params": p},
      xt,
      t,
      capture_intermediates=(lambda mdl, name: mdl.name == "mid_res_1"),
      mutable=["intermediates"],
    )
    h = state["intermediates"]["mid_res_1"]["__call__"][0]
    # Flattened, not averaged over space: where a shape is in its column is a spatial fact.
    return h.astype(jnp.float32).reshape(h.shape[0], -1)

  out = []
  for lo in range(0, len(images), batch):
    x = np.asarray(images[lo : lo + batch], np.float32)
    n = len(x)
    if n < batch:  # one compiled shape
      x = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], np.float32)])
    out.append(np.asarray(feats(params, jnp.asarray(x), jnp.arange(lo, lo + batch)))[:n])
  return np.concatenate(out) if out else np.zeros((0, 0))


def line_positions(features, top, bottom):
  """Position of each feature vector along the line from the centroid of ``top`` (0) to
  that of ``bottom`` (1)."""
  c0, c1 = top.mean(0), bottom.mean(0)
  d = c1 - c0
  return (features - c0) @ d / max(float(d @ d), 1e-12)


def run(
  workdir: str,
  column: str = "square",
  timestep: int = -1,
  per_group: int = 300,
  seed: int = 0,
  log=logging.info,
) -> dict:
  from sklearn.manifold import TSNE
  from mode_interp import plots
  from mode_interp.data import shapes

  cfg, params, step = load_run(workdir)
  cache = os.path.join(workdir, "samples.npz")
  if not os.path.exists(cache):
    raise StudyError(f"{workdir}: no samples.npz; rerun the experiment to draw samples")
  with np.load(cache) as z:
    samples = np.clip(z["samples"], -1.0, 1.0)
  T = cfg.diffusion.timesteps
  timestep = T // 10 if timestep < 0 else timestep
  if not 0 <= timestep < T:
    raise StudyError(f"--timestep={timestep} is outside [0, {T}) (diffusion.timesteps={T})")
  c = COLUMNS.index(column)
  geom = shapes.get_geometry(cfg.data.scale)
  rng = np.random.default_rng(seed)

  ds = shapes.generate(cfg.data.num_train, seed=cfg.seed, scale=cfg.data.scale)
  train_x = shapes.to_model_input(ds.images)
  row = column_mass_row(train_x, geom, c)
  has = ds.present[:, c] & np.isfinite(row)
  top = np.flatnonzero(has & (row < 0.5))
  bottom = np.flatnonzero(has & (row >= 0.5))
  result = shapes.check(samples, scale=cfg.data.scale)
  two = np.flatnonzero((result.verdicts == shapes.MULTIPLE_IN_COLUMN) & (result.counts[:, c] >= 2))
  pick = lambda idx: np.sort(rng.permutation(idx)[:per_group])
  top, bottom, two = pick(top), pick(bottom), pick(two)
  log(
    f"bottleneck: column {column}: {len(top)} top, {len(bottom)} bottom (training), "
    f"{len(two)} two-in-column samples (of {len(samples)} drawn), t = {timestep}"
  )
  if len(top) < 2 or len(bottom) < 2:
    raise StudyError(f"{workdir}: too few training images with a {column} at the top or bottom")
  images = np.concatenate([train_x[top], train_x[bottom], samples[two]])
  feats = bottleneck_features(cfg, params, images, timestep, seed)
  groups = {
    "top (training)": slice(0, len(top)),
    "bottom (training)": slice(len(top), len(top) + len(bottom)),
    f"two {column}s (samples)": slice(len(top) + len(bottom), len(images)),
  }
  f_top, f_bot = feats[groups["top (training)"]], feats[groups["bottom (training)"]]
  pos = line_positions(feats, f_top, f_bot)
  summary = {}
  for name, sl in groups.items():
    p = pos[sl]
    summary[name] = {
      "n": int(len(p)),
      "median_position": float(np.median(p)) if len(p) else None,
      "share_between": float(np.mean((p > 0) & (p < 1))) if len(p) else None,
    }
  emb = TSNE(
    n_components=2,
    perplexity=min(30.0, max(5.0, (len(feats) - 1) / 3.0)),
    init="pca",
    random_state=seed,
  ).fit_transform(feats)
  fig_path = os.path.join(workdir, "figures", f"bottleneck_tsne_{column}.png")
  os.makedirs(os.path.dirname(fig_path), exist_ok=True)
  plots.embedding_scatter(
    fig_path,
    emb,
    {k: np.arange(len(feats))[sl] for k, sl in groups.items()},
    title=f"U-Net bottleneck (mid_res_1, t = {timestep}), {column} column; t-SNE",
  )
  out = {
    "workdir": os.path.abspath(workdir),
    "checkpoint_step": int(step),
    "column": column,
    "timestep": timestep,
    "feature": "mid_res_1 feature map, flattened",
    "groups": summary,
    "figure": os.path.relpath(fig_path, workdir),
  }
  with open(os.path.join(workdir, f"bottleneck_{column}.json"), "w") as f:
    json.dump(out, f, indent=2)
  log(f"bottleneck: {json.dumps(summary)}")
  return out


def main(argv):
  from experiments import cli

  cli.start(argv, preemptible=False)
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required (a SIMPLE SHAPES workdir)")
  cli.run_or_exit(
    lambda: run(FLAGS.workdir, FLAGS.column, FLAGS.timestep, FLAGS.per_group, FLAGS.seed),
    (StudyError,),
  )


if __name__ == "__main__":
  _define_flags()
  app.run(main)
