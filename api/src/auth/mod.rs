//! Authentication on the serving node: bearer tokens, password hashing,
//! and the permission table. The authoritative check of a write happens
//! inside apply (`strongbox_store::auth`); this module checks reads and
//! turns away bad requests before they reach the log.

pub mod hasher;
pub mod permissions;
pub mod throttle;
pub mod tokens;

pub use hasher::Hasher;
pub use permissions::{Need, Rpc};

use zeroize::Zeroizing;

use crate::config::AuthSettings;

/// Passwords accepted for new users: length only (NIST SP 800-63B).
pub const PASSWORD_CHARS_MIN: usize = 8;
pub const PASSWORD_BYTES_MAX: usize = 1024;

pub struct Auth {
    pub hasher: Hasher,
    pub settings: AuthSettings,
}

impl Auth {
    pub fn new(settings: AuthSettings) -> anyhow::Result<Auth> {
        Ok(Auth { hasher: Hasher::new(&settings)?, settings })
    }
}

/// A password from a request, wiped from memory when dropped.
pub fn password(field: &str, value: String, new: bool) -> Result<Zeroizing<String>, tonic::Status> {
    let value = Zeroizing::new(value);
    if value.len() > PASSWORD_BYTES_MAX {
        return Err(tonic::Status::invalid_argument(format!("{field}: at most {PASSWORD_BYTES_MAX} bytes")));
    }
    if new && value.chars().count() < PASSWORD_CHARS_MIN {
        return Err(tonic::Status::invalid_argument(format!(
            "{field}: at least {PASSWORD_CHARS_MIN} characters"
        )));
    }
    if value.is_empty() {
        return Err(tonic::Status::invalid_argument(format!("{field}: required")));
    }
    Ok(value)
}
