#!/usr/bin/env python3
"""The cgrad benches against the PyTorch anchor scripts, without a GPU.

    test_bench_anchors.py BENCH_MLP BENCH_KERNELS COMPARE_JOIN ANCHOR_DIR

1. Every anchor key that bench_mlp and bench_kernels name in their ANCHORS line (`--list`)
   is a key the anchor scripts in ANCHOR_DIR time, so no comparison silently drops out on
   the device because of a misspelt key.
2. compare_join.py picks PyTorch's fastest configuration and computes the speedup, on
   synthetic logs with random times.
Exit 77 (skipped) when ANCHOR_DIR (../shared/tools beside the checkout) is missing.
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile


def anchors_of(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [l[len("ANCHORS "):] for l in out.splitlines() if l.startswith("ANCHORS ")]
    assert len(lines) == 1, "%s printed %d ANCHORS lines" % (cmd, len(lines))
    return json.loads(lines[0])


def script_keys(anchor_dir):
    keys = set()
    for name in ("torch_anchor.py", "torch_anchor_compiled.py"):
        with open(os.path.join(anchor_dir, name)) as f:
            keys.update(re.findall(r'\b(?:bench|train_step_bench|run|kb)\("([^"]+)"', f.read()))
    return keys


def main(bench_mlp, bench_kernels, join, anchor_dir):
    if not os.path.isfile(os.path.join(anchor_dir, "torch_anchor.py")):
        print("no anchor scripts in %s: skipping" % anchor_dir)
        return 77
    have = script_keys(anchor_dir)
    assert len(have) > 20, "found only %d keys in the anchor scripts" % len(have)
    maps = {}
    maps.update(anchors_of([bench_mlp, "--list"]))
    maps.update(anchors_of([bench_kernels, "--list"]))
    assert "mlp_mnist_b256_fp32" in maps and "cross_entropy_fwd_bwd" in maps, sorted(maps)
    missing = sorted({(k, a) for k, m in maps.items() for c in ("eager", "graphed", "compiled")
                      for a in m.get(c, []) if a not in have})
    assert not missing, "anchor keys the scripts do not time: %s" % missing
    # each workload of the MLP anchors is compared with at least one anchor key
    for k, m in maps.items():
        assert any(m.get(c) for c in ("eager", "graphed", "compiled")), "%s has no anchor key" % k

    rnd = random.Random()
    ours = {k: rnd.uniform(0.1, 5.0) for k in maps}
    theirs = {a: rnd.uniform(0.1, 5.0) for a in have}
    with tempfile.TemporaryDirectory() as d:
        pc, pt = os.path.join(d, "cgrad.log"), os.path.join(d, "torch.log")
        with open(pc, "w") as f:
            f.write("ANCHORS %s\nJSON %s\n" % (json.dumps(maps), json.dumps(ours)))
        with open(pt, "w") as f:
            f.write("noise line\nJSON %s\n" % json.dumps(theirs))
        out = subprocess.run([sys.executable, join, pc, "--", pt], check=True, capture_output=True, text=True).stdout
    rows = {l.split()[0]: l.split() for l in out.splitlines() if l.split() and l.split()[0] in maps}
    assert set(rows) == set(maps), "rows for %s, keys %s" % (sorted(rows), sorted(maps))
    for k, m in maps.items():
        cands = [a for c in ("eager", "graphed", "compiled") for a in m.get(c, [])]
        best = min(cands, key=lambda a: theirs[a])
        want = "%.2fx" % (theirs[best] / ours[k])
        assert rows[k][-2] == best and rows[k][-1] == want, "%s: got %s, want %s %s" % (k, rows[k][-2:], best, want)
    assert "MARKDOWN" in out
    print("%d cgrad keys, all %d anchor keys they name exist; join checked" %
          (len(maps), len({a for m in maps.values() for c in m.values() if isinstance(c, list) for a in c})))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
