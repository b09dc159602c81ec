use serde::{Deserialize, Serialize};

use super::{refuse, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{validate_name, Access, Action, Read, RoleRecord, ADMIN_ROLE};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Deletes a role. Principals keep the name in their role list, but it
/// grants nothing while no role of that name exists (like Vault policies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRole {
    pub name: String,
}

impl DeleteRole {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_name("role", &self.name)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "roles"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if self.name == ADMIN_ROLE {
            return refuse(ErrorCode::FailedPrecondition, "the built-in admin role cannot be deleted");
        }
        let key = tx.name_key(Cf::Roles, &self.name)?;
        if tx.get::<RoleRecord>(Cf::Roles, &key)?.is_none() {
            return refuse(ErrorCode::NotFound, format!("no role named {:?}", self.name));
        }
        tx.next_revision();
        tx.delete(Cf::Roles, &key);
        Ok(Ok(Outcome::Done))
    }
}
