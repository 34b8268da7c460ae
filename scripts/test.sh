#!/usr/bin/env bash
# Runs every test of the project:
#   1. the Rust workspace: unit, property, doc and end-to-end tests, the AWS adapters against a
#      local AWS emulator (moto_server on 127.0.0.1, installed from PyPI on first run);
#   2. the SAM template: cfn-lint before and after the SAM transform, and its property tests;
#   3. the dashboard in Chromium against a real `streamcube serve`.
# Usage: scripts/test.sh     (from anywhere; needs the Rust toolchain, Python 3, Node 20 with npm,
#                             and Debian's Chromium, which the dashboard step installs if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

# TLS goes through rustls only: a crate bringing OpenSSL or native-tls back (a default feature of
# an HTTP client, say) would make the Lambda builds depend on the system's OpenSSL.
for banned in openssl openssl-sys native-tls; do
    if grep -qx "name = \"$banned\"" Cargo.lock; then
        echo "Cargo.lock holds $banned; TLS must come from rustls (cargo tree -i $banned shows who pulls it in)" >&2
        exit 1
    fi
done

# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
cargo test --workspace --locked --all-features
bash scripts/check-template.sh
bash scripts/test-dashboard.sh
