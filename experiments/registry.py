"""The experiments: one table, read by the entry point, the config check and the report.

``EXPERIMENTS[name] = Experiment(module, data_names)``: ``module`` has ``run(cfg, wd, mesh,
info)`` and ``report_rows(results, config)``; ``data_names`` are the ``data.name`` values it
accepts. A new experiment is one row here (and its module and config file).
"""

import dataclasses

from mode_interp.data import gaussians


@dataclasses.dataclass(frozen=True)
class Experiment:
  module: str
  data_names: tuple


EXPERIMENTS = {
  "gaussian": Experiment("experiments.gaussian", gaussians.NAMES),
  "shapes": Experiment("experiments.shapes", ("shapes",)),
  "recursive": Experiment("experiments.recursive", gaussians.NAMES + ("mnist", "shapes")),
  "timesteps": Experiment("experiments.timesteps", ("grid25", "grid25_rotated")),
  "denoisers": Experiment("experiments.denoisers", ("shapes",)),
  "scaling": Experiment("experiments.scaling", ("shapes",)),
  "hallbench": Experiment("experiments.hallbench", tuple(gaussians.NAMES) + ("shapes",)),
}
