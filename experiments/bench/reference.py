"""The official PyTorch toy code timed at the benchmark's sizes, in the same run
(``--reference``): ``experiments/torch_reference/bench_reference.py``, run by another Python."""

import json
import os

# A script, not a module: it runs in the official code's own environment (CPU torch).
REFERENCE_SCRIPT = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "torch_reference",
  "bench_reference.py",
)


class ReferenceError_(RuntimeError):
  """The reference run could not be made; the message says why, in one line."""


def reference_python(flag_value) -> str:
  py = flag_value or os.environ.get("MODE_INTERP_REFERENCE_PYTHON", "")
  if not py:
    raise ReferenceError_(
      "--reference needs a Python with CPU torch: pass --reference_python "
      "or set $MODE_INTERP_REFERENCE_PYTHON"
    )
  return py


def check_reference_path(path: str) -> None:
  """Refuses ``path`` unless it looks like a checkout of the official repository."""
  if not os.path.isdir(os.path.join(path, "gaussian_experiments")):
    raise ReferenceError_(
      f"--reference={path}: no gaussian_experiments folder there; "
      f"pass a checkout of locuslab/diffusion-model-hallucination"
    )


def time_reference(
  path: str, python: str, records, threads: int = 0, quick: bool = False, log=print
) -> dict:
  """Times the official toy code (``experiments/torch_reference/bench_reference.py``) at the
  sizes of the records (:class:`~experiments.bench.record.Record`) that have a counterpart, and
  fills in their reference columns. Returns the reference run's JSON."""
  import subprocess

  src = os.path.join(path, "gaussian_experiments")
  if not os.path.isdir(os.path.join(src, "ddpm_torch", "toy")):
    raise ReferenceError_(
      f"--reference={path}: no gaussian_experiments/ddpm_torch/toy there; "
      f"pass a checkout of locuslab/diffusion-model-hallucination"
    )
  batches = sorted({r.batch_size for r in records if r.case == "train" and r.model == "mlp"})
  ns = sorted(
    {
      r.num_samples
      for r in records
      if r.case == "sampler"
      and r.dim == 1
      and r.timesteps == 1000
      or (quick and r.case == "sampler" and r.dim == 1)
    }
  )
  timesteps = 100 if quick else 1000
  cmd = [python, REFERENCE_SCRIPT, f"--timesteps={timesteps}", f"--threads={threads}"]
  cmd += [f"--train-batch={b}" for b in batches] + [f"--sampler-n={n}" for n in ns]
  if quick:
    cmd += ["--train-steps=5", "--sampler-steps=5"]
  log(f"bench: the official toy code ({len(batches)} training, {len(ns)} sampler sizes) ...")
  env = dict(os.environ, PYTHONPATH=src)
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
  except OSError as e:
    raise ReferenceError_(f"--reference_python={python}: cannot run it ({e})") from None
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode != 0 or not lines:
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise ReferenceError_(f"the reference run failed (exit {proc.returncode}): {err}")
  ref = json.loads(lines[-1])
  by_batch = {r["batch_size"]: r["ms_per_step"] for r in ref["train"]}
  by_n = {r["num_samples"]: r["ms_per_step"] for r in ref["sampler"]}
  for r in records:
    ms = None
    if r.case == "train" and r.model == "mlp":
      ms = by_batch.get(r.batch_size)
    elif r.case == "sampler" and r.dim == 1 and r.timesteps == timesteps:
      ms = by_n.get(r.num_samples)
    if ms is not None:
      r.reference_ms_per_step, r.speedup_vs_reference = ms, ms / r.ms_per_step
      r.reference_threads, r.reference_torch = ref["threads"], ref.get("torch")
  return ref
