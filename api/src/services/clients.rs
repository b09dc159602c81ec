//! Service clients (OAuth2 client credentials). The secret is generated
//! here and returned once; the cluster keeps only its SHA-256.

use strongbox_proto::v1::clients_server::Clients;
use strongbox_proto::v1::*;
use strongbox_store::auth::{validate_name, Principal, PrincipalRecord};
use strongbox_store::command::set_state_version::CLIENT_SECRET_ROTATION;
use strongbox_store::command::{
    validate_role_names, CreateClient, DeletePrincipal, Outcome, RotateClientSecret, SetEnabled,
};
use strongbox_store::Op;
use tonic::{Request, Response, Status};

use super::users::written;
use super::{internal, next_token, page, token_of, Api};
use crate::auth::tokens::new_client_secret;
use crate::auth::Rpc;
use crate::observe::check_size;

pub struct ClientsService {
    api: Api,
}

impl ClientsService {
    pub fn new(api: Api) -> Self {
        ClientsService { api }
    }

    async fn simple(
        &self,
        req: Request<ClientRequest>,
        rpc_: Rpc,
        op: fn(Principal) -> Op,
    ) -> Result<WriteResponse, Status> {
        check_size(req.get_ref())?;
        let (meta, _, r) = req.into_parts();
        client_id_arg(&r.client_id)?;
        let op = op(Principal::Client(r.client_id));
        Ok(written(self.api.write(&meta, rpc_, "", r.options.as_ref(), op).await?))
    }
}

fn client_id_arg(id: &str) -> Result<(), Status> {
    validate_name("client", id).map_err(|e| Status::invalid_argument(format!("client_id: {}", e.message)))
}

fn client_view(client_id: String, r: PrincipalRecord) -> Client {
    Client {
        client_id,
        enabled: r.enabled,
        roles: r.roles,
        created_revision: r.created_revision,
        created_ms: r.created_ms,
        updated_revision: r.updated_revision,
    }
}

#[tonic::async_trait]
impl Clients for ClientsService {
    async fn create(
        &self,
        req: Request<CreateClientRequest>,
    ) -> Result<Response<CreateClientResponse>, Status> {
        self.api
            .rpc("clients.create", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                client_id_arg(&r.client_id)?;
                validate_role_names(&r.roles).map_err(|e| crate::observe::field_status("roles", e))?;
                let (secret, secret_digest) = new_client_secret();
                let op = Op::CreateClient(CreateClient {
                    client_id: r.client_id.clone(),
                    secret_digest: secret_digest.clone(),
                    roles: r.roles,
                });
                let w = self.api.write(&meta, Rpc::ClientsCreate, "", r.options.as_ref(), op).await?;
                // Show the secret only if it is the one kept. A client's own
                // retry (same request id, a new secret generated) has none
                // to show: the first answer had it, and only its digest was
                // kept. Said as an error, not OK with an empty secret that a
                // caller could store and be locked out with (as for
                // RotateSecret). But this call's command may also come back
                // deduplicated when the node retried it after an election and
                // the first attempt had applied: the kept digest is then
                // ours, and hiding the secret would lose it for good.
                let kept = match &w.outcome {
                    Outcome::ClientCreated { secret_digest: kept } => *kept == secret_digest,
                    // Answered before the digest was part of the outcome.
                    _ => !w.deduplicated,
                };
                if !kept {
                    return Err(Status::failed_precondition(format!(
                        "client {:?} was created by an earlier attempt of this request (revision {}); its \
                         secret was in that answer only. If it was lost, issue a new one with \
                         `strongbox client rotate-secret {}` (Clients.RotateSecret)",
                        r.client_id, w.revision, r.client_id
                    )));
                }
                let client_secret = secret.to_string();
                Ok(CreateClientResponse { client_id: r.client_id, client_secret, revision: w.revision })
            })
            .await
    }

    async fn rotate_secret(
        &self,
        req: Request<ClientRequest>,
    ) -> Result<Response<CreateClientResponse>, Status> {
        self.api
            .rpc("clients.rotate_secret", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                client_id_arg(&r.client_id)?;
                self.api.need_state_version(CLIENT_SECRET_ROTATION, "rotating a client secret")?;
                let (secret, secret_digest) = new_client_secret();
                let op = Op::RotateClientSecret(RotateClientSecret {
                    client_id: r.client_id.clone(),
                    secret_digest: secret_digest.clone(),
                });
                let w = self.api.write(&meta, Rpc::ClientsRotateSecret, "", r.options.as_ref(), op).await?;
                // As for Create, the secret is shown only if it is the one
                // kept. A retry of a rotation that applied has none to
                // show, and the old secret is dead: say so, rather than
                // answer OK with no secret and leave the client locked out.
                let kept = matches!(&w.outcome, Outcome::ClientSecretRotated { secret_digest: k } if *k == secret_digest);
                if !kept {
                    return Err(Status::failed_precondition(format!(
                        "the secret of client {:?} was rotated by an earlier attempt of this request \
                         (revision {}); the new secret was in that answer only. If it was lost, rotate \
                         again with a new request id",
                        r.client_id, w.revision
                    )));
                }
                let client_secret = secret.to_string();
                Ok(CreateClientResponse { client_id: r.client_id, client_secret, revision: w.revision })
            })
            .await
    }

    async fn get(&self, req: Request<GetClientRequest>) -> Result<Response<Client>, Status> {
        self.api
            .rpc("clients.get", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                client_id_arg(&r.client_id)?;
                self.api.read(&meta, Rpc::ClientsGet, "", r.options.as_ref()).await?;
                let p = Principal::Client(r.client_id.clone());
                match self.api.node.sm.principal(&p).map_err(internal)? {
                    Some(rec) => Ok(client_view(r.client_id, rec)),
                    None => Err(Status::not_found(format!("no client {:?}", r.client_id))),
                }
            })
            .await
    }

    async fn list(&self, req: Request<ListClientsRequest>) -> Result<Response<ListClientsResponse>, Status> {
        self.api
            .rpc("clients.list", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                let (size, after) = page(r.page.as_ref())?;
                self.api.read(&meta, Rpc::ClientsList, "", r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                let rows = self.api.node.sm.list_principals(true, &after, size).map_err(internal)?;
                let next_page_token = next_token(&rows, size, |(n, _)| n.clone());
                Ok(ListClientsResponse {
                    clients: rows.into_iter().map(|(n, rec)| client_view(n, rec)).collect(),
                    next_page_token,
                    revision,
                })
            })
            .await
    }

    async fn delete(&self, req: Request<ClientRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("clients.delete", token_of(req.metadata()), async {
                self.simple(req, Rpc::ClientsDelete, |p| {
                    Op::DeletePrincipal(DeletePrincipal { principal: p })
                })
                .await
            })
            .await
    }

    async fn disable(&self, req: Request<ClientRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("clients.disable", token_of(req.metadata()), async {
                self.simple(req, Rpc::ClientsDisable, |p| {
                    Op::SetEnabled(SetEnabled { principal: p, enabled: false })
                })
                .await
            })
            .await
    }

    async fn enable(&self, req: Request<ClientRequest>) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("clients.enable", token_of(req.metadata()), async {
                self.simple(req, Rpc::ClientsEnable, |p| {
                    Op::SetEnabled(SetEnabled { principal: p, enabled: true })
                })
                .await
            })
            .await
    }
}
