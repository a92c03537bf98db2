#!/usr/bin/env python3
"""cgrad's safetensors against the reference client (PyPI `safetensors` + numpy).

1. Files written by safetensors.numpy.save_file (random bit patterns in every dtype numpy
   has: F32, F64, F16, I32, I64, U8; scalars and empty tensors; metadata) are read by
   cgrad (`st_interop dump`): names, dtypes, shapes and every byte must match.
2. cgrad re-saves them (`st_interop copy`); safetensors.numpy.load_file must read back the
   identical arrays and metadata.
3. A file cgrad writes from a known formula (`st_interop gen`) is checked value by value.
BF16 is not covered here (numpy has no bfloat16); test_safetensors covers it in C.

Usage: test_safetensors_interop.py <path to st_interop>. Exit 77 = skipped (no packages)."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError as e:  # the test command installs them; say so rather than pass
    print("SKIP: python packages safetensors and numpy are needed (%s); pip install safetensors numpy" % e)
    sys.exit(77)

TOOL = sys.argv[1]
NAMES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16",
         np.dtype("int32"): "I32", np.dtype("int64"): "I64", np.dtype("uint8"): "U8"}
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def run(*args):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print("st_interop %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        sys.exit(1)
    return r.stdout


def random_tensors(rng):
    out = {}
    for k in range(12):
        dt = list(NAMES)[k % len(NAMES)]
        nd = int(rng.integers(0, 4))
        shape = tuple(int(s) for s in rng.integers(0 if k == 11 else 1, 6, size=nd))
        n = int(np.prod(shape, dtype=np.int64))
        raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
        out["%d.%s" % (k, "weight" if k % 2 == 0 else "bias")] = raw.view(dt).reshape(shape)
    return out


def parse_dump(text):
    tensors, meta = {}, {}
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "meta":
            meta[parts[1]] = parts[2]
            continue
        name, dt, shape, hexdata = parts
        tensors[name] = (dt, tuple(int(s) for s in shape.split(",")) if shape else (), hexdata)
    return tensors, meta


def main():
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    print("seed", seed)
    with tempfile.TemporaryDirectory() as d:
        src, dst, gen = (os.path.join(d, f) for f in ("py.safetensors", "cg.safetensors", "gen.safetensors"))
        tensors = random_tensors(rng)
        meta = {"format": "pt", "note": "written by safetensors.numpy"}
        save_file(tensors, src, metadata=meta)

        got, got_meta = parse_dump(run("dump", src))
        check(set(got) == set(tensors), "names differ: %s vs %s" % (sorted(got), sorted(tensors)))
        for name, arr in tensors.items():
            if name not in got:
                continue
            dt, shape, hexdata = got[name]
            check(dt == NAMES[arr.dtype], "%s: dtype %s, want %s" % (name, dt, NAMES[arr.dtype]))
            check(shape == arr.shape, "%s: shape %s, want %s" % (name, shape, arr.shape))
            check(hexdata == arr.tobytes().hex(), "%s: bytes differ" % name)
        check(got_meta == meta, "metadata %s, want %s" % (got_meta, meta))

        run("copy", src, dst)
        back = load_file(dst)
        check(set(back) == set(tensors), "copy: names differ")
        for name, arr in tensors.items():
            b = back.get(name)
            check(b is not None and b.dtype == arr.dtype and b.shape == arr.shape and b.tobytes() == arr.tobytes(),
                  "copy: %s differs" % name)
        with safe_open(dst, framework="numpy") as f:
            check(f.metadata() == meta, "copy: metadata %s" % f.metadata())

        run("gen", gen)
        g = load_file(gen)
        with safe_open(gen, framework="numpy") as f:
            check(f.metadata() == {"format": "pt", "producer": "cgrad"}, "gen: metadata %s" % f.metadata())
        spec = [("0.weight", np.float32, (5, 3)), ("0.bias", np.float32, (5,)), ("2.weight", np.float64, (4, 5)),
                ("2.bias", np.float16, (4,)), ("4.step", np.int64, ()), ("4.count", np.int32, (2, 3, 4)),
                ("5.mask", np.uint8, (300,)), ("6.empty", np.float32, (0, 3))]
        check(list(g) == [s[0] for s in spec] or set(g) == {s[0] for s in spec}, "gen: names %s" % list(g))
        for k, (name, dt, shape) in enumerate(spec):
            a = g.get(name)
            if a is None:
                check(False, "gen: %s missing" % name)
                continue
            check(a.dtype == dt and a.shape == shape, "gen: %s is %s %s, want %s %s" % (name, a.dtype, a.shape,
                                                                                        np.dtype(dt), shape))
            i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
            if dt == np.int32:
                want = (i * 7 - 13).astype(dt)
            elif dt == np.int64:
                want = i * 7 - 13 + (1 << 40)
            elif dt == np.uint8:
                want = ((i * 37) % 256).astype(dt)
            elif k == 0:
                want = (i.astype(np.float64) * 0.37 - 3.1).astype(dt)
            else:
                want = (((i % 64) * 0.25 - 8) * (k + 1)).astype(dt)
            check(a.reshape(-1).tobytes() == want.tobytes(), "gen: %s values differ: %s vs %s" % (name, a.reshape(-1)[:8],
                                                                                               want[:8]))
    if failures:
        print("FAILED (seed %d):" % seed)
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("ok: reference client and cgrad agree on every byte")


main()
