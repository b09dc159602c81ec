//! Encryption-at-rest administration of the receiving node.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use strongbox_proto::v1::keys_server::Keys;
use strongbox_proto::v1::*;
use strongbox_store::keyring::MasterKey;
use strongbox_store::reencrypt::Progress;
use tonic::{Request, Response, Status};

use super::{internal, token_of, Api};
use crate::auth::Rpc;
use crate::config::NodeConfig;
use crate::local_audit;

#[derive(Clone)]
pub struct KeysService {
    api: Api,
    cfg: NodeConfig,
    progress: Arc<Progress>,
}

impl KeysService {
    pub fn new(api: Api, cfg: NodeConfig, progress: Arc<Progress>) -> Self {
        KeysService { api, cfg, progress }
    }

    fn status(&self) -> KeysStatusResponse {
        let keyring = self.api.node.sm.db().codec().keyring().cloned();
        let keys = keyring
            .map(|k| {
                k.keys()
                    .into_iter()
                    .map(|i| DataKey {
                        id: i.id,
                        active: i.active,
                        retired: i.retired,
                        created_ms: i.created_ms,
                        encryptions_reserved: i.encryptions_reserved,
                    })
                    .collect()
            })
            .unwrap_or_default();
        KeysStatusResponse {
            node_id: self.api.node.id,
            encrypted: self.api.node.sm.db().codec().keyring().is_some(),
            keys,
            reencryption_running: self.progress.running.load(Ordering::Relaxed),
            reencryption_scanned: self.progress.scanned.load(Ordering::Relaxed),
            reencryption_rewritten: self.progress.rewritten.load(Ordering::Relaxed),
            reencryption_passes: self.progress.passes.load(Ordering::Relaxed),
        }
    }

    async fn admin(&self, meta: &tonic::metadata::MetadataMap, rpc: Rpc) -> Result<(), Status> {
        self.api.read(meta, rpc, "", None).await.map(|_| ())
    }
}

fn unencrypted() -> Status {
    Status::failed_precondition("this node runs without encryption at rest (--insecure-no-encryption)")
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn status(&self, req: Request<KeysStatusRequest>) -> Result<Response<KeysStatusResponse>, Status> {
        self.api
            .rpc("keys.status", token_of(req.metadata()), async {
                self.admin(req.metadata(), Rpc::KeysStatus).await?;
                Ok(KeysService::status(self))
            })
            .await
    }

    async fn rotate_data_key(
        &self,
        req: Request<RotateDataKeyRequest>,
    ) -> Result<Response<KeysStatusResponse>, Status> {
        let this = self.clone();
        self.api
            .rpc_detached("keys.rotate_data_key", token_of(req.metadata()), async move {
                this.admin(req.metadata(), Rpc::KeysRotateDataKey).await?;
                let keyring = this.api.node.sm.db().codec().keyring().cloned().ok_or_else(unencrypted)?;
                let id = tokio::task::spawn_blocking(move || keyring.rotate())
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                local_audit::took_effect();
                tracing::info!(key = id, "data key rotated; re-encryption starts");
                Ok(KeysService::status(&this))
            })
            .await
    }

    async fn rotate_master_key(
        &self,
        req: Request<RotateMasterKeyRequest>,
    ) -> Result<Response<KeysStatusResponse>, Status> {
        let this = self.clone();
        self.api
            .rpc_detached("keys.rotate_master_key", token_of(req.metadata()), async move {
                this.admin(req.metadata(), Rpc::KeysRotateMasterKey).await?;
                let keyring = this.api.node.sm.db().codec().keyring().cloned().ok_or_else(unencrypted)?;
                let Some(current) = this.cfg.master_key_file.clone() else {
                    return Err(Status::failed_precondition(
                        "the master key comes from $STRONGBOX_MASTER_KEY: rotate it by restarting with a \
                     master_key_file",
                    ));
                };
                let mut new_path = current.clone().into_os_string();
                new_path.push(".new");
                let new_path = std::path::PathBuf::from(new_path);
                let new_key = MasterKey::load_file(&new_path).map_err(|e| {
                    Status::failed_precondition(format!(
                        "put the new master key in {} first: {e}",
                        new_path.display()
                    ))
                })?;
                tokio::task::spawn_blocking(move || -> Result<(), String> {
                    keyring.rewrap(new_key).map_err(|e| e.to_string())?;
                    // The keyring now opens with the new key only: move it into
                    // place so the next start uses it.
                    std::fs::rename(&new_path, &current).map_err(|e| {
                        format!(
                            "keyring re-wrapped, but moving {} to {} failed: {e}; do it by hand",
                            new_path.display(),
                            current.display()
                        )
                    })
                })
                .await
                .map_err(internal)?
                .map_err(Status::internal)?;
                local_audit::took_effect();
                tracing::info!("master key rotated; data keys re-wrapped");
                Ok(KeysService::status(&this))
            })
            .await
    }
}
