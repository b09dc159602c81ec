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

/// From state version 10 an auditor tells a grant from its removal and a
/// disable from an enable by the action; before, both read the same.
#[test]
fn the_action_names_the_direction_of_role_and_enable_changes() {
    use strongbox_store::auth::Principal;
    use strongbox_store::command::{AssignRole, CreateUser, SetEnabled, STATE_VERSION_SUPPORTED};
    use strongbox_store::Op;
    for (version, expected) in [
        (STATE_VERSION_SUPPORTED, ["assign_role", "unassign_role", "disable_principal", "enable_principal"]),
        (9, ["assign_role", "assign_role", "set_enabled", "set_enabled"]),
    ] {
        let (_dir, sm) = open_at_version(version);
        let bob = CreateUser { username: "bob".into(), password_phc: "$argon2id$x".into(), roles: vec![] };
        assert!(apply_one(&sm, &as_admin("bob", 1, Op::CreateUser(bob))).result.is_ok());
        let principal = Principal::User("bob".into());
        let assign = |assign| {
            Op::AssignRole(AssignRole { principal: principal.clone(), role: "admin".into(), assign })
        };
        let enable = |enabled| Op::SetEnabled(SetEnabled { principal: principal.clone(), enabled });
        for (i, op) in [assign(true), assign(false), enable(false), enable(true)].into_iter().enumerate() {
            let r = apply_one(&sm, &as_admin(&format!("r{i}"), 2 + i as u64, op));
            assert!(r.result.is_ok(), "{version} {i}: {r:?}");
        }
        let records = sm.audit(1, 100).unwrap();
        let actions: Vec<&str> = records[records.len() - 4..].iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, expected, "state version {version}");
        assert!(records[records.len() - 4..].iter().all(|r| r.resource.starts_with("user:bob")));
    }
}

/// From state version 10 a login is the act of who logged in, and a failed
/// one reads as refused; before, both were the node's, and "ok".
#[test]
fn logins_are_audited_as_their_principal_and_failures_as_refused() {
    use strongbox_store::command::{RecordLoginFailure, STATE_VERSION_SUPPORTED};
    use strongbox_store::Op;
    for (version, login_actor, failure_outcome) in
        [(STATE_VERSION_SUPPORTED, "user:admin", "Unauthenticated"), (9, "node", "ok")]
    {
        let (_dir, sm) = open_at_version(version);
        let failure = RecordLoginFailure {
            username: "admin".into(),
            failures_max: 5,
            window_ms: 60_000,
            lockout_ms: 60_000,
        };
        assert!(apply_one(&sm, &as_node("failed", 1, Op::RecordLoginFailure(failure))).result.is_ok());
        let records = sm.audit(1, 100).unwrap();
        let login = records.iter().find(|r| r.action == "issue_token").expect("the bootstrap login");
        assert_eq!(
            (login.actor.as_str(), login.outcome.as_str()),
            (login_actor, "ok"),
            "state version {version}"
        );
        let failed = records.last().unwrap();
        assert_eq!(failed.action, "record_login_failure");
        assert_eq!((failed.actor.as_str(), failed.outcome.as_str()), ("node", failure_outcome), "{version}");
    }
}
