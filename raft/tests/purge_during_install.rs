//! openraft 0.9 purges a follower's log as soon as it has handed a received
//! snapshot to the state machine, without waiting for the install. The log
//! store must not overtake the install: until the image is in, the entries
//! it covers are all a crash or a failed install could fall back on.

use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use strongbox_raft::log_store::{LogStore, PendingInstalls};
use strongbox_raft::sm_store::META_APPLIED;
use strongbox_raft::types::{Entry, LogId};
use strongbox_store::codec::Codec;
use strongbox_store::{Cf, Db};

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn set_applied(db: &Db, index: u64) {
    let mut b = db.batch();
    b.put(Cf::SmMeta, META_APPLIED, &log_id(index));
    db.write(b, true).unwrap();
}

async fn setup(installs: &PendingInstalls) -> (tempfile::TempDir, Db, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Codec::plaintext()).unwrap();
    let mut log = LogStore::new(db.clone(), installs.clone());
    log.blocking_append((1..=20).map(|i| Entry { log_id: log_id(i), payload: EntryPayload::Blank }))
        .await
        .unwrap();
    set_applied(&db, 5);
    (dir, db, log)
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn a_purge_waits_for_the_install_that_covers_it() {
    let installs = PendingInstalls::default();
    let (_dir, db, mut log) = setup(&installs).await;
    let pending = installs.start(15);
    let mut purging = log.clone();
    let purge = tokio::spawn(async move { purging.purge(log_id(15)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!purge.is_finished(), "purged while the image was not in");
    assert_eq!(indexes(&mut log).await, (1..=20).collect::<Vec<_>>());
    // The install's last batch records the snapshot's index as applied.
    set_applied(&db, 15);
    tokio::time::timeout(Duration::from_secs(5), purge).await.expect("purge still waiting").unwrap().unwrap();
    drop(pending);
    assert_eq!(indexes(&mut log).await, (16..=20).collect::<Vec<_>>());
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(15)));
}

#[tokio::test]
async fn an_install_that_fails_leaves_the_log_whole() {
    let installs = PendingInstalls::default();
    let (_dir, _db, mut log) = setup(&installs).await;
    let pending = installs.start(15);
    let mut purging = log.clone();
    let purge = tokio::spawn(async move { purging.purge(log_id(15)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The state machine failed the install; openraft, held up by the
    // purge, has not answered the receive yet (the guard is still held).
    installs.failed(15);
    let res =
        tokio::time::timeout(Duration::from_secs(5), purge).await.expect("purge still waiting").unwrap();
    drop(pending);
    assert!(res.is_err(), "purged past the applied index: {res:?}");
    assert_eq!(indexes(&mut log).await, (1..=20).collect::<Vec<_>>());
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
}

#[tokio::test]
async fn a_purge_no_install_covers_goes_ahead() {
    let installs = PendingInstalls::default();
    let (_dir, _db, mut log) = setup(&installs).await;
    // An install through 3 does not hold up a purge through 5 (applied).
    let _pending = installs.start(3);
    tokio::time::timeout(Duration::from_secs(5), log.purge(log_id(5))).await.expect("purge waited").unwrap();
    assert_eq!(indexes(&mut log).await, (6..=20).collect::<Vec<_>>());
}
