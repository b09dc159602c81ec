use serde::{Deserialize, Serialize};

use super::create_user::put_principal;
use super::set_state_version::ROLE_EDITS_GUARD_HOLDERS;
use super::{
    for_each_principal, refuse, require_holds_holders, Applied, CommandError, Ctx, ErrorCode, Outcome,
    Required,
};
use crate::auth::{validate_name, Access, Action, Principal, PrincipalRecord, Read, RoleRecord, ADMIN_ROLE};
use crate::db::DbError;
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Deletes a role and takes it away from every user and client that holds
/// it (as etcd's RoleDelete does), in the same revision: a role created
/// later under the same name starts with no holders instead of silently
/// granting its rules to whoever held the old one.
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

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        if self.name == ADMIN_ROLE {
            return refuse(ErrorCode::FailedPrecondition, "the built-in admin role cannot be deleted");
        }
        let key = tx.name_key(Cf::Roles, &self.name)?;
        let Some(old) = tx.get::<RoleRecord>(Cf::Roles, &key)? else {
            return refuse(ErrorCode::NotFound, format!("no role named {:?}", self.name));
        };
        if let Err(e) = ctx.caller().require_holds(&old.rules, &format!("delete role {:?}", self.name)) {
            return Ok(Err(e));
        }
        if tx.state_version() >= ROLE_EDITS_GUARD_HOLDERS {
            let what = format!("delete role {:?}, held by", self.name);
            if let Err(e) = require_holds_holders(tx, ctx.caller(), &self.name, &what)? {
                return Ok(Err(e));
            }
        }
        let revision = tx.next_revision();
        tx.delete(Cf::Roles, &key);
        for (p, mut rec) in holders(tx, &self.name)? {
            rec.roles.retain(|r| r != &self.name);
            rec.updated_revision = revision;
            rec.updated_ms = tx.clock_ms();
            put_principal(tx, &p, &rec)?;
        }
        Ok(Ok(Outcome::Done))
    }
}

/// Every user and client whose role list names `role`.
pub(crate) fn holders(tx: &Tx<'_>, role: &str) -> Result<Vec<(Principal, PrincipalRecord)>, DbError> {
    let mut out = Vec::new();
    for_each_principal(tx, |cf, rec| {
        if rec.roles.iter().any(|r| r == role) {
            let p = match cf {
                Cf::Users => Principal::User(rec.name.clone()),
                _ => Principal::Client(rec.name.clone()),
            };
            out.push((p, rec));
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}
