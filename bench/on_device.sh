#!/bin/bash
# The first-GPU command (README "Benchmarks"): the GPU suite's parts as stages, in the order of what decides
# a sweep's plan, each under its own time limit, all writing one run's section of BENCHMARKS.md (and the
# device's throughput row) as they go: a stage killed by its limit leaves the earlier stages' figures.
#
#   cuda      the CUDA-only checks: DDP on the GPU run's process group, NCCL refusing a CPU tensor, the device
#             a process with a zero GPU share sees
#   trials    paper-recipe trials alone and 2, 4 a GPU, per-epoch evaluation and checkpoint seconds
#   ddpm      improved-DDPM steps/s at batch 128 (float32, bf16, channels_last, fused AdamW) and 16
#   evals     sampling UNet evaluations/s at batch 256 and 1024
#   labeller  the labeller's recipe, cudnn.benchmark off and on
#   rest      the comparisons against the usual ways (idle, classifier, sampling, warmup, sharing)
#
# On a lent device machine its image has torch but not diffusers, which travels as wheels in .whl (ignored
# by git). From this machine, once:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# then the device tool's run, carrying .whl (the copy there may have no .git: name the commit):
#   SYNTHAUG_CODE_COMMIT=<git rev-parse HEAD here> bash bench/on_device.sh
# Here, at tiny size on the CPU (under 3 minutes):  OUT=/tmp/od bash bench/on_device.sh --size tiny --device cpu
# The "plan" rows need MLflow (a sweep's dry run), so rerun them here on the returned BENCHMARKS.md:
#   python sweeps/replace_pct.py --preset paper --dry-run --gpus 8 --benchmarks BENCHMARKS.md --gpu-model H200
set -o pipefail
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then      # a device machine: the carried wheels, checked before any stage
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
[ -f "$OUT/BENCHMARKS.md" ] || cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
stage() {   # stage SECONDS PARTS [suite flags]
  local limit=$1 parts=$2
  shift 2
  echo "== stage $parts (at most ${limit} s)"
  timeout -k 10 "$limit" python3 bench/gpu_suite.py --parts "$parts" --rows "$OUT/rows.jsonl" --started "$started" \
    --out "$OUT/BENCHMARKS.md" --no-plans "$@" 2>&1 | tee -a "$OUT/gpu_suite.log"
  local rc=$?
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "== stage $parts stopped at its limit of ${limit} s" | tee -a "$OUT/gpu_suite.log"
  return 0
}
# each stage's limit in seconds (LIMIT_<STAGE> overrides it: a test kills one on purpose)
stage "${LIMIT_CUDA:-60}" cuda "$@"
stage "${LIMIT_TRIALS:-170}" trials "$@"
stage "${LIMIT_DDPM:-90}" ddpm "$@"
stage "${LIMIT_EVALS:-60}" evals "$@"
stage "${LIMIT_LABELLER:-50}" labeller "$@"
stage "${LIMIT_REST:-100}" idle,classifier,sampling,warmup,sharing "$@"
echo "== done; the throughput table:"
sed -n '/<!-- throughputs/,/<!-- \/throughputs/p' "$OUT/BENCHMARKS.md"
