//! The state version: which apply semantics the cluster runs by. Nodes of
//! two builds must never answer the same log entry two ways, or their
//! states part. So a change to what apply does with some command is gated
//! on `Tx::state_version`, and the cluster moves to a new version only once
//! every member runs a build that supports it (`strongbox cluster
//! upgrade-state` asks each one), by this command, through the log: every
//! node switches at the same entry. A node whose build does not support the
//! version stops at that entry instead of applying on by other rules, and a
//! build refuses to open a state of a version it does not know.

use serde::{Deserialize, Serialize};

use super::{refuse, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{Access, Action};
use crate::layout::Cf;
use crate::state_machine::Tx;
use crate::DbError;

/// The state versions this build applies: 1 up to this one. Raise it (and
/// gate the new behaviour on `Tx::state_version() >= it`) whenever apply
/// would answer an entry differently from the build before.
pub const STATE_VERSION_SUPPORTED: u32 = 10;

/// From version 2, ledger events keep every flag they were sent with
/// (`linked` included, as TigerBeetle stores it), an id already taken is
/// compared on all of them (`closed` included), and a void retried with
/// `AMOUNT_MAX` is a different amount, not the whole one. Before, `linked`
/// was dropped, and neither it nor `closed` was compared.
pub const LEDGER_FLAGS_KEPT: u32 = 2;

/// From version 2, every failed login moves the revision (and is a feed
/// event), for a known user or not, locked or not: any caller can watch
/// the revision, so before, it told which usernames exist.
pub const LOGIN_FAILURES_UNIFORM: u32 = 2;

/// From version 2, a password change that lost a race with another change
/// or a reset is FAILED_PRECONDITION (it was UNAUTHENTICATED, "wrong
/// password", though the old password was right).
pub const PASSWORD_RACE_IS_PRECONDITION: u32 = 2;

/// From version 2, deleting a secret whose latest version is deleted
/// already succeeds and changes nothing (it was NOT_FOUND).
pub const SECRET_DELETE_IDEMPOTENT: u32 = 2;

/// From version 2, a deny rule also withholds `admin` on what it names
/// (`admin` includes read and write): `deny write users` stops user
/// management too, as the delegation check always assumed. Before, a deny
/// withheld only the action it named.
pub const DENY_COVERS_ADMIN: u32 = 2;

/// From version 2, a node may lift a lockout (`UnlockUser` with the node
/// as actor): the break-glass path of `Recovery.UnlockUser`.
pub const RECOVERY_BY_NODE: u32 = 2;

/// From version 3, editing or deleting a role needs every right of each
/// principal that holds it (as assigning one always did): a lesser
/// administrator could otherwise add `deny admin users` to a role a
/// superuser holds and shut it out for good. And no change to roles or
/// their rules may leave the cluster without an enabled principal that
/// holds the admin role with no deny rule touching `users` or `roles`
/// (before, only holding the admin role counted, deny rules or not).
pub const ROLE_EDITS_GUARD_HOLDERS: u32 = 3;

/// From version 3, revoking a token past its expiry answers as for an
/// unknown token (`existed: false`, no revision), whether or not apply's
/// once-per-batch prune has deleted it yet. Before, the answer depended on
/// how entries fell into apply batches, which differs between nodes: their
/// revisions, feeds and audit chains could part.
pub const EXPIRED_TOKENS_ARE_GONE: u32 = 3;

/// From version 3, a request id is scoped by the principal behind the
/// token (while the token is live), not by the token itself: a client
/// whose token expired mid-retry logs in again and retries under the new
/// token, and that retry must be answered, not applied a second time.
/// For one dedup window after the move, same-token records written before
/// it are still found.
pub const REQUEST_IDS_BY_PRINCIPAL: u32 = 3;

/// From version 4, a soft-deleted secret version stays deleted when a put
/// writes a newer one (Vault KV v2; see `secret_deletions`), and single
/// versions can be deleted and undeleted by number
/// (`DeleteSecretVersions`, `UndeleteSecretVersions`). Before, a put made
/// the deleted latest version readable again by its number.
pub const SECRET_DELETES_PER_VERSION: u32 = 4;

/// From version 4, a service client's secret can be replaced
/// (`RotateClientSecret`, a command older builds cannot read).
pub const CLIENT_SECRET_ROTATION: u32 = 4;

/// From version 5, a secret can be removed outright with its metadata and
/// its listing (`PurgeSecret`, a command older builds cannot read).
pub const SECRET_PURGE: u32 = 5;

/// From version 6, a secret's metadata can be set before its first version
/// (Vault's `kv metadata put` on a new path): the path is listed, has no
/// versions yet, and a put must then honour the settings (cas_required from
/// the very first write). And purging a path with no secret succeeds and
/// changes nothing (Vault answers 204, etcd's DeleteRange deleted=0), so a
/// purge retried without its request id is not an error. Before, both were
/// NOT_FOUND.
pub const SECRET_METADATA_FIRST: u32 = 6;

/// From version 7, a pending transfer that expires adds no row to its
/// accounts' balance history, as in TigerBeetle ("pending balances removed
/// by a timeout don't change historical balances"): every row then belongs
/// to a transfer with the row's timestamp, so a client can pair balances
/// with `GetAccountTransfers`. The accounts' current balances release the
/// reservation as before. Before, each expiry added a row under the
/// expired transfer's id.
pub const EXPIRY_WITHOUT_HISTORY: u32 = 7;

/// From version 8, a token refused for its principal says which case it
/// is: the principal is disabled, or its credentials changed after the
/// token was issued (a password change, a rotated client secret). Before,
/// both read "disabled or was re-created", which sent a user whose
/// password had just been reset looking for who disabled them. Gated
/// because the refusal's text is part of the request record.
pub const PRECISE_TOKEN_REFUSALS: u32 = 8;

/// From version 9, a revoked token's change-feed event names the token's
/// principal as its entity (the revoker is the record's actor), as
/// `token.issued` does: a consumer that tracks alice's sessions sees an
/// administrator revoke one. Before, the entity was the revoker, so such a
/// consumer missed every revocation but alice's own. Gated because the
/// event comes from the command's outcome, which now carries the principal
/// (`Outcome::TokenRevokedOf`, a variant older builds cannot read).
pub const REVOCATIONS_NAME_THE_PRINCIPAL: u32 = 9;

/// From version 9, a token this state does not hold is refused as
/// "unknown, expired or revoked": an expired token is pruned a moment after
/// it expires, and until then is refused as "expired", so the same token
/// read "expired" on one request and "unknown or revoked" on the next.
pub const UNKNOWN_TOKENS_MAY_HAVE_EXPIRED: u32 = 9;

/// From version 9, a ledger command tells a caller nothing about ledgers
/// it may not see (neither read nor write) beyond that an id is taken
/// (ids are global, as in TigerBeetle): an id taken there is
/// `exists_with_different_ledger` (with no field compared), an account
/// there is not found, a pending transfer there is not found (and no id is
/// kept failed for it). An id taken on a ledger the caller may read but
/// not write is `exists_with_different_ledger` too. Before, each of these
/// refused the whole batch as PERMISSION_DENIED naming the other ledger,
/// or answered with codes that told its accounts' ledgers: a writer on one
/// ledger could learn another's ids, and block another ledger's batches
/// by taking ids they would use.
pub const FOREIGN_LEDGERS_STAY_HIDDEN: u32 = 9;

/// From version 10, the audit trail names the direction of a role
/// assignment and of an enable flag in the record's action:
/// `unassign_role` (granting stays `assign_role`), `enable_principal` and
/// `disable_principal` (they were `assign_role` and `set_enabled` either
/// way, so an auditor could not tell a grant from its removal, or who
/// locked an account from who reopened it). Gated because the replicated
/// chain's records, and so their hashes, are written by apply.
pub const AUDIT_ACTIONS_NAME_THE_DIRECTION: u32 = 10;

/// From version 10, a login's audit record names who logged in as its
/// actor (`user:alice`; it was `node`, the proposer of every login), and a
/// failed login's record has the outcome `Unauthenticated` (it was `ok`:
/// recording the failure succeeded). Gated as above.
pub const LOGINS_AUDITED_AS_THEIR_PRINCIPAL: u32 = 10;

/// Why a node cannot go on with a state of `version`.
pub fn unsupported(version: u32) -> DbError {
    DbError::Format(format!(
        "the cluster's state is at version {version}, and this build of strongbox applies versions up to \
         {STATE_VERSION_SUPPORTED}: run this node on the newer build"
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStateVersion {
    pub version: u32,
}

impl SetStateVersion {
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.version == 0 {
            return Err(CommandError::invalid("version must be 1 or more"));
        }
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "cluster"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if self.version > STATE_VERSION_SUPPORTED {
            // A storage failure: this node stops here, and again at this
            // entry after every restart, until it runs a newer build.
            return Err(unsupported(self.version));
        }
        let current = tx.state_version();
        if self.version < current {
            return refuse(
                ErrorCode::FailedPrecondition,
                format!("the state is at version {current} and never goes back (asked for {})", self.version),
            );
        }
        if self.version > current {
            if current < REQUEST_IDS_BY_PRINCIPAL && self.version >= REQUEST_IDS_BY_PRINCIPAL {
                let since_ms = tx.clock_ms();
                tx.put(Cf::SmMeta, crate::layout::sm_keys::REQUESTS_BY_PRINCIPAL_SINCE_MS, &since_ms);
            }
            tx.set_state_version(self.version);
            tx.next_revision();
        }
        Ok(Ok(Outcome::StateVersion { version: self.version }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_zero_is_invalid() {
        assert!(SetStateVersion { version: 0 }.validate().is_err());
        assert!(SetStateVersion { version: 1 }.validate().is_ok());
    }
}
