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
import sys

from mode_interp import sharding

# Before jax creates its CPU client: simulated devices need enough XLA threads.
sharding.configure_host_threads()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import config_check, registry  # noqa: E402
from mode_interp import preemption  # noqa: E402
from mode_interp.errors import (ConfigError, DataError, Preempted, TrainingDivergedError,  # noqa: E402
                                WorkdirError)
from mode_interp.workdir import Workdir, quiet_library_logs  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py[:variant].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (default runs/<config>[_<variant>]).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host jobs).")
flags.mark_flags_as_required(["config"])

RUNNERS = {name: e.module for name, e in registry.EXPERIMENTS.items()}


def default_workdir(config_arg: str) -> str:
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", f"{name}_{variant}" if variant else name)


def machine_info() -> dict:
  devs = jax.devices()
  return {"platform": devs[0].platform, "device_kind": devs[0].device_kind,
          "device_count": len(devs), "process_count": jax.process_count(),
          "host": platform.node(), "cpu_count": os.cpu_count(), "jax": jax.__version__}


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
    changes = wd.write_config(cfg.to_dict())
    for k, old, new in changes:
      logging.info("config change on resume: %s: %r -> %r", k, old, new)
    runner = importlib.import_module(RUNNERS[cfg.experiment])
    logging.info("%s -> %s on %d %s device(s)", config_name or cfg.experiment, wd.path,
                 mesh.size, jax.devices()[0].platform)
    return runner.run(cfg, wd, mesh, info={"config_name": config_name, "machine": machine_info()})
  finally:
    wd.unlock()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  quiet_library_logs()
  config_arg = config_flags.get_config_filename(FLAGS["config"])  # path[:variant], as typed
  workdir = FLAGS.workdir or default_workdir(config_arg)
  sharding.maybe_initialize_distributed(FLAGS.distributed)
  preemption.install()  # after the distributed runtime: jax's preemption service keeps SIGTERM
  try:
    run(FLAGS.config, workdir, config_name=config_arg)
  except Preempted as e:
    # Not a failure: the work is saved, and the status tells a scheduler to run it again.
    logging.warning("%s", e)
    sys.exit(preemption.exit_status())
  except (ConfigError, DataError, WorkdirError, TrainingDivergedError) as e:
    sys.exit(f"error: {e}")


def _config_load_error(e: BaseException) -> str:
  """One line from the exception raised while loading or overriding ``--config``."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
    e = e.args[0]
  if isinstance(e, KeyError) and e.args:
    lines = str(e.args[0]).splitlines()
    return "; ".join([f"no such field {lines[0]}"] + lines[1:])
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def _parse_flags(argv):
  """absl's flag parsing, with a config that cannot be loaded (an unknown ``:variant``, a
  missing file, an override of a field that does not exist or of the wrong type) reported
  in one line, before any work."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.to_dict()  # a file that failed to load raises here
    return rest
  except Exception as e:  # noqa: BLE001 - every way a config fails to load ends in one line
    if isinstance(e, flags.Error) and "--config" not in str(e) and "config" not in str(e):
      sys.exit(f"error: {_config_load_error(e)}")
    sys.exit(f"error: --config: {_config_load_error(e.__cause__ or e)}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
