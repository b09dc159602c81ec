use serde::{Deserialize, Serialize};

use super::{
    check_roles_exist, refuse, require_holds_roles, validate_credential, validate_role_names, Applied,
    CommandError, Ctx, ErrorCode, Outcome, Required,
};
use crate::auth::{principal_record, Access, Action, Principal, PrincipalRecord, Read};
use crate::state_machine::Tx;
use crate::DbError;

/// Creates a user with an argon2id password hash computed by the node that
/// received the request (never inside apply).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    pub username: String,
    pub password_phc: String,
    pub roles: Vec<String>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("username", &self.username)
            .field("password_phc", &super::Redacted(self.password_phc.as_ref()))
            .field("roles", &self.roles)
            .finish()
    }
}

impl CreateUser {
    pub fn validate(&self) -> Result<(), CommandError> {
        Principal::User(self.username.clone()).validate()?;
        validate_credential(&self.password_phc)?;
        validate_role_names(&self.roles)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, "users"))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        create_principal(tx, ctx, &Principal::User(self.username.clone()), &self.password_phc, &self.roles)
    }
}

/// Shared by users and clients: refuses duplicates, unknown roles and
/// roles that carry rights the caller does not hold.
pub(super) fn create_principal(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    p: &Principal,
    credential: &str,
    roles: &[String],
) -> Applied {
    if principal_record(tx, p)?.is_some() {
        return refuse(ErrorCode::AlreadyExists, format!("{p} already exists"));
    }
    if let Err(e) = check_roles_exist(tx, roles)? {
        return Ok(Err(e));
    }
    if let Err(e) = require_holds_roles(tx, ctx.caller(), roles, &format!("create {p} with its roles"))? {
        return Ok(Err(e));
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let revision = tx.next_revision();
    let rec =
        PrincipalRecord::new(p.name().to_string(), credential.to_string(), roles, revision, tx.clock_ms());
    put_principal(tx, p, &rec)?;
    Ok(Ok(Outcome::Done))
}

/// Stores a principal's record under its keyed name.
pub(super) fn put_principal(tx: &mut Tx<'_>, p: &Principal, rec: &PrincipalRecord) -> Result<(), DbError> {
    let key = tx.name_key(p.cf(), p.name())?;
    tx.put(p.cf(), &key, rec);
    Ok(())
}

/// Loads a principal (NOT_FOUND if absent), lets `change` edit it under the
/// command's new revision, stamps the update and stores it.
pub(super) fn update_principal(
    tx: &mut Tx<'_>,
    p: &Principal,
    change: impl FnOnce(&mut PrincipalRecord, u64),
) -> Applied {
    let Some(mut rec) = principal_record(tx, p)? else {
        return refuse(ErrorCode::NotFound, format!("no {p}"));
    };
    let revision = tx.next_revision();
    change(&mut rec, revision);
    rec.updated_revision = revision;
    rec.updated_ms = tx.clock_ms();
    put_principal(tx, p, &rec)?;
    Ok(Ok(Outcome::Done))
}
