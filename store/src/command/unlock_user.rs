use serde::{Deserialize, Serialize};

use super::create_user::update_principal;
use super::{Applied, CommandError, Ctx, Required};
use crate::auth::{Access, Action, Principal};
use crate::state_machine::Tx;

/// Lifts a lockout and forgets recent failed logins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockUser {
    pub username: String,
}

impl UnlockUser {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "users"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        update_principal(tx, &Principal::User(self.username.clone()), |rec, _| {
            rec.failed_logins_ms.clear();
            rec.locked_until_ms = 0;
        })
    }
}
