//! `strongbox snapshot ...`: backups. `save` asks a node for a consistent
//! image of the whole store and seals it under a key of the operator's own;
//! `restore` writes one into the empty data directory of each member of a
//! new cluster (offline, before `strongbox serve`), as etcdutl does.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::SaveSnapshotRequest;
use strongbox_raft::NodeInfo;
use strongbox_store::backup::{self, BackupWriter, Header};
use strongbox_store::keyring::MasterKey;

use super::{status_err, Conn};
use crate::config::NodeConfig;

/// Largest message of a snapshot stream: one image frame (at most
/// `snapshot::FRAME_BYTES_MAX`) and its envelope.
const SNAPSHOT_MESSAGE_BYTES_MAX: usize = strongbox_store::snapshot::FRAME_BYTES_MAX + (64 << 10);

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// A new backup key (64 hex characters) in a new file, mode 0600. Keep
    /// it apart from the backups: it opens them.
    NewKey { file: PathBuf },
    /// Save a consistent image of the whole store (every write acknowledged
    /// before the call) to a new file, sealed under --key-file. Superusers
    /// only (admin on `*`). With --config: offline, from the data dir of a
    /// stopped node (the way out when a quorum is lost for good).
    Save {
        file: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        /// A stopped node's config: read its data dir directly (its master
        /// key opens it); no cluster, no token. The image is what that node
        /// had applied and persisted, which may be behind what the cluster
        /// committed.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a backup whole (every frame opened and counted) and print what
    /// it holds.
    Status {
        file: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Write a backup into the empty data directory of one member of a new
    /// cluster: run it for every member, with the same file and the same
    /// `initial_members`, then start them all with `strongbox serve`. The
    /// node's own master key (from the config) seals what is restored.
    Restore {
        file: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
}

/// The commands that need no connection; `None` for `save`.
pub async fn offline(cmd: &SnapshotCmd) -> Option<anyhow::Result<()>> {
    Some(match cmd {
        SnapshotCmd::NewKey { file } => new_key(file),
        SnapshotCmd::Status { file, key_file } => status(file, key_file),
        SnapshotCmd::Restore { file, key_file, config } => restore(file, key_file, config).await,
        SnapshotCmd::Save { file, key_file, config: Some(config) } => {
            save_offline(file, key_file, config).await
        }
        SnapshotCmd::Save { config: None, .. } => return None,
    })
}

fn new_key(file: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (_, hex) = MasterKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {} (it must not exist)", file.display()))?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()?;
    println!("wrote a new backup key to {} (mode 0600)", file.display());
    Ok(())
}

fn key(file: &Path) -> anyhow::Result<MasterKey> {
    MasterKey::load_file(file).map_err(|e| anyhow::anyhow!("backup key: {e}"))
}

pub async fn save(conn: Conn, file: PathBuf, key_file: PathBuf) -> anyhow::Result<()> {
    let key = key(&key_file)?;
    if file.exists() {
        anyhow::bail!("{} exists; choose a new name", file.display());
    }
    let mut client =
        ClusterClient::new(conn.channel().await?).max_decoding_message_size(SNAPSHOT_MESSAGE_BYTES_MAX);
    let mut stream = client.save_snapshot(SaveSnapshotRequest {}).await.map_err(status_err)?.into_inner();
    let info = stream
        .message()
        .await
        .map_err(status_err)?
        .and_then(|c| c.info)
        .ok_or_else(|| anyhow::anyhow!("the node ended the stream before describing the image"))?;
    let saved_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let header = Header {
        format: 0,
        keyring: String::new(),
        applied_index: info.applied_index,
        applied_term: info.applied_term,
        revision: info.revision,
        source_node: info.node_id,
        saved_ms,
    };
    let mut w = BackupWriter::create(&file, key, header)?;
    let mut bytes = 0u64;
    // Ctrl-C ends the save here, so the writer is dropped and removes its
    // partial file (the default handler would exit and leave it behind).
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            _ = &mut interrupted => anyhow::bail!("interrupted; nothing was saved"),
        };
        let chunk = match next {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(s) => return Err(status_err(s).context("the image stream broke; nothing was saved")),
        };
        bytes += chunk.frame.len() as u64;
        w.push_plain(&chunk.frame).map_err(|e| anyhow::anyhow!("{e}; nothing was saved"))?;
    }
    w.finish()?;
    println!(
        "saved {}: revision {}, log index {} (term {}), from node {}, {} bytes of image",
        file.display(),
        info.revision,
        info.applied_index,
        info.applied_term,
        info.node_id,
        bytes
    );
    Ok(())
}

