#!/usr/bin/env bash
# Builds the dashboard and runs its browser test against a real `streamcube serve`.
# Usage: scripts/test-dashboard.sh   (from anywhere; needs Node 20+, npm, the Rust toolchain, and
# Debian's Chromium, which it installs when missing). Every step has a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH

step() { printf '\n== %s\n' "$*"; }

if [[ ! -x "$CHROMIUM_PATH" ]]; then
    step "installing Chromium (Debian package)"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo -n); fi
    timeout 300 "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" \
        apt-get install -y -qq --no-install-recommends chromium
fi
if [[ ! -x "$CHROMIUM_PATH" ]]; then
    echo "error: no Chromium at $CHROMIUM_PATH after installing it; the browser test cannot run" >&2
    exit 1
fi

step "npm ci && npm run build (dashboard/)"
(
    cd dashboard
    timeout 300 npm ci --no-audit --no-fund
    timeout 120 npm run build
)

step "cargo build -p streamcube (debug)"
timeout 1800 cargo build -p streamcube --locked

step "browser test"
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cd dashboard
STREAMCUBE_BIN="${STREAMCUBE_BIN:-$target_dir/debug/streamcube}" \
    timeout 300 node --test --test-timeout=120000 tests/
