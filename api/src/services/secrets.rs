use strongbox_proto::v1::secrets_server::Secrets;
use strongbox_proto::v1::*;
use strongbox_store::command::set_state_version::{SECRET_DELETES_PER_VERSION, SECRET_PURGE};
use strongbox_store::command::{
    validate_secret_path, DeleteSecret, DeleteSecretVersions, DestroySecretVersions, Outcome, PurgeSecret,
    PutSecret, UndeleteSecret, UndeleteSecretVersions, UpdateSecretMetadata,
};
use strongbox_store::Op;
use tonic::{Request, Response, Status};

use super::{internal, next_token, page, token_of, unexpected, Api};
use crate::auth::Rpc;
use crate::observe::{check_size, command_status};

pub struct SecretsService {
    api: Api,
}

impl SecretsService {
    pub fn new(api: Api) -> Self {
        SecretsService { api }
    }

    /// Why a read found nothing, in words a person can act on.
    fn why_not_found(&self, path: &str, version: Option<u64>) -> Result<String, Status> {
        let Some((m, states)) = self.api.node.sm.secret_versions(path).map_err(internal)? else {
            return Ok(format!("no secret at {path}"));
        };
        let latest = m.latest_version;
        if latest == 0 {
            return Ok(format!(
                "secret {path} has no version yet (its metadata was set before any put; put one, with \
                 --cas 0 if it requires check-and-set)"
            ));
        }
        let asked = version.unwrap_or(latest);
        let state = states.iter().find(|s| s.version == asked);
        Ok(match version {
            Some(v) if v > latest => format!("no version {v} of secret {path} (the latest is {latest})"),
            Some(v) if v < m.oldest_version => format!(
                "version {v} of secret {path} was pruned (max_versions {}; the oldest kept is {})",
                m.max_versions, m.oldest_version
            ),
            _ if state.is_some_and(|s| s.created_ms.is_some() && s.deleted_ms.is_some()) => {
                let which = if asked == latest {
                    format!("the latest version ({latest})")
                } else {
                    format!("version {asked}")
                };
                format!(
                    "{which} of secret {path} is deleted: undelete brings it back; other versions stay \
                     readable by number, and a put writes a new one"
                )
            }
            Some(v) => format!("version {v} of secret {path} was destroyed"),
            None => format!("the latest version ({latest}) of secret {path} was destroyed"),
        })
    }
}

fn path_arg(path: &str) -> Result<(), Status> {
    validate_secret_path(path).map_err(|e| Status::invalid_argument(format!("path: {}", e.message)))
}

/// A new secret's path: also no `.` or `..` segment. Paths are matched by
/// rules and listed literally, so `team-a/../app/x` would sit under
/// `team-a/` for the rules and mean `app/x` to anyone who normalises it.
/// Only new writes are refused here (apply is unchanged): a path stored
/// before stays readable and deletable.
fn new_path_arg(path: &str) -> Result<(), Status> {
    path_arg(path)?;
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Status::invalid_argument(format!(
            "path: {path:?} has a '.' or '..' segment; name the secret by its plain path"
        )));
    }
    // '*' ends a role rule's prefix pattern: a path holding one could not
    // be granted on its own (secrets:a/* means everything under a/).
    if path.contains('*') {
        return Err(Status::invalid_argument(format!(
            "path: {path:?} holds '*', the wildcard of role rules; a secret named with it could not be \
             granted alone. Use another character"
        )));
    }
    Ok(())
}

