"""The bottleneck map: groups, positions along the top-bottom line, errors (its end-to-end
run on a tiny shapes workdir is in test_shapes_e2e.py, which trains that workdir once)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import bottleneck
from mode_interp.data import shapes

REPO = Path(__file__).resolve().parents[1]


def test_column_mass_row_and_line_positions():
  geom = shapes.get_geometry(0.5)
  img = -np.ones((2, geom.canvas, geom.canvas, 1), np.float32)
  lo = geom.column_edges[1]
  img[0, 2:4, lo + 1 : lo + 3] = 1.0  # near the top of column 1
  img[1, geom.height - 4 : geom.height - 2, lo + 1 : lo + 3] = 1.0  # near the bottom
  row = bottleneck.column_mass_row(img, geom, 1)
  assert row[0] < 0.2 and row[1] > 0.8
  assert np.isnan(bottleneck.column_mass_row(img, geom, 0)).all()  # empty column
  rng = np.random.default_rng(0)
  top, bot = rng.normal(0, 1, (50, 4)), rng.normal(5, 1, (60, 4))
  mid = (top.mean(0) + bot.mean(0)) / 2
  pos = bottleneck.line_positions(np.vstack([top, bot, mid[None]]), top, bot)
  assert pos[:50].mean() == pytest.approx(0.0, abs=1e-9)
  assert pos[50:110].mean() == pytest.approx(1.0, abs=1e-9)
  assert pos[-1] == pytest.approx(0.5)


def test_bad_workdir_is_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.bottleneck", f"--workdir={tmp_path / 'nothing'}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and "config.json" in lines[0]
