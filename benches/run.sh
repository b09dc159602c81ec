#!/usr/bin/env bash
# Side-by-side write benchmark on this machine, one run: a three-node
# strongbox cluster (TLS, fsync) and a three-node etcd 3.4 cluster (Debian's
# etcd-server, loopback, no TLS), the same closed-loop put load at 1, 16 and
# 64 clients. Prints markdown rows for BENCHMARKS.md. Every row ends with the
# CPU (user + system, from /proc) its three server processes used per
# acknowledged op, warm-up included (the ops counted are the measured rate
# times warm-up plus measurement): a figure that does not depend on how long
# a request waits for one of the two cores.
#
#   benches/run.sh [duration_s]
#   ENCRYPTION=off benches/run.sh      # strongbox without encryption at rest
#   WORKLOAD=transfers benches/run.sh  # ledger transfers: strongbox batches of
#                                      # 1/100/1000/8189 vs etcd's Txn transfer
#   WORKLOAD=reads benches/run.sh      # linearizable reads of one key per client
#   ROUNDS=5 benches/run.sh            # alternate the 64-client runs 5 times
#                                      # (3 by default) and print the median
#                                      # ratio: this machine's speed drifts
#                                      # (transfers: batches of 1,000 too)
#   AGE_S=660 benches/run.sh           # first load both clusters for 660 s, so
#                                      # strongbox measures past its 10-minute
#                                      # request-id window, as a long-lived node
#   WARM_GIB=0 benches/run.sh          # skip touching free memory first
#                                      # (benches/warm_memory.sh says why)
#   CONNECTIONS=4 benches/run.sh       # the clients share 4 connections
#                                      # (multiplexed HTTP/2), both systems;
#                                      # 0 (default): one per client
#   ROUTE=spread benches/run.sh        # client i on endpoint i mod 3, as
#                                      # etcd's client spreads (followers
#                                      # forward); by default each system's
#                                      # clients go to its leader: strongbox's
#                                      # by the nodes' leader hints, as its
#                                      # client does, etcd's by asking Status
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }
./scripts/setup.sh
cargo build --bin strongbox --bin strongbox-bench
benches/warm_memory.sh ${WARM_GIB:-}
BIN="${CARGO_TARGET_DIR:-target}/debug"
WORK="$(mktemp -d /tmp/strongbox-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# strongbox: its own dev launcher, in a scratch dir, on ports 7600+.
STRONGBOX_PROFILE="$WORK/profile.toml" "$BIN/strongbox" dev --dir "$WORK/sb" --base-port 7600 $([ "${ENCRYPTION:-on}" = off ] && echo --insecure-no-encryption) >"$WORK/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do grep -q "cluster is up" "$WORK/dev.log" && break; sleep 0.5; done
grep -q "cluster is up" "$WORK/dev.log" || { cat "$WORK/dev.log"; exit 1; }

# etcd: three members on loopback.
cluster="e1=http://127.0.0.1:7711,e2=http://127.0.0.1:7712,e3=http://127.0.0.1:7713"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-peer-urls "http://127.0.0.1:771$i" --initial-advertise-peer-urls "http://127.0.0.1:771$i" \
    --listen-client-urls "http://127.0.0.1:770$i" --advertise-client-urls "http://127.0.0.1:770$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$WORK/etcd$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 60); do
  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:7701 endpoint health >/dev/null 2>&1 && break; sleep 0.5
done

SB_AT=(--target strongbox --endpoints 127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603
  --ca "$WORK/sb/ca.pem" --token-file "$WORK/token" --route "${ROUTE:-leader}" --connections "${CONNECTIONS:-0}")
ETCD_AT=(--target etcd --endpoints 127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703 --route "${ROUTE:-leader}"
  --connections "${CONNECTIONS:-0}")
if [ "${AGE_S:-0}" -gt 0 ]; then
  echo "ageing both clusters: ${AGE_S} s of unbatched transfers at 64 clients each" >&2
  "$BIN/strongbox-bench" "${SB_AT[@]}" --workload transfers --clients 64 --duration-s "$AGE_S" >&2
  "$BIN/strongbox-bench" "${ETCD_AT[@]}" --workload transfers --clients 64 --duration-s "$AGE_S" >&2
