//! Logins, the client-credentials grant, and the life of a token.

use std::time::Instant;

use strongbox_proto::v1::auth_server::Auth;
use strongbox_proto::v1::*;
use strongbox_store::auth::{validate_name, Principal};
use strongbox_store::command::issue_token::LOGIN_FAILED;
use strongbox_store::command::{
    ChangePassword, IssueToken, Outcome, RecordLoginFailure, RenewToken, RevokeToken,
};
use strongbox_store::{Actor, Command, Op};
use tonic::{Request, Response, Status};

use super::{internal, token_of, unexpected, Api, Written};
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::{bearer, client_secret_digest, new_token, token_arg};
use crate::auth::{password, Rpc};
use crate::observe::{check_size, now_ms};

pub struct AuthService {
    api: Api,
    throttle: LoginThrottle,
}

impl AuthService {
    pub fn new(api: Api) -> Self {
        AuthService { api, throttle: LoginThrottle::default() }
    }

    /// A requested lifetime: 0 = the default, capped at the maximum.
    fn ttl_ms(&self, ttl_seconds: u64) -> u64 {
        let s = &self.api.auth.settings;
        let ttl_s = if ttl_seconds == 0 { s.token_ttl_default_s } else { ttl_seconds };
        ttl_s.min(s.token_ttl_max_s).saturating_mul(1000)
    }

    /// A command the node proposes on its own behalf (login bookkeeping).
    fn node_command(&self, op: Op) -> Command {
        Command {
            request_id: uuid::Uuid::new_v4().to_string(),
            time_ms: now_ms(),
            node: self.api.node.id,
            actor: Actor::Node,
            op,
        }
    }

    async fn issue(
        &self,
        principal: Principal,
        verified_credential: String,
        ttl_seconds: u64,
        scopes: Option<Vec<String>>,
    ) -> Result<TokenResponse, Status> {
        let (token, hash) = new_token();
        let now = now_ms();
        let ttl_ms = self.ttl_ms(ttl_seconds);
        let expires_ms = now + ttl_ms;
        let renew_until_ms = now + self.api.auth.settings.token_ttl_max_s * 1000;
        let op = Op::IssueToken(IssueToken {
            principal,
            verified_credential,
            token_hash: hash,
            expires_ms,
            renew_until_ms: renew_until_ms.max(expires_ms),
            scopes: scopes.clone(),
        });
        let w = self.api.propose(self.node_command(op)).await?;
        match w.outcome {
            Outcome::TokenIssued { expires_ms } => Ok(TokenResponse {
                access_token: token.to_string(),
                token_type: "Bearer".into(),
                expires_in_seconds: ttl_ms / 1000,
                expires_ms,
                scopes: scopes.unwrap_or_default(),
                revision: w.revision,
            }),
            other => Err(unexpected(other, w.deduplicated)),
        }
    }

    async fn record_failure(&self, username: &str) -> Result<(), Status> {
        let s = &self.api.auth.settings;
        let op = Op::RecordLoginFailure(RecordLoginFailure {
            username: username.to_string(),
            failures_max: s.lockout_failures_max,
            window_ms: s.lockout_window_s * 1000,
            lockout_ms: s.lockout_duration_s * 1000,
        });
        self.api.propose(self.node_command(op)).await.map(|_| ())
    }
}

/// A new cluster has no principal until its first admin is created (a
/// command right after the first election). A login in between is not a
/// wrong password: UNAVAILABLE, and no failure is recorded, which would
/// otherwise apply after the admin exists and count against it (every new
/// `strongbox dev` cluster began with a failed admin login on record).
fn not_before_bootstrap(api: &Api) -> Result<(), Status> {
    if api.node.sm.bootstrapped().map_err(internal)? {
        return Ok(());
    }
    Err(Status::unavailable(
        "the cluster is still being initialized (its first admin does not exist yet); try again in a moment",
    ))
}

