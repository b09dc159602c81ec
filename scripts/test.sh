#!/usr/bin/env bash
# One command: every test of the workspace, including the real 3-node
# cluster tests (processes, sockets, TLS, kill -9).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --no-fail-fast "$@"
