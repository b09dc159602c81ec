//! Limits of the client API. Units last.

use std::time::Duration;

/// Largest client request we accept (etcd's cap); larger → RESOURCE_EXHAUSTED
/// (tonic decodes no more than this on any client-facing service).
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// How long a write may take to commit before the client hears DEADLINE_EXCEEDED.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may wait for its barrier (leader confirmation, min_revision).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may be out of step with a leader and still serve local
/// reads, by default (`local_read_staleness_max_ms`): several election
/// timeouts, so a follower riding out a leader change keeps serving, but a
/// node cut off from the cluster stops within seconds, and with it any
/// token revoked meanwhile.
pub const LOCAL_READ_STALENESS_MAX_MS_DEFAULT: u64 = 10_000;
/// The largest `local_read_staleness_max_ms` a node accepts (one day, the
/// longest a token lives).
pub const LOCAL_READ_STALENESS_MAX_MS_MAX: u64 = 86_400_000;
/// Concurrent requests per client connection.
pub const CONCURRENCY_PER_CONNECTION_MAX: usize = 256;
/// Streams a client may open and cancel before the server has taken them
/// up, per connection, before the connection is closed (GOAWAY
/// ENHANCE_YOUR_CALM). h2's default of 20 is the HTTP/2 rapid-reset
/// defence; a node resumed after a pause (a VM stall, a long GC in a
/// client) reads a backlog of requests whose callers have given up, one
/// reset each. Up to one full window of concurrent requests is allowed.
pub const CLIENT_PENDING_RESETS_MAX: usize = CONCURRENCY_PER_CONNECTION_MAX;
/// The same for the peer port, whose callers are cluster members
/// (mutual TLS): a leader abandons every forwarded call and read-index
/// round at once when leadership moves, and closing the connection for it
/// took the AppendEntries and forward streams that share it down too.
pub const PEER_PENDING_RESETS_MAX: usize = 4096;
