#!/usr/bin/env bash
# Run the GPU test suite and the kernel benchmark from an existing CUDA build, without
# rebuilding (for a lent GPU machine where the tree arrives already built).
#   bench/run_device.sh [build-dir=build-cuda] [reps=50]
# Writes bench/results-<host>-<date>.txt (and prints it). Exits non-zero if a test fails.
set -u -o pipefail
build=${1:-build-cuda}
reps=${2:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out="bench/results-$(hostname -s 2>/dev/null || echo host)-$(date +%Y%m%d-%H%M%S).txt"
if [ ! -x "$build/bench_kernels" ] || [ ! -x "$build/tests/test_gpu_numerics" ]; then
    echo "run_device.sh: $build has no bench_kernels / tests/test_gpu_numerics; build first:" >&2
    echo "  cmake -S . -B $build -DCG_CUDA=ON -DCMAKE_BUILD_TYPE=Release && cmake --build $build -j" >&2
    exit 2
fi
{
    echo "# $(date -u) $(uname -srm)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
        --format=csv,noheader
    echo "## GPU numerics"
} | tee "$out"
rc=0
(cd tests && CK_FORK=no CK_VERBOSITY=normal "../$build/tests/test_gpu_numerics") 2>&1 | tee -a "$out" || rc=1
echo "## all ctest suites" | tee -a "$out"
(cd "$build" && ctest --output-on-failure 2>&1) | tee -a "$out" || rc=1
echo "## bench_kernels $reps" | tee -a "$out"
"$build/bench_kernels" "$reps" 2>&1 | tee -a "$out" || rc=1
echo "results in $out"
exit $rc
