use serde::{Deserialize, Serialize};

use super::{refuse, validate_credential, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{validate_name, Action, Effect, PrincipalRecord, Read, RoleRecord, Rule, ADMIN_ROLE};
use crate::layout::{sm_keys, Cf};
use crate::state_machine::Tx;

/// The first admin of a new cluster: creates the `admin` role (admin on
/// everything) and one user holding it. Applies once per cluster, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub username: String,
    pub password_phc: String,
}

impl Bootstrap {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_name("user", &self.username)?;
        validate_credential(&self.password_phc)
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if tx.get::<bool>(Cf::SmMeta, sm_keys::BOOTSTRAPPED)?.is_some() {
            return refuse(ErrorCode::FailedPrecondition, "the cluster already has its first admin");
        }
        let revision = tx.next_revision();
        let now_ms = tx.clock_ms();
        let rules = vec![Rule { effect: Effect::Allow, action: Action::Admin, resource: "*".into() }];
        tx.put(
            Cf::Roles,
            ADMIN_ROLE.as_bytes(),
            &RoleRecord { rules, created_revision: revision, updated_revision: revision, updated_ms: now_ms },
        );
        let user = PrincipalRecord::new(self.password_phc.clone(), vec![ADMIN_ROLE.into()], revision, now_ms);
        tx.put(Cf::Users, self.username.as_bytes(), &user);
        tx.put(Cf::SmMeta, sm_keys::BOOTSTRAPPED, &true);
        Ok(Ok(Outcome::Done))
    }
}
