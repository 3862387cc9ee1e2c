"""docs/tour.ipynb runs top to bottom and shows what it says it shows.

The notebook's code cells are read from its JSON and executed in order in one namespace (no
Jupyter kernel), with matplotlib's Agg backend and ``MODE_INTERP_TOUR_FAST=1`` (fewer training
steps and samples); a cell that raises fails the test, naming the cell.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tour.ipynb"


def _cells(kind="code"):
  nb = json.loads(NOTEBOOK.read_text())
  return [c for c in nb["cells"] if c["cell_type"] == kind]


def _source(cell) -> str:
  src = cell["source"]
  return "".join(src) if isinstance(src, list) else src


def run_notebook(namespace: dict) -> dict:
  """Executes every code cell of the tour in ``namespace``; a failing cell raises an
  ``AssertionError`` naming it and its first line."""
  for i, cell in enumerate(_cells()):
    src = _source(cell)
    try:
      exec(compile(src, f"{NOTEBOOK.name}, code cell {i}", "exec"), namespace)
    except Exception as e:
      first = src.strip().splitlines()[0] if src.strip() else ""
      raise AssertionError(
        f"{NOTEBOOK.name}: code cell {i} ({first!r}) raised {type(e).__name__}: {e}"
      ) from e
  return namespace


def test_the_committed_notebook_is_small_and_without_outputs():
  nb = json.loads(NOTEBOOK.read_text())
  assert nb["nbformat"] == 4
  assert NOTEBOOK.stat().st_size < 100_000
  code = _cells()
  assert code and _cells("markdown")
  for cell in code:
    assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
      "clear the notebook's outputs before committing it"
    )
    for line in _source(cell).splitlines():
      # Magics and shell escapes would run in Jupyter but not here.
      assert not line.lstrip().startswith(("%", "!")), line


@pytest.mark.e2e
def test_the_tour_runs_and_shows_the_central_contrast(tmp_path, monkeypatch):
  monkeypatch.setenv("MODE_INTERP_TOUR_FAST", "1")
  monkeypatch.setenv("MODE_INTERP_TOUR_WORKDIR", str(tmp_path / "tour"))
  monkeypatch.setattr(plt, "show", lambda *a, **k: None)
  try:
    ns = run_notebook({"__name__": "__tour__"})
    for name in ("fig_predictor", "fig_samples", "fig_variance"):
      assert isinstance(ns[name], matplotlib.figure.Figure), name
  finally:
    plt.close("all")

  # 1. The fast run trained as many steps as it asked for.
  assert ns["cfg"].train.steps < 6_000 and int(ns["state"].step) == ns["cfg"].train.steps

  # 2. The exact x0-predictor jumps between the modes at small t; the learned one is smooth.
  widths = ns["transition_width"]
  assert widths["exact"][1] < 0.05
  assert widths["learned"][1] > widths["exact"][1]

  # 3. The learned score hallucinates more than the exact one (disjoint 95% intervals), and
  # the exact score almost never does.
  learned, exact = ns["rate_learned"], ns["rate_exact"]
  assert learned["n"] == exact["n"] == ns["cfg"].sample.num_samples
  assert learned["ci95"][0] > exact["ci95"][1]
  assert exact["rate"] < 0.005

  # 4. Detection at the paper's operating point, and the filter lowers the rate it passes on.
  det = ns["det"]
  assert det["in_support_retained"] >= 0.96 and det["hallucinations_removed"] is not None
  assert det["auroc"] > 0.5
  rates = [f["rate_kept"] for f in ns["filtered"]]
  assert rates[0] == pytest.approx(learned["rate"]) and rates[-1] < rates[0]

  # 5. The committed record is read as it is, and the tour's workdir follows the contract.
  record = json.loads(
    (NOTEBOOK.parents[1] / "reports" / "latest" / "gaussian1d" / "results.json").read_text()
  )
  assert ns["record"]["hallucination_rate"] == record["hallucination_rate"]
  wd = tmp_path / "tour"
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert (wd / name).is_file(), name
  assert any((wd / "checkpoints").iterdir())
  assert {p.name for p in (wd / "figures").iterdir()} >= {
    "predictor.png",
    "histogram.png",
    "trajectory_variance.png",
  }
  assert json.loads((wd / "results.json").read_text())["hallucination_rate"] == learned["rate"]
