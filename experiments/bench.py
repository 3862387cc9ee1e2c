r"""Speed and memory of the sampler and the training step.

  python -m experiments.bench                      # every case (a few minutes on 2 CPU cores)
  python -m experiments.bench --quick              # seconds: the smallest row of each case
  python -m experiments.bench --cases=unet         # the shapes U-Net, float32 vs bfloat16
  python -m experiments.bench --cases=unet_paper   # the paper's U-Net (accelerators)
  python -m experiments.bench --full               # N = 100,000 at T = 1000 (accelerators)
  python -m experiments.bench --cases=sampler --json=runs/bench.json --devices=4
  python -m experiments.bench --reference=PATH --reference_python=PY   # + the official code, same run

Cases:

``sampler``
  The toy MLP (width 128, 3 shared blocks) under the DDPM scan sampler with the
  toy schedule (linear betas 0.001 -> 0.2, trajectory variance over the last 10
  steps), built by :func:`mode_interp.pipeline.make_sampler` and drawing all N
  samples in one chunk (on CPUs in row tiles, ``sample.tile_rows``), in float32 and,
  for 1D N = 10,000 at T = 1000, also with bfloat16 products (``model.dtype``). ``ms_per_step`` is the wall time of one whole chunk call
  (compiled ahead of time, so no compilation is timed) divided by T. Rows: 1D
  and 2D at N = 10,000 (T = 1000) and N = 100,000 (T = 100: the work per reverse
  step does not depend on T, and T = 1000 would take ~10 minutes per row on 2
  CPU cores), plus 1D N = 10,000 at T = 250 next to T = 1000 to show that memory
  does not grow with T (the variance is accumulated in streaming form: O(N * D)
  memory). ``--full`` runs the N = 100,000 rows at T = 1000 and the T = 250 / 1000
  memory pair at N = 100,000 (for accelerators).
``train``
  The jitted, state-donating train step of :func:`mode_interp.train.make_train_step`:
  the toy MLP on 20,000 1D points at batch 2,000 (float32 and bfloat16 products) and
  10,000 (on CPUs in micro-batches, ``train.micro_batch``), and the U-Net of
  ``configs/shapes.py`` (its model, diffusion and ``train.batch_size`` fields) on
  32x32x1 images. ``ms_per_step`` is the fastest of :data:`TRAIN_REPEATS` blocks' mean
  step time after a warm-up (the official code's rows are timed the same way). The U-Net
  trains on random images: speed does not depend on their content.

``unet``
  The CPU default U-Net of ``configs/shapes.py`` in float32 and bfloat16 compute
  (``model.dtype``): its training step at the config's batch and its reverse step over
  a chunk of 256 images (timed on a 10-step DDIM scan; a reverse step costs the same
  in any scan), with GFLOP per step from XLA's cost analysis and TFLOP/s.
``unet_paper``
  The same for the ``:paper`` U-Net (64x64): training at batch 128, reverse steps over
  1,000 images; for accelerators, where ``%peak`` is the share of the device's dense
  peak for that dtype (``PEAK_FLOPS``).

FLOPs (``gflop_per_step``) come from XLA's cost analysis: for the toy sampler, of the
network over the N samples at one t; for a training step, of the whole step lowered
without micro-batches. ``%peak`` (``peak_share``) is the achieved rate over the device's
dense peak for that dtype: vendor figures for accelerators (``PEAK_FLOPS``); on CPUs the
fastest of two matrix products measured in the same run (``peak_flops_measured``, see
:func:`measured_matmul_peak`), since a CPU's peak depends on clocks and kernels.

``prod%`` (toy rows; ``products_ms`` / ``products_share``): the matrix products a step
computes (every ``dot_general`` of its jaxpr: for training, forward and backward, each
micro-batch; for the sampler, the network over the chunk in its row tiles; on one device),
timed alone in the same run on random operands of the same shapes with the row's compile
options, as a share of the whole step. Near 100% the step is bound by its products: only
faster products (another dtype, another kernel, another machine) or fewer FLOPs can speed it
up, not trimming the rest of the step.

``--quick`` (which overrides ``--full``) keeps only 1D N = 1,000, T = 100
(sampler), the MLP at batch 2,000 with fewer steps (train), and tiny batches for
the U-Net cases (one training row in float32, one sampling row in bfloat16).

Memory (``peak_mem_mb``, with ``mem_source`` saying what it is):

- GPU/TPU: ``memory_stats()['peak_bytes_in_use']`` of the first device
  (``device_peak_bytes_in_use``; a high-water mark over the whole process).
- CPU on Linux: the process's peak resident set since the case started
  (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``
  before each case: ``process_peak_rss_case``); ``rss_start_mb`` is the resident
  set when the case started, so ``peak_mem_mb - rss_start_mb`` is what the case
  added. Where the reset is not allowed: ``getrusage`` ``ru_maxrss`` (KiB on
  Linux), a high-water mark over the whole process (``process_peak_rss_lifetime``).
- Always: ``xla_temp_mb``, the scratch memory XLA reserves for the compiled
  function (per device), from ``compiled.memory_analysis()``; it does not depend
  on what the process did before, so it is the cleanest view of how memory
  scales with N and T.

Sizes are rounded up to a multiple of the device count (``--devices``, 0 = all).

``--json=PATH`` writes one JSON list (not JSONL) of records, one per row of the
table, each with the same keys: ``case``, ``model``, ``dim``, ``shape``,
``num_samples`` (sampler; null for train), ``batch_size`` (train; null for
sampler), ``timesteps``, ``devices``, ``steps_timed``, ``ms_per_step``,
``samples_steps_per_s`` (samples advanced one reverse step, or training examples,
per second), ``compile_s``, ``wall_s``, ``peak_mem_mb``, ``rss_start_mb``,
``mem_source``, ``xla_temp_mb``, ``reference_ms_per_step`` and
``speedup_vs_reference`` (null unless ``--reference`` was given and the row has a
counterpart: the toy MLP's training step at batch 2,000 and 10,000, and the 1D
sampler's reverse step at N = 10,000), ``reference_threads`` (torch's intra-op
threads), ``platform``, ``device_kind``, ``jax_version``, ``quick``, and
``machine`` (CPU model, cores, ISA flags such as AVX2, AVX-512 and AMX, host).

With ``--reference=PATH`` (a checkout of the official repository) the official
PyTorch toy code is timed at the same sizes *in the same run, on the same machine*
(``experiments/bench_reference.py``, run by ``--reference_python`` or
``$MODE_INTERP_REFERENCE_PYTHON``, an environment with CPU torch), and the ratios
are printed. Without it no ratio is shown: a figure from another machine is no
comparison. Timings on a shared CPU are noisy; compare rows from the same run.
"""

