r"""Compile seconds of the programs that run once (parameter initialisation), with XLA's
default options and with the project's ``sharding.once_options``, both in the same run::

  python -m experiments.bench.compile_times [--configs=shapes,shapes:tiny,gaussian1d] [--json=F]

Each program is lowered afresh and compiled with the persistent compilation cache off, the
two option sets alternating in order from one config to the next. The parameters of both
compilations are compared bit for bit and the row says whether they agree.
"""

import importlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.bench import cli  # noqa: F401 - defines --json, shared with the benchmark
from mode_interp import pipeline, sharding, train

flags.DEFINE_list(
  "configs",
  ["shapes", "shapes:tiny", "recursive_mnist", "gaussian1d"],
  "Configs (configs/<name>.py[:variant]) whose initialisation is compiled.",
)
FLAGS = flags.FLAGS


def _config(spec: str):
  name, _, variant = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(variant)


def time_init(spec: str, once_first: bool) -> dict:
  """One row: ``spec``'s initial training state compiled both ways."""
  cfg = _config(spec)
  model = pipeline.make_model(cfg)
  optimizer = pipeline.make_optimizer(cfg)
  x1, key = jnp.zeros((1,) + pipeline.input_shape(cfg)), jax.random.key(cfg.seed)

  def init(x, k):
    return train.init_state(model, optimizer, x, k)

  seconds, states = {}, {}
  order = ("once", "defaults") if once_first else ("defaults", "once")
  for side in order:
    options = sharding.once_options() if side == "once" else {}
    lowered = jax.jit(init, compiler_options=options or None).lower(x1, key)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    seconds[side] = time.perf_counter() - t0
    states[side] = jax.device_get(compiled(x1, key))
  same = all(
    np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(states["once"]), jax.tree.leaves(states["defaults"]))
  )
  return {
    "config": spec,
    "param_arrays": len(jax.tree.leaves(states["once"].params)),
    "defaults_s": round(seconds["defaults"], 3),
    "once_s": round(seconds["once"], 3),
    "speedup": round(seconds["defaults"] / seconds["once"], 2),
    "once_options": sharding.once_options(),
    "bit_identical": bool(same),
    "first": order[0],
    "platform": jax.default_backend(),
    "jax": jax.__version__,
  }


def format_table(rows) -> str:
  head = (
    f"{'config':<18} {'arrays':>6} {'XLA defaults s':>14} {'once options s':>14} "
    f"{'speedup':>7} {'same params':>11}"
  )
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
      f"{r['config']:<18} {r['param_arrays']:>6} {r['defaults_s']:>14.2f} "
      f"{r['once_s']:>14.2f} {r['speedup']:>6.2f}x {str(r['bit_identical']):>11}"
    )
  if rows:
    lines.append(
      f"once options: {rows[0]['once_options'] or 'none on this backend'}; "
      f"{rows[0]['platform']}, jax {rows[0]['jax']}; persistent cache off"
    )
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  jax.config.update("jax_enable_compilation_cache", False)
  rows = []
  for i, spec in enumerate(FLAGS.configs):
    rows.append(time_init(spec, once_first=bool(i % 2)))
    print(f"compile_times: {spec} done", flush=True)
  print(format_table(rows))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
