#!/usr/bin/env python3
"""Search and count with filters of many range clauses on a path that holds far more values
than records: 300 records, each with an array of 700 objects {"a": <int>, "b": <str>}, and
`$or`s of 1, 50 and 500 `$lt` clauses on `f.a` (every record matches), then 300 clauses of
`$gt`+`$lt` that match nothing. Usage: range_clauses.py URL OPERATOR_KEY (a fresh server)."""
import json, random, sys, time, urllib.request

URL, OP = sys.argv[1], sys.argv[2]


def call(method, path, key, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
        headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


call("POST", "/v1/admin/tenants", OP, {"id": "rp"})
key = call("POST", "/v1/admin/keys", OP, {"tenant": "rp", "permissions": ["read", "write"]})["key"]
rng = random.Random(5)
for b in range(3):
    recs = [{"id": f"r{b}-{i}", "content": f"note {i}", "metadata": {"f": [
        {"a": rng.randrange(100000), "b": f"s{rng.randrange(10)}"} for _ in range(700)]}}
        for i in range(100)]
    call("POST", "/v1/memories", key, {"records": recs})


def timed(name, flt):
    t = time.perf_counter()
    c = call("POST", "/v1/memories/count", key, {"filter": flt})["count"]
    tc = time.perf_counter() - t
    t = time.perf_counter()
    h = call("POST", "/v1/search", key,
             {"query": "note", "k": 1000, "mode": "text", "include": [], "filter": flt})["hits"]
    ts = time.perf_counter() - t
    print(f"{name}: count {c} in {tc:.2f} s; search {len(h)} hits in {ts:.2f} s")


for n in (1, 50, 500):
    timed(f"{n} $lt clauses", {"$or": [{"f.a": {"$lt": 300000 + j}} for j in range(n)]})
timed("300 $gt+$lt clauses, no match",
      {"$or": [{"f.a": {"$gt": 200000 + j, "$lt": 300000}} for j in range(300)]})
