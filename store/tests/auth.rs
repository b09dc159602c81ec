//! Authorisation inside apply: what a caller may do, and what must never
//! get through (revoked, disabled, expired, locked, or unprivileged).

mod common;

use common::*;
use strongbox_store::auth::{Action, Effect, Principal, Rule};
use strongbox_store::command::{
    AssignRole, Bootstrap, ChangePassword, CreateUser, DeletePrincipal, DeleteRole, Outcome, PutRole,
    RecordLoginFailure, RevokeToken, SetEnabled, SetPassword, UnlockUser, STATE_VERSION_SUPPORTED,
};
use strongbox_store::{ErrorCode, Op, StateMachine};

const BOB: [u8; 32] = [2; 32];
const BOB_PHC: &str = "$argon2id$bob";

fn rule(effect: Effect, action: Action, resource: &str) -> Rule {
    Rule { effect, action, resource: resource.into() }
}

/// bob holds role `team-a` (read and write on secrets:team-a/*) and is logged in.
fn with_bob(sm: &StateMachine) {
    let role = PutRole {
        name: "team-a".into(),
        rules: vec![
            rule(Effect::Allow, Action::Read, "secrets:team-a/*"),
            rule(Effect::Allow, Action::Write, "secrets:team-a/*"),
        ],
    };
    assert!(apply_one(sm, &as_admin("role", 1, Op::PutRole(role))).result.is_ok());
    let bob =
        CreateUser { username: "bob".into(), password_phc: BOB_PHC.into(), roles: vec!["team-a".into()] };
    assert!(apply_one(sm, &as_admin("bob", 1, Op::CreateUser(bob))).result.is_ok());
    assert!(apply_one(sm, &login("bob", BOB_PHC, BOB, 1, FAR_MS)).result.is_ok());
}

fn code(r: &strongbox_store::Response) -> ErrorCode {
    r.result.clone().unwrap_err().code
}

#[test]
fn permissions_are_checked_inside_apply_deny_by_default() {
    let (_d, sm) = open();
    with_bob(&sm);
    let rev = sm.revision().unwrap();
    let ok = apply_one(&sm, &as_token(BOB, "w1", 2, put_op("team-a/db", "v", None)));
    assert_eq!(ok.result, Ok(Outcome::SecretWritten { version: 1 }));
    let denied = apply_one(&sm, &as_token(BOB, "w2", 2, put_op("team-b/db", "v", None)));
    assert_eq!(code(&denied), ErrorCode::PermissionDenied);
    assert!(sm.get_secret("team-b/db", None).unwrap().is_none(), "a denied write leaves nothing");
    assert_eq!(sm.revision().unwrap(), rev + 1, "a denied write does not bump the revision");
    let create = CreateUser { username: "eve".into(), password_phc: "x".into(), roles: vec![] };
    let r = apply_one(&sm, &as_token(BOB, "w3", 2, Op::CreateUser(create)));
    assert_eq!(code(&r), ErrorCode::PermissionDenied, "no rule on users: denied");
}

#[test]
fn an_explicit_deny_wins_over_an_allow() {
    let (_d, sm) = open();
    with_bob(&sm);
    let deny = PutRole {
        name: "no-root".into(),
        rules: vec![rule(Effect::Deny, Action::Write, "secrets:team-a/root/*")],
    };
    assert!(apply_one(&sm, &as_admin("deny", 2, Op::PutRole(deny))).result.is_ok());
    let assign =
        AssignRole { principal: Principal::User("bob".into()), role: "no-root".into(), assign: true };
    assert!(apply_one(&sm, &as_admin("assign", 2, Op::AssignRole(assign))).result.is_ok());
    let r = apply_one(&sm, &as_token(BOB, "w", 3, put_op("team-a/root/key", "v", None)));
    assert_eq!(code(&r), ErrorCode::PermissionDenied);
    let r = apply_one(&sm, &as_token(BOB, "w2", 3, put_op("team-a/other", "v", None)));
    assert!(r.result.is_ok());
}

#[test]
fn a_permission_removed_before_a_write_commits_blocks_it() {
    let (_d, sm) = open();
    with_bob(&sm);
    // One batch: the role loses its write rule, then bob's write applies.
    let read_only =
        PutRole { name: "team-a".into(), rules: vec![rule(Effect::Allow, Action::Read, "secrets:team-a/*")] };
    let mut b = sm.begin().unwrap();
    assert!(b.apply(&as_admin("ro", 2, Op::PutRole(read_only))).unwrap().result.is_ok());
    let r = b.apply(&as_token(BOB, "late", 2, put_op("team-a/db", "v", None))).unwrap();
    b.commit().unwrap();
    assert_eq!(code(&r), ErrorCode::PermissionDenied);
    assert!(sm.get_secret("team-a/db", None).unwrap().is_none());
}

#[test]
fn revoked_disabled_and_expired_tokens_get_nothing() {
    let (_d, sm) = open();
    with_bob(&sm);
    // Revoked.
    assert_eq!(
        apply_one(&sm, &as_admin("rv", 2, Op::RevokeToken(RevokeToken { token_hash: BOB }))).result,
        Ok(Outcome::TokenRevokedOf { principal: Principal::User("bob".into()) })
    );
    let r = apply_one(&sm, &as_token(BOB, "w", 3, put_op("team-a/x", "v", None)));
    assert_eq!(code(&r), ErrorCode::Unauthenticated);
    // RFC 7009: revoking again (unknown token) succeeds.
    assert_eq!(
        apply_one(&sm, &as_admin("rv2", 3, Op::RevokeToken(RevokeToken { token_hash: BOB }))).result,
        Ok(Outcome::TokenRevoked { existed: false })
    );

    // Disabled, then enabled again: the old token stays dead, a new login works.
    let bob2 = [3; 32];
    assert!(apply_one(&sm, &login("bob", BOB_PHC, bob2, 4, FAR_MS)).result.is_ok());
    let off = SetEnabled { principal: Principal::User("bob".into()), enabled: false };
    assert!(apply_one(&sm, &as_admin("off", 5, Op::SetEnabled(off))).result.is_ok());
    assert_eq!(
        code(&apply_one(&sm, &as_token(bob2, "w2", 5, put_op("team-a/x", "v", None)))),
        ErrorCode::Unauthenticated
    );
    assert_eq!(code(&apply_one(&sm, &login("bob", BOB_PHC, [4; 32], 5, FAR_MS))), ErrorCode::Unauthenticated);
    let on = SetEnabled { principal: Principal::User("bob".into()), enabled: true };
    assert!(apply_one(&sm, &as_admin("on", 6, Op::SetEnabled(on))).result.is_ok());
    assert_eq!(
        code(&apply_one(&sm, &as_token(bob2, "w3", 6, put_op("team-a/x", "v", None)))),
        ErrorCode::Unauthenticated
    );

    // Expired: by the state-machine clock, and then pruned from disk.
    let short = [5; 32];
    assert!(apply_one(&sm, &login("bob", BOB_PHC, short, 7, 100)).result.is_ok());
    assert!(apply_one(&sm, &as_token(short, "w4", 50, put_op("team-a/x", "v", None))).result.is_ok());
    let r = apply_one(&sm, &as_token(short, "w5", 100, put_op("team-a/y", "v", None)));
    assert_eq!(code(&r), ErrorCode::Unauthenticated);
    assert!(sm.token(&short).unwrap().is_none(), "expired tokens are pruned");
    assert!(sm.get_secret("team-a/y", None).unwrap().is_none());
}

