#!/usr/bin/env python3
"""Regenerates the crafted files under tests/data/{safetensors,idx,csv}.

Each file is a small good or deliberately broken input; the C suites (test_safetensors,
test_idx, test_csv) assert the status and message for every one, and scripts/fuzz seeds
its libFuzzer runs with them. Deterministic: rerunning rewrites identical bytes.
Only the standard library is used (no safetensors package needed)."""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def put(sub, name, data):
    os.makedirs(os.path.join(ROOT, sub), exist_ok=True)
    with open(os.path.join(ROOT, sub, name), "wb") as f:
        f.write(data)


# ---------------- safetensors ----------------
def st(header, data, raw_header=None, pad=True):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


f4 = lambda *v: struct.pack("<%df" % len(v), *v)
A = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}

put("safetensors", "good_small.safetensors",
    st({"__metadata__": {"format": "pt", "step": "7"}, "0.weight": A,
        "0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}},
       f4(1, 2, 3, 4) + f4(-0.5, 0.25)))
put("safetensors", "good_empty.safetensors", st({}, b""))
put("safetensors", "nan_data.safetensors", st({"w": A}, f4(1, float("nan"), 3, 4)))
put("safetensors", "truncated_len.safetensors", b"\x10\x00\x00\x00\x00")
put("safetensors", "header_past_eof.safetensors", struct.pack("<Q", 1000) + b'{"a":1}')
put("safetensors", "header_huge.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
put("safetensors", "bad_json.safetensors", st(None, b"", raw_header=b'{"w": {"dtype": '))
put("safetensors", "not_object.safetensors", st(None, b"", raw_header=b"[1, 2, 3]"))
put("safetensors", "dup_keys.safetensors",
    st(None, f4(1, 2, 3, 4), raw_header=b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                                          b'"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'))
put("safetensors", "unknown_dtype.safetensors", st({"w": dict(A, dtype="F7")}, f4(1, 2, 3, 4)))
put("safetensors", "unsupported_dtype.safetensors",
    st({"w": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}, b"\x00\x01\x00\x01"))
put("safetensors", "offset_out_of_range.safetensors", st({"w": dict(A, data_offsets=[0, 64])}, f4(1, 2, 3, 4)))
put("safetensors", "overlap.safetensors",
    st({"a": A, "b": dict(A, data_offsets=[8, 24])}, f4(1, 2, 3, 4, 5, 6)))
put("safetensors", "gap.safetensors",
    st({"a": A, "b": dict(A, data_offsets=[24, 40])}, f4(*range(10))))
put("safetensors", "trailing.safetensors", st({"a": A}, f4(1, 2, 3, 4, 5, 6)))
put("safetensors", "size_mismatch.safetensors",
    st({"0.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, f4(1, 2, 3, 4, 5)))
put("safetensors", "missing_offsets.safetensors",
    st({"w": {"dtype": "F32", "shape": [2, 2]}}, f4(1, 2, 3, 4)))
put("safetensors", "negative_shape.safetensors", st({"w": dict(A, shape=[-2, -2])}, f4(1, 2, 3, 4)))
put("safetensors", "end_before_begin.safetensors", st({"w": dict(A, data_offsets=[16, 0])}, f4(1, 2, 3, 4)))
put("safetensors", "meta_not_string.safetensors", st({"__metadata__": {"step": 7}, "w": A}, f4(1, 2, 3, 4)))
put("safetensors", "too_many_dims.safetensors",
    st({"w": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}}, b"\x07"))
put("safetensors", "truncated_data.safetensors", st({"a": A}, f4(1, 2, 3)))


# ---------------- IDX ----------------
def idx(code, dims, payload):
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


labels = bytes([3, 1, 4, 1, 5, 9, 2, 6])
put("idx", "good_labels.idx1", idx(0x08, [8], labels))
put("idx", "good_labels.idx1.gz", gzip.compress(idx(0x08, [8], labels), mtime=0))
put("idx", "good_images.idx3", idx(0x08, [2, 3, 2], bytes(range(0, 240, 20))))
put("idx", "good_f32.idx2", idx(0x0D, [2, 2], struct.pack(">4f", 1.5, -2.0, 0.0, 1e30)))
put("idx", "good_i16.idx1", idx(0x0B, [3], struct.pack(">3h", -300, 0, 32767)))
put("idx", "wrong_magic.idx", b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")
put("idx", "unknown_type.idx", b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02")
put("idx", "zero_dims.idx", b"\x00\x00\x08\x00")
put("idx", "short_magic.idx", b"\x00\x00")
put("idx", "truncated_dims.idx", b"\x00\x00\x08\x03" + struct.pack(">I", 2) + b"\x00")
put("idx", "truncated_data.idx", idx(0x08, [10], bytes(5)))
put("idx", "trailing.idx", idx(0x08, [3], bytes(5)))
put("idx", "nan.idx", idx(0x0D, [3], struct.pack(">3f", 1.0, float("nan"), 2.0)))
good_gz = gzip.compress(idx(0x08, [64], bytes(range(64))), mtime=0)
put("idx", "truncated.idx.gz", good_gz[: len(good_gz) // 2])
put("idx", "corrupt.idx.gz", good_gz[:10] + b"\xff" * 30)
put("idx", "huge_dims.idx", idx(0x0E, [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b""))

# ---------------- CSV ----------------
csv = {
    "good_header.csv": "sepal,petal,\"width, cm\",label\n5.1,3.5,1.4,0\n4.9,3.0,1.4,1\r\n\n6.2,-3.4e-1,5.4,2\n",
    "good_noheader.csv": "1,2,3\n4,5,6\n",
    "bad_cell.csv": "a,b,label\n1,2,0\n3,x7,1\n",
    "nan_cell.csv": "a,b,label\n1,2,0\n3,nan,1\n",
    "ragged.csv": "a,b,label\n1,2,0\n3,4,1\n5,6\n",
    "empty_cell.csv": "a,b,label\n1,,0\n",
    "unterminated_quote.csv": "a,b,label\n1,\"2,0\n3,4,1\n",
    "fractional_label.csv": "a,b,label\n1,2,0\n3,4,1.5\n",
    "empty.csv": "",
    "header_only.csv": "a,b,label\n",
    "huge_value.csv": "a,b,label\n1,1e400,0\n",
}
for k, v in csv.items():
    put("csv", k, v.encode())

# ---------------- fuzzer findings kept as regression cases ----------------
# an empty tensor whose other sizes overflow when multiplied into strides
put("idx", "zero_dim_overflow.idx", idx(0x0E, [0, 0, 0xFFFFFFFF, 0xFFFF0016, 0xFFFFFFC2], b""))
put("safetensors", "zero_dim_overflow.safetensors",
    st({"w": {"dtype": "F64", "shape": [0, 4294967295, 4294967295, 4294967295], "data_offsets": [0, 0]}}, b""))
