use serde::{Deserialize, Serialize};

use super::{refuse, validate_credential, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{principal_record, Access, Action, Principal};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// An administrator sets a user's password (a reset): the user's existing
/// tokens die and any lockout is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPassword {
    pub username: String,
    pub password_phc: String,
}

impl SetPassword {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()?;
        validate_credential(&self.password_phc)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "users"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        let p = Principal::User(self.username.clone());
        let Some(mut rec) = principal_record(tx, &p)? else {
            return refuse(ErrorCode::NotFound, format!("no {p}"));
        };
        let revision = tx.next_revision();
        rec.credential = self.password_phc.clone();
        rec.epoch = revision;
        rec.failed_logins_ms.clear();
        rec.locked_until_ms = 0;
        rec.updated_revision = revision;
        rec.updated_ms = tx.clock_ms();
        tx.put(Cf::Users, self.username.as_bytes(), &rec);
        Ok(Ok(Outcome::Done))
    }
}
