//! The replicated audit chain: one record per command that reaches apply,
//! accepted or refused, hash-chained so an edit or a removal is detected.

mod common;

use common::*;
use strongbox_store::audit::{first_broken, AuditRecord};
use strongbox_store::layout::Cf;

#[test]
fn every_command_leaves_a_chained_record_and_tampering_is_detected() {
    let (_dir, sm) = open();
    assert!(apply_one(&sm, &put("a", 10, "team/db", "hunter2-value", None)).result.is_ok());
    // Refused: a failed check-and-set, and a token nobody issued.
    assert!(apply_one(&sm, &put("b", 11, "team/db", "x", Some(7))).result.is_err());
    let stranger = as_token([9; 32], "c", 12, put_op("team/db", "x", None));
    assert!(apply_one(&sm, &stranger).result.is_err());
    // A retry of "a" is answered from the first apply, and audited too.
    assert!(apply_one(&sm, &put("a", 13, "team/db", "hunter2-value", None)).deduplicated);

    let records = sm.audit(1, 100).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6], "bootstrap, login, then four requests");
    let last4: Vec<(&str, &str, &str)> =
        records[2..].iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.outcome.as_str())).collect();
    assert_eq!(
        last4,
        [
            ("user:admin", "put_secret", "ok"),
            ("user:admin", "put_secret", "FailedPrecondition"),
            ("token:unknown", "put_secret", "Unauthenticated"),
            ("user:admin", "put_secret", "deduplicated"),
        ]
    );
    assert_eq!(records[2].resource, "secrets:team/db");
    assert!(!format!("{records:?}").contains("hunter2"), "no secret value in the audit trail");
    assert_eq!(first_broken((0, [0; 32]), &records), None);
    assert_eq!(sm.audit_head().unwrap(), (6, records[5].hash));

    // Edit record 4 on disk (a refusal turned into a success): caught there.
    let mut edited: AuditRecord = records[3].clone();
    edited.outcome = "ok".into();
    let mut batch = sm.db().batch();
    batch.put(Cf::Audit, &4u64.to_be_bytes(), &edited);
    sm.db().write(batch, true).unwrap();
    let broken = first_broken((0, [0; 32]), &sm.audit(1, 100).unwrap()).expect("edit detected");
    assert_eq!(broken.0, 4, "{broken:?}");

    // Restore it, then drop record 5: caught as missing.
    let mut batch = sm.db().batch();
    batch.put(Cf::Audit, &4u64.to_be_bytes(), &records[3]);
    batch.delete(Cf::Audit, &5u64.to_be_bytes());
    sm.db().write(batch, true).unwrap();
    let broken = first_broken((0, [0; 32]), &sm.audit(1, 100).unwrap()).expect("removal detected");
    assert_eq!(broken.0, 5, "{broken:?}");
}