#[test]
fn login_failures_lock_the_user_on_every_node_alike() {
    let (_d, sm) = open();
    with_bob(&sm);
    let fail = |i: u64| {
        let op = Op::RecordLoginFailure(RecordLoginFailure {
            username: "bob".into(),
            failures_max: 3,
            window_ms: 1000,
            lockout_ms: 5000,
        });
        apply_one(&sm, &as_node(&format!("f{i}"), 10 + i, op))
    };
    assert_eq!(fail(0).result, Ok(Outcome::LoginFailureRecorded { locked: false }));
    assert_eq!(fail(1).result, Ok(Outcome::LoginFailureRecorded { locked: false }));
    assert_eq!(fail(2).result, Ok(Outcome::LoginFailureRecorded { locked: true }));
    let p = sm.principal(&Principal::User("bob".into())).unwrap().unwrap();
    assert!(p.locked(13) && p.locked_until_ms == 5012);
    // Locked: even the right password gets no token.
    assert_eq!(
        code(&apply_one(&sm, &login("bob", BOB_PHC, [9; 32], 20, FAR_MS))),
        ErrorCode::Unauthenticated
    );
    let unlock = UnlockUser { username: "bob".into() };
    assert!(apply_one(&sm, &as_admin("unlock", 21, Op::UnlockUser(unlock))).result.is_ok());
    assert!(apply_one(&sm, &login("bob", BOB_PHC, [9; 32], 22, FAR_MS)).result.is_ok());
    // Failures outside the window do not add up.
    for i in 0..5 {
        let op = Op::RecordLoginFailure(RecordLoginFailure {
            username: "bob".into(),
            failures_max: 3,
            window_ms: 1000,
            lockout_ms: 5000,
        });
        let r = apply_one(&sm, &as_node(&format!("slow{i}"), 100 + i * 2000, op));
        assert_eq!(r.result, Ok(Outcome::LoginFailureRecorded { locked: false }));
    }
    // An unknown user is not an error, and moves the revision as a known
    // one does, locked or not: the revision (anyone can watch it) tells
    // nobody which usernames exist.
    let fail_as = |who: &str, id: &str| {
        let op = Op::RecordLoginFailure(RecordLoginFailure {
            username: who.into(),
            failures_max: 1,
            window_ms: 1,
            lockout_ms: 1_000_000,
        });
        let before = sm.revision().unwrap();
        let r = apply_one(&sm, &as_node(id, 30_000, op));
        assert!(r.result.is_ok(), "{who}: {r:?}");
        sm.revision().unwrap() - before
    };
    assert_eq!(fail_as("nobody", "ghost"), 1);
    assert_eq!(fail_as("bob", "known"), 1);
    assert!(sm.principal(&Principal::User("bob".into())).unwrap().unwrap().locked(30_001));
    assert_eq!(fail_as("bob", "locked"), 1);
}

#[test]
fn a_stale_credential_gets_no_token() {
    let (_d, sm) = open();
    with_bob(&sm);
    let r = apply_one(&sm, &login("bob", "$argon2id$old-hash", [8; 32], 2, FAR_MS));
    assert_eq!(code(&r), ErrorCode::Unauthenticated);
    assert!(sm.token(&[8; 32]).unwrap().is_none());
}

#[test]
fn node_only_ops_are_refused_from_tokens_and_bootstrap_happens_once() {
    let (_d, sm) = open();
    let boot = Bootstrap {
        username: "mallory".into(),
        password_phc: "x".into(),
        name_key: strongbox_store::names::NameKey::generate(),
    };
    let r = apply_one(&sm, &as_admin("b1", 1, Op::Bootstrap(boot.clone())));
    assert_eq!(code(&r), ErrorCode::PermissionDenied);
    let r = apply_one(&sm, &as_node("b2", 1, Op::Bootstrap(boot)));
    assert_eq!(code(&r), ErrorCode::FailedPrecondition);
    assert!(sm.principal(&Principal::User("mallory".into())).unwrap().is_none());
    // And a token-less command for a token op is refused.
    let r = apply_one(&sm, &as_node("n", 1, put_op("a", "b", None)));
    assert_eq!(code(&r), ErrorCode::Unauthenticated);
}

