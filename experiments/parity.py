r"""Parity with the official PyTorch code on the Gaussian experiments: both implementations
trained and sampled with the same recipe and seeds, measured by the same code, side by side.

  python -m experiments.parity --config=configs/gaussian1d.py:official --seeds=0,1,2 \
      --reference=PATH [--reference_python=PY] [--workdir=runs/parity_gaussian1d_official]
  python -m experiments.parity --config=configs/gaussian1d.py:official --seeds=0,1,2 \
      --reference=PATH --config.data.means=1,2,4,5 --config.data.num_train=50000
  python -m experiments.parity --config=configs/gaussian1d.py:official --reference=none  # this side only

``PATH`` is a checkout of the official repository (locuslab/diffusion-model-hallucination),
run in its own environment: ``--reference_python`` (or ``$MODE_INTERP_REFERENCE_PYTHON``) is a
Python with CPU torch, numpy and scikit-learn. Torch is never imported here: the official side
is ``experiments/torch_reference/reference_toy.py``, run in that Python with
``PATH/gaussian_experiments`` on
``PYTHONPATH``; it builds the official ``Decoder``, toy ``GaussianDiffusion`` and data classes,
trains with torch Adam and samples with ``p_sample_step``, and writes its samples and trajectory
variances to ``WORKDIR/reference/seed<S>.npz``. This side is ``experiments.main`` on
``WORKDIR/this/seed<S>`` (the workdir contract: rerunning resumes). Both sides' arrays then go
through the same rule and metric code (``mode_interp.hallucination``): the hallucination rate
(farther than ``detect.k_sigma`` std from every mode), the trajectory-variance AUROC, the share
of hallucinations removed at ``detect.keep_in_support`` (96%) of in-support samples kept, and the
share of in-support samples kept when ``detect.remove_hallucinations`` (95%) of the
hallucinations are removed; with the training and sampling wall times.

Batches: ``--reference_batching=random`` (default) draws each torch batch uniformly with
replacement from a seeded generator, as this implementation does;
``--reference_batching=epoch`` reproduces the official ``DataStreamer`` (fixed contiguous
slices in order, every epoch). Seed ``S`` seeds the official data classes (the official script
leaves them unseeded) and torch's generators on that side, and ``seed = S`` on this side.

Writes ``WORKDIR/config.json`` (the config and the parity settings), ``WORKDIR/results.json``
(per seed and side, mean, std, min and max per metric, whether each side's mean lies within the
other side's seed range; rewritten after every seed, so an interruption or a failed reference
run loses nothing already measured), and ``WORKDIR/figures/`` (``per_seed.png``: each seed's
metrics on both sides; ``samples_seed<S>.png``: both sides' samples). A wrong ``--reference``
or reference Python is refused in one line before any work; a reference run that fails is
reported in one line, its column left empty, and this side still runs and is reported (exit
status 1).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Optional

from mode_interp import sharding

sharding.configure_host_threads()

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import cli, config_check, gaussian  # noqa: E402
from experiments import main as main_lib  # noqa: E402 - the experiment this side runs
from mode_interp import hallucination  # noqa: E402
from mode_interp.errors import ConfigError, DataError, TrainingDivergedError, WorkdirError  # noqa: E402
from mode_interp.workdir import Workdir  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (defined only when it runs as a command, so that tests can import
  this module beside ``experiments.main``, which has its own)."""
  cli.define_config_flags()
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, run on both sides.")
  flags.DEFINE_string(
    "reference", None, "A checkout of the official repository, or 'none' to run this side only."
  )
  flags.DEFINE_string(
    "reference_python",
    None,
    "Python with CPU torch for --reference (default: $MODE_INTERP_REFERENCE_PYTHON).",
  )
  flags.DEFINE_enum(
    "reference_batching",
    "random",
    ["random", "epoch"],
    "The torch side's "
    "batches: uniform with replacement (as here) or the official sequential "
    "epochs.",
  )
  flags.DEFINE_integer(
    "reference_threads", 0, "torch intra-op threads (0: the CPUs the process may run on)."
  )


