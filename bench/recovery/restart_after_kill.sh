#!/usr/bin/env bash
# The HTTP server's start after a SIGKILL on a large data directory: how long until /readyz
# answers, and what the server's metrics say of the storage file's open.
#
# Usage: bench/recovery/restart_after_kill.sh DATA_DIR [FAST_RECOVERY_FROM_BYTES] [PORT]
#
# DATA_DIR is copied (it is left as it was), e.g. one that
# `cargo run --release -p strata-engine --example recovery_bench -- --dir DATA_DIR --mb 1024`
# filled. The server (target/release/strata, or $STRATA_BIN) runs on the copy with
# `[engine] fast_recovery_from_bytes` set to the second argument (default: the built-in
# 536870912); it creates a tenant, writes 30 records over HTTP (each acknowledged once durable),
# is killed with SIGKILL, and is started again with the same settings.
set -euo pipefail
src=${1:?usage: $0 DATA_DIR [FAST_RECOVERY_FROM_BYTES] [PORT]}
setting=${2:-536870912}
port=${3:-18990}
bin=${STRATA_BIN:-target/release/strata}
work=$(mktemp -d)
trap 'kill -9 ${pid:-0} 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$src" "$work/data"

export STRATA_OPERATOR_KEY=sk_restart_bench_operator_key_0123456789
export STRATA__SERVER__DATA_DIR="$work/data"
export STRATA__SERVER__LISTEN="127.0.0.1:$port"
export STRATA__ENGINE__FAST_RECOVERY_FROM_BYTES="$setting"
url="http://127.0.0.1:$port"
op="Authorization: Bearer $STRATA_OPERATOR_KEY"
json='content-type: application/json'
wait_ready() { until curl -sf "$url/readyz" >/dev/null; do sleep 0.02; done; }

"$bin" serve >"$work/first.log" 2>&1 &
pid=$!
wait_ready
curl -sf -X POST "$url/v1/admin/tenants" -H "$op" -H "$json" -d '{"id":"restart-bench"}' >/dev/null
key=$(curl -sf -X POST "$url/v1/admin/keys" -H "$op" -H "$json" \
    -d '{"tenant":"restart-bench","permissions":["read","write"]}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
vector=$(python3 -c 'import json; print(json.dumps([0.01 * i for i in range(384)]))')
for i in $(seq 1 30); do
    curl -sf -X POST "$url/v1/memories" -H "Authorization: Bearer $key" -H "$json" \
        -d "{\"id\":\"m$i\",\"content\":\"note $i\",\"vector\":$vector}" >/dev/null
done
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true

started=$(date +%s.%N)
"$bin" serve >"$work/second.log" 2>&1 &
pid=$!
wait_ready
ready=$(date +%s.%N)
echo "fast_recovery_from_bytes $setting: ready $(python3 -c "print(f'{$ready - $started:.2f}')") s after the restart began"
curl -sf "$url/metrics" -H "$op" | grep -E '^strata_storage_open'
status=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/memories/m30" -H "Authorization: Bearer $key")
echo "the last acknowledged write: $status"
