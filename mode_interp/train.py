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

from mode_interp import diffusion, faults, preemption, sharding
from mode_interp.errors import Preempted, TrainingDivergedError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


LR_SCHEDULES = ("constant", "cosine")


def make_optimizer(
  lr: float,
  b1: float = 0.9,
  b2: float = 0.999,
  warmup_steps: int = 0,
  grad_clip: float = 0.0,
  schedule: str = "constant",
  total_steps: int = 0,
) -> optax.GradientTransformation:
  """Adam with optional linear warm-up, cosine decay (to 0 at ``total_steps``) and clipping."""
  if schedule == "cosine":
    sched = optax.warmup_cosine_decay_schedule(
      0.0 if warmup_steps else lr, lr, warmup_steps, max(total_steps, warmup_steps + 1)
    )
  elif schedule == "constant":
    sched = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr
  else:
    raise ValueError(f"unknown lr schedule {schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
  tx = optax.adam(sched, b1=b1, b2=b2)
  return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip else tx


def init_state(model, optimizer, sample_input, key) -> TrainState:
  t = jnp.zeros((sample_input.shape[0],), jnp.int32)
  params = model.init(key, sample_input, t)["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=params,
    opt_state=optimizer.init(params),
  )


def batch_indices(key, step, num_data: int, batch_size: int):
  """Indices of batch ``step``: uniform with replacement, a pure function of
  ``(key, step)``. (An epoch permutation costs a sort of the whole dataset per
  step: on a CPU core, more than the toy model's forward.)"""
  return jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, num_data)