import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import common, shapes
from mode_interp import pipeline, samplers, sharding
from mode_interp.data import gaussians

# Simulated CPU devices (--devices with XLA_FLAGS) need enough host threads for the gradient
# all-reduce; set before jax starts its backend.
sharding.configure_host_threads()

FLAGS = flags.FLAGS
CASES = ("sampler", "train", "unet", "unet_paper")
DEFAULT_CASES = ("sampler", "train")
flags.DEFINE_list("cases", list(DEFAULT_CASES), f"Which cases to run, of: {', '.join(CASES)} "
                  f"(default: {', '.join(DEFAULT_CASES)}).")
flags.DEFINE_bool("quick", False, "Smallest sizes only (seconds; for tests and smoke runs).")
flags.DEFINE_string("json", None, "Write the records to this path (one JSON list).")
flags.DEFINE_bool("full", False, "Sampler rows at N = 100,000 with T = 1000 (about half an "
                  "hour on 2 CPU cores; for accelerators).")
flags.DEFINE_integer("devices", 0, "Devices in the data-parallel mesh (0: every device).")
flags.DEFINE_string("reference", None, "A checkout of the official repository "
                    "(locuslab/diffusion-model-hallucination): time its toy code in the same run.")
flags.DEFINE_string("reference_python", None, "Python of an environment with CPU torch for "
                    "--reference (default: $MODE_INTERP_REFERENCE_PYTHON).")
flags.DEFINE_integer("reference_threads", 0, "torch intra-op threads (0: torch's default).")

# Training rows (here and in the official code's timing) report the fastest of this many
# timed blocks of steps: one moment of interference on a shared machine does not decide a ratio.
TRAIN_REPEATS = 3

REFERENCE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_reference.py")

RECORD_KEYS = ("case", "model", "dim", "shape", "num_samples", "batch_size", "timesteps",
               "devices", "steps_timed", "ms_per_step", "samples_steps_per_s", "compile_s",
               "wall_s", "peak_mem_mb", "rss_start_mb", "mem_source", "xla_temp_mb",
               "reference_ms_per_step", "speedup_vs_reference", "reference_threads", "platform",
               "device_kind", "jax_version", "quick", "machine", "dtype", "gflop_per_step",
               "tflops", "peak_share", "peak_flops_measured", "reference_torch",
               "compile_options", "xla_defaults", "products_ms", "products_share")

# Dense peak FLOP/s of accelerators, by device kind and compute dtype (vendor figures),
# for the share of peak. On CPUs, whose peak depends on clocks and kernels, the share is of
# the rate of a large matrix product measured in the same run (measured_matmul_peak).
PEAK_FLOPS = {
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 19.5e12},
}

_MB = 1024.0 * 1024.0


