#!/usr/bin/env bash
# Durable single-row inserts into PostgreSQL with synchronous_commit = on (the default), for
# comparison with Strata's durable single-record writes (`cargo bench -p strata-engine --bench
# concurrent_writes`): one row per transaction, a 384-float vector and ~200 bytes of text, at
# 1, 8 and 32 clients. PostgreSQL groups concurrent commits' WAL flushes on its own.
#
# Needs PostgreSQL's initdb, pg_ctl and pgbench on PATH (Debian: apt-get install postgresql,
# then PATH=/usr/lib/postgresql/15/bin:$PATH) and a non-root user. Usage:
#   bench/writes/postgres.sh [seconds per row, default 10]
set -euo pipefail
secs="${1:-10}"
dir="$(mktemp -d)"
trap 'pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
initdb -D "$dir/data" -U bench --auth=trust >/dev/null
pg_ctl -D "$dir/data" -l "$dir/log" -w \
  -o "-k $dir -c listen_addresses='' -c synchronous_commit=on -c fsync=on -c max_connections=100" \
  start >/dev/null
psql -h "$dir" -U bench -d postgres -q <<'SQL'
CREATE TABLE memories (id bigserial PRIMARY KEY, content text NOT NULL, vector real[] NOT NULL);
SQL
# One insert per transaction (autocommit); the vector is built server-side so the client sends
# a statement of comparable size rather than 384 literals.
cat > "$dir/insert.sql" <<'SQL'
INSERT INTO memories (content, vector) VALUES ('memory: the user mentioned that they prefer green tea in the morning, work remotely on Tuesdays and Thursdays, and would like summaries sent by email rather than chat. ' || :client_id, (SELECT array_agg(random()::real) FROM generate_series(1, 384)));
SQL
echo "| clients | inserts/s | mean latency ms |"
echo "|---:|---:|---:|"
for c in 1 8 32; do
  out="$(pgbench -h "$dir" -U bench -n -f "$dir/insert.sql" -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$secs" postgres 2>/dev/null)"
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")"
  lat="$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
  printf '| %s | %.0f | %s |\n' "$c" "$tps" "$lat"
done
