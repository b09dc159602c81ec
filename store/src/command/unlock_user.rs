use serde::{Deserialize, Serialize};

use super::create_user::update_principal;
use super::{Applied, CommandError, Ctx, Required};
use crate::auth::{Access, Action, Principal};
use crate::state_machine::Tx;

/// Lifts a lockout and forgets recent failed logins. By an admin of users
/// (holding what the user holds), or by a node on the break-glass path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockUser {
    pub username: String,
}

impl UnlockUser {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()
    }

    pub fn required(&self) -> Required {
        Required::NodeOrAccess(Access::new(Action::Admin, "users"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = Principal::User(self.username.clone());
        // Unlocking again and again would undo the lockout's brake on
        // password guessing against a principal with more rights.
        // (A node acts for whoever holds a member's key: no token to check.)
        if let Some(caller) = ctx.caller {
            if let Err(e) = super::require_holds_principal(tx, caller, &p, "unlock")? {
                return Ok(Err(e));
            }
        }
        update_principal(tx, &p, |rec, _| {
            rec.failed_logins_ms.clear();
            rec.locked_until_ms = 0;
        })
    }
}
