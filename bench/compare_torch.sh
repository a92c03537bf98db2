#!/usr/bin/env bash
# cgrad vs PyTorch on the same GPU in one run: bench_mlp (cgrad) and the PyTorch anchor
# scripts, then the ratio of each cgrad workload to PyTorch's best configuration of it
# (eager, CUDA graph or torch.compile, whichever the anchors report fastest).
#   bench/compare_torch.sh [build-dir=build] [anchor-dir=tools-device]
# The anchors come from ../shared/tools; copy them into the git-ignored tools-device/ and
# carry that folder to the device machine. Never measured yet: no GPU was lent so far.
set -euo pipefail
build=${1:-build}
anchors=${2:-tools-device}
cd "$(dirname "$0")/.."
out=$(mktemp -d)
"$build/bench_mlp" --device cuda --steps 50 | tee "$out/cgrad.txt"
python3 "$anchors/torch_anchor.py" | tee "$out/torch.txt"
[ -f "$anchors/torch_anchor_compiled.py" ] && python3 "$anchors/torch_anchor_compiled.py" | tee "$out/torch_compiled.txt" || true
python3 - "$out" <<'PY'
import json, sys, glob, os
d = sys.argv[1]
def last_json(path):
    js = [l[5:] for l in open(path) if l.startswith("JSON ")]
    return json.loads(js[-1]) if js else {}
ours = last_json(os.path.join(d, "cgrad.txt"))
theirs = {}
for p in glob.glob(os.path.join(d, "torch*.txt")):
    theirs.update(last_json(p))
print("\n%-26s %10s %12s %-40s %8s" % ("workload", "cgrad ms", "torch ms", "torch best config", "speedup"))
for name, ms in ours.items():
    cands = {k: v for k, v in theirs.items() if k.startswith(name)}
    if not cands:
        print("%-26s %10.3f %12s" % (name, ms, "n/a")); continue
    best = min(cands, key=cands.get)
    print("%-26s %10.3f %12.3f %-40s %7.2fx" % (name, ms, cands[best], best, cands[best] / ms))
PY
