use serde::{Deserialize, Serialize};

use super::create_user::put_principal;
use super::{principal_resource, refuse, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{principal_record, Access, Action, Principal};
use crate::state_machine::Tx;

/// Disables or enables a user or client. Disabling moves the principal to a
/// new epoch, so tokens issued before stay dead after re-enabling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEnabled {
    pub principal: Principal,
    pub enabled: bool,
}

impl SetEnabled {
    pub fn validate(&self) -> Result<(), CommandError> {
        self.principal.validate()
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, principal_resource(&self.principal)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let p = &self.principal;
        let Some(mut rec) = principal_record(tx, p)? else {
            return refuse(ErrorCode::NotFound, format!("no {p}"));
        };
        let what = if self.enabled { "enable" } else { "disable" };
        if let Err(e) = super::require_holds_principal(tx, ctx.caller(), p, what)? {
            return Ok(Err(e));
        }
        if rec.enabled == self.enabled {
            return Ok(Ok(Outcome::Done));
        }
        if !self.enabled {
            let after = crate::auth::PrincipalRecord { enabled: false, ..rec.clone() };
            if let Err(e) = super::keep_an_admin(tx, p, &rec, Some(&after))? {
                return Ok(Err(e));
            }
        }
        let revision = tx.next_revision();
        rec.enabled = self.enabled;
        if !self.enabled {
            rec.epoch = revision;
        }
        rec.updated_revision = revision;
        rec.updated_ms = tx.clock_ms();
        put_principal(tx, p, &rec)?;
        Ok(Ok(Outcome::Done))
    }
}
