//! Names in keys: what users name (paths, usernames, roles, request ids)
//! reaches RocksDB only as keyed hashes, and listing still works through
//! the folder index.

mod common;

use std::collections::BTreeSet;

use common::*;
use strongbox_store::auth::{Action, Effect, Rule};
use strongbox_store::command::{CreateUser, PutRole};
use strongbox_store::layout::Cf;
use strongbox_store::Op;

fn list_all(sm: &strongbox_store::StateMachine, folder: &str, page: usize) -> Vec<String> {
    let (mut out, mut after) = (Vec::new(), String::new());
    loop {
        let entries = sm.list_secrets(folder, &after, page).unwrap();
        out.extend(entries.iter().map(|e| e.name.clone()));
        if entries.len() < page {
            return out;
        }
        after = entries.last().unwrap().name.clone();
    }
}

#[test]
fn folders_list_their_direct_children_once_across_pages() {
    let (_dir, sm) = open();
    for (i, path) in ["zz/b/c", "zz/d", "zz/b/e", "top", "zz/b/c"].iter().enumerate() {
        assert!(apply_one(&sm, &put(&format!("p{i}"), 10, path, "v", None)).result.is_ok());
    }
    for page in [1, 2, 100] {
        let set = |f: &str| list_all(&sm, f, page).into_iter().collect::<BTreeSet<_>>();
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(list_all(&sm, "", page).len(), 2, "no duplicates at page size {page}");
        assert_eq!(set(""), want(&["top", "zz/"]));
        assert_eq!(set("zz/"), want(&["b/", "d"]));
        assert_eq!(set("zz/b/"), want(&["c", "e"]));
        assert!(set("nope/").is_empty());
    }
    let entries = sm.list_secrets("zz/", "", 10).unwrap();
    assert!(entries.iter().all(|e| e.folder == e.name.ends_with('/')));
    assert_eq!(sm.get_secret("zz/b/e", None).unwrap().unwrap().value, b"v");
}

#[test]
fn no_name_reaches_a_key_in_the_clear() {
    let (_dir, sm) = open();
    let marker = "MARKERNAME5a1f";
    let path = format!("{marker}/{marker}");
    assert!(apply_one(&sm, &put(&format!("{marker}-req"), 10, &path, "v", None)).result.is_ok());
    let rule = Rule { effect: Effect::Allow, action: Action::Read, resource: "secrets:*".into() };
    let role = Op::PutRole(PutRole { name: format!("{marker}-role"), rules: vec![rule] });
    assert!(apply_one(&sm, &as_admin("r1", 11, role)).result.is_ok());
    let user = Op::CreateUser(CreateUser {
        username: format!("{marker}-user"),
        password_phc: "$argon2id$x".into(),
        roles: vec![format!("{marker}-role")],
    });
    assert!(apply_one(&sm, &as_admin("u1", 12, user)).result.is_ok());

    let mut keys = 0;
    sm.db()
        .for_each_consistent(&Cf::ALL, |cf, k, _| {
            keys += 1;
            assert!(!k.windows(marker.len()).any(|w| w == marker.as_bytes()), "a plain name in a {cf:?} key");
            Ok(())
        })
        .unwrap();
    assert!(keys > 10);
    // Still found by name, and listed with their names.
    assert_eq!(sm.list_secrets("", "", 10).unwrap()[0].name, format!("{marker}/"));
    let users: Vec<String> = sm.list_principals(false, "", 10).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(users.contains(&format!("{marker}-user")) && users.contains(&"admin".to_string()));
    assert!(sm.role(&format!("{marker}-role")).unwrap().is_some());
}
