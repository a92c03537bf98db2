#!/usr/bin/env python3
"""Rewrites a kernels/*.cu file into C++ that g++ compiles against the CUDA emulator
(tests/cuda_emu/emu_kernel.h): each launch `k<<<cfg>>>(args)` becomes
`cgemu::launch(k, cfg)(args)`, and `extern __shared__ T name[];` a pointer to the launch's
dynamic shared memory. Everything else is left as written.

usage: translate.py IN.cu OUT.cpp"""
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()

# the kernel: an identifier, optionally qualified, optionally with template arguments that
# hold no '<' '>' of their own (kernels/ launches are of that form)
launch = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
text, n_launch = launch.subn(lambda m: "cgemu::launch(%s, %s)(" % (m.group(1), m.group(2)), text)

shared = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:<> ]+?)\s+(\w+)\s*\[\s*\]\s*;")
text, n_shared = shared.subn(lambda m: "%s *%s = (%s *)cgemu::dynamic_smem();" % (m.group(1), m.group(2), m.group(1)),
                             text)

if "<<<" in text:
    sys.exit("translate.py: %s: a launch it could not rewrite" % src)
with open(dst, "w") as f:
    if src.endswith(".cu"):  # the headers come in through a .cu file, after emu_kernel.h
        f.write('#include "emu_kernel.h"\n')
    f.write('#line 1 "%s"\n' % src)
    f.write(text)