def measured_matmul_peak(dtype: str = "float32", repeats: int = 5) -> float:
  """FLOP/s of the fastest of two matrix products on the default device, best of
  ``repeats`` each: ``1024 x 1024 x 1024`` and ``2048 x 128 x 128`` (the toy MLP's shape),
  bfloat16 inputs accumulating in float32. The CPU's practical dense peak for ``dtype``,
  against which ``%peak`` is given on CPUs (vendor peaks there depend on clocks and
  kernels). Measured once per run and dtype."""
  cache = measured_matmul_peak.__dict__.setdefault("cache", {})
  if dtype not in cache:
    dt = jnp.dtype(dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    rates = []
    for m, k, n, calls in ((1024, 1024, 1024, 4), (2048, 128, 128, 64)):
      a, b = jnp.ones((m, k), dt), jnp.ones((k, n), dt)
      rates.append(2.0 * m * k * n / _fastest_call_s(f, (a, b), repeats, calls))
    cache[dtype] = max(rates)
  return cache[dtype]


def _fastest_call_s(fn, args, repeats: int, calls: int) -> float:
  """Seconds per call of ``fn(*args)`` after one warm-up call: the fastest of ``repeats``
  timings of ``calls`` calls in a row."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / calls)
  return best


# ----------------------------------------------------------------------------- memory


def _proc_status_kb(field: str):
  """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


class _MemProbe:
  """Peak memory of one case; see the module docstring for the sources."""

  def __init__(self):
    dev = jax.devices()[0]
    stats = None
    if dev.platform != "cpu":
      try:
        stats = dev.memory_stats()
      except Exception:  # pylint: disable=broad-except  # backends without stats
        stats = None
    self.device = dev if stats and "peak_bytes_in_use" in stats else None
    self.rss_start_mb = None
    self.case_reset = False

  def start(self):
    if self.device is not None:
      return
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one
      self.case_reset = _proc_status_kb("VmHWM") is not None
    except OSError:
      self.case_reset = False
    rss = _proc_status_kb("VmRSS")
    self.rss_start_mb = None if rss is None else rss / 1024.0

  def peak(self):
    """``(peak_mb, mem_source)``."""
    if self.device is not None:
      return self.device.memory_stats()["peak_bytes_in_use"] / _MB, "device_peak_bytes_in_use"
    if self.case_reset:
      return _proc_status_kb("VmHWM") / 1024.0, "process_peak_rss_case"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_peak_rss_lifetime"


def _xla_temp_mb(compiled):
  """XLA's scratch memory for a compiled function, in MiB (None if not reported)."""
  try:
    ma = compiled.memory_analysis()
    return None if ma is None else ma.temp_size_in_bytes / _MB
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None


# ----------------------------------------------------------------------------- cases


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


def machine_info() -> dict:
  """The machine a record was measured on: CPU model, cores, the ISA flags that decide
  which kernels run (AVX2, AVX-512, AMX), host, jax version."""
  model, flags_ = sharding.cpu_info()
  model = model or platform.processor() or ""
  wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
  return {"cpu_model": model, "cpu_count": os.cpu_count(), "host": platform.node(),
          "isa": [f for f in wanted if f in flags_], "jax": jax.__version__}


def _record(mesh, **kw):
  """A record with every key of :data:`RECORD_KEYS`; throughput filled in."""
  dev = jax.devices()[0]
  rec = dict.fromkeys(RECORD_KEYS)
  rec.update(devices=sharding.num_shards(mesh), platform=dev.platform,
             device_kind=dev.device_kind, jax_version=jax.__version__, machine=machine_info())
  rec.update(kw)
  # The project's XLA options for this network (sharding.compiler_options), or {} where XLA's
  # defaults were asked for (the comparison rows, inside sharding.xla_default_options()).
  conv, training = not str(rec["model"]).startswith("mlp"), rec["case"] == "train"
  rec["compile_options"] = sharding.compiler_options(mesh, convolutional=conv, training=training)
  rec["xla_defaults"] = bool((conv or training) and sharding.using_xla_defaults())
  per_item = rec["num_samples"] if rec["case"] == "sampler" else rec["batch_size"]
  rec["samples_steps_per_s"] = per_item * 1000.0 / rec["ms_per_step"]
  return rec


class ReferenceError_(RuntimeError):
  """The reference run could not be made; the message says why, in one line."""


def reference_python(flag_value) -> str:
  py = flag_value or os.environ.get("MODE_INTERP_REFERENCE_PYTHON", "")
  if not py:
    raise ReferenceError_("--reference needs a Python with CPU torch: pass --reference_python "
                          "or set $MODE_INTERP_REFERENCE_PYTHON")
  return py


def time_reference(path: str, python: str, records, threads: int = 0, quick: bool = False,
                   log=print) -> dict:
  """Times the official toy code (``experiments/bench_reference.py``) at the sizes of the
  records that have a counterpart, and fills in their reference columns. Returns the
  reference run's JSON."""
  import subprocess
  src = os.path.join(path, "gaussian_experiments")
  if not os.path.isdir(os.path.join(src, "ddpm_torch", "toy")):
    raise ReferenceError_(f"--reference={path}: no gaussian_experiments/ddpm_torch/toy there; "
                          f"pass a checkout of locuslab/diffusion-model-hallucination")
  batches = sorted({r["batch_size"] for r in records
                    if r["case"] == "train" and r["model"] == "mlp"})
  ns = sorted({r["num_samples"] for r in records
               if r["case"] == "sampler" and r["dim"] == 1 and r["timesteps"] == 1000
               or (quick and r["case"] == "sampler" and r["dim"] == 1)})
  timesteps = 100 if quick else 1000
  cmd = [python, REFERENCE_SCRIPT, f"--timesteps={timesteps}", f"--threads={threads}"]
  cmd += [f"--train-batch={b}" for b in batches] + [f"--sampler-n={n}" for n in ns]
  if quick:
    cmd += ["--train-steps=5", "--sampler-steps=5"]
  log(f"bench: the official toy code ({len(batches)} training, {len(ns)} sampler sizes) ...")
  env = dict(os.environ, PYTHONPATH=src)
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
  except OSError as e:
    raise ReferenceError_(f"--reference_python={python}: cannot run it ({e})") from None
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise ReferenceError_(f"the reference run failed (exit {proc.returncode}): {err}")
  ref = json.loads(lines[-1])
  by_batch = {r["batch_size"]: r["ms_per_step"] for r in ref["train"]}
  by_n = {r["num_samples"]: r["ms_per_step"] for r in ref["sampler"]}
  for r in records:
    ms = None
    if r["case"] == "train" and r["model"] == "mlp":
      ms = by_batch.get(r["batch_size"])
    elif r["case"] == "sampler" and r["dim"] == 1 and r["timesteps"] == timesteps:
      ms = by_n.get(r["num_samples"])
    if ms is not None:
      r.update(reference_ms_per_step=ms, speedup_vs_reference=ms / r["ms_per_step"],
               reference_threads=ref["threads"], reference_torch=ref.get("torch"))
  return ref


def bench_sampler(mesh, dim: int, num_samples: int, timesteps: int, probe: _MemProbe,
                  max_repeats: int = 3, min_total_s: float = 2.0, dtype: str = "float32") -> dict:
  """One record: the DDPM scan sampler over one chunk of ``num_samples``."""
  n = _round_up(num_samples, mesh)
  probe.start()
  cfg = _toy_config(timesteps, dtype=dtype)
  model = pipeline.make_model(cfg)
  repl, ds = sharding.replicated(mesh), sharding.data_sharding(mesh)
  params = sharding.jit_once(
      lambda k: model.init(k, jnp.zeros((1, dim)), jnp.zeros((1,), jnp.int32)), mesh,
      out_shardings=repl)(jax.random.key(0))["params"]
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
  rec = _record(mesh, case="sampler", model="mlp", dtype=dtype, dim=dim, shape=[dim],
                num_samples=n,
                timesteps=timesteps, steps_timed=timesteps * len(times),
                ms_per_step=1000.0 * min(times) / timesteps, compile_s=compile_s,
                wall_s=sum(times), peak_mem_mb=peak, rss_start_mb=probe.rss_start_mb,
                mem_source=source, xla_temp_mb=_xla_temp_mb(compiled))
  if sharding.num_shards(mesh) == 1:
    # The network's matrix products over the chunk, in the sampler's row tiles, alone.
    k, rows = samplers.tile_counts(n, pipeline.rows_per_pass(cfg.sample.get("tile_rows", -1), mesh))
    products = matrix_products(pipeline.eps_fn_for(model), params,
                               jnp.zeros((rows, dim), jnp.float32), jnp.zeros((1,), jnp.int32))
    rec[_PENDING] = (products, k)
  return _throughput(rec, _net_flops(model, params, (n, dim)))


def _flops(compiled):
  """FLOPs of one call of a compiled (or lowered) function from XLA's cost analysis (None if
  absent)."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None
  ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
  flops = (ca or {}).get("flops")
  return float(flops) if flops else None


def _throughput(rec, flops_per_call, calls_per_step=1.0):
  """Adds GFLOP per step, achieved TFLOP/s and the share of the device's peak."""
  if not flops_per_call:
    return rec
  per_step = flops_per_call / calls_per_step
  rec["gflop_per_step"] = per_step / 1e9
  rec["tflops"] = per_step / (rec["ms_per_step"] / 1000.0) / 1e12
  dtype = rec["dtype"] or "float32"
  peak = PEAK_FLOPS.get(rec["device_kind"], {}).get(dtype)
  if peak:
    rec["peak_share"] = rec["tflops"] * 1e12 / (peak * rec["devices"])
  elif rec["platform"] == "cpu":
    # Simulated CPU devices share the cores: the whole machine's measured matmul rate.
    rec["peak_flops_measured"] = measured_matmul_peak(dtype)
    rec["peak_share"] = rec["tflops"] * 1e12 / rec["peak_flops_measured"]
  return rec


def _bench_train_step(cfg, model, data: np.ndarray, mesh, warmup: int, steps: int,
                      with_flops: bool = False, repeats: int = None):
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
  out = (1000.0 * min(blocks) / steps, compile_s, wall, _xla_temp_mb(compiled))
  return out + (_flops(compiled),) if with_flops else out


def matrix_products(fn, *args) -> list:
  """The matrix products (``dot_general``) one call of ``fn(*args)`` computes, from its jaxpr:
  a list of ``(lhs, rhs, params, times)`` (abstract values, the equation's parameters, and how
  often it runs: a product inside a ``scan`` runs once per iteration)."""
  found = []

  def walk(jaxpr, times):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        found.append((eqn.invars[0].aval, eqn.invars[1].aval, dict(eqn.params), times))
      inner = times * (int(eqn.params["length"]) if eqn.primitive.name == "scan" else 1)
      for sub in _sub_jaxprs(eqn.params.values()):
        walk(sub, inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr, 1)
  return found


def _sub_jaxprs(values):
  for v in values:
    if isinstance(v, jax.extend.core.ClosedJaxpr):
      yield v.jaxpr
    elif isinstance(v, jax.extend.core.Jaxpr):
      yield v
    elif isinstance(v, (tuple, list)):
      yield from _sub_jaxprs(v)


# A record's matrix products and how often a step runs them, listed by its case and timed by
# run() once every case has been measured (their operands would otherwise stay in the
# process's memory figures).
_PENDING = "_products"


def time_pending_products(records) -> None:
  """Fills ``products_ms`` / ``products_share`` of the records that list their products."""
  for rec in records:
    pending = rec.pop(_PENDING, None)
    if pending is not None:
      products, times = pending
      rec["products_ms"] = time_products(products, rec["compile_options"], times=times)
      rec["products_share"] = rec["products_ms"] / rec["ms_per_step"]


def time_products(products, compiler_options=None, repeats: int = 5, calls: int = 20,
                  times: int = 1) -> float:
  """Milliseconds for the matrix products ``products`` (from :func:`matrix_products`) alone:
  the products that run equally often are jitted together, on random operands of their shapes
  (distinct operands, so none is shared or fused away), timed, and counted that often (``times``
  more: a sampler's row tiles), as the step runs its scan iterations one after another. The
  floor a step made of those products could reach with every other operation free (up to
  cache effects). Fastest of ``repeats`` timings of ``calls`` calls per group."""
  groups = {}
  for lhs, rhs, params, n in products:
    groups.setdefault(n, []).append((lhs, rhs, params))
  rng = np.random.default_rng(0)
  total = 0.0
  for n, group in groups.items():
    operands = [tuple(jnp.asarray(rng.standard_normal(a.shape, np.float32), a.dtype)
                      for a in (lhs, rhs)) for lhs, rhs, _ in group]
    params = [p for _, _, p in group]

    def all_products(ops, params=params):
      return [jax.lax.dot_general_p.bind(a, b, **p) for (a, b), p in zip(ops, params)]

    fn = jax.jit(all_products, compiler_options=dict(compiler_options or {}))
    total += n * _fastest_call_s(fn, (operands,), repeats, calls)
  return 1000.0 * total * times


def bench_train_mlp(mesh, batch_size: int, probe: _MemProbe, steps: int, warmup: int = 3,
                    num_train: int = 20_000, dtype: str = "float32") -> dict:
  """One record: the toy MLP's train step on ``num_train`` 1D mixture points."""
  bs = _round_up(batch_size, mesh)
  probe.start()
  cfg = _toy_config(1000, bs, dtype)
  data = gaussians.make_mixture("gaussian1d").sample(num_train, seed=0)
  ms, compile_s, wall, temp = _bench_train_step(cfg, pipeline.make_model(cfg), data, mesh,
                                                warmup, steps)
  peak, source = probe.peak()
  rec = _record(mesh, case="train", model="mlp", dtype=dtype, dim=1, shape=[1], batch_size=bs,
                timesteps=cfg.diffusion.timesteps, steps_timed=steps * TRAIN_REPEATS,
                ms_per_step=ms,
                compile_s=compile_s, wall_s=wall, peak_mem_mb=peak,
                rss_start_mb=probe.rss_start_mb, mem_source=source, xla_temp_mb=temp)
  if sharding.num_shards(mesh) == 1:
    # The step's matrix products alone, compiled with the row's options: how much of the step
    # anything but a faster product could still save.
    with sharding.xla_default_options():   # traced without options (jaxprs of nested jits)
      plain = pipeline.make_trainer(cfg, mesh)
    state = jax.eval_shape(plain.init, jnp.asarray(data[:1]), jax.random.key(0))
    rec[_PENDING] = (matrix_products(plain.step, state, jnp.asarray(data), jax.random.key(0)), 1)
  return _throughput(rec, _step_flops(cfg, data, mesh))


def _step_flops(cfg, data, mesh):
  """FLOPs of one whole training step, from XLA's cost analysis of the step lowered without
  micro-batches (a micro-batched step's loop body is counted once)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.train.micro_batch = 0
  trainer = pipeline.make_trainer(cfg, mesh)
  state = jax.eval_shape(trainer.init, jnp.asarray(data[:1]), jax.random.key(0))
  return _flops(trainer.step.lower(state, jnp.asarray(data), jax.random.key(0)))


def _unet_config(variant: str, dtype: str, batch_size=None):
  cfg = shapes.get_config(variant)
  cfg.model.dtype = dtype
  if batch_size:
    cfg.train.batch_size = batch_size
  return cfg


def bench_train_unet(mesh, probe: _MemProbe, steps: int, warmup: int = 2, num_train: int = 256,
                     variant: str = "", dtype: str = "float32", batch_size=None) -> dict:
  """One record: a ``configs/shapes.py`` U-Net's train step on random images of its size."""
  cfg = _unet_config(variant, dtype, batch_size)
  cfg.train.batch_size = _round_up(cfg.train.batch_size, mesh)
  probe.start()
  side = int(round(64 * cfg.data.scale))
  shape = (side, side, 1)
  data = np.random.default_rng(0).uniform(-1, 1, (max(num_train, cfg.train.batch_size),)
                                          + shape).astype(np.float32)
  ms, compile_s, wall, temp, flops = _bench_train_step(cfg, pipeline.make_model(cfg), data, mesh,
                                                       warmup, steps, with_flops=True)
  peak, source = probe.peak()
  rec = _record(mesh, case="train", model=f"unet{':' + variant if variant else ''}",
                dim=int(np.prod(shape)), shape=list(shape), batch_size=cfg.train.batch_size,
                timesteps=cfg.diffusion.timesteps, steps_timed=steps * TRAIN_REPEATS,
                ms_per_step=ms,
                compile_s=compile_s, wall_s=wall, peak_mem_mb=peak,
                rss_start_mb=probe.rss_start_mb, mem_source=source, xla_temp_mb=temp,
                dtype=dtype)
  return _throughput(rec, flops)


def bench_sample_unet(mesh, probe: _MemProbe, chunk: int, variant: str = "",
                      dtype: str = "float32", steps: int = 10) -> dict:
  """One record: a ``configs/shapes.py`` U-Net's reverse step over a chunk of ``chunk``
  images, timed on a DDIM scan of ``steps`` steps (a reverse step costs the same whatever
  the scan's length); ``samples_steps_per_s / T`` is the images per second of a full
  T-step DDPM run."""
  cfg = _unet_config(variant, dtype)
  cfg.sample.sampler, cfg.sample.num_steps, cfg.detect.window = "ddim", steps, min(
      cfg.detect.window, steps)
  n = _round_up(chunk, mesh)
  probe.start()
  side = int(round(64 * cfg.data.scale))
  shape = (side, side, 1)
  model = pipeline.make_model(cfg)
  repl, ds = sharding.replicated(mesh), sharding.data_sharding(mesh)
  params = sharding.jit_once(
      lambda k: model.init(k, jnp.zeros((1,) + shape), jnp.zeros((1,), jnp.int32)), mesh,
      out_shardings=repl)(jax.random.key(0))["params"]
  sample_jit = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), shape, mesh=mesh,
                                     clip_x0=1.0)
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
  rec = _record(mesh, case="sampler", model=f"unet{':' + variant if variant else ''}",
                dim=int(np.prod(shape)), shape=list(shape), num_samples=n,
                timesteps=cfg.diffusion.timesteps, steps_timed=steps,
                ms_per_step=1000.0 * wall / steps, compile_s=compile_s, wall_s=wall,
                peak_mem_mb=peak, rss_start_mb=probe.rss_start_mb, mem_source=source,
                xla_temp_mb=_xla_temp_mb(compiled), dtype=dtype)
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
  return _flops(jax.jit(pipeline.eps_fn_for(model)).lower(
      params, jnp.zeros(x_shape, jnp.float32), jnp.zeros((1,), jnp.int32)))


