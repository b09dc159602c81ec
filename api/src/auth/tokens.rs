//! Opaque bearer tokens and client secrets: 256 random bits, shown once,
//! stored only as SHA-256 (a fast hash is enough for high-entropy values).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use strongbox_store::auth::TokenHash;
use tonic::metadata::MetadataMap;
use tonic::Status;
use zeroize::Zeroizing;

const TOKEN_PREFIX: &str = "sbx_";
const CLIENT_SECRET_PREFIX: &str = "sbxc_";
/// Longest bearer value we bother hashing.
const TOKEN_BYTES_MAX: usize = 256;

fn random_string(prefix: &str) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::fill(&mut raw[..]);
    Zeroizing::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&raw[..])))
}

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A token named in a request body (Revoke, Introspect): the same forms a
/// bearer header takes (an optional `Bearer `, spaces around), and it must
/// look like a token this cluster issues, so a pasted token in the wrong
/// form is refused instead of quietly matching nothing.
pub fn token_arg(field: &str, raw: &str) -> Result<TokenHash, Status> {
    let t = raw.trim();
    let t = t.strip_prefix("Bearer ").or_else(|| t.strip_prefix("bearer ")).unwrap_or(t).trim();
    let body = t.strip_prefix(TOKEN_PREFIX).unwrap_or("");
    let well_formed = body.len() == TOKEN_BODY_CHARS
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(Status::invalid_argument(format!(
            "{field}: not a strongbox token ({TOKEN_PREFIX} and {TOKEN_BODY_CHARS} characters)"
        )));
    }
    Ok(token_hash(t))
}

/// Characters after the prefix: 32 random bytes in unpadded base64url.
const TOKEN_BODY_CHARS: usize = 43;

/// A new access token and the hash the cluster stores.
pub fn new_token() -> (Zeroizing<String>, TokenHash) {
    let t = random_string(TOKEN_PREFIX);
    let h = token_hash(&t);
    (t, h)
}

/// A new client secret and its stored digest (hex SHA-256).
pub fn new_client_secret() -> (Zeroizing<String>, String) {
    let s = random_string(CLIENT_SECRET_PREFIX);
    let d = client_secret_digest(&s);
    (s, d)
}

pub fn client_secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The hash of the `authorization: Bearer <token>` of a request.
pub fn bearer(meta: &MetadataMap) -> Result<TokenHash, Status> {
    let Some(v) = meta.get("authorization") else {
        return Err(Status::unauthenticated(
            "missing authorization metadata: send `authorization: Bearer <token>` (get one with Auth.Login)",
        ));
    };
    // Which of two would count is a guess a proxy and this node could make
    // differently: refused rather than picked.
    if meta.get_all("authorization").iter().nth(1).is_some() {
        return Err(Status::unauthenticated("more than one authorization metadata entry: send exactly one"));
    }
    let v = v.to_str().map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization metadata must be `Bearer <token>`"))?
        .trim();
    if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
        return Err(Status::unauthenticated("the bearer token is empty or too long"));
    }
    Ok(token_hash(token))
}
