"""What every command of ``experiments/`` does around its work, in one place.

``define_config_flags()`` defines ``--config`` (an ml_collections config file with its
``:variant``) and ``--workdir`` once, for whichever commands take them; ``parse_flags`` is
absl's parser with a config that cannot be loaded reported in one line, before any work;
``default_workdir`` names the workdir of a config argument.

``start(argv)`` refuses stray arguments, sets INFO logging with the checkpoint library's
chatter filtered out and (unless told not to) installs the preemption handler;
``run_or_exit(fn, errors)`` runs the work and turns a preemption into its exit status (the
work is saved: a scheduler should retry) and each expected error into one line
``error: ...`` with exit status 1.
"""

import os
import sys
from typing import Callable, Tuple, Type

from absl import app, flags, logging
from ml_collections import config_flags

from mode_interp import preemption
from mode_interp.errors import Preempted
from mode_interp.workdir import quiet_library_logs


FLAGS = flags.FLAGS


def define_config_flags() -> None:
  """``--config`` (required) and ``--workdir``; a second call is a no-op."""
  if "config" in FLAGS:
    return
  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/shapes.py[:variant].", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Output directory (default runs/<config>[_<variant>]).")
  flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str) -> str:
  """``runs/<config>[_<variant>]`` for ``path/<config>.py[:<variant>]``."""
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", f"{name}_{variant}" if variant else name)


def config_argument() -> str:
  """``--config`` as typed: ``path[:variant]``."""
  return config_flags.get_config_filename(FLAGS["config"])


def _config_load_error(e: BaseException) -> str:
  """One line from the exception raised while loading or overriding ``--config``."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
    e = e.args[0]
  if isinstance(e, KeyError) and e.args:
    lines = str(e.args[0]).splitlines()
    return "; ".join([f"no such field {lines[0]}"] + lines[1:])
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def parse_flags(argv):
  """absl's flag parsing, with a config that cannot be loaded (an unknown ``:variant``, a
  missing file, an override of a field that does not exist or of the wrong type) reported
  in one line, before any work."""
  try:
    rest = FLAGS(argv)
    if "config" in FLAGS:
      FLAGS.config.to_dict()  # a file that failed to load raises here
    return rest
  except Exception as e:  # noqa: BLE001 - every way a config fails to load ends in one line
    if isinstance(e, flags.Error) and "config" not in str(e):
      sys.exit(f"error: {_config_load_error(e)}")
    sys.exit(f"error: --config: {_config_load_error(e.__cause__ or e)}")


def start(argv, preemptible: bool = True) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  quiet_library_logs()
  if preemptible:
    preemption.install()


def run_or_exit(fn: Callable, errors: Tuple[Type[BaseException], ...] = ()):
  try:
    return fn()
  except Preempted as e:
    logging.warning("%s", e)
    sys.exit(preemption.exit_status())
  except errors as e:
    sys.exit(f"error: {e}")