fi
. benches/cpu.sh
# CPU ticks of one system's three server processes.
server_ticks() {
  case $1 in
    strongbox) cpu_ticks "strongbox serve --config $WORK/";;
    etcd) cpu_ticks "etcd --name e[123] --data-dir $WORK/";;
  esac
}
# One bench invocation (one concurrency level); prints its row with the
# servers' CPU per op appended, and leaves the rate in $RATE.
measure() {
  local system=$1; shift
  local before after row
  before=$(server_ticks "$system")
  row=$("$BIN/strongbox-bench" "$@" --duration-s "$DURATION" --markdown | tail -1)
  after=$(server_ticks "$system")
  RATE=$(echo "$row" | awk -F'|' '{print $(NF-5)}' | tr -d ' ')
  local us
  us=$(cpu_us_per_op "$before" "$after" "$RATE" "$((DURATION + 2))")
  echo "$row $us |"
}
ROUNDS="${ROUNDS:-3}"
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
if [ "${WORKLOAD:-puts}" = transfers ]; then
  echo "| system | clients | transfers per request | transfers/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs per transfer |"
  echo "|---|---|---|---|---|---|---|---|---|"
  ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    measure strongbox "${SB_AT[@]}" --workload transfers --batch 1 --clients 64; sb=$RATE
    measure etcd "${ETCD_AT[@]}" --workload transfers --clients 64
    ratios+=("$(awk -v a="$sb" -v b="$RATE" 'BEGIN { printf "%.2f", a / b }')")
  done
  measure strongbox "${SB_AT[@]}" --workload transfers --batch 100 --clients 16
  # Batches of 1,000 (the issue's batched floor) ROUNDS times too: one 10 s
  # run of a few hundred requests moved by a fifth between two runs in a
  # row on the same cluster (BENCHMARKS.md, fourteenth session).
  batched=()
  for round in $(seq 1 "$ROUNDS"); do
    measure strongbox "${SB_AT[@]}" --workload transfers --batch 1000 --clients 16
    batched+=("$RATE")
  done
  # Three times as long: at 16 clients a request of 8,189 takes seconds,
  # so a 10 s run completes a few dozen, and the rate moves in steps of
  # 8,189 / duration; the work still in flight at the end is CPU without
  # ops. Both shrink with a longer run.
  DURATION=$((DURATION * 3)) measure strongbox "${SB_AT[@]}" --workload transfers --batch 8189 --clients 16
  echo
  echo "unbatched strongbox/etcd Txn per round: ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | median)"
  echo "batches of 1,000, transfers/s per round: ${batched[*]}; median $(printf '%s\n' "${batched[@]}" | median)"
  exit 0
fi
if [ "${WORKLOAD:-puts}" = reads ]; then
  echo "| system | clients | linearizable reads/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs per read |"
  echo "|---|---|---|---|---|---|---|---|"
  measure strongbox "${SB_AT[@]}" --workload reads --clients 64
  measure etcd "${ETCD_AT[@]}" --workload reads --clients 64
  exit 0
fi
echo "| system | clients | acked writes/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs per put |"
echo "|---|---|---|---|---|---|---|---|"
for n in 1 16; do
  measure strongbox "${SB_AT[@]}" --clients "$n"
  measure etcd "${ETCD_AT[@]}" --clients "$n"
done
# 64 clients, the issue's comparison: alternated, ROUNDS times each.
ratios=()
for round in $(seq 1 "$ROUNDS"); do
  measure strongbox "${SB_AT[@]}" --clients 64; sb=$RATE
  measure etcd "${ETCD_AT[@]}" --clients 64
  ratios+=("$(awk -v a="$sb" -v b="$RATE" 'BEGIN { printf "%.2f", a / b }')")
done
echo
echo "puts at 64 clients, strongbox/etcd per round: ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | median)"