/// A backup from a stopped node's own storage (etcdutl's way out of a lost
/// quorum: the survivors' data, restored as a new cluster).
async fn save_offline(file: &Path, key_file: &Path, config: &Path) -> anyhow::Result<()> {
    let key = key(key_file)?;
    anyhow::ensure!(!file.exists(), "{} exists; choose a new name", file.display());
    let cfg = NodeConfig::load(config)?;
    anyhow::ensure!(
        cfg.data_dir.join("db").join("CURRENT").exists(),
        "{} holds no node storage",
        cfg.data_dir.display()
    );
    // Read, not claimed: this command must leave the stopped node's dir as it was.
    crate::server::check_claim(&cfg.data_dir, cfg.id)?;
    let codec = crate::encryption::codec(&cfg)?;
    let db = strongbox_store::Db::open(&cfg.data_dir.join("db"), codec).map_err(|e| {
        anyhow::anyhow!(
            "cannot open storage in {} (stop the node first: it holds the lock): {e}",
            cfg.data_dir.display()
        )
    })?;
    let sm = strongbox_store::StateMachine::new(db);
    let (target, node_id) = (file.to_path_buf(), cfg.id);
    let (header, bytes) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Header, u64)> {
        let mut export = strongbox_raft::sm_store::Export::start(&sm, || false)?;
        let applied = export.applied.expect("an export has applied something");
        let header = Header {
            format: 0,
            keyring: String::new(),
            applied_index: applied.index,
            applied_term: applied.leader_id.term,
            revision: export.revision,
            source_node: node_id,
            saved_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
        };
        let mut w = BackupWriter::create(&target, key, header.clone())?;
        let mut bytes = 0u64;
        while let Some(frame) = export.next_frame()? {
            bytes += frame.len() as u64;
            w.push_plain(&frame)?;
        }
        w.finish()?;
        Ok((header, bytes))
    })
    .await??;
    println!(
        "saved {} offline from node {}'s data dir: revision {}, log index {} (term {}), {} bytes of image; \
         restore it into every member of a new cluster with `strongbox snapshot restore`",
        file.display(),
        header.source_node,
        header.revision,
        header.applied_index,
        header.applied_term,
        bytes
    );
    Ok(())
}

/// Reads the whole image (every frame opened) and checks the header's
/// position against the image's own, which the frames' authentication
/// covers (the header is not sealed).
fn checked(file: &Path, key_file: &Path) -> anyhow::Result<(Header, strongbox_raft::types::LogId)> {
    let mut b = backup::open(file, key(key_file)?)?;
    let (applied, revision) = strongbox_raft::restore::position_of(&mut b.frames)?;
    let h = &b.header;
    if (h.applied_index, h.applied_term, h.revision) != (applied.index, applied.leader_id.term, revision) {
        anyhow::bail!(
            "{}: the header says log index {} (term {}), revision {}, but the image holds {} (term {}), {}: \
             the header was altered",
            file.display(),
            h.applied_index,
            h.applied_term,
            h.revision,
            applied.index,
            applied.leader_id.term,
            revision
        );
    }
    Ok((b.header, applied))
}

fn status(file: &Path, key_file: &Path) -> anyhow::Result<()> {
    checked(file, key_file)?;
    let b = backup::open(file, key(key_file)?)?;
    let h = b.header.clone();
    let records = b.verify()?;
    println!(
        "{}: whole and readable; revision {}, log index {} (term {}), from node {}, saved {}, {records} records",
        file.display(),
        h.revision,
        h.applied_index,
        h.applied_term,
        h.source_node,
        super::fmt_ms(h.saved_ms)
    );
    Ok(())
}

async fn restore(file: &Path, key_file: &Path, config: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    // Checked whole before anything is written: a damaged backup leaves the
    // data directory as it was.
    let (header, applied) = checked(file, key_file)?;
    let members: std::collections::BTreeMap<u64, NodeInfo> = cfg
        .initial_members
        .iter()
        .map(|(id, m)| (*id, NodeInfo { raft_addr: m.raft_addr.clone(), api_addr: m.api_addr.clone() }))
        .collect();
    // Refusals that need no storage come before anything is created, so a
    // refused restore leaves no keyring or database behind.
    anyhow::ensure!(
        members.contains_key(&cfg.id),
        "node {} is not one of the config's initial_members {:?}: a restored node starts a new cluster of them",
        cfg.id,
        members.keys().collect::<Vec<_>>()
    );
    anyhow::ensure!(
        !cfg.data_dir.join("db").join("CURRENT").exists(),
        "{} holds a node's storage already; restore into an empty one",
        cfg.data_dir.display()
    );
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    crate::server::claim_data_dir(&cfg.data_dir, cfg.id)?;
    let codec = crate::encryption::codec(&cfg)?;
    let db = strongbox_store::Db::open(&cfg.data_dir.join("db"), codec)
        .map_err(|e| anyhow::anyhow!("cannot open storage in {}: {e}", cfg.data_dir.display()))?;
    let image = backup::open(file, key(key_file)?)?;
    strongbox_raft::restore::restore(&db, cfg.id, members.clone(), applied, image.frames).await?;
    println!(
        "restored {} into {} as node {} of {:?} (revision {}, log index {}); start it with `strongbox serve --config {}`",
        file.display(),
        cfg.data_dir.display(),
        cfg.id,
        members.keys().collect::<Vec<_>>(),
        header.revision,
        applied.index,
        config.display()
    );
    Ok(())
}
