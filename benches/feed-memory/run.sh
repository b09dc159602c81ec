#!/bin/bash
# Memory of a node under stalled Feed.Watch streams of large ledger revisions
# (mem.py), or delivery to watchers that keep up (fast.py).
#   benches/feed-memory/run.sh stalled WATCHERS BATCHES
#   benches/feed-memory/run.sh keeping-up WATCHERS BATCHES
# Starts a fresh dev cluster of $STRONGBOX_BIN (default: the debug build) in
# $WORK (default /var/tmp/feed-memory) on ports 7700+, runs the probe, stops it.
set -euo pipefail
mode=$1 watchers=$2 batches=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${WORK:-/var/tmp/feed-memory}
bin=${STRONGBOX_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/strongbox}
[ -x "$bin" ] || { echo "no $bin: cargo build --bin strongbox first, or set STRONGBOX_BIN" >&2; exit 1; }
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q grpcio grpcio-tools
fi
mkdir -p "$work/gen"
"$work/venv/bin/python" -m grpc_tools.protoc -I"$root/proto" --python_out="$work/gen" \
    --grpc_python_out="$work/gen" "$root/proto/strongbox/v1/strongbox.proto"
export FEED_MEMORY_GEN=$work/gen
d=$work/cluster
rm -f "$d/token"
setsid "$bin" dev --dir "$d" --profile "$d/profile.toml" --base-port 7700 --fresh > "$work/dev.log" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 120); do [ -s "$d/token" ] && break; kill -0 $dev || { cat "$work/dev.log"; exit 1; }; sleep 1; done
[ -s "$d/token" ] || { echo "no cluster after 120 s; see $work/dev.log" >&2; exit 1; }
sleep 2
case $mode in
    stalled) "$work/venv/bin/python" "$here/mem.py" "$d/profile.toml" "$watchers" "$batches" 0 ;;
    keeping-up) "$work/venv/bin/python" "$here/fast.py" "$d/profile.toml" "$watchers" "$batches" ;;
    *) echo "mode: stalled or keeping-up" >&2; exit 2 ;;
esac