/// `""`, `team-a` or `team-a/` → the key prefix of the folder's children.
fn folder_prefix(folder: &str) -> Result<String, Status> {
    let trimmed = folder.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    validate_secret_path(trimmed).map_err(|e| Status::invalid_argument(format!("folder: {}", e.message)))?;
    Ok(format!("{trimmed}/"))
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn put(&self, req: Request<PutSecretRequest>) -> Result<Response<PutSecretResponse>, Status> {
        self.api
            .rpc("secrets.put", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                new_path_arg(&r.path)?;
                let limit = self.api.secret_value_bytes_max;
                if r.value.len() > limit {
                    return Err(Status::resource_exhausted(format!(
                        "value: {} bytes; this cluster's limit is {limit} bytes",
                        r.value.len()
                    )));
                }
                let op = Op::PutSecret(PutSecret {
                    path: r.path.clone(),
                    value: r.value,
                    cas: r.cas,
                    max_versions: r.max_versions,
                });
                let w = self.api.write(&meta, Rpc::SecretsPut, &r.path, r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::SecretWritten { version } => {
                        Ok(PutSecretResponse { version, revision: w.revision, deduplicated: w.deduplicated })
                    }
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn get(&self, req: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        self.api
            .rpc("secrets.get", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.read(&meta, Rpc::SecretsGet, &r.path, r.options.as_ref()).await?;
                let version = (r.version != 0).then_some(r.version);
                let (found, revision) = self.api.node.sm.get_secret_at(&r.path, version).map_err(internal)?;
                match found {
                    None => Err(Status::not_found(self.why_not_found(&r.path, version)?)),
                    Some(s) => Ok(GetSecretResponse {
                        path: s.path,
                        version: s.version,
                        value: s.value,
                        created_ms: s.created_ms,
                        latest_version: s.latest_version,
                        revision,
                        version_revision: s.revision,
                    }),
                }
            })
            .await
    }

    async fn delete(
        &self,
        req: Request<DeleteSecretRequest>,
    ) -> Result<Response<DeleteSecretResponse>, Status> {
        self.api
            .rpc("secrets.delete", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                let op = Op::DeleteSecret(DeleteSecret { path: r.path.clone() });
                let w = self.api.write(&meta, Rpc::SecretsDelete, &r.path, r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::SecretDeleted { version } => Ok(DeleteSecretResponse {
                        version,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn undelete(
        &self,
        req: Request<UndeleteSecretRequest>,
    ) -> Result<Response<UndeleteSecretResponse>, Status> {
        self.api
            .rpc("secrets.undelete", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.need_state_version(UNDELETE_STATE_VERSION, "undelete")?;
                let op = Op::UndeleteSecret(UndeleteSecret { path: r.path.clone() });
                let w = self.api.write(&meta, Rpc::SecretsUndelete, &r.path, r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::SecretUndeleted { version } => Ok(UndeleteSecretResponse {
                        version,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn delete_versions(
        &self,
        req: Request<SecretVersionsRequest>,
    ) -> Result<Response<SecretVersionsResponse>, Status> {
        self.api
            .rpc("secrets.delete_versions", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.need_state_version(SECRET_DELETES_PER_VERSION, "deleting versions by number")?;
                let op = DeleteSecretVersions { path: r.path.clone(), versions: r.versions };
                op.validate().map_err(command_status)?;
                let op = Op::DeleteSecretVersions(op);
                let w = self
                    .api
                    .write(&meta, Rpc::SecretsDeleteVersions, &r.path, r.options.as_ref(), op)
                    .await?;
                match w.outcome {
                    Outcome::SecretVersionsDeleted { versions, .. } => Ok(SecretVersionsResponse {
                        versions,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn undelete_versions(
        &self,
        req: Request<SecretVersionsRequest>,
    ) -> Result<Response<SecretVersionsResponse>, Status> {
        self.api
            .rpc("secrets.undelete_versions", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.need_state_version(SECRET_DELETES_PER_VERSION, "undeleting versions by number")?;
                let op = UndeleteSecretVersions { path: r.path.clone(), versions: r.versions };
                op.validate().map_err(command_status)?;
                let op = Op::UndeleteSecretVersions(op);
                let w = self
                    .api
                    .write(&meta, Rpc::SecretsUndeleteVersions, &r.path, r.options.as_ref(), op)
                    .await?;
                match w.outcome {
                    Outcome::SecretVersionsUndeleted { versions, .. } => Ok(SecretVersionsResponse {
                        versions,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn destroy(
        &self,
        req: Request<DestroySecretRequest>,
    ) -> Result<Response<DestroySecretResponse>, Status> {
        self.api
            .rpc("secrets.destroy", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                let op = Op::DestroySecretVersions(DestroySecretVersions {
                    path: r.path.clone(),
                    versions: r.versions,
                });
                op.validate().map_err(command_status)?;
                let w = self.api.write(&meta, Rpc::SecretsDestroy, &r.path, r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::SecretVersionsDestroyed { destroyed } => Ok(DestroySecretResponse {
                        destroyed,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn purge(&self, req: Request<PurgeSecretRequest>) -> Result<Response<PurgeSecretResponse>, Status> {
        self.api
            .rpc("secrets.purge", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.need_state_version(SECRET_PURGE, "purging a secret")?;
                let op = Op::PurgeSecret(PurgeSecret { path: r.path.clone() });
                op.validate().map_err(command_status)?;
                let w = self.api.write(&meta, Rpc::SecretsPurge, &r.path, r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::SecretPurged { versions_destroyed } => Ok(PurgeSecretResponse {
                        versions_destroyed,
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn update_metadata(
        &self,
        req: Request<UpdateSecretMetadataRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("secrets.update_metadata", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.need_state_version(SECRET_PURGE, "updating a secret's metadata")?;
                let op = Op::UpdateSecretMetadata(UpdateSecretMetadata {
                    path: r.path.clone(),
                    max_versions: r.max_versions,
                    cas_required: r.cas_required,
                    custom_metadata: r.custom_metadata.map(|m| m.entries.into_iter().collect()),
                });
                op.validate().map_err(command_status)?;
                let w = self
                    .api
                    .write(&meta, Rpc::SecretsUpdateMetadata, &r.path, r.options.as_ref(), op)
                    .await?;
                match w.outcome {
                    Outcome::Done => Ok(WriteResponse { revision: w.revision, deduplicated: w.deduplicated }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn list(&self, req: Request<ListSecretsRequest>) -> Result<Response<ListSecretsResponse>, Status> {
        self.api
            .rpc("secrets.list", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let prefix = folder_prefix(&r.folder)?;
                let (size, after) = page(r.page.as_ref())?;
                self.api
                    .read(&meta, Rpc::SecretsList, prefix.trim_end_matches('/'), r.options.as_ref())
                    .await?;
                let revision = self.api.revision()?;
                let entries = self.api.node.sm.list_secrets(&prefix, &after, size).map_err(internal)?;
                let next_page_token = next_token(&entries, size, |e| e.name.clone());
                Ok(ListSecretsResponse {
                    entries: entries
                        .into_iter()
                        .map(|e| SecretEntry { name: e.name, folder: e.folder })
                        .collect(),
                    next_page_token,
                    revision,
                })
            })
            .await
    }

    async fn metadata(
        &self,
        req: Request<SecretMetadataRequest>,
    ) -> Result<Response<SecretMetadata>, Status> {
        self.api
            .rpc("secrets.metadata", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                path_arg(&r.path)?;
                self.api.read(&meta, Rpc::SecretsMetadata, &r.path, r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                let Some((m, states, settings)) =
                    self.api.node.sm.secret_metadata(&r.path).map_err(internal)?
                else {
                    return Err(Status::not_found(format!("no secret at {}", r.path)));
                };
                Ok(SecretMetadata {
                    path: r.path,
                    latest_version: m.latest_version,
                    oldest_version: m.oldest_version,
                    max_versions: m.max_versions,
                    deleted: m.deleted,
                    created_revision: m.created_revision,
                    created_ms: m.created_ms,
                    updated_revision: m.updated_revision,
                    updated_ms: m.updated_ms,
                    updated_by: m.updated_by,
                    revision,
                    versions: states
                        .into_iter()
                        .map(|s| SecretVersionState {
                            version: s.version,
                            created_ms: s.created_ms.unwrap_or(0),
                            revision: s.revision.unwrap_or(0),
                            deleted_ms: s.deleted_ms.unwrap_or(0),
                            destroyed: s.created_ms.is_none(),
                        })
                        .collect(),
                    cas_required: settings.cas_required,
                    custom_metadata: settings.custom_metadata.into_iter().collect(),
                })
            })
            .await
    }
}

/// The state version whose members all read `UndeleteSecret`.
const UNDELETE_STATE_VERSION: u32 = 2;
