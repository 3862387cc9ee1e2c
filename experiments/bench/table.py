"""The records as the printed table, and the same-run ratios to the official code. Both take
:class:`~experiments.bench.record.Record` objects or their JSON mappings (a ``--json`` file
read back, as ``experiments.report`` does)."""

from experiments.bench.record import as_mapping, machine_info


def _fmt(v, spec):
  """``format(v, spec)``, or ``-`` for None."""
  return "-" if v is None else format(v, spec)


def format_table(records) -> str:
  """The records as a fixed-width table (what ``main`` prints)."""
  records = [as_mapping(r) for r in records]
  head = (
    f"{'case':<8} {'model':<10} {'dtype':<5} {'dim':>5} {'N/batch':>8} {'T':>5} {'dev':>3} "
    f"{'ms/step':>9} {'samples*steps/s':>15} {'GFLOP/step':>10} {'TFLOP/s':>8} "
    f"{'%peak':>6} {'prod%':>6} {'peak_mb':>8} {'+rss_mb':>8} {'xla_tmp_mb':>10} "
    f"{'compile_s':>9}"
  )
  lines = [head, "-" * len(head)]
  for r in records:
    size = r["num_samples"] if r["case"] == "sampler" else r["batch_size"]
    added = None if r["rss_start_mb"] is None else r["peak_mem_mb"] - r["rss_start_mb"]
    dt = {"float32": "f32", "bfloat16": "bf16"}.get(r.get("dtype") or "float32", r.get("dtype"))
    share = None if r.get("peak_share") is None else 100.0 * r["peak_share"]
    prod = None if r.get("products_share") is None else 100.0 * r["products_share"]
    lines.append(
      f"{r['case']:<8} {r['model'] + ('*' if r.get('xla_defaults') else ''):<10} {dt:<5} {r['dim']:>5} {size:>8} {r['timesteps']:>5} "
      f"{r['devices']:>3} {r['ms_per_step']:>9.3f} {r['samples_steps_per_s']:>15.4g} "
      f"{_fmt(r.get('gflop_per_step'), '10.3f'):>10} {_fmt(r.get('tflops'), '8.4f'):>8} "
      f"{_fmt(share, '6.1f'):>6} {_fmt(prod, '6.1f'):>6} {_fmt(r['peak_mem_mb'], '8.0f'):>8} "
      f"{_fmt(added, '8.0f'):>8} "
      f"{_fmt(r['xla_temp_mb'], '10.2f'):>10} {r['compile_s']:>9.1f}"
    )
  r0 = records[0] if records else None
  if r0 is not None:
    lines.append(
      f"platform {r0['platform']} ({r0['device_kind']}), jax {r0['jax_version']}; "
      f"memory: {r0['mem_source']}; +rss_mb = peak minus resident set at case start"
    )
  if any(r.get("products_share") is not None for r in records):
    lines.append(
      "prod% = the step's matrix products alone (same shapes, same options, this run) "
      "as a share of the whole step's time"
    )
  opts = next((r["compile_options"] for r in records if r.get("compile_options")), None)
  if opts or any(r.get("xla_defaults") for r in records):
    lines.append(
      f"training steps and convolutional networks compiled with "
      f"{opts or 'no extra options'}; model* = the same with XLA's default options"
    )
  return "\n".join(lines)


def format_reference(records, ref=None) -> str:
  """The official code's times from the same run, and the ratios; or why there are none."""
  records = [as_mapping(r) for r in records]
  m = records[0]["machine"] if records else machine_info()
  where = (
    f"{m['cpu_model']}, {m['cpu_count']} cores, ISA {'/'.join(m['isa']) or '-'}, jax {m['jax']}"
  )
  if ref is None:
    return (
      f"machine: {where}\nNo comparison with the official code: pass --reference=PATH "
      f"(and --reference_python) to time it in this run, on this machine."
    )
  lines = [
    f"machine: {where}",
    f"official PyTorch toy code, same run: torch {ref['torch']}, {ref['threads']} "
    f"intra-op thread(s)" + (f", stubbed {', '.join(ref['stubbed'])}" if ref["stubbed"] else ""),
  ]
  for r in records:
    if r["speedup_vs_reference"] is not None:
      size = r["num_samples"] if r["case"] == "sampler" else r["batch_size"]
      what = "reverse step" if r["case"] == "sampler" else "training step"
      dt = {"float32": "f32", "bfloat16": "bf16"}.get(r.get("dtype") or "float32")
      lines.append(
        f"  {what} mlp {r['dim']}D {size} {dt}: {r['ms_per_step']:.2f} ms here vs "
        f"{r['reference_ms_per_step']:.2f} ms official: {r['speedup_vs_reference']:.2f}x "
        f"({r['platform']}, {r['devices']} device(s)"
        f"{', XLA default options' if r.get('xla_defaults') else ''})"
      )
  if len(lines) == 2:
    lines.append("  (no row of this run has a counterpart in the official code)")
  return "\n".join(lines)