REFERENCE_SCRIPT = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "torch_reference", "reference_toy.py"
)
SIDES = ("this", "official")
# (key, label, format) of the per-seed measurements, in table order.
METRICS = (
  ("hallucination_rate", "hallucination rate", "pct"),
  ("auroc", "AUROC", "num"),
  ("removed_at_keep", "removed at 96% kept", "pct"),
  ("kept_at_removal", "kept at 95% removed", "pct"),
  ("num_hallucinations", "hallucinations", "int"),
  ("train_seconds", "train s", "sec"),
  ("ms_per_train_step", "ms / train step", "num"),
  ("sample_seconds", "sample s", "sec"),
)
# Reference-script arguments that do not change what is measured: a cache with other values serves.
_FREE_ARGS = ("chunk", "threads", "log_every")


class ReferenceError_(RuntimeError):
  """The reference side cannot run or failed; the message says why, in one line."""


# -- the recipe -------------------------------------------------------------------
def check_recipe(cfg) -> None:
  """Refuses (``ConfigError``) a config the official toy code cannot run as it stands."""
  config_check.validate(cfg)
  need = (
    ("experiment", "gaussian"),
    ("model.name", "mlp"),
    ("model.share_blocks", True),
    ("diffusion.schedule", "linear"),
    ("train.lr_schedule", "constant"),
    ("train.warmup_steps", 0),
    ("train.grad_clip", 0.0),
    ("train.ema_decay", 0.0),
    ("sample.sampler", "ddpm"),
    ("detect.reduction", "mean"),
    ("data.imbalance", 1.0),
    ("sweep.enabled", False),
  )
  for field, value in need:
    node = cfg
    for part in field.split("."):
      node = node[part]
    if node != value:
      raise ConfigError(
        field,
        f"is {node!r}; the official toy code runs only {value!r} "
        f"(use configs/gaussian1d.py:official or configs/grid25.py:official)",
      )
  for field in ("t_lo", "t_hi"):
    if cfg.detect.get(field, -1) != -1:
      raise ConfigError(f"detect.{field}", "must be -1: parity uses the last detect.window steps")


def reference_args(cfg, seed: int, batching: str, threads: int = 0) -> dict:
  """The arguments of ``reference_toy.py`` that reproduce ``cfg`` for ``seed``."""
  means = ",".join(str(float(m)) for m in cfg.data.means) if cfg.data.name == "gaussian1d" else ""
  return {
    "data": cfg.data.name,
    "means": means or "1,2,3",
    "std": float(cfg.data.std),
    "num_train": int(cfg.data.num_train),
    "steps": int(cfg.train.steps),
    "batch_size": int(cfg.train.batch_size),
    "batching": batching,
    "lr": float(cfg.train.lr),
    "b1": float(cfg.train.b1),
    "b2": float(cfg.train.b2),
    "width": int(cfg.model.width),
    "blocks": int(cfg.model.num_blocks),
    "timesteps": int(cfg.diffusion.timesteps),
    "beta_start": float(cfg.diffusion.beta_start),
    "beta_end": float(cfg.diffusion.beta_end),
    "variance": cfg.sample.variance.replace("_", "-"),
    "num_samples": int(cfg.sample.num_samples),
    "chunk": int(min(cfg.sample.num_samples, 20_000)),
    "window": int(cfg.detect.window),
    "seed": int(seed),
    "threads": int(threads),
    "log_every": int(max(1, min(cfg.train.log_every * 10, cfg.train.steps))),
  }


def _this_side_only(reference) -> bool:
  return reference is not None and str(reference).lower() == "none"


def resolve_reference(path, python):
  """``(gaussian_experiments folder, python)`` for ``--reference`` / ``--reference_python``,
  or raises :class:`ReferenceError_` with one line saying what is missing."""
  if not path:
    raise ReferenceError_(
      "--reference is missing: pass --reference=PATH (a checkout of the official repository, "
      "locuslab/diffusion-model-hallucination) with --reference_python=PY (a Python with CPU "
      "torch) or $MODE_INTERP_REFERENCE_PYTHON, or --reference=none to run this side only"
    )
  src = os.path.join(os.path.abspath(os.path.expanduser(path)), "gaussian_experiments")
  if not os.path.isdir(os.path.join(src, "ddpm_torch", "toy")):
    raise ReferenceError_(
      f"--reference={path}: no gaussian_experiments/ddpm_torch/toy there; "
      f"pass a checkout of locuslab/diffusion-model-hallucination"
    )
  py = python or os.environ.get("MODE_INTERP_REFERENCE_PYTHON", "")
  if not py:
    raise ReferenceError_(
      "--reference needs a Python with CPU torch: pass --reference_python=PY "
      "or set $MODE_INTERP_REFERENCE_PYTHON"
    )
  found = shutil.which(os.path.expanduser(py))
  if not found:
    raise ReferenceError_(f"--reference_python={py}: no such executable")
  return src, found


