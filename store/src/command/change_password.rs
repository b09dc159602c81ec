use serde::{Deserialize, Serialize};

use super::create_user::put_principal;

use super::set_state_version::PASSWORD_RACE_IS_PRECONDITION;
use super::{refuse, validate_credential, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{principal_record, Principal};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// A user changes their own password. The receiving node verified the old
/// password against `expected_phc`; apply refuses if the stored hash changed
/// in between (a concurrent change or reset wins).
///
/// Every other token of the user dies (a password is changed because it may
/// have leaked, and so may the sessions opened with it); the token that made
/// the change lives on under the new epoch, so the caller stays logged in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePassword {
    pub expected_phc: String,
    pub new_phc: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePassword")
            .field("expected_phc", &super::Redacted(self.expected_phc.as_ref()))
            .field("new_phc", &super::Redacted(self.new_phc.as_ref()))
            .finish()
    }
}

impl ChangePassword {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_credential(&self.expected_phc)?;
        validate_credential(&self.new_phc)
    }

    pub fn required(&self) -> Required {
        Required::Authenticated
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = &ctx.caller().principal;
        let Principal::User(_) = p else {
            return refuse(ErrorCode::FailedPrecondition, "service clients have secrets, not passwords");
        };
        let Some(mut rec) = principal_record(tx, p)? else {
            return refuse(ErrorCode::NotFound, format!("no {p}"));
        };
        if rec.credential != self.expected_phc {
            // Checked against the hash the node read: another change or a
            // reset won in between. Version 1 called it a wrong password.
            if tx.state_version() >= PASSWORD_RACE_IS_PRECONDITION {
                return refuse(
                    ErrorCode::FailedPrecondition,
                    "the password was changed or reset while this change was checked; log in again",
                );
            }
            return refuse(ErrorCode::Unauthenticated, "the old password is wrong");
        }
        let revision = tx.next_revision();
        rec.credential = self.new_phc.clone();
        rec.epoch = revision;
        rec.updated_revision = revision;
        rec.updated_ms = tx.clock_ms();
        put_principal(tx, p, &rec)?;
        let caller = ctx.caller();
        let mut token = caller.token.clone();
        token.epoch = revision;
        tx.put(Cf::Tokens, &caller.token_hash, &token);
        Ok(Ok(Outcome::Done))
    }
}
