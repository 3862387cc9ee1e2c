"""The benchmark's cases: one function per kind of row, each returning one
:class:`~experiments.bench.record.Record`, and :func:`plan`, the rows a run makes (the cases
are described in :mod:`experiments.bench`)."""

import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import common, shapes
from experiments.bench.memory import MemProbe, xla_temp_mb
from experiments.bench.products import matrix_products, measured_matmul_peak
from experiments.bench.record import PendingProducts, Record, new_record
from mode_interp import pipeline, samplers, sharding
from mode_interp.data import gaussians

CASES = ("sampler", "train", "unet", "unet_paper")
DEFAULT_CASES = ("sampler", "train")

# Training rows (here and in the official code's timing) report the fastest of this many
# timed blocks of steps: one moment of interference on a shared machine does not decide a ratio.
TRAIN_REPEATS = 3

# Dense peak FLOP/s of accelerators, by device kind and compute dtype (vendor figures),
# for the share of peak. On CPUs, whose peak depends on clocks and kernels, the share is of
# the rate of a large matrix product measured in the same run (measured_matmul_peak).
PEAK_FLOPS = {
  "NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
  "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 67e12},
  "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 19.5e12},
}


def _round_up(n: int, mesh) -> int:
  """``n`` rounded up to a multiple of the mesh's device count."""
  d = sharding.num_shards(mesh)
  return -(-n // d) * d


def _toy_config(timesteps: int, batch_size: int = 2_000, dtype: str = "float32"):
  """The Gaussian experiments' config: toy MLP and schedule, with ``T``, batch and the
  hidden layers' product dtype set."""
  cfg = common.gaussian_config("gaussian1d", "")
  cfg.diffusion.timesteps = timesteps
  cfg.train.batch_size = batch_size
  cfg.model.dtype = dtype
  return cfg


def bench_sampler(
  mesh,
  dim: int,
  num_samples: int,
  timesteps: int,
  probe: MemProbe,
  max_repeats: int = 3,
  min_total_s: float = 2.0,
  dtype: str = "float32",
) -> Record:
  """One record: the DDPM scan sampler over one chunk of ``num_samples``."""
  n = _round_up(num_samples, mesh)
  probe.start()
  cfg = _toy_config(timesteps, dtype=dtype)
  model = pipeline.make_model(cfg)
  repl, ds = sharding.replicated(mesh), sharding.data_sharding(mesh)
  params = sharding.jit_once(
    lambda k: model.init(k, jnp.zeros((1, dim)), jnp.zeros((1,), jnp.int32)),
    mesh,
    out_shardings=repl,
  )(jax.random.key(0))["params"]
  sample_jit = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), (dim,), mesh=mesh)
  key = jax.device_put(jax.random.key(1), repl)
  idx = jax.device_put(np.arange(n, dtype=np.int32), ds)

  t0 = time.perf_counter()
  compiled = sample_jit.lower(params, key, idx).compile()
  compile_s = time.perf_counter() - t0
  # Repeat short calls (the --quick sizes) to tame the noise; report the fastest.
  times = []
  while len(times) < max_repeats and (not times or sum(times) < min_total_s):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, key, idx))
    times.append(time.perf_counter() - t0)
  peak, source = probe.peak()
  # FLOPs of a reverse step: the network over the N samples at one t (the update, noise and
  # variance are elementwise, a few FLOPs per sample).
  rec = new_record(
    mesh,
    case="sampler",
    model="mlp",
    dtype=dtype,
    dim=dim,
    shape=[dim],
    num_samples=n,
    timesteps=timesteps,
    steps_timed=timesteps * len(times),
    ms_per_step=1000.0 * min(times) / timesteps,
    compile_s=compile_s,
    wall_s=sum(times),
    peak_mem_mb=peak,
    rss_start_mb=probe.rss_start_mb,
    mem_source=source,
    xla_temp_mb=xla_temp_mb(compiled),
  )
  if sharding.num_shards(mesh) == 1:
    # The network's matrix products over the chunk, in the sampler's row tiles, alone.
    k, rows = samplers.tile_counts(n, pipeline.rows_per_pass(cfg.sample.get("tile_rows", -1), mesh))
    products = matrix_products(
      pipeline.eps_fn_for(model),
      params,
      jnp.zeros((rows, dim), jnp.float32),
      jnp.zeros((1,), jnp.int32),
    )
    rec.pending_products = PendingProducts(products, k)
  return _throughput(rec, _net_flops(model, params, (n, dim)))


