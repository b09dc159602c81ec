use strongbox_proto::v1::secrets_server::Secrets;
use strongbox_proto::v1::*;
use strongbox_raft::RaftNode;
use strongbox_store::command::{validate_secret_path, DeleteSecret, Outcome, PutSecret};
use strongbox_store::{Command, Op};
use tonic::{Request, Response, Status};

use crate::limits::{READ_TIMEOUT, WRITE_TIMEOUT};
use crate::observe::{check_size, command_status, now_ms, request_id, rpc};

pub struct SecretsService {
    node: RaftNode,
}

impl SecretsService {
    pub fn new(node: RaftNode) -> Self {
        SecretsService { node }
    }

    async fn write(&self, cmd: Command) -> Result<(Outcome, u64, bool), Status> {
        cmd.validate().map_err(command_status)?;
        let (_, resp) = self.node.write(cmd, WRITE_TIMEOUT).await?;
        let outcome = resp.result.map_err(command_status)?;
        Ok((outcome, resp.revision, resp.deduplicated))
    }
}

/// Applies the read options: a linearizable barrier and/or min_revision.
pub async fn read_barrier(node: &RaftNode, opts: Option<&ReadOptions>) -> Result<(), Status> {
    let linearizable = opts.is_none_or(|o| o.consistency() == Consistency::Linearizable);
    let min_revision = opts.map_or(0, |o| o.min_revision);
    node.read_barrier(linearizable, min_revision, READ_TIMEOUT).await?;
    Ok(())
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn put(&self, req: Request<PutSecretRequest>) -> Result<Response<PutSecretResponse>, Status> {
        rpc("secrets.put", async {
            let req = req.into_inner();
            check_size(&req)?;
            let cmd = Command {
                request_id: request_id(req.options.as_ref()),
                time_ms: now_ms(),
                op: Op::PutSecret(PutSecret { path: req.path, value: req.value, cas: req.cas }),
            };
            match self.write(cmd).await? {
                (Outcome::SecretWritten { version }, revision, deduplicated) => {
                    Ok(PutSecretResponse { version, revision, deduplicated })
                }
                (other, ..) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            }
        })
        .await
    }

    async fn get(&self, req: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        rpc("secrets.get", async {
            let req = req.into_inner();
            check_size(&req)?;
            validate_secret_path(&req.path).map_err(command_status)?;
            read_barrier(&self.node, req.options.as_ref()).await?;
            let version = (req.version != 0).then_some(req.version);
            let found =
                self.node.sm.get_secret(&req.path, version).map_err(|e| Status::internal(e.to_string()))?;
            let revision = self.node.sm.revision().map_err(|e| Status::internal(e.to_string()))?;
            match found {
                None => Err(Status::not_found(match version {
                    Some(v) => format!("no version {v} of secret {}", req.path),
                    None => format!("no secret at {}", req.path),
                })),
                Some(s) => Ok(GetSecretResponse {
                    path: s.path,
                    version: s.version,
                    value: s.value,
                    created_ms: s.created_ms,
                    latest_version: s.latest_version,
                    revision,
                }),
            }
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<DeleteSecretRequest>,
    ) -> Result<Response<DeleteSecretResponse>, Status> {
        rpc("secrets.delete", async {
            let req = req.into_inner();
            check_size(&req)?;
            let cmd = Command {
                request_id: request_id(req.options.as_ref()),
                time_ms: now_ms(),
                op: Op::DeleteSecret(DeleteSecret { path: req.path }),
            };
            match self.write(cmd).await? {
                (Outcome::SecretDeleted { version }, revision, deduplicated) => {
                    Ok(DeleteSecretResponse { version, revision, deduplicated })
                }
                (other, ..) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            }
        })
        .await
    }
}
