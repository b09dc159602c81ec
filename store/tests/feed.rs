//! The change feed: one record per revision, gap-free, in order, the same
//! however entries are batched, never carrying a secret value.

mod common;

use common::*;
use strongbox_store::command::DeleteSecret;
use strongbox_store::command::Outcome;
use strongbox_store::feed::FEED_READ_MAX;
use strongbox_store::Op;

#[test]
fn every_revision_has_one_record_in_order_and_refusals_have_none() {
    let (_dir, sm) = open();
    assert!(apply_one(&sm, &put("a", 10, "team/db", "hunter2-value", None)).result.is_ok());
    assert!(apply_one(&sm, &put("b", 11, "team/db", "second-value", Some(1))).result.is_ok());
    // A failed check-and-set changes nothing: no revision, no record.
    assert!(apply_one(&sm, &put("c", 12, "team/db", "lost", Some(1))).result.is_err());
    let del = Op::DeleteSecret(DeleteSecret { path: "team/db".into() });
    assert!(apply_one(&sm, &as_admin("d", 13, del)).result.is_ok());

    let records = sm.feed(1, 100).unwrap();
    let revisions: Vec<u64> = records.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, (1..=BASE + 3).collect::<Vec<_>>(), "gap-free, starting at 1");
    assert_eq!(sm.revision().unwrap(), BASE + 3);
    let kinds: Vec<&str> = records.iter().map(|r| r.events.last().unwrap().kind.as_str()).collect();
    assert_eq!(kinds, ["user.created", "token.issued", "secret.created", "secret.updated", "secret.deleted"]);
    let updated = &records[3];
    assert_eq!(updated.actor, "user:admin");
    assert_eq!(updated.time_ms, 11);
    assert_eq!(updated.events[0].entity, "team/db");
    assert_eq!(updated.events[0].fields.get("version").map(String::as_str), Some("2"));
    let text = format!("{records:?}");
    assert!(!text.contains("hunter2") && !text.contains("second-value"), "no secret value in the feed");
    assert!(!text.contains("argon2"), "no password hash in the feed");

    // Reads start anywhere and stop at the limit.
    let tail = sm.feed(BASE + 2, 1).unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].revision, BASE + 2);
    assert!(sm.feed(BASE + 4, FEED_READ_MAX).unwrap().is_empty());
    assert_eq!(sm.feed_oldest().unwrap(), Some(1));
}

/// A revocation is about the token's principal, whoever revokes it (from
/// state version 9); the revoker is the record's actor. Before, the event
/// named the revoker, and a consumer following bob's sessions missed it.
#[test]
fn a_revoked_tokens_event_names_its_principal_not_the_revoker() {
    use strongbox_store::auth::Principal;
    use strongbox_store::command::set_state_version::REVOCATIONS_NAME_THE_PRINCIPAL;
    use strongbox_store::command::{CreateUser, RevokeToken};
    const BOB: [u8; 32] = [9; 32];
    for (version, entity) in
        [(REVOCATIONS_NAME_THE_PRINCIPAL, "user:bob"), (REVOCATIONS_NAME_THE_PRINCIPAL - 1, "user:admin")]
    {
        let (_dir, sm) = open_at_version(version);
        let bob = CreateUser { username: "bob".into(), password_phc: "$argon2id$bob".into(), roles: vec![] };
        assert!(apply_one(&sm, &as_admin("bob", 1, Op::CreateUser(bob))).result.is_ok());
        assert!(apply_one(&sm, &login("bob", "$argon2id$bob", BOB, 1, FAR_MS)).result.is_ok());
        let issued = sm.feed(sm.revision().unwrap(), 1).unwrap();
        assert_eq!(issued[0].events[0].entity, "user:bob", "token.issued names the principal");

        let revoke = Op::RevokeToken(RevokeToken { token_hash: BOB });
        let r = apply_one(&sm, &as_admin("rv", 2, revoke)).result.unwrap();
        let record = sm.feed(sm.revision().unwrap(), 1).unwrap().remove(0);
        assert_eq!(record.events.len(), 1);
        assert_eq!(record.events[0].kind, "token.revoked");
        assert_eq!(record.events[0].entity, entity, "at state version {version}");
        assert_eq!(record.actor, "user:admin", "the revoker is the actor");
        let text = format!("{record:?}");
        assert!(!text.contains("[9, 9"), "the token's hash stays out of the feed");
        if version >= REVOCATIONS_NAME_THE_PRINCIPAL {
            assert_eq!(r, Outcome::TokenRevokedOf { principal: Principal::User("bob".into()) });
        } else {
            assert_eq!(r, Outcome::TokenRevoked { existed: true });
        }
        // Revoking it again: an unknown token, no revision, no event.
        let before = sm.revision().unwrap();
        let again = Op::RevokeToken(RevokeToken { token_hash: BOB });
        assert_eq!(
            apply_one(&sm, &as_admin("rv2", 3, again)).result,
            Ok(Outcome::TokenRevoked { existed: false })
        );
        assert_eq!(sm.revision().unwrap(), before);
    }
}

#[test]
fn batching_does_not_change_the_feed() {
    let cmds: Vec<_> =
        (0..6).map(|i| put(&format!("r{i}"), 20 + i, &format!("k/{}", i % 2), "v", None)).collect();
    let (_d1, one_by_one) = open();
    for c in &cmds {
        apply_one(&one_by_one, c);
    }
    let (_d2, grouped) = open();
    apply_group(&grouped, &cmds);
    assert_eq!(one_by_one.feed(1, 100).unwrap(), grouped.feed(1, 100).unwrap());
}

