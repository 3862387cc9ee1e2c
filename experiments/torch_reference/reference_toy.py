r"""Trains and samples the official PyTorch toy code for ``experiments.parity``.

Not part of the package and not importable from it at run time: it runs in the reference
code's own environment (CPU torch, numpy, scikit-learn), with the official repository's
``gaussian_experiments`` folder on ``sys.path``::

  PYTHONPATH=REF/gaussian_experiments REF_PYTHON experiments/torch_reference/reference_toy.py \
      --data=gaussian1d --means=1,2,3 --num-train=20000 --steps=20000 --batch-size=2000 \
      --num-samples=20000 --window=10 --seed=0 --batching=random --out=OUT.npz

It builds what the official ``train_toy.py`` builds, from the official modules themselves:
the data (``Gaussian1D`` / ``Gaussian25`` / ``Gaussian25_Rotated``, seeded with ``--seed``;
the official script leaves them unseeded), ``Decoder(D, width, blocks)`` (the blocks are one
module object repeated), the toy ``GaussianDiffusion`` (``get_beta_schedule('linear', ...)``,
eps prediction, fixed-large variance, MSE loss) and torch Adam. A training step is the
official ``Trainer.step``: ``t ~ randint(T)``, ``train_losses(...).mean()``, ``backward``,
``Adam.step`` (no clipping, no warm-up, no EMA). Batches:

- ``--batching=random``: ``B`` indices drawn uniformly with replacement per step, from a
  ``torch.Generator`` seeded with ``--seed`` (the recipe ``mode_interp`` uses);
- ``--batching=epoch``: the official ``DataStreamer``: the contiguous slices
  ``data[k*B:(k+1)*B]``, ``k = 0 .. N//B - 1``, in the same order every epoch, unshuffled.

Sampling repeats the official ``p_sample_step`` from ``T - 1`` to 0 (what
``p_sample_save_all`` does) but keeps only the predicted x0 of the last ``--window``
steps, so memory stays O(N * window); the trajectory variance is the official
``np.mean(np.var(pred_x0[:, -window:], axis=1), axis=1)`` of ``train_toy_filter.py``.

Only the official modules the toy path needs are loaded (``ddpm_torch.diffusion``,
``.functions``, ``.modules``, ``.toy.diffusion``, ``.toy.toy_model``, ``.toy.toy_data``):
the packages' ``__init__`` files, which import ``wandb``, ``tqdm`` and ``torchvision``,
are not run.

Writes ``--out`` (an ``.npz``): ``samples [N, D]``, ``traj_variance [N]``, ``train_data
[num_train, D]``, ``loss_steps``, ``losses`` and ``meta`` (a JSON string: versions,
threads, timings, the recipe); prints the same JSON on its last stdout line.
"""

import argparse
import importlib
import importlib.machinery
import json
import os
import platform
import sys
import time
import types

OFFICIAL_MODULES = (
  "ddpm_torch.functions",
  "ddpm_torch.modules",
  "ddpm_torch.diffusion",
  "ddpm_torch.toy.diffusion",
  "ddpm_torch.toy.toy_model",
  "ddpm_torch.toy.toy_data",
)


def find_root(paths=None) -> str:
  """The folder on ``paths`` (default ``sys.path``) that holds ``ddpm_torch/toy``."""
  for p in sys.path if paths is None else paths:
    if p and os.path.isdir(os.path.join(p, "ddpm_torch", "toy")):
      return os.path.abspath(p)
  raise ImportError(
    "no ddpm_torch/toy on sys.path: put the official repository's "
    "gaussian_experiments folder on PYTHONPATH"
  )


