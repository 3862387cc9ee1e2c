"""The benchmark's quick mode runs and writes well-formed records.

Times are reported (printed), never asserted: the machines that run the tests
are shared and noisy.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import bench

REPO = Path(__file__).resolve().parents[1]
POSITIVE = (
  "ms_per_step",
  "samples_steps_per_s",
  "peak_mem_mb",
  "compile_s",
  "wall_s",
  "timesteps",
  "devices",
  "steps_timed",
  "dim",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "bench.json"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.bench", "--quick", f"--json={path}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(path) as f:
    return json.load(f), proc.stdout


def test_quick_records_have_the_stable_keys_and_positive_numbers(quick_run):
  records, stdout = quick_run
  print("\n" + stdout)  # the table, for whoever reads the test log
  assert isinstance(records, list)
  assert [(r["case"], r["dtype"]) for r in records] == [
    ("sampler", "float32"),
    ("sampler", "bfloat16"),
    ("train", "float32"),
  ]
  for r in records:
    assert set(r) == set(bench.RECORD_KEYS), set(r) ^ set(bench.RECORD_KEYS)
    for k in POSITIVE:
      assert isinstance(r[k], (int, float)) and r[k] > 0, (r["case"], k, r[k])
    assert r["model"] == "mlp" and r["dim"] == 1 and r["shape"] == [1]
    assert r["devices"] >= 1 and r["quick"] is True
    assert r["platform"] and r["device_kind"] and r["mem_source"]
    assert r["xla_temp_mb"] is not None and r["xla_temp_mb"] >= 0  # CPUs report it
  # The toy's sampler keeps XLA's defaults; its training step gets the project's CPU options.
  from mode_interp import sharding

  f32 = {r["case"]: r for r in records if r["dtype"] == "float32"}
  assert f32["sampler"]["compile_options"] == {} and not f32["train"]["xla_defaults"]
  assert f32["train"]["compile_options"] == sharding.compiler_options(
    sharding.make_mesh(1), convolutional=False, training=True
  )
  sampler = next(r for r in records if r["case"] == "sampler")
  assert sampler["num_samples"] >= 1_000 and sampler["num_samples"] % sampler["devices"] == 0
  assert sampler["batch_size"] is None and sampler["timesteps"] == 100
  train = next(r for r in records if r["case"] == "train")
  assert train["batch_size"] >= 2_000 and train["batch_size"] % train["devices"] == 0
  assert train["num_samples"] is None
  # Every toy row carries its products-alone time (on one device; the sampler's rows only then).
  for r in records:
    if r["devices"] == 1:
      assert r["products_ms"] > 0, r
      assert r["products_share"] == pytest.approx(r["products_ms"] / r["ms_per_step"])
  assert "prod%" in stdout
  # Without --reference there is no ratio: no figure from another machine stands in.
  for r in records:
    assert r["reference_ms_per_step"] is None and r["speedup_vs_reference"] is None
    m = r["machine"]
    assert m["cpu_count"] == os.cpu_count() and m["jax"] and isinstance(m["isa"], list)


def test_matrix_products_lists_forward_backward_and_scan_products():
  """Every dot_general of a function's jaxpr, once per scan iteration: two layers and a scan
  of length 3 over a third make 5 products; their gradient adds a weight gradient per product
  and an input gradient per product but the first (whose input is not differentiated)."""
  import jax
  import jax.numpy as jnp

  def loss(w1, w2, x):
    h = jnp.tanh(x @ w1) @ w2

    def body(c, _):
      return jnp.tanh(c @ w2.T), None

    c, _ = jax.lax.scan(body, h, None, length=3)
    return jnp.sum(c)

  w1, w2, x = jnp.ones((4, 8)), jnp.ones((8, 8)), jnp.ones((16, 4))
  fwd = bench.matrix_products(jax.jit(loss), w1, w2, x)
  assert [n for *_, n in fwd] == [1, 1, 3]  # the scan's product, once per iteration
  assert [(tuple(a.shape), tuple(b.shape)) for a, b, *_ in fwd[:2]] == [
    ((16, 4), (4, 8)),
    ((16, 8), (8, 8)),
  ]
  grads = bench.matrix_products(jax.grad(lambda w1, w2: loss(w1, w2, x), (0, 1)), w1, w2)
  # Forward 5; backward: the scan's 3 products twice (input and weight), the second layer's
  # weight and input gradients, the first layer's weight gradient.
  assert sum(n for *_, n in grads) == 5 + 6 + 2 + 1
  ms = bench.time_products(fwd, repeats=1, calls=2)
  assert ms > 0


def test_quick_prints_the_table_and_the_reference(quick_run):
  _, stdout = quick_run
  assert "ms/step" in stdout and "sampler" in stdout and "train" in stdout
  assert "No comparison with the official code: pass --reference=PATH" in stdout
  assert "machine:" in stdout and "ms here vs" not in stdout


def test_unknown_case_is_refused():
  with pytest.raises(ValueError, match="bogus"):
    bench.run(["bogus"])


def test_records_are_written_with_the_json_keys_in_order():
  """A record's JSON form has every key of RECORD_KEYS, in that order, and nothing else: the
  products a case lists for later timing are a field of the record, never a key of its JSON."""
  rec = bench.Record(
    case="train",
    model="mlp",
    shape=[1],
    compile_options={"a": 1},
    pending_products=bench.PendingProducts([], 1),
  )
  out = rec.to_json()
  assert tuple(out) == bench.RECORD_KEYS and len(bench.RECORD_KEYS) == 35
  assert out["case"] == "train" and out["dim"] is None and "pending_products" not in out
  assert json.loads(json.dumps(out)) == out
  out["shape"].append(2)
  assert rec.shape == [1]  # the JSON form is a copy


def test_table_formats_records_without_memory_figures():
  rec = dict.fromkeys(bench.RECORD_KEYS)
  rec.update(
    case="train",
    model="unet",
    dim=1024,
    shape=[32, 32, 1],
    batch_size=64,
    timesteps=250,
    devices=1,
    ms_per_step=120.0,
    samples_steps_per_s=533.0,
    compile_s=3.0,
    platform="cpu",
    device_kind="cpu",
    jax_version="x",
    mem_source="process_peak_rss_lifetime",
  )
  table = bench.format_table([rec])
  assert "unet" in table and "120.000" in table
  # A Record and its JSON mapping (a --json file read back) print the same.
  assert bench.format_table([bench.Record(**rec)]) == table
  rec["machine"] = bench.machine_info()
  assert "No comparison" in bench.format_reference([rec])
  ref = {"torch": "2.x", "threads": 1, "stubbed": []}
  text = bench.format_reference([rec], ref)
  assert "no row of this run has a counterpart" in text  # a U-Net row has none


def _records_with_reference(monkeypatch, tmp_path, stdout, returncode=0, stderr=""):
  """time_reference over two records, with the reference subprocess replaced."""
  ref_root = tmp_path / "official"
  (ref_root / "gaussian_experiments" / "ddpm_torch" / "toy").mkdir(parents=True)
  calls = []

  def fake_run(cmd, **kw):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

  monkeypatch.setattr(subprocess, "run", fake_run)
  recs = []
  for case, size in (("train", 2000), ("sampler", 10_000)):
    recs.append(
      bench.Record(
        case=case,
        model="mlp",
        dim=1,
        timesteps=1000,
        ms_per_step=10.0,
        devices=1,
        platform="cpu",
        batch_size=size if case == "train" else None,
        num_samples=size if case == "sampler" else None,
      )
    )
  return str(ref_root), recs, calls


def test_reference_times_fill_the_ratio_columns(monkeypatch, tmp_path):
  out = json.dumps(
    {
      "torch": "2.13",
      "threads": 2,
      "stubbed": [],
      "train": [{"batch_size": 2000, "ms_per_step": 25.0}],
      "sampler": [{"num_samples": 10_000, "ms_per_step": 40.0}],
    }
  )
  path, recs, calls = _records_with_reference(monkeypatch, tmp_path, "Timesteps: 1000\n" + out)
  bench.time_reference(path, "/some/python", recs, log=lambda s: None)
  assert "--train-batch=2000" in calls[0] and "--sampler-n=10000" in calls[0]
  assert recs[0].speedup_vs_reference == 2.5 and recs[1].speedup_vs_reference == 4.0
  assert recs[0].reference_threads == 2
  assert calls[0][1] == bench.REFERENCE_SCRIPT and os.path.isfile(bench.REFERENCE_SCRIPT)
  for r in recs:
    r.machine = bench.machine_info()
  text = bench.format_reference(recs, json.loads(out))
  assert "25.00 ms official: 2.50x" in text and "40.00 ms official: 4.00x" in text


def test_a_failing_reference_run_is_one_line(monkeypatch, tmp_path):
  path, recs, _ = _records_with_reference(
    monkeypatch, tmp_path, "", returncode=1, stderr="Traceback...\nModuleNotFoundError: torch"
  )
  with pytest.raises(bench.ReferenceError_, match="exit 1.*ModuleNotFoundError: torch"):
    bench.time_reference(path, "/some/python", recs, log=lambda s: None)
  with pytest.raises(bench.ReferenceError_, match="no gaussian_experiments"):
    bench.time_reference(str(tmp_path / "elsewhere"), "/some/python", recs)
  monkeypatch.delenv("MODE_INTERP_REFERENCE_PYTHON", raising=False)
  with pytest.raises(bench.ReferenceError_, match="MODE_INTERP_REFERENCE_PYTHON"):
    bench.reference_python(None)


def test_unet_rows_report_flops_and_dtype():
  """The U-Net cases (tiny sizes): float32 with the project's compile options, float32 with
  XLA's defaults, and bfloat16, per case, with XLA's FLOPs. On the ``:tiny`` U-Net: the rows'
  form is checked here, their speed is the benchmark's business (``--cases=unet``)."""
  from mode_interp import sharding

  results = bench.run(["unet"], quick=True, log=lambda s: None, unet_variant="tiny")
  assert results.reference is None
  records = results.records
  # --quick: float32 training and bfloat16 sampling only (the full run has both dtypes of
  # each, and float32 with XLA's default options).
  assert [(r.case, r.dtype, r.xla_defaults) for r in records] == [
    ("train", "float32", False),
    ("sampler", "bfloat16", False),
  ]
  mesh = sharding.make_mesh(1)
  for r in records:
    assert r.compile_options == sharding.compiler_options(
      mesh, convolutional=True, training=r.case == "train"
    )
    assert r.model == "unet:tiny" and r.shape == [32, 32, 1]
    assert r.gflop_per_step > 0 and r.tflops > 0
    # On a CPU the share is of the dense matmul rate measured in the same run.
    assert r.peak_flops_measured > 0
    assert r.peak_share == pytest.approx(r.tflops * 1e12 / r.peak_flops_measured)
  # The matmul rate is measured once per process and dtype (later calls: the same figure).
  assert bench.measured_matmul_peak("float32") == records[0].peak_flops_measured
  table = bench.format_table(records)
  assert "bf16" in table and "unet:tiny" in table


