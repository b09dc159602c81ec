//! `strongbox feed-demo`: an example eventually consistent service. It keeps
//! a read model (a user directory with roles, and the latest version of
//! every secret) in its own local file, fed only by the change feed, and
//! checkpoints the revision it has applied with it, so a restart resumes
//! where it stopped: no event applied twice, none skipped.
//!
//! The checkpoint is written atomically (temp file, fsync, rename) after each
//! batch of messages and on every progress message.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use strongbox_proto::v1::feed_client::FeedClient;
use strongbox_proto::v1::{WatchRequest, WatchResponse};

use crate::client::AuthChannel;

#[derive(Args, Debug)]
pub struct FeedDemoArgs {
    /// The read model and its checkpoint (JSON).
    #[arg(long, default_value = "feed-demo.json")]
    pub state: PathBuf,
    /// Exit once this revision has been applied (default: run until Ctrl-C).
    #[arg(long)]
    pub until_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub enabled: bool,
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadModel {
    /// Every revision up to this one is reflected.
    pub revision: u64,
    pub users: BTreeMap<String, UserView>,
    /// Path → latest version, for secrets that are not deleted.
    pub secrets: BTreeMap<String, u64>,
    /// Feed messages applied by this process and its predecessors.
    pub messages_applied: u64,
}

fn roles_of(fields: &std::collections::HashMap<String, String>) -> BTreeSet<String> {
    fields
        .get("roles")
        .map(|r| r.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

impl ReadModel {
    pub fn load(path: &Path) -> anyhow::Result<ReadModel> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReadModel::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Atomically replaces the file: a crash leaves the old or the new model.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Applies one message; messages at or below the checkpoint are ignored.
    pub fn apply(&mut self, msg: &WatchResponse) {
        if msg.revision <= self.revision {
            return;
        }
        self.revision = msg.revision;
        if msg.progress {
            return;
        }
        self.messages_applied += 1;
        for e in &msg.events {
            let user = e.entity.strip_prefix("user:").unwrap_or(&e.entity).to_string();
            match e.kind.as_str() {
                "user.created" => {
                    self.users
                        .insert(e.entity.clone(), UserView { enabled: true, roles: roles_of(&e.fields) });
                }
                "user.deleted" => {
                    self.users.remove(&e.entity);
                }
                "user.enabled" | "user.disabled" => {
                    if let Some(u) = self.users.get_mut(&e.entity) {
                        u.enabled = e.kind == "user.enabled";
                    }
                }
                "role.granted" | "role.revoked" if e.entity.starts_with("user:") => {
                    if let (Some(u), Some(role)) = (self.users.get_mut(&user), e.fields.get("role")) {
                        if e.kind == "role.granted" {
                            u.roles.insert(role.clone());
                        } else {
                            u.roles.remove(role);
                        }
                    }
                }
                "secret.created" | "secret.updated" => {
                    let version = e.fields.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
                    self.secrets.insert(e.entity.clone(), version);
                }
                "secret.deleted" => {
                    self.secrets.remove(&e.entity);
                }
                _ => {}
            }
        }
    }
}

/// Follows the feed from the checkpoint on; returns the model once
/// `until_revision` is reached (never, without it).
pub async fn follow(
    channel: AuthChannel,
    state: &Path,
    until_revision: Option<u64>,
) -> anyhow::Result<ReadModel> {
    let mut model = ReadModel::load(state)?;
    if until_revision.is_some_and(|u| model.revision >= u) {
        return Ok(model);
    }
    let req = WatchRequest {
        // From the beginning on a first run: the feed must still hold it.
        start_revision: model.revision + 1,
        progress_interval_ms: 1000,
        ..Default::default()
    };
    let mut stream = FeedClient::new(channel)
        .watch(req)
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "{}: {} (this demo resumes from its checkpoint only; delete {} to start over)",
                s.code(),
                s.message(),
                state.display()
            )
        })?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        model.apply(&msg);
        // Checkpoint when the stream pauses (progress) or every 100 messages.
        if msg.progress || model.messages_applied % 100 == 0 {
            model.save(state)?;
        }
        if until_revision.is_some_and(|u| model.revision >= u) {
            model.save(state)?;
            return Ok(model);
        }
    }
    model.save(state)?;
    anyhow::bail!(
        "the feed ended (the node stopped?); run again to resume from revision {}",
        model.revision + 1
    )
}
