use serde::{Deserialize, Serialize};

use super::create_user::update_principal;
use super::set_state_version::CLIENT_SECRET_ROTATION;
use super::{
    below_state_version, require_holds_principal, validate_credential, Applied, CommandError, Ctx, Outcome,
    Required,
};
use crate::auth::{Access, Action, Principal};
use crate::state_machine::Tx;

/// Replaces a service client's secret (a leaked or expiring one). The node
/// generated the new secret, shows it once, and sends only its SHA-256.
/// Tokens issued under the old secret die with it, as a password reset
/// ends a user's sessions: a leaked secret may have minted them. The caller
/// must hold every right the client holds (else rotating a greater client's
/// secret would hand its rights to whoever rotated it). From state version
/// `CLIENT_SECRET_ROTATION` on.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateClientSecret {
    pub client_id: String,
    pub secret_digest: String,
}

impl std::fmt::Debug for RotateClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateClientSecret")
            .field("client_id", &self.client_id)
            .field("secret_digest", &super::Redacted(self.secret_digest.as_ref()))
            .finish()
    }
}

impl RotateClientSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::Client(self.client_id.clone()).validate()?;
        validate_credential(&self.secret_digest)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "clients"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        if let Some(e) = below_state_version(tx, CLIENT_SECRET_ROTATION, "rotating a client secret") {
            return Ok(Err(e));
        }
        let p = Principal::Client(self.client_id.clone());
        if let Err(e) = require_holds_principal(tx, ctx.caller(), &p, "rotate the secret of")? {
            return Ok(Err(e));
        }
        let done = update_principal(tx, &p, |rec, revision| {
            rec.credential = self.secret_digest.clone();
            rec.epoch = revision;
        })?;
        Ok(done.map(|_| Outcome::ClientSecretRotated { secret_digest: self.secret_digest.clone() }))
    }
}
