//! Encryption at rest: the keyring, rotation and the re-encryption pass, and
//! what must never happen (a wrong key changing anything, an old key opening
//! data after it is retired).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strongbox_store::codec::Codec;
use strongbox_store::keyring::{Keyring, MasterKey};
use strongbox_store::reencrypt::{Progress, Reencryptor};
use strongbox_store::snapshot::{self, FrameReader, FrameWriter};
use strongbox_store::{Cf, Db};

/// Every file under `dir` and its bytes.
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot_files(&p));
        } else {
            out.insert(p.display().to_string(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn open_db(dir: &Path, mk: MasterKey) -> (Db, Arc<Keyring>) {
    let k = Arc::new(if Keyring::exists(dir) {
        Keyring::open(dir, mk).unwrap()
    } else {
        Keyring::create(dir, mk).unwrap()
    });
    (Db::open(&dir.join("db"), Codec::encrypted(k.clone())).unwrap(), k)
}

#[test]
fn a_wrong_master_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mk, hex) = MasterKey::generate();
    {
        let (db, _) = open_db(dir.path(), mk);
        let mut b = db.batch();
        b.put_raw(Cf::Secrets, b"team/db", b"marker-value");
        db.write(b, true).unwrap();
    }
    let before = snapshot_files(dir.path());
    let (wrong, _) = MasterKey::generate();
    let err = Keyring::open(dir.path(), wrong).err().expect("a wrong master key must be refused");
    assert!(err.to_string().contains("wrong key"), "{err}");
    assert_eq!(before, snapshot_files(dir.path()), "a refused start must not touch a byte");
    // The right key still opens everything.
    let (db, _) = open_db(dir.path(), MasterKey::from_hex(&hex).unwrap());
    assert_eq!(db.get_raw(Cf::Secrets, b"team/db").unwrap().unwrap(), b"marker-value");
}

#[test]
fn rotation_reencrypts_everything_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mk, hex) = MasterKey::generate();
    let (db, keyring) = open_db(dir.path(), mk);
    let mut b = db.batch();
    for i in 0..2000u32 {
        let cf = [Cf::Secrets, Cf::Users, Cf::Log][i as usize % 3];
        b.put_raw(cf, &i.to_be_bytes(), format!("value-{i}").as_bytes());
    }
    db.write(b, true).unwrap();
    // A snapshot image file, outside RocksDB, sealed under the old key too.
    std::fs::create_dir_all(db.snapshot_dir()).unwrap();
    let image_path = db.snapshot_dir().join(snapshot::new_file_name());
    let mut w = FrameWriter::new(std::fs::File::create(&image_path).unwrap(), db.codec().clone()).unwrap();
    w.push(Cf::Secrets, b"img", b"image-value".to_vec()).unwrap();
    w.finish().unwrap();
    let old = db.codec().seal(Cf::Secrets, b"probe", b"old");
    assert_eq!(keyring.rotate().unwrap(), 2);
    // New writes use the new key at once.
    assert!(!db.codec().stale(&db.codec().seal(Cf::Secrets, b"k", b"v")));
    assert!(db.codec().stale(&old));

    let progress = Progress::default();
    let mut pass = Reencryptor::new();
    let mut steps = 0;
    while !pass.step(&db, 100, &progress).unwrap() {
        steps += 1;
        assert!(steps < 1000, "the pass must end");
    }
    // The 2,000 values, the layout version record written at open and the image file.
    assert_eq!(progress.rewritten.load(std::sync::atomic::Ordering::Relaxed), 2002);
    let keys = keyring.keys();
    assert!(
        keys.iter().any(|k| k.id == 1 && k.retired) && keys.iter().any(|k| k.id == 2 && k.active),
        "{keys:?}"
    );
    assert!(db.codec().open(Cf::Secrets, b"probe", &old).is_err(), "a retired key opens nothing");
    let mut image = FrameReader::new(std::fs::File::open(&image_path).unwrap(), db.codec().clone()).unwrap();
    let records = image.next_records().expect("the image was re-sealed before the retirement").unwrap();
    assert_eq!(records[0].2, b"image-value");
    drop(db);
    drop(keyring);

    // Restart: every value readable with the keyring as it is now.
    let (db, keyring) = open_db(dir.path(), MasterKey::from_hex(&hex).unwrap());
    for i in 0..2000u32 {
        let cf = [Cf::Secrets, Cf::Users, Cf::Log][i as usize % 3];
        assert_eq!(db.get_raw(cf, &i.to_be_bytes()).unwrap().unwrap(), format!("value-{i}").as_bytes());
    }
    assert_eq!(keyring.active(), 2);
}

