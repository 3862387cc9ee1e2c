"""Wiring shared by every experiment: config -> schedule, network, trainer, sampler.

Runners in ``experiments/`` call these; each function takes the ConfigDict
sections it needs and returns plain objects (no hidden state).
"""

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

from mode_interp import diffusion, faults, preemption, samplers, sharding, train
from mode_interp.errors import Preempted
from mode_interp.networks import compute_dtype
from mode_interp.networks.mlp import ToyMLP


def make_schedule(cfg) -> diffusion.Schedule:
  d = cfg.diffusion
  return diffusion.make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end)


MODELS = ("mlp", "unet")


def make_model(cfg):
  m = cfg.model
  if m.name == "mlp":
    return ToyMLP(
      width=m.width,
      num_blocks=m.num_blocks,
      share_blocks=m.share_blocks,
      timesteps=cfg.diffusion.timesteps,
      dtype=compute_dtype(m.get("dtype", "float32")),
      learn_sigma=bool(m.get("learn_sigma", False)),
    )
  if m.name == "unet":
    from mode_interp.networks.unet import UNet

    return UNet(
      ch=m.ch,
      ch_mult=tuple(m.ch_mult),
      num_res_blocks=m.num_res_blocks,
      attn_resolutions=tuple(m.attn_resolutions),
      dropout=m.dropout,
      num_groups=m.num_groups,
      dtype=compute_dtype(m.get("dtype", "float32")),
      learn_sigma=bool(m.get("learn_sigma", False)),
    )
  raise ValueError(f"unknown model.name {m.name!r}; allowed: {', '.join(MODELS)}")


def input_shape(cfg) -> tuple:
  """The shape of one example of the config's data, batch aside: ``(1,)`` or ``(2,)`` for the
  Gaussian mixtures, ``(side, side, 1)`` for SIMPLE SHAPES (the canvas of ``data.scale``) and
  MNIST (padded to 32x32)."""
  name = cfg.data.name
  if name == "shapes":
    from mode_interp.data import shapes

    side = shapes.get_geometry(cfg.data.scale).canvas
    return (side, side, 1)
  if name == "mnist":
    return (32, 32, 1)
  from mode_interp.data import gaussians

  if name in gaussians.DIMS:
    return (gaussians.DIMS[name],)
  allowed = ", ".join(["shapes", "mnist", *gaussians.DIMS])
  raise ValueError(f"unknown data.name {name!r}; allowed: {allowed}")


def eps_fn_for(model):
  """The network as a pure ``eps_fn(params, x_t, t) -> eps``. A learned-variance network
  (``learn_sigma``) returns its first half there, and both halves from
  ``eps_fn.with_variance(params, x_t, t) -> (eps, v)`` (its training loss and the DDPM
  sampler with ``variance="learned"`` use that)."""
  if not getattr(model, "learn_sigma", False):
    return lambda params, x, t: model.apply({"params": params}, x, t)

  def with_variance(params, x, t):
    return diffusion.split_learned(model.apply({"params": params}, x, t))

  def eps_fn(params, x, t):
    return with_variance(params, x, t)[0]

  eps_fn.with_variance = with_variance
  return eps_fn


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The compiled training functions of one (model, diffusion, train) recipe over a mesh.

  Built once per runner by :func:`make_trainer` and passed to :func:`train_model`, so the
  generations of a recursive run share one compilation.

  - ``init(x1, key) -> TrainState``: fresh weights and optimiser state, replicated.
  - ``step(state, data, key) -> (state, metrics)``: one data-parallel step (state donated).
  """

  init: Callable
  step: Callable
  mesh: Any

  def abstract_state(self, x1):
    """The state's shapes, dtypes and shardings, without computing it (a restore target)."""
    return jax.eval_shape(self.init, x1, jax.random.key(0))


def is_convolutional(cfg) -> bool:
  """Whether the config's network is convolutional (``sharding.compiler_options``)."""
  return cfg.model.name != "mlp"


def make_optimizer(cfg):
  """The config's optimiser (``train`` section: Adam, warm-up, clipping, schedule)."""
  tc = cfg.train
  return train.make_optimizer(
    tc.lr, tc.b1, tc.b2, tc.warmup_steps, tc.grad_clip, tc.lr_schedule, tc.steps
  )