#[test]
fn a_caller_remembered_within_a_batch_is_forgotten_when_its_rights_change() {
    let (_d, sm) = open();
    with_bob(&sm);
    let mut b = sm.begin().unwrap();
    assert!(b.apply(&as_token(BOB, "w1", 2, put_op("team-a/a", "v", None))).unwrap().result.is_ok());
    let read_only =
        PutRole { name: "team-a".into(), rules: vec![rule(Effect::Allow, Action::Read, "secrets:team-a/*")] };
    assert!(b.apply(&as_admin("ro", 2, Op::PutRole(read_only))).unwrap().result.is_ok());
    let r = b.apply(&as_token(BOB, "w2", 2, put_op("team-a/b", "v", None))).unwrap();
    assert_eq!(
        code(&r),
        ErrorCode::PermissionDenied,
        "a role change inside the batch applies to the next command"
    );
    let rw = PutRole {
        name: "team-a".into(),
        rules: vec![rule(Effect::Allow, Action::Write, "secrets:team-a/*")],
    };
    assert!(b.apply(&as_admin("rw", 2, Op::PutRole(rw))).unwrap().result.is_ok());
    assert!(b.apply(&as_token(BOB, "w3", 2, put_op("team-a/c", "v", None))).unwrap().result.is_ok());
    assert!(b
        .apply(&as_admin("rv", 2, Op::RevokeToken(RevokeToken { token_hash: BOB })))
        .unwrap()
        .result
        .is_ok());
    let r = b.apply(&as_token(BOB, "w4", 2, put_op("team-a/d", "v", None))).unwrap();
    assert_eq!(
        code(&r),
        ErrorCode::Unauthenticated,
        "a revocation inside the batch applies to the next command"
    );
    b.commit().unwrap();
    assert!(sm.get_secret("team-a/d", None).unwrap().is_none());
}

/// Requests resolve their token outside apply, through a cache of callers.
/// What must never happen: a cached caller outliving the change that ended
/// or narrowed it. Each change here is applied after the caller was cached.
#[test]
fn a_cached_caller_never_outlives_a_revocation_disable_or_role_change() {
    let now_ms = 10;
    let allowed = |sm: &StateMachine| -> bool {
        match sm.resolve_token(&BOB, now_ms).unwrap() {
            Ok(c) => c.allows(&strongbox_store::auth::Access::new(Action::Write, "secrets:team-a/x")),
            Err(_) => false,
        }
    };

    let (_d, sm) = open();
    with_bob(&sm);
    assert!(allowed(&sm) && allowed(&sm), "resolved, then served from the cache");
    let narrowed =
        PutRole { name: "team-a".into(), rules: vec![rule(Effect::Allow, Action::Read, "secrets:*")] };
    assert!(apply_one(&sm, &as_admin("narrow", 2, Op::PutRole(narrowed))).result.is_ok());
    assert!(!allowed(&sm), "a role change is seen at once");

    let (_d, sm) = open();
    with_bob(&sm);
    assert!(allowed(&sm));
    let off = SetEnabled { principal: Principal::User("bob".into()), enabled: false };
    assert!(apply_one(&sm, &as_admin("off", 2, Op::SetEnabled(off))).result.is_ok());
    assert!(sm.resolve_token(&BOB, now_ms).unwrap().is_err(), "a disabled user's token is refused");

    let (_d, sm) = open();
    with_bob(&sm);
    assert!(allowed(&sm));
    assert!(apply_one(&sm, &as_admin("rv", 2, Op::RevokeToken(RevokeToken { token_hash: BOB })))
        .result
        .is_ok());
    assert!(sm.resolve_token(&BOB, now_ms).unwrap().is_err(), "a revoked token is refused");
    assert!(sm.resolve_token(&BOB, FAR_MS + 1).unwrap().is_err());

    // An installed image without bob replaces a state that had him.
    let (_d, sm) = open();
    with_bob(&sm);
    assert!(allowed(&sm));
    let (_d2, empty) = open();
    install_image(&empty, image_of(&empty), &sm);
    assert!(sm.resolve_token(&BOB, now_ms).unwrap().is_err(), "an install replaces cached callers");
}

#[test]
fn a_cached_caller_expires_with_its_token() {
    let (_d, sm) = open();
    with_bob(&sm);
    assert!(sm.resolve_token(&BOB, 10).unwrap().is_ok());
    assert!(sm.resolve_token(&BOB, FAR_MS).unwrap().is_err(), "expired at its expiry time");
}

#[test]
fn the_last_enabled_admin_cannot_lose_admin_rights() {
    let (_d, sm) = open();
    let admin = || Principal::User("admin".into());
    let refused = [
        Op::SetEnabled(SetEnabled { principal: admin(), enabled: false }),
        Op::AssignRole(AssignRole { principal: admin(), role: "admin".into(), assign: false }),
        Op::DeletePrincipal(strongbox_store::command::DeletePrincipal { principal: admin() }),
    ];
    let before = sm.revision().unwrap();
    for (i, op) in refused.iter().enumerate() {
        let r = apply_one(&sm, &as_admin(&format!("last-{i}"), 1, op.clone()));
        assert_eq!(code(&r), ErrorCode::FailedPrecondition, "{op:?}");
        let why = r.result.unwrap_err().message;
        assert!(why.contains("no enabled principal with the admin role"), "{why}");
    }
    assert_eq!(sm.revision().unwrap(), before, "nothing may change");
    let p = sm.principal(&admin()).unwrap().unwrap();
    assert!(p.enabled && p.roles.contains(&"admin".to_string()));

    // A disabled admin does not count; an enabled second one does.
    let carol =
        CreateUser { username: "carol".into(), password_phc: "x".into(), roles: vec!["admin".into()] };
    assert!(apply_one(&sm, &as_admin("carol", 2, Op::CreateUser(carol))).result.is_ok());
    let carol_off = SetEnabled { principal: Principal::User("carol".into()), enabled: false };
    assert!(apply_one(&sm, &as_admin("carol-off", 3, Op::SetEnabled(carol_off))).result.is_ok());
    assert_eq!(
        code(&apply_one(&sm, &as_admin("last-again", 4, refused[0].clone()))),
        ErrorCode::FailedPrecondition
    );
    let carol_on = SetEnabled { principal: Principal::User("carol".into()), enabled: true };
    assert!(apply_one(&sm, &as_admin("carol-on", 5, Op::SetEnabled(carol_on))).result.is_ok());
    assert!(apply_one(&sm, &as_admin("admin-off", 6, refused[0].clone())).result.is_ok());
}