def _same_recipe(meta_args: dict, args: dict) -> bool:
  keep = lambda d: {k: v for k, v in d.items() if k not in _FREE_ARGS}  # noqa: E731
  return keep(meta_args) == keep({k: v for k, v in args.items()})


def load_reference_npz(path: str):
  with np.load(path) as z:
    out = {k: z[k] for k in z.files}
  out["meta"] = json.loads(str(out["meta"]))
  return out


def run_reference(src: str, python: str, args: dict, out: str, log=logging.info) -> dict:
  """Runs ``reference_toy.py`` (or reuses ``out`` drawn with the same recipe); returns its
  arrays and ``meta``. Raises :class:`ReferenceError_` in one line when it fails."""
  if os.path.exists(out):
    try:
      ref = load_reference_npz(out)
      if _same_recipe(ref["meta"].get("args", {}), args):
        log(f"reference: seed {args['seed']}: reusing {out}")
        return ref
    except (OSError, ValueError, KeyError, EOFError) as e:
      log(f"reference: {out} is unreadable ({type(e).__name__}); running again")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  cmd = [python, REFERENCE_SCRIPT] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
  cmd.append(f"--out={out}")
  log_path = out[: -len(".npz")] + ".log"
  log(
    f"reference: seed {args['seed']}: {args['steps']} steps at batch {args['batch_size']} "
    f"({args['batching']} batches), {args['num_samples']} samples; log in {log_path}"
  )
  env = dict(os.environ, PYTHONPATH=src)
  try:
    with open(log_path, "w") as lf:
      proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=lf, text=True)
  except OSError as e:
    raise ReferenceError_(f"--reference_python={python}: cannot run it ({e})") from None
  if proc.returncode != 0 or not os.path.exists(out):
    with open(log_path) as lf:
      lines = [l.strip() for l in lf.read().splitlines() if l.strip()]
    why = lines[-1] if lines else "no output"
    raise ReferenceError_(
      f"the reference run for seed {args['seed']} failed (exit "
      f"{proc.returncode}): {why[:300]} (log: {log_path})"
    )
  try:
    return load_reference_npz(out)
  except (OSError, ValueError, KeyError, EOFError) as e:
    raise ReferenceError_(
      f"the reference run for seed {args['seed']} wrote an unreadable "
      f"{out} ({type(e).__name__}: {e})"
    ) from None


# -- this side ------------------------------------------------------------------------
def seed_config(cfg, seed: int):
  import ml_collections

  c = ml_collections.ConfigDict(cfg.to_dict())
  c.seed = int(seed)
  return c


def run_this(cfg, wd_path: str, config_name: str = "") -> dict:
  """Runs (or resumes) this implementation for ``cfg`` on ``wd_path``; returns its samples,
  trajectory variances and timings. The timings of the run that trained and sampled are kept
  in ``timing.json``: a rerun that only reads the caches reports those."""
  timing_path = os.path.join(wd_path, "timing.json")
  old = None
  if os.path.exists(timing_path):
    with open(timing_path) as f:
      old = json.load(f)
  res = main_lib.run(cfg, wd_path, config_name=config_name)
  train_s = float(res["train"]["seconds_this_run"])
  sample_s = float(res["sampling"]["seconds_this_run"])
  timing = {"train_seconds": train_s, "sample_seconds": sample_s, "steps": int(cfg.train.steps)}
  if (
    old is not None and old.get("steps") == timing["steps"] and train_s < 0.5 * old["train_seconds"]
  ):
    timing = old  # the caches served this run: keep the timings of the run that did the work
  with open(timing_path, "w") as f:
    json.dump(timing, f)
  arrays = Workdir(wd_path).load_arrays("samples.npz")
  return {
    "samples": arrays["samples"],
    "traj_variance": arrays["traj_variance"],
    "train_seconds": timing["train_seconds"],
    "sample_seconds": timing["sample_seconds"],
  }


