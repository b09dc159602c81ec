#!/usr/bin/env bash
# Touches most of the machine's free memory once, then frees it, before a
# benchmark. On this project's VMs the host backs a guest page only when
# the guest first writes it: a page cache page never used before cost about
# 5 µs per 4 KiB to fill (`dd` of 2 GB into a new file: 414 MB/s the first
# time, 4.5–5.2 GB/s the next). A benchmark on a freshly booted VM then
# charges whichever system writes the most new file bytes (RocksDB's
# flushes) for the host's page faults, and the cost fades as the VM ages:
# that was most of what earlier sessions saw as strongbox slowing from round
# to round. A long-running server has touched its memory; so do we, for
# both systems alike.
#
#   benches/warm_memory.sh [GiB]   # default: free memory less 2 GiB, at most 20
set -euo pipefail
free_gib=$(awk '/MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo)
gib="${1:-$(( free_gib > 22 ? 20 : free_gib - 2 ))}"
[ "$gib" -gt 0 ] || exit 0
started=$(date +%s.%N)
# Anonymous memory, written byte by byte (no disk I/O), freed on exit.
# perl is in every Debian install; python3 is faster where it is present.
if command -v python3 >/dev/null; then
  python3 -c "x = b'\\1' * ($gib << 30)"
else
  perl -e "\$x = \"\\1\" x ($gib << 30)"
fi
echo "warmed $gib GiB of memory in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s" >&2
