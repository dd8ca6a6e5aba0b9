#!/usr/bin/env bash
# Side-by-side ANN comparison on the same seeded clustered data set: Strata end to end
# (Engine::search, "strata-engine"), Strata's HNSW index alone ("strata-index"),
# hnswlib and faiss HNSW. Usage: bench/ann/compare.sh [N] [DIM]   (defaults 100000 128)
# BEFORE=DIR adds "-before" columns: DIR holds `ann_bench` and `engine_ann_bench` built from an
# earlier commit, run on the same files in the same session (a before/after under one load);
# with ENGINE=0 only `ann_bench` is needed.
# ENGINE=0 leaves out the engine end to end (and its release build): the index against its
# peers only. BUILD_THREADS (default 2, as the peers) is the index's `insert_batch` threads.
# EFS: the beam widths searched; a fine grid around recall 0.99 (e.g. 16,24,32,48,64,96)
# makes the interpolated QPS at equal recall less dependent on where the grid points fall.
# PEERS=0 leaves out hnswlib and faiss (and their virtual environment): Strata's columns only.
# The engine runs twice per setting: "strata-engine" with `include: []` (ids and scores, what
# the index and the peers return) and "strata-engine-records" with the default include.
# Prints JSON lines on stderr and one markdown table on stdout.
set -euo pipefail

N="${1:-100000}"
DIM="${2:-128}"
EFS="${EFS:-16,32,64,128}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="$HERE/data"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# (a) Build and run Strata's side; it also writes the data set and exact ground truth.
cargo build --release -p strata-index --example ann_bench --manifest-path "$ROOT/Cargo.toml"
ENGINE="${ENGINE:-1}"
if [ "$ENGINE" != 0 ]; then
    cargo build --release -p strata-engine --example engine_ann_bench --manifest-path "$ROOT/Cargo.toml"
fi
mkdir -p "$DATA"
"$CARGO_TARGET_DIR/release/examples/ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" --out "$DATA" \
    --build-threads "${BUILD_THREADS:-2}" > "$DATA/strata.jsonl"

# (a') The engine end to end on the same files: durable puts into one tenant, then searches.
ENGINE_ROWS=()
if [ "$ENGINE" != 0 ]; then
    "$CARGO_TARGET_DIR/release/examples/engine_ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" \
        --data "$DATA" > "$DATA/strata-engine.jsonl"
    ENGINE_ROWS=("$DATA/strata-engine.jsonl")
fi

# (a'') The earlier build's binaries, when given, on the same files.
EXTRA=()
if [ -n "${BEFORE:-}" ]; then
    # Without `ann_bench` in DIR (an engine-only change) the index-before column is left out.
    if [ -x "$BEFORE/ann_bench" ]; then
        "$BEFORE/ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" \
            | sed -e 's/"lib":"strata-usearch"/"lib":"strata-index-before"/' \
                  -e 's/"lib":"strata-index"/"lib":"strata-index-before"/' > "$DATA/before.jsonl"
        EXTRA=("$DATA/before.jsonl")
    fi
    if [ "$ENGINE" != 0 ]; then
        "$BEFORE/engine_ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" --data "$DATA" \
            | sed -e 's/"lib":"strata-engine"/"lib":"strata-engine-before"/' \
                  -e 's/"lib":"strata-engine-records"/"lib":"strata-engine-records-before"/' \
            > "$DATA/before-engine.jsonl"
        EXTRA+=("$DATA/before-engine.jsonl")
    fi
fi

# (b) Python peers in a local virtual environment (numpy alone with PEERS=0).
if [ ! -x "$HERE/.venv/bin/python" ]; then
    python3 -m venv "$HERE/.venv"
fi
if [ "${PEERS:-1}" != 0 ]; then
    "$HERE/.venv/bin/pip" install -q numpy hnswlib faiss-cpu
else
    "$HERE/.venv/bin/pip" install -q numpy
fi

# (c, d) Run the peers on the same files and print the table.
"$HERE/.venv/bin/python" "$HERE/compare.py" "$DATA" "$DATA/strata.jsonl" "$EFS" \
    ${ENGINE_ROWS[@]+"${ENGINE_ROWS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
