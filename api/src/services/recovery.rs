//! `Recovery`: break-glass operations, served on the peer port only. Mutual
//! TLS admits only certificates the cluster CA signed, so the credential is
//! a member's key (root on a node host), not a token. One operation: lifting
//! a lockout, since anyone can lock a user out by guessing, and a cluster
//! whose only admin is locked would otherwise be stuck.

use strongbox_proto::v1::recovery_server::Recovery;
use strongbox_proto::v1::{RecoveryUnlockUserRequest, WriteResponse};
use strongbox_store::auth::validate_name;
use strongbox_store::command::set_state_version::RECOVERY_BY_NODE;
use strongbox_store::command::UnlockUser;
use strongbox_store::{Actor, Command, Op};
use tonic::{Request, Response, Status};

use super::{internal, Api};
use crate::local_audit;
use crate::observe::now_ms;

pub struct RecoveryService {
    api: Api,
}

impl RecoveryService {
    pub fn new(api: Api) -> Self {
        RecoveryService { api }
    }
}

#[tonic::async_trait]
impl Recovery for RecoveryService {
    async fn unlock_user(
        &self,
        req: Request<RecoveryUnlockUserRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.api
            .rpc("recovery.unlock_user", None, async {
                let r = req.into_inner();
                local_audit::note(|s| {
                    s.actor = Some("recovery (member certificate)".into());
                    s.resource = format!("users:{}", r.username);
                });
                validate_name("user", &r.username)
                    .map_err(|e| Status::invalid_argument(format!("username: {}", e.message)))?;
                let version = self.api.node.sm.state_version().map_err(internal)?;
                if version < RECOVERY_BY_NODE {
                    return Err(Status::failed_precondition(format!(
                        "recovery needs state version {RECOVERY_BY_NODE} (the cluster is at {version}): \
                         run `strongbox cluster upgrade-state` first"
                    )));
                }
                tracing::warn!(user = %r.username, "recovery: lifting a lockout on a member certificate's word");
                let cmd = Command {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    time_ms: now_ms(),
                    node: self.api.node.id,
                    actor: Actor::Node,
                    op: Op::UnlockUser(UnlockUser { username: r.username }),
                };
                let w = self.api.propose(cmd).await?;
                Ok(WriteResponse { revision: w.revision, deduplicated: w.deduplicated })
            })
            .await
    }
}
