#!/usr/bin/env bash
# Side-by-side ANN comparison on the same seeded clustered data set: Strata end to end
# (Engine::search, "strata-engine"), Strata's HNSW index alone (usearch, "strata-usearch"),
# hnswlib and faiss HNSW. Usage: bench/ann/compare.sh [N] [DIM]   (defaults 100000 128)
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
cargo build --release -p strata-engine --example engine_ann_bench --manifest-path "$ROOT/Cargo.toml"
mkdir -p "$DATA"
"$CARGO_TARGET_DIR/release/examples/ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" --out "$DATA" \
    > "$DATA/strata.jsonl"

# (a') The engine end to end on the same files: durable puts into one tenant, then searches.
"$CARGO_TARGET_DIR/release/examples/engine_ann_bench" --n "$N" --dim "$DIM" --efs "$EFS" \
    --data "$DATA" > "$DATA/strata-engine.jsonl"

# (b) Python peers in a local virtual environment.
if [ ! -x "$HERE/.venv/bin/python" ]; then
    python3 -m venv "$HERE/.venv"
fi
"$HERE/.venv/bin/pip" install -q numpy hnswlib faiss-cpu

# (c, d) Run the peers on the same files and print the table.
"$HERE/.venv/bin/python" "$HERE/compare.py" "$DATA" "$DATA/strata.jsonl" "$EFS" \
    "$DATA/strata-engine.jsonl"