# -- measurements ---------------------------------------------------------------------
def side_metrics(samples, traj_variance, mixture, cfg) -> dict:
  """The parity measurements of one side's arrays (the same code for both sides)."""
  x = np.asarray(samples, np.float64).reshape(len(samples), mixture.dim)
  tv = np.asarray(traj_variance, np.float64).reshape(-1)
  ok = hallucination.finite_or_warn(x, tv)
  x, tv = x[ok], tv[ok]
  hal = hallucination.mixture_hallucinations(x, mixture.means, mixture.std, cfg.detect.k_sigma)
  det = hallucination.detection_metrics(
    tv, hal, cfg.detect.keep_in_support, cfg.detect.remove_hallucinations
  )
  at = det.get("at_removal") or {}
  covered = (
    np.unique(hallucination.nearest_mode(x[~hal], mixture.means)).size if (~hal).any() else 0
  )
  return {
    "num_samples": int(len(ok)),
    "non_finite": int((~ok).sum()),
    "num_hallucinations": int(hal.sum()),
    "hallucination_rate": float(hal.mean()) if len(hal) else None,
    "hallucination_ci95": hallucination.rate_with_interval(hal)["ci95"],
    "auroc": det["auroc"],
    "threshold": det["threshold"],
    "in_support_retained": det["in_support_retained"],
    "removed_at_keep": det["hallucinations_removed"],
    "kept_at_removal": at.get("in_support_retained"),
    "modes_covered": int(covered),
    "num_modes": int(len(mixture.means)),
    "median_tv_in_support": float(np.median(tv[~hal])) if (~hal).any() else None,
    "median_tv_hallucination": float(np.median(tv[hal])) if hal.any() else None,
  }


def summarize(values) -> dict:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
  return {
    "n": int(len(v)),
    "mean": float(v.mean()),
    "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
    "min": float(v.min()),
    "max": float(v.max()),
  }


def compare(summary: dict, values: Optional[dict] = None) -> dict:
  """Per metric: the difference of the means, whether each side's mean lies within the other
  side's seed range, the difference in units of its standard error (Welch) and, given the
  per-seed ``values`` (``{side: {metric: [...]}}``), the two-sided Mann-Whitney rank test's
  p-value (no normality assumed: a final iterate's metrics have long tails across seeds)."""
  from scipy import stats

  out = {}
  for key, _, _ in METRICS:
    a, b = summary["this"].get(key), summary["official"].get(key)
    if not a or not b or not a["n"] or not b["n"]:
      continue
    se = np.sqrt((a["std"] ** 2 / a["n"]) + (b["std"] ** 2 / b["n"]))
    diff = a["mean"] - b["mean"]
    out[key] = {
      "this_minus_official": diff,
      "this_mean_within_official_range": bool(b["min"] <= a["mean"] <= b["max"]),
      "official_mean_within_this_range": bool(a["min"] <= b["mean"] <= a["max"]),
      "welch_z": float(diff / se) if se > 0 else None,
      "rank_test_p": None,
    }
    if values is not None:
      va, vb = ([v for v in values[side].get(key, []) if v is not None] for side in SIDES)
      if len(va) >= 2 and len(vb) >= 2 and len(set(va) | set(vb)) > 1:
        out[key]["rank_test_p"] = float(stats.mannwhitneyu(va, vb, alternative="two-sided").pvalue)
  return out


def _fmt(v, kind) -> str:
  if v is None:
    return "-"
  if kind == "pct":
    return f"{100 * v:.2f}%"
  if kind == "int":
    return f"{v:.0f}"
  if kind == "sec":
    return f"{v:.0f}"
  return f"{v:.3f}"


