"""Gaussian-mixture toy data of the paper (numpy only).

- ``gaussian1d``: modes at ``means`` (default 1, 2, 3), std 0.05, equal counts
  per mode (sample ``i`` belongs to mode ``i % K``), not normalised.
- ``grid25``: 25 modes at ``2 * (i, j)``, ``i, j in -2..2``, std 0.05, all
  divided by ``sqrt(0.05^2 + 8)`` (the mixture's per-axis standard deviation).
- ``grid25_rotated``: the grid turned 45 degrees into a diamond, modes at
  ``2 * ((i - j) / 2, (i + j) / 2)``, same std and normalisation.
"""

import dataclasses
import math

import numpy as np

NAMES = ("gaussian1d", "grid25", "grid25_rotated")


@dataclasses.dataclass(frozen=True)
class Mixture:
  """An equal-weight isotropic Gaussian mixture, in the units the model sees."""
  name: str
  means: np.ndarray   # [K, D]
  std: float

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def sample(self, num: int, seed: int) -> np.ndarray:
    """``num`` points, ``[num, D]`` float32; point ``i`` comes from mode ``i % K``."""
    rng = np.random.default_rng(seed)
    noise = self.std * rng.standard_normal((num, self.dim))
    return (self.means[np.arange(num) % len(self.means)] + noise).astype(np.float32)


def make_mixture(name: str, means=(1.0, 2.0, 3.0), std: float = 0.05, scale: float = 2.0) -> Mixture:
  if name == "gaussian1d":
    return Mixture(name, np.asarray(means, np.float64).reshape(-1, 1), float(std))
  ij = [(i, j) for i in range(-2, 3) for j in range(-2, 3)]
  if name == "grid25":
    modes = scale * np.asarray(ij, np.float64)
  elif name == "grid25_rotated":
    modes = scale * np.asarray([((i - j) / 2, (i + j) / 2) for i, j in ij], np.float64)
  else:
    raise ValueError(f"unknown mixture {name!r}; allowed: {', '.join(NAMES)}")
  norm = math.sqrt(std ** 2 + 2 * scale ** 2)  # per-axis std of the 5x5 grid: sqrt(0.05^2 + 8)
  return Mixture(name, modes / norm, float(std / norm))
