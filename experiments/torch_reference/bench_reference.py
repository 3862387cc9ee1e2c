r"""Times the official PyTorch toy code at the benchmark's sizes; run by ``experiments.bench``.

Not part of the package and not importable from it: it runs in the reference code's own
environment (CPU torch), with the official repository's ``gaussian_experiments`` folder
on ``sys.path``::

  PYTHONPATH=REF/gaussian_experiments REF_PYTHON experiments/torch_reference/bench_reference.py \
      --train-batch=2000 --sampler-n=10000 --json=OUT.json

It builds what the official ``train_toy.py`` builds (``Decoder(1, 128, 3)``, the toy
``GaussianDiffusion`` with linear betas 0.001 -> 0.2 over T = 1000, eps prediction,
fixed-large variance, MSE loss, Adam 1e-3) and times (a) one training step on a
batch of 1D mixture points (forward, backward, Adam), (b) one reverse step of
``p_sample_step`` over N samples (what ``p_sample`` repeats T times); each as the
fastest of ``--repeats`` timed blocks (the statistic ``experiments.bench`` uses for its
own training rows), so a moment of interference on a shared machine does not decide a ratio. Modules the
official package imports but the toy path never calls (``wandb``, ``torchvision``'s
``save_image``, ``tqdm``) are stubbed when absent. Prints one JSON object.
"""

import argparse
import importlib.machinery
import json
import platform
import sys
import time
import types


def _stub_missing(names):
  """Empty stand-ins for modules the official package imports at load time but the toy
  training and sampling never call; returns the names stubbed."""
  stubbed = []
  for name in names:
    try:
      __import__(name)
    except Exception:  # noqa: BLE001 - absent, or present but broken (torchvision vs torch)
      parts = name.split(".")
      for i in range(1, len(parts) + 1):
        mod = ".".join(parts[:i])
        if mod not in sys.modules:
          m = types.ModuleType(mod)
          m.__spec__ = importlib.machinery.ModuleSpec(mod, None)  # torch's import hooks ask
          sys.modules[mod] = m
      stubbed.append(name)
  if "torchvision.utils" in stubbed:

    def _save_image(*a, **k):
      raise RuntimeError("torchvision is stubbed in this environment")

    sys.modules["torchvision.utils"].save_image = _save_image
  if "tqdm" in stubbed:
    sys.modules["tqdm"].tqdm = lambda it=None, *a, **k: it
  return stubbed


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--train-batch", type=int, action="append", default=[])
  p.add_argument("--num-train", type=int, default=20_000)
  p.add_argument("--sampler-n", type=int, action="append", default=[])
  p.add_argument("--timesteps", type=int, default=1000)
  p.add_argument("--train-steps", type=int, default=30)
  p.add_argument("--sampler-steps", type=int, default=20)
  p.add_argument(
    "--repeats",
    type=int,
    default=3,
    help="timed blocks per size; the fastest block's mean is reported",
  )
  p.add_argument(
    "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
  )
  p.add_argument("--json", default="")
  a = p.parse_args()

  stubbed = _stub_missing(["wandb", "tqdm", "torchvision.utils"])
  import numpy as np
  import torch
  from ddpm_torch.diffusion import get_beta_schedule
  from ddpm_torch.toy.diffusion import GaussianDiffusion
  from ddpm_torch.toy.toy_model import Decoder

  if a.threads:
    torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  betas = get_beta_schedule("linear", beta_start=0.001, beta_end=0.2, timesteps=a.timesteps)
  diffusion = GaussianDiffusion(
    betas=betas, model_mean_type="eps", model_var_type="fixed-large", loss_type="mse"
  )
  out = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "stubbed": stubbed,
    "python": platform.python_version(),
    "train": [],
    "sampler": [],
  }

  rng = np.random.default_rng(0)
  data = torch.from_numpy(
    (rng.choice([1.0, 2.0, 3.0], a.num_train) + 0.05 * rng.standard_normal(a.num_train)).astype(
      np.float32
    )
  )[:, None]
  for bs in a.train_batch:
    model = Decoder(1, 128, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    model.train()

    def step(i):
      lo = (i * bs) % (a.num_train - bs + 1)
      x = data[lo : lo + bs]
      t = torch.randint(a.timesteps, size=(bs,), dtype=torch.int64)
      loss = diffusion.train_losses(model, x_0=x, t=t).mean()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      return loss

    for i in range(3):
      step(i)
    blocks = []
    for r in range(a.repeats):
      t0 = time.perf_counter()
      for i in range(a.train_steps):
        loss = step(r * a.train_steps + i)
      blocks.append(1000.0 * (time.perf_counter() - t0) / a.train_steps)
    out["train"].append(
      {
        "batch_size": bs,
        "steps_timed": a.train_steps * a.repeats,
        "ms_per_step": min(blocks),
        "ms_per_step_blocks": blocks,
        "loss": float(loss),
      }
    )

  for n in a.sampler_n:
    model = Decoder(1, 128, 3).eval()
    with torch.inference_mode():
      x = torch.randn(n, 1)
      t = torch.empty((n,), dtype=torch.int64)
      for ti in (a.timesteps - 1, a.timesteps - 2):  # warm-up
        t.fill_(ti)
        x = diffusion.p_sample_step(model, x, t)
      blocks = []
      for r in range(a.repeats):
        t0 = time.perf_counter()
        for k in range(a.sampler_steps):
          t.fill_(max(a.timesteps - 3 - k - r * a.sampler_steps, 0))
          x = diffusion.p_sample_step(model, x, t)
        blocks.append(1000.0 * (time.perf_counter() - t0) / a.sampler_steps)
    out["sampler"].append(
      {
        "num_samples": n,
        "timesteps": a.timesteps,
        "steps_timed": a.sampler_steps * a.repeats,
        "ms_per_step": min(blocks),
        "ms_per_step_blocks": blocks,
      }
    )
  text = json.dumps(out)
  if a.json:
    with open(a.json, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  main()
