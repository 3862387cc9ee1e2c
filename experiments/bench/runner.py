"""A benchmark run: the planned rows, their matrix products alone, the official code's times,
the records written as JSON."""

import dataclasses
import json
import os
from typing import List, Optional

from experiments.bench.cases import CASES, plan
from experiments.bench.memory import MemProbe
from experiments.bench.products import time_pending_products
from experiments.bench.record import Record
from experiments.bench.reference import check_reference_path, time_reference
from mode_interp import sharding


@dataclasses.dataclass
class Results:
  """What :func:`run` measured: the records (one per row, in table order) and the official
  code's timing run (its JSON; None without ``reference``)."""

  records: List[Record]
  reference: Optional[dict] = None


def run(
  cases,
  quick: bool = False,
  devices: int = 0,
  json_path=None,
  log=print,
  full: bool = False,
  reference=None,
  unet_variant: str = "",
) -> Results:
  """Runs the benchmark; returns the records and the reference run (and writes the records to
  ``json_path``).

  ``reference``: ``(path, python, threads)`` to time the official code in the same run.
  ``unet_variant``: the ``configs/shapes.py`` variant of the ``unet`` case (see
  :func:`~experiments.bench.cases.plan`).
  """
  bad = [c for c in cases if c not in CASES]
  if bad or not cases:
    raise ValueError(f"unknown --cases {bad}; allowed: {', '.join(CASES)}")
  if reference is not None:
    check_reference_path(reference[0])
  mesh = sharding.make_mesh(devices or None)
  probe = MemProbe()
  records = []
  for label, fn in plan(cases, quick, full, unet_variant=unet_variant):
    log(f"bench: {label} on {sharding.num_shards(mesh)} device(s) ...")
    rec = fn(mesh, probe)
    rec.quick = bool(quick)
    log(f"bench:   {rec.ms_per_step:.3f} ms/step, compile {rec.compile_s:.1f}s")
    records.append(rec)
  if any(r.pending_products is not None for r in records):
    log("bench: the steps' matrix products alone ...")
    time_pending_products(records)
  ref = None
  if reference is not None and records:
    path, python, threads = reference
    ref = time_reference(path, python, records, threads, quick=quick, log=log)
  if json_path:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
      json.dump([r.to_json() for r in records], f, indent=1)
  return Results(records, ref)
