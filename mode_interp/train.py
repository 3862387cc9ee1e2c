"""Training: state, the jitted data-parallel step, and a resumable loop.

The dataset lives on the devices (replicated; the toy sets, shapes and MNIST
are at most a few hundred MB). Batch ``s`` is drawn from it by indices that are
a pure function of ``(seed, s)``, so a resumed run sees exactly the batches an
uninterrupted run would have seen. The gathered batch is
constrained to be sharded along the mesh's ``data`` axis; parameters and
optimiser state stay replicated; XLA inserts the gradient all-reduce.
"""

import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from mode_interp import diffusion, sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


LR_SCHEDULES = ("constant", "cosine")


def make_optimizer(lr: float, b1: float = 0.9, b2: float = 0.999, warmup_steps: int = 0,
                   grad_clip: float = 0.0, schedule: str = "constant",
                   total_steps: int = 0) -> optax.GradientTransformation:
  """Adam with optional linear warm-up, cosine decay (to 0 at ``total_steps``) and clipping."""
  if schedule == "cosine":
    sched = optax.warmup_cosine_decay_schedule(0.0 if warmup_steps else lr, lr, warmup_steps,
                                               max(total_steps, warmup_steps + 1))
  elif schedule == "constant":
    sched = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr
  else:
    raise ValueError(f"unknown lr schedule {schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
  tx = optax.adam(sched, b1=b1, b2=b2)
  return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip else tx


def init_state(model, optimizer, sample_input, key) -> TrainState:
  t = jnp.zeros((sample_input.shape[0],), jnp.int32)
  params = model.init(key, sample_input, t)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=optimizer.init(params))


def batch_indices(key, step, num_data: int, batch_size: int):
  """Indices of batch ``step``: uniform with replacement, a pure function of
  ``(key, step)``. (An epoch permutation costs a sort of the whole dataset per
  step, ~8 ms for 20k points on a CPU core: more than the toy model's forward.)"""
  return jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, num_data)


def make_train_step(eps_fn: Callable, schedule: diffusion.Schedule,
                    optimizer: optax.GradientTransformation, batch_size: int,
                    ema_decay: float = 0.0, mesh=None):
  """``train_step(state, data, key) -> (state, metrics)``, pure and jittable.

  ``key`` is the run's base key; the data order and the noise of step ``s``
  are derived from it and ``state.step``.
  """
  batch_spec = sharding.data_sharding(mesh) if mesh is not None else None

  def train_step(state: TrainState, data, key):
    data_key, noise_key = jax.random.split(key)
    idx = batch_indices(data_key, state.step, data.shape[0], batch_size)
    batch = data[idx]
    if batch_spec is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_spec)
    step_key = jax.random.fold_in(noise_key, state.step)

    def loss(p):
      return diffusion.loss_fn(eps_fn, p, schedule, batch, step_key)

    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if ema_decay:
      ema = optax.incremental_update(params, state.ema_params, step_size=1.0 - ema_decay)
    else:
      ema = params
    metrics["grad_norm"] = optax.tree.norm(grads)
    return TrainState(state.step + 1, params, ema, opt_state), metrics

  return train_step


def restore_or_init(manager: ocp.CheckpointManager, state: TrainState) -> tuple:
  """Restores the latest checkpoint into ``state``'s structure (and shardings).

  Returns ``(state, restored_step or None)``.
  """
  step = manager.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  return restored, step


def save(manager: ocp.CheckpointManager, state: TrainState, force: bool = False) -> None:
  step = int(jax.device_get(state.step))
  if manager.latest_step() == step:
    return
  manager.save(step, args=ocp.args.StandardSave(state), force=force)


class Progress:
  """Prints ``label step/total (pct) rate eta`` at most every ``every_s`` seconds."""

  def __init__(self, label: str, total: int, start: int = 0, every_s: float = 10.0, unit="it"):
    self.label, self.total, self.start, self.every_s, self.unit = label, total, start, every_s, unit
    self.t0 = self.last = time.time()

  def __call__(self, done: int, total: Optional[int] = None, extra: str = "", force=False):
    total = total or self.total
    now = time.time()
    if not force and now - self.last < self.every_s and done < total:
      return
    self.last = now
    rate = (done - self.start) / max(now - self.t0, 1e-9)
    eta = (total - done) / rate if rate > 0 else float("nan")
    logging.info("%s %d/%d (%.0f%%) %.1f %s/s eta %.0fs %s", self.label, done, total,
                 100.0 * done / max(total, 1), rate, self.unit, eta, extra)


def train_loop(state: TrainState, train_step_jit: Callable, data, key, total_steps: int, *,
               manager: ocp.CheckpointManager, writer, log_every: int = 100,
               ckpt_every: int = 1000, label: str = "train") -> TrainState:
  """Runs ``train_step_jit`` from ``state.step`` to ``total_steps``; logs and checkpoints."""
  start = int(jax.device_get(state.step))
  if start >= total_steps:
    logging.info("%s: checkpoint at step %d >= train.steps=%d; no training needed",
                 label, start, total_steps)
    return state
  progress = Progress(label, total_steps, start=start, unit="steps")
  for step in range(start, total_steps):
    state, metrics = train_step_jit(state, data, key)
    s = step + 1
    if s % log_every == 0 or s == total_steps:
      # Fetch metrics only at log steps, so the host does not stall every step.
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"{label}: loss is {m['loss']} at step {s}; lower train.lr")
      writer.write(s, **m)
      progress(s, extra=f"loss {m['loss']:.4f}")
    if s % ckpt_every == 0 or s == total_steps:
      save(manager, state)
  manager.wait_until_finished()
  return state
