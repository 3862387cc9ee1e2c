"""Gaussian-mixture toy data of the paper (numpy only).

- ``gaussian1d``: modes at ``means`` (default 1, 2, 3), std 0.05, equal counts
  per mode (sample ``i`` belongs to mode ``i % K``), not normalised.
- ``grid25``: 25 modes at ``2 * (i, j)``, ``i, j in -2..2``, std 0.05, all
  divided by ``sqrt(0.05^2 + 8)`` (the mixture's per-axis standard deviation).
- ``grid25_rotated``: the grid turned 45 degrees into a diamond, modes at
  ``2 * ((i - j) / 2, (i + j) / 2)``, same std and normalisation.

``imbalance`` (default 1: equal weights) makes the mixture unequal: modes of even
index (1D: every other mode; grid: a checkerboard, corners included) weigh
``imbalance`` times the others. Counts per mode are then proportional to the weights
(largest remainder), shuffled with the seed.
"""

import dataclasses
import math
from typing import Optional

import numpy as np

NAMES = ("gaussian1d", "grid25", "grid25_rotated")
# The dimension of each mixture's points (what a network built for it takes).
DIMS = {"gaussian1d": 1, "grid25": 2, "grid25_rotated": 2}


@dataclasses.dataclass(frozen=True)
class Mixture:
  """An isotropic Gaussian mixture, in the units the model sees."""

  name: str
  means: np.ndarray  # [K, D]
  std: float
  weights: Optional[np.ndarray] = None  # [K], summing to 1; None: equal

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def mode_weights(self) -> np.ndarray:
    k = len(self.means)
    return np.full(k, 1.0 / k) if self.weights is None else np.asarray(self.weights, np.float64)

  def mode_counts(self, num: int) -> np.ndarray:
    """Points per mode for ``num`` points: proportional to the weights (largest remainder)."""
    share = num * self.mode_weights
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: num - counts.sum()]] += 1
    return counts

  def sample(self, num: int, seed: int) -> np.ndarray:
    """``num`` points, ``[num, D]`` float32. With equal weights point ``i`` comes from mode
    ``i % K``; otherwise the modes' counts follow the weights, in a seeded order."""
    rng = np.random.default_rng(seed)
    noise = self.std * rng.standard_normal((num, self.dim))
    if self.weights is None:
      idx = np.arange(num) % len(self.means)
    else:
      idx = rng.permutation(np.repeat(np.arange(len(self.means)), self.mode_counts(num)))
    return (self.means[idx] + noise).astype(np.float32)


def checkerboard_weights(num_modes: int, imbalance: float, grid: bool) -> Optional[np.ndarray]:
  """Weights where the even modes (a checkerboard on the 5x5 grid) weigh ``imbalance``
  times the others; None for ``imbalance == 1``."""
  if imbalance == 1.0:
    return None
  idx = np.arange(num_modes)
  even = ((idx // 5 + idx % 5) % 2 == 0) if grid else (idx % 2 == 0)
  w = np.where(even, float(imbalance), 1.0)
  return w / w.sum()


def heavy_modes(mixture: Mixture) -> np.ndarray:
  """Which modes carry more than the smallest weight."""
  w = mixture.mode_weights
  return w > w.min() * (1 + 1e-9)


def make_mixture(
  name: str, means=(1.0, 2.0, 3.0), std: float = 0.05, scale: float = 2.0, imbalance: float = 1.0
) -> Mixture:
  if name == "gaussian1d":
    m = np.asarray(means, np.float64).reshape(-1, 1)
    return Mixture(name, m, float(std), checkerboard_weights(len(m), imbalance, grid=False))
  ij = [(i, j) for i in range(-2, 3) for j in range(-2, 3)]
  if name == "grid25":
    modes = scale * np.asarray(ij, np.float64)
  elif name == "grid25_rotated":
    modes = scale * np.asarray([((i - j) / 2, (i + j) / 2) for i, j in ij], np.float64)
  else:
    raise ValueError(f"unknown mixture {name!r}; allowed: {', '.join(NAMES)}")
  norm = math.sqrt(std**2 + 2 * scale**2)  # per-axis std of the 5x5 grid: sqrt(0.05^2 + 8)
  return Mixture(
    name, modes / norm, float(std / norm), checkerboard_weights(len(modes), imbalance, grid=True)
  )
