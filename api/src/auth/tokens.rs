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
