"""The workdir contract shared by every experiment.

::

  WORKDIR/config.json     resolved config (a rerun with incompatible fields is refused)
  WORKDIR/metrics.jsonl   one JSON object per logged step (``step``, ``loss``, ...)
  WORKDIR/results.json    the measurements
  WORKDIR/figures/*.png
  WORKDIR/checkpoints/    orbax CheckpointManager

Running again on the same workdir resumes from the last checkpoint; nothing
is overwritten silently. Only process 0 writes files.
"""

import json
import os
import time
from typing import Any, Iterable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from mode_interp import sharding
from mode_interp.errors import WorkdirError

# Config sections that define the trained model: changing them under an existing
# checkpoint would silently mix two experiments, so it is refused.
FROZEN_PREFIXES = ("experiment", "seed", "data.", "diffusion.", "model.", "train.batch_size",
                   "train.lr", "train.ema_decay", "recursive.")




def _jsonable(x):
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


class Workdir:
  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.figures = os.path.join(self.path, "figures")
    self.checkpoints = os.path.join(self.path, "checkpoints")
    self.main = sharding.is_main_process()
    if self.main:
      os.makedirs(self.figures, exist_ok=True)

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  def figure(self, name: str) -> str:
    return os.path.join(self.figures, name)

  # -- config --------------------------------------------------------------
  def write_config(self, config: dict, frozen: Iterable[str] = FROZEN_PREFIXES) -> list:
    """Writes ``config.json``; if one exists, refuses changes to frozen fields.

    Returns the list of (field, old, new) changes in non-frozen fields.
    """
    path = self.file("config.json")
    config = _jsonable(config)
    changes = []
    if os.path.exists(path):
      with open(path) as f:
        old = _flatten(json.load(f))
      new = _flatten(config)
      for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
          changes.append((key, old.get(key), new.get(key)))
      # Fields that a newer version of the code added (absent from the old file) keep
      # their defaults' meaning and are not a conflict.
      bad = [c for c in changes if c[0] in old
             and any(c[0] == p or c[0].startswith(p) for p in frozen)]
      if bad:
        lines = ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in bad)
        raise WorkdirError(
            f"{self.path} holds a run with a different config ({lines}); these fields define the "
            f"model, so resuming would mix two experiments. Use a new --workdir, or delete this one.")
    if self.main:
      with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return changes

  # -- results -------------------------------------------------------------
  def write_results(self, results: dict) -> None:
    if self.main:
      tmp = self.file("results.json.tmp")
      with open(tmp, "w") as f:
        json.dump(_jsonable(results), f, indent=2)
      os.replace(tmp, self.file("results.json"))

  def read_results(self) -> Optional[dict]:
    path = self.file("results.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def save_arrays(self, name: str, **arrays) -> None:
    if self.main:
      tmp = self.file(name + ".tmp.npz")
      np.savez_compressed(tmp, **arrays)
      os.replace(tmp, self.file(name))

  def load_arrays(self, name: str) -> Optional[dict]:
    path = self.file(name)
    if not os.path.exists(path):
      return None
    with np.load(path) as z:
      return {k: z[k] for k in z.files}

  def metric_writer(self, resume_step: int = 0, model: str = "") -> "MetricWriter":
    return MetricWriter(self.file("metrics.jsonl"), resume_step=resume_step, model=model,
                        enabled=self.main)

  def checkpoint_manager(self, subdir: str = "", max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = os.path.join(self.checkpoints, subdir) if subdir else self.checkpoints
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


class MetricWriter:
  """Appends one JSON object per line (big_vision-style).

  Experiments that train several models (sweeps, recursive generations) tag
  each record with ``model``. On resume, the records of this ``model`` past
  ``resume_step`` (written after its last checkpoint) are dropped, so the file
  reads as one uninterrupted run.
  """

  def __init__(self, path: str, resume_step: int = 0, model: str = "", enabled: bool = True):
    self.path = path
    self.model = model
    self.enabled = enabled
    if enabled and os.path.exists(path):
      kept = []
      with open(path) as f:
        for line in f:
          line = line.strip()
          if not line:
            continue
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut short by a crash
          if rec.get("model", "") != model or rec.get("step", 0) <= resume_step:
            kept.append(line)
      with open(path, "w") as f:
        f.writelines(l + "\n" for l in kept)

  def write(self, step: int, **metrics: Any) -> None:
    if not self.enabled:
      return
    rec = {"step": int(step)}
    if self.model:
      rec["model"] = self.model
    rec["time"] = round(time.time(), 3)
    rec.update({k: _jsonable(np.asarray(v).item() if np.ndim(v) == 0 else v)
                for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