def flops(compiled):
  """FLOPs of one call of a compiled (or lowered) function from XLA's cost analysis (None if
  absent)."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None
  ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
  flops = (ca or {}).get("flops")
  return float(flops) if flops else None


def _throughput(rec: Record, flops_per_call, calls_per_step=1.0) -> Record:
  """Adds GFLOP per step, achieved TFLOP/s and the share of the device's peak."""
  if not flops_per_call:
    return rec
  per_step = flops_per_call / calls_per_step
  rec.gflop_per_step = per_step / 1e9
  rec.tflops = per_step / (rec.ms_per_step / 1000.0) / 1e12
  dtype = rec.dtype or "float32"
  peak = PEAK_FLOPS.get(rec.device_kind, {}).get(dtype)
  if peak:
    rec.peak_share = rec.tflops * 1e12 / (peak * rec.devices)
  elif rec.platform == "cpu":
    # Simulated CPU devices share the cores: the whole machine's measured matmul rate.
    rec.peak_flops_measured = measured_matmul_peak(dtype)
    rec.peak_share = rec.tflops * 1e12 / rec.peak_flops_measured
  return rec


def _bench_train_step(
  cfg,
  model,
  data: np.ndarray,
  mesh,
  warmup: int,
  steps: int,
  with_flops: bool = False,
  repeats: int = None,
):
  """Times ``repeats`` blocks of ``steps`` jitted train steps after ``warmup`` ones; returns
  ``(ms_per_step, compile_s, wall_s, xla_temp_mb)`` (+ FLOPs per step with ``with_flops``),
  ``ms_per_step`` being the fastest block's mean (as the official code's timing does).
  ``repeats``: :data:`TRAIN_REPEATS` by default."""
  repeats = repeats or TRAIN_REPEATS
  repl = sharding.replicated(mesh)
  init_key, run_key = jax.random.split(jax.random.key(cfg.seed))
  # The same compiled init and step as pipeline.train_model, so the benchmark times what runs.
  trainer = pipeline.make_trainer(cfg, mesh)
  init_jit, step_jit = trainer.init, trainer.step
  state = init_jit(jnp.asarray(data[:1]), init_key)
  data_dev = jax.device_put(jnp.asarray(data), repl)
  run_key = jax.device_put(run_key, repl)

  t0 = time.perf_counter()
  compiled = step_jit.lower(state, data_dev, run_key).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = compiled(state, data_dev, run_key)
  jax.block_until_ready(state)
  blocks = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, data_dev, run_key)
    jax.block_until_ready((state, metrics))
    blocks.append(time.perf_counter() - t0)
  wall = sum(blocks)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError("the benchmark's training loss is not finite")
  out = (1000.0 * min(blocks) / steps, compile_s, wall, xla_temp_mb(compiled))
  return out + (flops(compiled),) if with_flops else out


def bench_train_mlp(
  mesh,
  batch_size: int,
  probe: MemProbe,
  steps: int,
  warmup: int = 3,
  num_train: int = 20_000,
  dtype: str = "float32",
) -> Record:
  """One record: the toy MLP's train step on ``num_train`` 1D mixture points."""
  bs = _round_up(batch_size, mesh)
  probe.start()
  cfg = _toy_config(1000, bs, dtype)
  data = gaussians.make_mixture("gaussian1d").sample(num_train, seed=0)
  ms, compile_s, wall, temp = _bench_train_step(
    cfg, pipeline.make_model(cfg), data, mesh, warmup, steps
  )
  peak, source = probe.peak()
  rec = new_record(
    mesh,
    case="train",
    model="mlp",
    dtype=dtype,
    dim=1,
    shape=[1],
    batch_size=bs,
    timesteps=cfg.diffusion.timesteps,
    steps_timed=steps * TRAIN_REPEATS,
    ms_per_step=ms,
    compile_s=compile_s,
    wall_s=wall,
    peak_mem_mb=peak,
    rss_start_mb=probe.rss_start_mb,
    mem_source=source,
    xla_temp_mb=temp,
  )
  if sharding.num_shards(mesh) == 1:
    # The step's matrix products alone, compiled with the row's options: how much of the step
    # anything but a faster product could still save.
    with sharding.xla_default_options():  # traced without options (jaxprs of nested jits)
      plain = pipeline.make_trainer(cfg, mesh)
    state = jax.eval_shape(plain.init, jnp.asarray(data[:1]), jax.random.key(0))
    rec.pending_products = PendingProducts(
      matrix_products(plain.step, state, jnp.asarray(data), jax.random.key(0)), 1
    )
  return _throughput(rec, _step_flops(cfg, data, mesh))


