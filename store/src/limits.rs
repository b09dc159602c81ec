//! Every limit of the state machine, in one place. Units last.

/// Longest secret path, in bytes.
pub const SECRET_PATH_BYTES_MAX: usize = 512;
/// Largest secret value the state machine accepts, in bytes. Nodes enforce a
/// smaller configurable limit (64 KiB by default) before proposing.
pub const SECRET_VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Versions kept per secret unless the secret says otherwise.
pub const SECRET_VERSIONS_DEFAULT: u64 = 10;
/// Largest `max_versions` a secret may ask for.
pub const SECRET_VERSIONS_LIMIT: u64 = 100;
/// Versions named in one destroy request.
pub const DESTROY_VERSIONS_MAX: usize = 100;
/// Longest client request id, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// How long an applied request id is remembered: a retry within this window
/// of state-machine time gets the first answer instead of a second apply.
pub const DEDUP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Physical pruning of expired tokens per apply batch (expiry is checked on
/// every use, so pruning late is harmless).
pub const TOKEN_PRUNE_PER_BATCH_MAX: usize = 1024;
/// Usernames, client ids, role names.
pub const NAME_BYTES_MAX: usize = 128;
/// Rules in one role.
pub const ROLE_RULES_MAX: usize = 64;
/// Roles assigned to one user or client.
pub const ROLES_PER_PRINCIPAL_MAX: usize = 32;
/// A stored credential (argon2id PHC string or hex digest).
pub const CREDENTIAL_BYTES_MAX: usize = 512;
