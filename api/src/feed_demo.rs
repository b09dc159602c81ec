//! `strongbox feed-demo`: an example eventually consistent service. It keeps
//! a read model (a user directory with roles, the latest version of every
//! secret, and the posted balances of every ledger account) in its own
//! local file, fed only by the change feed, and
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

/// An account's balances as the feed tells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub ledger: u32,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// A pending transfer not yet posted, voided or expired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingView {
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: u128,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadModel {
    /// Every revision up to this one is reflected.
    pub revision: u64,
    pub users: BTreeMap<String, UserView>,
    /// Path → latest version, for secrets that are not deleted.
    pub secrets: BTreeMap<String, u64>,
    /// Account id (decimal) → balances.
    #[serde(default)]
    pub accounts: BTreeMap<String, BalanceView>,
    /// Transfer id → open reservation (what a post, void or expiry releases).
    #[serde(default)]
    pub pending: BTreeMap<String, PendingView>,
    /// Revisions applied from feed messages by this process and its
    /// predecessors (a revision in parts counts once).
    pub messages_applied: u64,
    /// A revision whose first parts are applied, its last not yet: the
    /// model is not saved then (a resume sends that revision whole again).
    #[serde(skip)]
    pub partial: Option<u64>,
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
        // A revision's later parts come with the same revision number.
        let continues = self.partial == Some(msg.revision);
        if msg.revision <= self.revision && !continues {
            return;
        }
        if msg.progress {
            self.revision = msg.revision;
            return;
        }
        self.partial = msg.more.then_some(msg.revision);
        if !msg.more {
            self.revision = msg.revision;
            self.messages_applied += 1;
        }
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
                "secret.created" | "secret.updated" | "secret.undeleted" => {
                    let version = e.fields.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
                    self.secrets.insert(e.entity.clone(), version);
                }
                "secret.deleted" | "secret.purged" => {
                    self.secrets.remove(&e.entity);
                }
                // By number: only the latest version's state is modelled.
                "secret.version_deleted" if e.fields.get("latest").is_some_and(|l| l == "true") => {
                    self.secrets.remove(&e.entity);
                }
                "secret.version_undeleted" if e.fields.get("latest").is_some_and(|l| l == "true") => {
                    let version = e.fields.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
                    self.secrets.insert(e.entity.clone(), version);
                }
                "account.created" => {
                    self.accounts
                        .insert(e.entity.clone(), BalanceView { ledger: e.ledger, ..Default::default() });
                }
                kind if kind.starts_with("transfer.") => self.apply_transfer(kind, &e.entity, &e.fields),
                _ => {}
            }
        }
    }
}

impl ReadModel {
    /// `amount` is what was applied: a balancing transfer's may be smaller
    /// than requested, a post's may be part of the pending amount.
    fn apply_transfer(&mut self, kind: &str, id: &str, fields: &std::collections::HashMap<String, String>) {
        let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let amount: u128 = field("amount").parse().unwrap_or(0);
        let (debit, credit) = (field("debit_account_id"), field("credit_account_id"));
        // A post, void or expiry releases the whole reservation.
        let released = match kind {
            "transfer.posted" | "transfer.voided" => self.pending.remove(&field("pending_id")),
            "transfer.expired" => self.pending.remove(id),
            _ => None,
        };
        if let Some(p) = released {
            if let Some(a) = self.accounts.get_mut(&p.debit_account_id) {
                a.debits_pending -= p.amount;
            }
            if let Some(a) = self.accounts.get_mut(&p.credit_account_id) {
                a.credits_pending -= p.amount;
            }
        }
        let (pending, posted) = match kind {
            "transfer.pending" => (true, false),
            "transfer.created" | "transfer.posted" => (false, true),
            _ => (false, false),
        };
        if pending {
            let view =
                PendingView { debit_account_id: debit.clone(), credit_account_id: credit.clone(), amount };
            self.pending.insert(id.to_string(), view);
        }
        if let Some(a) = self.accounts.get_mut(&debit) {
            if pending {
                a.debits_pending += amount;
            }
            if posted {
                a.debits_posted += amount;
            }
        }
        if let Some(a) = self.accounts.get_mut(&credit) {
            if pending {
                a.credits_pending += amount;
            }
            if posted {
                a.credits_posted += amount;
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
    let first_run = !state.exists();
    let mut model = ReadModel::load(state)?;
    if until_revision.is_some_and(|u| model.revision >= u) {
        if first_run {
            model.save(state)?;
        }
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
            if first_run && s.code() == tonic::Code::FailedPrecondition {
                // Its model is built from the feed alone, from revision 1.
                anyhow::anyhow!(
                    "{}: {} (this demo builds its model from the whole feed, and the cluster no longer \
                     holds its first revisions; a real consumer loads a read first and watches from the \
                     revision after it)",
                    s.code(),
                    s.message()
                )
            } else if first_run {
                anyhow::anyhow!("{}: {}", s.code(), s.message())
            } else {
                anyhow::anyhow!(
                    "{}: {} (this demo resumes from its checkpoint only; delete {} to start over)",
                    s.code(),
                    s.message(),
                    state.display()
                )
            }
        })?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        model.apply(&msg);
        // Checkpoint when the stream pauses (progress) or every 100 messages,
        // never in the middle of a revision (a resume sends it whole again).
        if model.partial.is_none() && (msg.progress || model.messages_applied % 100 == 0) {
            model.save(state)?;
        }
        if until_revision.is_some_and(|u| model.revision >= u) {
            model.save(state)?;
            return Ok(model);
        }
    }
    if model.partial.is_none() {
        model.save(state)?;
    }
    anyhow::bail!(
        "the feed ended (the node stopped?); run again to resume from revision {}",
        model.revision + 1
    )
}
