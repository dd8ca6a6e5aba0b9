#!/usr/bin/env python3
"""Tenant A patches records' content (embedded by the server's model) from 2 threads; tenant B
writes single records with their own vectors one after another. Prints B's write latency
p50/p99 alone and under A's patches, and A's patches/s."""
import json, sys, threading, time, urllib.request

URL = sys.argv[1]
OP = sys.argv[2]
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 10

def call(method, path, key, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read() or b"null")

def tenant(tid):
    try:
        call("POST", "/v1/admin/tenants", OP, {"id": tid})
    except urllib.error.HTTPError as e:
        if e.code != 409: raise
    s, v = call("POST", "/v1/admin/keys", OP, {"tenant": tid, "permissions": ["read", "write", "admin"]})
    return v["key"]

def paragraph(i):
    return " ".join(f"entry{i} term{w} concerning subject{(i*7+w)%13}" for w in range(60))

a, b = tenant("pa"), tenant("pb")
call("POST", "/v1/collections", b, {"name": "vec", "dim": 8})
for i in range(20):
    call("POST", "/v1/memories", a, {"id": f"p{i}", "content": paragraph(i)})

def b_writes(secs):
    lat = []
    end = time.time() + secs
    i = 0
    while time.time() < end:
        t = time.perf_counter()
        call("POST", "/v1/memories", b, {"modality": "vec", "vector": [float((i*7+j) % 11) + 1 for j in range(8)], "content": f"n{i}"})
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
        time.sleep(0.01)
    lat.sort()
    return lat[len(lat)//2], lat[int(len(lat)*0.99)], len(lat)

stop = False
patches = [0]
def a_patches(t):
    i = 0
    while not stop:
        rid = f"p{(t*10 + i) % 20}"
        call("PATCH", f"/v1/memories/{rid}", a, {"content": paragraph(1000 + t*100000 + i)})
        patches[0] += 1
        i += 1

alone = b_writes(SECS)
threads = [threading.Thread(target=a_patches, args=(t,)) for t in range(2)]
for th in threads: th.start()
time.sleep(1)
p0 = patches[0]; t0 = time.time()
flooded = b_writes(SECS)
rate = (patches[0] - p0) / (time.time() - t0)
stop = True
for th in threads: th.join()
print(f"B alone p50 {alone[0]:.2f} ms p99 {alone[1]:.2f} ms ({alone[2]} writes); "
      f"under A's patches p50 {flooded[0]:.2f} ms p99 {flooded[1]:.2f} ms ({flooded[2]} writes); "
      f"A {rate:.1f} patches/s")
