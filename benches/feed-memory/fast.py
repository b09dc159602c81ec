#!/usr/bin/env python3
"""fast.py PROFILE WATCHERS BATCHES: watchers that keep up; time until each has every event."""
import os, random, sys, threading, time, tomllib
sys.path.insert(0, os.environ["FEED_MEMORY_GEN"])
import grpc
from strongbox.v1 import strongbox_pb2 as pb, strongbox_pb2_grpc as rpc
profile_path, watchers, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
profile = tomllib.load(open(profile_path, "rb"))
ca = open(profile["ca_cert"], "rb").read()
token = open(os.path.join(os.path.dirname(profile_path), "token")).read().strip()
meta = [("authorization", f"Bearer {token}")]
ep = profile["endpoints"]
ch = lambda e: grpc.secure_channel(e, grpc.ssl_channel_credentials(ca), options=[("grpc.max_receive_message_length", 64 << 20)])
u128 = lambda v: pb.U128(lo=v & (2**64 - 1), hi=v >> 64)
ledger = rpc.LedgerStub(ch(ep[0]))
ledger.CreateAccounts(pb.CreateAccountsRequest(accounts=[pb.Account(id=u128(i), ledger=1, code=1) for i in (1, 2)]), metadata=meta)
want = batches * 8189
done_at = [None] * watchers
def watch(i):
    s = rpc.FeedStub(ch(ep[0])).Watch(pb.WatchRequest(kinds=["transfer.*"]), metadata=meta)
    n = 0
    for m in s:
        n += len(m.events)
        if n >= want:
            done_at[i] = time.time(); s.cancel(); return
ts = [threading.Thread(target=watch, args=(i,)) for i in range(watchers)]
for t in ts: t.start()
time.sleep(1)
start = time.time()
for b in range(batches):
    base = random.getrandbits(100) << 20
    ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=[pb.Transfer(id=u128(base + i), debit_account_id=u128(1), credit_account_id=u128(2), amount=u128(1), ledger=1, code=1) for i in range(8189)]), metadata=meta, timeout=60)
wrote = time.time() - start
for t in ts: t.join(120)
got = [d - start for d in done_at if d]
print(f"writes {wrote:.1f} s; {len(got)}/{watchers} watchers got all {want} events; last at {max(got):.1f} s" if got else "none finished")
