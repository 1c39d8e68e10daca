#!/bin/bash
# The GPU suite on a lent device machine (README "Benchmarks"): its image has torch but not diffusers,
# which travels as wheels in .whl (ignored by git: .git/info/exclude). From this machine, once:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# then the device tool's run, carrying .whl (the copy there may have no .git: name the commit):
#   SYNTHAUG_CODE_COMMIT=<git rev-parse HEAD here> bash bench/on_device.sh
# The suite needs neither Ray nor MLflow; its table and log come back under $OUT. The "plan" rows need
# MLflow (a sweep's dry run), so rerun them here on the returned BENCHMARKS.md:
#   python sweeps/replace_pct.py --preset paper --dry-run --gpus 8 --benchmarks BENCHMARKS.md
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" || exit 1
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
timeout 570 python3 bench/gpu_suite.py --out "$OUT/BENCHMARKS.md" "$@" 2>&1 | tee "$OUT/gpu_suite.log"
