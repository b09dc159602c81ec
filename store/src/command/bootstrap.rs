use serde::{Deserialize, Serialize};

use super::{refuse, validate_credential, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{validate_name, Action, Effect, PrincipalRecord, Read, RoleRecord, Rule, ADMIN_ROLE};
use crate::layout::{sm_keys, Cf};
use crate::names::NameKey;
use crate::state_machine::Tx;

/// The first admin of a new cluster: creates the `admin` role (admin on
/// everything) and one user holding it, and sets the cluster's name key
/// (drawn by the proposing node; see `names`). Applies once per cluster, ever.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub username: String,
    pub password_phc: String,
    pub name_key: NameKey,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("username", &self.username)
            .field("password_phc", &super::Redacted(self.password_phc.as_ref()))
            .field("name_key", &self.name_key)
            .finish()
    }
}

impl Bootstrap {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_name("user", &self.username)?;
        if self.name_key == NameKey::unset() {
            return Err(CommandError::invalid("the name key must be drawn at random"));
        }
        validate_credential(&self.password_phc)
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if tx.get::<bool>(Cf::SmMeta, sm_keys::BOOTSTRAPPED)?.is_some() {
            return refuse(ErrorCode::FailedPrecondition, "the cluster already has its first admin");
        }
        tx.put(Cf::SmMeta, sm_keys::NAME_KEY, &self.name_key);
        tx.names = self.name_key.clone();
        let revision = tx.next_revision();
        let now_ms = tx.clock_ms();
        let rules = vec![Rule { effect: Effect::Allow, action: Action::Admin, resource: "*".into() }];
        let role = RoleRecord {
            name: ADMIN_ROLE.into(),
            rules,
            created_revision: revision,
            updated_revision: revision,
            updated_ms: now_ms,
        };
        tx.put(Cf::Roles, &tx.name_key(Cf::Roles, ADMIN_ROLE)?, &role);
        let roles = vec![ADMIN_ROLE.into()];
        let user =
            PrincipalRecord::new(self.username.clone(), self.password_phc.clone(), roles, revision, now_ms);
        tx.put(Cf::Users, &tx.name_key(Cf::Users, &self.username)?, &user);
        tx.put(Cf::SmMeta, sm_keys::BOOTSTRAPPED, &true);
        Ok(Ok(Outcome::Done))
    }
}
