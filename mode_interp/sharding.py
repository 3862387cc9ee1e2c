"""Data-parallel layout: a 1-D device mesh, batch sharded along ``data``.

Parameters and optimiser state are replicated; batches and sample chunks are
split along their leading axis. Works unchanged on one CPU, one GPU, a TPU pod
slice, or several hosts (after :func:`maybe_initialize_distributed`).
"""

import contextlib
import functools
import os
import re
from typing import Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mode_interp.errors import ConfigError

AXIS = "data"


def simulated_cpu_devices() -> int:
  """The number of CPU devices asked for with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
  or ``JAX_NUM_CPU_DEVICES=N`` (0 when neither is set)."""
  m = re.findall(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
  n = int(m[-1]) if m else 0
  return max(n, int(os.environ.get("JAX_NUM_CPU_DEVICES", "0") or 0))


def configure_host_threads() -> None:
  """Sizes XLA's CPU thread pool for simulated devices; call before jax starts its backend.

  XLA's CPU client runs every device's program on one thread pool whose size is
  ``$NPROC``, or the number of cores when unset. A collective (the gradient
  all-reduce of data-parallel training) blocks each device's thread until all
  devices arrive, so with 4 simulated devices on 2 cores the pool fills with
  waiting threads and the others never start: XLA reports the rendezvous "may be
  stuck" and aborts. Measured on a 2-core machine: pools of 4, 5 and 6 threads
  deadlock, 8 runs. So ``NPROC`` is raised to ``max(cores, 4 * devices)`` (idle
  threads cost nothing); a larger ``NPROC`` set by the user is kept.
  """
  n = simulated_cpu_devices()
  if n <= 1:
    return
  need = max(os.cpu_count() or 1, 4 * n)
  try:
    have = int(os.environ.get("NPROC", "0"))
  except ValueError:
    have = 0
  if have < need:
    os.environ["NPROC"] = str(need)


# XLA's CPU backend hands dots, reductions and, in recent jaxlibs, convolutions to YNNPACK.
# YNNPACK's convolutions are the slower choice for this project's U-Nets and its reductions
# slow the toy MLP's training step (the LayerNorms' backward), while they speed up the toy
# sampler (each program compiled both ways in one process, timed interleaved; the numbers are
# in reports/speed.md). So training steps and convolutional networks' programs are compiled
# with YNNPACK's dots only; the toy MLP's sampler keeps XLA's defaults.
CPU_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


@functools.lru_cache(maxsize=None)
def cpu_ynn_options() -> tuple:
  """The XLA compile options that keep YNNPACK to dots on CPUs, as ``((name, value), ...)``:
  empty when the user's ``XLA_FLAGS`` already choose the YNNPACK fusions, or when this
  jaxlib has no such option (probed once, compiling a one-op program)."""
  if CPU_YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
    return ()
  opts = {CPU_YNN_OPTION: CPU_YNN_FUSIONS}
  try:
    cpu = jax.local_devices(backend="cpu")[0]
    jax.jit(lambda x: x + 1, compiler_options=opts).lower(
      jax.device_put(np.zeros((1,), np.float32), cpu)
    ).compile()
  except Exception as e:  # noqa: BLE001 - any refusal means: compile with XLA's defaults
    logging.info(
      "XLA compile option %s=%s not available (%s); using XLA's defaults",
      CPU_YNN_OPTION,
      CPU_YNN_FUSIONS,
      type(e).__name__,
    )
    return ()
  return tuple(opts.items())


_XLA_DEFAULTS = [False]


@contextlib.contextmanager
def xla_default_options():
  """Programs jitted inside compile with XLA's default options (benchmarks compare both)."""
  _XLA_DEFAULTS.append(True)
  try:
    yield
  finally:
    _XLA_DEFAULTS.pop()


def using_xla_defaults() -> bool:
  """Whether the caller is inside :func:`xla_default_options`."""
  return _XLA_DEFAULTS[-1]


def _platform(mesh: Optional[Mesh]) -> str:
  """The platform of ``mesh``'s devices (default: the default backend's)."""
  return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def compiler_options(
  mesh: Optional[Mesh] = None, convolutional: bool = True, training: bool = False
) -> dict:
  """XLA compile options for a program on ``mesh`` (default: the default backend): on CPUs,
  :func:`cpu_ynn_options` for training steps and convolutional networks, none otherwise."""
  if not (convolutional or training) or using_xla_defaults():
    return {}
  platform = _platform(mesh)
  return dict(cpu_ynn_options()) if platform == "cpu" else {}


def jit(
  fun, mesh: Optional[Mesh] = None, *, convolutional: bool = True, training: bool = False, **kwargs
):
  """``jax.jit(fun, **kwargs)`` with this project's compile options (:func:`compiler_options`)."""
  return jax.jit(
    fun, compiler_options=compiler_options(mesh, convolutional, training) or None, **kwargs
  )


# A program that runs once per process (a network's parameter initialisation: one threefry
# hash per parameter array, over a hundred for a U-Net) costs far more to compile at XLA's
# default backend optimisation than it ever runs; at level 1 it compiles several times faster
# on a CPU and gives the same parameters, bit for bit (tests/test_sharding_options.py).
ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


def once_options(mesh: Optional[Mesh] = None) -> dict:
  """XLA compile options for a program that runs once (see :data:`ONCE_OPTIONS`): CPUs only
  (other backends keep their defaults), none inside :func:`xla_default_options`."""
  platform = _platform(mesh)
  return {} if using_xla_defaults() or platform != "cpu" else dict(ONCE_OPTIONS)


def jit_once(fun, mesh: Optional[Mesh] = None, **kwargs):
  """``jax.jit(fun, **kwargs)`` for a program that runs once per process, such as a
  parameter initialisation: compiled with :func:`once_options`."""
  return jax.jit(fun, compiler_options=once_options(mesh) or None, **kwargs)


def maybe_initialize_distributed(force: bool = False) -> None:
  """Calls ``jax.distributed.initialize()`` when asked or when the environment
  describes a multi-process job (a coordinator address, a SLURM or a TPU pod job
  with several processes). A no-op for single-process runs."""
  env_says = any(os.environ.get(v) for v in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS"))
  env_says |= int(os.environ.get("SLURM_NTASKS", "1")) > 1
  env_says |= int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1
  if force or env_says:
    jax.distributed.initialize()
    logging.info(
      "jax.distributed: process %d of %d, %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
    )


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ConfigError(
        "num_devices", f"asked for {num_devices} devices, only {len(devices)} available"
      )
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_shards(mesh: Mesh) -> int:
  return mesh.shape[AXIS]


def check_divisible(value: int, mesh: Mesh, field: str) -> None:
  """Batch-like sizes must split evenly over the devices."""
  n = num_shards(mesh)
  if value % n:
    lo, hi = (value // n) * n, (value // n + 1) * n
    raise ConfigError(
      field,
      f"{value} does not split over {n} devices; use a multiple of {n} (e.g. {lo or hi} or {hi})",
    )


def is_main_process() -> bool:
  return jax.process_index() == 0


def to_host(x):
  """Gathers a (possibly multi-host) sharded array to a numpy array on every host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def cpu_info() -> tuple:
  """``(model name, feature flags)`` of the first CPU in ``/proc/cpuinfo`` (``("", set())``
  where it cannot be read)."""
  model, flags = "", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, val = line.partition(":")
        if key.strip() == "model name" and not model:
          model = val.strip()
        elif key.strip() == "flags":
          flags = set(val.split())
          break
  except OSError:
    pass
  return model, flags


def cpu_flags() -> set:
  """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
  return cpu_info()[1]


def bfloat16_support() -> tuple:
  """``(supported, what)``: whether the default backend computes in bfloat16 natively.

  GPUs from compute capability 8.0 (A100, H100/H200) and TPUs do; a CPU does with the
  AVX512-BF16 or AMX-BF16 instructions (elsewhere XLA emulates bfloat16 in float32,
  slower than float32 itself). Where the CPU's flags cannot be read it is assumed to.
  """
  dev = jax.devices()[0]
  if dev.platform == "tpu":
    return True, dev.device_kind
  if dev.platform == "gpu":
    cc = getattr(dev, "compute_capability", None)
    try:
      ok = cc is None or float(cc) >= 8.0
    except (TypeError, ValueError):
      ok = True
    return ok, f"{dev.device_kind} (compute capability {cc})"
  flags = cpu_flags()
  if not flags:
    return True, "a CPU whose features cannot be read"
  have = sorted(flags & {"avx512_bf16", "amx_bf16"})
  return bool(have), "a CPU with " + (
    "/".join(have) if have else "neither AVX512-BF16 nor AMX-BF16"
  )
