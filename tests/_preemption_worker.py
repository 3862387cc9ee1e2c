"""Subprocess body of ``tests/test_preemption.py``'s multi-process test: one of several
simulated hosts (CPU processes) running ``experiments.main``.

  python -m tests._preemption_worker PORT NUM_PROCESSES PROCESS_ID -- MAIN_ARGS...

It joins the job's distributed runtime on ``localhost:PORT`` (jax's preemption service
included, unless ``JAX_ENABLE_PREEMPTION_SERVICE=false``), then runs the entry point
exactly as ``python -m experiments.main MAIN_ARGS...`` would.
"""

import sys


def main():
  port, num, pid = (int(a) for a in sys.argv[1:4])
  args = sys.argv[sys.argv.index("--") + 1 :]
  import jax

  jax.distributed.initialize(f"localhost:{port}", num_processes=num, process_id=pid)
  from absl import app
  from experiments import main as main_mod

  sys.argv = ["experiments.main", *args]
  app.run(main_mod.main, flags_parser=main_mod.cli.parse_flags)


if __name__ == "__main__":
  main()