#[test]
fn a_deleted_role_is_taken_from_its_holders_and_a_new_one_of_that_name_grants_nothing() {
    let (_d, sm) = open();
    with_bob(&sm);
    let r = apply_one(&sm, &as_admin("del", 2, Op::DeleteRole(DeleteRole { name: "team-a".into() })));
    assert_eq!(r.result, Ok(Outcome::Done));
    let bob = sm.principal(&Principal::User("bob".into())).unwrap().unwrap();
    assert!(bob.roles.is_empty(), "bob still lists {:?}", bob.roles);
    // Re-created with the same rules: bob must not get them back.
    let again = PutRole {
        name: "team-a".into(),
        rules: vec![rule(Effect::Allow, Action::Write, "secrets:team-a/*")],
    };
    assert!(apply_one(&sm, &as_admin("again", 3, Op::PutRole(again))).result.is_ok());
    let w = apply_one(&sm, &as_token(BOB, "w", 3, put_op("team-a/db", "v", None)));
    assert_eq!(code(&w), ErrorCode::PermissionDenied);
    assert!(sm.get_secret("team-a/db", None).unwrap().is_none());
}

#[test]
fn a_changed_password_ends_every_other_session_but_the_callers() {
    let (_d, sm) = open();
    with_bob(&sm);
    let other = [9; 32];
    assert!(apply_one(&sm, &login("bob", BOB_PHC, other, 2, FAR_MS)).result.is_ok());
    let change = ChangePassword { expected_phc: BOB_PHC.into(), new_phc: "$argon2id$bob2".into() };
    assert_eq!(apply_one(&sm, &as_token(BOB, "pw", 3, Op::ChangePassword(change))).result, Ok(Outcome::Done));
    let w = apply_one(&sm, &as_token(other, "w1", 4, put_op("team-a/x", "v", None)));
    assert_eq!(code(&w), ErrorCode::Unauthenticated, "the other session survived the change");
    let w = apply_one(&sm, &as_token(BOB, "w2", 4, put_op("team-a/x", "v", None)));
    assert!(w.result.is_ok(), "the caller's own session died: {:?}", w.result);
    // Only the new password logs in.
    assert_eq!(
        code(&apply_one(&sm, &login("bob", BOB_PHC, [10; 32], 5, FAR_MS))),
        ErrorCode::Unauthenticated
    );
    assert!(apply_one(&sm, &login("bob", "$argon2id$bob2", [11; 32], 5, FAR_MS)).result.is_ok());
    // A change checked against the hash it replaced, after that hash changed
    // (a concurrent change won): refused as a lost race, nothing changes.
    let stale = ChangePassword { expected_phc: BOB_PHC.into(), new_phc: "$argon2id$bob3".into() };
    let r = apply_one(&sm, &as_token(BOB, "pw2", 6, Op::ChangePassword(stale)));
    assert_eq!(code(&r), ErrorCode::FailedPrecondition, "{r:?}");
    assert!(apply_one(&sm, &login("bob", "$argon2id$bob2", [12; 32], 7, FAR_MS)).result.is_ok());
}

/// A token refused for its principal says why (state version 8 on): a
/// password change is not reported as the principal being disabled. Below
/// 8 the old wording stays, since it is kept in request records.
#[test]
fn a_refused_token_says_whether_its_principal_is_disabled_or_its_password_changed() {
    let message = |r: &strongbox_store::Response| r.result.clone().unwrap_err().message;
    for version in [STATE_VERSION_SUPPORTED, 7] {
        let (_d, sm) = open_at_version(version);
        with_bob(&sm);
        let other = [9; 32];
        assert!(apply_one(&sm, &login("bob", BOB_PHC, other, 2, FAR_MS)).result.is_ok());
        let change = ChangePassword { expected_phc: BOB_PHC.into(), new_phc: "$argon2id$bob2".into() };
        assert!(apply_one(&sm, &as_token(BOB, "pw", 3, Op::ChangePassword(change))).result.is_ok());
        let changed = apply_one(&sm, &as_token(other, "w1", 4, put_op("team-a/x", "v", None)));
        let off = SetEnabled { principal: Principal::User("bob".into()), enabled: false };
        assert!(apply_one(&sm, &as_admin("off", 5, Op::SetEnabled(off))).result.is_ok());
        let disabled = apply_one(&sm, &as_token(BOB, "w2", 6, put_op("team-a/x", "v", None)));
        assert_eq!(code(&changed), ErrorCode::Unauthenticated);
        assert_eq!(code(&disabled), ErrorCode::Unauthenticated);
        if version == STATE_VERSION_SUPPORTED {
            assert!(
                message(&changed).contains("predates the last change to user:bob's credentials"),
                "{changed:?}"
            );
            assert!(!message(&changed).contains("disabled;"), "{changed:?}");
            assert!(message(&disabled).starts_with("user:bob is disabled"), "{disabled:?}");
        } else {
            assert_eq!(message(&changed), "the token's principal is disabled or was re-created");
            assert_eq!(message(&disabled), message(&changed));
        }
    }
}

/// A token that expired and was pruned is refused without ruling expiry
/// out (state version 9 on): before, it read "unknown or revoked" though
/// the same token read "expired" until the prune.
#[test]
fn a_pruned_expired_token_is_not_called_revoked_only() {
    use strongbox_store::command::set_state_version::UNKNOWN_TOKENS_MAY_HAVE_EXPIRED;
    for version in [UNKNOWN_TOKENS_MAY_HAVE_EXPIRED, UNKNOWN_TOKENS_MAY_HAVE_EXPIRED - 1] {
        let (_d, sm) = open_at_version(version);
        with_bob(&sm);
        let short = [9; 32];
        assert!(apply_one(&sm, &login("bob", BOB_PHC, short, 2, 50)).result.is_ok());
        // Expired, not yet pruned.
        let r = apply_one(&sm, &as_token(short, "late", 100, put_op("team-a/x", "v", None)));
        assert_eq!(r.result.unwrap_err().message, "the token has expired; log in again");
        // A batch later, pruned.
        let r = apply_one(&sm, &as_token(short, "later", 101, put_op("team-a/x", "v", None)));
        assert_eq!(code(&r), ErrorCode::Unauthenticated);
        let message = r.result.unwrap_err().message;
        if version >= UNKNOWN_TOKENS_MAY_HAVE_EXPIRED {
            assert_eq!(message, "the token is unknown, expired or revoked; log in again");
        } else {
            assert_eq!(message, "the token is unknown or revoked; log in again");
        }
    }
}

const HELP: [u8; 32] = [3; 32];
const HELP_PHC: &str = "$argon2id$help";

