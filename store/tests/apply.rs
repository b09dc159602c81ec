//! Behaviour of the state machine: what applies, what must not.

mod common;

use common::*;
use strongbox_store::command::{DeleteSecret, DestroySecretVersions, Outcome, UndeleteSecret};
use strongbox_store::{Command, ErrorCode, Op};

#[test]
fn put_then_get_versions_and_revision() {
    let (_d, sm) = open();
    let r1 = apply_one(&sm, &put("a", 1, "team/db", "v1", None));
    assert_eq!(r1.result, Ok(Outcome::SecretWritten { version: 1 }));
    assert_eq!(r1.revision, BASE + 1);
    let r2 = apply_one(&sm, &put("b", 2, "team/db", "v2", None));
    assert_eq!(r2.result, Ok(Outcome::SecretWritten { version: 2 }));
    assert_eq!(sm.revision().unwrap(), BASE + 2);
    assert_eq!(sm.get_secret("team/db", None).unwrap().unwrap().value, b"v2");
    assert_eq!(sm.get_secret("team/db", Some(1)).unwrap().unwrap().value, b"v1");
}

#[test]
fn duplicate_request_id_is_applied_once() {
    let (_d, sm) = open();
    let cmd = put("same-id", 5, "p", "x", None);
    let first = apply_one(&sm, &cmd);
    let again = apply_one(&sm, &cmd);
    assert!(!first.deduplicated);
    assert!(again.deduplicated);
    assert_eq!(first.result, again.result);
    assert_eq!(sm.revision().unwrap(), BASE + 1, "a retry must not change state");
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().latest_version, 1);
}

#[test]
fn the_same_request_id_from_another_caller_is_another_request() {
    let (_d, sm) = open();
    let first = apply_one(&sm, &put("shared-id", 5, "team/a", "x", None));
    assert_eq!(first.result, Ok(Outcome::SecretWritten { version: 1 }));
    // An unknown token reusing the id must not get the admin's answer: it is
    // refused as itself, and nothing is written.
    let other = apply_one(&sm, &as_token([9; 32], "shared-id", 6, put_op("team/b", "y", None)));
    assert!(!other.deduplicated, "another caller's request must not be deduplicated against this one");
    assert_eq!(other.result.unwrap_err().code, ErrorCode::Unauthenticated);
    assert!(sm.get_secret("team/b", None).unwrap().is_none());
    // The first caller's retry is still deduplicated.
    let retry = apply_one(&sm, &put("shared-id", 7, "team/a", "x", None));
    assert!(retry.deduplicated);
    assert_eq!(sm.get_secret("team/a", None).unwrap().unwrap().latest_version, 1);
}

/// A request id is the idempotency key of one request: sent again with
/// another body or another kind of request, it must be refused, not
/// answered with the first request's result (which would tell the client
/// a write happened that never did).
#[test]
fn a_request_id_reused_for_a_different_request_is_refused_and_applies_nothing() {
    let (_d, sm) = open();
    let first = apply_one(&sm, &put("deploy-1", 5, "team/a", "x", None));
    assert_eq!(first.result, Ok(Outcome::SecretWritten { version: 1 }));
    for (what, op) in [
        ("another value", put_op("team/a", "y", None)),
        ("another path", put_op("team/b", "x", None)),
        ("another kind", Op::DeleteSecret(DeleteSecret { path: "team/a".into() })),
    ] {
        let r = apply_one(&sm, &as_admin("deploy-1", 6, op));
        assert!(!r.deduplicated, "{what}: answered as a retry");
        let e = r.result.expect_err(what);
        assert_eq!(e.code, ErrorCode::FailedPrecondition, "{what}: {e:?}");
        assert!(e.message.contains("deploy-1"), "{what}: the message names the id: {}", e.message);
    }
    assert_eq!(sm.revision().unwrap(), BASE + 1, "nothing applied");
    assert!(sm.get_secret("team/b", None).unwrap().is_none());
    assert_eq!(sm.get_secret("team/a", None).unwrap().unwrap().value, b"x");
    // The real retry is still answered from the record.
    let retry = apply_one(&sm, &put("deploy-1", 7, "team/a", "x", None));
    assert!(retry.deduplicated);
    assert_eq!(retry.result, first.result);
}

