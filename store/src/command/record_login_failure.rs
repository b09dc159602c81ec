use serde::{Deserialize, Serialize};

use super::create_user::put_principal;

use super::set_state_version::LOGIN_FAILURES_UNIFORM;
use super::{Applied, CommandError, Ctx, Outcome, Required};
use crate::auth::{principal_record, Principal};
use crate::state_machine::Tx;

/// A failed login, counted on every node alike. After `failures_max`
/// failures within `window_ms` (state-machine time) the user is locked for
/// `lockout_ms`. The policy travels with the command, so every node applies
/// the same one. Nodes propose this for unknown users too, so both cases
/// cost the same round trip; from `LOGIN_FAILURES_UNIFORM` on, both move
/// the revision too (and a failure while locked), and change nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLoginFailure {
    pub username: String,
    pub failures_max: u32,
    pub window_ms: u64,
    pub lockout_ms: u64,
}

impl RecordLoginFailure {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()?;
        if !(1..=100).contains(&self.failures_max) {
            return Err(CommandError::invalid("failures_max must be 1..=100"));
        }
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        let p = Principal::User(self.username.clone());
        let uniform = tx.state_version() >= LOGIN_FAILURES_UNIFORM;
        let Some(mut rec) = principal_record(tx, &p)? else {
            if uniform {
                tx.next_revision();
            }
            return Ok(Ok(Outcome::LoginFailureRecorded { locked: false }));
        };
        let now_ms = tx.clock_ms();
        if rec.locked(now_ms) {
            if uniform {
                tx.next_revision();
            }
            return Ok(Ok(Outcome::LoginFailureRecorded { locked: true }));
        }
        let since_ms = now_ms.saturating_sub(self.window_ms);
        rec.failed_logins_ms.retain(|t| *t > since_ms);
        rec.failed_logins_ms.push(now_ms);
        let locked = rec.failed_logins_ms.len() >= self.failures_max as usize;
        if locked {
            rec.locked_until_ms = now_ms + self.lockout_ms;
            rec.failed_logins_ms.clear();
        }
        assert!(rec.failed_logins_ms.len() < self.failures_max as usize, "failure list is bounded");
        rec.updated_revision = tx.next_revision();
        rec.updated_ms = now_ms;
        put_principal(tx, &p, &rec)?;
        Ok(Ok(Outcome::LoginFailureRecorded { locked }))
    }
}
