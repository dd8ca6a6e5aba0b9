#!/usr/bin/env python3
"""Text-only ingest and search over HTTP, with or without the built-in embedder.

Starts the given `strata` binary on a temporary data directory, writes N text-only records
(batches of B) into the `text` collection of one tenant, then runs Q query-only searches one
at a time, and prints records/s and search latency percentiles. Standard library only.

    python3 bench/text/ingest.py --binary target/release/strata --embedder on
    python3 bench/text/ingest.py --binary target/release/strata --embedder off
"""

import argparse
import os
import random
import time

from strata_local import OPERATOR_KEY, call, serve

WORDS = (
    "alice bob carol dave coffee tea milk oat printer ticket floor meeting report friday "
    "budget salary holiday flight hotel paris berlin invoice server restart backup disk "
    "password reset customer order refund shipping delay project deadline review design"
).split()




def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--embedder", choices=["on", "off"], required=True)
    ap.add_argument("--model-dir", default=os.path.abspath("models/all-MiniLM-L6-v2"))
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--mode", choices=["text", "hybrid"], help="search mode (default: the server's)")
    args = ap.parse_args()
    rng = random.Random(7)
    with serve(args.binary, args.model_dir, embedder=args.embedder == "on") as url:
        call(url, OPERATOR_KEY, "/v1/admin/tenants", {"id": "bench"})
        key = call(url, OPERATOR_KEY, "/v1/admin/keys",
                   {"tenant": "bench", "permissions": ["read", "write"]})["key"]
        records = [{"content": sentence(rng)} for _ in range(args.records)]
        start = time.perf_counter()
        for i in range(0, len(records), args.batch):
            call(url, key, "/v1/memories", {"records": records[i:i + args.batch]})
        ingest = time.perf_counter() - start
        # The first search loads the tenant's indexes; not counted.
        first = time.perf_counter()
        warm = call(url, key, "/v1/search", {"query": sentence(rng), "k": 10})
        first = time.perf_counter() - first
        lat = []
        for _ in range(args.queries):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
            t = time.perf_counter()
            body = {"query": q, "k": 10}
            if args.mode:
                body["mode"] = args.mode
            call(url, key, "/v1/search", body)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
        print(f"embedder={args.embedder} mode={args.mode or warm['mode']} records={args.records} "
              f"batch={args.batch}: ingest {args.records / ingest:.0f} records/s "
              f"({ingest:.1f} s); first search {first * 1000:.0f} ms; "
              f"search p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms over {args.queries}")


if __name__ == "__main__":
    main()