def format_table(results: dict) -> str:
  """Both sides per seed, then mean ± std (min..max), as text."""
  seeds = results["seeds"]
  lines = [
    f"parity: {results['config_name']}: {results['recipe']}",
    f"reference: {results['reference'].get('status')}",
  ]
  head = f"{'metric':<22}" + "".join(f"{f'{side} s{s}':>12}" for side in SIDES for s in seeds)
  lines.append(head)
  for key, label, kind in METRICS:
    row = f"{label:<22}"
    for side in SIDES:
      for s in seeds:
        r = results["per_seed"][side].get(str(s))
        row += f"{_fmt(r.get(key) if r else None, kind):>12}"
    lines.append(row)
  lines.append("")
  lines.append(
    f"{'metric':<22}{'this: mean ± std (min..max)':>36}{'official: mean ± std (min..max)':>40}"
  )
  for key, label, kind in METRICS:
    row = f"{label:<22}"
    for side, w in (("this", 36), ("official", 40)):
      m = results["summary"][side].get(key) or {}
      if m.get("n"):
        cell = (
          f"{_fmt(m['mean'], kind)} ± {_fmt(m['std'], kind)} "
          f"({_fmt(m['min'], kind)}..{_fmt(m['max'], kind)})"
        )
      else:
        cell = "missing"
      row += f"{cell:>{w}}"
    c = results["comparison"].get(key)
    if c:
      row += (
        "   within official range"
        if c["this_mean_within_official_range"]
        else "   OUTSIDE official range"
      )
      if c.get("welch_z") is not None:
        row += f", Welch z {c['welch_z']:+.2f}"
      if c.get("rank_test_p") is not None:
        row += f", rank test p {c['rank_test_p']:.2f}"
    lines.append(row)
  return "\n".join(lines)


def _figures(wd, results, arrays, mixture):
  import matplotlib.pyplot as plt

  shown = [(k, l, f) for k, l, f in METRICS[:4]]
  fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2))
  for ax, (key, label, _) in zip(axes, shown):
    for i, side in enumerate(SIDES):
      vals = [
        r.get(key) for r in results["per_seed"][side].values() if r and r.get(key) is not None
      ]
      ax.scatter(
        np.full(len(vals), i) + np.linspace(-0.08, 0.08, max(len(vals), 1))[: len(vals)],
        vals,
        s=25,
        label=side,
      )
      if vals:
        ax.hlines(np.mean(vals), i - 0.2, i + 0.2, colors="k")
    ax.set_xticks([0, 1], SIDES)
    ax.set_xlim(-0.6, 1.6)
    ax.set_title(label)
  fig.tight_layout()
  fig.savefig(wd.figure("per_seed.png"), dpi=110)
  plt.close(fig)
  for seed, sides in arrays.items():
    fig, ax = plt.subplots(
      figsize=(6, 3.5) if mixture.dim == 1 else (7, 3.5), ncols=1 if mixture.dim == 1 else 2
    )
    if mixture.dim == 1:
      lo, hi = mixture.means.min() - 0.6, mixture.means.max() + 0.6
      for side, x in sides.items():
        ax.hist(np.asarray(x).ravel(), bins=300, range=(lo, hi), histtype="step", label=side)
      ax.set_yscale("log")
      ax.legend()
    else:
      for a, (side, x) in zip(ax, sides.items()):
        x = np.asarray(x)
        a.scatter(x[:, 0], x[:, 1], s=0.3, alpha=0.4)
        a.set_title(side)
    fig.suptitle(f"samples, seed {seed}")
    fig.tight_layout()
    fig.savefig(wd.figure(f"samples_seed{seed}.png"), dpi=110)
    plt.close(fig)