def plan(cases, quick: bool, full: bool = False, unet_variant: str = ""):
  """The rows to run, as ``(label, fn(mesh, probe) -> record)``.

  ``unet_variant``: the ``configs/shapes.py`` variant the ``unet`` case times (``""``: the
  CPU default; the tests pass ``"tiny"``, which checks the rows, not the speed)."""
  rows = []
  if "sampler" in cases:
    if quick:
      sizes = [(1, 1_000, 100)]
    elif full:
      sizes = [(1, 10_000, 1000), (1, 100_000, 250), (1, 100_000, 1000),
               (2, 10_000, 1000), (2, 100_000, 1000)]
    else:  # N = 100,000 at T = 100: the same work per step, 10x shorter on a CPU
      sizes = [(1, 10_000, 250), (1, 10_000, 1000), (1, 100_000, 100),
               (2, 10_000, 1000), (2, 100_000, 100)]
    # bfloat16 products (model.dtype) beside the first row with an official counterpart.
    sizes = [s + ("float32",) for s in sizes]
    sizes.insert(1 if quick else 2, sizes[0 if quick else 1][:3] + ("bfloat16",))
    for dim, n, t, dt in sizes:
      rows.append((f"sampler mlp {dim}D N={n} T={t} {dt}",
                   lambda mesh, probe, dim=dim, n=n, t=t, dt=dt: bench_sampler(
                       mesh, dim, n, t, probe, dtype=dt)))
  if "train" in cases:
    if quick:
      rows.append(("train mlp batch=2000",
                   lambda mesh, probe: bench_train_mlp(mesh, 2_000, probe, steps=5, warmup=1)))
    else:
      # float32 with XLA's default options too: the project's options' gain, same run.
      for bs, dt, defaults in ((2_000, "float32", False), (2_000, "float32", True),
                               (2_000, "bfloat16", False), (10_000, "float32", False),
                               (10_000, "float32", True)):
        rows.append((f"train mlp batch={bs} {dt}{', XLA default options' if defaults else ''}",
                     lambda mesh, probe, bs=bs, dt=dt, d=defaults: _maybe_xla_defaults(
                         d, bench_train_mlp)(mesh, bs, probe, steps=30, dtype=dt)))
  if "unet" in cases:
    # The CPU default U-Net (or `unet_variant`'s): float32 with the project's compile
    # options, float32 with XLA's defaults (the options' gain, in the same run), bfloat16.
    # --quick (tests): one training row (float32) and one sampling row (bfloat16), since each
    # U-Net compilation costs seconds on a CPU; the rows' form is what the tests check.
    where = f"configs/shapes.py{':' + unet_variant if unet_variant else ''}"
    for dt, defaults in (("float32", False), ("float32", True), ("bfloat16", False)):
      tag = f"{dt}{', XLA default options' if defaults else ''}"
      if not (quick and (dt == "bfloat16" or defaults)):
        rows.append((f"train unet ({where}) {tag}",
                     lambda mesh, probe, dt=dt, d=defaults: _maybe_xla_defaults(
                         d, bench_train_unet)(mesh, probe, steps=2 if quick else 10, dtype=dt,
                                              batch_size=8 if quick else None,
                                              variant=unet_variant)))
      if quick and dt == "float32":
        continue
      rows.append((f"sampler unet ({where}) {tag}",
                   lambda mesh, probe, dt=dt, d=defaults: _maybe_xla_defaults(d, bench_sample_unet)(
                       mesh, probe, 8 if quick else 256, variant=unet_variant, dtype=dt,
                       steps=2 if quick else 10)))
  if "unet_paper" in cases:  # the paper's U-Net (64x64): for accelerators
    for dt in ("float32", "bfloat16"):
      rows.append((f"train unet:paper batch=128 {dt}",
                   lambda mesh, probe, dt=dt: bench_train_unet(
                       mesh, probe, steps=10, variant="paper", dtype=dt, batch_size=128)))
      rows.append((f"sampler unet:paper N=1000 {dt}",
                   lambda mesh, probe, dt=dt: bench_sample_unet(
                       mesh, probe, 1_000, variant="paper", dtype=dt, steps=10)))
  return rows


