r"""Where a U-Net's training step and reverse step spend their time, as a table.

  python -m experiments.profile_unet                                   # configs/shapes.py
  python -m experiments.profile_unet --config=configs/shapes.py:paper --batch=128 --chunk=1000
  python -m experiments.profile_unet --json=reports/latest/profile_unet.json
  NPROC=1 taskset -c 0 python -m experiments.profile_unet --trace       # + XLA's own op classes

Two views of one network, both measured in this run on this machine:

``parts``
  Every leaf layer of the network (each convolution, GroupNorm and dense layer, and each
  attention block as a whole) is recorded with its input shape while the network is traced
  once (``flax.linen.intercept_methods``), then compiled and timed alone at that shape:
  forward only for the reverse step, forward and backward (the layer's VJP) for the training
  step. Rows group layers of the same kind and shape (convolutions by kernel, stride,
  resolution and channels). ``rest`` is the whole minus the sum of the parts: what only
  exists between layers (SiLU, residual adds, the time embedding's broadcast, skip
  concatenations, nearest-neighbour upsampling, the loss and, for training, the optimiser).
  A negative ``rest`` means the parts are slower alone than inside the whole (XLA overlaps
  independent operations on several threads).

``--trace`` (XLA op classes)
  The compiled whole, run under ``jax.profiler``: the time of every XLA operation, grouped by
  the kind of operation (convolutions, transposes, reductions, windowed reductions,
  elementwise fusions, concatenations, products). On several threads XLA's convolutions run
  partly on threads the trace does not see, so run it on one core
  (``NPROC=1 taskset -c 0``) for exact shares.

Every row prints ms, its share, GFLOP (XLA's cost analysis of the part) and GFLOP/s with the
share of the machine's measured float32 matmul rate (``bench.measured_matmul_peak``).
"""

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from typing import NamedTuple
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import bench
from mode_interp import pipeline, sharding
from mode_interp.networks import unet

FLAGS = flags.FLAGS

# Layers timed alone; a layer inside an attention block is timed as part of the block.
PART_TYPES = (nn.Conv, nn.GroupNorm, nn.Dense, unet.AttnBlock)


@dataclasses.dataclass
class Part:
  label: str
  count: int
  ms: float
  gflop: float


def _label(module, shape) -> str:
  spatial = "x".join(str(s) for s in shape[1:-1])
  if isinstance(module, nn.Conv):
    kh, kw = module.kernel_size
    strides = module.strides if module.strides not in (None, 1) else (1, 1)
    stride = "" if tuple(np.atleast_1d(strides)) in ((1,), (1, 1)) else " stride 2"
    return f"conv {kh}x{kw}{stride} {spatial} {shape[-1]}->{module.features}"
  if isinstance(module, nn.GroupNorm):
    return f"group norm {spatial} x{shape[-1]}"
  if isinstance(module, unet.AttnBlock):
    return f"attention {spatial} x{shape[-1]}"
  return f"dense {shape[-1]}->{module.features}"


def _inside_attention(module) -> bool:
  parent = module.parent
  while isinstance(parent, nn.Module):
    if isinstance(parent, unet.AttnBlock):
      return True
    parent = parent.parent
  return False


def record_parts(model, params, x, t):
  """``[(module, input_shape, input_dtype)]`` of every part, in call order."""
  calls = []

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if (
      context.method_name == "__call__"
      and isinstance(mod, PART_TYPES)
      and not _inside_attention(mod)
    ):
      calls.append((mod, tuple(args[0].shape), args[0].dtype))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda p: model.apply({"params": p}, x, t), params)
  return calls


