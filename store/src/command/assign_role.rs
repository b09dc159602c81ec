use serde::{Deserialize, Serialize};

use super::create_user::put_principal;
use super::set_state_version::ROLE_EDITS_GUARD_HOLDERS;
use super::{
    check_roles_exist, keep_an_unhindered_admin, refuse, require_holds_roles, Applied, CommandError, Ctx,
    ErrorCode, Outcome, Required, RightsChange,
};
use crate::auth::{principal_record, validate_name, Access, Action, Principal};
use crate::limits::ROLES_PER_PRINCIPAL_MAX;
use crate::state_machine::Tx;

/// Assigns a role to a user or client, or takes it away. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignRole {
    pub principal: Principal,
    pub role: String,
    pub assign: bool,
}

impl AssignRole {
    pub fn validate(&self) -> Result<(), CommandError> {
        self.principal.validate()?;
        validate_name("role", &self.role)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "roles"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = &self.principal;
        let Some(mut rec) = principal_record(tx, p)? else {
            return refuse(ErrorCode::NotFound, format!("no {p}"));
        };
        let caller = ctx.caller();
        if let Err(e) = require_holds_roles(tx, caller, &rec.roles, &format!("change the roles of {p}"))? {
            return Ok(Err(e));
        }
        let what = if self.assign { format!("give {p} a role") } else { format!("take a role from {p}") };
        if let Err(e) = require_holds_roles(tx, caller, std::slice::from_ref(&self.role), &what)? {
            return Ok(Err(e));
        }
        let has = rec.roles.contains(&self.role);
        if has == self.assign {
            return Ok(Ok(Outcome::Done));
        }
        let guarded = tx.state_version() >= ROLE_EDITS_GUARD_HOLDERS;
        if self.assign {
            if let Err(e) = check_roles_exist(tx, std::slice::from_ref(&self.role))? {
                return Ok(Err(e));
            }
            if rec.roles.len() >= ROLES_PER_PRINCIPAL_MAX {
                return refuse(
                    ErrorCode::ResourceExhausted,
                    format!("{p} already has the maximum of {ROLES_PER_PRINCIPAL_MAX} roles"),
                );
            }
            let mut after = rec.clone();
            after.roles.push(self.role.clone());
            after.roles.sort();
            // A role whose deny rules would hinder the last unhindered admin.
            if guarded {
                let change = RightsChange { principal: Some((p, Some(&after))), ..Default::default() };
                let what = format!("giving {p} role {:?}", self.role);
                if let Err(e) = keep_an_unhindered_admin(tx, &change, &what)? {
                    return Ok(Err(e));
                }
            }
            rec = after;
        } else {
            let mut after = rec.clone();
            after.roles.retain(|r| r != &self.role);
            if guarded || self.role == crate::auth::ADMIN_ROLE {
                if let Err(e) = super::keep_an_admin(tx, p, &rec, Some(&after))? {
                    return Ok(Err(e));
                }
            }
            rec = after;
        }
        rec.updated_revision = tx.next_revision();
        rec.updated_ms = tx.clock_ms();
        put_principal(tx, p, &rec)?;
        Ok(Ok(Outcome::Done))
    }
}
