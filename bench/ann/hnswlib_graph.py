"""Writes hnswlib's HNSW graph of an `ann_bench --out DIR` data set in this repository's
`HnswIndex::to_bytes` form, so that the index crate's own search code can walk hnswlib's graph
(`graph_recall` example). That separates the graph from the search: if this code on hnswlib's
graph gives hnswlib's recall, any recall difference lies in the graph, not in the search.

Usage: hnswlib_graph.py DATA_DIR OUT_FILE
Builds with hnswlib on one thread (L2, M=16, efConstruction=128, seed 42, as compare.py),
keeps hnswlib's saved index beside OUT_FILE (OUT_FILE.hnswlib), converts it. Node ids are
hnswlib's internal ids; labels are the row numbers.
"""

import os
import struct
import sys

import numpy as np

from compare import EF_CONSTRUCTION, M, read_vecs

L2_CODE = 3  # Metric::L2's code in the header
LINE_WORDS = 16  # a level-0 row is padded to whole 64-byte lines


def build(data_dir, path):
    import hnswlib

    base = read_vecs(f"{data_dir}/base.fvecs", np.float32)
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=EF_CONSTRUCTION, random_seed=42)
    index.add_items(base, np.arange(len(base)), num_threads=1)
    index.save_index(path)


def convert(src, dst):
    """hnswlib's `saveIndex` layout -> the `STRHNSW2` header and body (hnsw_format.rs)."""
    b = open(src, "rb").read()
    _, _, n, per_element, label_at, data_at = struct.unpack_from("<6Q", b, 0)
    max_level, entry = struct.unpack_from("<iI", b, 48)
    max_m, max_m0, m = struct.unpack_from("<3Q", b, 56)
    at = 56 + 3 * 8 + 8 + 8  # past mult_ (double) and ef_construction_
    dim = (label_at - data_at) // 4
    level0 = np.frombuffer(b, np.uint8, n * per_element, at).reshape(n, per_element)
    at += n * per_element
    words = level0[:, :label_at].copy().view(np.uint32)
    counts = words[:, 0] & 0xFFFF  # the high bits hold hnswlib's deleted flag
    labels = level0[:, label_at:label_at + 8].copy().view(np.uint64)[:, 0].astype(np.uint32)
    levels = np.zeros(n, np.uint8)
    upper = []
    for node in range(n):
        (size,) = struct.unpack_from("<I", b, at)
        at += 4
        if size:
            lists = np.frombuffer(b, np.uint32, size // 4, at).copy().reshape(-1, max_m + 1)
            at += size
            lists[:, 0] &= 0xFFFF
            levels[node] = len(lists)
            upper.append(lists.ravel())
    stride = -(-(dim + 1 + max_m0) // LINE_WORDS) * LINE_WORDS
    rows = np.zeros((n, stride), np.uint32)
    rows[:, :dim] = words[:, data_at // 4:data_at // 4 + dim]
    rows[:, dim] = counts
    rows[:, dim + 1:dim + 1 + max_m0] = words[:, 1:1 + max_m0]
    out = bytearray(b"STRHNSW2") + struct.pack("<IB", dim, L2_CODE)
    out += struct.pack("<5I", m, n, entry, max_level, stride)
    out += labels.tobytes() + levels.tobytes() + bytes(n) + rows.tobytes()
    for lists in upper:
        out += lists.tobytes()
    open(dst, "wb").write(out)
    print(f"{n} nodes, dim {dim}, top level {max_level}, {int((levels > 0).sum())} above level 0, "
          f"mean level-0 degree {counts.mean():.2f}")


def main():
    data_dir, dst = sys.argv[1], sys.argv[2]
    saved = dst + ".hnswlib"
    if not os.path.exists(saved):
        build(data_dir, saved)
    convert(saved, dst)


if __name__ == "__main__":
    main()
