r"""One entry point for every experiment; ``--config`` picks which.

  python -m experiments.main --config=configs/shapes.py            # the main job
  python -m experiments.main --config=configs/gaussian1d.py:paper --workdir=runs/g1d_paper
  python -m experiments.main --config=configs/grid25.py --config.train.steps=5000

The config is validated before any work; ``--workdir`` (default
``runs/<config>[_<variant>]``) follows the workdir contract, and rerunning on
it resumes. SIGTERM or SIGINT stops a run after the current training step
(checkpointed) or sample chunk (cached), with exit status 143 or 130
(:mod:`mode_interp.preemption`).
"""

import importlib
import os
import platform

from mode_interp import sharding

# Before jax creates its CPU client: simulated devices need enough XLA threads.
sharding.configure_host_threads()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import cli, config_check, registry  # noqa: E402
from mode_interp import preemption  # noqa: E402
from mode_interp.errors import ConfigError, DataError, TrainingDivergedError, WorkdirError  # noqa: E402
from mode_interp.workdir import Workdir  # noqa: E402

FLAGS = flags.FLAGS
cli.define_config_flags()
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host jobs).")

RUNNERS = {name: e.module for name, e in registry.EXPERIMENTS.items()}


default_workdir = cli.default_workdir


def machine_info() -> dict:
  devs = jax.devices()
  return {
    "platform": devs[0].platform,
    "device_kind": devs[0].device_kind,
    "device_count": len(devs),
    "process_count": jax.process_count(),
    "host": platform.node(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
  }


def run(cfg, workdir: str, config_name: str = ""):
  """Validates ``cfg``, prepares ``workdir`` and runs the experiment; returns results."""
  config_check.validate(cfg)
  mesh = sharding.make_mesh(cfg.num_devices or None)
  for field in ("train.batch_size", "sample.chunk_size"):
    sharding.check_divisible(cfg[field.split(".")[0]][field.split(".")[1]], mesh, field)
  wd = Workdir(workdir)
  wd.lock()
  try:
    wd.check_files()
    runner = importlib.import_module(RUNNERS[cfg.experiment])
    previous = wd.read_config()
    if previous is not None and hasattr(runner, "check_resume"):
      runner.check_resume(cfg, previous, wd)  # what the frozen fields cannot say, before any write
    changes = wd.write_config(cfg.to_dict())
    for k, old, new in changes:
      logging.info("config change on resume: %s: %r -> %r", k, old, new)
    logging.info(
      "%s -> %s on %d %s device(s)",
      config_name or cfg.experiment,
      wd.path,
      mesh.size,
      jax.devices()[0].platform,
    )
    return runner.run(cfg, wd, mesh, info={"config_name": config_name, "machine": machine_info()})
  finally:
    wd.unlock()


def main(argv):
  cli.start(argv, preemptible=False)
  config_arg = cli.config_argument()
  workdir = FLAGS.workdir or default_workdir(config_arg)
  sharding.maybe_initialize_distributed(FLAGS.distributed)
  preemption.install()  # after the distributed runtime: jax's preemption service keeps SIGTERM
  cli.run_or_exit(
    lambda: run(FLAGS.config, workdir, config_name=config_arg),
    (ConfigError, DataError, WorkdirError, TrainingDivergedError),
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
