use serde::{Deserialize, Serialize};

use super::create_user::create_principal;
use super::{validate_credential, validate_role_names, Applied, CommandError, Ctx, Outcome, Required};
use crate::auth::{Access, Action, Principal};
use crate::state_machine::Tx;

/// Creates a service client (OAuth2 client-credentials). The node generated
/// the secret, showed it once, and sends only its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClient {
    pub client_id: String,
    pub secret_digest: String,
    pub roles: Vec<String>,
}

impl std::fmt::Debug for CreateClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateClient")
            .field("client_id", &self.client_id)
            .field("secret_digest", &super::Redacted(self.secret_digest.as_ref()))
            .field("roles", &self.roles)
            .finish()
    }
}

impl CreateClient {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::Client(self.client_id.clone()).validate()?;
        validate_credential(&self.secret_digest)?;
        validate_role_names(&self.roles)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "clients"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let created = create_principal(
            tx,
            ctx,
            &Principal::Client(self.client_id.clone()),
            &self.secret_digest,
            &self.roles,
        )?;
        Ok(created.map(|_| Outcome::ClientCreated { secret_digest: self.secret_digest.clone() }))
    }
}
