//! The node-local audit log: chained, durable across reopen, pruned by
//! count from an anchor that verification starts at, tampering detected.

use strongbox_store::codec::Codec;
use strongbox_store::layout::Cf;
use strongbox_store::local_audit::{self, LocalAuditLog, LocalEntry, LOCAL_AUDIT_BATCH_MAX};
use strongbox_store::Db;

fn entry(i: u64) -> LocalEntry {
    LocalEntry {
        time_ms: 1_000 + i,
        actor: "user:alice".into(),
        action: "secrets.get".into(),
        resource: format!("secrets:team/{i}"),
        outcome: if i % 3 == 0 { "PermissionDenied".into() } else { "ok".into() },
        request_id: format!("r{i}"),
        revision: i / 2,
    }
}

fn verify(db: &Db) -> Option<(u64, String)> {
    local_audit::verify(db).unwrap().broken
}

#[test]
fn records_chain_survive_reopen_and_are_pruned_from_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Codec::plaintext()).unwrap();
    let mut log = LocalAuditLog::open(db.clone(), 2, 1024, true).unwrap();
    assert_eq!(log.append((1..=3).map(entry).collect()).unwrap(), 3);
    let recs = local_audit::read(&db, 1, 10).unwrap();
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        (recs[0].node, recs[0].action.as_str(), recs[2].outcome.as_str()),
        (2, "secrets.get", "PermissionDenied")
    );
    assert_eq!(recs[1].prev_hash, recs[0].hash);
    assert_eq!(verify(&db), None);
    drop(log);
    drop(db);

    // Reopened: the chain continues from the persisted head.
    let db = Db::open(dir.path(), Codec::plaintext()).unwrap();
    let mut log = LocalAuditLog::open(db.clone(), 2, 1024, true).unwrap();
    assert_eq!(log.head().0, 3);
    assert_eq!(log.append(vec![entry(4)]).unwrap(), 4);
    assert_eq!(local_audit::read(&db, 4, 1).unwrap()[0].prev_hash, recs[2].hash);

    // Past retention (1024): the oldest go, the anchor names the last one
    // dropped, and the retained part still verifies from it.
    let mut i = 5;
    while i <= 2_100 {
        let n = (2_101 - i).min(LOCAL_AUDIT_BATCH_MAX as u64);
        log.append((i..i + n).map(entry).collect()).unwrap();
        i += n;
    }
    let (anchor, head) = (local_audit::anchor(&db).unwrap(), local_audit::head(&db).unwrap());
    assert_eq!(head.0, 2_100);
    assert_eq!(anchor.0, 2_100 - 1024, "exactly the retained count remains");
    let first = local_audit::read(&db, 0, 1).unwrap();
    assert_eq!(first[0].seq, anchor.0 + 1, "nothing at or before the anchor is left");
    assert_eq!(first[0].prev_hash, anchor.1);
    assert_eq!(verify(&db), None);
}

#[test]
fn an_edited_a_removed_or_a_truncated_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Codec::plaintext()).unwrap();
    let mut log = LocalAuditLog::open(db.clone(), 1, 1024, true).unwrap();
    log.append((1..=10).map(entry).collect()).unwrap();
    let recs = local_audit::read(&db, 1, 100).unwrap();

    // A denial rewritten as a success.
    let mut edited = recs[5].clone();
    assert_eq!(edited.outcome, "PermissionDenied");
    edited.outcome = "ok".into();
    let mut b = db.batch();
    b.put(Cf::LocalAudit, &local_audit::key(6), &edited);
    db.write(b, true).unwrap();
    assert_eq!(verify(&db).map(|b| b.0), Some(6));

    // Restored, then record 8 removed.
    let mut b = db.batch();
    b.put(Cf::LocalAudit, &local_audit::key(6), &recs[5]);
    b.delete(Cf::LocalAudit, &local_audit::key(8));
    db.write(b, true).unwrap();
    assert_eq!(verify(&db).map(|b| b.0), Some(8));

    // Restored, then the last record removed: the head still names it.
    let mut b = db.batch();
    b.put(Cf::LocalAudit, &local_audit::key(8), &recs[7]);
    b.delete(Cf::LocalAudit, &local_audit::key(10));
    db.write(b, true).unwrap();
    assert_eq!(verify(&db).map(|b| b.0), Some(10));
}
