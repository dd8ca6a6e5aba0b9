#!/usr/bin/env python3
"""Tenant A posts 1,000-record batches of ~15 KB metadata each in a loop; tenant B writes one
record every 10 ms: B's write latency alone and under A's batches. With a fourth argument
`overwrite`, A writes the same 1,000 ids every time (each batch replaces the last)."""
import json, sys, threading, time, urllib.request
URL, OP, SECS = sys.argv[1], sys.argv[2], float(sys.argv[3])
OVERWRITE = len(sys.argv) > 4 and sys.argv[4] == "overwrite"
def call(method, path, key, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method,
        headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read() or b"null")
def tenant(t):
    call("POST", "/v1/admin/tenants", OP, {"id": t})
    return call("POST", "/v1/admin/keys", OP, {"tenant": t, "permissions": ["read", "write"]})[1]["key"]
a, b = tenant("ba"), tenant("bb")
md = {f"k{j}": "v"*240 for j in range(63)}
stop = False; batches = [0, 0.0]
def flood():
    n = 0
    while not stop:
        n += 1
        body = json.dumps({"records": [{"id": f"m{0 if OVERWRITE else n}-{i}", "content": f"meta {n}", "metadata": md} for i in range(1000)]}).encode()
        t = time.perf_counter(); call("POST", "/v1/memories", a, raw=body); batches[0] += 1; batches[1] += time.perf_counter() - t
def victim(secs):
    lat = []; end = time.time() + secs; i = 0
    while time.time() < end:
        t = time.perf_counter(); call("POST", "/v1/memories", b, {"content": f"note {i}"}); lat.append((time.perf_counter()-t)*1000); i += 1; time.sleep(0.01)
    lat.sort(); return lat[len(lat)//2], lat[int(len(lat)*0.99)], lat[-1]
alone = victim(SECS)
th = threading.Thread(target=flood); th.start(); time.sleep(1)
under = victim(SECS); stop = True; th.join()
print(f"victim alone p50/p99/max {alone[0]:.1f}/{alone[1]:.1f}/{alone[2]:.1f} ms; under 1000x15KB batches {under[0]:.1f}/{under[1]:.1f}/{under[2]:.1f} ms; batch {batches[1]/max(batches[0],1)*1000:.0f} ms each")
