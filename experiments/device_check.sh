#!/usr/bin/env bash
# One short accelerator check. Usage:
#   bash experiments/device_check.sh OUTDIR [STAGE ...]
# Stages (default: all, in this order):
#   shapes_gpu          configs/shapes.py:gpu trained via experiments.main, then the detection
#                       study (experiments.detect, 3,000 samples): ~8 min of one H200; its point
#                       is added to the CPU scaling study's figure (OUTDIR/detection_vs_compute.png)
#   gaussian1d_paper grid25_paper   paper-scale Gaussian runs (~5 min)
#   shapes_paper_short  a paper-shaped SIMPLE SHAPES run cut short (to time its steps)
#   bench               the benchmark table
# Resumable: rerun with the same OUTDIR and a killed or timed-out stage continues (training
# from its last checkpoint, sampling and the study from their last saved chunk).
# bfloat16: configs/shapes.py:gpu sets model.dtype=bfloat16 (training, sampling and the study).
set -uo pipefail
out=${1:-runs/device_check}
shift || true
stages=${*:-shapes_gpu gaussian1d_paper grid25_paper shapes_paper_short bench}
for stage in $stages; do
  case $stage in shapes_gpu|gaussian1d_paper|grid25_paper|shapes_paper_short|bench) ;;
    *) echo "error: unknown stage '$stage'; allowed: shapes_gpu gaussian1d_paper grid25_paper shapes_paper_short bench" >&2; exit 1 ;;
  esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) | tee -a "$out/device.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/device.txt"
run() {  # name, seconds, args...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python -m experiments.main --workdir="$out/$name" "$@" >> "$out/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$out/device.txt"
  cp "$out/$name/results.json" "$out/${name}_results.json" 2>/dev/null
}
study() {  # name (a workdir under OUTDIR), seconds, args...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python -m experiments.detect --workdir="$out/$name" "$@" >> "$out/${name}_study.log" 2>&1
  echo "${name}_study rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$out/device.txt"
  cp "$out/$name/study/results.json" "$out/${name}_study_results.json" 2>/dev/null
  cp "$out/$name/study/study.md" "$out/${name}_study.md" 2>/dev/null
  grep -m1 "^Verdict" "$out/$name/study/study.md" 2>/dev/null | tee -a "$out/device.txt"
}
for stage in $stages; do
  case $stage in
    shapes_gpu)
      run shapes_gpu 330 --config=configs/shapes.py:gpu
      grep "train 4000/4000\|sample 512/512" "$out/shapes_gpu.log" | tail -2 | tee -a "$out/device.txt"
      study shapes_gpu 210 --num_samples=3000
      grep "study .*samples/s" "$out/shapes_gpu_study.log" | tail -1 | tee -a "$out/device.txt"
      timeout 120 python -m experiments.scaling --points=reports/latest/shapes_scaling \
        --add_study="$out/shapes_gpu" --label=gpu --out="$out/detection_vs_compute.png" \
        --json="$out/shapes_gpu_scaling_row.json" >> "$out/shapes_gpu_study.log" 2>&1
      echo "scaling_figure rc=$?" | tee -a "$out/device.txt" ;;
    gaussian1d_paper) run gaussian1d_paper 120 --config=configs/gaussian1d.py:paper ;;
    grid25_paper) run grid25_paper 200 --config=configs/grid25.py:paper ;;
    shapes_paper_short)
      run shapes_paper_short 150 --config=configs/shapes.py:paper --config.train.steps=300 \
        --config.train.log_every=50 --config.sample.num_samples=256 --config.sample.chunk_size=256
      grep "train 300/300\|sample 256/256" "$out/shapes_paper_short.log" | tee -a "$out/device.txt" ;;
    bench)
      timeout 240 python -m experiments.bench --cases=sampler,train,unet_paper --json="$out/bench.json" 2>&1 | tee "$out/bench.txt" | tail -24 ;;
    *) echo "error: unknown stage '$stage'; allowed: shapes_gpu gaussian1d_paper grid25_paper shapes_paper_short bench" >&2; exit 1 ;;
  esac
done