# ----------------------------------------------------------------------------- output


def _fmt(v, spec):
  """``format(v, spec)``, or ``-`` for None."""
  return "-" if v is None else format(v, spec)


def format_table(records) -> str:
  """The records as a fixed-width table (what ``main`` prints)."""
  head = (f"{'case':<8} {'model':<10} {'dtype':<5} {'dim':>5} {'N/batch':>8} {'T':>5} {'dev':>3} "
          f"{'ms/step':>9} {'samples*steps/s':>15} {'GFLOP/step':>10} {'TFLOP/s':>8} "
          f"{'%peak':>6} {'prod%':>6} {'peak_mb':>8} {'+rss_mb':>8} {'xla_tmp_mb':>10} "
          f"{'compile_s':>9}")
  lines = [head, "-" * len(head)]
  for r in records:
    size = r["num_samples"] if r["case"] == "sampler" else r["batch_size"]
    added = None if r["rss_start_mb"] is None else r["peak_mem_mb"] - r["rss_start_mb"]
    dt = {"float32": "f32", "bfloat16": "bf16"}.get(r.get("dtype") or "float32", r.get("dtype"))
    share = None if r.get("peak_share") is None else 100.0 * r["peak_share"]
    prod = None if r.get("products_share") is None else 100.0 * r["products_share"]
    lines.append(
        f"{r['case']:<8} {r['model'] + ('*' if r.get('xla_defaults') else ''):<10} {dt:<5} {r['dim']:>5} {size:>8} {r['timesteps']:>5} "
        f"{r['devices']:>3} {r['ms_per_step']:>9.3f} {r['samples_steps_per_s']:>15.4g} "
        f"{_fmt(r.get('gflop_per_step'), '10.3f'):>10} {_fmt(r.get('tflops'), '8.4f'):>8} "
        f"{_fmt(share, '6.1f'):>6} {_fmt(prod, '6.1f'):>6} {_fmt(r['peak_mem_mb'], '8.0f'):>8} "
        f"{_fmt(added, '8.0f'):>8} "
        f"{_fmt(r['xla_temp_mb'], '10.2f'):>10} {r['compile_s']:>9.1f}")
  r0 = records[0] if records else None
  if r0 is not None:
    lines.append(f"platform {r0['platform']} ({r0['device_kind']}), jax {r0['jax_version']}; "
                 f"memory: {r0['mem_source']}; +rss_mb = peak minus resident set at case start")
  if any(r.get("products_share") is not None for r in records):
    lines.append("prod% = the step's matrix products alone (same shapes, same options, this run) "
                 "as a share of the whole step's time")
  opts = next((r["compile_options"] for r in records if r.get("compile_options")), None)
  if opts or any(r.get("xla_defaults") for r in records):
    lines.append(f"training steps and convolutional networks compiled with "
                 f"{opts or 'no extra options'}; model* = the same with XLA's default options")
  return "\n".join(lines)


