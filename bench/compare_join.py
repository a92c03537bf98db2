#!/usr/bin/env python3
"""Joins cgrad's benchmark logs with the PyTorch anchors' logs of the same run.

    compare_join.py CGRAD_LOG [CGRAD_LOG ...] -- TORCH_LOG [TORCH_LOG ...]

A cgrad log (bench_mlp, bench_kernels) holds one `ANCHORS {...}` line (cgrad key -> the
anchor keys of the same workload, by PyTorch configuration: eager, graphed, compiled) and a
`JSON {...}` line (cgrad key -> median ms). A torch log (torch_anchor.py,
torch_anchor_compiled.py) holds a `JSON {...}` line (anchor key -> median ms).

Prints one row per cgrad key: cgrad's time, PyTorch's best time per configuration, and the
speedup over PyTorch's best configuration (> 1: cgrad is faster). Anchor keys missing from
the torch logs are left out of the minimum and named at the end. Writes the same table as
markdown to stdout after a `MARKDOWN` line, for bench/README.md.
"""
import json
import sys


def lines_with(path, tag):
    with open(path, errors="replace") as f:
        return [json.loads(l[len(tag) + 1:]) for l in f if l.startswith(tag + " ")]


def main(argv):
    if "--" not in argv:
        sys.exit("usage: compare_join.py CGRAD_LOG... -- TORCH_LOG...")
    cut = argv.index("--")
    anchors, ours, theirs = {}, {}, {}
    for p in argv[:cut]:
        for a in lines_with(p, "ANCHORS"):
            anchors.update(a)
        for j in lines_with(p, "JSON"):
            ours.update(j)
    for p in argv[cut + 1:]:
        for j in lines_with(p, "JSON"):
            theirs.update(j)
    cols = ("eager", "graphed", "compiled")
    rows, missing = [], set()
    for key, ms in ours.items():
        a = anchors.get(key)
        if a is None:
            continue  # e.g. the copy reference
        best = {}
        for c in cols:
            got = {k: theirs[k] for k in a.get(c, []) if k in theirs}
            missing.update(k for k in a.get(c, []) if k not in theirs)
            if got:
                k = min(got, key=got.get)
                best[c] = (k, got[k])
        top = min(best.values(), key=lambda kv: kv[1]) if best else None
        rows.append((key, ms, best, top))
    head = "%-32s %10s" % ("cgrad key", "cgrad ms") + "".join(" %10s" % (c + " ms") for c in cols)
    print(head + " %-40s %8s" % ("PyTorch's best", "speedup"))
    md = ["| cgrad key | cgrad ms | " + " | ".join("torch %s ms" % c for c in cols) + " | PyTorch's best | speedup |",
          "|---|---:|" + "---:|" * len(cols) + "---|---:|"]
    for key, ms, best, top in rows:
        cells = ["%10.4f" % best[c][1] if c in best else "%10s" % "-" for c in cols]
        ratio = top[1] / ms if top and ms > 0 else None
        print("%-32s %10.4f" % (key, ms) + "".join(" " + x for x in cells) +
              " %-40s %8s" % (top[0] if top else "n/a", "%.2fx" % ratio if ratio else "n/a"))
        md.append("| %s | %.4f | %s | %s | %s |" % (key, ms, " | ".join(x.strip() for x in cells),
                                                   top[0] if top else "n/a", "%.2fx" % ratio if ratio else "n/a"))
    if missing:
        print("anchor keys not in the torch logs: " + ", ".join(sorted(missing)))
    print("MARKDOWN")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
