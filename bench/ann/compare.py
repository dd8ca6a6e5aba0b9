"""Runs hnswlib and faiss HNSW on the data set written by Strata's ann_bench example and
prints one markdown table with Strata's figures (read from JSON-lines files) beside them.

Usage: compare.py DATA_DIR STRATA_JSONL EFS [MORE_JSONL ...]   (EFS like 16,32,64,128)
STRATA_JSONL holds the `strata-index` rows (index crate, `ann_bench`); further files such as
the `strata-engine` rows (`engine_ann_bench`, end to end through `Engine::search`) are added as
columns when present.
Same settings for every library: L2, M=16, efConstruction=128, k=10, 2 build threads
(Strata's index: compare.sh's BUILD_THREADS, default 2);
search timed over the whole query set with 1 and 2 threads: one warm-up pass, then the best
of three timed passes.
"""

import json
import os
import sys
import time

import numpy as np

K = 10
M = 16
EF_CONSTRUCTION = 128


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)[:, 1:]
    return np.ascontiguousarray(rows.view(dtype))


def recall(found, truth):
    hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in zip(found, truth))
    return hits / (K * len(truth))


def timed(run):
    """Best of three passes: (wall seconds, CPU seconds of this process, all threads)."""
    secs, cpu = float("inf"), float("inf")
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        run()
        secs = min(secs, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return secs, cpu


def at_recall(points, target):
    """QPS at `target` recall@10, interpolated linearly between the two ef settings around it
    on the (recall, QPS) curve; None when no setting reaches it."""
    points = sorted(points)
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= target <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    if points and points[0][0] >= target:
        return points[0][1]
    return None


def run_hnswlib(base, queries, truth, efs):
    import hnswlib

    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=EF_CONSTRUCTION, random_seed=42)
    t, c = time.perf_counter(), time.process_time()
    index.add_items(base, np.arange(len(base)), num_threads=2)
    rows = [{"lib": "hnswlib", "event": "build", "build_s": time.perf_counter() - t,
             "build_cpu_s": time.process_time() - c}]
    for ef in efs:
        index.set_ef(ef)
        for threads in (1, 2):
            index.knn_query(queries, k=K, num_threads=threads)
            secs, cpu = timed(lambda: index.knn_query(queries, k=K, num_threads=threads))
            labels, _ = index.knn_query(queries, k=K, num_threads=threads)
            rows.append({"lib": "hnswlib", "event": "search", "ef": ef, "threads": threads,
                         "qps": len(queries) / secs, "cpu_qps": len(queries) / cpu,
                         "recall_at_10": recall(labels, truth)})
    return rows


def run_faiss(base, queries, truth, efs):
    import faiss

    faiss.omp_set_num_threads(2)
    index = faiss.IndexHNSWFlat(base.shape[1], M)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    t, c = time.perf_counter(), time.process_time()
    index.add(base)
    rows = [{"lib": "faiss", "event": "build", "build_s": time.perf_counter() - t,
             "build_cpu_s": time.process_time() - c}]
    for ef in efs:
        index.hnsw.efSearch = ef
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            index.search(queries, K)
            secs, cpu = timed(lambda: index.search(queries, K))
            _, labels = index.search(queries, K)
            rows.append({"lib": "faiss", "event": "search", "ef": ef, "threads": threads,
                         "qps": len(queries) / secs, "cpu_qps": len(queries) / cpu,
                         "recall_at_10": recall(labels, truth)})
    return rows


