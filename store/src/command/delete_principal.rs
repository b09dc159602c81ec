use serde::{Deserialize, Serialize};

use super::{principal_resource, refuse, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{principal_record, Access, Action, Principal, Read};
use crate::state_machine::Tx;

/// Deletes a user or client. Its tokens stop working at once: they name a
/// principal that no longer exists (and a re-created one has a new epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePrincipal {
    pub principal: Principal,
}

impl DeletePrincipal {
    pub fn validate(&self) -> Result<(), CommandError> {
        self.principal.validate()
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, principal_resource(&self.principal)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = &self.principal;
        let Some(rec) = principal_record(tx, p)? else {
            return refuse(ErrorCode::NotFound, format!("no {p}"));
        };
        if let Err(e) = super::require_holds_principal(tx, ctx.caller(), p, "delete")? {
            return Ok(Err(e));
        }
        if let Err(e) = super::keep_an_admin(tx, p, &rec, None)? {
            return Ok(Err(e));
        }
        tx.next_revision();
        let key = tx.name_key(p.cf(), p.name())?;
        tx.delete(p.cf(), &key);
        Ok(Ok(Outcome::Done))
    }
}
