#!/usr/bin/env bash
# A/B runs of two builds on this machine: a fresh `strongbox dev` cluster
# from the binaries in BINDIR, then each named load for DUR seconds (12 by
# default). Alternate two BINDIRs run after run: this machine's speed
# drifts by a fifth within an hour, so only neighbouring runs compare.
# Swap which one goes first from pair to pair: the second run of a pair
# has been up to 20% faster with the same build (BENCHMARKS.md).
#
#   benches/ab.sh BINDIR TAG [t1|t1000|puts]...
#     t1     unbatched transfers, 64 clients
#     t1000  batches of 1,000 transfers, 16 clients
#     puts   secret puts, 64 clients (puts16, puts1: 16 and 1 client)
#   EP=127.0.0.1:7601 benches/ab.sh ...   # every client on one node
#   ROUTE=leader benches/ab.sh ...        # clients follow the leader hints
#                                         # (spread, i mod 3, by default:
#                                         # older builds have no --route)
#
# Run benches/warm_memory.sh once on a new VM first (it says why).
#
# Each line ends with the three nodes' CPU per acknowledged op (user +
# system, from /proc): steadier than throughput on a machine whose speed
# drifts, because it does not depend on how long a request waits for a
# core. The CPU covers warm-up and measurement, the ops are the measured
# rate times both (the load is closed-loop and steady by then).
set -u
BIN=$1; TAG=$2; shift 2
pkill -f "strongbox serve"; pkill -f "strongbox dev"; sleep 1
W=$(mktemp -d /tmp/strongbox-ab.XXXXXX)
STRONGBOX_PROFILE="$W/profile.toml" "$BIN/strongbox" dev --dir "$W/sb" --base-port 7600 >"$W/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 1 120); do grep -q "cluster is up" "$W/dev.log" && break; sleep 0.5; done
. "$(dirname "$0")/cpu.sh"
AT=(--target strongbox --endpoints "${EP:-127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603}"
  --ca "$W/sb/ca.pem" --token-file "$W/token" --markdown --duration-s "${DUR:-12}"
  $([ -n "${ROUTE:-}" ] && echo --route "$ROUTE"))
for l in "$@"; do
  case $l in
    t1) args=(--workload transfers --batch 1 --clients 64);;
    t1000) args=(--workload transfers --batch 1000 --clients 16);;
    puts) args=(--workload puts --clients 64);;
    puts1) args=(--workload puts --clients 1);;
    puts16) args=(--workload puts --clients 16);;
    *) echo "unknown load $l" >&2; continue;;
  esac
  before=$(cpu_ticks "strongbox serve --config $W/")
  row=$("$BIN/strongbox-bench" "${AT[@]}" "${args[@]}" 2>&1 | tail -1)
  after=$(cpu_ticks "strongbox serve --config $W/")
  rate=$(echo "$row" | awk -F'|' '{print $(NF-5)}' | tr -d ' ')
  us=$(cpu_us_per_op "$before" "$after" "$rate" "$(( ${DUR:-12} + 2 ))")
  echo "$TAG $l $row ${us} µs node CPU/op |"
done
kill -INT $DEV; wait $DEV 2>/dev/null; rm -rf "$W"
