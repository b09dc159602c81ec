//! A state machine in a temp dir with its first admin logged in.

#![allow(dead_code)]

use strongbox_store::auth::{Principal, TokenHash};
use strongbox_store::codec::Codec;
use strongbox_store::command::{Bootstrap, IssueToken, PutSecret, STATE_VERSION_SUPPORTED};
use strongbox_store::{Actor, Command, Db, Op, Response, StateMachine};

pub const ADMIN_TOKEN: TokenHash = [7; 32];
pub const ADMIN_PHC: &str = "$argon2id$admin";
/// Revision after bootstrap and the admin's login.
pub const BASE: u64 = 2;
pub const FAR_MS: u64 = 1 << 60;

/// A new state, at the newest state version, as a new cluster starts.
pub fn open() -> (tempfile::TempDir, StateMachine) {
    open_at_version(STATE_VERSION_SUPPORTED)
}

/// A new state at an older state version: a cluster made by an older build.
pub fn open_at_version(version: u32) -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Codec::plaintext()).unwrap();
    set_version(&db, version);
    bootstrapped(dir, db)
}

/// Written directly (a new cluster gets it from `InitStateVersion`, which
/// would move the revisions every test counts from).
fn set_version(db: &Db, version: u32) {
    let mut b = db.batch();
    b.put(strongbox_store::Cf::SmMeta, strongbox_store::layout::sm_keys::STATE_VERSION, &version);
    db.write(b, true).unwrap();
}

/// As `open`, with encryption at rest under a fresh master key of its own.
pub fn open_encrypted() -> (tempfile::TempDir, StateMachine) {
    use strongbox_store::keyring::{Keyring, MasterKey};
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::create(dir.path(), MasterKey::generate().0).unwrap();
    let db = Db::open(&dir.path().join("db"), Codec::encrypted(std::sync::Arc::new(keyring))).unwrap();
    set_version(&db, STATE_VERSION_SUPPORTED);
    bootstrapped(dir, db)
}

/// One replica of a cluster whose bootstrap carried `name_key`: plaintext,
/// or sealed under a master key of its own (as each node's is).
pub fn open_replica(
    name_key: &strongbox_store::names::NameKey,
    encrypted: bool,
) -> (tempfile::TempDir, StateMachine) {
    use strongbox_store::keyring::{Keyring, MasterKey};
    let dir = tempfile::tempdir().unwrap();
    let codec = if encrypted {
        Codec::encrypted(std::sync::Arc::new(Keyring::create(dir.path(), MasterKey::generate().0).unwrap()))
    } else {
        Codec::plaintext()
    };
    let db = Db::open(&dir.path().join("db"), codec).unwrap();
    set_version(&db, STATE_VERSION_SUPPORTED);
    bootstrapped_with(dir, db, name_key.clone())
}

fn bootstrapped(dir: tempfile::TempDir, db: Db) -> (tempfile::TempDir, StateMachine) {
    bootstrapped_with(dir, db, strongbox_store::names::NameKey::generate())
}

fn bootstrapped_with(
    dir: tempfile::TempDir,
    db: Db,
    name_key: strongbox_store::names::NameKey,
) -> (tempfile::TempDir, StateMachine) {
    let sm = StateMachine::new(db);
    let boot = Bootstrap { username: "admin".into(), password_phc: ADMIN_PHC.into(), name_key };
    assert!(apply_one(&sm, &as_node("boot", 0, Op::Bootstrap(boot))).result.is_ok());
    assert!(apply_one(&sm, &login("admin", ADMIN_PHC, ADMIN_TOKEN, 0, FAR_MS)).result.is_ok());
    assert_eq!(sm.revision().unwrap(), BASE);
    (dir, sm)
}

pub fn as_node(id: &str, t: u64, op: Op) -> Command {
    Command { request_id: id.into(), time_ms: t, node: 0, actor: Actor::Node, op }
}

pub fn as_token(token: TokenHash, id: &str, t: u64, op: Op) -> Command {
    Command { request_id: id.into(), time_ms: t, node: 0, actor: Actor::Token(token), op }
}

pub fn as_admin(id: &str, t: u64, op: Op) -> Command {
    as_token(ADMIN_TOKEN, id, t, op)
}

pub fn login(user: &str, phc: &str, token: TokenHash, t: u64, expires_ms: u64) -> Command {
    let op = Op::IssueToken(IssueToken {
        principal: Principal::User(user.into()),
        verified_credential: phc.into(),
        token_hash: token,
        expires_ms,
        renew_until_ms: expires_ms,
        scopes: None,
    });
    as_node(&format!("login-{user}-{t}-{}", token[0]), t, op)
}

pub fn put_op(path: &str, value: &str, cas: Option<u64>) -> Op {
    Op::PutSecret(PutSecret { path: path.into(), value: value.as_bytes().to_vec(), cas, max_versions: None })
}

pub fn put(id: &str, t: u64, path: &str, value: &str, cas: Option<u64>) -> Command {
    as_admin(id, t, put_op(path, value, cas))
}

pub fn apply_one(sm: &StateMachine, cmd: &Command) -> Response {
    let mut b = sm.begin().unwrap();
    let r = b.apply(cmd).unwrap();
    b.commit().unwrap();
    r
}

/// Applies commands as one batch (one group of log entries).
pub fn apply_group(sm: &StateMachine, cmds: &[Command]) -> Vec<Response> {
    let mut b = sm.begin().unwrap();
    let out = cmds.iter().map(|c| b.apply(c).unwrap()).collect();
    b.commit().unwrap();
    out
}

/// `sm`'s whole state as a snapshot image file (what a build writes).
pub fn image_of(sm: &StateMachine) -> std::fs::File {
    use strongbox_store::snapshot::{self, FrameWriter};
    let mut w = FrameWriter::new(tempfile::tempfile().unwrap(), sm.db().codec().clone()).unwrap();
    snapshot::export(sm.db(), &mut w).unwrap();
    w.finish().unwrap()
}

/// Installs an image `from` wrote into `to`, as a snapshot transfer does:
/// frames opened with `from`'s codec, sealed again with `to`'s.
pub fn install_image(from: &StateMachine, image: std::fs::File, to: &StateMachine) {
    use strongbox_store::snapshot::{self, FrameReader, FrameWriter};
    let mut r = FrameReader::new(image, from.db().codec().clone()).unwrap();
    let mut w = FrameWriter::new(tempfile::tempfile().unwrap(), to.db().codec().clone()).unwrap();
    snapshot::copy(&mut r, &mut w).unwrap();
    assert!(w.ended());
    let mut r = FrameReader::new(w.finish().unwrap(), to.db().codec().clone()).unwrap();
    to.install(&mut r, |_| {}).unwrap();
}