fn write_response(w: Written) -> WriteResponse {
    WriteResponse { revision: w.revision, deduplicated: w.deduplicated }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<TokenResponse>, Status> {
        self.api
            .rpc("auth.login", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                // Before any hashing or log write (see `LoginThrottle`).
                let source = req.remote_addr().map(|a| a.ip());
                if let Some(ip) = source {
                    if let Err(wait) = self.throttle.check(ip, Instant::now()) {
                        return Err(Status::resource_exhausted(format!(
                            "too many failed logins from this address; try again in {} ms",
                            wait.as_millis().max(1)
                        )));
                    }
                }
                let r = req.into_inner();
                validate_name("user", &r.username)
                    .map_err(|e| Status::invalid_argument(format!("username: {}", e.message)))?;
                let pw = password("password", r.password, false)?;
                // The user record as of now: a user created a moment ago through
                // another node is found, and its failures are counted right.
                self.api.read_barrier(None).await?;
                not_before_bootstrap(&self.api)?;
                let p = Principal::User(r.username.clone());
                let rec = self.api.node.sm.principal(&p).map_err(internal)?;
                let now = now_ms();
                // Unknown, disabled and locked users are checked against a dummy
                // hash: same work, same answer as a wrong password.
                let phc = rec.filter(|r| r.enabled && !r.locked(now)).map(|r| r.credential);
                if self.api.auth.hasher.verify(pw, phc.clone()).await? {
                    let phc = phc.expect("verify is false without a stored hash");
                    return match self.issue(p, phc, r.ttl_seconds, None).await {
                        Err(s) if s.code() == tonic::Code::Unauthenticated => {
                            Err(Status::unauthenticated(LOGIN_FAILED))
                        }
                        other => other,
                    };
                }
                if let Some(ip) = source {
                    self.throttle.failed(ip, Instant::now());
                }
                self.record_failure(&r.username).await?;
                Err(Status::unauthenticated(LOGIN_FAILED))
            })
            .await
    }

    async fn client_token(
        &self,
        req: Request<ClientTokenRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        self.api
            .rpc("auth.client_token", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let r = req.into_inner();
                if !r.grant_type.is_empty() && r.grant_type != "client_credentials" {
                    return Err(Status::invalid_argument(format!(
                        "grant_type: only \"client_credentials\" is supported, got {:?}",
                        r.grant_type
                    )));
                }
                validate_name("client", &r.client_id)
                    .map_err(|e| Status::invalid_argument(format!("client_id: {}", e.message)))?;
                let secret = zeroize::Zeroizing::new(r.client_secret);
                self.api.read_barrier(None).await?;
                not_before_bootstrap(&self.api)?;
                let p = Principal::Client(r.client_id.clone());
                let rec = self.api.node.sm.principal(&p).map_err(internal)?;
                let digest = client_secret_digest(&secret);
                let Some(rec) = rec.filter(|c| c.enabled && c.credential == digest) else {
                    return Err(Status::unauthenticated(
                        "invalid client credentials, or the client is disabled",
                    ));
                };
                let scopes = if r.scopes.is_empty() { rec.roles.clone() } else { r.scopes };
                match self.issue(p, rec.credential, r.ttl_seconds, Some(scopes)).await {
                    Err(s) if s.code() == tonic::Code::Unauthenticated => {
                        Err(Status::unauthenticated("invalid client credentials, or the client is disabled"))
                    }
                    other => other,
                }
            })
            .await
    }

    async fn logout(&self, req: Request<LogoutRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("auth.logout", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let op = Op::RevokeToken(RevokeToken { token_hash: bearer(&meta)? });
                let w = self.api.write(&meta, Rpc::AuthLogout, "", r.options.as_ref(), op).await?;
                Ok(write_response(w))
            })
            .await
    }

    async fn revoke(&self, req: Request<RevokeRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("auth.revoke", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                bearer(&meta)?; // no token at all: UNAUTHENTICATED before the body is judged
                let op = Op::RevokeToken(RevokeToken { token_hash: token_arg("token", &r.token)? });
                let w = self.api.write(&meta, Rpc::AuthRevoke, "", r.options.as_ref(), op).await?;
                Ok(write_response(w))
            })
            .await
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        self.api
            .rpc("auth.renew", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let op = Op::RenewToken(RenewToken { expires_ms: now_ms() + self.ttl_ms(r.ttl_seconds) });
                let w = self.api.write(&meta, Rpc::AuthRenew, "", r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::TokenRenewed { expires_ms } => {
                        Ok(RenewResponse { expires_ms, revision: w.revision })
                    }
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        self.api
            .rpc("auth.who_am_i", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let c = self.api.read(&meta, Rpc::AuthWhoAmI, "", r.options.as_ref()).await?;
                Ok(WhoAmIResponse {
                    principal: c.principal.to_string(),
                    roles: c.role_names,
                    issued_ms: c.token.issued_ms,
                    expires_ms: c.token.expires_ms,
                    renew_until_ms: c.token.renew_until_ms,
                })
            })
            .await
    }

    async fn introspect(
        &self,
        req: Request<IntrospectRequest>,
    ) -> Result<Response<IntrospectResponse>, Status> {
        self.api
            .rpc("auth.introspect", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                self.api.read(&meta, Rpc::AuthIntrospect, "", r.options.as_ref()).await?;
                let hash = token_arg("token", &r.token)?;
                let Ok(c) = self.api.node.sm.resolve_token(&hash, now_ms()).map_err(internal)? else {
                    return Ok(IntrospectResponse::default());
                };
                let (username, client_id) = match &c.principal {
                    Principal::User(u) => (u.clone(), String::new()),
                    Principal::Client(id) => (String::new(), id.clone()),
                };
                Ok(IntrospectResponse {
                    active: true,
                    scope: c.role_names.join(" "),
                    client_id,
                    username,
                    token_type: "Bearer".into(),
                    exp: c.token.expires_ms / 1000,
                    iat: c.token.issued_ms / 1000,
                    sub: c.principal.to_string(),
                })
            })
            .await
    }

    async fn change_password(
        &self,
        req: Request<ChangePasswordRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("auth.change_password", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let old = password("old_password", r.old_password, false)?;
                let new = password("new_password", r.new_password, true)?;
                let caller = self.api.read(&meta, Rpc::AuthChangePassword, "", None).await?;
                let Principal::User(name) = &caller.principal else {
                    return Err(Status::failed_precondition("service clients have secrets, not passwords"));
                };
                let rec = self.api.node.sm.principal(&caller.principal).map_err(internal)?;
                // A locked user is refused before any guess is checked: a
                // failure recorded while locked does not extend the lock, so
                // otherwise a stolen token could guess on without limit.
                let now = now_ms();
                if let Some(until_ms) = rec.as_ref().map(|r| r.locked_until_ms).filter(|u| *u > now) {
                    return Err(Status::failed_precondition(format!(
                        "{name} is locked after repeated wrong passwords for {} s more; try again \
                         then, or ask an admin (`strongbox user unlock {name}`)",
                        (until_ms - now).div_ceil(1000)
                    )));
                }
                let phc = rec.map(|r| r.credential);
                if !self.api.auth.hasher.verify(old, phc.clone()).await? {
                    self.record_failure(name).await?;
                    // The bearer token is fine (UNAUTHENTICATED would tell
                    // clients to drop their session): the request is not.
                    return Err(Status::permission_denied("old_password: wrong password; nothing changed"));
                }
                let new_phc = self.api.auth.hasher.hash(new).await?;
                let op = Op::ChangePassword(ChangePassword {
                    expected_phc: phc.expect("verified against a stored hash"),
                    new_phc,
                });
                let w = self.api.write(&meta, Rpc::AuthChangePassword, "", r.options.as_ref(), op).await?;
                Ok(write_response(w))
            })
            .await
    }
}
