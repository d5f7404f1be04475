#!/usr/bin/env bash
# The GPU checks of the SE path in one go (on CUDA the merge is the formula in plain PyTorch operations, which
# the env part prints; the fused op runs on the CPU only), for a machine with a CUDA GPU (a lent one included):
# the kernel and gpu-marked tests, the unit tail alone (BN + merge, eager and compiled), the CUDA rows of
# the standard table (eager, then compiled) and kernel profiles of one training step. Results go to $OUT (default benchmarks/results/gpu). Each part has its
# own time limit, so one slow part cannot take the others' results with it.
#
#   bash benchmarks/gpu_checks.sh                              # everything
#   PARTS="tests eager" bash benchmarks/gpu_checks.sh          # some of it
#   PARTS="tests table" bash benchmarks/gpu_checks.sh          # the whole CUDA table in one file
set -u
OUT=${OUT:-benchmarks/results/gpu}
PARTS=${PARTS:-"env tests block eager profile compiled-profile compiled"}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
has() { [[ " $PARTS " == *" $1 "* ]]; }
section() { echo; echo "=== $1 ($(date +%T))"; }
GPU_ARGS="--device cuda --batch ${BATCH:-256} --amp --channels-last"

if has env; then
  section env
  $PY -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), torch.cuda.get_device_name())"
  $PY -c "from senet.layers import se_path; print('SE path on cuda (fused, the default):', se_path('fused', 'cuda')); print('SE path on cuda (naive):', se_path('naive', 'cuda'))"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw,memory.used --format=csv
fi
if has tests; then
  section "gpu-marked tests"
  timeout ${TESTS_LIMIT:-240} $PY -m pytest -q -p no:cacheprovider -n 4 -m gpu tests/test_fused_se.py tests/test_bench.py 2>&1 | tail -n 15
fi
if has block; then
  section "unit tail (BN + merge), eager and compiled"
  timeout ${BLOCK_LIMIT:-240} $PY benchmarks/merge_block.py --device cuda 2>"$OUT/block.log" | tee "$OUT/merge_block_cuda.md"
fi
if has table; then
  section "CUDA table, eager and compiled"
  timeout ${TABLE_LIMIT:-540} $PY benchmarks/se_overhead.py --devices cuda --repeats ${REPEATS:-20} --warmup 3 \
    --output "$OUT/se_overhead_cuda.md" 2>"$OUT/table.log" | grep -E "ratio|^(infer|train)"
fi
if has eager; then
  section "CUDA table, eager"
  timeout ${EAGER_LIMIT:-240} $PY benchmarks/se_overhead.py --devices cuda --exec eager --repeats ${REPEATS:-20} --warmup 3 \
    --output "$OUT/se_overhead_cuda_eager.md" 2>"$OUT/eager.log" | grep -E "ratio|^(infer|train)"
fi
if has profile; then
  section "kernel profile, one eager training step"
  timeout 120 $PY benchmarks/profile_step.py $GPU_ARGS --top 16 --output "$OUT/profile_train_cuda.md" 2>/dev/null | head -n 24
fi
if has compiled-profile; then
  section "kernel profile, one compiled training step"
  timeout 240 $PY benchmarks/profile_step.py $GPU_ARGS --compile --top 16 --output "$OUT/profile_train_cuda_compiled.md" 2>/dev/null | head -n 24
fi
if has compiled; then
  section "CUDA table, compiled"
  timeout ${COMPILED_LIMIT:-400} $PY benchmarks/se_overhead.py --devices cuda --exec compiled --repeats ${REPEATS:-20} \
    --warmup 3 ${COMPILED_PAIRS:+--pairs $COMPILED_PAIRS} --output "$OUT/se_overhead_cuda_compiled.md" \
    2>"$OUT/compiled.log" | grep -E "ratio|^(infer|train)"
fi
section done
ls -l "$OUT"
