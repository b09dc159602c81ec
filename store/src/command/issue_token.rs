use serde::{Deserialize, Serialize};

use super::create_user::put_principal;
use super::{refuse, validate_role_names, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::{principal_record, token_expiry_key, Principal, TokenHash, TokenRecord};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Issues an access token after the receiving node checked a password or a
/// client secret against `verified_credential`. Apply re-checks everything
/// that may have changed since: the credential, enabled, locked, scopes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueToken {
    pub principal: Principal,
    pub verified_credential: String,
    pub token_hash: TokenHash,
    pub expires_ms: u64,
    pub renew_until_ms: u64,
    /// Service clients: the roles the token may use (all of the client's
    /// roles when the request named none). `None` for users.
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for IssueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueToken")
            .field("principal", &self.principal)
            .field("verified_credential", &super::Redacted(self.verified_credential.as_ref()))
            .field("token_hash", &super::Redacted(self.token_hash.as_ref()))
            .field("expires_ms", &self.expires_ms)
            .field("renew_until_ms", &self.renew_until_ms)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The same answer for every way a login can fail (no enumeration).
pub const LOGIN_FAILED: &str = "invalid credentials, or the account is disabled or locked";

impl IssueToken {
    pub fn validate(&self) -> Result<(), CommandError> {
        self.principal.validate()?;
        if self.expires_ms > self.renew_until_ms {
            return Err(CommandError::invalid("expires_ms is after renew_until_ms"));
        }
        match &self.scopes {
            Some(s) if matches!(self.principal, Principal::Client(_)) => validate_role_names(s),
            Some(_) => Err(CommandError::invalid("only service-client tokens carry scopes")),
            None => Ok(()),
        }
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        let p = &self.principal;
        let now_ms = tx.clock_ms();
        let Some(mut rec) = principal_record(tx, p)? else {
            return refuse(ErrorCode::Unauthenticated, LOGIN_FAILED);
        };
        if rec.credential != self.verified_credential || !rec.enabled || rec.locked(now_ms) {
            return refuse(ErrorCode::Unauthenticated, LOGIN_FAILED);
        }
        if let Some(scopes) = &self.scopes {
            if let Some(s) = scopes.iter().find(|s| !rec.roles.contains(s)) {
                return refuse(ErrorCode::PermissionDenied, format!("scope {s:?} is not granted to {p}"));
            }
        }
        if self.expires_ms <= now_ms {
            return refuse(ErrorCode::InvalidArgument, "the token would already be expired");
        }
        let revision = tx.next_revision();
        if !rec.failed_logins_ms.is_empty() {
            rec.failed_logins_ms.clear();
            rec.updated_revision = revision;
            put_principal(tx, p, &rec)?;
        }
        let token = TokenRecord {
            principal: p.clone(),
            epoch: rec.epoch,
            scopes: self.scopes.clone(),
            issued_ms: now_ms,
            expires_ms: self.expires_ms,
            renew_until_ms: self.renew_until_ms,
        };
        tx.put(Cf::Tokens, &self.token_hash, &token);
        tx.put(Cf::TokensByExpiry, &token_expiry_key(self.expires_ms, &self.token_hash), &());
        Ok(Ok(Outcome::TokenIssued { expires_ms: self.expires_ms }))
    }
}
