#!/usr/bin/env bash
# The GPU part of the speed issue as one script: the CUDA tests, planning speed on CUDA
# (eager vs whole-plan CUDA graphs vs graphs + torch.compile, in fp32, TF32 and bf16, and the
# max-autotune compile experiment in bf16), and the Hopper loop on the GPU. At most about 13
# minutes (the timeouts below).
#
#   bash benchmarks/cuda_checks.sh [COPY_RESULTS_TO]
#
# Writes benchmarks/results/{planning_speed_cuda,loop_speed_cuda}.json and cuda_checks.log
# (also copied to the folder given). Compilation is slow, so only the speed issue's two target
# cases compile in every precision, the presets in fp32.
set -uo pipefail
cd "$(dirname "$0")/.."
log=benchmarks/results/cuda_checks.log
python=${PYTHON:-python3}
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    timeout 150 $python -m pytest -q -p no:cacheprovider tests/planners/test_cuda_graph.py \
        tests/planners/test_compiled_objective.py tests/test_loop.py \
        -k "cuda or graph or precision or actions"
    rm -f benchmarks/results/planning_speed_cuda.json
    timeout 360 $python benchmarks/planning_speed.py --device cuda --repeats 10 \
        --modes eager graph graph-compiled graph-compiled-tf32 graph-compiled-bf16 \
        graph-autotuned-bf16 --compile-only "PETS size" "grad 400"
    timeout 100 $python benchmarks/planning_speed.py --device cuda --repeats 10 \
        --only preset --modes graph-compiled
    timeout 140 $python benchmarks/loop_speed.py --device cuda --presets hopper
} 2>&1 | tee "$log"
if [[ $# -ge 1 ]]; then
    cp "$log" benchmarks/results/planning_speed_cuda.json benchmarks/results/loop_speed_cuda.json \
        "$1"/ 2>/dev/null
fi
