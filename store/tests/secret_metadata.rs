//! A secret's metadata, Vault KV v2's way (state version 5). Purging
//! (`kv metadata delete`): every version and the metadata go, the folder
//! listing forgets the path and the folders it leaves empty, and the path
//! starts over at version 1. Settings (`kv metadata put`): versions kept,
//! check-and-set required, custom metadata.

mod common;

use common::*;
use std::collections::BTreeMap;

use strongbox_store::command::{Outcome, PurgeSecret, UpdateSecretMetadata, STATE_VERSION_SUPPORTED};
use strongbox_store::{Command, ErrorCode, Op, StateMachine};

fn purge(id: &str, t: u64, path: &str) -> Command {
    as_admin(id, t, Op::PurgeSecret(PurgeSecret { path: path.into() }))
}

fn listed(sm: &StateMachine, folder: &str) -> Vec<String> {
    let mut names: Vec<String> =
        sm.list_secrets(folder, "", 100).unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    names
}

#[test]
fn a_purge_removes_every_version_the_metadata_and_the_listing() {
    let (_d, sm) = open();
    for (i, (path, value)) in
        [("a/b/c", "1"), ("a/b/c", "2"), ("a/b/c", "3"), ("a/x", "x")].iter().enumerate()
    {
        assert!(apply_one(&sm, &put(&format!("put-{i}"), i as u64 + 1, path, value, None)).result.is_ok());
    }
    let before = sm.revision().unwrap();
    let r = apply_one(&sm, &purge("purge-1", 10, "a/b/c"));
    assert_eq!(r.result, Ok(Outcome::SecretPurged { versions_destroyed: 3 }));
    assert_eq!(r.revision, before + 1, "a purge is one change");
    for v in 1..=3 {
        assert!(sm.get_secret("a/b/c", Some(v)).unwrap().is_none(), "version {v} must be gone");
    }
    assert!(sm.secret_meta("a/b/c").unwrap().is_none());
    assert!(sm.secret_versions("a/b/c").unwrap().is_none());
    assert_eq!(listed(&sm, "a/"), ["x"], "the emptied folder b/ goes, x stays");
    assert!(listed(&sm, "a/b/").is_empty());
    assert_eq!(listed(&sm, ""), ["a/"], "a/ still holds x");
    assert_eq!(sm.get_secret("a/x", None).unwrap().unwrap().value, b"x");

    // The path starts over.
    let again = apply_one(&sm, &put("put-again", 11, "a/b/c", "new", Some(0)));
    assert_eq!(again.result, Ok(Outcome::SecretWritten { version: 1 }));
    assert_eq!(listed(&sm, "a/"), ["b/", "x"]);
    assert_eq!(listed(&sm, "a/b/"), ["c"]);
}

#[test]
fn a_folder_emptied_by_a_purge_is_listed_again_by_the_next_put_under_it() {
    // The folder cache must not answer "listed" for an entry a purge took
    // away: put a/x finds the root's a/ entry in the database and caches it.
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "a/b/c", "1", None));
    apply_one(&sm, &put("p2", 2, "a/x", "x", None));
    apply_one(&sm, &purge("g1", 3, "a/b/c"));
    apply_one(&sm, &purge("g2", 4, "a/x"));
    assert!(listed(&sm, "").is_empty(), "nothing left anywhere");
    assert!(listed(&sm, "a/").is_empty());
    apply_one(&sm, &put("p3", 5, "a/y", "y", None));
    assert_eq!(listed(&sm, ""), ["a/"]);
    assert_eq!(listed(&sm, "a/"), ["y"]);
}

#[test]
fn a_purge_and_puts_in_one_apply_batch_see_each_other() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "f/s", "1", None));
    let rs = apply_group(
        &sm,
        &[
            purge("g1", 2, "f/s"),
            put("p2", 3, "f/t", "t", None),
            purge("g2", 4, "f/t"),
            put("p3", 5, "f/s", "s", None),
        ],
    );
    assert!(rs.iter().all(|r| r.result.is_ok()), "{rs:?}");
    assert_eq!(rs[3].result, Ok(Outcome::SecretWritten { version: 1 }));
    assert_eq!(listed(&sm, ""), ["f/"]);
    assert_eq!(listed(&sm, "f/"), ["s"]);
}

