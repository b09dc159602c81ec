//! The README's ledger commands, run as a user runs them: the real
//! `strongbox` binary against a three-node cluster, one event from flags or
//! a JSON-lines batch file, checked by the JSON lines they print, their
//! exit status and the balances left behind.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn sb(c: &TestCluster, args: &[&str]) -> std::process::Output {
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as _).collect();
    strongbox(c, &args)
}

fn lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Each account's (debits_pending, debits_posted, credits_pending,
/// credits_posted), by id, from `account get`.
fn balances(c: &TestCluster, ids: &[&str]) -> Vec<[String; 4]> {
    let out = lines(&ok(sb(c, &[&["account", "get"], ids].concat())));
    ids.iter()
        .map(|id| {
            let a = out.iter().find(|a| a["id"] == *id).unwrap_or_else(|| panic!("{id} in {out:?}"));
            ["debits_pending", "debits_posted", "credits_pending", "credits_posted"]
                .map(|f| a[f].as_str().unwrap().to_string())
        })
        .collect()
}

fn b(v: [&str; 4]) -> [String; 4] {
    v.map(String::from)
}

#[tokio::test]
async fn the_readmes_ledger_commands_do_what_they_say() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let account_1 = ["account", "create", "--id", "1", "--ledger", "700", "--code", "10"];
    assert_eq!(lines(&ok(sb(&c, &account_1))), [json!({"index": 0, "id": "1", "result": "ok"})]);
    // The id is the idempotency key: the same event again is no failure.
    assert_eq!(lines(&ok(sb(&c, &account_1)))[0]["result"], "exists");
    let account_2 = ["--id", "2", "--ledger", "700", "--code", "10"];
    let flags = ["--flag", "debits_must_not_exceed_credits", "--flag", "history"];
    ok(sb(&c, &[&["account", "create"][..], &account_2, &flags].concat()));

    let transfer = |args: &[&str]| ok(sb(&c, &[&["transfer", "create"], args].concat()));
    let between = ["--ledger", "700", "--code", "1"];
    transfer(&[&["--id", "100", "--debit", "1", "--credit", "2", "--amount", "500"][..], &between].concat());
    let pending = ["--id", "101", "--debit", "2", "--credit", "1", "--amount", "200", "--flag", "pending"];
    transfer(&[&pending[..], &between, &["--timeout", "60"]].concat());
    assert_eq!(balances(&c, &["2"]), [b(["200", "0", "0", "500"])], "200 reserved");
    transfer(&["--id", "102", "--pending-id", "101", "--flag", "post_pending_transfer"]);
    assert_eq!(balances(&c, &["1", "2"]), [b(["0", "500", "0", "200"]), b(["0", "200", "0", "500"])]);

    // Newest first, one page at a time; stderr says how to go on.
    let page = sb(&c, &["account", "transfers", "2", "--reversed", "--limit", "2"]);
    let next = String::from_utf8_lossy(&page.stderr).into_owned();
    let ids: Vec<Value> = lines(&ok(page)).iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, [json!("102"), json!("101")]);
    assert!(next.contains("repeat with --timestamp-max"), "{next}");
    let history = lines(&ok(sb(&c, &["account", "balances", "2"])));
    assert_eq!(history.len(), 3, "one row per transfer of an account with history: {history:?}");
    assert_eq!(history[2]["debits_posted"], "200");

    // A batch file: a linked pair whose second event would overdraw 2
    // applies neither, and the command fails, saying why for each.
    let file = c.dir.path().join("batch.jsonl");
    let event = |id: u32, debit: u32, credit: u32, amount: u32, linked: bool| {
        let flags: Vec<&str> = if linked { vec!["linked"] } else { vec![] };
        json!({"id": id, "debit": debit, "credit": credit, "amount": amount, "ledger": 700, "code": 1, "flags": flags})
            .to_string()
    };
    std::fs::write(&file, [event(200, 1, 2, 5, true), event(201, 2, 1, 1000, false)].join("\n")).unwrap();
    let out = sb(&c, &["transfer", "create", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success(), "a failed event fails the command");
    let results: Vec<Value> =
        lines(&String::from_utf8_lossy(&out.stdout)).iter().map(|r| r["result"].clone()).collect();
    assert_eq!(results, [json!("linked_event_failed"), json!("exceeds_credits")]);
    assert_eq!(balances(&c, &["1", "2"]), [b(["0", "500", "0", "200"]), b(["0", "200", "0", "500"])]);
    refused(sb(&c, &["transfer", "get", "200"]), "not found: 200");

    // The same pair within 2's credits applies whole.
    std::fs::write(&file, [event(300, 1, 2, 5, true), event(301, 2, 1, 300, false)].join("\n")).unwrap();
    let ok_pair = lines(&ok(sb(&c, &["transfer", "create", "--file", file.to_str().unwrap()])));
    assert!(ok_pair.iter().all(|r| r["result"] == "ok"), "{ok_pair:?}");
    assert_eq!(balances(&c, &["2"]), [b(["0", "500", "0", "505"])]);
    // A chain left open is refused as a whole.
    std::fs::write(&file, event(400, 1, 2, 1, true)).unwrap();
    let open = sb(&c, &["transfer", "create", "--file", file.to_str().unwrap()]);
    assert!(!open.status.success());
    assert_eq!(lines(&String::from_utf8_lossy(&open.stdout))[0]["result"], "linked_event_chain_open");
}
