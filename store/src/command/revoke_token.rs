use serde::{Deserialize, Serialize};

use super::{Applied, CommandError, Ctx, Outcome, Required};
use crate::auth::{token_expiry_key, Access, Action, Read, TokenHash, TokenRecord};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Revokes a token (RFC 7009): a caller may revoke its own tokens, and a
/// holder of `admin` on `tokens` anyone's. An unknown or expired token is
/// revoked already, and says so without error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeToken {
    pub token_hash: TokenHash,
}

impl RevokeToken {
    pub fn validate(&self) -> Result<(), CommandError> {
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Authenticated
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        // An expired token is gone whether or not the once-per-batch prune
        // has deleted it yet: how entries fall into batches differs from
        // node to node, and the answer (and the revision) must not.
        let expired_is_gone = tx.state_version() >= super::set_state_version::EXPIRED_TOKENS_ARE_GONE;
        let token = tx
            .get::<TokenRecord>(Cf::Tokens, &self.token_hash)?
            .filter(|t| !expired_is_gone || t.expires_ms > tx.clock_ms());
        let Some(token) = token else {
            return Ok(Ok(Outcome::TokenRevoked { existed: false }));
        };
        let caller = ctx.caller();
        if token.principal != caller.principal {
            if let Err(e) = caller.require(&Access::new(Action::Admin, "tokens")) {
                return Ok(Err(e));
            }
            // Not a way to shut out a principal with more rights.
            if let Err(e) = super::require_holds_principal(tx, caller, &token.principal, "revoke a token of")?
            {
                return Ok(Err(e));
            }
        }
        tx.next_revision();
        tx.delete(Cf::Tokens, &self.token_hash);
        tx.delete(Cf::TokensByExpiry, &token_expiry_key(token.expires_ms, &self.token_hash));
        if tx.state_version() >= super::set_state_version::REVOCATIONS_NAME_THE_PRINCIPAL {
            return Ok(Ok(Outcome::TokenRevokedOf { principal: token.principal }));
        }
        Ok(Ok(Outcome::TokenRevoked { existed: true }))
    }
}