def make_trainer(cfg, mesh) -> Trainer:
  """The :class:`Trainer` for the config's model, diffusion and train sections."""
  tc = cfg.train
  model = make_model(cfg)
  optimizer = make_optimizer(cfg)
  repl = sharding.replicated(mesh)
  conv = is_convolutional(cfg)
  init_jit = sharding.jit_once(
    functools.partial(train.init_state, model, optimizer), mesh, out_shardings=repl
  )
  step_fn = train.make_train_step(
    eps_fn_for(model),
    make_schedule(cfg),
    optimizer,
    tc.batch_size,
    tc.ema_decay,
    mesh=mesh,
    micro_batch=rows_per_pass(tc.get("micro_batch", -1), mesh, "train"),
    vsm_rho=float(tc.get("vsm_rho", 0.0)) if cfg.model.get("learn_sigma", False) else None,
  )
  step_jit = sharding.jit(
    step_fn,
    mesh,
    convolutional=conv,
    training=True,
    donate_argnums=(0,),
    out_shardings=(repl, repl),
  )
  return Trainer(init_jit, step_jit, mesh)


def train_model(
  cfg,
  data: np.ndarray,
  workdir,
  *,
  trainer: Trainer,
  subdir: str = "",
  key=None,
  label: str = "train",
):
  """Trains (or resumes training of) the config's network on ``data`` with ``trainer``
  (from :func:`make_trainer` for the same config).

  Checkpoints go to ``workdir.checkpoints/subdir``, metrics to
  ``metrics.jsonl`` (records tagged ``model=subdir`` when a run trains several). Returns the final
  :class:`train.TrainState`.
  """
  tc = cfg.train
  mesh = trainer.mesh
  if tc.batch_size > len(data):
    raise ValueError(f"train.batch_size={tc.batch_size} exceeds the {len(data)} training points")
  sharding.check_divisible(tc.batch_size, mesh, "train.batch_size")
  key = jax.random.key(cfg.seed) if key is None else key
  init_key, run_key = jax.random.split(key)
  x1 = jnp.asarray(data[:1])
  manager = workdir.checkpoint_manager(subdir)
  state, restored = train.restore_checkpoint(manager, trainer.abstract_state(x1))
  if restored is None:
    state = trainer.init(x1, init_key)
  else:
    logging.info("%s: resumed from checkpoint at step %d (%s)", label, restored, manager.directory)
  writer = workdir.metric_writer(resume_step=restored or 0, model=subdir)
  data_dev = jax.device_put(jnp.asarray(data), sharding.replicated(mesh))
  state = train.train_loop(
    state,
    trainer.step,
    data_dev,
    run_key,
    tc.steps,
    manager=manager,
    writer=writer,
    log_every=tc.log_every,
    ckpt_every=tc.ckpt_every,
    label=label,
  )
  manager.close()
  return state


def sampler_spec(cfg, shape, clip_x0: Optional[float] = None, traj_stride: int = 0):
  s = cfg.sample
  return samplers.SamplerSpec(
    shape=tuple(shape),
    window=cfg.detect.window,
    variance=s.variance,
    num_steps=s.num_steps,
    eta=s.eta,
    clip_x0=clip_x0,
    traj_stride=traj_stride,
    reduction=cfg.detect.reduction,
    t_lo=cfg.detect.get("t_lo", -1),
    t_hi=cfg.detect.get("t_hi", -1),
  )


def make_sampler(cfg, eps_fn, shape, *, mesh, clip_x0=None, traj_stride=0, schedule=None):
  """A jitted ``sample_chunk(params, key, indices)`` sharded over ``mesh``."""
  schedule = make_schedule(cfg) if schedule is None else schedule
  fn = samplers.get_sampling_fn(
    cfg.sample.sampler, schedule, eps_fn, sampler_spec(cfg, shape, clip_x0, traj_stride)
  )
  return jit_sampler(fn, cfg, mesh)


def jit_sampler(sample_chunk, cfg, mesh):
  """Any ``sample_chunk(params, key, indices) -> SampleOutput`` jitted over ``mesh``: the
  indices (and every output) split along the devices, the parameters and key replicated; on
  CPUs each device draws its share in row tiles of ``sample.tile_rows``."""
  fn = sample_chunk
  rows = rows_per_pass(cfg.sample.get("tile_rows", -1), mesh)
  if rows:
    # Each device draws its own samples tile by tile (samples never interact).
    spec = P(sharding.AXIS)
    fn = jax.shard_map(
      samplers.row_tiled(fn, rows),
      mesh=mesh,
      in_specs=(P(), P(), spec),
      out_specs=spec,
      check_vma=False,
    )  # no collectives inside
  ds, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  return sharding.jit(
    fn, mesh, convolutional=is_convolutional(cfg), in_shardings=(repl, repl, ds), out_shardings=ds
  )


# Rows per CPU core and pass (sampling, training): beyond ~1,000-2,000 rows of 128 floats a
# core's share of the toy network's activations no longer fits its cache (see
# samplers.row_tiled). Training passes keep at least 2,048 rows so that a micro-batch still
# holds more rows than T = 1000 timesteps (the MLP's per-timestep table pays off).
CPU_TILE_ROWS_PER_CORE = {"sample": 1024, "train": 2048}


