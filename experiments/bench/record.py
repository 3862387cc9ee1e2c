"""A benchmark record: one row of the table, one object of the ``--json`` list."""

import dataclasses
import os
import platform
from typing import Any, List, NamedTuple, Optional

import jax

from mode_interp import sharding


class PendingProducts(NamedTuple):
  """A record's matrix products (from :func:`experiments.bench.products.matrix_products`) and
  how often a step runs them (a sampler's row tiles), listed by its case and timed by
  :func:`experiments.bench.run` once every case has been measured (their operands would
  otherwise stay in the process's memory figures)."""

  products: list
  times: int


@dataclasses.dataclass
class Record:
  """One row: every field is a key of the JSON record (:data:`RECORD_KEYS`, in this order),
  None where it does not apply; ``pending_products`` is not written (see
  :class:`PendingProducts`)."""

  case: Optional[str] = None
  model: Optional[str] = None
  dim: Optional[int] = None
  shape: Optional[List[int]] = None
  num_samples: Optional[int] = None
  batch_size: Optional[int] = None
  timesteps: Optional[int] = None
  devices: Optional[int] = None
  steps_timed: Optional[int] = None
  ms_per_step: Optional[float] = None
  samples_steps_per_s: Optional[float] = None
  compile_s: Optional[float] = None
  wall_s: Optional[float] = None
  peak_mem_mb: Optional[float] = None
  rss_start_mb: Optional[float] = None
  mem_source: Optional[str] = None
  xla_temp_mb: Optional[float] = None
  reference_ms_per_step: Optional[float] = None
  speedup_vs_reference: Optional[float] = None
  reference_threads: Optional[int] = None
  platform: Optional[str] = None
  device_kind: Optional[str] = None
  jax_version: Optional[str] = None
  quick: Optional[bool] = None
  machine: Optional[dict] = None
  dtype: Optional[str] = None
  gflop_per_step: Optional[float] = None
  tflops: Optional[float] = None
  peak_share: Optional[float] = None
  peak_flops_measured: Optional[float] = None
  reference_torch: Optional[str] = None
  compile_options: Optional[dict] = None
  xla_defaults: Optional[bool] = None
  products_ms: Optional[float] = None
  products_share: Optional[float] = None
  pending_products: Optional[PendingProducts] = dataclasses.field(
    default=None, repr=False, compare=False, metadata={"json": False}
  )

  def to_json(self) -> dict:
    """The record as written to ``--json``: every key of :data:`RECORD_KEYS`, in order."""
    return {k: _plain(getattr(self, k)) for k in RECORD_KEYS}


def _plain(v: Any):
  """A JSON-ready copy of a field's value (lists and dicts copied, so the record's own are not
  shared)."""
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  return v


# The keys of every JSON record, in the order they are written.
RECORD_KEYS = tuple(f.name for f in dataclasses.fields(Record) if f.metadata.get("json", True))


def as_mapping(rec) -> dict:
  """A record as its JSON mapping: a :class:`Record`, or a mapping as read back from a
  ``--json`` file (returned as is)."""
  return rec.to_json() if isinstance(rec, Record) else rec


def machine_info() -> dict:
  """The machine a record was measured on: CPU model, cores, the ISA flags that decide
  which kernels run (AVX2, AVX-512, AMX), host, jax version."""
  model, flags_ = sharding.cpu_info()
  model = model or platform.processor() or ""
  wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
  return {
    "cpu_model": model,
    "cpu_count": os.cpu_count(),
    "host": platform.node(),
    "isa": [f for f in wanted if f in flags_],
    "jax": jax.__version__,
  }


def new_record(mesh, **kw) -> Record:
  """A record of ``kw`` on ``mesh``'s first device, with the device, machine, compile options
  and throughput filled in."""
  dev = jax.devices()[0]
  rec = Record(
    devices=sharding.num_shards(mesh),
    platform=dev.platform,
    device_kind=dev.device_kind,
    jax_version=jax.__version__,
    machine=machine_info(),
  )
  rec = dataclasses.replace(rec, **kw)
  # The project's XLA options for this network (sharding.compiler_options), or {} where XLA's
  # defaults were asked for (the comparison rows, inside sharding.xla_default_options()).
  conv, training = not str(rec.model).startswith("mlp"), rec.case == "train"
  rec.compile_options = sharding.compiler_options(mesh, convolutional=conv, training=training)
  rec.xla_defaults = bool((conv or training) and sharding.using_xla_defaults())
  per_item = rec.num_samples if rec.case == "sampler" else rec.batch_size
  rec.samples_steps_per_s = per_item * 1000.0 / rec.ms_per_step
  return rec