def test_rows_made_under_xla_defaults_say_so():
  """A row timed inside ``sharding.xla_default_options()`` (the full run's comparison rows)
  records no compile options and is marked, in its record and in the table."""
  from mode_interp import sharding

  mesh = sharding.make_mesh(1)
  kw = dict(
    case="train",
    model="unet:tiny",
    dim=1024,
    shape=[32, 32, 1],
    batch_size=8,
    timesteps=20,
    ms_per_step=10.0,
    compile_s=1.0,
    dtype="float32",
  )
  plain = bench.new_record(mesh, **kw)
  with sharding.xla_default_options():
    defaults = bench.new_record(mesh, **kw)
  assert plain.compile_options == sharding.compiler_options(mesh, convolutional=True, training=True)
  assert not plain.xla_defaults
  assert defaults.compile_options == {} and defaults.xla_defaults
  table = bench.format_table([plain, defaults])
  assert "unet:tiny*" in table and "XLA's default options" in table


def test_toy_rows_report_flops_against_the_measured_peak(quick_run):
  """The toy MLP's rows carry the FLOPs of a whole step (a micro-batched training step is
  counted once per micro-batch, not once) and the share of the measured matmul rate."""
  records, _ = quick_run
  by_case = {r["case"]: r for r in records}
  # Network over 1,000 samples: 6 hidden 128x128 products per sample, 2 FLOPs per MAC.
  assert by_case["sampler"]["gflop_per_step"] >= 1000 * 6 * 2 * 128 * 128 / 1e9
  # Training: forward and backward (about 3x the forward) over 2,000 rows.
  assert by_case["train"]["gflop_per_step"] >= 3 * 2000 * 6 * 2 * 128 * 128 / 1e9
  for r in records:
    assert r["peak_flops_measured"] > 0 and 0 < r["peak_share"] < 5


def test_compile_times_row_compares_both_option_sets():
  """The initialisation compile-time rows: both option sets compiled, the parameters compared."""
  from experiments.bench import compile_times

  row = compile_times.time_init("gaussian1d", once_first=True)
  assert row["config"] == "gaussian1d" and row["param_arrays"] > 0 and row["first"] == "once"
  assert row["defaults_s"] > 0 and row["once_s"] > 0
  assert row["speedup"] == pytest.approx(row["defaults_s"] / row["once_s"], rel=0.05)
  assert row["bit_identical"] is True
  assert "gaussian1d" in compile_times.format_table([row])