def run(
  cfg,
  workdir: str,
  seeds,
  reference,
  reference_python=None,
  batching: str = "random",
  threads: int = 0,
  config_name: str = "",
  log=logging.info,
):
  """Runs both sides for every seed; returns ``(results, errors)`` (errors: one line each)."""
  check_recipe(cfg)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ConfigError("--seeds", "is empty; pass e.g. --seeds=0,1,2")
  src = py = None
  if not _this_side_only(reference):
    src, py = resolve_reference(reference, reference_python)
  wd = Workdir(workdir)
  wd.lock()
  try:
    wd.check_files()
    wd.write_config(
      {
        **cfg.to_dict(),
        "parity": {
          "seeds": seeds,
          "reference": reference,
          "reference_python": py,
          "reference_batching": batching,
        },
      }
    )
    mixture = gaussian.make_mixture(cfg)
    recipe = (
      f"{cfg.data.name} {tuple(cfg.data.means) if cfg.data.name == 'gaussian1d' else ''} "
      f"{cfg.data.num_train} points, batch {cfg.train.batch_size} ({batching} batches "
      f"on the official side, random here), {cfg.train.steps} steps, Adam "
      f"{cfg.train.lr} constant, T={cfg.diffusion.timesteps}, "
      f"{cfg.sample.num_samples} samples, window {cfg.detect.window}, "
      f"{cfg.detect.k_sigma}-std rule"
    ).replace("  ", " ")
    status = (
      "missing: --reference=none, this side only"
      if src is None
      else f"{reference} run by {py} ({batching} batches)"
    )
    results = {
      "config_name": config_name,
      "recipe": recipe,
      "seeds": seeds,
      "reference": {"path": reference, "python": py, "batching": batching, "status": status},
      "per_seed": {side: {} for side in SIDES},
      "errors": [],
    }
    errors = []
    arrays = {}

    def write():
      results["summary"] = {
        side: {
          k: summarize([r.get(k) for r in results["per_seed"][side].values() if r])
          for k, _, _ in METRICS
        }
        for side in SIDES
      }
      results["comparison"] = compare(
        results["summary"],
        {
          side: {
            k: [r.get(k) for r in results["per_seed"][side].values() if r] for k, _, _ in METRICS
          }
          for side in SIDES
        },
      )
      results["errors"] = list(errors)
      wd.write_results(results)

    for seed in seeds:
      if src is not None:
        args = reference_args(cfg, seed, batching, threads)
        try:
          ref = run_reference(
            src, py, args, wd.file(os.path.join("reference", f"seed{seed}.npz")), log=log
          )
          m = side_metrics(ref["samples"], ref["traj_variance"], mixture, cfg)
          meta = ref["meta"]
          m.update(
            train_seconds=meta["train_seconds"],
            sample_seconds=meta["sample_seconds"],
            ms_per_train_step=meta["ms_per_train_step"],
            threads=meta["threads"],
            torch=meta["torch"],
          )
          results["per_seed"]["official"][str(seed)] = m
          arrays.setdefault(seed, {})["official"] = ref["samples"]
          results["reference"]["torch"] = meta["torch"]
        except ReferenceError_ as e:
          errors.append(str(e))
          log(f"error: {e}")
          results["reference"]["status"] = f"failed: {e}"
          src = None  # later seeds run this side only
        write()
      t0 = time.time()
      mine = run_this(
        seed_config(cfg, seed),
        os.path.join(wd.path, "this", f"seed{seed}"),
        config_name=config_name,
      )
      m = side_metrics(mine["samples"], mine["traj_variance"], mixture, cfg)
      m.update(
        train_seconds=mine["train_seconds"],
        sample_seconds=mine["sample_seconds"],
        ms_per_train_step=1000.0 * mine["train_seconds"] / max(cfg.train.steps, 1),
      )
      results["per_seed"]["this"][str(seed)] = m
      arrays.setdefault(seed, {})["this"] = mine["samples"]
      log(f"this side: seed {seed} done in {time.time() - t0:.0f}s")
      write()
    try:
      _figures(wd, results, {s: a for s, a in list(arrays.items())[:1]}, mixture)
    except Exception as e:  # noqa: BLE001 - a figure never costs the measurements
      log(f"figures: {type(e).__name__}: {e}")
    return results, errors
  finally:
    wd.unlock()


def default_workdir(config_arg: str) -> str:
  return os.path.join("runs", "parity_" + os.path.basename(cli.default_workdir(config_arg)))


def main(argv):
  cli.start(argv, preemptible=False)
  config_arg = cli.config_argument()
  workdir = FLAGS.workdir or default_workdir(config_arg)
  try:
    results, errors = run(
      FLAGS.config,
      workdir,
      FLAGS.seeds,
      FLAGS.reference,
      FLAGS.reference_python,
      FLAGS.reference_batching,
      FLAGS.reference_threads,
      config_name=config_arg,
    )
  except (ConfigError, DataError, WorkdirError, TrainingDivergedError, ReferenceError_) as e:
    sys.exit(f"error: {e}")
  print(format_table(results), flush=True)
  print(f"written: {os.path.abspath(workdir)}/results.json", flush=True)
  if _this_side_only(FLAGS.reference):
    print("reference column missing: --reference=none (this side only)", flush=True)
  if errors:
    sys.exit("\n".join(f"error: {e}" for e in errors))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