/// `help` administers users, roles and tokens, and reads secrets:team-a/*; bob
/// (team-a: read and write there) exists too.
fn with_helpdesk(sm: &StateMachine) {
    with_bob(sm);
    let role = PutRole {
        name: "helpdesk".into(),
        rules: vec![
            rule(Effect::Allow, Action::Admin, "users"),
            rule(Effect::Allow, Action::Admin, "roles"),
            rule(Effect::Allow, Action::Admin, "tokens"),
            rule(Effect::Allow, Action::Read, "secrets:team-a/*"),
            rule(Effect::Deny, Action::Read, "secrets:team-a/root/*"),
        ],
    };
    assert!(apply_one(sm, &as_admin("helpdesk", 1, Op::PutRole(role))).result.is_ok());
    let help =
        CreateUser { username: "help".into(), password_phc: HELP_PHC.into(), roles: vec!["helpdesk".into()] };
    assert!(apply_one(sm, &as_admin("help", 1, Op::CreateUser(help))).result.is_ok());
    assert!(apply_one(sm, &login("help", HELP_PHC, HELP, 1, FAR_MS)).result.is_ok());
}

#[test]
fn a_delegated_admin_cannot_hand_out_or_take_over_rights_it_lacks() {
    let (_d, sm) = open();
    with_helpdesk(&sm);
    // A deny on what help does not hold: taking it away would hand it back.
    let no_b =
        PutRole { name: "no-b".into(), rules: vec![rule(Effect::Deny, Action::Read, "secrets:team-b/*")] };
    assert!(apply_one(&sm, &as_admin("no-b", 1, Op::PutRole(no_b))).result.is_ok());
    let assign = AssignRole { principal: Principal::User("help".into()), role: "no-b".into(), assign: true };
    assert!(apply_one(&sm, &as_admin("no-b-help", 1, Op::AssignRole(assign))).result.is_ok());
    let rev = sm.revision().unwrap();
    let admin_user = Principal::User("admin".into());
    let escalations = [
        Op::DeleteRole(DeleteRole { name: "no-b".into() }),
        Op::PutRole(PutRole { name: "no-b".into(), rules: vec![] }),
        Op::AssignRole(AssignRole {
            principal: Principal::User("help".into()),
            role: "no-b".into(),
            assign: false,
        }),
        Op::UnlockUser(UnlockUser { username: "admin".into() }),
        Op::RevokeToken(RevokeToken { token_hash: ADMIN_TOKEN }),
        Op::CreateUser(CreateUser {
            username: "eve".into(),
            password_phc: "x".into(),
            roles: vec!["admin".into()],
        }),
        Op::AssignRole(AssignRole {
            principal: Principal::User("help".into()),
            role: "admin".into(),
            assign: true,
        }),
        Op::AssignRole(AssignRole {
            principal: Principal::User("help".into()),
            role: "team-a".into(),
            assign: true,
        }),
        Op::PutRole(PutRole { name: "wide".into(), rules: vec![rule(Effect::Allow, Action::Admin, "*")] }),
        Op::PutRole(PutRole {
            name: "wider-read".into(),
            rules: vec![rule(Effect::Allow, Action::Read, "secrets:*")],
        }),
        // Held, but cut by help's own deny.
        Op::PutRole(PutRole {
            name: "all-of-a".into(),
            rules: vec![rule(Effect::Allow, Action::Read, "secrets:team-a/*")],
        }),
        // Changing a role help does not cover would change bob's rights.
        Op::PutRole(PutRole { name: "team-a".into(), rules: vec![] }),
        Op::DeleteRole(DeleteRole { name: "team-a".into() }),
        Op::SetPassword(SetPassword { username: "admin".into(), password_phc: "$argon2id$mine".into() }),
        Op::SetEnabled(SetEnabled { principal: admin_user.clone(), enabled: false }),
        Op::DeletePrincipal(DeletePrincipal { principal: Principal::User("bob".into()) }),
        Op::AssignRole(AssignRole { principal: admin_user.clone(), role: "helpdesk".into(), assign: true }),
    ];
    for (i, op) in escalations.into_iter().enumerate() {
        let name = op.name();
        let r = apply_one(&sm, &as_token(HELP, &format!("esc-{i}"), 2, op));
        assert_eq!(code(&r), ErrorCode::PermissionDenied, "{name} went through: {r:?}");
    }
    assert_eq!(sm.revision().unwrap(), rev, "a refused escalation changes nothing");
    // The admin still logs in with its own password, and is enabled.
    assert!(apply_one(&sm, &login("admin", ADMIN_PHC, [9; 32], 3, FAR_MS)).result.is_ok());
}

#[test]
fn a_delegated_admin_manages_what_it_holds() {
    let (_d, sm) = open();
    with_helpdesk(&sm);
    let reader = PutRole {
        name: "reader".into(),
        rules: vec![
            rule(Effect::Allow, Action::Read, "secrets:team-a/app/*"),
            rule(Effect::Deny, Action::Read, "secrets:team-a/app/old/*"),
        ],
    };
    let ok = [
        Op::PutRole(reader),
        Op::CreateUser(CreateUser {
            username: "carol".into(),
            password_phc: "x".into(),
            roles: vec!["reader".into()],
        }),
        Op::SetPassword(SetPassword { username: "carol".into(), password_phc: "$argon2id$new".into() }),
        Op::AssignRole(AssignRole {
            principal: Principal::User("carol".into()),
            role: "reader".into(),
            assign: false,
        }),
        Op::SetEnabled(SetEnabled { principal: Principal::User("carol".into()), enabled: false }),
        Op::DeletePrincipal(DeletePrincipal { principal: Principal::User("carol".into()) }),
        Op::DeleteRole(DeleteRole { name: "reader".into() }),
    ];
    for (i, op) in ok.into_iter().enumerate() {
        let name = op.name();
        let r = apply_one(&sm, &as_token(HELP, &format!("ok-{i}"), 2, op));
        assert!(r.result.is_ok(), "{name} refused: {r:?}");
    }
}

