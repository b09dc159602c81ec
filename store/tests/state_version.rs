//! The state version (see `command::SetStateVersion`): it moves only
//! forward, only by an admin on `cluster`, and a build stops at a version
//! it does not support instead of applying on by other rules.

mod common;

use common::*;
use strongbox_store::command::{CreateUser, Outcome, SetStateVersion, STATE_VERSION_SUPPORTED};
use strongbox_store::layout::sm_keys;
use strongbox_store::{Cf, ErrorCode, Op};

fn set(version: u32) -> Op {
    Op::SetStateVersion(SetStateVersion { version })
}

/// (Going back from a later version is refused too, FAILED_PRECONDITION,
/// once a build supports more than one.)
#[test]
fn the_state_version_starts_at_one_and_zero_is_refused() {
    let (_d, sm) = open();
    assert_eq!(sm.state_version().unwrap(), 1);
    let rev = sm.revision().unwrap();
    let same = apply_one(&sm, &as_admin("v1", 1, set(1)));
    assert_eq!(same.result, Ok(Outcome::StateVersion { version: 1 }));
    assert_eq!(sm.revision().unwrap(), rev, "the version it already has changes nothing");
    let back = apply_one(&sm, &as_admin("v0", 1, set(0)));
    assert_eq!(back.result.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(sm.state_version().unwrap(), 1);
}

#[test]
fn a_version_this_build_does_not_support_stops_apply_and_changes_nothing() {
    let (_d, sm) = open();
    let rev = sm.revision().unwrap();
    let mut b = sm.begin().unwrap();
    let err = b.apply(&as_admin("next", 1, set(STATE_VERSION_SUPPORTED + 1))).unwrap_err();
    assert!(err.to_string().contains("newer build"), "{err}");
    drop(b);
    assert_eq!(sm.state_version().unwrap(), 1);
    assert_eq!(sm.revision().unwrap(), rev);
    sm.check_state_version().unwrap();
}

#[test]
fn only_an_admin_on_cluster_moves_it() {
    let (_d, sm) = open();
    const EVE: [u8; 32] = [5; 32];
    let eve = CreateUser { username: "eve".into(), password_phc: "$argon2id$eve".into(), roles: vec![] };
    assert!(apply_one(&sm, &as_admin("eve", 1, Op::CreateUser(eve))).result.is_ok());
    assert!(apply_one(&sm, &login("eve", "$argon2id$eve", EVE, 1, FAR_MS)).result.is_ok());
    let r = apply_one(&sm, &as_token(EVE, "v1", 2, set(1)));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::PermissionDenied);
}

#[test]
fn a_state_of_a_version_this_build_does_not_know_is_refused() {
    let (_d, sm) = open();
    let mut b = sm.db().batch();
    b.put(Cf::SmMeta, sm_keys::STATE_VERSION, &(STATE_VERSION_SUPPORTED + 1));
    sm.db().write(b, true).unwrap();
    let err = sm.check_state_version().unwrap_err();
    assert!(err.to_string().contains("newer build"), "{err}");
}
