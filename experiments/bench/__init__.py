r"""Speed and memory of the sampler and the training step.

  python -m experiments.bench                      # every case (a few minutes on 2 CPU cores)
  python -m experiments.bench --quick              # seconds: the smallest row of each case
  python -m experiments.bench --cases=unet         # the shapes U-Net, float32 vs bfloat16
  python -m experiments.bench --cases=unet_paper   # the paper's U-Net (accelerators)
  python -m experiments.bench --full               # N = 100,000 at T = 1000 (accelerators)
  python -m experiments.bench --cases=sampler --json=runs/bench.json --devices=4
  python -m experiments.bench --reference=PATH --reference_python=PY   # + the official code, same run

Cases:

``sampler``
  The toy MLP (width 128, 3 shared blocks) under the DDPM scan sampler with the
  toy schedule (linear betas 0.001 -> 0.2, trajectory variance over the last 10
  steps), built by :func:`mode_interp.pipeline.make_sampler` and drawing all N
  samples in one chunk (on CPUs in row tiles, ``sample.tile_rows``), in float32 and,
  for 1D N = 10,000 at T = 1000, also with bfloat16 products (``model.dtype``). ``ms_per_step`` is the wall time of one whole chunk call
  (compiled ahead of time, so no compilation is timed) divided by T. Rows: 1D
  and 2D at N = 10,000 (T = 1000) and N = 100,000 (T = 100: the work per reverse
  step does not depend on T, and T = 1000 would take ~10 minutes per row on 2
  CPU cores), plus 1D N = 10,000 at T = 250 next to T = 1000 to show that memory
  does not grow with T (the variance is accumulated in streaming form: O(N * D)
  memory). ``--full`` runs the N = 100,000 rows at T = 1000 and the T = 250 / 1000
  memory pair at N = 100,000 (for accelerators).
``train``
  The jitted, state-donating train step of :func:`mode_interp.train.make_train_step`:
  the toy MLP on 20,000 1D points at batch 2,000 (float32 and bfloat16 products) and
  10,000 (on CPUs in micro-batches, ``train.micro_batch``), and the U-Net of
  ``configs/shapes.py`` (its model, diffusion and ``train.batch_size`` fields) on
  32x32x1 images. ``ms_per_step`` is the fastest of :data:`TRAIN_REPEATS` blocks' mean
  step time after a warm-up (the official code's rows are timed the same way). The U-Net
  trains on random images: speed does not depend on their content.

``unet``
  The CPU default U-Net of ``configs/shapes.py`` in float32 and bfloat16 compute
  (``model.dtype``): its training step at the config's batch and its reverse step over
  a chunk of 256 images (timed on a 10-step DDIM scan; a reverse step costs the same
  in any scan), with GFLOP per step from XLA's cost analysis and TFLOP/s.
``unet_paper``
  The same for the ``:paper`` U-Net (64x64): training at batch 128, reverse steps over
  1,000 images; for accelerators, where ``%peak`` is the share of the device's dense
  peak for that dtype (``PEAK_FLOPS``).

FLOPs (``gflop_per_step``) come from XLA's cost analysis: for the toy sampler, of the
network over the N samples at one t; for a training step, of the whole step lowered
without micro-batches. ``%peak`` (``peak_share``) is the achieved rate over the device's
dense peak for that dtype: vendor figures for accelerators (``PEAK_FLOPS``); on CPUs the
fastest of two matrix products measured in the same run (``peak_flops_measured``, see
:func:`measured_matmul_peak`), since a CPU's peak depends on clocks and kernels.

``prod%`` (toy rows; ``products_ms`` / ``products_share``): the matrix products a step
computes (every ``dot_general`` of its jaxpr: for training, forward and backward, each
micro-batch; for the sampler, the network over the chunk in its row tiles; on one device),
timed alone in the same run on random operands of the same shapes with the row's compile
options, as a share of the whole step. Near 100% the step is bound by its products: only
faster products (another dtype, another kernel, another machine) or fewer FLOPs can speed it
up, not trimming the rest of the step.

``--quick`` (which overrides ``--full``) keeps only 1D N = 1,000, T = 100
(sampler), the MLP at batch 2,000 with fewer steps (train), and tiny batches for
the U-Net cases (one training row in float32, one sampling row in bfloat16).

Memory (``peak_mem_mb``, with ``mem_source`` saying what it is):

- GPU/TPU: ``memory_stats()['peak_bytes_in_use']`` of the first device
  (``device_peak_bytes_in_use``; a high-water mark over the whole process).
- CPU on Linux: the process's peak resident set since the case started
  (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``
  before each case: ``process_peak_rss_case``); ``rss_start_mb`` is the resident
  set when the case started, so ``peak_mem_mb - rss_start_mb`` is what the case
  added. Where the reset is not allowed: ``getrusage`` ``ru_maxrss`` (KiB on
  Linux), a high-water mark over the whole process (``process_peak_rss_lifetime``).
- Always: ``xla_temp_mb``, the scratch memory XLA reserves for the compiled
  function (per device), from ``compiled.memory_analysis()``; it does not depend
  on what the process did before, so it is the cleanest view of how memory
  scales with N and T.

Sizes are rounded up to a multiple of the device count (``--devices``, 0 = all).

``--json=PATH`` writes one JSON list (not JSONL) of records, one per row of the
table, each with the same keys: ``case``, ``model``, ``dim``, ``shape``,
``num_samples`` (sampler; null for train), ``batch_size`` (train; null for
sampler), ``timesteps``, ``devices``, ``steps_timed``, ``ms_per_step``,
``samples_steps_per_s`` (samples advanced one reverse step, or training examples,
per second), ``compile_s``, ``wall_s``, ``peak_mem_mb``, ``rss_start_mb``,
``mem_source``, ``xla_temp_mb``, ``reference_ms_per_step`` and
``speedup_vs_reference`` (null unless ``--reference`` was given and the row has a
counterpart: the toy MLP's training step at batch 2,000 and 10,000, and the 1D
sampler's reverse step at N = 10,000), ``reference_threads`` (torch's intra-op
threads), ``platform``, ``device_kind``, ``jax_version``, ``quick``, and
``machine`` (CPU model, cores, ISA flags such as AVX2, AVX-512 and AMX, host).

With ``--reference=PATH`` (a checkout of the official repository) the official
PyTorch toy code is timed at the same sizes *in the same run, on the same machine*
(``experiments/torch_reference/bench_reference.py``, run by ``--reference_python`` or
``$MODE_INTERP_REFERENCE_PYTHON``, an environment with CPU torch), and the ratios
are printed. Without it no ratio is shown: a figure from another machine is no
comparison. Timings on a shared CPU are noisy; compare rows from the same run.

Modules: ``cases`` (the rows and :func:`plan`), ``record`` (:class:`Record`, the JSON keys),
``memory`` (the memory probe), ``products`` (the matrix products alone, the measured matmul
rate), ``reference`` (the official code's timing), ``table`` (the printed table),
``runner`` (:func:`run`), ``cli`` (the flags and ``main``).
"""