#[test]
fn purging_what_is_not_there_succeeds_and_changes_nothing() {
    // As Vault's `kv metadata delete` (204) and etcd's DeleteRange: a purge
    // retried without its request id after it went through is no error.
    // State version 5 answered NOT_FOUND, and still does on such a state.
    for (version, found) in [(STATE_VERSION_SUPPORTED, true), (5, false)] {
        let (_d, sm) = open_at_version(version);
        apply_one(&sm, &put("p1", 1, "a/b", "1", None));
        let before = sm.revision().unwrap();
        let feed_before = sm.feed(0, 100).unwrap().len();
        for path in ["a/c", "a", "a/b/c"] {
            let r = apply_one(&sm, &purge(&format!("g-{path}"), 2, path));
            if found {
                assert_eq!(r.result, Ok(Outcome::SecretPurged { versions_destroyed: 0 }), "{path}");
            } else {
                assert_eq!(r.result.unwrap_err().code, ErrorCode::NotFound, "{path}");
            }
        }
        assert_eq!(sm.revision().unwrap(), before, "no revision at version {version}");
        assert_eq!(sm.feed(0, 100).unwrap().len(), feed_before, "no feed event");
        assert_eq!(listed(&sm, "a/"), ["b"]);
        assert!(sm.get_secret("a/b", None).unwrap().is_some());
    }
}

#[test]
fn a_purge_takes_soft_deleted_and_destroyed_versions_along() {
    let (_d, sm) = open();
    for v in 1..=3 {
        apply_one(&sm, &put(&format!("p{v}"), v, "s", "v", None));
    }
    let del = as_admin("d", 4, Op::DeleteSecret(strongbox_store::command::DeleteSecret { path: "s".into() }));
    assert!(apply_one(&sm, &del).result.is_ok());
    let destroy = strongbox_store::command::DestroySecretVersions { path: "s".into(), versions: vec![1] };
    assert!(apply_one(&sm, &as_admin("x", 5, Op::DestroySecretVersions(destroy))).result.is_ok());
    let r = apply_one(&sm, &purge("g", 6, "s"));
    assert_eq!(r.result, Ok(Outcome::SecretPurged { versions_destroyed: 2 }), "versions 2 and 3 had values");
    // Nothing of the old secret's deletions carries over to the new one.
    apply_one(&sm, &put("p4", 7, "s", "fresh", None));
    let (meta, states) = sm.secret_versions("s").unwrap().unwrap();
    assert_eq!((meta.latest_version, meta.deleted), (1, false));
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].deleted_ms, None);
}

#[test]
fn before_version_5_a_purge_is_refused_and_nothing_changes() {
    let (_d, sm) = open_at_version(4);
    apply_one(&sm, &put("p1", 1, "s", "v", None));
    let r = apply_one(&sm, &purge("g", 2, "s"));
    let e = r.result.unwrap_err();
    assert_eq!(e.code, ErrorCode::FailedPrecondition);
    assert!(e.message.contains("state version 5"), "{}", e.message);
    assert!(sm.get_secret("s", None).unwrap().is_some());
    assert_eq!(listed(&sm, ""), ["s"]);
}

#[test]
fn a_purge_is_a_feed_event_and_an_audit_record() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "team/s", "v", None));
    let r = apply_one(&sm, &purge("g", 2, "team/s"));
    let feed = sm.feed(r.revision, 10).unwrap();
    let kinds: Vec<_> =
        feed.iter().flat_map(|rec| rec.events.iter().map(|e| (e.kind.clone(), e.entity.clone()))).collect();
    assert_eq!(kinds, [("secret.purged".to_string(), "team/s".to_string())]);
    let audit = sm.audit(0, 100).unwrap();
    assert!(audit.iter().any(|a| a.resource == "secrets:team/s" && a.action == "purge_secret"));
}

fn settings(id: &str, t: u64, path: &str, f: impl FnOnce(&mut UpdateSecretMetadata)) -> Command {
    let mut op = UpdateSecretMetadata {
        path: path.into(),
        max_versions: None,
        cas_required: None,
        custom_metadata: None,
    };
    f(&mut op);
    as_admin(id, t, Op::UpdateSecretMetadata(op))
}

#[test]
fn cas_required_refuses_a_put_without_cas_and_nothing_is_written() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "s", "v1", None));
    let r = apply_one(&sm, &settings("m1", 2, "s", |o| o.cas_required = Some(true)));
    assert_eq!(r.result, Ok(Outcome::Done));
    let before = sm.revision().unwrap();
    let refused = apply_one(&sm, &put("p2", 3, "s", "v2", None)).result.unwrap_err();
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert!(refused.message.contains("requires check-and-set"), "{}", refused.message);
    assert_eq!(sm.revision().unwrap(), before, "nothing applied");
    assert_eq!(sm.get_secret("s", None).unwrap().unwrap().value, b"v1");
    // With cas it goes through; a wrong cas is still refused.
    assert_eq!(
        apply_one(&sm, &put("p3", 4, "s", "v2", Some(1))).result,
        Ok(Outcome::SecretWritten { version: 2 })
    );
    assert!(apply_one(&sm, &put("p4", 5, "s", "v3", Some(1))).result.is_err());
    // Switched off again: plain puts work.
    apply_one(&sm, &settings("m2", 6, "s", |o| o.cas_required = Some(false)));
    assert!(apply_one(&sm, &put("p5", 7, "s", "v3", None)).result.is_ok());
}

