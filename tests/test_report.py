"""Tests for the Markdown report (fabricated workdirs; no training, no JAX)."""

import json
import os

import pytest

from experiments import report
from mode_interp import hallucination
from mode_interp.hallucination import binomial_interval


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def _png(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")


MACHINE = {
  "platform": "cpu",
  "device_kind": "cpu",
  "device_count": 1,
  "process_count": 1,
  "host": "testhost",
  "cpu_count": 2,
  "jax": "0.0.test",
}


def _gaussian_run(root):
  wd = root / "runs" / "g1d"
  hal_ci = binomial_interval(300, 20_000)
  _write(
    wd / "results.json",
    {
      "experiment": "gaussian",
      "data": "gaussian1d",
      "seed": 7,
      "config_name": "configs/gaussian1d.py",
      "machine": MACHINE,
      "num_samples": 20_000,
      "hallucination_rate": 0.015,
      "hallucination": {"rate": 0.015, "count": 300, "n": 20_000, "ci95": list(hal_ci)},
      "true_score_hallucination_rate": 0.0001,
      "detection": {
        "auroc": 0.97,
        "threshold": 1e-4,
        "in_support_retained": 0.96,
        "hallucinations_removed": 0.80,
        "num_in_support": 19_700,
        "num_hallucinations": 300,
        "keep_in_support": 0.96,
      },
      "train": {"steps": 6000},
    },
  )
  _write(
    wd / "config.json",
    {
      "experiment": "gaussian",
      "seed": 7,
      "data": {"name": "gaussian1d", "num_train": 20_000},
      "train": {"steps": 6000, "batch_size": 2000},
      "diffusion": {"timesteps": 1000},
      "sample": {"num_samples": 20_000},
    },
  )
  _png(wd / "figures" / "histogram.png")
  _png(wd / "figures" / "roc.png")
  return wd


def _shapes_run(root):
  wd = root / "runs" / "shapes"
  _write(
    wd / "results.json",
    {
      "experiment": "shapes",
      "data": "shapes",
      "seed": 0,
      "config_name": "configs/shapes.py",
      "machine": MACHINE,
      "num_samples": 1000,
      "hallucination_rate": 0.1,
      "hallucination": {"rate": 0.1, "count": 100, "n": 1000},
      "mode_interpolation_rate": 0.06,
      "counts": {"in_support": 900, "multiple_in_column": 60, "malformed": 40, "blank": 0},
      "training_in_support_rate": 1.0,
      "detection": {
        "auroc": 0.9,
        "in_support_retained": 0.961,
        "hallucinations_removed": 0.94,
        "num_in_support": 900,
        "num_hallucinations": 100,
        "keep_in_support": 0.96,
      },
    },
  )
  # No config.json: the report must cope.
  _png(wd / "figures" / "samples.png")
  return wd


def _recursive_run(root):
  wd = root / "runs" / "rec"
  gens = [
    {
      "filter": f,
      "generation": g,
      "num_train": 1000,
      "num_drawn": 1250,
      "hallucination_rate": 0.02 * (g + 1),
      "hallucination_rate_kept": 0.01,
      "modes_hit": 25,
      "mode_coverage": 1.0,
      "detection_auroc": 0.95,
    }
    for g in range(2)
    for f in ("none", "variance")
  ]
  _write(
    wd / "results.json",
    {
      "experiment": "recursive",
      "data": "grid25",
      "seed": 3,
      "machine": MACHINE,
      "num_train": 1000,
      "oversample": 250,
      "filters": ["none", "variance"],
      "generations": gens,
    },
  )
  _write(wd / "config.json", {"experiment": "recursive", "seed": 3})
  _png(wd / "figures" / "recursive_curves.png")
  return wd


REFS = {
  "paper": {"citation": "test paper", "read_from": ["nowhere"]},
  "official_code": {"repository": "test/repo", "commit": "abc"},
  "figures": [
    # Shapes: paper says removed >= 95%; run has 94% of 100 -> interval contains 0.95: agrees.
    {
      "source": "paper",
      "experiment": "shapes",
      "metric": "detection.hallucinations_removed",
      "value": 0.95,
      "compare": "at_least",
      "where": "Abstract",
    },
    # Shapes: retained 96%: inside the run's interval around 96.1% of 900.
    {
      "source": "paper",
      "experiment": "shapes",
      "metric": "detection.in_support_retained",
      "value": 0.96,
      "where": "Abstract",
    },
    # 1D: official hallucination rate 5% is far outside [1.3%, 1.7%]: disagreement.
    {
      "source": "official_code",
      "experiment": "gaussian",
      "data": "gaussian1d",
      "metric": "hallucination_rate",
      "value": 0.05,
      "ci95": [0.045, 0.055],
      "when": {"train.batch_size": 2000},
      "where": "official code, reduced budget",
      "command": "python driver.py",
    },
    # Measured under other settings (batch 10,000): must not apply to this run.
    {
      "source": "official_code",
      "experiment": "gaussian",
      "data": "gaussian1d",
      "metric": "true_score_hallucination_rate",
      "value": 0.5,
      "when": {"train.batch_size": 10_000},
      "where": "other settings",
    },
    # 1D: official AUROC 0.968 inside the Hanley-McNeil interval of 0.97 (n=300/19,700).
    {
      "source": "official_code",
      "experiment": "gaussian",
      "data": "gaussian1d",
      "metric": "detection.auroc",
      "value": 0.968,
      "kind": "num",
      "where": "reduced budget",
    },
    # A grid reference must not be applied to the 1D run.
    {
      "source": "paper",
      "experiment": "gaussian",
      "data": "grid25",
      "metric": "hallucination_rate",
      "value": 0.5,
      "where": "grid only",
    },
    # Recursive: selector picks one generation; 0.02 of 1,250 -> outside for 0.2.
    {
      "source": "paper",
      "experiment": "recursive",
      "metric": "hallucination_rate",
      "select": {"filter": "none", "generation": 0},
      "value": 0.2,
      "where": "Figure R",
    },
  ],
}


@pytest.fixture()
def built(tmp_path):
  runs = [_gaussian_run(tmp_path), _shapes_run(tmp_path), _recursive_run(tmp_path)]
  refs = tmp_path / "refs.json"
  _write(refs, REFS)
  out = tmp_path / "out" / "report.md"
  rc = report.main([str(r) for r in runs] + [f"--out={out}", f"--references={refs}"])
  assert rc == 0
  return out.read_text(), tmp_path


def _line(text, label_start):
  hits = [ln for ln in text.splitlines() if ln.startswith(f"| {label_start}")]
  assert hits, f"no table row starting with {label_start!r}"
  return hits[0]


def test_run_facts_present(built):
  text, _ = built
  for needle in (
    "## gaussian — gaussian1d",
    "## shapes — shapes",
    "## recursive — grid25",
    "`configs/gaussian1d.py`",
    "| Seed | 7 |",
    "| Seed | 3 |",
    "20,000",
    "host testhost",
    "jax 0.0.test",
    "no config.json",
    "## Figure gallery",
    "## References used",
  ):
    assert needle in text, needle


def test_wilson_intervals_printed(built):
  text, _ = built
  lo, hi = binomial_interval(300, 20_000)
  row = _line(text, "Hallucination rate (learned score)")
  assert f"[{100 * lo:.2f}, {100 * hi:.2f}]%" in row
  assert "(300/20,000)" in row
  lo, hi = binomial_interval(60, 1000)  # derived from the verdict counts
  assert f"[{100 * lo:.2f}, {100 * hi:.2f}]%" in _line(text, "Mode-interpolation rate")


def test_disagreement_flagged_and_agreement_not(built):
  text, _ = built
  row = _line(text, "Hallucination rate (learned score)")
  assert "**DISAGREES** with official code" in row
  assert "5.00% [4.50, 5.50]%" in row
  assert "grid only" not in row  # the grid reference is not applied to 1D data
  assert "agrees with official code" in _line(text, "Trajectory-variance AUROC")
  removed = _line(text, "Hallucinations removed at the 96%-retention threshold | 94.00%")
  assert "agrees with paper" in removed and "DISAGREES" not in removed
  assert "≥ 95.00% (Abstract)" in removed
  assert "agrees with paper" in _line(
    text, "In-support samples retained at the 96%-retention threshold | 96.10%"
  )
  rec = _line(text, "hallucination_rate (filter none, generation 0)")
  assert "**DISAGREES** with paper" in rec
  assert "DISAGREES" not in _line(text, "hallucination_rate (filter variance, generation 0)")
  summary = text.split("## Disagreements beyond noise")[1].split("\n## ")[0]
  assert summary.count("\n- ") == 2


def test_missing_references_are_named(built):
  text, _ = built
  exact = _line(text, "Hallucination rate (exact score)")
  assert "| not stated | not measured |" in exact
  removed = "Hallucinations removed at the 96%-retention threshold"
  assert "not measured" in _line(text, f"{removed} | 94.00%")
  assert "not stated" in _line(text, f"{removed} | 80.00%")


def test_figure_links_are_relative_and_embedded(built):
  text, tmp_path = built
  assert "[histogram.png](../runs/g1d/figures/histogram.png)" in text
  assert "![roc.png](../runs/g1d/figures/roc.png)" in text
  assert "![recursive_curves.png](../runs/rec/figures/recursive_curves.png)" in text
  out_dir = tmp_path / "out"
  for link in ("../runs/g1d/figures/histogram.png", "../runs/shapes/figures/samples.png"):
    assert (out_dir / link).exists()


def test_missing_results_and_sweep(tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  sweep = tmp_path / "sweep"
  _write(
    sweep / "results.json",
    {
      "experiment": "gaussian",
      "data": "grid25",
      "seed": 0,
      "sweep": [
        {
          "field": "num_train",
          "value": 2000,
          "hallucination_rate": 0.1,
          "ci95": [0.09, 0.11],
          "true_score_hallucination_rate": 0.0,
          "auroc": None,
          "num_samples": 10_000,
        }
      ],
    },
  )
  out = tmp_path / "r.md"
  report.main([str(empty), str(sweep), f"--out={out}", "--references=/nonexistent.json"])
  text = out.read_text()
  assert text == capsys.readouterr().out  # the report is also printed
  assert "no results.json" in text and "No measurements found" in text
  assert "## gaussian (sweep) — grid25" in text
  assert "Hallucination rate, num_train = 2,000 | 10.00% [9.00, 11.00]% (1,000/10,000)" in text
  assert "None: every stated" in text


def test_interval_helpers():
  lo, hi = hallucination.auroc_interval(0.9, 100, 900)
  assert lo < 0.9 < hi and hi - lo < 0.1
  assert hallucination.auroc_interval(None, 1, 1) is None
  row = report.proportion_row("x", "x", 0.5, 100)
  assert row.count == 50 and row.ci == pytest.approx(binomial_interval(50, 100))
  bad, _ = report.judge(row, {"value": 0.7, "compare": "at_least"})
  assert bad
  bad, _ = report.judge(row, {"value": 0.7, "compare": "at_most"})
  assert not bad
  assert report.judge(report.Row("a", "a", 0.5, "num"), {"value": 1.0})[0] is None


def test_shipped_references_are_well_formed():
  refs = report.load_references(report.DEFAULT_REFERENCES)
  assert refs["figures"], "experiments/references.json lists no figures"
  for x in refs["figures"]:
    assert x["source"] in ("paper", "official_code"), x
    assert x["experiment"] in ("gaussian", "gaussian_sweep", "shapes", "recursive"), x
    assert isinstance(x["metric"], str) and isinstance(x["value"], (int, float)), x
    assert x.get("compare", "equal") in ("equal", "at_least", "at_most"), x
    assert x.get("where"), x
    if x["source"] == "paper":
      assert x.get("claim"), x
    else:
      assert x.get("command") and x.get("machine") and x.get("date"), x
  for t in refs.get("official_code_timings", []):
    assert t["ms"] > 0 and t.get("command") and t.get("machine") and t.get("date"), t


def test_parity_workdirs_and_bench_records_get_their_own_sections(tmp_path):
  """An experiments.parity workdir renders as both sides per seed with the range verdicts; an
  experiments.bench record file as its table with the same-run ratios."""
  from experiments import parity

  per = {"this": {}, "official": {}}
  for side, rates in (("this", (0.010, 0.012, 0.014)), ("official", (0.008, 0.038, 0.021))):
    for s, rate in enumerate(rates):
      per[side][str(s)] = {"hallucination_rate": rate, "auroc": 0.95 + s / 100}
  results = {
    "config_name": "configs/gaussian1d.py:official",
    "recipe": "a recipe",
    "seeds": [0, 1, 2],
    "reference": {"status": "ran"},
    "per_seed": per,
    "errors": {},
  }
  results["summary"] = {
    side: {
      k: parity.summarize([r.get(k) for r in per[side].values()]) for k, _, _ in parity.METRICS
    }
    for side in per
  }
  results["comparison"] = parity.compare(results["summary"])
  wd = tmp_path / "parity"
  (wd / "figures").mkdir(parents=True)
  (wd / "results.json").write_text(json.dumps(results))
  (wd / "config.json").write_text("{}")
  from experiments import bench

  rec = dict.fromkeys(bench.RECORD_KEYS)
  rec.update(
    case="train",
    model="mlp",
    dim=1,
    shape=[1],
    batch_size=2000,
    timesteps=1000,
    devices=1,
    ms_per_step=15.0,
    samples_steps_per_s=1.3e5,
    compile_s=2.0,
    peak_mem_mb=500.0,
    rss_start_mb=300.0,
    xla_temp_mb=28.0,
    platform="cpu",
    device_kind="cpu",
    jax_version="x",
    mem_source="m",
    dtype="float32",
    reference_ms_per_step=21.0,
    speedup_vs_reference=1.4,
    reference_threads=2,
    reference_torch="2.x",
    machine={"cpu_model": "AMD EPYC", "cpu_count": 2, "isa": ["avx2"], "jax": "x"},
  )
  bj = tmp_path / "bench.json"
  bj.write_text(json.dumps([rec]))
  out = tmp_path / "r.md"
  assert report.main([str(wd), "--bench", str(bj), "--out", str(out)]) == 0
  text = out.read_text()
  assert "## parity — configs/gaussian1d.py:official (`parity`)" in text
  assert "| official | 1 | 3.80% |" in text and "| this | 2 | 1.40% |" in text
  assert "this side's mean is inside the official seed range" in text
  assert "## speed" in text and "1.40x" in text and "torch 2.x, 2 intra-op" in text
  with pytest.raises(SystemExit):
    report.main([str(wd), "--bench", str(tmp_path / "missing.json")])


def test_sweep_in_progress_is_read_from_its_table_with_a_trend_per_axis(tmp_path):
  wd = tmp_path / "sweep_paper"
  _write(
    wd / "config.json",
    {
      "experiment": "gaussian",
      "seed": 0,
      "data": {"name": "gaussian1d"},
      "train": {"steps": 6000},
      "sweep": {"epochs": 10_000, "steps": 6000},
    },
  )

  def point(field, value, rate, lo, hi):
    return {
      "field": field,
      "value": value,
      "hallucination_rate": rate,
      "ci95": [lo, hi],
      "true_score_hallucination_rate": 0.0,
      "num_samples": 100_000,
    }

  table = [
    point("num_train", 2000, 0.031, 0.030, 0.032),
    point("num_train", 5000, 0.0068, 0.0063, 0.0073),
    point("num_train", 20000, 0.0004, 0.0003, 0.0005),
    point("timesteps", 100, 0.010, 0.009, 0.011),
    point("timesteps", 250, 0.0105, 0.0095, 0.0115),
    point("distance", 0.5, 0.12, 0.11, 0.13),
  ]
  table[0].update(auroc=0.82, hallucinations_removed=0.5)  # 1,550 of the 3,100 removed
  _write(wd / "sweep_table.json", table)
  out = tmp_path / "r.md"
  report.main([str(wd), f"--out={out}", "--references=/nonexistent.json"])
  text = out.read_text()
  assert "| no results.json" not in text and "; no results.json" not in text
  assert "in progress: no results.json yet; the 6 finished sweep point(s)" in text
  assert "## gaussian (sweep) — gaussian1d" in text
  assert "| Training steps | 10,000 epochs per point |" in text  # not the base config's 6,000
  assert "Hallucination rate, num_train = 20,000 | 0.04% [0.03, 0.05]%" in text
  # The detector per point, with intervals over the point's 3,100 hallucinations.
  assert "Trajectory-variance AUROC, num_train = 2,000 | 0.82 [" in text
  assert (
    "removed at 96% in-support kept, num_train = 2,000 | 50.00% [48.24, 51.76]% (1,550/3,100)"
    in text
  )
  assert (
    "| num_train | 2,000, 5,000, 20,000 | falls, monotone | down, down | not recorded |" in text
  )
  assert "| timesteps | 100, 250 | no clear trend | flat | not recorded |" in text
  assert "| distance | 0.5 | too few points | — | not recorded |" in text
  # A rise that is not monotone is said so.
  table[1] = point("num_train", 5000, 0.0001, 0.00005, 0.0002)
  table[2] = point("num_train", 20000, 0.05, 0.049, 0.051)
  _write(wd / "sweep_table.json", table)
  report.main([str(wd), f"--out={out}", "--references=/nonexistent.json"])
  assert "| num_train | 2,000, 5,000, 20,000 | rises, not monotone | down, up |" in out.read_text()
  # A table that is not a list is a problem named, not a crash.
  _write(wd / "sweep_table.json", {"field": "num_train"})
  report.main([str(wd), f"--out={out}", "--references=/nonexistent.json"])
  text = out.read_text()
  assert "| no results.json; sweep_table.json is not a list of sweep points" in text
