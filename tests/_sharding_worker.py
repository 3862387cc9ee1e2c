"""Subprocess body of ``tests/test_sharding.py``: runs on 4 simulated CPU devices.

The device count is fixed when jax starts, so the parent test launches this
module with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and
``JAX_PLATFORMS=cpu``:

  python -m tests._sharding_worker TMPDIR

It prints one JSON object on the last line of stdout; the parent compares.
Each part (``sampler``, ``train``, ``divisible``, ``full_width``) is recorded
separately, and a part that raises is recorded as ``{"error": ...}`` so the
others still report.
"""

import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from configs import gaussian1d
from experiments import main as main_mod
from mode_interp import pipeline, sharding
from mode_interp.data import gaussians
from mode_interp.errors import ConfigError

NUM_DEVICES = 4


def tiny_config(steps: int = 5):
  """A seconds-long gaussian1d config whose sizes split over 4 devices."""
  cfg = gaussian1d.get_config()
  cfg.data.num_train = 512
  cfg.model.width = 32
  cfg.diffusion.timesteps = 30
  cfg.train.batch_size = 128
  cfg.train.steps = steps
  cfg.train.log_every = steps
  cfg.train.ckpt_every = steps
  cfg.train.ema_decay = 0.9
  cfg.sample.num_samples = 256
  cfg.sample.chunk_size = 128
  cfg.detect.window = 5
  return cfg


def _leaves(tree):
  return [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(jax.device_get(tree))]


def part_sampler():
  """The jitted sampler over 1 and 4 devices, same key and global indices."""
  cfg = tiny_config()
  model = pipeline.make_model(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1)), jnp.zeros((1,), jnp.int32))["params"]
  idx = np.arange(100, 164, dtype=np.int32)  # not starting at 0: indices are global
  res = {}
  # "<n>_tiled": each device draws its 16 samples in 3 padded tiles of 6 (samples.row_tiled).
  for n, tile in ((1, 0), (NUM_DEVICES, 0), (NUM_DEVICES, 6)):
    cfg.sample.tile_rows = tile
    mesh = sharding.make_mesh(n)
    fn = pipeline.make_sampler(cfg, pipeline.eps_fn_for(model), (1,), mesh=mesh)
    p = jax.device_put(params, sharding.replicated(mesh))
    out = fn(p, jax.random.key(7), jax.device_put(idx, sharding.data_sharding(mesh)))
    res[f"{n}_tiled" if tile else str(n)] = {
      "samples": np.asarray(out.samples).ravel().tolist(),
      "traj_variance": np.asarray(out.traj_variance).tolist(),
      "num_output_devices": len(out.samples.sharding.device_set),
      "shard_rows": sorted(s.data.shape[0] for s in out.samples.addressable_shards),
      "variance_shard_rows": sorted(s.data.shape[0] for s in out.traj_variance.addressable_shards),
    }
  return res


def part_train(tmp):
  """A few jitted, state-donating train steps with the mesh's shardings, on 1 and
  4 devices (as ``pipeline.train_model`` builds them, without the checkpoints)."""
  del tmp
  cfg = tiny_config(steps=5)
  tc = cfg.train
  data = gaussians.make_mixture("gaussian1d").sample(cfg.data.num_train, seed=0)
  init_key, run_key = jax.random.split(jax.random.key(cfg.seed))
  res = {}
  # "<n>_micro": each device's 32 rows of a batch of 128 in 4 micro-batches of 8.
  for n, micro in ((1, 0), (NUM_DEVICES, 0), (NUM_DEVICES, 8)):
    tc.micro_batch = micro
    mesh = sharding.make_mesh(n)
    repl = sharding.replicated(mesh)
    trainer = pipeline.make_trainer(cfg, mesh)
    init_jit, step_jit = trainer.init, trainer.step
    state = init_jit(jnp.asarray(data[:1]), init_key)
    data_dev = jax.device_put(jnp.asarray(data), repl)
    losses = []
    for _ in range(tc.steps):
      state, metrics = step_jit(state, data_dev, run_key)
      losses.append(float(metrics["loss"]))
    res[f"{n}_micro" if micro else str(n)] = {
      "step": int(jax.device_get(state.step)),
      "params": _leaves(state.params),
      "ema_params": _leaves(state.ema_params),
      "losses": losses,
      "param_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
    }
  return res


def part_divisible(tmp):
  """A batch of 6 over 4 devices is refused before any work."""
  res = {}
  cfg = tiny_config()
  cfg.num_devices = NUM_DEVICES
  cfg.train.batch_size = 6
  wd = os.path.join(tmp, "refused")
  try:
    main_mod.run(cfg, wd)
    res["main_run"] = None
  except ConfigError as e:
    res["main_run"] = {"field": e.field, "message": str(e)}
  res["workdir_created"] = os.path.exists(wd)
  try:
    sharding.check_divisible(6, sharding.make_mesh(NUM_DEVICES), "train.batch_size")
    res["check_divisible"] = None
  except ConfigError as e:
    res["check_divisible"] = {"field": e.field, "message": str(e)}
  return res


def part_full_width(tmp):
  """``experiments.main.run`` end to end on 4 devices, with the default 1D config's full-width
  network (width 128, batch 2,000) trained 60 steps: the size at which XLA's CPU all-reduce used to
  deadlock on a 2-core machine (its thread pool smaller than the devices' needs)."""
  cfg = gaussian1d.get_config()
  cfg.num_devices = NUM_DEVICES
  cfg.train.steps = 60
  cfg.train.log_every = 20
  cfg.train.ckpt_every = 60
  # Sampling is not what this part is about: a shorter schedule and fewer samples (the
  # detection metrics still need both classes of samples).
  cfg.diffusion.timesteps = 100
  cfg.detect.window = 10
  cfg.sample.num_samples = 400
  cfg.sample.chunk_size = 400
  wd = os.path.join(tmp, "full_width")
  out = main_mod.run(cfg, wd)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    losses = [json.loads(l)["loss"] for l in f if l.strip()]
  with np.load(os.path.join(wd, "samples.npz")) as z:
    num_saved = int(z["samples"].shape[0])
  return {
    "num_samples": out["num_samples"],
    "num_saved": num_saved,
    "hallucination_rate": out["hallucination_rate"],
    "results_json": os.path.exists(os.path.join(wd, "results.json")),
    "train_steps": out["train"]["steps"],
    "width": cfg.model.width,
    "batch_size": cfg.train.batch_size,
    "losses": losses,
    "device_count": out["machine"]["device_count"],
    "nproc": os.environ.get("NPROC"),
    "non_finite": out["non_finite"]["count"],
    "auroc": out["detection"]["auroc"],
  }


def main(argv):
  tmp = argv[1]
  result = {"device_count": jax.device_count(), "platform": jax.devices()[0].platform}
  parts = {
    "sampler": part_sampler,
    "train": lambda: part_train(tmp),
    "divisible": lambda: part_divisible(tmp),
    "full_width": lambda: part_full_width(tmp),
  }
  only = argv[2].split(",") if len(argv) > 2 else list(parts)
  for name in only:
    t0 = time.perf_counter()
    try:
      result[name] = parts[name]()
      result[name]["seconds"] = time.perf_counter() - t0
    except Exception as e:  # pylint: disable=broad-except  # reported to the parent test
      result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
  print(json.dumps(result))


if __name__ == "__main__":
  main(sys.argv)