#[test]
fn duplicate_inside_one_batch_is_applied_once() {
    let (_d, sm) = open();
    let cmd = put("id", 5, "p", "x", None);
    let mut b = sm.begin().unwrap();
    b.apply(&cmd).unwrap();
    let again = b.apply(&cmd).unwrap();
    b.commit().unwrap();
    assert!(again.deduplicated);
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().latest_version, 1);
}

#[test]
fn cas_admits_exactly_one_writer() {
    let (_d, sm) = open();
    let mut b = sm.begin().unwrap();
    let wins: Vec<bool> = (0..5)
        .map(|i| b.apply(&put(&format!("w{i}"), 1, "lock", "me", Some(0))).unwrap().result.is_ok())
        .collect();
    b.commit().unwrap();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
    let refused = apply_one(&sm, &put("late", 2, "lock", "me", Some(0)));
    assert_eq!(refused.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    assert_eq!(sm.revision().unwrap(), BASE + 1, "refused CAS must not bump the revision");
}

#[test]
fn a_refused_command_leaves_none_of_its_writes_in_the_batch() {
    // A put to a new path lists the path under its folders before it checks
    // the CAS version; the refusal must take those index entries back out,
    // in the same batch (later commands) and after the commit.
    let (_d, sm) = open();
    let mut b = sm.begin().unwrap();
    let refused = b.apply(&put("r", 1, "team/new/db", "x", Some(7))).unwrap();
    assert_eq!(refused.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    let later = b.apply(&put("w", 2, "other", "y", None)).unwrap();
    assert!(later.result.is_ok());
    b.commit().unwrap();
    let root: Vec<String> = sm.list_secrets("", "", 100).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(root, ["other"], "the refused put's folder is listed");
    assert!(sm.list_secrets("team/", "", 100).unwrap().is_empty());
    assert!(sm.get_secret("team/new/db", None).unwrap().is_none());
    assert_eq!(sm.revision().unwrap(), BASE + 1);
}

#[test]
fn batch_grouping_does_not_change_results() {
    let cmds: Vec<Command> =
        (0..20).map(|i| put(&format!("r{}", i % 7), i, &format!("k{}", i % 3), "v", None)).collect();
    let (_d1, one_by_one) = open();
    let singles: Vec<_> = cmds.iter().map(|c| apply_one(&one_by_one, c)).collect();
    let (_d2, batched) = open();
    let mut b = batched.begin().unwrap();
    let grouped: Vec<_> = cmds.iter().map(|c| b.apply(c).unwrap()).collect();
    b.commit().unwrap();
    assert_eq!(singles, grouped);
    assert_eq!(one_by_one.revision().unwrap(), batched.revision().unwrap());
}

#[test]
fn invalid_input_is_refused_and_changes_nothing() {
    let (_d, sm) = open();
    for bad in ["", "/lead", "trail/", "a//b", "sp ace"] {
        let r = apply_one(&sm, &put(&format!("id{bad}"), 1, bad, "v", None));
        assert_eq!(r.result.unwrap_err().code, ErrorCode::InvalidArgument, "path {bad:?}");
    }
    let big = "x".repeat(strongbox_store::limits::SECRET_VALUE_BYTES_MAX + 1);
    assert!(apply_one(&sm, &put("big", 1, "ok", &big, None)).result.is_err());
    assert_eq!(sm.revision().unwrap(), BASE);
    assert!(sm.get_secret("ok", None).unwrap().is_none());
}

#[test]
fn soft_delete_hides_latest_keeps_history_and_undelete_brings_it_back() {
    let (_d, sm) = open();
    apply_one(&sm, &put("a", 1, "p", "v1", None));
    apply_one(&sm, &put("b", 1, "p", "v2", None));
    let del = as_admin("d", 2, Op::DeleteSecret(DeleteSecret { path: "p".into() }));
    assert_eq!(apply_one(&sm, &del).result, Ok(Outcome::SecretDeleted { version: 2 }));
    assert!(sm.get_secret("p", None).unwrap().is_none());
    assert!(sm.get_secret("p", Some(2)).unwrap().is_none(), "hidden when named by number too");
    assert_eq!(sm.get_secret("p", Some(1)).unwrap().unwrap().value, b"v1");
    // Deleting it again (a retry without its request id) succeeds and changes nothing.
    let rev = sm.revision().unwrap();
    let del2 = Command { request_id: "d2".into(), ..del.clone() };
    assert_eq!(apply_one(&sm, &del2).result, Ok(Outcome::SecretDeleted { version: 2 }));
    assert_eq!(sm.revision().unwrap(), rev);

    let undelete = |id: &str| as_admin(id, 3, Op::UndeleteSecret(UndeleteSecret { path: "p".into() }));
    assert_eq!(apply_one(&sm, &undelete("u1")).result, Ok(Outcome::SecretUndeleted { version: 2 }));
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().value, b"v2");
    assert_eq!(sm.revision().unwrap(), rev + 1);
    assert_eq!(apply_one(&sm, &undelete("u2")).result, Ok(Outcome::SecretUndeleted { version: 2 }));
    assert_eq!(sm.revision().unwrap(), rev + 1, "nothing was deleted: a no-op");

    // Destroyed while deleted: nothing to bring back.
    let del3 = Command { request_id: "d3".into(), ..del };
    assert!(apply_one(&sm, &del3).result.is_ok());
    let destroy = DestroySecretVersions { path: "p".into(), versions: vec![2] };
    assert!(apply_one(&sm, &as_admin("x", 4, Op::DestroySecretVersions(destroy))).result.is_ok());
    let r = apply_one(&sm, &undelete("u3"));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    let missing = as_admin("u4", 5, Op::UndeleteSecret(UndeleteSecret { path: "nope".into() }));
    assert_eq!(apply_one(&sm, &missing).result.unwrap_err().code, ErrorCode::NotFound);
}

/// A state made by an older build keeps answering a second delete NOT_FOUND.
#[test]
fn a_version_one_state_refuses_a_second_delete() {
    let (_d, sm) = open_at_version(1);
    apply_one(&sm, &put("a", 1, "p", "v1", None));
    let del = as_admin("d", 2, Op::DeleteSecret(DeleteSecret { path: "p".into() }));
    assert!(apply_one(&sm, &del).result.is_ok());
    let del2 = Command { request_id: "d2".into(), ..del };
    assert_eq!(apply_one(&sm, &del2).result.unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn old_versions_are_bounded() {
    let (_d, sm) = open();
    let max = strongbox_store::limits::SECRET_VERSIONS_DEFAULT;
    for i in 0..max + 3 {
        apply_one(&sm, &put(&format!("id{i}"), i, "p", &i.to_string(), None));
    }
    assert!(sm.get_secret("p", Some(1)).unwrap().is_none());
    assert!(sm.get_secret("p", Some(4)).unwrap().is_some());
}

#[test]
fn request_ids_expire_after_window_by_state_machine_time() {
    let (_d, sm) = open();
    let w = strongbox_store::limits::DEDUP_WINDOW_MS;
    apply_one(&sm, &put("id", 1, "p", "a", None));
    apply_one(&sm, &put("other", 2 + w, "q", "b", None));
    let late_retry = apply_one(&sm, &put("id", 3 + w, "p", "a", None));
    assert!(!late_retry.deduplicated);
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().latest_version, 2);
}

/// A request id used again after its window is a new request, and its own
/// record must survive the pruning of the old one: in a quiet cluster the
/// first command past the window both reuses the id and prunes the old
/// time index entry in the same batch.
#[test]
fn a_request_id_reused_after_its_window_keeps_its_new_record() {
    let (_d, sm) = open();
    let w = strongbox_store::limits::DEDUP_WINDOW_MS;
    apply_one(&sm, &put("deploy-1", 1, "p", "a", None));
    let reused = apply_one(&sm, &put("deploy-1", 2 + w, "p", "b", None));
    assert!(!reused.deduplicated);
    let retry = apply_one(&sm, &put("deploy-1", 3 + w, "p", "b", None));
    assert!(retry.deduplicated, "a retry within the new window must not apply again");
    assert_eq!(sm.get_secret("p", None).unwrap().unwrap().latest_version, 2);
}

#[test]
fn snapshot_image_roundtrip_replaces_state() {
    let (_d1, a) = open();
    apply_one(&a, &put("1", 1, "x", "from-a", None));
    let image = image_of(&a);
    let (_d2, b) = open();
    apply_one(&b, &put("2", 1, "only-in-b", "gone", None));
    apply_one(&b, &put("3", 1, "y", "gone", None));
    install_image(&a, image, &b);
    assert_eq!(b.get_secret("x", None).unwrap().unwrap().value, b"from-a");
    assert!(b.get_secret("only-in-b", None).unwrap().is_none());
    assert_eq!(b.revision().unwrap(), BASE + 1);
}

/// Request ids live in buckets of one window; entering a new bucket drops
/// every bucket older than the one before it. What is dropped must be
/// beyond every lookup's window, and every id still inside its window must
/// be answered from its record.
#[test]
fn old_request_buckets_are_dropped_and_live_ids_kept() {
    let (_d, sm) = open();
    let w = strongbox_store::limits::DEDUP_WINDOW_MS;
    let step_ms = 1_000;
    // Three windows' worth: the clock enters buckets 1 and 2.
    let n = 3 * w / step_ms;
    apply_spaced_puts(&sm, n, step_ms);
    let now_ms = n * step_ms;
    let rows = sm.db().scan_raw(strongbox_store::Cf::Requests, &[], None, usize::MAX).unwrap();
    let oldest_bucket = rows.iter().map(|(k, _)| u64::from_be_bytes(k[..8].try_into().unwrap())).min();
    let clock_ms = 1 + (n - 1) * step_ms;
    assert_eq!(clock_ms / w, 2);
    assert_eq!(oldest_bucket, Some(1), "bucket 0 is dropped, bucket 1 kept");
    assert!(rows.len() as u64 <= 2 * w / step_ms + 1, "{} records kept", rows.len());
    // Every id still inside the window is deduplicated.
    let revision = sm.revision().unwrap();
    for i in (n - w / step_ms + 1)..n {
        let retry = apply_one(&sm, &put(&format!("r{i}"), now_ms + 1, &format!("p{}", i % 8), "v", None));
        assert!(retry.deduplicated, "request r{i} is inside its window");
    }
    assert_eq!(sm.revision().unwrap(), revision, "no retry applied twice");
}

/// The floor is a hint that must never hide a record: records written
/// below it are found, deleting everything leaves no stale floor above a
/// later write, and an installed image starts from no floor.
#[test]
fn a_floor_never_hides_a_record() {
    use strongbox_store::Cf;
    let (_d, sm) = open();
    let db = sm.db();
    let cf = Cf::PendingExpiry;
    let key = |i: u8| vec![b'k', i];
    let write = |puts: &[u8], deletes: &[u8]| {
        let mut b = db.batch();
        for &i in puts {
            db.lower_floor(cf, &key(i));
            b.put_raw(cf, &key(i), b"v");
        }
        for &i in deletes {
            b.delete(cf, &key(i));
        }
        db.write(b, false).unwrap();
        if let Some(&last) = deletes.iter().max() {
            db.raise_floor(cf, &key(last)).unwrap();
        }
    };
    let scan =
        || -> Vec<Vec<u8>> { db.scan_raw(cf, &[], None, 100).unwrap().into_iter().map(|r| r.0).collect() };

    write(&[1, 2, 3, 4, 5, 6], &[]);
    write(&[], &[1, 2, 3]);
    assert_eq!(db.floor(cf), Some(key(4)));
    assert_eq!(scan(), vec![key(4), key(5), key(6)]);
    write(&[0], &[]);
    assert_eq!(scan(), vec![key(0), key(4), key(5), key(6)], "a record below the floor is found");
    write(&[], &[0, 4, 5, 6]);
    assert!(scan().is_empty());
    write(&[2], &[]);
    assert_eq!(scan(), vec![key(2)], "a record below an emptied family's floor is found");
    db.forget_floors();
    assert_eq!(db.floor(cf), None);
    assert_eq!(scan(), vec![key(2)]);
}

/// Pruning must not step over the tombstones earlier prunes left. It did:
/// on a node older than the dedup window, each batch's prune walked every
/// one of them, and throughput halved. Counted with RocksDB's per-thread
/// perf counters, not timed.
#[test]
fn pruning_does_not_step_over_earlier_prunes_tombstones() {
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
    let (_d, sm) = open();
    let w = strongbox_store::limits::DEDUP_WINDOW_MS;
    let step_ms = 1_000;
    // Three windows' worth: the last two windows' commands each prune one id.
    let n = 3 * w / step_ms;
    apply_spaced_puts(&sm, n, step_ms);
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut perf = PerfContext::default();
    perf.reset();
    apply_one(&sm, &put("last", 1 + n * step_ms, "p0", "v", None));
    let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount);
    set_perf_stats(PerfStatsLevel::Disable);
    assert!(
        skipped < 50,
        "one command's apply stepped over {skipped} tombstones of about {} pruned ids",
        n - w / step_ms
    );
}

/// `n` puts with request ids r0.., one every `step_ms` of state-machine time.
fn apply_spaced_puts(sm: &strongbox_store::StateMachine, n: u64, step_ms: u64) {
    for i in 0..n {
        apply_one(sm, &put(&format!("r{i}"), 1 + i * step_ms, &format!("p{}", i % 8), "v", None));
    }
}

/// A created client's answer names the digest that was kept, also when it
/// comes back deduplicated: the node that generated the secret shows it
/// only if its digest is the kept one, so a retry carrying another secret
/// must hear the first digest, not its own.
#[test]
fn a_deduplicated_client_creation_names_the_digest_that_was_kept() {
    use strongbox_store::command::CreateClient;
    let (_d, sm) = open();
    let create = |digest: &str| {
        as_admin(
            "create-ci",
            5,
            Op::CreateClient(CreateClient {
                client_id: "ci".into(),
                secret_digest: digest.into(),
                roles: vec![],
            }),
        )
    };
    let (first_digest, retry_digest) = ("a".repeat(64), "b".repeat(64));
    let first = apply_one(&sm, &create(&first_digest));
    assert!(!first.deduplicated);
    assert_eq!(first.result, Ok(Outcome::ClientCreated { secret_digest: first_digest.clone() }));
    let retry = apply_one(&sm, &create(&retry_digest));
    assert!(retry.deduplicated);
    assert_eq!(retry.result, Ok(Outcome::ClientCreated { secret_digest: first_digest }));
    assert_eq!(sm.revision().unwrap(), BASE + 1, "a retry must not change state");
}

/// Records of request ids from before ids were scoped by caller are probed
/// for only while one could still be inside its window: never on a state
/// that began with scoping, and for one window after a state from an older
/// build first applies here.
#[test]
fn unscoped_request_records_are_probed_only_while_they_can_matter() {
    use strongbox_store::layout::sm_keys::REQUESTS_SCOPED_SINCE_MS;
    use strongbox_store::Cf;
    let (_d, sm) = open();
    assert_eq!(sm.meta::<u64>(REQUESTS_SCOPED_SINCE_MS).unwrap(), Some(0), "a new state never probes");
    // A state written by a build before the marker, at some clock.
    let mut b = sm.db().batch();
    b.delete(Cf::SmMeta, REQUESTS_SCOPED_SINCE_MS);
    sm.db().write_unlogged(b).unwrap();
    assert!(apply_one(&sm, &put("p1", 5_000, "a/b", "v", None)).result.is_ok());
    assert_eq!(sm.meta::<u64>(REQUESTS_SCOPED_SINCE_MS).unwrap(), Some(5_000));
    // Set once: later batches leave it.
    assert!(apply_one(&sm, &put("p2", 9_000, "a/c", "v", None)).result.is_ok());
    assert_eq!(sm.meta::<u64>(REQUESTS_SCOPED_SINCE_MS).unwrap(), Some(5_000));
    // Dedup still works as before.
    let again = apply_one(&sm, &put("p2", 9_500, "a/c", "v", None));
    assert!(again.deduplicated);
}