/// A `{:?}` of a command or a principal (a log line, a panic message) shows
/// no secret value, password hash, credential or token hash.
#[test]
fn debug_prints_hold_no_secret_material() {
    use strongbox_store::command::{IssueToken, PutSecret, SetPassword};
    let value = b"hunter2-secret-value".to_vec();
    let ops = [
        Op::PutSecret(PutSecret { path: "a/b".into(), value: value.clone(), cas: None, max_versions: None }),
        Op::SetPassword(SetPassword { username: "bob".into(), password_phc: "$argon2id$hunter2".into() }),
        Op::CreateUser(CreateUser {
            username: "bob".into(),
            password_phc: "$argon2id$hunter2".into(),
            roles: vec![],
        }),
        Op::IssueToken(IssueToken {
            principal: Principal::User("bob".into()),
            verified_credential: "$argon2id$hunter2".into(),
            token_hash: [0x5a; 32],
            expires_ms: 1,
            renew_until_ms: 1,
            scopes: None,
        }),
    ];
    for op in ops {
        let shown = format!("{op:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&format!("{value:?}")[1..20]), "{shown}");
        assert!(!shown.contains("90, 90, 90"), "a token hash: {shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}

/// A client's token scoped to some of its roles acts with those roles'
/// rights only, and with every deny rule of all its roles: a scope narrows,
/// never widens.
#[test]
fn a_token_scoped_away_from_a_deny_role_is_still_denied() {
    use strongbox_store::command::{CreateClient, IssueToken};
    let (_d, sm) = open();
    let roles = [
        ("write-all", rule(Effect::Allow, Action::Write, "secrets:*")),
        ("no-hr", rule(Effect::Deny, Action::Write, "secrets:hr/*")),
    ];
    for (name, r) in roles {
        let role = PutRole { name: name.into(), rules: vec![r] };
        assert!(apply_one(&sm, &as_admin(name, 1, Op::PutRole(role))).result.is_ok());
    }
    let svc = CreateClient {
        client_id: "svc".into(),
        secret_digest: "digest".into(),
        roles: vec!["no-hr".into(), "write-all".into()],
    };
    assert!(apply_one(&sm, &as_admin("svc", 1, Op::CreateClient(svc))).result.is_ok());
    const SVC: [u8; 32] = [4; 32];
    let token = IssueToken {
        principal: Principal::Client("svc".into()),
        verified_credential: "digest".into(),
        token_hash: SVC,
        expires_ms: FAR_MS,
        renew_until_ms: FAR_MS,
        scopes: Some(vec!["write-all".into()]),
    };
    assert!(apply_one(&sm, &as_node("svc-token", 1, Op::IssueToken(token))).result.is_ok());
    let r = apply_one(&sm, &as_token(SVC, "w-hr", 2, put_op("hr/pay", "v", None)));
    assert_eq!(code(&r), ErrorCode::PermissionDenied, "{r:?}");
    let r = apply_one(&sm, &as_token(SVC, "w-app", 2, put_op("app/db", "v", None)));
    assert!(r.result.is_ok(), "{r:?}");
}

/// `admin` includes read and write, so a deny of either withholds it too:
/// `deny write users` stops user management (state version 2 on; a
/// version-1 state keeps its old reading, where it withheld only `write`).
#[test]
fn a_deny_rule_also_withholds_admin_on_what_it_names() {
    for (version, allowed) in [(STATE_VERSION_SUPPORTED, false), (1, true)] {
        let (_d, sm) = open_at_version(version);
        let role = PutRole {
            name: "almost".into(),
            rules: vec![
                rule(Effect::Allow, Action::Admin, "users"),
                rule(Effect::Deny, Action::Write, "users"),
            ],
        };
        assert!(apply_one(&sm, &as_admin("role", 1, Op::PutRole(role))).result.is_ok());
        let carol =
            CreateUser { username: "carol".into(), password_phc: "$argon2id$c".into(), roles: vec![] };
        let mut with_role = carol.clone();
        with_role.username = "dave".into();
        with_role.roles = vec!["almost".into()];
        assert!(apply_one(&sm, &as_admin("dave", 1, Op::CreateUser(with_role))).result.is_ok());
        const DAVE: [u8; 32] = [4; 32];
        assert!(apply_one(&sm, &login("dave", "$argon2id$c", DAVE, 1, FAR_MS)).result.is_ok());
        let r = apply_one(&sm, &as_token(DAVE, "carol", 2, Op::CreateUser(carol)));
        assert_eq!(r.result.is_ok(), allowed, "version {version}: {r:?}");
        if !allowed {
            assert_eq!(code(&r), ErrorCode::PermissionDenied);
        }
    }
}

/// Must not happen (from state version 3): a lesser administrator adding a
/// deny rule to a role a superuser holds, shutting the superuser out of
/// user and role management for good; nor the last superuser doing it to
/// itself by mistake. Under version 2 the first went through.
#[test]
fn no_role_edit_shuts_out_a_greater_admin_or_the_last_one() {
    use strongbox_store::command::set_state_version::ROLE_EDITS_GUARD_HOLDERS;
    let lockout = || {
        Op::PutRole(PutRole {
            name: "readers".into(),
            rules: vec![
                rule(Effect::Allow, Action::Read, "secrets:*"),
                rule(Effect::Deny, Action::Admin, "roles"),
                rule(Effect::Deny, Action::Admin, "users"),
            ],
        })
    };
    for version in [ROLE_EDITS_GUARD_HOLDERS - 1, ROLE_EDITS_GUARD_HOLDERS] {
        let (_d, sm) = open_at_version(version);
        let readers =
            PutRole { name: "readers".into(), rules: vec![rule(Effect::Allow, Action::Read, "secrets:*")] };
        assert!(apply_one(&sm, &as_admin("readers", 1, Op::PutRole(readers))).result.is_ok());
        let give =
            AssignRole { principal: Principal::User("admin".into()), role: "readers".into(), assign: true };
        assert!(apply_one(&sm, &as_admin("give", 1, Op::AssignRole(give))).result.is_ok());
        let lesser = PutRole {
            name: "lesser".into(),
            rules: vec![
                rule(Effect::Allow, Action::Admin, "roles"),
                rule(Effect::Allow, Action::Admin, "users"),
                rule(Effect::Allow, Action::Read, "secrets:*"),
            ],
        };
        assert!(apply_one(&sm, &as_admin("lesser", 1, Op::PutRole(lesser))).result.is_ok());
        let h =
            CreateUser { username: "h".into(), password_phc: HELP_PHC.into(), roles: vec!["lesser".into()] };
        assert!(apply_one(&sm, &as_admin("h", 1, Op::CreateUser(h))).result.is_ok());
        assert!(apply_one(&sm, &login("h", HELP_PHC, HELP, 1, FAR_MS)).result.is_ok());

        let r = apply_one(&sm, &as_token(HELP, "lockout", 2, lockout()));
        if version < ROLE_EDITS_GUARD_HOLDERS {
            assert!(r.result.is_ok(), "version {version} applies as it always did: {r:?}");
            continue;
        }
        assert_eq!(code(&r), ErrorCode::PermissionDenied, "{r:?}");
        let why = r.result.unwrap_err().message;
        assert!(why.contains("held by user:admin"), "{why}");
        let rev = sm.revision().unwrap();
        // Deleting the role is guarded the same way (it takes rights away).
        let r =
            apply_one(&sm, &as_token(HELP, "del", 2, Op::DeleteRole(DeleteRole { name: "readers".into() })));
        assert_eq!(code(&r), ErrorCode::PermissionDenied, "{r:?}");
        // The superuser itself, the only one: refused, and says why.
        let r = apply_one(&sm, &as_admin("self", 2, lockout()));
        assert_eq!(code(&r), ErrorCode::FailedPrecondition, "{r:?}");
        assert!(r.result.unwrap_err().message.contains("no enabled principal with the admin role"));
        let deny =
            PutRole { name: "deny-users".into(), rules: vec![rule(Effect::Deny, Action::Write, "users")] };
        assert!(apply_one(&sm, &as_admin("deny", 2, Op::PutRole(deny))).result.is_ok());
        let rev_after_new_role = sm.revision().unwrap();
        assert_eq!(rev_after_new_role, rev + 1);
        let take = AssignRole {
            principal: Principal::User("admin".into()),
            role: "deny-users".into(),
            assign: true,
        };
        let r = apply_one(&sm, &as_admin("take", 2, Op::AssignRole(take.clone())));
        assert_eq!(code(&r), ErrorCode::FailedPrecondition, "{r:?}");
        assert_eq!(sm.revision().unwrap(), rev_after_new_role, "nothing refused changed anything");
        // With a second, unhindered superuser, the first may hinder itself.
        let carol =
            CreateUser { username: "carol".into(), password_phc: "x".into(), roles: vec!["admin".into()] };
        assert!(apply_one(&sm, &as_admin("carol", 3, Op::CreateUser(carol))).result.is_ok());
        assert!(apply_one(&sm, &as_admin("take-2", 3, Op::AssignRole(take))).result.is_ok());
        // The superuser still manages users and roles.
        let r =
            apply_one(&sm, &as_admin("still", 3, Op::PutRole(PutRole { name: "x".into(), rules: vec![] })));
        assert!(r.result.is_ok(), "{r:?}");
    }
}

/// Must not happen: two nodes answering one revoke two ways because their
/// apply batches were cut differently (one had pruned the expired token
/// at the end of an earlier batch, the other had not yet).
#[test]
fn revoking_an_expired_token_answers_alike_however_entries_are_batched() {
    let short = [5; 32];
    let run = |one_batch: bool| {
        let (_d, sm) = open();
        with_bob(&sm);
        assert!(apply_one(&sm, &login("bob", BOB_PHC, short, 7, 100)).result.is_ok());
        let tick = put("tick", 200, "x/tick", "v", None);
        let revoke = as_admin("rv", 200, Op::RevokeToken(RevokeToken { token_hash: short }));
        let last = if one_batch {
            apply_group(&sm, &[tick, revoke]).pop().unwrap()
        } else {
            assert!(apply_one(&sm, &tick).result.is_ok());
            apply_one(&sm, &revoke)
        };
        (last.result, sm.revision().unwrap())
    };
    let (together, apart) = (run(true), run(false));
    assert_eq!(together, apart);
    assert_eq!(together.0, Ok(Outcome::TokenRevoked { existed: false }));
}

/// Data from before version 3 may have no unhindered admin at all (every
/// admin holds some deny rule on users or roles): the last admin-role
/// holder is still kept, before and after the move to version 3.
#[test]
fn the_last_admin_role_holder_is_kept_when_none_is_unhindered() {
    use strongbox_store::command::set_state_version::ROLE_EDITS_GUARD_HOLDERS;
    use strongbox_store::command::SetStateVersion;
    const XAVIER: [u8; 32] = [21; 32];
    for upgrade in [false, true] {
        let (_d, sm) = open_at_version(ROLE_EDITS_GUARD_HOLDERS - 1);
        // xavier may do anything, by a role of its own, not the admin role.
        let sup = PutRole { name: "super".into(), rules: vec![rule(Effect::Allow, Action::Admin, "*")] };
        assert!(apply_one(&sm, &as_admin("super", 1, Op::PutRole(sup))).result.is_ok());
        let x = CreateUser {
            username: "xavier".into(),
            password_phc: HELP_PHC.into(),
            roles: vec!["super".into()],
        };
        assert!(apply_one(&sm, &as_admin("xavier", 1, Op::CreateUser(x))).result.is_ok());
        assert!(apply_one(&sm, &login("xavier", HELP_PHC, XAVIER, 1, FAR_MS)).result.is_ok());
        let deny =
            PutRole { name: "no-roles".into(), rules: vec![rule(Effect::Deny, Action::Write, "roles")] };
        assert!(apply_one(&sm, &as_admin("deny", 1, Op::PutRole(deny))).result.is_ok());
        let give =
            AssignRole { principal: Principal::User("admin".into()), role: "no-roles".into(), assign: true };
        assert!(apply_one(&sm, &as_admin("give", 2, Op::AssignRole(give))).result.is_ok());
        if upgrade {
            let up = Op::SetStateVersion(SetStateVersion { version: ROLE_EDITS_GUARD_HOLDERS });
            assert!(apply_one(&sm, &as_admin("up", 2, up)).result.is_ok());
        }
        let off = Op::SetEnabled(SetEnabled { principal: Principal::User("admin".into()), enabled: false });
        let r = apply_one(&sm, &as_token(XAVIER, "off-admin", 3, off));
        assert_eq!(code(&r), ErrorCode::FailedPrecondition, "upgraded {upgrade}: {r:?}");
        assert!(r.result.unwrap_err().message.contains("last enabled principal with the admin role"));
    }
}

/// A client whose token expired mid-retry logs in again and retries with
/// the same request id: from state version 3 that retry is answered, not
/// applied a second time (the id is scoped by the principal). Another
/// principal's equal id is still another request.
#[test]
fn a_retry_under_a_new_token_of_the_same_principal_is_answered() {
    use strongbox_store::command::set_state_version::REQUEST_IDS_BY_PRINCIPAL;
    for version in [REQUEST_IDS_BY_PRINCIPAL - 1, REQUEST_IDS_BY_PRINCIPAL] {
        let (_d, sm) = open_at_version(version);
        with_bob(&sm);
        let bob_again = [31; 32];
        assert!(apply_one(&sm, &login("bob", BOB_PHC, bob_again, 2, FAR_MS)).result.is_ok());
        let first = apply_one(&sm, &as_token(BOB, "same-id", 3, put_op("team-a/r", "v", None)));
        assert!(first.result.is_ok() && !first.deduplicated, "{first:?}");
        let retry = apply_one(&sm, &as_token(bob_again, "same-id", 4, put_op("team-a/r", "v", None)));
        let versions = sm.get_secret("team-a/r", None).unwrap().unwrap().latest_version;
        if version < REQUEST_IDS_BY_PRINCIPAL {
            assert!(!retry.deduplicated, "version {version} scoped ids by token");
            assert_eq!(versions, 2);
            continue;
        }
        assert!(retry.deduplicated, "{retry:?}");
        assert_eq!(retry.revision, first.revision);
        assert_eq!(versions, 1, "applied once");
        // The admin's equal id is its own request.
        let admin = apply_one(&sm, &as_admin("same-id", 5, put_op("team-a/r", "w", None)));
        assert!(admin.result.is_ok() && !admin.deduplicated, "{admin:?}");
    }
}

/// Must not happen: a same-token retry applied twice because the state
/// moved to principal-scoped request ids between the two attempts.
#[test]
fn a_retry_across_the_move_to_principal_scoped_ids_is_answered() {
    use strongbox_store::command::set_state_version::REQUEST_IDS_BY_PRINCIPAL;
    use strongbox_store::command::SetStateVersion;
    let (_d, sm) = open_at_version(REQUEST_IDS_BY_PRINCIPAL - 1);
    with_bob(&sm);
    let first = apply_one(&sm, &as_token(BOB, "across", 3, put_op("team-a/u", "v", None)));
    assert!(first.result.is_ok());
    let up = Op::SetStateVersion(SetStateVersion { version: REQUEST_IDS_BY_PRINCIPAL });
    assert!(apply_one(&sm, &as_admin("up", 4, up)).result.is_ok());
    let retry = apply_one(&sm, &as_token(BOB, "across", 5, put_op("team-a/u", "v", None)));
    assert!(retry.deduplicated, "{retry:?}");
    assert_eq!(sm.get_secret("team-a/u", None).unwrap().unwrap().latest_version, 1);
}

/// Rotating a client's secret hands whoever rotates it the client's rights:
/// a client administrator may rotate only clients whose rights it holds.
/// The old secret's tokens stop working; a version-3 state refuses it.
#[test]
fn a_client_secret_is_rotated_only_by_who_holds_the_clients_rights() {
    use strongbox_store::command::{CreateClient, IssueToken, RotateClientSecret};
    const DESK: [u8; 32] = [5; 32];
    const CI: [u8; 32] = [6; 32];
    let (_d, sm) = open();
    with_bob(&sm); // role team-a
    let desk_role = PutRole {
        name: "client-desk".into(),
        rules: vec![
            rule(Effect::Allow, Action::Admin, "clients"),
            rule(Effect::Allow, Action::Read, "secrets:team-a/*"),
            rule(Effect::Allow, Action::Write, "secrets:team-a/*"),
        ],
    };
    assert!(apply_one(&sm, &as_admin("desk-role", 1, Op::PutRole(desk_role))).result.is_ok());
    let desk = CreateUser {
        username: "desk".into(),
        password_phc: "$argon2id$d".into(),
        roles: vec!["client-desk".into()],
    };
    assert!(apply_one(&sm, &as_admin("desk", 1, Op::CreateUser(desk))).result.is_ok());
    assert!(apply_one(&sm, &login("desk", "$argon2id$d", DESK, 1, FAR_MS)).result.is_ok());
    for (id, role) in [("ci", "team-a"), ("root-ci", "admin")] {
        let c = CreateClient {
            client_id: id.into(),
            secret_digest: format!("sha256:{id}"),
            roles: vec![role.into()],
        };
        assert!(apply_one(&sm, &as_admin(id, 1, Op::CreateClient(c))).result.is_ok());
    }
    let issue = IssueToken {
        principal: Principal::Client("ci".into()),
        verified_credential: "sha256:ci".into(),
        token_hash: CI,
        expires_ms: FAR_MS,
        renew_until_ms: FAR_MS,
        scopes: Some(vec!["team-a".into()]),
    };
    assert!(apply_one(&sm, &as_node("ci-login", 1, Op::IssueToken(issue))).result.is_ok());
    let rotate = |id: &str| {
        Op::RotateClientSecret(RotateClientSecret {
            client_id: id.into(),
            secret_digest: "sha256:new".into(),
        })
    };

    let rev = sm.revision().unwrap();
    let r = apply_one(&sm, &as_token(DESK, "rot-root", 2, rotate("root-ci")));
    assert_eq!(code(&r), ErrorCode::PermissionDenied, "{r:?}");
    assert_eq!(sm.revision().unwrap(), rev, "refused: nothing changed");

    let r = apply_one(&sm, &as_token(DESK, "rot-ci", 2, rotate("ci")));
    assert_eq!(r.result, Ok(Outcome::ClientSecretRotated { secret_digest: "sha256:new".into() }));
    let put = as_token(CI, "ci-put", 3, put_op("team-a/x", "v", None));
    assert_eq!(code(&apply_one(&sm, &put)), ErrorCode::Unauthenticated, "the old secret's token died");

    let (_d3, old) = open_at_version(3);
    let r = apply_one(&old, &as_admin("rot-v3", 2, rotate("admin")));
    assert_eq!(code(&r), ErrorCode::FailedPrecondition);
}