def load_official(root: str = "") -> types.SimpleNamespace:
  """The official toy modules, imported from ``root`` (a ``gaussian_experiments`` folder)
  without running the ``ddpm_torch`` / ``ddpm_torch.toy`` package ``__init__`` files."""
  root = os.path.abspath(root) if root else find_root()
  for name, sub in (("ddpm_torch", ("ddpm_torch",)), ("ddpm_torch.toy", ("ddpm_torch", "toy"))):
    mod = sys.modules.get(name)
    path = os.path.join(root, *sub)
    if mod is None or list(getattr(mod, "__path__", [])) != [path]:
      for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[k]
      mod = types.ModuleType(name)
      mod.__path__ = [path]
      mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
      mod.__spec__.submodule_search_locations = [path]
      sys.modules[name] = mod
  mods = {
    n[len("ddpm_torch.") :]
    .replace("toy.", "toy_")
    .replace("toy_toy_", "toy_"): importlib.import_module(n)
    for n in OFFICIAL_MODULES
  }
  # functions, modules, diffusion, toy_diffusion, toy_model, toy_data
  return types.SimpleNamespace(root=root, **mods)


def make_data(official, name: str, num: int, seed: int, means=(1.0, 2.0, 3.0), std=0.05):
  """The official toy data set as float32 ``[num, D]``."""
  import numpy as np

  td = official.toy_data
  if name == "gaussian1d":
    ds = td.Gaussian1D(num, list(means), stdev=std, random_state=seed)
  elif name == "grid25":
    ds = td.Gaussian25(num, stdev=std, random_state=seed)
  elif name == "grid25_rotated":
    ds = td.Gaussian25_Rotated(num, stdev=std, random_state=seed)
  else:
    raise ValueError(f"unknown data {name!r}; allowed: gaussian1d, grid25, grid25_rotated")
  data = np.asarray(ds.data, np.float32)
  return data.reshape(len(data), -1)


def make_diffusion(
  official, timesteps: int, beta_start: float, beta_end: float, variance: str = "fixed-large"
):
  betas = official.diffusion.get_beta_schedule(
    "linear", beta_start=beta_start, beta_end=beta_end, timesteps=timesteps
  )
  return official.toy_diffusion.GaussianDiffusion(
    betas=betas, model_mean_type="eps", model_var_type=variance, loss_type="mse"
  )


class Batches:
  """The batch of each training step: ``random`` (uniform with replacement, seeded) or
  ``epoch`` (the official ``DataStreamer``: fixed contiguous slices, in order)."""

  def __init__(self, data, batch_size: int, how: str, seed: int):
    import torch

    self.data, self.batch_size, self.how = torch.from_numpy(data), batch_size, how
    if how == "random":
      self.gen = torch.Generator().manual_seed(seed)
    elif how == "epoch":
      self.num_batches = len(data) // batch_size
      if self.num_batches < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {len(data)} training points")
    else:
      raise ValueError(f"unknown batching {how!r}; allowed: epoch, random")

  def __call__(self, step: int):
    import torch

    if self.how == "random":
      idx = torch.randint(len(self.data), (self.batch_size,), generator=self.gen)
      return self.data[idx]
    k = step % self.num_batches
    return self.data[k * self.batch_size : (k + 1) * self.batch_size]


def train_step(diffusion, model, optimizer, x):
  """The official ``Trainer.step`` (no clipping): returns the loss."""
  import torch

  t = torch.randint(diffusion.timesteps, size=(x.shape[0],), dtype=torch.int64)
  loss = diffusion.train_losses(model, x_0=x, t=t).mean()
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss


