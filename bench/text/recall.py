#!/usr/bin/env python3
"""Recall@5 and @10 on the conversational-memory set (bench/text/recall_set.json) over HTTP.

Starts the given `strata` binary with the built-in embedder on a temporary data directory. For
each analyzer (`standard`, `english`) it creates a collection, writes the set's memories as
text, re-embeds the collection with the server's model (`POST /v1/collections/{name}/reembed`),
and asks every question as a query-only search (k = 10) in each mode: BM25 alone (`text`),
`vector` alone, and `hybrid` with RRF (k = 60) or weighted normalised fusion at a few alphas.
Every configuration is measured twice: tenant-wide (all 24 people's memories are candidates)
and scoped to the question's user (memories carry `user_tokens: ["u:<user>"]`, the question
searches with that token, as an agent serving one user does). Finally the server's defaults:
the questions against the tenant's `text` collection with no `mode` or `fusion` given.

For the defaults it also measures whether `min_score` can tell "no relevant memory": the
top-1 score of every real question beside the top-1 score of the set's `off_topic` questions
(about domains its memories never mention, each asked tenant-wide and scoped to one of the
set's users in turn). It prints their median and 10th percentile (real) or 90th percentile and
maximum (off-topic), and the share of real questions whose top-1 score is above every
off-topic one. `--defaults-only` skips the analyzer and fusion grid. Standard library only;
recall does not depend on the build profile.

    python3 bench/text/recall.py --binary target/debug/strata
"""

import argparse
import json
import os
import statistics
import time

from strata_local import OPERATOR_KEY, call, serve

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = [
    ("text (BM25)", {"mode": "text"}),
    ("vector", {"mode": "vector"}),
    ("hybrid RRF k=60", {"mode": "hybrid", "fusion": {"method": "rrf", "k": 60}}),
] + [
    (f"hybrid weighted alpha={a}", {"mode": "hybrid", "fusion": {"method": "weighted", "alpha": a}})
    for a in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
]



def percentile(xs, p):
    """Linear interpolation between the closest ranks, as numpy's default."""
    xs = sorted(xs)
    at = (len(xs) - 1) * p
    lo, hi = int(at), min(int(at) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)


def top_score(url, key, question, user, scoped):
    """The default search's best score for one question (0 when it has no hit)."""
    scope = {"user_tokens": [f"u:{user}"]} if scoped else {"user_tokens": ["*"]}
    hits = call(url, key, "/v1/search", {"query": question, "k": 10, "include": [], **scope})["hits"]
    return hits[0]["score"] if hits else 0.0


def separation(url, key, questions, off_topic, users):
    print()
    print("| default search | top-1 score: real median | real p10 | off-topic median | "
          "off-topic p90 | off-topic max | real above every off-topic |")
    print("|---|---|---|---|---|---|---|")
    for scoped in (False, True):
        real = [top_score(url, key, q["question"], q["user"], scoped) for q in questions]
        off = [top_score(url, key, text, users[i % len(users)], scoped)
               for i, text in enumerate(off_topic)]
        above = sum(s > max(off) for s in real) / len(real)
        label = "per user" if scoped else "tenant-wide"
        print(f"| {label} | {statistics.median(real):.3f} | {percentile(real, 0.1):.3f} | "
              f"{statistics.median(off):.3f} | {percentile(off, 0.9):.3f} | {max(off):.3f} | "
              f"{above:.2f} |", flush=True)


def recall(url, key, questions, extra, prefix="", scoped=False):
    at5 = at10 = 0
    for q in questions:
        scope = {"user_tokens": [f"u:{q['user']}"]} if scoped else {"user_tokens": ["*"]}
        body = {"query": q["question"], "k": 10, **extra, **scope}
        hits = call(url, key, "/v1/search", body)["hits"]
        ids = [h["id"].removeprefix(prefix) for h in hits]
        rel = set(q["relevant"])
        at5 += bool(rel & set(ids[:5]))
        at10 += bool(rel & set(ids[:10]))
    return at5 / len(questions), at10 / len(questions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model-dir", default=os.path.abspath("models/all-MiniLM-L6-v2"))
    ap.add_argument("--set", default=os.path.join(HERE, "recall_set.json"))
    ap.add_argument("--defaults-only", action="store_true",
                    help="only the server's defaults: recall and the top-1 score separation")
    args = ap.parse_args()
    data = json.load(open(args.set))
    memories, questions = data["memories"], data["questions"]
    with serve(args.binary, args.model_dir, embedder=True) as url:
        call(url, OPERATOR_KEY, "/v1/admin/tenants", {"id": "bench"})
        key = call(url, OPERATOR_KEY, "/v1/admin/keys",
                   {"tenant": "bench",
                    "permissions": ["read", "write", "admin", "all_principals"]})["key"]
        print(f"{len(memories)} memories, {len(questions)} questions, k = 10")
        print("| analyzer | search | tenant-wide recall@5 | @10 | per-user recall@5 | @10 |")
        print("|---|---|---|---|---|---|")
        for analyzer in () if args.defaults_only else ("standard", "english"):
            name = f"set-{analyzer}"
            call(url, key, "/v1/collections", {"name": name, "dim": 384, "analyzer": analyzer})
            # Record ids are per tenant: each collection gets its own.
            records = [{"id": f"{analyzer}-{m['id']}", "content": m["content"], "modality": name,
                        "user_tokens": [f"u:{m['user']}"]} for m in memories]
            call(url, key, "/v1/memories", {"records": records})
            call(url, key, f"/v1/collections/{name}/reembed", {})
            while call(url, key, f"/v1/collections/{name}/reembed")["state"] == "running":
                time.sleep(0.1)
            for label, extra in CONFIGS:
                extra = {**extra, "modality": name}
                r5, r10 = recall(url, key, questions, extra, f"{analyzer}-")
                u5, u10 = recall(url, key, questions, extra, f"{analyzer}-", scoped=True)
                print(f"| {analyzer} | {label} | {r5:.2f} | {r10:.2f} | {u5:.2f} | {u10:.2f} |",
                      flush=True)
        # The defaults: the `text` collection, a query and nothing else.
        call(url, key, "/v1/memories", {"records": [
            {"id": m["id"], "content": m["content"], "user_tokens": [f"u:{m['user']}"]}
            for m in memories]})
        r5, r10 = recall(url, key, questions, {})
        u5, u10 = recall(url, key, questions, {}, scoped=True)
        print(f"| `text` collection | server default | {r5:.2f} | {r10:.2f} | {u5:.2f} | {u10:.2f} |")
        separation(url, key, questions, data["off_topic"], sorted({m["user"] for m in memories}))


if __name__ == "__main__":
    main()