/// An image being built, sent or received is out of the re-seal's reach
/// (an open or unnamed file): the pass must not retire the key its frames
/// are sealed with until that work ends.
#[test]
fn no_key_is_retired_under_an_image_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (mk, _) = MasterKey::generate();
    let (db, keyring) = open_db(dir.path(), mk);
    let receiving = db.snapshot_gate().enter();
    let path = dir.path().join("receiving");
    let mut w = FrameWriter::new(std::fs::File::create(&path).unwrap(), db.codec().clone()).unwrap();
    // Past a frame's size: this frame is sealed now, under key 1.
    w.push(Cf::Secrets, b"big", vec![7; snapshot::FRAME_RECORD_BYTES]).unwrap();
    assert_eq!(keyring.rotate().unwrap(), 2);
    w.push(Cf::Secrets, b"small", b"after the rotation".to_vec()).unwrap();
    w.finish().unwrap();

    let pass = {
        let db = db.clone();
        std::thread::spawn(move || {
            let (progress, mut pass) = (Progress::default(), Reencryptor::new());
            while !pass.step(&db, 100, &progress).unwrap() {}
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!pass.is_finished(), "the pass waits for the image in progress");
    assert!(keyring.keys().iter().any(|k| k.id == 1 && !k.retired), "{:?}", keyring.keys());
    let mut image = FrameReader::new(std::fs::File::open(&path).unwrap(), db.codec().clone()).unwrap();
    let mut records = 0;
    while let Some(r) = image.next_records().expect("every frame opens while the work lasts") {
        records += r.len();
    }
    assert_eq!(records, 2);

    drop(receiving);
    pass.join().unwrap();
    assert!(keyring.keys().iter().any(|k| k.id == 1 && k.retired), "retired once the work is done");
}

#[test]
fn master_key_rotation_rewraps_without_rewriting_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mk, old_hex) = MasterKey::generate();
    let (db, keyring) = open_db(dir.path(), mk);
    let mut b = db.batch();
    b.put_raw(Cf::Secrets, b"a", b"kept");
    db.write(b, true).unwrap();
    let (new, new_hex) = MasterKey::generate();
    keyring.rewrap(new).unwrap();
    drop(db);
    drop(keyring);
    assert!(
        Keyring::open(dir.path(), MasterKey::from_hex(&old_hex).unwrap()).is_err(),
        "the old master key is out"
    );
    let (db, _) = open_db(dir.path(), MasterKey::from_hex(&new_hex).unwrap());
    assert_eq!(db.get_raw(Cf::Secrets, b"a").unwrap().unwrap(), b"kept");
}

#[test]
fn master_key_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_, hex) = MasterKey::generate();
    let p = dir.path().join("master.key");
    std::fs::write(&p, hex.as_bytes()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(MasterKey::load_file(&p).err().unwrap().to_string().contains("chmod 600"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(MasterKey::load_file(&p).is_ok());
    assert!(MasterKey::from_hex("not hex").is_err());
}

/// RocksDB's block checksum catches this first and names the file; the
/// GCM tag (codec tests) catches a tamper that also fixes the checksums.
#[test]
fn a_flipped_byte_in_a_data_file_is_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mk, hex) = MasterKey::generate();
    {
        let (db, _) = open_db(dir.path(), mk);
        let mut b = db.batch();
        for i in 0..64u32 {
            b.put_raw(Cf::Secrets, &i.to_be_bytes(), &[b'v'; 1024]);
        }
        db.write(b, true).unwrap();
        db.persist_unlogged_through(0).unwrap();
    }
    // Flip one byte in the middle of the secrets' SST file (its data
    // blocks): the largest one, since a flush writes every family's file.
    let largest = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("the flush wrote an SST file");
    let mut bytes = std::fs::read(&largest).unwrap();
    assert!(bytes.len() > 64 * 1024, "the secrets' file holds their 64 KiB");
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&largest, bytes).unwrap();
    let (db, _) = open_db(dir.path(), MasterKey::from_hex(&hex).unwrap());
    let mut errors = 0;
    for i in 0..64u32 {
        match db.get_raw(Cf::Secrets, &i.to_be_bytes()) {
            Ok(Some(v)) => assert_eq!(v, vec![b'v'; 1024], "a corrupted value was served"),
            Ok(None) => panic!("value {i} silently vanished"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("secrets") || msg.contains(".sst") || msg.contains("orrupt"), "{msg}");
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "the flipped byte went unnoticed");
}