def format_reference(records, ref=None) -> str:
  """The official code's times from the same run, and the ratios; or why there are none."""
  m = records[0]["machine"] if records else machine_info()
  where = (f"{m['cpu_model']}, {m['cpu_count']} cores, ISA {'/'.join(m['isa']) or '-'}, "
           f"jax {m['jax']}")
  if ref is None:
    return (f"machine: {where}\nNo comparison with the official code: pass --reference=PATH "
            f"(and --reference_python) to time it in this run, on this machine.")
  lines = [f"machine: {where}",
           f"official PyTorch toy code, same run: torch {ref['torch']}, {ref['threads']} "
           f"intra-op thread(s)" + (f", stubbed {', '.join(ref['stubbed'])}" if ref['stubbed'] else "")]
  for r in records:
    if r["speedup_vs_reference"] is not None:
      size = r["num_samples"] if r["case"] == "sampler" else r["batch_size"]
      what = "reverse step" if r["case"] == "sampler" else "training step"
      dt = {"float32": "f32", "bfloat16": "bf16"}.get(r.get("dtype") or "float32")
      lines.append(f"  {what} mlp {r['dim']}D {size} {dt}: {r['ms_per_step']:.2f} ms here vs "
                   f"{r['reference_ms_per_step']:.2f} ms official: {r['speedup_vs_reference']:.2f}x "
                   f"({r['platform']}, {r['devices']} device(s)"
                   f"{', XLA default options' if r.get('xla_defaults') else ''})")
  if len(lines) == 2:
    lines.append("  (no row of this run has a counterpart in the official code)")
  return "\n".join(lines)