#[test]
fn settings_are_kept_replaced_whole_and_go_with_a_purge() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "s", "v1", None));
    let custom = BTreeMap::from([("owner".to_string(), "team-a".to_string()), ("tier".into(), "1".into())]);
    let r = apply_one(
        &sm,
        &settings("m1", 2, "s", |o| {
            o.custom_metadata = Some(custom.clone());
            o.max_versions = Some(2);
        }),
    );
    assert!(r.result.is_ok());
    let s = sm.secret_settings("s").unwrap();
    assert_eq!(s.custom_metadata, custom);
    assert!(!s.cas_required);
    assert_eq!(sm.secret_meta("s").unwrap().unwrap().max_versions, 2);
    // The same settings again: OK, no new revision.
    let again = sm.revision().unwrap();
    let same = apply_one(&sm, &settings("m2", 3, "s", |o| o.custom_metadata = Some(custom.clone())));
    assert_eq!((same.result, same.revision), (Ok(Outcome::Done), again));
    // Replaced whole, not merged.
    let only = BTreeMap::from([("tier".to_string(), "2".to_string())]);
    apply_one(&sm, &settings("m3", 4, "s", |o| o.custom_metadata = Some(only.clone())));
    assert_eq!(sm.secret_settings("s").unwrap().custom_metadata, only);
    // max_versions applies at the next put: versions 1 and 2 of 3 would be
    // kept at 3; with 2 kept, version 1 goes.
    apply_one(&sm, &put("p2", 5, "s", "v2", None));
    apply_one(&sm, &put("p3", 6, "s", "v3", None));
    assert!(sm.get_secret("s", Some(1)).unwrap().is_none());
    assert!(sm.get_secret("s", Some(2)).unwrap().is_some());
    // A purge takes the settings along; the new secret has none.
    apply_one(&sm, &settings("m4", 7, "s", |o| o.cas_required = Some(true)));
    apply_one(&sm, &purge("g", 8, "s"));
    assert!(apply_one(&sm, &put("p4", 9, "s", "fresh", None)).result.is_ok(), "no cas needed any more");
    assert!(sm.secret_settings("s").unwrap().is_default());
}

#[test]
fn bad_or_empty_settings_are_refused_before_they_reach_the_log() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "s", "v1", None));
    let nothing = apply_one(&sm, &settings("m1", 2, "s", |_| {})).result.unwrap_err();
    assert_eq!(nothing.code, ErrorCode::InvalidArgument);
    let zero = apply_one(&sm, &settings("m2", 2, "s", |o| o.max_versions = Some(0))).result.unwrap_err();
    assert_eq!(zero.code, ErrorCode::InvalidArgument);
    let big = BTreeMap::from([("k".to_string(), "v".repeat(513))]);
    let r = apply_one(&sm, &settings("m3", 2, "s", |o| o.custom_metadata = Some(big))).result.unwrap_err();
    assert_eq!(r.code, ErrorCode::InvalidArgument);
    let (_d5, v5) = open_at_version(5);
    let missing = apply_one(&v5, &settings("m4", 2, "nope", |o| o.cas_required = Some(true)));
    assert_eq!(missing.result.unwrap_err().code, ErrorCode::NotFound, "before version 6, write first");
    assert!(v5.secret_meta("nope").unwrap().is_none());
    let (_d4, old) = open_at_version(4);
    apply_one(&old, &put("p1", 1, "s", "v1", None));
    let r = apply_one(&old, &settings("m5", 2, "s", |o| o.cas_required = Some(true)));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::FailedPrecondition);
}

#[test]
fn a_settings_change_keeps_the_time_of_a_deletion_made_before_version_4() {
    let (_d, sm) = open_at_version(3);
    apply_one(&sm, &put("p1", 1, "s", "v1", None));
    let del =
        as_admin("d", 10, Op::DeleteSecret(strongbox_store::command::DeleteSecret { path: "s".into() }));
    assert!(apply_one(&sm, &del).result.is_ok());
    let up =
        as_admin("up", 11, Op::SetStateVersion(strongbox_store::command::SetStateVersion { version: 5 }));
    assert_eq!(apply_one(&sm, &up).result, Ok(Outcome::StateVersion { version: 5 }));
    apply_one(&sm, &settings("m", 20, "s", |o| o.cas_required = Some(true)));
    let (_, states) = sm.secret_versions("s").unwrap().unwrap();
    assert_eq!(states[0].deleted_ms, Some(10), "the deletion's time, not the settings change's");
}