def _step_flops(cfg, data, mesh):
  """FLOPs of one whole training step, from XLA's cost analysis of the step lowered without
  micro-batches (a micro-batched step's loop body is counted once)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.train.micro_batch = 0
  trainer = pipeline.make_trainer(cfg, mesh)
  state = jax.eval_shape(trainer.init, jnp.asarray(data[:1]), jax.random.key(0))
  return flops(trainer.step.lower(state, jnp.asarray(data), jax.random.key(0)))


def _unet_config(variant: str, dtype: str, batch_size=None):
  cfg = shapes.get_config(variant)
  cfg.model.dtype = dtype
  if batch_size:
    cfg.train.batch_size = batch_size
  return cfg


def bench_train_unet(
  mesh,
  probe: MemProbe,
  steps: int,
  warmup: int = 2,
  num_train: int = 256,
  variant: str = "",
  dtype: str = "float32",
  batch_size=None,
) -> Record:
  """One record: a ``configs/shapes.py`` U-Net's train step on random images of its size."""
  cfg = _unet_config(variant, dtype, batch_size)
  cfg.train.batch_size = _round_up(cfg.train.batch_size, mesh)
  probe.start()
  shape = pipeline.input_shape(cfg)
  data = (
    np.random.default_rng(0)
    .uniform(-1, 1, (max(num_train, cfg.train.batch_size),) + shape)
    .astype(np.float32)
  )
  ms, compile_s, wall, temp, step_flops = _bench_train_step(
    cfg, pipeline.make_model(cfg), data, mesh, warmup, steps, with_flops=True
  )
  peak, source = probe.peak()
  rec = new_record(
    mesh,
    case="train",
    model=f"unet{':' + variant if variant else ''}",
    dim=int(np.prod(shape)),
    shape=list(shape),
    batch_size=cfg.train.batch_size,
    timesteps=cfg.diffusion.timesteps,
    steps_timed=steps * TRAIN_REPEATS,
    ms_per_step=ms,
    compile_s=compile_s,
    wall_s=wall,
    peak_mem_mb=peak,
    rss_start_mb=probe.rss_start_mb,
    mem_source=source,
    xla_temp_mb=temp,
    dtype=dtype,
  )
  return _throughput(rec, step_flops)


def bench_sample_unet(
  mesh, probe: MemProbe, chunk: int, variant: str = "", dtype: str = "float32", steps: int = 10
) -> Record:
  """One record: a ``configs/shapes.py`` U-Net's reverse step over a chunk of ``chunk``
  images, timed on a DDIM scan of ``steps`` steps (a reverse step costs the same whatever
  the scan's length); ``samples_steps_per_s / T`` is the images per second of a full
  T-step DDPM run."""
  cfg = _unet_config(variant, dtype)
  cfg.sample.sampler, cfg.sample.num_steps, cfg.detect.window = (
    "ddim",
    steps,
    min(cfg.detect.window, steps),
  )
  n = _round_up(chunk, mesh)
  probe.start()
  shape = pipeline.input_shape(cfg)
  model = pipeline.make_model(cfg)
  repl, ds = sharding.replicated(mesh), sharding.data_sharding(mesh)
  params = sharding.jit_once(
    lambda k: model.init(k, jnp.zeros((1,) + shape), jnp.zeros((1,), jnp.int32)),
    mesh,
    out_shardings=repl,
  )(jax.random.key(0))["params"]
  sample_jit = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), shape, mesh=mesh, clip_x0=1.0)
  key = jax.device_put(jax.random.key(1), repl)
  idx = jax.device_put(np.arange(n, dtype=np.int32), ds)
  t0 = time.perf_counter()
  compiled = sample_jit.lower(params, key, idx).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(params, key, idx))  # warm-up
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(params, key, idx))
  wall = time.perf_counter() - t0
  peak, source = probe.peak()
  rec = new_record(
    mesh,
    case="sampler",
    model=f"unet{':' + variant if variant else ''}",
    dim=int(np.prod(shape)),
    shape=list(shape),
    num_samples=n,
    timesteps=cfg.diffusion.timesteps,
    steps_timed=steps,
    ms_per_step=1000.0 * wall / steps,
    compile_s=compile_s,
    wall_s=wall,
    peak_mem_mb=peak,
    rss_start_mb=probe.rss_start_mb,
    mem_source=source,
    xla_temp_mb=xla_temp_mb(compiled),
    dtype=dtype,
  )
  return _throughput(rec, _net_flops(model, params, (n,) + shape))


def _maybe_xla_defaults(defaults: bool, fn):
  """``fn``, run inside ``sharding.xla_default_options()`` when ``defaults``."""
  if not defaults:
    return fn

  def run(*args, **kwargs):
    with sharding.xla_default_options():
      return fn(*args, **kwargs)

  return run


def _net_flops(model, params, x_shape):
  """FLOPs of one network call over ``x_shape`` at one t: a reverse step's work. (XLA's cost
  analysis of a whole sampler counts its scan body once, whatever the number of steps.)"""
  return flops(
    jax.jit(pipeline.eps_fn_for(model)).lower(
      params, jnp.zeros(x_shape, jnp.float32), jnp.zeros((1,), jnp.int32)
    )
  )