/// 2,000 values in the family the pass walks first.
fn filled(dir: &Path) -> (Db, Arc<Keyring>) {
    let (db, keyring) = open_db(dir, MasterKey::generate().0);
    let mut b = db.batch();
    for i in 0..2000u32 {
        b.put_raw(Cf::Log, &i.to_be_bytes(), format!("value-{i}").as_bytes());
    }
    db.write(b, true).unwrap();
    (db, keyring)
}

fn finish(pass: &mut Reencryptor, db: &Db) {
    let progress = Progress::default();
    let mut steps = 0;
    while !pass.step(db, 100, &progress).unwrap() {
        steps += 1;
        assert!(steps < 1000, "the pass must end");
    }
}

/// A second rotation while a pass runs: values written under the key the
/// pass began with, in the stretch it had walked already, are not re-sealed
/// by it, so that key must outlive the pass (the next pass retires it).
#[test]
fn a_key_rotated_in_mid_pass_outlives_that_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (db, keyring) = filled(dir.path());
    assert_eq!(keyring.rotate().unwrap(), 2);
    let mut pass = Reencryptor::new();
    assert!(!pass.step(&db, 100, &Progress::default()).unwrap());
    // Behind the pass, under key 2.
    let mut b = db.batch();
    b.put_raw(Cf::Log, &0u32.to_be_bytes(), b"written-mid-pass");
    db.write(b, true).unwrap();
    assert_eq!(keyring.rotate().unwrap(), 3);
    finish(&mut pass, &db);
    assert_eq!(db.get_raw(Cf::Log, &0u32.to_be_bytes()).unwrap().unwrap(), b"written-mid-pass");
    let live: Vec<u32> = keyring.keys().iter().filter(|k| !k.retired).map(|k| k.id).collect();
    assert_eq!(live, vec![2, 3]);
    finish(&mut Reencryptor::new(), &db);
    let live: Vec<u32> = keyring.keys().iter().filter(|k| !k.retired).map(|k| k.id).collect();
    assert_eq!(live, vec![3]);
    assert_eq!(db.get_raw(Cf::Log, &0u32.to_be_bytes()).unwrap().unwrap(), b"written-mid-pass");
    assert_eq!(db.get_raw(Cf::Log, &1999u32.to_be_bytes()).unwrap().unwrap(), b"value-1999");
}

/// A batch sealed under the old key before a rotation and written after
/// the pass began: the pass waits for it, so it cannot land, old-sealed,
/// behind the pass and lose its key.
#[test]
fn a_pass_waits_for_a_batch_sealed_before_the_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (db, keyring) = filled(dir.path());
    let mut b = db.batch();
    b.put_raw(Cf::Log, &0u32.to_be_bytes(), b"sealed-under-key-1");
    assert_eq!(keyring.rotate().unwrap(), 2);
    let db2 = db.clone();
    let pass = std::thread::spawn(move || finish(&mut Reencryptor::new(), &db2));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!pass.is_finished(), "the pass ran past a batch still open");
    db.write(b, true).unwrap();
    pass.join().unwrap();
    assert_eq!(db.get_raw(Cf::Log, &0u32.to_be_bytes()).unwrap().unwrap(), b"sealed-under-key-1");
    assert!(keyring.keys().iter().any(|k| k.id == 1 && k.retired));
}
