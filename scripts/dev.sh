#!/usr/bin/env bash
# One command: build strongbox and start a three-node TLS cluster on 127.0.0.1.
# Extra arguments go to `strongbox dev` (e.g. --fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --bin strongbox
exec "${CARGO_TARGET_DIR:-target}/debug/strongbox" dev "$@"
