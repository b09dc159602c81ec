use serde::{Deserialize, Serialize};

use super::{Applied, CommandError, Ctx, Outcome, Required};
use crate::auth::token_expiry_key;
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Extends the caller's own token to `expires_ms`, never past the token's
/// `renew_until_ms` and never shortening it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewToken {
    pub expires_ms: u64,
}

impl RenewToken {
    pub fn validate(&self) -> Result<(), CommandError> {
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Authenticated
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let caller = ctx.caller();
        let mut token = caller.token.clone();
        let expires_ms = self.expires_ms.min(token.renew_until_ms).max(token.expires_ms);
        if expires_ms != token.expires_ms {
            tx.next_revision();
            tx.delete(Cf::TokensByExpiry, &token_expiry_key(token.expires_ms, &caller.token_hash));
            tx.put(Cf::TokensByExpiry, &token_expiry_key(expires_ms, &caller.token_hash), &());
            token.expires_ms = expires_ms;
            tx.put(Cf::Tokens, &caller.token_hash, &token);
        }
        Ok(Ok(Outcome::TokenRenewed { expires_ms }))
    }
}
