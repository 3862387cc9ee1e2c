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

import fcntl
import json
import logging as py_logging
import os
import time
import zipfile
from typing import Any, Iterable, Optional

import numpy as np
import orbax.checkpoint as ocp

from mode_interp import sharding
from mode_interp.errors import WorkdirError

# The fields that define the trained model: changing one under an existing checkpoint
# would silently mix two experiments, so it is refused. Whole sections end in "."; other
# entries are exact field names. `train.steps` may grow (training continues), except under
# a cosine schedule, whose decay horizon it is (see `frozen_fields`).
FROZEN = (
  "experiment",
  "seed",
  "data.",
  "diffusion.",
  "model.",
  "recursive.",
  "train.batch_size",
  "train.lr",
  "train.lr_schedule",
  "train.b1",
  "train.b2",
  "train.warmup_steps",
  "train.grad_clip",
  "train.ema_decay",
  "train.vsm_rho",
)


def frozen_fields(config: dict) -> tuple:
  """:data:`FROZEN`, plus ``train.steps`` when the (old) run decays its learning rate
  over it: more steps would silently restart a different, higher schedule."""
  if config.get("train", {}).get("lr_schedule") == "cosine":
    return FROZEN + ("train.steps",)
  return FROZEN


def _is_frozen(field: str, frozen) -> bool:
  return any(field.startswith(f) if f.endswith(".") else field == f for f in frozen)


class _QuietLibraries(py_logging.Filter):
  """Keeps the checkpoint library's per-save INFO chatter out of the progress log."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs() -> None:
  """Drops orbax's INFO records from absl's log handler (warnings and errors stay)."""
  from absl import logging as absl_logging

  absl_logging.get_absl_handler().addFilter(_QuietLibraries())


def jsonable(x):
  """``x`` with numpy scalars and arrays as Python values, keys as strings and non-finite
  floats as ``None`` (JSON has no NaN)."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    x = x.item()
  if isinstance(x, np.ndarray) or hasattr(x, "__array__"):  # numpy or jax arrays
    return jsonable(np.asarray(x).tolist())
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def write_json(path: str, obj, indent: int = 1, sort_keys: bool = False) -> None:
  """Writes ``jsonable(obj)`` to ``path`` atomically (a temporary file, then a rename): a
  reader, or a run killed mid-write, sees the old file or the new one, never half of one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(jsonable(obj), f, indent=indent, sort_keys=sort_keys)
  os.replace(tmp, path)


def flatten(d, prefix=""):
  """``{"a": {"b": v}}`` -> ``{"a.b": v}`` (tuples as lists, as JSON reads them back)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