def plan(cases, quick: bool, full: bool = False, unet_variant: str = ""):
  """The rows to run, as ``(label, fn(mesh, probe) -> record)``.

  ``unet_variant``: the ``configs/shapes.py`` variant the ``unet`` case times (``""``: the
  CPU default; the tests pass ``"tiny"``, which checks the rows, not the speed)."""
  rows = []
  if "sampler" in cases:
    if quick:
      sizes = [(1, 1_000, 100)]
    elif full:
      sizes = [
        (1, 10_000, 1000),
        (1, 100_000, 250),
        (1, 100_000, 1000),
        (2, 10_000, 1000),
        (2, 100_000, 1000),
      ]
    else:  # N = 100,000 at T = 100: the same work per step, 10x shorter on a CPU
      sizes = [
        (1, 10_000, 250),
        (1, 10_000, 1000),
        (1, 100_000, 100),
        (2, 10_000, 1000),
        (2, 100_000, 100),
      ]
    # bfloat16 products (model.dtype) beside the first row with an official counterpart.
    sizes = [s + ("float32",) for s in sizes]
    sizes.insert(1 if quick else 2, sizes[0 if quick else 1][:3] + ("bfloat16",))
    for dim, n, t, dt in sizes:
      rows.append(
        (
          f"sampler mlp {dim}D N={n} T={t} {dt}",
          lambda mesh, probe, dim=dim, n=n, t=t, dt=dt: bench_sampler(
            mesh, dim, n, t, probe, dtype=dt
          ),
        )
      )
  if "train" in cases:
    if quick:
      rows.append(
        (
          "train mlp batch=2000",
          lambda mesh, probe: bench_train_mlp(mesh, 2_000, probe, steps=5, warmup=1),
        )
      )
    else:
      # float32 with XLA's default options too: the project's options' gain, same run.
      for bs, dt, defaults in (
        (2_000, "float32", False),
        (2_000, "float32", True),
        (2_000, "bfloat16", False),
        (10_000, "float32", False),
        (10_000, "float32", True),
      ):
        rows.append(
          (
            f"train mlp batch={bs} {dt}{', XLA default options' if defaults else ''}",
            lambda mesh, probe, bs=bs, dt=dt, d=defaults: _maybe_xla_defaults(d, bench_train_mlp)(
              mesh, bs, probe, steps=30, dtype=dt
            ),
          )
        )
  if "unet" in cases:
    # The CPU default U-Net (or `unet_variant`'s): float32 with the project's compile
    # options, float32 with XLA's defaults (the options' gain, in the same run), bfloat16.
    # --quick (tests): one training row (float32) and one sampling row (bfloat16), since each
    # U-Net compilation costs seconds on a CPU; the rows' form is what the tests check. The
    # training row keeps the config's batch: the same program as that config's runs, so a
    # persistent compilation cache compiles it once for both.
    where = f"configs/shapes.py{':' + unet_variant if unet_variant else ''}"
    for dt, defaults in (("float32", False), ("float32", True), ("bfloat16", False)):
      tag = f"{dt}{', XLA default options' if defaults else ''}"
      if not (quick and (dt == "bfloat16" or defaults)):
        rows.append(
          (
            f"train unet ({where}) {tag}",
            lambda mesh, probe, dt=dt, d=defaults: _maybe_xla_defaults(d, bench_train_unet)(
              mesh, probe, steps=2 if quick else 10, dtype=dt, variant=unet_variant
            ),
          )
        )
      if quick and dt == "float32":
        continue
      rows.append(
        (
          f"sampler unet ({where}) {tag}",
          lambda mesh, probe, dt=dt, d=defaults: _maybe_xla_defaults(d, bench_sample_unet)(
            mesh,
            probe,
            8 if quick else 256,
            variant=unet_variant,
            dtype=dt,
            steps=2 if quick else 10,
          ),
        )
      )
  if "unet_paper" in cases:  # the paper's U-Net (64x64): for accelerators
    for dt in ("float32", "bfloat16"):
      rows.append(
        (
          f"train unet:paper batch=128 {dt}",
          lambda mesh, probe, dt=dt: bench_train_unet(
            mesh, probe, steps=10, variant="paper", dtype=dt, batch_size=128
          ),
        )
      )
      rows.append(
        (
          f"sampler unet:paper N=1000 {dt}",
          lambda mesh, probe, dt=dt: bench_sample_unet(
            mesh, probe, 1_000, variant="paper", dtype=dt, steps=10
          ),
        )
      )
  return rows
