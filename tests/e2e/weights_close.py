"""Worst per-tensor relative error, ||a - b|| / ||b||, between two safetensors files of float32
tensors (the same names and shapes); exits 1 when it is above TOL or the tensors differ in name.
Pure Python: the e2e scripts need nothing beyond the interpreter.
Usage: weights_close.py A.safetensors B.safetensors TOL"""
import json
import math
import struct
import sys
from array import array


def load(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {t['dtype']}; expected F32")
        begin, end = t["data_offsets"]
        a = array("f")
        a.frombytes(data[begin:end])
        tensors[name] = a
    return tensors


def main():
    a_path, b_path, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a, b = load(a_path), load(b_path)
    if a.keys() != b.keys():
        sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())}")
    worst, where = 0.0, ""
    for name in sorted(a):
        x, y = a[name], b[name]
        if len(x) != len(y):
            sys.exit(f"{name}: {len(x)} values against {len(y)}")
        diff = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)))
        norm = max(math.sqrt(sum(q * q for q in y)), 1e-12)
        if diff / norm > worst:
            worst, where = diff / norm, name
    print(f"worst relative error {worst:.3g} ({where or 'identical'}), tolerance {tol:g}")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
