#!/usr/bin/env python3
"""Memory of a node under stalled watchers of large ledger revisions.

Usage: mem.py PROFILE WATCHERS BATCHES NODE_INDEX (through run.sh)
Opens WATCHERS streams on node NODE_INDEX that never read past their first
message (HTTP/2 windows kept small), then writes BATCHES batches of 8,189
transfers, sampling every node's RSS. Prints baseline, peak and after.
"""
import os, random, subprocess, sys, threading, time, tomllib

sys.path.insert(0, os.environ["FEED_MEMORY_GEN"])
import grpc
from strongbox.v1 import strongbox_pb2 as pb, strongbox_pb2_grpc as rpc

profile_path, watchers, batches, node_index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
profile = tomllib.load(open(profile_path, "rb"))
ca = open(profile["ca_cert"], "rb").read()
token = open(os.path.join(os.path.dirname(profile_path), "token")).read().strip()
meta = [("authorization", f"Bearer {token}")]
endpoints = profile["endpoints"]

def channel(ep, small=False):
    opts = [("grpc.max_receive_message_length", 64 << 20)]
    if small:
        opts += [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16 * 1024)]
    return grpc.secure_channel(ep, grpc.ssl_channel_credentials(ca), options=opts)

def u128(v):
    return pb.U128(lo=v & (2**64 - 1), hi=v >> 64)

def rss_of_nodes():
    pattern = f"serve --config {os.path.dirname(os.path.abspath(profile_path))}/"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    rss = {}
    for pid in out:
        try:
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
            name = cmd.split("/")[-1].split(".")[0]
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    rss[name] = int(line.split()[1]) // 1024
        except OSError:
            pass
    return rss

peaks, stop = {}, threading.Event()
def sampler():
    while not stop.is_set():
        for pid, mib in rss_of_nodes().items():
            peaks[pid] = max(peaks.get(pid, 0), mib)
        time.sleep(0.2)

ledger = rpc.LedgerStub(channel(endpoints[0]))
accounts = [pb.Account(id=u128(i), ledger=1, code=1) for i in (1, 2)]
ledger.CreateAccounts(pb.CreateAccountsRequest(accounts=accounts), metadata=meta)
print("baseline RSS MiB:", rss_of_nodes(), flush=True)
threading.Thread(target=sampler, daemon=True).start()

streams = []
for _ in range(watchers):
    feed = rpc.FeedStub(channel(endpoints[node_index], small=True))
    s = feed.Watch(pb.WatchRequest(kinds=["transfer.*"]), metadata=meta)
    next(s)  # the opening progress message; then never read again
    streams.append(s)
print(f"{watchers} watchers open on {endpoints[node_index]}", flush=True)

start = time.time()
for b in range(batches):
    base = random.getrandbits(100) << 20
    transfers = [pb.Transfer(id=u128(base + i), debit_account_id=u128(1), credit_account_id=u128(2),
                             amount=u128(1), ledger=1, code=1) for i in range(8189)]
    r = ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=transfers), metadata=meta, timeout=60)
    assert all(x == 0 for x in r.results), set(r.results)
print(f"{batches} batches in {time.time() - start:.1f} s", flush=True)
time.sleep(8)  # past the 5 s grace: stalled streams are cut
cut = 0
for s in streams:
    try:
        while True:
            next(s)
    except grpc.RpcError as e:
        cut += e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    except StopIteration:
        pass
time.sleep(2)
stop.set()
print(f"cut as too slow: {cut} of {watchers}")
print("peak RSS MiB:", peaks)
print("after RSS MiB:", rss_of_nodes())
