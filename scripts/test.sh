#!/usr/bin/env bash
# One command: every test of the workspace, including the real 3-node
# cluster tests (processes, sockets, TLS, kill -9).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --no-fail-fast "$@"
# The consistency harness needs root (network namespaces, iptables).
if [ "$(id -u)" -eq 0 ]; then
  ./scripts/jepsen.sh --ci
else
  echo "skipping the consistency harness: it needs root (run: sudo ./scripts/jepsen.sh --ci)"
fi
