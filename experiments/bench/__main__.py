"""``python -m experiments.bench``: see :mod:`experiments.bench`."""

from absl import app, flags

from experiments import bench
from experiments.bench import cli

if __name__ == "__main__":
  # --help prints the benchmark's description and its flags, as when it was one module.
  __doc__ = bench.__doc__
  flags.adopt_module_key_flags(cli)
  app.run(cli.main)
