#!/usr/bin/env bash
# One short accelerator check: paper-scale Gaussian runs, a paper-shaped SIMPLE SHAPES run cut
# short (to time its steps), and the benchmark. Usage: bash experiments/device_check.sh OUTDIR
set -uo pipefail
out=${1:-runs/device_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) | tee "$out/device.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/device.txt"
run() {  # name, seconds, args...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python -m experiments.main --workdir="$out/$name" "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$out/device.txt"
  cp "$out/$name/results.json" "$out/${name}_results.json" 2>/dev/null
}
run gaussian1d_paper 120 --config=configs/gaussian1d.py:paper
run grid25_paper 200 --config=configs/grid25.py:paper
run shapes_paper_short 150 --config=configs/shapes.py:paper --config.train.steps=300 \
  --config.train.log_every=50 --config.sample.num_samples=256 --config.sample.chunk_size=256
grep "train 300/300\|sample 256/256" "$out/shapes_paper_short.log" | tee -a "$out/device.txt"
timeout 120 python -m experiments.bench --json="$out/bench.json" 2>&1 | tee "$out/bench.txt" | tail -20
