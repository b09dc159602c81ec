//! Restoring a backup image into the pristine data directory of one member
//! of a new cluster (as etcdutl's `snapshot restore` does). Every member of
//! the new cluster is restored from the same backup with the same member
//! list; each then starts with the image as its state, the log empty behind
//! it, and the new membership, and they elect a leader among themselves.
//! Nothing here initializes a cluster: a restored node is not pristine.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::Membership;
use strongbox_store::db::encode;
use strongbox_store::snapshot::{FrameReader, FrameWriter};
use strongbox_store::{Cf, Db, DbError, StateMachine};

use crate::log_store::LogStore;
use crate::sm_store::{snapshot_receive_file, SmStore, META_APPLIED, META_MEMBERSHIP};
use crate::types::{LogId, NodeId, NodeInfo, SnapshotMeta, StoredMembership, Vote};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("storage: {0}")]
    Storage(String),
}

/// The image's applied log id and revision, after reading (and so
/// checking) all of it: what a backup's header claims is compared with
/// these, which the frames' authentication covers.
pub fn position_of(frames: &mut FrameReader) -> Result<(LogId, u64), RestoreError> {
    let meta = strongbox_store::snapshot::read_meta(frames)?;
    let applied = meta.get::<LogId>(META_APPLIED)?.ok_or_else(|| {
        RestoreError::Refused("the image holds no applied log position (not a state machine image)".into())
    })?;
    let revision = meta.get::<u64>(strongbox_store::layout::sm_keys::REVISION)?.unwrap_or(0);
    Ok((applied, revision))
}

/// Installs `frames` (an image at `applied`, already checked whole by
/// `position_of`) as the state of member `id` of a new cluster of
/// `members`, into `db`, which must be pristine.
pub async fn restore(
    db: &Db,
    id: NodeId,
    members: BTreeMap<NodeId, NodeInfo>,
    applied: LogId,
    mut frames: FrameReader,
) -> Result<(), RestoreError> {
    if !members.contains_key(&id) {
        return Err(RestoreError::Refused(format!(
            "node {id} is not one of the members {:?}",
            members.keys()
        )));
    }
    let storage = |e: openraft::StorageError<NodeId>| RestoreError::Storage(e.to_string());
    let mut log = LogStore::new(db.clone(), Default::default());
    let state = log.get_log_state().await.map_err(storage)?;
    let vote = log.read_vote().await.map_err(storage)?;
    let sm = StateMachine::new(db.clone());
    if state.last_log_id.is_some() || vote.is_some() || sm.meta::<LogId>(META_APPLIED)?.is_some() {
        return Err(RestoreError::Refused(
            "the data directory holds a node's state already; restore into an empty one".into(),
        ));
    }
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let membership = StoredMembership::new(Some(applied), Membership::new(vec![voters], members));
    // The image as this node keeps images (sealed with its own keys), its
    // membership replaced by the new cluster's.
    let dir = db.snapshot_dir().to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| DbError::Format(format!("{}: {e}", dir.display())))?;
    let file = rewrite(snapshot_receive_file(&dir)?, db, &mut frames, &membership)?;
    let meta = SnapshotMeta {
        last_log_id: Some(applied),
        last_membership: membership,
        snapshot_id: format!("restored-{}-{}", applied.leader_id.term, applied.index),
    };
    let mut sm_store = SmStore::open(sm)?;
    sm_store.install_snapshot(&meta, Box::new(tokio::fs::File::from_std(file))).await.map_err(storage)?;
    // A term no lower than the image's last entry's: the next election is
    // in a later term, and the new leader's entries follow the image's.
    log.save_vote(&Vote::new(applied.leader_id.term, applied.leader_id.node_id)).await.map_err(storage)?;
    log.purge(applied).await.map_err(storage)?;
    Ok(())
}

fn rewrite(
    out: File,
    db: &Db,
    frames: &mut FrameReader,
    membership: &StoredMembership,
) -> Result<File, DbError> {
    let mut w = FrameWriter::new(out, db.codec().clone())?;
    while let Some(records) = frames.next_records()? {
        for (cf, key, value) in records {
            let value =
                if cf == Cf::SmMeta as u8 && key == META_MEMBERSHIP { encode(membership) } else { value };
            w.push(
                Cf::from_u8(cf).ok_or_else(|| DbError::Format(format!("unknown column family {cf}")))?,
                &key,
                value,
            )?;
        }
    }
    w.finish()
}