#[test]
fn metadata_set_before_the_first_version_lists_the_path_and_binds_the_first_put() {
    // Vault's `kv metadata put` on a new path: cas can be required from
    // the very first write on.
    let (_d, sm) = open();
    let custom = BTreeMap::from([("owner".to_string(), "team-a".to_string())]);
    let r = apply_one(
        &sm,
        &settings("m1", 5, "team/db/pw", |o| {
            o.cas_required = Some(true);
            o.max_versions = Some(2);
            o.custom_metadata = Some(custom.clone());
        }),
    );
    assert_eq!(r.result, Ok(Outcome::Done));
    let (meta, states, set) = sm.secret_metadata("team/db/pw").unwrap().expect("metadata exists");
    assert_eq!((meta.latest_version, meta.max_versions, meta.deleted), (0, 2, false));
    assert_eq!((meta.created_revision, meta.updated_revision), (r.revision, r.revision));
    assert_eq!(meta.created_ms, 5);
    assert!(states.is_empty(), "no version yet");
    assert!(set.cas_required);
    assert_eq!(set.custom_metadata, custom);
    assert_eq!(listed(&sm, ""), ["team/"]);
    assert_eq!(listed(&sm, "team/db/"), ["pw"]);
    assert!(sm.get_secret("team/db/pw", None).unwrap().is_none(), "nothing to read yet");
    assert!(sm.get_secret("team/db/pw", Some(0)).unwrap().is_none());

    // The first put must carry cas 0; without it nothing is written.
    let before = sm.revision().unwrap();
    let refused = apply_one(&sm, &put("p0", 6, "team/db/pw", "v", None)).result.unwrap_err();
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert!(refused.message.contains("current version is 0"), "{}", refused.message);
    assert_eq!(sm.revision().unwrap(), before);
    assert!(apply_one(&sm, &put("p1", 7, "team/db/pw", "v", Some(1))).result.is_err());
    let first = apply_one(&sm, &put("p2", 8, "team/db/pw", "v1", Some(0)));
    assert_eq!(first.result, Ok(Outcome::SecretWritten { version: 1 }));
    let kinds: Vec<_> =
        sm.feed(first.revision, 1).unwrap()[0].events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds, ["secret.created"], "the first version is still the secret's creation");
    for (i, cas) in [(3u64, 1u64), (4, 2)] {
        apply_one(&sm, &put(&format!("p{i}"), 8 + i, "team/db/pw", &format!("v{i}"), Some(cas)));
    }
    // max_versions set before the first put holds: 2 of 3 kept.
    let (meta, states, _) = sm.secret_metadata("team/db/pw").unwrap().unwrap();
    assert_eq!((meta.latest_version, meta.oldest_version, states.len()), (3, 2, 2));
    assert_eq!(meta.created_ms, 5, "created when its metadata was");
    // Listed once, not twice.
    assert_eq!(listed(&sm, "team/db/"), ["pw"]);

    // A new path is named plainly, as a put would require.
    let before = sm.revision().unwrap();
    let dots = apply_one(&sm, &settings("m2", 20, "team/../app/x", |o| o.max_versions = Some(3)));
    assert_eq!(dots.result.unwrap_err().code, ErrorCode::InvalidArgument);
    assert!(sm.secret_meta("team/../app/x").unwrap().is_none());
    assert_eq!((sm.revision().unwrap(), listed(&sm, "team/")), (before, vec!["db/".to_string()]));
}

#[test]
fn a_path_with_metadata_only_can_be_deleted_and_purged_without_harm() {
    let (_d, sm) = open();
    apply_one(&sm, &put("p1", 1, "a/keep", "k", None));
    apply_one(&sm, &settings("m1", 2, "a/new/s", |o| o.max_versions = Some(3)));
    let before = sm.revision().unwrap();
    // A soft delete finds no version to hide: OK, nothing changes.
    let del =
        as_admin("d", 3, Op::DeleteSecret(strongbox_store::command::DeleteSecret { path: "a/new/s".into() }));
    assert!(apply_one(&sm, &del).result.is_ok());
    assert_eq!(sm.revision().unwrap(), before);
    let r = apply_one(&sm, &purge("g", 4, "a/new/s"));
    assert_eq!(r.result, Ok(Outcome::SecretPurged { versions_destroyed: 0 }));
    assert_eq!(r.revision, before + 1, "the metadata was something to remove");
    assert!(sm.secret_meta("a/new/s").unwrap().is_none());
    assert_eq!(listed(&sm, "a/"), ["keep"], "the emptied folder new/ goes");
}
