//! Snapshot images: written and installed a frame and a batch at a time,
//! carried between nodes with different keys, refused when incomplete.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use common::*;
use strongbox_store::snapshot::{self, FrameReader, FrameWriter, FRAME_RECORD_BYTES, INSTALL_BATCH_BYTES};

/// Secrets of `value_bytes` each, enough to fill `total_bytes`.
fn fill(sm: &strongbox_store::StateMachine, total_bytes: usize, value_bytes: usize) -> usize {
    let n = total_bytes / value_bytes + 1;
    let value = "v".repeat(value_bytes);
    for i in 0..n {
        let r = apply_one(sm, &put(&format!("fill-{i}"), 1 + i as u64, &format!("big/s{i}"), &value, None));
        assert!(r.result.is_ok(), "{r:?}");
    }
    n
}

#[test]
fn a_state_larger_than_a_frame_and_a_batch_moves_between_nodes_with_different_keys() {
    let (_da, a) = open_encrypted();
    // Several install batches' worth, hence many frames.
    let n = fill(&a, INSTALL_BATCH_BYTES * 2, 96 * 1024);
    assert!(n * 96 * 1024 > 16 * FRAME_RECORD_BYTES);
    let (_db, b) = open_encrypted();
    apply_one(&b, &put("only-b", 1, "only-in-b", "gone", None));
    install_image(&a, image_of(&a), &b);
    for i in [0, n / 2, n - 1] {
        let s = b.get_secret(&format!("big/s{i}"), None).unwrap().expect("installed");
        assert_eq!(s.value.len(), 96 * 1024);
    }
    assert!(b.get_secret("only-in-b", None).unwrap().is_none(), "the old state is replaced");
    assert_eq!(b.revision().unwrap(), a.revision().unwrap());
    assert!(!b.installing());
}

#[test]
fn an_image_cannot_be_opened_with_another_nodes_keys() {
    let (_da, a) = open_encrypted();
    let (_db, b) = open_encrypted();
    let mut r = FrameReader::new(image_of(&a), b.db().codec().clone()).unwrap();
    assert!(r.next_plain().is_err(), "frames are sealed with the writer's keys");
}

/// Reads the image's bytes, lets `cut` change them, and tries to copy the
/// result as a receiving node would before installing anything.
fn copy_altered(cut: impl FnOnce(&mut Vec<u8>)) -> Result<bool, strongbox_store::DbError> {
    let (_da, a) = open();
    fill(&a, 3 * FRAME_RECORD_BYTES, 64 * 1024);
    let mut image = image_of(&a);
    let mut bytes = Vec::new();
    image.seek(SeekFrom::Start(0)).unwrap();
    image.read_to_end(&mut bytes).unwrap();
    cut(&mut bytes);
    let mut altered = tempfile::tempfile().unwrap();
    altered.write_all(&bytes).unwrap();
    let mut r = FrameReader::new(altered, a.db().codec().clone())?;
    let mut w = FrameWriter::new(tempfile::tempfile().unwrap(), a.db().codec().clone())?;
    snapshot::copy(&mut r, &mut w)?;
    Ok(w.ended())
}

#[test]
fn a_truncated_image_is_refused() {
    assert_eq!(copy_altered(|_| {}).unwrap(), true, "the intact image copies whole");
    assert!(copy_altered(|b| b.truncate(b.len() - 10)).is_err(), "cut inside the last frame");
    // Cut exactly before the end frame: every frame left is whole.
    let r = copy_altered(without_end_frame);
    assert!(r.is_err() || !r.unwrap(), "an image without its end frame is not complete");
}

