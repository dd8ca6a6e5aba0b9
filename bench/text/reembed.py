#!/usr/bin/env python3
"""A re-embed over HTTP: the dry run's estimate against the real duration, and another
tenant's query-only search latency before and during it.

Starts the given `strata` binary with the built-in embedder on a temporary data directory.
Tenant `bulk` gets N text records with 8-dimensional client vectors in a collection without an
embedder; tenant `other` gets 200 text-only records in its `text` collection (embedded). Then:
`other`'s search latency alone (Q searches, one at a time); `bulk`'s dry run; the re-embed,
while `other` keeps searching; the re-embed's wall time from the start to `done`. Standard
library only.

    python3 bench/text/reembed.py --binary target/debug/strata --records 3000
"""

import argparse
import os
import random
import threading
import time

from strata_local import OPERATOR_KEY, call, serve

WORDS = (
    "alice bob carol dave coffee tea milk oat printer ticket floor meeting report friday "
    "budget salary holiday flight hotel paris berlin invoice server restart backup disk "
    "password reset customer order refund shipping delay project deadline review design"
).split()




def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))


def tenant(url, name):
    call(url, OPERATOR_KEY, "/v1/admin/tenants", {"id": name})
    # A re-embed reaches every principal's records: it needs `all_principals` too.
    permissions = ["read", "write", "admin", "all_principals"]
    return call(url, OPERATOR_KEY, "/v1/admin/keys",
                {"tenant": name, "permissions": permissions})["key"]


def searches(url, key, rng, n, out, stop=None):
    for _ in range(n):
        if stop is not None and stop.is_set():
            return
        t = time.perf_counter()
        call(url, key, "/v1/search", {"query": sentence(rng), "k": 10})
        out.append((time.perf_counter() - t) * 1000)


def pct(lat, p):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model-dir", default=os.path.abspath("models/all-MiniLM-L6-v2"))
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    rng = random.Random(11)
    with serve(args.binary, args.model_dir, embedder=True) as url:
        bulk, other = tenant(url, "bulk"), tenant(url, "other")
        call(url, bulk, "/v1/collections", {"name": "notes", "dim": 8})
        for i in range(0, args.records, 1000):
            n = min(1000, args.records - i)
            call(url, bulk, "/v1/memories", {"records": [
                {"modality": "notes", "content": sentence(rng), "vector": [0.1] * 8}
                for _ in range(n)]})
        call(url, other, "/v1/memories",
             {"records": [{"content": sentence(rng)} for _ in range(200)]})
        call(url, other, "/v1/search", {"query": "warm up", "k": 10})
        alone = []
        searches(url, other, rng, args.queries, alone)

        plan = call(url, bulk, "/v1/collections/notes/reembed", {"dry_run": True})
        during, stop = [], threading.Event()
        start = time.perf_counter()
        call(url, bulk, "/v1/collections/notes/reembed", {})
        worker = threading.Thread(target=searches,
                                  args=(url, other, rng, 10**9, during, stop))
        worker.start()
        while call(url, bulk, "/v1/collections/notes/reembed")["state"] == "running":
            time.sleep(0.2)
        took = time.perf_counter() - start
        stop.set()
        worker.join()
        status = call(url, bulk, "/v1/collections/notes/reembed")
        print(f"re-embed of {plan['records']} records ({plan['text_bytes']} bytes): "
              f"estimated {plan['estimated_seconds']:.1f} s "
              f"(measured {plan['measured_texts_per_sec']:.0f} texts/s on a sample), "
              f"took {took:.1f} s; state {status['state']}")
        print(f"other tenant's query-only search: alone p50 {pct(alone, 50):.1f} ms, "
              f"p99 {pct(alone, 99):.1f} ms ({len(alone)}); during the re-embed "
              f"p50 {pct(during, 50):.1f} ms, p99 {pct(during, 99):.1f} ms ({len(during)})")


if __name__ == "__main__":
    main()
