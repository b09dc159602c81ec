//! The state version (see `command::SetStateVersion`): it moves only
//! forward, only by an admin on `cluster`, and a build stops at a version
//! it does not support instead of applying on by other rules.

mod common;

use common::*;
use strongbox_store::codec::Codec;
use strongbox_store::command::{
    Bootstrap, CreateUser, InitStateVersion, Outcome, SetStateVersion, STATE_VERSION_SUPPORTED,
};
use strongbox_store::layout::sm_keys;
use strongbox_store::{Cf, Db, ErrorCode, Op, StateMachine};

fn set(version: u32) -> Op {
    Op::SetStateVersion(SetStateVersion { version })
}

#[test]
fn an_old_state_is_at_one_moves_forward_only_and_zero_is_refused() {
    let (_d, sm) = open_at_version(1);
    assert_eq!(sm.state_version().unwrap(), 1);
    let rev = sm.revision().unwrap();
    let same = apply_one(&sm, &as_admin("v1", 1, set(1)));
    assert_eq!(same.result, Ok(Outcome::StateVersion { version: 1 }));
    assert_eq!(sm.revision().unwrap(), rev, "the version it already has changes nothing");
    let back = apply_one(&sm, &as_admin("v0", 1, set(0)));
    assert_eq!(back.result.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(sm.state_version().unwrap(), 1);
    let up = apply_one(&sm, &as_admin("v2", 1, set(2)));
    assert_eq!(up.result, Ok(Outcome::StateVersion { version: 2 }));
    assert_eq!((sm.state_version().unwrap(), sm.revision().unwrap()), (2, rev + 1));
    let back = apply_one(&sm, &as_admin("v1b", 1, set(1)));
    assert_eq!(back.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    assert_eq!(sm.state_version().unwrap(), 2);
}

/// A new cluster's first node sets the newest version it applies, before
/// the first admin exists; after that only an admin moves it.
#[test]
fn a_new_state_starts_at_the_version_its_first_node_sets() {
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachine::new(Db::open(dir.path(), Codec::plaintext()).unwrap());
    assert_eq!(sm.state_version().unwrap(), 1, "a state that never set one");
    let init = |v| Op::InitStateVersion(InitStateVersion { version: v });
    let r = apply_one(&sm, &as_node("init", 0, init(STATE_VERSION_SUPPORTED)));
    assert_eq!(r.result, Ok(Outcome::StateVersion { version: STATE_VERSION_SUPPORTED }));
    assert_eq!(sm.state_version().unwrap(), STATE_VERSION_SUPPORTED);
    let mut b = sm.begin().unwrap();
    let err = b.apply(&as_node("too-new", 0, init(STATE_VERSION_SUPPORTED + 1))).unwrap_err();
    assert!(err.to_string().contains("newer build"), "{err}");
    drop(b);
    let boot = Bootstrap {
        username: "admin".into(),
        password_phc: ADMIN_PHC.into(),
        name_key: strongbox_store::names::NameKey::generate(),
    };
    assert!(apply_one(&sm, &as_node("boot", 0, Op::Bootstrap(boot))).result.is_ok());
    let late = apply_one(&sm, &as_node("late", 0, init(STATE_VERSION_SUPPORTED)));
    assert_eq!(late.result.unwrap_err().code, ErrorCode::FailedPrecondition);
    let by_client = apply_one(&sm, &as_admin("by-client", 0, init(STATE_VERSION_SUPPORTED)));
    assert_eq!(by_client.result.unwrap_err().code, ErrorCode::PermissionDenied);
}

#[test]
fn a_version_this_build_does_not_support_stops_apply_and_changes_nothing() {
    let (_d, sm) = open();
    let rev = sm.revision().unwrap();
    let mut b = sm.begin().unwrap();
    let err = b.apply(&as_admin("next", 1, set(STATE_VERSION_SUPPORTED + 1))).unwrap_err();
    assert!(err.to_string().contains("newer build"), "{err}");
    drop(b);
    assert_eq!(sm.state_version().unwrap(), STATE_VERSION_SUPPORTED);
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

/// Must not happen: an image of a state this build cannot apply (a newer
/// state version, a family it does not know) found out only half-way
/// through its install, with the node's own state already emptied. The
/// check that every install and restore runs first refuses it whole.
#[test]
fn an_image_this_build_cannot_apply_is_refused_before_anything_is_replaced() {
    use strongbox_store::snapshot::{read_meta, FrameReader};
    let (_d, newer) = open();
    let mut b = newer.db().batch();
    let too_new = STATE_VERSION_SUPPORTED + 1;
    b.put(strongbox_store::Cf::SmMeta, strongbox_store::layout::sm_keys::STATE_VERSION, &too_new);
    newer.db().write(b, true).unwrap();
    let image = image_of(&newer);
    let err = read_meta(&mut FrameReader::new(image, newer.db().codec().clone()).unwrap()).unwrap_err();
    assert!(err.to_string().contains(&format!("version {too_new}")), "{err}");

    let (_d, ok) = open();
    let image = image_of(&ok);
    let meta = read_meta(&mut FrameReader::new(image, ok.db().codec().clone()).unwrap()).unwrap();
    assert_eq!(
        meta.get::<u32>(strongbox_store::layout::sm_keys::STATE_VERSION).unwrap(),
        Some(STATE_VERSION_SUPPORTED)
    );
}
