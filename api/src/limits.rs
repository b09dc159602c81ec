//! Limits of the client API. Units last.

use std::time::Duration;

/// Largest client request we accept (etcd's cap); larger → RESOURCE_EXHAUSTED.
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// What tonic itself will decode; between the two the handler answers.
pub const GRPC_DECODE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long a write may take to commit before the client hears DEADLINE_EXCEEDED.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may wait for its barrier (leader confirmation, min_revision).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent requests per client connection.
pub const CONCURRENCY_PER_CONNECTION_MAX: usize = 256;
