#!/usr/bin/env bash
# The GPU tests and GPU benchmarks in one command, within 8 minutes on one CUDA GPU.
#
#   bash benchmarks/gpu.sh            # prints the figures last; JSON under ${OUT:-gpu-results}
#
# Runs from a checkout with the frameworks already installed (unirnn itself need not be:
# the checkout is put on PYTHONPATH). Each step has its own time limit and the script goes
# on past a failed step, so one broken step still leaves the others' figures; the exit
# status is that of the first failed step. Without a CUDA device it says so and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu.sh: torch sees no CUDA device; nothing to run" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

status=0
step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2; shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    if [ $rc -ne 0 ]; then
        echo "== $name FAILED (exit $rc; full log $OUT/$name.log)"
        [ $status -eq 0 ] && status=$rc
    fi
}

# GPU tests: torch (cuDNN, custom path on CUDA, bfloat16), Keras on GPU, Flax on GPU
step 150 tests-torch "$PYTHON" -m pytest -q -rs -m gpu tests/torch
step 60 tests-keras env KERAS_BACKEND=torch "$PYTHON" -m pytest -q -rs tests/keras/test_keras_gpu.py
step 60 tests-flax env JAX_ENABLE_X64=1 "$PYTHON" -m pytest -q -rs -k gpu tests/flax/test_flax_oracle.py
# benchmarks: custom cells against cuDNN at N=64 T=100 I=H=512, and at d2l's setting
step 120 bench-torch "$PYTHON" benchmarks/bench_torch.py --device cuda --sizes 64,100,512 \
    --rounds 11 --json "$OUT/bench_torch_cuda.json"
step 60 bench-torch-d2l "$PYTHON" benchmarks/bench_torch.py --device cuda --replaced \
    --rounds 11 --json "$OUT/bench_torch_cuda_d2l.json"

echo "== figures"
for name in bench-torch bench-torch-d2l; do
    grep -E "x nn\.|x cuDNN|^ *(lstm|gru|relu|d2l)" "$OUT/$name.log" || true
done
exit $status
