//! The state hash compares replicas: the same commands give the same
//! digest whatever key each node seals its values under, and any change
//! to the replicated state changes it.

mod common;

use common::*;
use strongbox_store::state_hash::state_hash;

#[test]
fn replicas_sealed_under_different_keys_hash_alike_and_any_change_shows() {
    let key = strongbox_store::names::NameKey::generate();
    let (_a, plain) = open_replica(&key, false);
    let (_b, sealed) = open_replica(&key, true);
    let (_c, other) = open_replica(&key, true);
    for sm in [&plain, &sealed, &other] {
        for i in 0..20u64 {
            assert!(apply_one(sm, &put(&format!("p{i}"), 10 + i, &format!("a/k{}", i % 7), "v", None))
                .result
                .is_ok());
        }
    }
    let h = |sm: &strongbox_store::StateMachine| state_hash(sm.db(), &[]).unwrap();
    let (hp, hs, ho) = (h(&plain), h(&sealed), h(&other));
    assert!(hp.records > 20, "{} records", hp.records);
    // A cluster bootstrapped with another name key is another state.
    let (_d, stranger) = open_replica(&strongbox_store::names::NameKey::generate(), true);
    assert_ne!(h(&stranger).digest, h(&sealed).digest);
    assert_eq!((hp.digest, hp.records), (hs.digest, hs.records), "plaintext is what is hashed");
    assert_eq!(hs.digest, ho.digest);
    assert_eq!(hs, h(&sealed), "the same state hashes the same twice");

    // One more write on one replica: the digests part.
    apply_one(&other, &put("p-extra", 40, "a/k0", "w", None));
    assert_ne!(h(&other).digest, hs.digest);
    // The same write at another time is another state too.
    apply_one(&sealed, &put("p-extra", 41, "a/k0", "w", None));
    assert_ne!(h(&sealed).digest, h(&other).digest);
}

#[test]
fn a_token_one_replica_pruned_and_another_not_yet_does_not_part_them() {
    // Apply prunes expired tokens once per apply batch, from what earlier
    // batches committed: grouped differently, two replicas at one applied
    // index can hold different expired tokens. Both treat them as gone.
    let key = strongbox_store::names::NameKey::generate();
    let (_a, one_by_one) = open_replica(&key, true);
    let (_b, together) = open_replica(&key, true);
    let short = login("admin", ADMIN_PHC, [9; 32], 50, 100);
    let later = put("p-later", 200, "a/k", "v", None);
    apply_one(&one_by_one, &short);
    apply_one(&one_by_one, &later);
    let mut b = together.begin().unwrap();
    assert!(b.apply(&short).unwrap().result.is_ok());
    assert!(b.apply(&later).unwrap().result.is_ok());
    b.commit().unwrap();
    let tokens = |sm: &strongbox_store::StateMachine| {
        sm.db().scan_raw(strongbox_store::Cf::Tokens, &[], None, 10).unwrap().len()
    };
    assert_eq!(tokens(&one_by_one) + 1, tokens(&together), "one pruned the expired token, the other not yet");
    assert_eq!(
        state_hash(one_by_one.db(), &[]).unwrap().digest,
        state_hash(together.db(), &[]).unwrap().digest
    );
}