def run(cases, quick: bool = False, devices: int = 0, json_path=None, log=print,
        full: bool = False, reference=None, unet_variant: str = "") -> list:
  """Runs the benchmark; returns the records (and writes them to ``json_path``).

  ``reference``: ``(path, python, threads)`` to time the official code in the same run.
  ``unet_variant``: the ``configs/shapes.py`` variant of the ``unet`` case (see :func:`plan`).
  """
  bad = [c for c in cases if c not in CASES]
  if bad or not cases:
    raise ValueError(f"unknown --cases {bad}; allowed: {', '.join(CASES)}")
  if reference is not None and not os.path.isdir(os.path.join(reference[0], "gaussian_experiments")):
    raise ReferenceError_(f"--reference={reference[0]}: no gaussian_experiments folder there; "
                          f"pass a checkout of locuslab/diffusion-model-hallucination")
  mesh = sharding.make_mesh(devices or None)
  probe = _MemProbe()
  records = []
  for label, fn in plan(cases, quick, full, unet_variant=unet_variant):
    log(f"bench: {label} on {sharding.num_shards(mesh)} device(s) ...")
    rec = fn(mesh, probe)
    rec["quick"] = bool(quick)
    log(f"bench:   {rec['ms_per_step']:.3f} ms/step, compile {rec['compile_s']:.1f}s")
    records.append(rec)
  if any(_PENDING in r for r in records):
    log("bench: the steps' matrix products alone ...")
    time_pending_products(records)
  run.reference = None
  if reference is not None and records:
    path, python, threads = reference
    run.reference = time_reference(path, python, records, threads, quick=quick, log=log)
  if json_path:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
      json.dump(records, f, indent=1)
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    reference = None
    if FLAGS.reference:
      reference = (FLAGS.reference, reference_python(FLAGS.reference_python),
                   FLAGS.reference_threads)
    records = run(FLAGS.cases, quick=FLAGS.quick, devices=FLAGS.devices, json_path=FLAGS.json,
                  log=lambda s: print(s, file=sys.stderr, flush=True), full=FLAGS.full,
                  reference=reference)
  except (ValueError, ReferenceError_) as e:
    sys.exit(f"error: {e}")
  print(format_table(records))
  print()
  print(format_reference(records, run.reference))
  if FLAGS.json:
    print(f"\nwrote {len(records)} records to {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
