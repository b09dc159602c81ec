//! Apply writes the state machine without the WAL. A crash (here: a child
//! process that aborts, so RocksDB gets no flush at close) loses the state
//! written since the last flush; the next start must find an earlier,
//! consistent state and re-apply the rest from the log. So the log must
//! never have been purged past the state that was flushed.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command as Process;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, StorageHelper};
use strongbox_raft::log_store::LogStore;
use strongbox_raft::sm_store::SmStore;
use strongbox_raft::types::{Entry, LogId};
use strongbox_store::codec::Codec;
use strongbox_store::command::Bootstrap;
use strongbox_store::{Command, Db, Op, StateMachine};

const CHILD_DIR_ENV: &str = "STRONGBOX_CRASH_TEST_DIR";
const ENTRIES: u64 = 60;
const PURGED: u64 = 25;

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// The commands of entry `index`: bootstrap, the admin's login, then puts
/// that overwrite a few paths (so a lost write would show in the values).
fn commands(index: u64) -> Vec<Command> {
    match index {
        1 => vec![common::as_node(
            "boot",
            0,
            Op::Bootstrap(Bootstrap {
                username: "admin".into(),
                password_phc: common::ADMIN_PHC.into(),
                name_key: strongbox_store::names::NameKey::generate(),
            }),
        )],
        2 => vec![common::login("admin", common::ADMIN_PHC, common::ADMIN_TOKEN, 0, common::FAR_MS)],
        i => (0..3)
            .map(|j| {
                let path = format!("app/key-{}", (i * 3 + j) % 7);
                common::put(&format!("req-{i}-{j}"), i * 1_000, &path, &format!("value-{i}-{j}"), None)
            })
            .collect(),
    }
}

fn entry(index: u64) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(commands(index)) }
}

fn open(dir: &Path) -> (LogStore, SmStore) {
    let db = Db::open(&dir.join("db"), Codec::plaintext()).expect("open db");
    (
        LogStore::new(db.clone(), Default::default()),
        SmStore::open(StateMachine::new(db)).expect("open state machine"),
    )
}

/// What a node does up to the crash: the whole log appended and committed,
/// applied in small groups, the log purged half way (as after a snapshot),
/// more applied, then an abort: no destructor runs.
async fn run_until_crash(dir: &Path) {
    let (mut log, mut sm) = open(dir);
    log.blocking_append((1..=ENTRIES).map(entry)).await.unwrap();
    log.save_committed(Some(log_id(ENTRIES))).await.unwrap();
    for first in (1..=PURGED).step_by(5) {
        sm.apply((first..first + 5).map(entry)).await.unwrap();
    }
    log.purge(log_id(PURGED)).await.unwrap();
    for first in (PURGED + 1..=ENTRIES).step_by(5) {
        sm.apply((first..(first + 5).min(ENTRIES + 1)).map(entry)).await.unwrap();
    }
    std::process::abort();
}

/// The secrets as the state holds them: path, version, value, revision.
fn secrets(sm: &SmStore) -> Vec<(String, u64, Vec<u8>, u64)> {
    (0..7)
        .map(|k| {
            let s = sm.state_machine().get_secret(&format!("app/key-{k}"), None).unwrap().expect("secret");
            (s.path, s.version, s.value, s.revision)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loses_unflushed_applies_and_the_restart_reapplies_them() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        run_until_crash(Path::new(&dir)).await;
        unreachable!("the child aborts");
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Process::new(std::env::current_exe().unwrap())
        .args(["a_crash_loses_unflushed_applies_and_the_restart_reapplies_them", "--exact", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must crash, not exit: {status:?}");

    let (mut log, mut sm) = open(dir.path());
    let (applied, _) = sm.applied_state().await.unwrap();
    let applied = applied.map_or(0, |l| l.index);
    // Must not happen: a purged log behind the state on disk.
    assert!(applied >= PURGED, "the log was purged to {PURGED} but the state on disk is at {applied}");
    // The applies after the purge's flush went in unlogged and were lost:
    // the re-apply below is what brings them back.
    assert!(
        applied < ENTRIES,
        "the crash lost nothing (applied {applied}): the state was written through the WAL"
    );

    let state = StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(state.committed, Some(log_id(ENTRIES)));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(ENTRIES)));

    // The same state as a node that never crashed.
    let reference_dir = tempfile::tempdir().unwrap();
    let (_, mut reference) = open(reference_dir.path());
    reference.apply((1..=ENTRIES).map(entry)).await.unwrap();
    assert_eq!(secrets(&sm), secrets(&reference));
    assert_eq!(sm.state_machine().revision().unwrap(), reference.state_machine().revision().unwrap());
}
