//! The README's user, role, client and token commands, run as a user runs
//! them: the real `strongbox` binary against a three-node cluster, with a
//! scratch profile where `login` saves its token, checked by what each
//! principal may then do and by what must stop working.

mod common;

use std::time::Duration;

use common::*;

type Args<'a> = &'a [&'a str];

fn run(c: &TestCluster, token: Option<&str>, args: Args, stdin: &str) -> std::process::Output {
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as _).collect();
    strongbox_as(c, token, &args, stdin.as_bytes())
}

/// As the admin.
fn admin(c: &TestCluster, args: Args) -> std::process::Output {
    run(c, Some(&c.admin_token), args, "")
}

/// As whoever last logged in through the CLI (its saved token).
fn saved(c: &TestCluster, args: Args) -> std::process::Output {
    run(c, None, args, "")
}

const ALICE_PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn the_readmes_access_commands_do_what_they_say() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let role =
        ["role", "put", "team-a-rw", "--allow", "read secrets:team-a/*", "--allow", "write secrets:team-a/*"];
    ok(admin(&c, &role));
    let create = ["user", "create", "alice", "--role", "team-a-rw", "--password-stdin"];
    ok(run(&c, Some(&c.admin_token), &create, &format!("{ALICE_PASSWORD}\n")));

    // Logged in, alice's token is saved and used with no flag.
    let login = ["login", "--username", "alice", "--password-stdin"];
    refused(run(&c, None, &login, "wrong password\n"), "Unauthenticated");
    let said = ok(run(&c, None, &login, &format!("{ALICE_PASSWORD}\n")));
    assert!(said.starts_with("logged in as alice; token saved to "), "{said}");
    let me = ok(saved(&c, &["whoami"]));
    assert!(me.contains("user:alice") && me.contains("roles: team-a-rw"), "{me}");
    assert!(ok(saved(&c, &["secret", "put", "team-a/app", "--value", "v"])).starts_with("version 1 "));
    refused(saved(&c, &["secret", "put", "team-b/app", "--value", "v"]), "PermissionDenied");
    refused(saved(&c, &["user", "list"]), "PermissionDenied");

    // Disabled: her saved token stops working; enabled, she logs in again.
    ok(admin(&c, &["user", "disable", "alice"]));
    refused(saved(&c, &["secret", "get", "team-a/app"]), "Unauthenticated");
    ok(admin(&c, &["user", "enable", "alice"]));
    ok(run(&c, None, &login, &format!("{ALICE_PASSWORD}\n")));
    assert_eq!(ok(saved(&c, &["secret", "get", "team-a/app"])), "v");

    // A service client: its secret printed once, exchanged for a token.
    let created = ok(admin(&c, &["client", "create", "ci", "--role", "team-a-rw"]));
    let secret = created.lines().nth(1).expect("the secret on the second line").to_string();
    let grant = ["token", "client", "--client-id", "ci"];
    let token = ok(run(&c, None, &grant, &format!("{secret}\n"))).trim().to_string();
    assert_eq!(ok(run(&c, Some(&token), &["secret", "get", "team-a/app"], "")), "v");
    // Rotated: the old secret and every token it got stop working.
    let rotated = ok(admin(&c, &["client", "rotate-secret", "ci"]));
    let new_secret = rotated.lines().nth(1).expect("the new secret").to_string();
    assert_ne!(new_secret, secret);
    refused(run(&c, Some(&token), &["secret", "get", "team-a/app"], ""), "Unauthenticated");
    refused(run(&c, None, &grant, &format!("{secret}\n")), "Unauthenticated");
    let fresh = ok(run(&c, None, &grant, &format!("{new_secret}\n"))).trim().to_string();
    assert_eq!(ok(run(&c, Some(&fresh), &["secret", "get", "team-a/app"], "")), "v");

    // A deleted role is taken from everyone holding it, at once.
    ok(admin(&c, &["role", "delete", "team-a-rw"]));
    refused(saved(&c, &["secret", "get", "team-a/app"]), "PermissionDenied");
    refused(run(&c, Some(&fresh), &["secret", "get", "team-a/app"], ""), "PermissionDenied");
    // Logged out: the token is revoked, not only forgotten by the CLI.
    let alice_token = std::fs::read_to_string(c.dir.path().join("token")).expect("login saved it");
    ok(saved(&c, &["logout"]));
    refused(run(&c, Some(alice_token.trim()), &["whoami"], ""), "Unauthenticated");
}
