//! User administration. Passwords are hashed here, on the receiving node,
//! before anything is proposed.

use strongbox_proto::v1::users_server::Users;
use strongbox_proto::v1::*;
use strongbox_store::auth::{validate_name, Principal, PrincipalRecord};
use strongbox_store::command::{CreateUser, DeletePrincipal, SetEnabled, SetPassword, UnlockUser};
use strongbox_store::Op;
use tonic::{Request, Response, Status};

use super::{internal, next_token, page, token_of, Api, Written};
use crate::auth::{password, Rpc};
use crate::observe::{check_size, now_ms};

pub struct UsersService {
    api: Api,
}

impl UsersService {
    pub fn new(api: Api) -> Self {
        UsersService { api }
    }

    async fn simple(
        &self,
        req: Request<UserRequest>,
        rpc_: Rpc,
        op: fn(String) -> Op,
    ) -> Result<WriteResponse, Status> {
        check_size(req.get_ref())?;
        let (meta, _, r) = req.into_parts();
        username_arg(&r.username)?;
        let w = self.api.write(&meta, rpc_, "", r.options.as_ref(), op(r.username)).await?;
        Ok(written(w))
    }
}

impl UsersService {
    /// A request id answered from the dedup table says nothing about the
    /// password: its hash is salted afresh on every attempt, so a retry
    /// cannot be told from a different request by its command. The stored
    /// hash can: a retry of the same request matches it; anything else
    /// must not hear "done" while the other password stays in force.
    async fn same_password_if_retried(
        &self,
        w: &Written,
        username: &str,
        pw: zeroize::Zeroizing<String>,
    ) -> Result<(), Status> {
        if !w.deduplicated {
            return Ok(());
        }
        // The answer may come from the leader before this node has applied
        // the first attempt: read the hash as of that attempt at least.
        self.api.node.read_barrier(false, w.revision, None, crate::limits::READ_TIMEOUT).await?;
        let stored = self.api.node.sm.principal(&Principal::User(username.to_string())).map_err(internal)?;
        if self.api.auth.hasher.verify(pw, stored.map(|r| r.credential)).await? {
            return Ok(());
        }
        Err(Status::failed_precondition(
            "options.request_id: already used for a request with another password (or the password has \
             changed since); this request changed nothing. Use a new request id",
        ))
    }
}

pub fn written(w: Written) -> WriteResponse {
    WriteResponse { revision: w.revision, deduplicated: w.deduplicated }
}

fn username_arg(u: &str) -> Result<(), Status> {
    validate_name("user", u).map_err(|e| Status::invalid_argument(format!("username: {}", e.message)))
}

fn user_view(username: String, r: PrincipalRecord) -> User {
    User {
        username,
        enabled: r.enabled,
        roles: r.roles.clone(),
        locked: r.locked(now_ms()),
        locked_until_ms: r.locked_until_ms,
        recent_failed_logins: r.failed_logins_ms.len() as u32,
        created_revision: r.created_revision,
        created_ms: r.created_ms,
        updated_revision: r.updated_revision,
        updated_ms: r.updated_ms,
    }
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn create(&self, req: Request<CreateUserRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.create", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                username_arg(&r.username)?;
                let pw = password("password", r.password, true)?;
                self.api.precheck(&meta, Rpc::UsersCreate, "").await?;
                // Cheap checks before the expensive hash.
                strongbox_store::command::validate_role_names(&r.roles)
                    .map_err(|e| crate::observe::field_status("roles", e))?;
                let password_phc = self.api.auth.hasher.hash(pw.clone()).await?;
                let username = r.username.clone();
                let op = Op::CreateUser(CreateUser { username: r.username, password_phc, roles: r.roles });
                let w = self.api.write(&meta, Rpc::UsersCreate, "", r.options.as_ref(), op).await?;
                self.same_password_if_retried(&w, &username, pw).await?;
                Ok(written(w))
            })
            .await
    }

    async fn get(&self, req: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.api
            .rpc("users.get", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                username_arg(&r.username)?;
                self.api.read(&meta, Rpc::UsersGet, "", r.options.as_ref()).await?;
                let p = Principal::User(r.username.clone());
                match self.api.node.sm.principal(&p).map_err(internal)? {
                    Some(rec) => Ok(user_view(r.username, rec)),
                    None => Err(Status::not_found(format!("no user {:?}", r.username))),
                }
            })
            .await
    }

    async fn list(&self, req: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        self.api
            .rpc("users.list", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let (size, after) = page(r.page.as_ref())?;
                self.api.read(&meta, Rpc::UsersList, "", r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                let rows = self.api.node.sm.list_principals(false, &after, size).map_err(internal)?;
                let next_page_token = next_token(&rows, size, |(n, _)| n.clone());
                Ok(ListUsersResponse {
                    users: rows.into_iter().map(|(n, rec)| user_view(n, rec)).collect(),
                    next_page_token,
                    revision,
                })
            })
            .await
    }

    async fn delete(&self, req: Request<UserRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.delete", token_of(req.metadata()), async {
                self.simple(req, Rpc::UsersDelete, |u| {
                    Op::DeletePrincipal(DeletePrincipal { principal: Principal::User(u) })
                })
                .await
            })
            .await
    }

    async fn disable(&self, req: Request<UserRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.disable", token_of(req.metadata()), async {
                self.simple(req, Rpc::UsersDisable, |u| {
                    Op::SetEnabled(SetEnabled { principal: Principal::User(u), enabled: false })
                })
                .await
            })
            .await
    }

    async fn enable(&self, req: Request<UserRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.enable", token_of(req.metadata()), async {
                self.simple(req, Rpc::UsersEnable, |u| {
                    Op::SetEnabled(SetEnabled { principal: Principal::User(u), enabled: true })
                })
                .await
            })
            .await
    }

    async fn set_password(
        &self,
        req: Request<SetPasswordRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.set_password", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                username_arg(&r.username)?;
                let pw = password("password", r.password, true)?;
                self.api.precheck(&meta, Rpc::UsersSetPassword, "").await?;
                let password_phc = self.api.auth.hasher.hash(pw.clone()).await?;
                let username = r.username.clone();
                let op = Op::SetPassword(SetPassword { username: r.username, password_phc });
                let w = self.api.write(&meta, Rpc::UsersSetPassword, "", r.options.as_ref(), op).await?;
                self.same_password_if_retried(&w, &username, pw).await?;
                Ok(written(w))
            })
            .await
    }

    async fn unlock(&self, req: Request<UserRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("users.unlock", token_of(req.metadata()), async {
                self.simple(req, Rpc::UsersUnlock, |u| Op::UnlockUser(UnlockUser { username: u })).await
            })
            .await
    }
}