def main():
    data_dir, strata_jsonl, efs = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
    base = read_vecs(f"{data_dir}/base.fvecs", np.float32)
    queries = read_vecs(f"{data_dir}/query.fvecs", np.float32)
    truth = read_vecs(f"{data_dir}/gt.ivecs", np.int32)
    rows = []
    for path in [strata_jsonl] + sys.argv[4:]:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.startswith("{")]
    for r in rows:
        # Rows of builds from before the index was Strata's own carry usearch's name.
        r["lib"] = r["lib"].replace("strata-usearch", "strata-index")
    # PEERS=0 (compare.sh) leaves hnswlib and faiss out: Strata's columns alone, quicker.
    if os.environ.get("PEERS", "1") != "0":
        rows += run_hnswlib(base, queries, truth, efs)
        rows += run_faiss(base, queries, truth, efs)
    for r in rows:
        print(json.dumps(r), file=sys.stderr)

    present = {r["lib"] for r in rows}
    # "-before" columns: the same benchmarks built from an earlier commit (compare.sh's
    # BEFORE), run in the same session so that before and after share the machine's load.
    # "strata-engine" asks for ids and scores only (`include: []`, what the index and the peers
    # return); "strata-engine-records" for the default include (content and metadata, read
    # from storage).
    order = ["strata-engine-before", "strata-engine-records-before", "strata-index-before",
             "strata-engine", "strata-engine-records", "strata-index", "hnswlib", "faiss"]
    libs = [lib for lib in order if lib in present]
    build = {r["lib"]: r["build_s"] for r in rows if r["event"] == "build"}
    search = {(r["lib"], r["ef"], r["threads"]): r for r in rows if r["event"] == "search"}
    print(f"n={len(base)} dim={base.shape[1]} queries={len(queries)} k={K} M={M} "
          f"efConstruction={EF_CONSTRUCTION}, L2, build with 2 threads\n")
    print("| | " + " | ".join(libs) + " |")
    print("|---|" + "---|" * len(libs))
    print("| build (s) | " + " | ".join(f"{build.get(lib, float('nan')):.1f}" for lib in libs) + " |")
    build_cpu = {r["lib"]: r["build_cpu_s"] for r in rows
                 if r["event"] == "build" and "build_cpu_s" in r}
    if build_cpu:
        print("| build CPU (s, all threads) | "
              + " | ".join(f"{build_cpu[lib]:.1f}" if lib in build_cpu else "-" for lib in libs)
              + " |")
    puts = {r["lib"]: r["put_s"] for r in rows if r["event"] == "build" and "put_s" in r}
    if puts:
        print("| durable writes (s) | "
              + " | ".join(f"{puts[lib]:.1f}" if lib in puts else "-" for lib in libs) + " |")
    for ef in efs:
        for threads in (1, 2):
            cells = []
            for lib in libs:
                r = search.get((lib, ef, threads))
                cells.append(f"{r['qps']:.0f} QPS / {r['recall_at_10']:.4f}" if r else "n/a")
            print(f"| ef={ef}, {threads} thread{'s' if threads > 1 else ''} | " + " | ".join(cells) + " |")

    # The machine may be shared: queries per CPU-second of the process (all its threads) is
    # less disturbed by other load than wall-clock QPS, so both are compared at equal recall.
    print("\nQPS at equal recall@10 (interpolated between ef settings; wall-clock / per "
          "CPU-second):\n")
    print("| | " + " | ".join(libs)
          + " | engine / index | engine records / index | index / hnswlib |")
    print("|---|" + "---|" * (len(libs) + 3))
    for target in (0.95, 0.99):
        for threads in (1, 2):
            figures = {}
            for lib in libs:
                rows_of = [search[(lib, ef, threads)] for ef in efs if (lib, ef, threads) in search]
                figures[lib] = tuple(at_recall([(r["recall_at_10"], r[key]) for r in rows_of
                                                if key in r], target)
                                     for key in ("qps", "cpu_qps"))

            def cell(f):
                return "/".join("-" if x is None else f"{x:.0f}" for x in f)

            def ratio(a, b):
                fa, fb = figures.get(a, (None, None)), figures.get(b, (None, None))
                return "/".join("-" if x is None or y is None else f"{x / y:.2f}"
                                for x, y in zip(fa, fb))

            print(f"| recall {target}, {threads} thread{'s' if threads > 1 else ''} | "
                  + " | ".join(cell(figures[lib]) for lib in libs)
                  + f" | {ratio('strata-engine', 'strata-index')}"
                  + f" | {ratio('strata-engine-records', 'strata-index')}"
                  + f" | {ratio('strata-index', 'hnswlib')} |")


if __name__ == "__main__":
    main()