def _time(compiled, args, repeats: int) -> float:
  """Milliseconds per call: the fastest of ``repeats`` calls after a warm-up."""
  jax.block_until_ready(compiled(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  return 1000.0 * best


def time_part(module, shape, dtype, backward: bool, repeats: int, options):
  """(ms, GFLOP) of one layer alone at ``shape``: forward, or forward and backward."""
  layer = module.clone(parent=None)
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)
  variables = sharding.jit_once(layer.init)(jax.random.key(0), x)  # eagerly: a compile per shape
  if backward:

    def fn(v, x):
      y, vjp = jax.vjp(lambda v, x: layer.apply(v, x), v, x)
      return y, vjp(jnp.ones_like(y))  # y too: a linear layer's backward does not need it
  else:
    fn = layer.apply
  compiled = jax.jit(fn, compiler_options=options or None).lower(variables, x).compile()
  return _time(compiled, (variables, x), repeats), (bench.flops(compiled) or 0.0) / 1e9


def profile_parts(calls, backward: bool, repeats: int, options) -> list:
  """The parts grouped by label: ``[Part]``, slowest first."""
  cache, groups = {}, collections.OrderedDict()
  for mod, shape, dtype in calls:
    label = _label(mod, shape)
    key = (label, shape)
    if key not in cache:
      cache[key] = time_part(mod, shape, dtype, backward, repeats, options)
    ms, gflop = cache[key]
    g = groups.setdefault(label, Part(label, 0, 0.0, 0.0))
    g.count += 1
    g.ms += ms
    g.gflop += gflop
  return sorted(groups.values(), key=lambda p: -p.ms)


# XLA operation names (fusion kinds) -> a class a reader knows.
_OP_CLASSES = (
  ("convolution", r"^conv"),
  ("transpose (layout change)", r"transpose"),
  ("windowed reduction (reduce-window)", r"reduce-window"),
  ("reduction", r"reduce"),
  ("concatenation / slicing", r"concatenate|slice|pad"),
  ("matrix product", r"^dot|ynn_fusion|^custom-call"),
  ("elementwise fusion", r"fusion|^add|^multiply|^copy|^broadcast|^select|^subtract"),
)


def trace_op_classes(compiled, args, calls: int = 3) -> list:
  """``[(class, ms per call)]``: the compiled function's XLA operations under jax.profiler,
  grouped by :data:`_OP_CLASSES`."""
  jax.block_until_ready(compiled(*args))
  tmp = tempfile.mkdtemp(prefix="profile_unet_")
  try:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    for _ in range(calls):
      jax.block_until_ready(compiled(*args))
    jax.profiler.stop_trace()
    files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      return []
    events = json.load(gzip.open(files[0]))["traceEvents"]
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  totals = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or name.startswith(("ThunkExecutor", "$", "Pjit", "Common", "end:")):
      continue
    if not re.match(r"^[a-z][\w.-]*$", name) or name[0].isupper():
      continue
    for cls, pattern in _OP_CLASSES:
      if re.search(pattern, name):
        totals[cls] += e.get("dur", 0) / 1000.0 / calls
        break
  return sorted(totals.items(), key=lambda kv: -kv[1])


class _WholeTimes(NamedTuple):
  """The whole training step and one denoiser call, timed and costed."""

  train_ms: float
  train_gflop: float
  train_ops: list  # op classes of the step's trace (empty without ``trace``)
  sample_ms: float
  sample_gflop: float
  sample_ops: list


def _whole(cfg, model, params, shape, batch, chunk, repeats, options, trace) -> _WholeTimes:
  """The training step at ``batch`` and the denoiser at ``chunk``: times, GFLOP, op classes."""
  mesh = sharding.make_mesh()
  data = np.random.default_rng(0).uniform(-1, 1, (batch,) + shape).astype(np.float32)
  cfg = cfg.copy_and_resolve_references()
  cfg.train.batch_size = batch
  cfg.train.micro_batch = 0
  trainer = pipeline.make_trainer(cfg, mesh)
  state = trainer.init(jnp.asarray(data[:1]), jax.random.key(0))
  args = (state, jnp.asarray(data), jax.random.key(1))
  compiled = trainer.step.lower(*args).compile()

  # The step donates its state: give it a fresh copy for every call.
  def call_step(state, data, key):
    return compiled(jax.tree.map(jnp.copy, state), data, key)

  train_ms = _time(call_step, args, repeats)
  train_gflop = (bench.flops(compiled) or 0.0) / 1e9
  train_ops = trace_op_classes(call_step, args) if trace else []

  eps = jax.jit(pipeline.eps_fn_for(model), compiler_options=options or None)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((chunk,) + shape), jnp.float32)
  t = jnp.full((chunk,), cfg.diffusion.timesteps // 2, jnp.int32)
  fwd = eps.lower(params, x, t).compile()
  sample_ms = _time(fwd, (params, x, t), repeats)
  sample_gflop = (bench.flops(fwd) or 0.0) / 1e9
  sample_ops = trace_op_classes(fwd, (params, x, t)) if trace else []
  return _WholeTimes(train_ms, train_gflop, train_ops, sample_ms, sample_gflop, sample_ops)


def profile(cfg, batch: int, chunk: int, repeats: int = 5, trace: bool = False) -> dict:
  """The whole profile of ``cfg``'s U-Net as a JSON-able dict (see the module docstring)."""
  if cfg.model.name != "unet":
    raise ValueError(f"model.name: profile_unet profiles U-Nets; got {cfg.model.name!r}")
  model = pipeline.make_model(cfg)
  shape = pipeline.input_shape(cfg)
  options = sharding.compiler_options(None, convolutional=True, training=False)
  x1 = jnp.zeros((1,) + shape)
  params = sharding.jit_once(lambda k: model.init(k, x1, jnp.zeros((1,), jnp.int32)))(
    jax.random.key(0)
  )["params"]
  peak = bench.measured_matmul_peak("float32")
  out = {
    "config": {
      "model": cfg.model.to_dict(),
      "image_shape": list(shape),
      "timesteps": cfg.diffusion.timesteps,
    },
    "batch": batch,
    "chunk": chunk,
    "peak_flops_measured": peak,
    "machine": bench.machine_info(),
    "jax_version": jax.__version__,
    "compile_options": options,
    "nproc": os.environ.get("NPROC"),
  }
  whole = _whole(cfg, model, params, shape, batch, chunk, repeats, options, trace)
  for name, n, backward, ms, gflop, ops in (
    ("train", batch, True, whole.train_ms, whole.train_gflop, whole.train_ops),
    ("sample", chunk, False, whole.sample_ms, whole.sample_gflop, whole.sample_ops),
  ):
    x = jnp.zeros((n,) + shape)
    t = jnp.zeros((n,), jnp.int32)
    parts = profile_parts(record_parts(model, params, x, t), backward, repeats, options)
    out[name] = {
      "whole_ms": ms,
      "whole_gflop": gflop,
      "parts": [dataclasses.asdict(p) for p in parts],
      "rest_ms": ms - sum(p.ms for p in parts),
      "op_classes": [{"class": c, "ms": v} for c, v in ops],
    }
  return out


def format_profile(prof: dict) -> str:
  peak = prof["peak_flops_measured"]
  lines = []
  for name, what in (
    (
      "train",
      f"training step, batch {prof['batch']} (forward + backward "
      "per part; the whole is the trainer's step)",
    ),
    ("sample", f"reverse step, {prof['chunk']} images (forward)"),
  ):
    p = prof[name]
    whole = p["whole_ms"]
    lines.append(
      f"\n{what}: {whole:.1f} ms, {p['whole_gflop']:.2f} GFLOP, "
      f"{p['whole_gflop'] / whole * 1e3:.0f} GFLOP/s "
      f"({100 * p['whole_gflop'] * 1e9 / (whole / 1e3) / peak:.1f}% of the "
      f"measured {peak / 1e9:.0f} GFLOP/s)"
    )
    lines.append(
      f"  {'part':36s} {'n':>3s} {'ms':>9s} {'share':>6s} {'GFLOP':>7s} "
      f"{'GFLOP/s':>8s} {'%peak':>6s}"
    )
    for part in p["parts"]:
      rate = part["gflop"] / part["ms"] * 1e3 if part["ms"] else 0.0
      lines.append(
        f"  {part['label']:36s} {part['count']:3d} {part['ms']:9.2f} "
        f"{100 * part['ms'] / whole:5.1f}% {part['gflop']:7.3f} {rate:8.1f} "
        f"{100 * rate * 1e9 / peak:5.1f}%"
      )
    lines.append(
      f"  {'rest (between layers: SiLU, adds,':36s} {'':3s} {p['rest_ms']:9.2f} "
      f"{100 * p['rest_ms'] / whole:5.1f}%"
    )
    lines.append("   concatenations, upsampling, loss/optimiser)")
    if p["op_classes"]:
      total = sum(o["ms"] for o in p["op_classes"])
      lines.append(f"  XLA operations by kind (profiler trace; {total:.1f} ms traced):")
      for o in p["op_classes"]:
        lines.append(f"    {o['class']:38s} {o['ms']:9.2f} {100 * o['ms'] / total:5.1f}%")
  m = prof["machine"]
  lines.append(
    f"\nmachine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, jax "
    f"{prof['jax_version']}, NPROC={prof['nproc']}; compile options "
    f"{prof['compile_options'] or 'XLA defaults'}"
  )
  return "\n".join(lines)


def main(argv):
  del argv
  cfg = FLAGS.config
  batch = FLAGS.batch or cfg.train.batch_size
  for name, v in (("--batch", batch), ("--chunk", FLAGS.chunk), ("--repeats", FLAGS.repeats)):
    if v < 1:
      raise app.UsageError(f"{name} must be >= 1, got {v}")
  prof = profile(cfg, batch, FLAGS.chunk, FLAGS.repeats, FLAGS.trace)
  print(format_profile(prof))
  if FLAGS.json:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
    with open(FLAGS.json, "w") as f:
      json.dump(prof, f, indent=1)
    print(f"wrote {FLAGS.json}", file=sys.stderr)


def define_flags():
  """The command's flags, defined only when it runs as a program (``experiments.main``,
  which tests import alongside, has its own ``--config``). ``--json`` (write the profile as
  JSON to this path) is the benchmark's flag of the same name."""
  config_flags.DEFINE_config_file(
    "config",
    "configs/shapes.py",
    "A U-Net config (configs/shapes.py[:variant]).",
    lock_config=False,
  )
  flags.DEFINE_integer("batch", 0, "Training batch (0: the config's train.batch_size).")
  flags.DEFINE_integer("chunk", 256, "Images per reverse step.")
  flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (the fastest is kept).")
  flags.DEFINE_bool(
    "trace",
    False,
    "Also group the whole step's XLA operations by kind (exact on one core: NPROC=1 taskset -c 0).",
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
