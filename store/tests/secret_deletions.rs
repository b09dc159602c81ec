//! Soft deletion per secret version (Vault KV v2), from state version 4:
//! a deleted version stays deleted until undeleted, whatever is written
//! after it; versions are deleted and undeleted by number. Older states
//! keep the old rule (a put made the deleted latest readable again).

mod common;

use common::*;
use strongbox_store::command::{
    DeleteSecret, DeleteSecretVersions, DestroySecretVersions, Outcome, SetStateVersion, UndeleteSecret,
    UndeleteSecretVersions,
};
use strongbox_store::{ErrorCode, Op, StateMachine};

fn delete_latest(id: &str, t: u64) -> strongbox_store::Command {
    as_admin(id, t, Op::DeleteSecret(DeleteSecret { path: "p".into() }))
}

fn delete(id: &str, t: u64, versions: &[u64]) -> strongbox_store::Command {
    as_admin(
        id,
        t,
        Op::DeleteSecretVersions(DeleteSecretVersions { path: "p".into(), versions: versions.into() }),
    )
}

fn undelete(id: &str, t: u64, versions: &[u64]) -> strongbox_store::Command {
    let op = UndeleteSecretVersions { path: "p".into(), versions: versions.into() };
    as_admin(id, t, Op::UndeleteSecretVersions(op))
}

fn readable(sm: &StateMachine, version: u64) -> bool {
    sm.get_secret("p", Some(version)).unwrap().is_some()
}

/// Versions 1..=n of "p".
fn with_versions(sm: &StateMachine, n: u64) {
    for v in 1..=n {
        let r = apply_one(sm, &put(&format!("put-{v}"), v, "p", &format!("v{v}"), None));
        assert_eq!(r.result, Ok(Outcome::SecretWritten { version: v }));
    }
}

#[test]
fn a_deleted_latest_version_stays_deleted_after_a_put() {
    let (_d, sm) = open();
    with_versions(&sm, 2);
    assert!(apply_one(&sm, &delete_latest("d", 10)).result.is_ok());
    apply_one(&sm, &put("put-3", 11, "p", "v3", None));
    assert!(!readable(&sm, 2), "the put must not bring version 2 back");
    assert!(readable(&sm, 1) && readable(&sm, 3));
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().version, 3);
    // Undeleting the latest concerns version 3 (live): version 2 stays deleted.
    let u = as_admin("u", 12, Op::UndeleteSecret(UndeleteSecret { path: "p".into() }));
    assert_eq!(apply_one(&sm, &u).result, Ok(Outcome::SecretUndeleted { version: 3 }));
    assert!(!readable(&sm, 2));
    let (_, states) = sm.secret_versions("p").unwrap().unwrap();
    let deleted: Vec<_> = states.iter().map(|s| s.deleted_ms).collect();
    assert_eq!(deleted, vec![None, Some(10), None]);
}

#[test]
fn before_version_4_a_put_made_the_deleted_version_readable_again() {
    let (_d, sm) = open_at_version(3);
    with_versions(&sm, 2);
    apply_one(&sm, &delete_latest("d", 10));
    apply_one(&sm, &put("put-3", 11, "p", "v3", None));
    assert!(readable(&sm, 2), "the old rule, kept for states that have not moved on");
    let refused = apply_one(&sm, &delete("dv", 12, &[1]));
    assert_eq!(refused.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    assert!(readable(&sm, 1), "nothing applied");
}

#[test]
fn a_deletion_made_before_the_upgrade_survives_the_next_put() {
    let (_d, sm) = open_at_version(3);
    with_versions(&sm, 2);
    apply_one(&sm, &delete_latest("d", 10));
    let up = as_admin("up", 11, Op::SetStateVersion(SetStateVersion { version: 4 }));
    assert_eq!(apply_one(&sm, &up).result, Ok(Outcome::StateVersion { version: 4 }));
    apply_one(&sm, &put("put-3", 12, "p", "v3", None));
    assert!(!readable(&sm, 2));
    let (_, states) = sm.secret_versions("p").unwrap().unwrap();
    assert_eq!(states[1].deleted_ms, Some(10), "the time of the deletion, from the meta");
    // And it can be brought back by number.
    assert_eq!(
        apply_one(&sm, &undelete("u", 13, &[2])).result,
        Ok(Outcome::SecretVersionsUndeleted { versions: vec![2], latest_version: 3 })
    );
    assert!(readable(&sm, 2));
}

#[test]
fn versions_by_number_change_only_what_they_name_and_answer_what_changed() {
    let (_d, sm) = open();
    with_versions(&sm, 3);
    let r = apply_one(&sm, &delete("d1", 10, &[3, 1, 9, 1]));
    assert_eq!(
        r.result,
        Ok(Outcome::SecretVersionsDeleted { versions: vec![1, 3], latest_version: 3 }),
        "9 does not exist"
    );
    assert!(!readable(&sm, 1) && readable(&sm, 2) && !readable(&sm, 3));
    assert!(sm.get_secret("p", None).unwrap().is_none(), "the latest (3) is deleted");
    assert!(sm.secret_meta("p").unwrap().unwrap().deleted);

    let rev = sm.revision().unwrap();
    let again = apply_one(&sm, &delete("d2", 11, &[1]));
    assert_eq!(again.result, Ok(Outcome::SecretVersionsDeleted { versions: vec![], latest_version: 3 }));
    assert_eq!(sm.revision().unwrap(), rev, "nothing changed: no revision");

    let r = apply_one(&sm, &undelete("u1", 12, &[2, 3]));
    assert_eq!(
        r.result,
        Ok(Outcome::SecretVersionsUndeleted { versions: vec![3], latest_version: 3 }),
        "2 was live"
    );
    assert!(!sm.secret_meta("p").unwrap().unwrap().deleted);
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().value, b"v3");
    assert!(!readable(&sm, 1), "1 stays deleted");

    // One feed event per version, saying whether it was the latest.
    apply_one(&sm, &delete("d3", 13, &[2, 3]));
    let last = sm.feed(sm.revision().unwrap(), 1).unwrap().remove(0);
    let events: Vec<_> = last
        .events
        .iter()
        .map(|e| (e.kind.as_str(), e.fields["version"].as_str(), e.fields["latest"].as_str()))
        .collect();
    assert_eq!(
        events,
        vec![("secret.version_deleted", "2", "false"), ("secret.version_deleted", "3", "true")]
    );
}

