//! The README's secret commands, run as a user runs them: the real
//! `strongbox` binary against a three-node cluster, through node 1 (leader
//! or not), checked by what they print and what they refuse.

mod common;

use std::time::Duration;

use common::*;

fn sb(c: &TestCluster, args: &[&str]) -> std::process::Output {
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as _).collect();
    strongbox(c, &args)
}

fn value_of(c: &TestCluster, args: &[&str]) -> String {
    ok(sb(c, &[&["secret", "get"], args].concat()))
}

#[tokio::test]
async fn the_readmes_secret_commands_do_what_they_say() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let path = "team-a/db/password";

    // One node by --endpoint, the rest from the profile (its CA included):
    // no --ca needed to talk to one member of the profile's own cluster.
    let profile = c.dir.path().join("ca-profile.toml");
    c.profile.save(&profile).unwrap();
    let one_node = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .env("STRONGBOX_PROFILE", &profile)
        .env("STRONGBOX_TOKEN", &c.admin_token)
        .args(["--endpoint", &c.api_addr(2), "cluster", "status"])
        .output()
        .unwrap();
    assert!(ok(one_node).contains("leader"), "cluster status through node 2 alone");

    let put = ok(strongbox_with_stdin(&c, &[&"secret", &"put", &path], b"s3cr3t"));
    assert!(put.starts_with("version 1 revision "), "{put}");
    assert_eq!(value_of(&c, &[path]), "s3cr3t", "the exact bytes, no newline when not a terminal");
    assert!(ok(sb(&c, &["secret", "put", path, "--value", "new", "--cas", "1"])).starts_with("version 2 "));
    refused(sb(&c, &["secret", "put", path, "--value", "lost", "--cas", "1"]), "check-and-set failed");
    assert_eq!(ok(sb(&c, &["secret", "list", "team-a"])).trim(), "db/");
    let meta = ok(sb(&c, &["secret", "meta", path]));
    assert!(meta.contains("versions: 1..=2 (keeps 10)"), "{meta}");

    // Rollback: version 1's value as version 3.
    let back = ok(sb(&c, &["secret", "rollback", path, "--version", "1"]));
    assert!(back.starts_with("version 3 ") && back.contains("the value of version 1"), "{back}");
    assert_eq!(value_of(&c, &[path]), "s3cr3t");
    refused(sb(&c, &["secret", "rollback", path, "--version", "9"]), "no version 9");
    refused(sb(&c, &["secret", "rollback", path, "--version", "0"]), "--version");

    // Soft delete and back; older versions stay readable meanwhile.
    assert!(ok(sb(&c, &["secret", "delete", path])).starts_with("deleted version 3 "));
    refused(sb(&c, &["secret", "get", path]), "is deleted");
    assert_eq!(value_of(&c, &[path, "--version", "2"]), "new");
    ok(sb(&c, &["secret", "undelete", path]));
    assert_eq!(value_of(&c, &[path]), "s3cr3t");

    // Destroyed: gone for good, and no rollback to it.
    ok(sb(&c, &["secret", "destroy", path, "--version", "1"]));
    refused(sb(&c, &["secret", "get", path, "--version", "1"]), "destroyed");
    refused(sb(&c, &["secret", "rollback", path, "--version", "1"]), "destroyed");

    // Metadata before the first version binds that version's put.
    ok(sb(&c, &["secret", "meta-put", "team-b/key", "--cas-required", "true", "--custom", "owner=b"]));
    let meta = ok(sb(&c, &["secret", "meta", "team-b/key"]));
    assert!(meta.contains("versions: none yet") && meta.contains("owner=b"), "{meta}");
    refused(sb(&c, &["secret", "get", "team-b/key"]), "has no version yet");
    assert!(ok(sb(&c, &["secret", "delete", "team-b/key"])).starts_with("no version to delete yet"));
    refused(sb(&c, &["secret", "put", "team-b/key", "--value", "v"]), "requires check-and-set");
    assert!(
        ok(sb(&c, &["secret", "put", "team-b/key", "--value", "v", "--cas", "0"])).starts_with("version 1 ")
    );

    // Purge: every version, the metadata, the listing; again is no error.
    let purged = ok(sb(&c, &["secret", "purge", path]));
    assert!(purged.contains("2 version(s) destroyed"), "versions 2 and 3 had values: {purged}");
    assert!(ok(sb(&c, &["secret", "purge", path])).contains("0 version(s) destroyed"));
    assert_eq!(ok(sb(&c, &["secret", "list", "team-a"])).trim(), "");
    refused(sb(&c, &["secret", "get", path]), "no secret at team-a/db/password");
    ok(sb(&c, &["secret", "metadata-delete", "team-b/key"]));
    assert_eq!(ok(sb(&c, &["secret", "list"])).trim(), "", "nothing left at the root");

    // After all that, the three replicas hold the same state: once every
    // member has applied the last write, their digests agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = sb(&c, &["cluster", "hash"]);
        assert!(matches!(run.status.code(), Some(0 | 3)), "disagree or failed: {run:?}");
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        let digests: Vec<&str> =
            out.lines().skip(1).take(3).filter_map(|l| l.split_whitespace().nth(4)).collect();
        if out.contains("all 3 members agree") {
            assert_eq!(digests.len(), 3, "{out}");
            assert!(digests.iter().all(|d| d.len() == 64 && *d == digests[0]), "{out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "members never at one applied index: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
