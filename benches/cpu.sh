# Sourced by run.sh and ab.sh: CPU per acknowledged op of server processes.

# utime + stime, in clock ticks, of every process whose command line
# matches the pattern (pgrep -f).
cpu_ticks() {
  for p in $(pgrep -f "$1"); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{t += $1} END {print t + 0}'
}

# µs of CPU per op: ticks before and after a bench run, its measured rate
# (ops/s) and the seconds it ran (warm-up included, at the same rate).
cpu_us_per_op() {
  awk -v a="$1" -v b="$2" -v r="$3" -v s="$4" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (r > 0) printf "%.0f", (b - a) / hz * 1e6 / (r * s); else print "n/a" }'
}
