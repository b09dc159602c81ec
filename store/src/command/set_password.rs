use serde::{Deserialize, Serialize};

use super::create_user::update_principal;
use super::{require_holds_principal, validate_credential, Applied, CommandError, Ctx, Required};
use crate::auth::{Access, Action, Principal};
use crate::state_machine::Tx;

/// An administrator sets a user's password (a reset): the user's existing
/// tokens die and any lockout is cleared.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPassword {
    pub username: String,
    pub password_phc: String,
}

impl std::fmt::Debug for SetPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetPassword")
            .field("username", &self.username)
            .field("password_phc", &super::Redacted(self.password_phc.as_ref()))
            .finish()
    }
}

impl SetPassword {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()?;
        validate_credential(&self.password_phc)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "users"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = Principal::User(self.username.clone());
        if let Err(e) = require_holds_principal(tx, ctx.caller(), &p, "reset the password of")? {
            return Ok(Err(e));
        }
        update_principal(tx, &p, |rec, revision| {
            rec.credential = self.password_phc.clone();
            rec.epoch = revision;
            rec.failed_logins_ms.clear();
            rec.locked_until_ms = 0;
        })
    }
}
