#!/usr/bin/env bash
# Where a node's CPU goes, by layer, under load: a fresh `strongbox dev`
# cluster from BINDIR, one strongbox-bench load, and `perf record` with
# DWARF call graphs on the leader and on one follower, PERF_S seconds each,
# in the middle of the load. Prints, per node, the share of its samples
# under each layer (apply, the memtable write inside apply, log append,
# gRPC/HTTP/2 with the kernel beneath it...) and the leaf symbols of each.
#
#   benches/profile.sh BINDIR [strongbox-bench args...]
#   benches/profile.sh target/debug --workload puts --clients 64
#
# Needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 1.
set -euo pipefail
BIN=$1; shift
PERF_S=${PERF_S:-4}
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
W=$(mktemp -d /tmp/strongbox-profile.XXXXXX)
cleanup() { kill -INT "${DEV:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT INT TERM
STRONGBOX_PROFILE="$W/profile.toml" "$BIN/strongbox" dev --dir "$W/sb" --base-port 7600 >"$W/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 1 120); do grep -q "cluster is up" "$W/dev.log" && break; sleep 0.5; done
grep -q "cluster is up" "$W/dev.log" || { cat "$W/dev.log"; exit 1; }
"$BIN/strongbox-bench" --target strongbox --endpoints 127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603 \
  --ca "$W/sb/ca.pem" --token-file "$W/token" --markdown --duration-s $((2 * PERF_S + 8)) "$@" >"$W/bench.out" 2>&1 &
BENCH=$!
sleep 7
# The leader, from each node's /metrics (ports 7621-7623), and one follower.
leader=1
for n in 1 2 3; do
  curl -s "http://127.0.0.1:762$n/metrics" | grep -q '^strongbox_raft_is_leader 1' && leader=$n
done
follower=$(( leader % 3 + 1 ))
for n in $leader $follower; do
  pid=$(pgrep -f "strongbox serve --config $W/sb/node$n")
  perf record -q -F 299 --call-graph dwarf,16384 -p "$pid" -o "$W/node$n.perf" -- sleep "$PERF_S" >/dev/null 2>&1
done
wait $BENCH
tail -1 "$W/bench.out"
for n in $leader $follower; do
  echo "== node$n ($([ $n = $leader ] && echo leader || echo follower))"
  perf script -i "$W/node$n.perf" -F ip,sym 2>/dev/null | python3 "$(dirname "$0")/perf_layers.py"
done
