#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, doc and end-to-end tests.
# Usage: scripts/test.sh            (from anywhere; needs only the Rust toolchain)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked --all-features
