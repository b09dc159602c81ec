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