def rows_per_pass(value: int, mesh, kind: str = "sample") -> int:
  """``sample.tile_rows`` / ``train.micro_batch`` (``kind`` ``"train"``) resolved for
  ``mesh``: ``-1`` (auto) is :data:`CPU_TILE_ROWS_PER_CORE` times the cores each device's
  work is spread over on CPUs and 0 (everything at once) on accelerators."""
  value = int(value)
  if value >= 0:
    return value
  if mesh.devices.flat[0].platform != "cpu":
    return 0
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return CPU_TILE_ROWS_PER_CORE[kind] * max(1, (cores or 1) // sharding.num_shards(mesh))


# Settings that a fingerprint written before they existed holds at these values.
SAMPLING_DEFAULTS = {"traj_stride": 0, "t_lo": -1, "t_hi": -1}


def sampling_fingerprint(cfg, traj_stride: int = 0) -> str:
  """The sampling settings a sample cache is only valid for (besides the checkpoint);
  ``traj_stride`` is that of the sampler that fills it (a cache without trajectories
  cannot serve a request for them)."""
  s, d = cfg.sample, cfg.detect
  return json.dumps(
    {
      "sampler": s.sampler,
      "variance": s.variance,
      "num_steps": s.num_steps,
      "eta": s.eta,
      "window": d.window,
      "reduction": d.reduction,
      "traj_stride": int(traj_stride),
      "t_lo": int(d.get("t_lo", -1)),
      "t_hi": int(d.get("t_hi", -1)),
    },
    sort_keys=True,
  )


def draw_samples(
  cfg,
  sample_jit,
  params,
  num_samples: int,
  *,
  mesh,
  key=None,
  label: str = "sample",
  workdir=None,
  cache: str = "",
  step: int = -1,
  traj_stride: int = 0,
):
  """Draws ``num_samples`` in chunks of ``sample.chunk_size``; returns numpy arrays.

  With ``workdir`` and ``cache`` (a file name), every finished chunk is saved,
  tagged with the checkpoint ``step`` and the sampling settings
  (:func:`sampling_fingerprint`; pass the ``traj_stride`` that ``sample_jit`` was built
  with): an interrupted run continues from the last
  saved chunk, and a rerun with the same step and settings reuses the samples
  (other settings, e.g. a new ``detect.window``, sample again). Because
  each sample's noise depends only on its global index, the result is the same
  either way. A stop signal (:mod:`mode_interp.preemption`) is acted on between chunks: the
  finished ones are in the cache, and :class:`Preempted` is raised.
  """
  n_dev = sharding.num_shards(mesh)
  chunk = min(cfg.sample.chunk_size, max(num_samples, 1))
  chunk = -(-chunk // n_dev) * n_dev
  key = jax.random.key(cfg.seed + 1) if key is None else key
  done = None
  if workdir is not None and cache:
    fingerprint = sampling_fingerprint(cfg, traj_stride)
    done = workdir.load_sample_cache(cache, step, fingerprint, SAMPLING_DEFAULTS)
    if done is not None:
      done = {k: v[:num_samples] for k, v in done.items()}
      logging.info("%s: %d of %d samples already drawn", cache, len(done["samples"]), num_samples)
  parts = (
    []
    if done is None
    else [samplers.SampleOutput(done["samples"], done["traj_variance"], done.get("x0_trajectory"))]
  )
  have = 0 if done is None else len(done["samples"])
  progress = train.Progress(label, num_samples, start=have, unit="samples")
  drawn = 0
  while have < num_samples:
    if preemption.should_stop():
      # The chunks drawn so far are in the cache; the rerun starts at the next one.
      kept = (
        f"{have} of {num_samples} samples saved in {cache}"
        if workdir is not None and cache
        else f"{have} of {num_samples} samples drawn, not saved"
      )
      raise Preempted(
        f"{label}: preempted while sampling ({kept}); rerun the same command to resume"
      )
    drawn += 1
    faults.maybe_kill("sample_chunk", drawn)
    n = min(chunk, num_samples - have)
    out = samplers.sample(
      sample_jit,
      params,
      key,
      n,
      chunk,
      start_index=have,
      index_sharding=sharding.data_sharding(mesh),
    )
    parts.append(out)
    have += n
    progress(have)
    if workdir is not None and cache:
      merged = samplers.concat(parts)
      workdir.save_sample_cache(
        cache, step, fingerprint, {k: v for k, v in merged._asdict().items() if v is not None}
      )
      faults.maybe_kill("sample", len(parts))
  return samplers.concat(parts)
