"""The command ``python -m experiments.bench``: its flags and ``main``.

The flags are defined when :mod:`experiments.bench` is imported (as they were when it was one
module): ``experiments.profile_unet`` uses ``--json``."""

import sys

from absl import app, flags

from experiments.bench.cases import CASES, DEFAULT_CASES
from experiments.bench.reference import ReferenceError_, reference_python
from experiments.bench.runner import run
from experiments.bench.table import format_reference, format_table

FLAGS = flags.FLAGS
flags.DEFINE_list(
  "cases",
  list(DEFAULT_CASES),
  f"Which cases to run, of: {', '.join(CASES)} (default: {', '.join(DEFAULT_CASES)}).",
)
flags.DEFINE_bool("quick", False, "Smallest sizes only (seconds; for tests and smoke runs).")
flags.DEFINE_string("json", None, "Write the records to this path (one JSON list).")
flags.DEFINE_bool(
  "full",
  False,
  "Sampler rows at N = 100,000 with T = 1000 (about half an "
  "hour on 2 CPU cores; for accelerators).",
)
flags.DEFINE_integer("devices", 0, "Devices in the data-parallel mesh (0: every device).")
flags.DEFINE_string(
  "reference",
  None,
  "A checkout of the official repository "
  "(locuslab/diffusion-model-hallucination): time its toy code in the same run.",
)
flags.DEFINE_string(
  "reference_python",
  None,
  "Python of an environment with CPU torch for "
  "--reference (default: $MODE_INTERP_REFERENCE_PYTHON).",
)
flags.DEFINE_integer("reference_threads", 0, "torch intra-op threads (0: torch's default).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    reference = None
    if FLAGS.reference:
      reference = (
        FLAGS.reference,
        reference_python(FLAGS.reference_python),
        FLAGS.reference_threads,
      )
    results = run(
      FLAGS.cases,
      quick=FLAGS.quick,
      devices=FLAGS.devices,
      json_path=FLAGS.json,
      log=lambda s: print(s, file=sys.stderr, flush=True),
      full=FLAGS.full,
      reference=reference,
    )
  except (ValueError, ReferenceError_) as e:
    sys.exit(f"error: {e}")
  print(format_table(results.records))
  print()
  print(format_reference(results.records, results.reference))
  if FLAGS.json:
    print(f"\nwrote {len(results.records)} records to {FLAGS.json}")