def ema_decay_at(step, ema_decay: float):
  """The EMA decay used at update ``step`` (0-based): ``min(ema_decay, (1 + step) / (10 + step))``.

  The warm-up (as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``)
  keeps a short run's average from being mostly the random initial weights: with
  a constant 0.999, 200 steps leave 82% of the average at initialisation, a model
  whose samples diverge. From a few thousand steps on the configured decay rules.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def make_train_step(
  eps_fn: Callable,
  schedule: diffusion.Schedule,
  optimizer: optax.GradientTransformation,
  batch_size: int,
  ema_decay: float = 0.0,
  mesh=None,
  micro_batch: int = 0,
  vsm_rho=None,
):
  """``train_step(state, data, key) -> (state, metrics)``, pure and jittable.

  ``vsm_rho`` not None: the network learns its variance (``eps_fn.with_variance(params,
  x_t, t) -> (eps, v)``, from :func:`mode_interp.pipeline.eps_fn_for`) and is trained by
  :func:`mode_interp.diffusion.hybrid_losses` with VSM's penalty weighted by ``vsm_rho``
  (0: the learned-variance baseline); otherwise by the epsilon MSE.

  ``key`` is the run's base key; the data order and the noise of step ``s``
  are derived from it and ``state.step``.

  ``micro_batch > 0``: when a device's share of the batch is larger, its gradient is
  summed over micro-batches of at most that many rows, one after another: the same
  gradient (up to float rounding), with a working set that stays in a CPU core's cache
  (for the toy MLP at batch 10,000, nearly twice as fast on one core; reports/speed.md).
  """
  batch_spec = sharding.data_sharding(mesh) if mesh is not None else None
  n_dev = sharding.num_shards(mesh) if mesh is not None else 1
  k = num_micro_batches(batch_size // n_dev, micro_batch)

  def split(x):
    # [B, ...] -> [k, B/k, ...]; micro-batch j holds rows of every device's shard.
    y = x.reshape((n_dev, k, x.shape[0] // (n_dev * k)) + x.shape[1:])
    return jnp.swapaxes(y, 0, 1).reshape((k, x.shape[0] // k) + x.shape[1:])

  learned = vsm_rho is not None
  if learned and not hasattr(eps_fn, "with_variance"):
    raise ValueError("vsm_rho needs a learned-variance network (model.learn_sigma=True)")

  def example_losses(p, x0, t, noise):
    """Per-example losses [B] and their terms (the learned-variance case)."""
    return diffusion.hybrid_losses(eps_fn.with_variance, p, schedule, x0, t, noise, vsm_rho)

  def grads_of(params, batch, step_key):
    if learned:
      t, noise = diffusion.loss_inputs(schedule, batch, step_key)
      b = batch.shape[0]

      def part(p, x0, tt, nn):
        losses, terms = example_losses(p, x0, tt, nn)
        return jnp.sum(losses) / b, {n: jnp.sum(v) / b for n, v in terms.items()}

      grad_part = jax.value_and_grad(part, has_aux=True)
      if k == 1:
        (val, terms), grads = grad_part(params, batch, t, noise)
        return {"loss": val, **terms}, grads

      # As for the epsilon MSE below: one micro-batch's gradient at a time, summed.
      def body(acc, xs):
        if batch_spec is not None:
          xs = tuple(jax.lax.with_sharding_constraint(a, batch_spec) for a in xs)
        (val, terms), g = grad_part(params, *xs)
        sums = {n: acc[1][n] + terms[n] for n in terms}
        return (acc[0] + val, sums, jax.tree.map(jnp.add, acc[2], g)), None

      names = ("mse", "vb", "smooth")
      zero = (
        jnp.zeros((), jnp.float32),
        {n: jnp.zeros((), jnp.float32) for n in names},
        jax.tree.map(jnp.zeros_like, params),
      )
      (val, terms, grads), _ = jax.lax.scan(body, zero, (split(batch), split(t), split(noise)))
      return {"loss": val, **terms}, grads
    if k == 1:

      def loss(p):
        return diffusion.loss_fn(eps_fn, p, schedule, batch, step_key)

      (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
      return metrics, grads
    t, noise = diffusion.loss_inputs(schedule, batch, step_key)
    scale = 1.0 / batch.size

    def body(acc, xs):
      x0, tt, nn = xs
      if batch_spec is not None:
        x0, tt, nn = (jax.lax.with_sharding_constraint(a, batch_spec) for a in (x0, tt, nn))

      def part(p):
        return scale * jnp.sum(diffusion.eps_errors(eps_fn, p, schedule, x0, tt, nn))

      val, g = jax.value_and_grad(part)(params)
      return (acc[0] + val, jax.tree.map(jnp.add, acc[1], g)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(body, zero, (split(batch), split(t), split(noise)))
    return {"loss": loss}, grads

  def train_step(state: TrainState, data, key):
    data_key, noise_key = jax.random.split(key)
    idx = batch_indices(data_key, state.step, data.shape[0], batch_size)
    batch = data[idx]
    if batch_spec is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_spec)
    step_key = jax.random.fold_in(noise_key, state.step)

    metrics, grads = grads_of(state.params, batch, step_key)
    return apply_gradients(state, grads, optimizer, ema_decay), {
      **metrics,
      "grad_norm": optax.tree.norm(grads),
    }

  return train_step


def apply_gradients(state: TrainState, grads, optimizer, ema_decay: float = 0.0) -> TrainState:
  """The optimiser's update of ``state`` by ``grads`` and the EMA of the new parameters
  (every model's training step ends here)."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if ema_decay:
    decay = ema_decay_at(state.step, ema_decay)
    ema = optax.incremental_update(params, state.ema_params, step_size=1.0 - decay)
  else:
    ema = params
  return TrainState(state.step + 1, params, ema, opt_state)


def num_micro_batches(rows: int, micro_batch: int) -> int:
  """The fewest micro-batches of at most ``micro_batch`` rows that split ``rows`` evenly."""
  if micro_batch <= 0 or rows <= micro_batch:
    return 1
  k = -(-rows // micro_batch)
  while rows % k:
    k += 1
  return k


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state) -> tuple:
  """Restores the latest readable checkpoint into ``abstract_state``'s structure, dtypes and
  shardings (e.g. from ``jax.eval_shape``).

  A checkpoint that cannot be read (cut short by a crash, damaged on disk) is
  skipped with a warning and the one before it is tried, so at most one
  checkpoint interval of training is lost. Returns ``(state or None, step or None)``.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to an older one
      logging.warning(
        "checkpoint at step %d in %s is unreadable (%s: %s); trying the one before",
        step,
        manager.directory,
        type(e).__name__,
        str(e).splitlines()[0][:200],
      )
      continue
    if not all_finite(restored.params):
      logging.warning(
        "checkpoint at step %d in %s holds non-finite weights; trying the one before",
        step,
        manager.directory,
      )
      continue
    return restored, step
  if manager.all_steps():
    logging.warning("no readable checkpoint in %s: training from the start", manager.directory)
  return None, None


@jax.jit
def _tree_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def all_finite(tree) -> bool:
  """Whether every entry of every array in ``tree`` is finite."""
  return bool(jax.device_get(_tree_finite(tree)))


def save(manager: ocp.CheckpointManager, state: TrainState, force: bool = False) -> None:
  step = int(jax.device_get(state.step))
  if manager.latest_step() == step:
    return
  manager.save(step, args=ocp.args.StandardSave(state), force=force)
  faults.maybe_kill("checkpoint", step)  # the crash tests' kill point: the write is in flight
  # Durable before training goes on: a kill at any later moment repeats at most one
  # checkpoint interval. (Left in flight, a write outlasting the next steps -- seen with
  # the toy model, 50 steps faster than one write -- could lose two intervals.)
  manager.wait_until_finished()


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
    logging.info(
      "%s %d/%d (%.0f%%) %.1f %s/s eta %.0fs %s",
      self.label,
      done,
      total,
      100.0 * done / max(total, 1),
      rate,
      self.unit,
      eta,
      extra,
    )


def train_loop(
  state: TrainState,
  train_step_jit: Callable,
  data,
  key,
  total_steps: int,
  *,
  manager: ocp.CheckpointManager,
  writer,
  log_every: int = 100,
  ckpt_every: int = 1000,
  label: str = "train",
) -> TrainState:
  """Runs ``train_step_jit`` from ``state.step`` to ``total_steps``; logs and checkpoints.

  After every step it asks :func:`preemption.should_stop`: on a stop signal it finishes that
  step, checkpoints it (durably, as the periodic ones) and raises :class:`Preempted`, so a
  preemption repeats no step.
  """
  start = int(jax.device_get(state.step))
  if start >= total_steps:
    logging.info(
      "%s: checkpoint at step %d >= train.steps=%d; no training needed", label, start, total_steps
    )
    return state
  progress = Progress(label, total_steps, start=start, unit="steps")

  def finite_metrics(metrics, s):
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # A finite loss and gradient at step s mean finite weights before and after it (Adam's
    # update of a finite gradient is finite); anything else stops the run before a save.
    if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
      manager.wait_until_finished()
      last = manager.latest_step()
      kept = (
        f"the last good checkpoint (step {last}) is kept in {manager.directory}"
        if last is not None
        else "no checkpoint was written"
      )
      raise TrainingDivergedError(
        f"{label}: training diverged (loss {m['loss']}, gradient norm {m['grad_norm']} at "
        f"step {s}); {kept}. Lower train.lr, or set train.warmup_steps / train.grad_clip, "
        f"in a new --workdir"
      )
    return m

  for step in range(start, total_steps):
    state, metrics = train_step_jit(state, data, key)
    s = step + 1
    log_now = s % log_every == 0 or s == total_steps
    ckpt_now = s % ckpt_every == 0 or s == total_steps
    if log_now or ckpt_now:
      # Fetch metrics only at log and checkpoint steps, so the host does not stall every step.
      m = finite_metrics(metrics, s)
      if log_now:
        writer.write(s, **m)
        progress(s, extra=f"loss {m['loss']:.4f}")
    if ckpt_now:
      save(manager, state)
    faults.maybe_kill("train", s)
    if preemption.should_stop():
      if not (log_now or ckpt_now):
        finite_metrics(metrics, s)
      save(manager, state, force=True)
      raise Preempted(
        f"{label}: preempted at step {s}: checkpoint saved; rerun the same command to resume"
      )
  manager.wait_until_finished()
  return state
