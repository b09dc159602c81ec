//! What a client asked for, as opposed to what the proposing node stamped
//! into the command: the part a retry must repeat to be the same request.
//!
//! A retry of a request is proposed again, and the node that proposes it
//! stamps new salts, generated secrets and clock-derived times. A digest of
//! the whole op would call every such retry "different"; a digest of the
//! client's part tells a real retry from a request id reused for another
//! request (answering that with the first request's result would tell a
//! client something happened that never did).

use sha2::{Digest, Sha256};

use super::{
    Bootstrap, ChangePassword, CreateClient, CreateUser, IssueToken, Op, RenewToken, RotateClientSecret,
    SetPassword,
};

/// Bytes of an intent digest (a truncated SHA-256; collisions only matter
/// between one caller's own requests under one request id).
pub(crate) const INTENT_BYTES: usize = 16;

pub(crate) type Intent = [u8; INTENT_BYTES];

impl Op {
    /// The digest of what the client chose in this op.
    pub(crate) fn intent(&self) -> Intent {
        let stamped_cleared;
        let op = match self.without_stamps() {
            Some(op) => {
                stamped_cleared = op;
                &stamped_cleared
            }
            None => self,
        };
        let digest = Sha256::digest(crate::db::encode(op));
        digest[..INTENT_BYTES].try_into().expect("a SHA-256 digest is 32 bytes")
    }

    /// A copy with the proposing node's stamps blanked, for the ops that
    /// carry any; `None` for ops that are the client's words alone (most,
    /// a ledger batch of thousands of transfers among them: not copied).
    fn without_stamps(&self) -> Option<Op> {
        Some(match self {
            // Salted hashes and generated secrets: new on every proposal.
            // (The password itself cannot be compared; the name and roles can.)
            Op::Bootstrap(c) => Op::Bootstrap(Bootstrap {
                password_phc: String::new(),
                name_key: crate::names::NameKey::from([0u8; 32]),
                ..c.clone()
            }),
            Op::CreateUser(c) => Op::CreateUser(CreateUser { password_phc: String::new(), ..c.clone() }),
            Op::SetPassword(c) => Op::SetPassword(SetPassword { password_phc: String::new(), ..c.clone() }),
            Op::ChangePassword(c) => Op::ChangePassword(ChangePassword {
                expected_phc: String::new(),
                new_phc: String::new(),
                ..c.clone()
            }),
            Op::CreateClient(c) => {
                Op::CreateClient(CreateClient { secret_digest: String::new(), ..c.clone() })
            }
            Op::RotateClientSecret(c) => {
                Op::RotateClientSecret(RotateClientSecret { secret_digest: String::new(), ..c.clone() })
            }
            // Generated token and expiries computed from the node's clock.
            Op::IssueToken(c) => Op::IssueToken(IssueToken {
                token_hash: [0; 32],
                expires_ms: 0,
                renew_until_ms: 0,
                ..c.clone()
            }),
            Op::RenewToken(c) => Op::RenewToken(RenewToken { expires_ms: 0, ..c.clone() }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CreateUser, PutSecret, RenewToken};

    fn put(value: &str) -> Op {
        Op::PutSecret(PutSecret { path: "a/b".into(), value: value.into(), cas: None, max_versions: None })
    }

    #[test]
    fn a_different_body_is_a_different_intent() {
        assert_eq!(put("x").intent(), put("x").intent());
        assert_ne!(put("x").intent(), put("y").intent());
        let del = Op::DeleteSecret(crate::command::DeleteSecret { path: "a/b".into() });
        assert_ne!(put("x").intent(), del.intent(), "another kind of request");
    }

    #[test]
    fn what_the_proposer_stamps_is_not_part_of_the_intent() {
        let user = |phc: &str, roles: &[&str]| {
            Op::CreateUser(CreateUser {
                username: "bob".into(),
                password_phc: phc.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
        };
        assert_eq!(user("$argon2id$salt1", &[]).intent(), user("$argon2id$salt2", &[]).intent());
        assert_ne!(user("$argon2id$salt1", &[]).intent(), user("$argon2id$salt1", &["ops"]).intent());
        let renew = |ms| Op::RenewToken(RenewToken { expires_ms: ms });
        assert_eq!(renew(1_000).intent(), renew(2_000).intent());
    }
}