#[test]
fn destroyed_versions_are_neither_deleted_nor_brought_back() {
    let (_d, sm) = open();
    with_versions(&sm, 2);
    apply_one(&sm, &delete("d1", 10, &[1]));
    let destroy = DestroySecretVersions { path: "p".into(), versions: vec![1, 2] };
    assert!(apply_one(&sm, &as_admin("x", 11, Op::DestroySecretVersions(destroy))).result.is_ok());
    assert_eq!(
        apply_one(&sm, &delete("d2", 12, &[2])).result,
        Ok(Outcome::SecretVersionsDeleted { versions: vec![], latest_version: 2 })
    );
    assert_eq!(
        apply_one(&sm, &undelete("u", 13, &[1])).result,
        Ok(Outcome::SecretVersionsUndeleted { versions: vec![], latest_version: 2 })
    );
    let (_, states) = sm.secret_versions("p").unwrap().unwrap();
    assert!(states.iter().all(|s| s.created_ms.is_none()), "{states:?}");
    assert_eq!(states[0].deleted_ms, Some(10), "Vault keeps the deletion time of a destroyed version");
    // Deleting the destroyed latest: OK, and nothing changes (Vault).
    let rev = sm.revision().unwrap();
    assert_eq!(apply_one(&sm, &delete_latest("d3", 14)).result, Ok(Outcome::SecretDeleted { version: 2 }));
    assert_eq!(sm.revision().unwrap(), rev);
    assert!(!sm.secret_meta("p").unwrap().unwrap().deleted);
}

#[test]
fn pruned_versions_take_their_deletion_with_them() {
    let (_d, sm) = open();
    let keep_two = |id: &str, t, v: &str| {
        let op = Op::PutSecret(strongbox_store::command::PutSecret {
            path: "p".into(),
            value: v.into(),
            cas: None,
            max_versions: Some(2),
        });
        apply_one(&sm, &as_admin(id, t, op))
    };
    keep_two("p1", 1, "v1");
    keep_two("p2", 2, "v2");
    apply_one(&sm, &delete("d", 3, &[1, 2]));
    keep_two("p3", 4, "v3");
    keep_two("p4", 5, "v4");
    let (meta, states) = sm.secret_versions("p").unwrap().unwrap();
    assert_eq!((meta.oldest_version, meta.latest_version), (3, 4));
    assert!(states.iter().all(|s| s.deleted_ms.is_none()), "{states:?}");
    assert!(readable(&sm, 3) && readable(&sm, 4));
}

#[test]
fn a_version_list_is_bounded_and_has_no_zero() {
    for versions in [vec![], vec![0], (1..=101).collect::<Vec<u64>>()] {
        let op = DeleteSecretVersions { path: "p".into(), versions: versions.clone() };
        assert_eq!(op.validate().unwrap_err().code, ErrorCode::InvalidArgument, "{versions:?}");
        let op = UndeleteSecretVersions { path: "p".into(), versions };
        assert_eq!(op.validate().unwrap_err().code, ErrorCode::InvalidArgument);
    }
}
