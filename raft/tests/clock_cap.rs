//! The leader caps the time stamped into each command at its own clock plus
//! `CLOCK_AHEAD_MS_MAX`: apply's clock only moves forward, so one node whose
//! clock runs ahead must not drag the whole cluster's time with it. It
//! raises a time more than `CLOCK_BEHIND_MS_MAX` behind its clock: a node
//! whose clock runs slow must not hold the cluster's time back.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use strongbox_raft::proposer::{cap_times, CLOCK_AHEAD_MS_MAX, CLOCK_BEHIND_MS_MAX};
use strongbox_store::Op;

const LEADER_NOW_MS: u64 = 1_700_000_000_000;

#[test]
fn times_beyond_the_leaders_clock_either_way_are_moved_to_the_bounds() {
    let hour_ms = 3_600_000;
    let mut cmds = vec![
        common::put("behind", LEADER_NOW_MS - hour_ms, "a/1", "v", None),
        common::put("lag", LEADER_NOW_MS - CLOCK_BEHIND_MS_MAX, "a/0", "v", None),
        common::put("same", LEADER_NOW_MS, "a/2", "v", None),
        common::put("jitter", LEADER_NOW_MS + CLOCK_AHEAD_MS_MAX, "a/3", "v", None),
        common::put("ahead", LEADER_NOW_MS + hour_ms, "a/4", "v", None),
    ];
    let ahead_ms = cap_times(&mut cmds, LEADER_NOW_MS);
    assert_eq!(ahead_ms, hour_ms, "reports how far ahead the furthest was");
    let times: Vec<u64> = cmds.iter().map(|c| c.time_ms).collect();
    assert_eq!(
        times,
        vec![
            LEADER_NOW_MS - CLOCK_BEHIND_MS_MAX,
            LEADER_NOW_MS - CLOCK_BEHIND_MS_MAX,
            LEADER_NOW_MS,
            LEADER_NOW_MS + CLOCK_AHEAD_MS_MAX,
            LEADER_NOW_MS + CLOCK_AHEAD_MS_MAX
        ],
        "only the times beyond the bounds change"
    );
}

#[test]
fn nothing_within_the_cap_is_touched() {
    let mut cmds = vec![common::put("a", LEADER_NOW_MS + 1, "a/1", "v", None)];
    let before = cmds.clone();
    assert_eq!(cap_times(&mut cmds, LEADER_NOW_MS), 0);
    assert_eq!(cmds, before);
}

/// Must not happen: a command from a node an hour ahead moving the state
/// machine's clock an hour ahead, so that a token with ten minutes to live
/// is expired on every node at once.
#[test]
fn a_fast_nodes_command_does_not_expire_a_live_token() {
    let (_dir, sm) = common::open();
    let token = [9; 32];
    let login = common::login("admin", common::ADMIN_PHC, token, LEADER_NOW_MS, LEADER_NOW_MS + 600_000);
    assert!(common::apply_one(&sm, &login).result.is_ok());
    let mut fast = vec![common::put("fast", LEADER_NOW_MS + 3_600_000, "a/fast", "v", None)];
    cap_times(&mut fast, LEADER_NOW_MS);
    assert!(common::apply_one(&sm, &fast[0]).result.is_ok());
    let used = common::as_token(token, "use", LEADER_NOW_MS + 2_000, common::put_op("a/later", "v", None));
    let r = common::apply_one(&sm, &used);
    assert!(r.result.is_ok(), "the token expired early: {:?}", r.result);
}

/// A token issued through a node an hour ahead would otherwise live an hour
/// longer than asked: its expiry was computed from that node's clock.
#[test]
fn a_token_issued_through_a_fast_node_gets_the_lifetime_asked_for() {
    let (hour_ms, ttl_ms) = (3_600_000, 600_000);
    let stamped_ms = LEADER_NOW_MS + hour_ms;
    let mut cmds = vec![common::login("admin", common::ADMIN_PHC, [5; 32], stamped_ms, stamped_ms + ttl_ms)];
    cap_times(&mut cmds, LEADER_NOW_MS);
    let capped_ms = LEADER_NOW_MS + CLOCK_AHEAD_MS_MAX;
    assert_eq!(cmds[0].time_ms, capped_ms);
    let Op::IssueToken(t) = &cmds[0].op else { unreachable!("a login issues a token") };
    assert_eq!(t.expires_ms, capped_ms + ttl_ms, "the same ten minutes, from the capped time");
    assert_eq!(t.renew_until_ms, capped_ms + ttl_ms);

    let (_dir, sm) = common::open();
    assert!(common::apply_one(&sm, &cmds[0]).result.is_ok());
    let late = common::as_token([5; 32], "late", capped_ms + ttl_ms + 1, common::put_op("a/late", "v", None));
    assert!(common::apply_one(&sm, &late).result.is_err(), "the token outlived the ten minutes");
}

/// Must not happen: a token the leader's clock has seen expire still
/// passing the check inside apply because the write was stamped by a node
/// whose clock runs an hour slow (and the cluster was otherwise quiet).
#[test]
fn a_slow_nodes_command_does_not_revive_an_expired_token() {
    let (hour_ms, ttl_ms) = (3_600_000, 600_000);
    let issued_ms = LEADER_NOW_MS - 2 * ttl_ms;
    let (_dir, sm) = common::open();
    let login = common::login("admin", common::ADMIN_PHC, [7; 32], issued_ms, issued_ms + ttl_ms);
    assert!(common::apply_one(&sm, &login).result.is_ok());
    let mut slow =
        vec![common::as_token([7; 32], "slow", LEADER_NOW_MS - hour_ms, common::put_op("a/slow", "v", None))];
    cap_times(&mut slow, LEADER_NOW_MS);
    assert_eq!(slow[0].time_ms, LEADER_NOW_MS - CLOCK_BEHIND_MS_MAX);
    let r = common::apply_one(&sm, &slow[0]);
    assert!(r.result.is_err(), "an expired token was honoured: {:?}", r.result);

    // A token issued through the slow node keeps the lifetime asked for.
    let stamped_ms = LEADER_NOW_MS - hour_ms;
    let mut cmds = vec![common::login("admin", common::ADMIN_PHC, [8; 32], stamped_ms, stamped_ms + ttl_ms)];
    cap_times(&mut cmds, LEADER_NOW_MS);
    let Op::IssueToken(t) = &cmds[0].op else { unreachable!("a login issues a token") };
    assert_eq!(t.expires_ms, LEADER_NOW_MS - CLOCK_BEHIND_MS_MAX + ttl_ms);
}
