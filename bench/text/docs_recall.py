#!/usr/bin/env python3
"""Recall@1, @5 and @10 on real documentation text, over HTTP, with the built-in embedder.

The corpus is Python's own help texts (`pydoc_data.topics`, shipped with the interpreter that
runs this script), cut into paragraph-sized chunks (about 2,000 of 150 to 3,000 characters with
Python 3.11). `docs_questions.json` holds 40 questions written in other words than their
answers; a chunk is relevant when it holds the question's answer passage (whitespace folded).
The chunks are written as text into the `text` collection (the server embeds them), then every
question is asked as a query-only search (k = 10) in `vector`, `text` and the default `hybrid`
mode, and with weighted fusion at a few alphas. A question whose answer no chunk holds (another
Python version's help texts) is left out, and the count is printed.

    python3 bench/text/docs_recall.py --binary target/release/strata
"""

import argparse
import json
import os
import re
import time

from pydoc_data.topics import topics
from strata_local import OPERATOR_KEY, call, serve

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = [
    ("vector", {"mode": "vector"}),
    ("text (BM25)", {"mode": "text"}),
    ("hybrid, server default", {}),
] + [
    (f"hybrid weighted alpha={a}", {"mode": "hybrid", "fusion": {"method": "weighted", "alpha": a}})
    for a in (0.5, 0.8, 0.9)
]


def chunks():
    """Paragraphs of each help topic, short ones joined up to 150 characters, long ones cut at
    3,000."""
    out = []
    for topic in sorted(topics):
        buf, n = "", 0
        for p in (p.strip() for p in re.split(r"\n\s*\n", topics[topic])):
            if not p or set(p) <= set("*=-~ "):
                continue
            p = re.sub(r"[ \t]+", " ", p)
            if len(buf) + len(p) < 150:
                buf = (buf + "\n" + p).strip()
                continue
            if buf:
                out.append((f"{topic}-{n}", buf))
                n += 1
            buf = p
            while len(buf) > 3000:
                out.append((f"{topic}-{n}", buf[:3000]))
                n += 1
                buf = buf[3000:]
        if buf:
            out.append((f"{topic}-{n}", buf))
    return out


def folded(s):
    return re.sub(r"\s+", " ", s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model-dir", default=os.path.abspath("models/all-MiniLM-L6-v2"))
    args = ap.parse_args()
    corpus = chunks()
    questions = json.load(open(os.path.join(HERE, "docs_questions.json")))
    for q in questions:
        answer = folded(q["answer"])
        q["relevant"] = {cid for cid, text in corpus if answer in folded(text)}
    asked = [q for q in questions if q["relevant"]]
    with serve(args.binary, args.model_dir, embedder=True) as url:
        call(url, OPERATOR_KEY, "/v1/admin/tenants", {"id": "docs"})
        key = call(url, OPERATOR_KEY, "/v1/admin/keys",
                   {"tenant": "docs", "permissions": ["read", "write"]})["key"]
        started = time.monotonic()
        for i in range(0, len(corpus), 100):
            records = [{"id": cid, "content": text} for cid, text in corpus[i:i + 100]]
            call(url, key, "/v1/memories", {"records": records})
        took = time.monotonic() - started
        print(f"{len(corpus)} chunks written in {took:.1f} s ({len(corpus) / took:.0f}/s, "
              f"embedded by the server); {len(asked)} of {len(questions)} questions asked, k = 10")
        print("| search | recall@1 | @5 | @10 |")
        print("|---|---|---|---|")
        for label, extra in CONFIGS:
            at = [0, 0, 0]
            for q in asked:
                body = {"query": q["question"], "k": 10, "include": [], **extra}
                ids = [h["id"] for h in call(url, key, "/v1/search", body)["hits"]]
                rank = next((i for i, x in enumerate(ids) if x in q["relevant"]), None)
                if rank is not None:
                    at[0] += rank < 1
                    at[1] += rank < 5
                    at[2] += 1
            n = len(asked)
            print(f"| {label} | {at[0] / n:.3f} | {at[1] / n:.3f} | {at[2] / n:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