class Workdir:
  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.figures = os.path.join(self.path, "figures")
    self.checkpoints = os.path.join(self.path, "checkpoints")
    self.main = sharding.is_main_process()
    if self.main:
      os.makedirs(self.figures, exist_ok=True)

  # -- one run at a time ------------------------------------------------------
  def lock(self) -> None:
    """Takes the workdir's lock (``WORKDIR/.lock``) for this process's lifetime.

    A second run on the same workdir is refused with a :class:`WorkdirError`
    naming the holder. The lock is an ``flock``: the kernel drops it when its
    process ends, however it ends (SIGKILL included), so a crashed run never
    leaves it stuck.
    """
    if not self.main or getattr(self, "_lock_file", None) is not None:
      return
    os.makedirs(self.path, exist_ok=True)
    f = open(self.file(".lock"), "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      f.close()
      raise WorkdirError(
        f"{self.path} is in use by a running experiment ({holder}); wait for it to finish, "
        f"or use another --workdir"
      ) from None
    f.seek(0)
    f.truncate()
    f.write(
      f"pid {os.getpid()} on {os.uname().nodename}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    f.flush()
    self._lock_file = f

  def unlock(self) -> None:
    f = getattr(self, "_lock_file", None)
    if f is not None:
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
      self._lock_file = None

  def check_files(self) -> None:
    """Refuses, before any work, a workdir whose ``results.json``, ``config.json`` or
    sample caches (``*.npz``) cannot be read; the message names the file and what to do."""
    for name in ("config.json", "results.json"):
      path = self.file(name)
      if os.path.exists(path):
        try:
          with open(path) as f:
            json.load(f)
        except (OSError, ValueError) as e:
          raise WorkdirError(
            f"{path} is unreadable ({type(e).__name__}: {e}); it was cut short or damaged. "
            f"Move it away and rerun: {'the results are recomputed' if name == 'results.json' else 'the config is written again'}"
            f" from the checkpoints and sample caches"
          ) from None
    for name in sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []:
      if name.endswith(".npz") and not name.endswith(".tmp.npz"):
        try:
          with np.load(self.file(name)) as z:
            for k in z.files:
              z[k]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
          raise WorkdirError(
            f"{self.file(name)} (a sample cache) is unreadable ({type(e).__name__}: {e}); "
            f"delete it and rerun: those samples are drawn again from the checkpoint"
          ) from None

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  def figure(self, name: str) -> str:
    return os.path.join(self.figures, name)

  # -- config --------------------------------------------------------------
  def _read_json(self, name: str) -> Optional[dict]:
    path = self.file(name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def read_config(self) -> Optional[dict]:
    """The run's ``config.json`` as written, or ``None`` for a new workdir."""
    return self._read_json("config.json")

  def write_config(self, config: dict, frozen: Optional[Iterable[str]] = None) -> list:
    """Writes ``config.json``; if one exists, refuses changes to frozen fields
    (default: :func:`frozen_fields` of the existing run's config).

    Returns the list of (field, old, new) changes in non-frozen fields.
    """
    path = self.file("config.json")
    config = jsonable(config)
    changes = []
    old_config = self.read_config()
    if old_config is not None:
      frozen = frozen_fields(old_config) if frozen is None else tuple(frozen)
      old = flatten(old_config)
      new = flatten(config)
      for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
          changes.append((key, old.get(key), new.get(key)))
      # Fields that a newer version of the code added (absent from the old file) keep
      # their defaults' meaning and are not a conflict.
      bad = [c for c in changes if c[0] in old and _is_frozen(c[0], frozen)]
      if bad:
        lines = ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in bad)
        why = "these fields define the model, so resuming would mix two experiments"
        if any(k == "train.steps" for k, _, _ in bad):
          why += (
            "; train.steps is the horizon of this run's cosine learning-rate schedule, "
            "so more steps would restart a different schedule, not continue this one"
          )
        raise WorkdirError(
          f"{self.path} holds a run with a different config ({lines}); {why}. Use a new "
          f"--workdir, or delete this one."
        )
    if self.main:  # atomically: the other processes of a multi-host job read it meanwhile
      write_json(path, config, indent=2, sort_keys=True)
    return changes

  # -- results -------------------------------------------------------------
  def write_results(self, results: dict) -> None:
    if self.main:
      write_json(self.file("results.json"), results, indent=2)

  def read_results(self) -> Optional[dict]:
    return self._read_json("results.json")

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

  # -- sample caches ---------------------------------------------------------
  def load_sample_cache(
    self, name: str, step: int, fingerprint: str, defaults: Optional[dict] = None
  ) -> Optional[dict]:
    """The arrays of sample cache ``name`` if it was drawn from checkpoint ``step`` with the
    sampling settings ``fingerprint`` (a JSON object; settings missing from an older cache
    read as their ``defaults``), else None (with a log line saying why)."""
    from absl import logging

    done = self.load_arrays(name)
    if done is None:
      return None
    cached_step = int(done.pop("step", -2))
    cached_fp = str(done.pop("fingerprint", ""))
    if cached_step != step:
      logging.info("%s: cached samples are from another checkpoint; sampling again", name)
      return None
    try:
      same = {**(defaults or {}), **json.loads(cached_fp)} == json.loads(fingerprint)
    except ValueError:
      same = False
    if not same:
      logging.info(
        "%s: cached samples were drawn with other sampling settings (%s, now %s); sampling again",
        name,
        cached_fp or "not recorded",
        fingerprint,
      )
      return None
    return done

  def save_sample_cache(self, name: str, step: int, fingerprint: str, arrays: dict) -> None:
    """Writes sample cache ``name`` (atomically), tagged with its checkpoint step and settings."""
    self.save_arrays(name, step=step, fingerprint=np.asarray(fingerprint), **arrays)

  def metric_writer(self, resume_step: int = 0, model: str = "") -> "MetricWriter":
    return MetricWriter(
      self.file("metrics.jsonl"), resume_step=resume_step, model=model, enabled=self.main
    )

  def checkpoint_manager(self, subdir: str = "", max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = os.path.join(self.checkpoints, subdir) if subdir else self.checkpoints
    manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    )
    # The processes agree on a preemption at mode_interp.preemption's own sync points, which
    # count its calls; orbax's manager would report checkpoint steps to the same jax counter
    # on every save and move the agreed point out of reach. Our saves are explicit anyway.
    manager.reached_preemption = lambda step: False
    return manager


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
    rec.update(
      {k: jsonable(np.asarray(v).item() if np.ndim(v) == 0 else v) for k, v in metrics.items()}
    )
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
