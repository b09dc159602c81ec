#!/usr/bin/env bash
# The consistency harness: builds, then runs target/debug/jepsen as root
# (it makes network namespaces and iptables rules, and removes them after).
#   ./scripts/jepsen.sh --workload bank --nemesis partition,kill --time-limit 300
#   ./scripts/jepsen.sh --ci      # the short pass CI runs
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Same targets as the tests build, so after ./scripts/test.sh nothing recompiles.
cargo build --workspace --all-targets
bin="${CARGO_TARGET_DIR:-target}/debug/jepsen"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ "${1:-}" != "--ci" ]; then
  exec $SUDO "$bin" "$@"
fi
# Safe mode under kills, pauses and partitions, every workload: any INVALID
# checker fails (exit 1), and so does one with nothing to check or a fault
# never applied (exit 3). A checker whose search ran out of budget says
# "unknown" (no violation found, none proven absent); that passes with a
# WARNING line, so a slow machine does not fail CI. Read the line: it is
# not the same as valid.
$SUDO "$bin" --workload register,bank,feed,set,revocation --nemesis partition,kill,pause --time-limit 60 \
  --concurrency 15 --out jepsen-results/ci-safe
# Checking the checker: reads without the linearizable barrier, under
# partitions, must be caught as not linearizable.
$SUDO "$bin" --workload register --nemesis partition --nemesis-interval 3 --time-limit 40 \
  --unsafe-stale-reads --expect-invalid --out jepsen-results/ci-unsafe