def sample(diffusion, model, num: int, dim: int, window: int, seed: int, chunk: int):
  """``p_sample_step`` from T-1 to 0 over ``num`` samples in chunks; returns the samples
  ``[num, dim]`` and the trajectory variance ``[num]`` (variance of the predicted x0 over
  the last ``window`` steps, averaged over dimensions), both float32 numpy."""
  import numpy as np
  import torch

  gen = torch.Generator().manual_seed(seed)
  xs, tvs = [], []
  T = diffusion.timesteps
  window = min(window, T)
  model.eval()
  with torch.inference_mode():
    for lo in range(0, num, chunk):
      n = min(chunk, num - lo)
      x = torch.empty((n, dim)).normal_(generator=gen)
      t = torch.empty((n,), dtype=torch.int64)
      last = []
      for ti in range(T - 1, -1, -1):
        t.fill_(ti)
        x, pred = diffusion.p_sample_step(model, x, t, generator=gen, return_pred=True)
        if ti < window:
          last.append(pred.numpy().copy())
      traj = np.stack(last, axis=1)  # [n, window, dim], as p_sample_save_all's list
      tvs.append(np.mean(np.var(traj, axis=1), axis=1))
      xs.append(x.numpy().copy())
  return np.concatenate(xs).astype(np.float32), np.concatenate(tvs).astype(np.float32)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="gaussian1d")
  p.add_argument("--means", default="1,2,3", help="1D modes, comma-separated")
  p.add_argument("--std", type=float, default=0.05)
  p.add_argument("--num-train", type=int, default=20_000)
  p.add_argument("--steps", type=int, default=20_000)
  p.add_argument("--batch-size", type=int, default=2_000)
  p.add_argument("--batching", choices=("random", "epoch"), default="random")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--b1", type=float, default=0.9)
  p.add_argument("--b2", type=float, default=0.999)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--blocks", type=int, default=3)
  p.add_argument("--timesteps", type=int, default=1000)
  p.add_argument("--beta-start", type=float, default=0.001)
  p.add_argument("--beta-end", type=float, default=0.2)
  p.add_argument("--variance", choices=("fixed-large", "fixed-small"), default="fixed-large")
  p.add_argument("--num-samples", type=int, default=20_000)
  p.add_argument("--chunk", type=int, default=20_000)
  p.add_argument("--window", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--threads",
    type=int,
    default=0,
    help="torch intra-op threads (0: the CPUs this process may run on)",
  )
  p.add_argument("--log-every", type=int, default=1000)
  p.add_argument("--out", required=True)
  a = p.parse_args(argv)

  import numpy as np
  import random
  import torch

  official = load_official()
  threads = a.threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  # The official seed_all: python, numpy and torch's global generators.
  random.seed(a.seed)
  np.random.seed(a.seed)
  torch.manual_seed(a.seed)

  means = tuple(float(m) for m in a.means.split(",")) if a.data == "gaussian1d" else ()
  data = make_data(official, a.data, a.num_train, a.seed, means, a.std)
  dim = data.shape[1]
  diffusion = make_diffusion(official, a.timesteps, a.beta_start, a.beta_end, a.variance)
  model = official.toy_model.Decoder(dim, a.width, a.blocks)
  optimizer = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(a.b1, a.b2))
  batches = Batches(data, a.batch_size, a.batching, a.seed)

  model.train()
  loss_steps, losses = [], []
  t0 = time.time()
  for step in range(a.steps):
    loss = train_step(diffusion, model, optimizer, batches(step))
    s = step + 1
    if s % a.log_every == 0 or s == a.steps:
      loss_steps.append(s)
      losses.append(loss.item())
      print(
        f"reference: step {s}/{a.steps} loss {losses[-1]:.4f} ({time.time() - t0:.0f}s)",
        file=sys.stderr,
        flush=True,
      )
  train_s = time.time() - t0

  t0 = time.time()
  x, tv = sample(
    diffusion, model, a.num_samples, dim, a.window, a.seed + 1, max(1, min(a.chunk, a.num_samples))
  )
  sample_s = time.time() - t0
  meta = {
    "torch": torch.__version__,
    "numpy": np.__version__,
    "python": platform.python_version(),
    "threads": torch.get_num_threads(),
    "official_root": official.root,
    "batching": a.batching,
    "train_seconds": train_s,
    "sample_seconds": sample_s,
    "ms_per_train_step": 1000.0 * train_s / max(a.steps, 1),
    "args": {k: v for k, v in vars(a).items() if k != "out"},
  }
  tmp = a.out + ".tmp.npz"
  np.savez_compressed(
    tmp,
    samples=x,
    traj_variance=tv,
    train_data=data,
    loss_steps=np.asarray(loss_steps, np.int64),
    losses=np.asarray(losses, np.float64),
    meta=np.asarray(json.dumps(meta)),
  )
  os.replace(tmp, a.out)
  print(json.dumps(meta), flush=True)


if __name__ == "__main__":
  main()
