use serde::{Deserialize, Serialize};

use super::set_state_version::ROLE_EDITS_GUARD_HOLDERS;
use super::{
    keep_an_unhindered_admin, refuse, require_holds_holders, Applied, CommandError, Ctx, ErrorCode, Outcome,
    Required, RightsChange,
};
use crate::auth::{validate_name, validate_rules, Access, Action, Read, RoleRecord, Rule, ADMIN_ROLE};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Creates a role or replaces its rules. Holders see the new rules on their
/// next request (reads) or the next write applied (writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRole {
    pub name: String,
    pub rules: Vec<Rule>,
}

impl PutRole {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_name("role", &self.name)?;
        validate_rules(&self.rules)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "roles"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        if self.name == ADMIN_ROLE {
            return refuse(ErrorCode::FailedPrecondition, "the built-in admin role cannot be changed");
        }
        let key = tx.name_key(Cf::Roles, &self.name)?;
        let old = tx.get::<RoleRecord>(Cf::Roles, &key)?;
        // Its holders get the new rules at once, and lose the old ones.
        let caller = ctx.caller();
        let what = format!("define role {:?}", self.name);
        if let Err(e) = caller.require_holds(&self.rules, &what) {
            return Ok(Err(e));
        }
        if let Some(old) = &old {
            if let Err(e) = caller.require_holds(&old.rules, &format!("change role {:?}", self.name)) {
                return Ok(Err(e));
            }
            if tx.state_version() >= ROLE_EDITS_GUARD_HOLDERS {
                let what = format!("change role {:?}, held by", self.name);
                if let Err(e) = require_holds_holders(tx, caller, &self.name, &what)? {
                    return Ok(Err(e));
                }
                let change =
                    RightsChange { role: Some((&self.name, Some(&self.rules))), ..Default::default() };
                let what = format!("changing role {:?}", self.name);
                if let Err(e) = keep_an_unhindered_admin(tx, &change, &what)? {
                    return Ok(Err(e));
                }
            }
        }
        let revision = tx.next_revision();
        let role = RoleRecord {
            name: self.name.clone(),
            rules: self.rules.clone(),
            created_revision: old.map_or(revision, |o| o.created_revision),
            updated_revision: revision,
            updated_ms: tx.clock_ms(),
        };
        tx.put(Cf::Roles, &key, &role);
        Ok(Ok(Outcome::Done))
    }
}
