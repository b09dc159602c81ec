//! Every limit of the state machine, in one place. Units last.

/// Longest secret path, in bytes.
pub const SECRET_PATH_BYTES_MAX: usize = 512;
/// Largest secret value, in bytes.
pub const SECRET_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Versions kept per secret; older ones are destroyed on write.
pub const SECRET_VERSIONS_MAX: u64 = 10;
/// Longest client request id, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// How long an applied request id is remembered: a retry within this window
/// of state-machine time gets the first answer instead of a second apply.
pub const DEDUP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Physical pruning of expired request ids per apply batch (bounded work;
/// expiry itself is logical, so pruning late is harmless).
pub const DEDUP_PRUNE_PER_BATCH_MAX: usize = 1024;