from experiments.bench.cases import (
  CASES,
  DEFAULT_CASES,
  PEAK_FLOPS,
  TRAIN_REPEATS,
  bench_sample_unet,
  bench_sampler,
  bench_train_mlp,
  bench_train_unet,
  flops,
  plan,
)
from experiments.bench.cli import main
from experiments.bench.memory import MemProbe, xla_temp_mb
from experiments.bench.products import (
  matrix_products,
  measured_matmul_peak,
  time_pending_products,
  time_products,
)
from experiments.bench.record import RECORD_KEYS, PendingProducts, Record, machine_info, new_record
from experiments.bench.reference import (
  REFERENCE_SCRIPT,
  ReferenceError_,
  reference_python,
  time_reference,
)
from experiments.bench.runner import Results, run
from experiments.bench.table import format_reference, format_table
from mode_interp import sharding

# Simulated CPU devices (--devices with XLA_FLAGS) need enough host threads for the gradient
# all-reduce; set before jax starts its backend.
sharding.configure_host_threads()

__all__ = [
  "CASES",
  "DEFAULT_CASES",
  "PEAK_FLOPS",
  "RECORD_KEYS",
  "REFERENCE_SCRIPT",
  "TRAIN_REPEATS",
  "MemProbe",
  "PendingProducts",
  "Record",
  "ReferenceError_",
  "Results",
  "bench_sample_unet",
  "bench_sampler",
  "bench_train_mlp",
  "bench_train_unet",
  "flops",
  "format_reference",
  "format_table",
  "machine_info",
  "main",
  "matrix_products",
  "measured_matmul_peak",
  "new_record",
  "plan",
  "reference_python",
  "run",
  "time_pending_products",
  "time_products",
  "time_reference",
  "xla_temp_mb",
]