#[test]
fn retention_keeps_the_last_revisions_exactly() {
    use strongbox_store::feed::FEED_RETAIN_REVISIONS;
    let (_dir, sm) = open();
    let extra = 10;
    let total = FEED_RETAIN_REVISIONS + extra;
    let mut t = 100;
    while sm.revision().unwrap() < total {
        let left = total - sm.revision().unwrap();
        let cmds: Vec<_> = (0..left.min(2_000))
            .map(|_| {
                t += 1;
                put(&format!("ret-{t}"), t, "ret/k", "v", None)
            })
            .collect();
        apply_group(&sm, &cmds);
    }
    assert_eq!(sm.revision().unwrap(), total);
    // Exactly the last FEED_RETAIN_REVISIONS remain, oldest first.
    assert_eq!(sm.feed_oldest().unwrap(), Some(extra + 1));
    assert!(sm.feed(1, 10).unwrap().first().is_some_and(|r| r.revision == extra + 1));
    assert_eq!(sm.feed(total, 10).unwrap().len(), 1);
}

#[test]
fn retention_by_age_drops_old_records_a_few_per_command() {
    use strongbox_store::feed::FEED_RETAIN_MS;
    let (_dir, sm) = open(); // revisions 1 and 2 at time 0
    for i in 0..3 {
        apply_one(&sm, &put(&format!("a{i}"), 1_000, "age/k", "v", None)); // 3, 4, 5
    }
    let late = FEED_RETAIN_MS + 2_000;
    apply_one(&sm, &put("late", late, "age/k", "v", None)); // 6
                                                            // Four of the five records older than a day go with this command...
    assert_eq!(sm.feed_oldest().unwrap(), Some(5));
    assert_eq!(sm.feed(1, 10).unwrap().first().map(|r| r.revision), Some(5));
    // ...the last with the next one; the recent ones stay.
    apply_one(&sm, &put("later", late + 1, "age/k", "v", None)); // 7
    assert_eq!(sm.feed_oldest().unwrap(), Some(6));
    let kept: Vec<u64> = sm.feed(1, 10).unwrap().iter().map(|r| r.revision).collect();
    assert_eq!(kept, vec![6, 7]);
}

#[test]
fn retention_by_bytes_keeps_the_newest_records_within_the_budget() {
    let budget = 2_500;
    let (_dir, sm) = open();
    let sm = sm.with_feed_retain_bytes(budget);
    let mut t = 100;
    let mut put_path = |sm: &strongbox_store::StateMachine, path: &str| {
        t += 1;
        assert!(apply_one(sm, &put(&format!("b-{t}"), t, path, "v", None)).result.is_ok());
        let bytes = sm.feed_bytes().unwrap();
        assert!(bytes > 0 && bytes <= budget, "{bytes} bytes kept, budget {budget}");
        // Gap-free up to the newest revision, whatever was pruned.
        let oldest = sm.feed_oldest().unwrap().unwrap();
        let kept: Vec<u64> = sm.feed(1, 10_000).unwrap().iter().map(|r| r.revision).collect();
        assert_eq!(kept, (oldest..=sm.revision().unwrap()).collect::<Vec<_>>());
    };
    for i in 0..60 {
        put_path(&sm, &format!("s/{i}"));
    }
    let before = sm.feed_oldest().unwrap().unwrap();
    assert!(before > 1, "small records were pruned by bytes alone");
    // One record of about 600 bytes must push out more small ones than
    // count and age retention drop per command (4).
    let long = format!("l/{}", "x".repeat(500));
    put_path(&sm, &long);
    let after = sm.feed_oldest().unwrap().unwrap();
    assert!(after - before > 4, "{} records pruned for one large record", after - before);
    // Far under the revision limit: only bytes pruned anything.
    assert!(sm.revision().unwrap() < strongbox_store::feed::FEED_RETAIN_REVISIONS);
}

/// The byte count is a function of the stored feed: a state whose sizes
/// are missing (an upgraded data dir, an older image) or stale (changed by
/// a build that did not keep them) counts them again from the records and
/// prunes exactly as a node that kept them all along, batched or not.
#[test]
fn feed_sizes_are_recounted_when_missing_or_stale_and_batching_does_not_matter() {
    use strongbox_store::layout::sm_keys;
    use strongbox_store::Cf;
    let budget = 2_500;
    let cmds: Vec<_> =
        (0..80).map(|i| put(&format!("u{i}"), 200 + i, &format!("u/{i}"), "v", None)).collect();
    let (_d1, kept) = open();
    let kept = kept.with_feed_retain_bytes(budget);
    let (_d2, lost) = open();
    let lost = lost.with_feed_retain_bytes(budget);
    let (_d3, grouped) = open();
    let grouped = grouped.with_feed_retain_bytes(budget);
    for (i, c) in cmds.iter().enumerate() {
        apply_one(&kept, c);
        if i % 10 == 5 {
            let mut b = lost.db().batch();
            if i % 20 == 5 {
                b.delete(Cf::SmMeta, sm_keys::FEED_SIZES);
            } else {
                b.put(Cf::SmMeta, sm_keys::FEED_SIZES, &(1u64, 1u64, 0u64));
            }
            lost.db().write_unlogged(b).unwrap();
        }
        apply_one(&lost, c);
    }
    for chunk in cmds.chunks(7) {
        apply_group(&grouped, chunk);
    }
    let oldest = kept.feed_oldest().unwrap().unwrap();
    assert!(oldest > 4, "bytes pruned records (oldest kept: {oldest})");
    let bytes = kept.feed_bytes().unwrap();
    assert!(bytes > 0 && bytes <= budget);
    for other in [&lost, &grouped] {
        assert_eq!(other.feed_oldest().unwrap(), Some(oldest));
        assert_eq!(other.feed_bytes().unwrap(), bytes);
        assert_eq!(other.feed(1, 10_000).unwrap(), kept.feed(1, 10_000).unwrap());
    }
}