/// Drops the last frame (`End`) of an image's bytes.
fn without_end_frame(b: &mut Vec<u8>) {
    let mut at = 16;
    let mut last = at;
    while at < b.len() {
        last = at;
        at += 4 + u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    b.truncate(last);
}

#[test]
fn a_failed_install_leaves_the_state_machine_refusing_reads() {
    let (_da, a) = open();
    fill(&a, 3 * FRAME_RECORD_BYTES, 64 * 1024);
    let mut image = image_of(&a);
    let mut bytes = Vec::new();
    image.read_to_end(&mut bytes).unwrap();
    without_end_frame(&mut bytes);
    let mut cut = tempfile::tempfile().unwrap();
    cut.write_all(&bytes).unwrap();
    let (_db, b) = open();
    assert!(!b.installing());
    let mut r = FrameReader::new(cut, b.db().codec().clone()).unwrap();
    assert!(b.install(&mut r, |_| {}).is_err(), "an image without its end is not installed");
    assert!(b.installing(), "the state is partial: reads must stay refused");
}

/// A reader compares the epoch before and after its reads: every install
/// moves it, and it is odd exactly while one runs.
#[test]
fn every_install_moves_the_install_epoch() {
    let (_da, a) = open();
    fill(&a, 2 * FRAME_RECORD_BYTES, 64 * 1024);
    let (_db, b) = open();
    let before = b.install_epoch();
    assert_eq!(before % 2, 0);
    let mut during = None;
    let mut image = FrameReader::new(image_of(&a), b.db().codec().clone()).unwrap();
    b.install(&mut image, |_| during = Some((b.install_epoch(), b.installing()))).unwrap();
    assert_eq!(during, Some((before + 1, true)), "odd while the install runs");
    assert_eq!(b.install_epoch(), before + 2);
    assert!(!b.installing());
}

/// An image from a node of layout 3 (feed records under bare revisions,
/// events rendered) installs into a feed that reads the same.
#[test]
fn an_older_layouts_feed_is_translated_as_it_is_installed() {
    use strongbox_store::layout::Cf;
    let (_da, a) = open_encrypted();
    fill(&a, 4 * 1024, 1024);
    let before = a.feed(1, 100).unwrap();
    assert!(before.len() > 2);
    // Rewrite a's feed as a layout-3 node stored it.
    let mut b = a.db().batch();
    for r in &before {
        b.delete(Cf::Feed, &strongbox_store::feed::key(r.revision));
        b.put(Cf::Feed, &r.revision.to_be_bytes(), r);
    }
    a.db().write(b, true).unwrap();
    let (_db, to) = open_encrypted();
    install_image(&a, image_of(&a), &to);
    assert_eq!(to.feed(1, 100).unwrap(), before);
}

/// Must not happen: an install that leaves behind a record an unlogged
/// write had deleted. The child process writes a record and flushes it,
/// deletes it unlogged (as apply does), installs an image without it, and
/// aborts (no flush at close); the record must not be back after a restart.
#[test]
fn a_record_deleted_before_an_install_stays_deleted_after_a_crash() {
    const CHILD_DIR_ENV: &str = "STRONGBOX_INSTALL_CRASH_DIR";
    const GONE: [u8; 32] = [0xff; 32];
    let open_b = |dir: &std::path::Path| {
        strongbox_store::Db::open(dir, strongbox_store::codec::Codec::plaintext()).unwrap()
    };
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        let b = strongbox_store::StateMachine::new(open_b(std::path::Path::new(&dir)));
        let mut batch = b.db().batch();
        batch.put_raw(strongbox_store::Cf::Secrets, &GONE, b"deleted before the install");
        b.db().write(batch, true).unwrap();
        b.db().persist_unlogged_through(0).unwrap();
        let mut batch = b.db().batch();
        batch.delete(strongbox_store::Cf::Secrets, &GONE);
        b.db().write_unlogged(batch).unwrap();
        let (_a_dir, a) = open();
        fill(&a, 4 * 1024, 512);
        install_image(&a, image_of(&a), &b);
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["a_record_deleted_before_an_install_stays_deleted_after_a_crash", "--exact", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must crash, not exit: {status:?}");
    let b = strongbox_store::StateMachine::new(open_b(dir.path()));
    assert_eq!(
        b.db().get_raw(strongbox_store::Cf::Secrets, &GONE).unwrap(),
        None,
        "a deleted record came back"
    );
    assert!(b.get_secret("big/s0", None).unwrap().is_some(), "the image is installed");
}

/// An image whose reader has gone stops at the next frame (an error), not
/// at the end of the state: a paced export of a large state takes minutes.
#[test]
fn an_image_cancelled_stops_at_the_next_frame() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use strongbox_store::Cf;
    let dir = tempfile::tempdir().unwrap();
    let gone = Arc::new(AtomicBool::new(false));
    let flag = gone.clone();
    let file = std::fs::File::create(dir.path().join("image")).unwrap();
    let mut w = FrameWriter::new(file, strongbox_store::codec::Codec::plaintext())
        .unwrap()
        .cancel_when(move || flag.load(Ordering::Relaxed));
    let value = vec![7u8; 4096];
    // A frame goes out while the reader is there.
    for i in 0..(FRAME_RECORD_BYTES / 4096 + 1) as u32 {
        w.push(Cf::Secrets, &i.to_be_bytes(), value.clone()).unwrap();
    }
    gone.store(true, Ordering::Relaxed);
    let mut pushed = 0;
    let err = loop {
        match w.push(Cf::Secrets, &(1_000_000 + pushed as u32).to_be_bytes(), value.clone()) {
            Ok(()) => pushed += 1,
            Err(e) => break e,
        }
        assert!(pushed <= FRAME_RECORD_BYTES / 4096 + 1, "still writing a frame after the reader left");
    };
    assert!(err.to_string().contains("reader has gone"), "{err}");
}
