#!/usr/bin/env bash
# cgrad vs PyTorch on the same GPU in one run: bench_mlp and bench_kernels (cgrad), the
# PyTorch anchor scripts, then bench/compare_join.py: for each cgrad workload and kernel the
# anchors' eager, CUDA-graphed and compiled times of the same work (the ANCHORS map each
# cgrad bench prints) and the speedup over the fastest of them.
#   bench/compare_torch.sh [build-dir=build] [anchor-dir=tools-device] [log-dir=<temp>]
# The anchors come from ../shared/tools; copy them into a git-ignored folder (scripts/
# device_bundle puts them in the bundle) and carry it to the device machine.
# A log already in log-dir (bench_kernels.log, bench_mlp.log, torch_eager.log,
# torch_compiled.log) is reused instead of run again. torch_anchor_compiled.py runs with
# SKIP_DONE=1 (no max-autotune of the big MLP, about 140 s a workload) unless
# CG_ANCHOR_FULL=1. CG_COMPARE_JOIN_ONLY=1 runs nothing and joins the logs that are there.
set -euo pipefail
build=${1:-build}
anchors=${2:-tools-device}
here=$(cd "$(dirname "$0")" && pwd)
out=${3:-$(mktemp -d)}
mkdir -p "$out"
run_log() { # log name, command...: runs it unless its log is there, tee'd to the log
    local log="$out/$1"
    shift
    if [ -s "$log" ]; then echo "== reusing $log"; return 0; fi
    [ "${CG_COMPARE_JOIN_ONLY:-0}" = 1 ] && return 0
    "$@" 2>&1 | tee "$log.part" || echo "== $1 exited non-zero; its log is kept" >&2
    mv "$log.part" "$log"
}
run_log bench_mlp.log "$build/bench_mlp" --device cuda --steps 50
run_log bench_kernels.log "$build/bench_kernels" 30
run_log torch_eager.log python3 "$anchors/torch_anchor.py"
if [ -f "$anchors/torch_anchor_compiled.py" ]; then
    skip=1
    [ "${CG_ANCHOR_FULL:-0}" = 1 ] && skip=0
    if [ $skip = 1 ]; then
        run_log torch_compiled.log env SKIP_DONE=1 python3 "$anchors/torch_anchor_compiled.py"
    else
        run_log torch_compiled.log python3 "$anchors/torch_anchor_compiled.py"
    fi
fi
ours=() theirs=()
for f in bench_mlp bench_kernels; do [ -f "$out/$f.log" ] && ours+=("$out/$f.log"); done
for f in torch_eager torch_compiled; do [ -f "$out/$f.log" ] && theirs+=("$out/$f.log"); done
python3 "$here/compare_join.py" "${ours[@]}" -- "${theirs[@]}" | tee "$out/compare.txt"
