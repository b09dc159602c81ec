"""Reads `perf script -F ip,sym` (call graphs) on stdin; prints the share of
samples under each layer of a strongbox node and each layer's top leaves.

A sample belongs to the first layer (in the order below) that any frame of
its stack matches, so the memtable write inside apply is counted apart from
the rest of apply, and a socket write under HTTP/2 counts as HTTP/2.
"""
import collections
import re
import sys

LAYERS = [
    ("apply: RocksDB write (memtable)", r"Db::write_unlogged"),
    ("apply: commands, reads, sealing", r"ApplyBatch::apply|ApplyBatch::commit|apply_entries"),
    ("log: entries read back", r"try_get_log_entries|RaftLogReader"),
    ("log: append + fsync", r"write_synced|^<?strongbox_raft::log_store::"),
    ("rocksdb background", r"BackgroundCallFlush|BackgroundCallCompaction|FlushJob|CompactionJob"),
    ("snapshot", r"snapshot::"),
    ("gRPC/HTTP2 (+TLS, kernel)", r"h2::|hyper::"),
    ("raft core + replication", r"openraft::"),
    ("tokio runtime", r"tokio::"),
]
RULES = [(name, re.compile(rx)) for name, rx in LAYERS]


def main():
    counts = collections.Counter()
    leaves = collections.defaultdict(collections.Counter)
    total = 0
    stack = []

    def sample():
        nonlocal total
        if not stack:
            return
        total += 1
        layer = next((n for n, rx in RULES if any(rx.search(f) for f in stack)), "other")
        counts[layer] += 1
        leaves[layer][stack[0][:80]] += 1

    for line in sys.stdin:
        if not line.strip():
            sample()
            stack.clear()
        elif line[0] in " \t":
            parts = line.split(None, 1)
            if len(parts) > 1:
                stack.append(parts[1].strip())
        else:
            stack.clear()
    sample()
    if total == 0:
        print("no samples")
        return
    for layer, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {layer}")
        for leaf, k in leaves[layer].most_common(4):
            print(f"          {100 * k / total:4.1f}%  {leaf}")


if __name__ == "__main__":
    main()
