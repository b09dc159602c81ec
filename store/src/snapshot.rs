//! State machine images as files, so a snapshot of any size costs a bounded
//! amount of memory: one frame and one install batch.
//!
//! A file is `[file id: 16 bytes][frame]*`, a frame `[u32 BE length][sealed]`.
//! Each frame is one postcard `Frame`, sealed by this node's codec with the
//! file id and the frame's number as associated data (a frame moved to
//! another file or position fails to open). The last frame is `End`, with
//! the record count, so a truncated file is refused rather than half
//! installed. Records are plaintext inside the sealed frame; another node
//! receives frames opened (over mutual TLS) and seals them with its own keys.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::db::{decode, encode, Batch, Db, DbError};
use crate::layout::Cf;

/// A frame is closed once its records reach this many bytes.
pub const FRAME_RECORD_BYTES: usize = 1 << 20;
/// Largest frame accepted. A frame holds at least one record, and one record
/// (a secret version) may be about 1 MiB on its own.
pub const FRAME_BYTES_MAX: usize = 8 << 20;
/// Records written per install batch (bytes), before the final one.
pub const INSTALL_BATCH_BYTES: usize = 8 << 20;
const FILE_ID_BYTES: usize = 16;
/// Bytes written between two `fdatasync`s of an image: the log's own fsync
/// shares the disk, and one sync of a whole image at the end left hundreds
/// of megabytes of dirty pages in front of it.
const SYNC_BYTES: usize = 8 << 20;

/// (column family, key, plaintext value).
pub type Record = (u8, Vec<u8>, Vec<u8>);

#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Records(Vec<Record>),
    End { records: u64 },
}

fn corrupt(reason: impl Into<String>) -> DbError {
    DbError::Decode { cf: "snapshot", reason: reason.into() }
}

fn io(e: std::io::Error) -> DbError {
    DbError::Format(format!("snapshot file: {e}"))
}

/// Counts a frame's records; true for the `End` frame, whose count must
/// match what came before it.
fn count(frame: Frame, records: &mut u64) -> Result<bool, DbError> {
    match frame {
        Frame::Records(r) => {
            *records += r.len() as u64;
            Ok(false)
        }
        Frame::End { records: n } if n == *records => Ok(true),
        Frame::End { records: n } => {
            Err(corrupt(format!("the image ends after {n} records but held {records}")))
        }
    }
}

fn frame_aad_key(file_id: &[u8; FILE_ID_BYTES], frame_no: u64) -> [u8; FILE_ID_BYTES + 8] {
    let mut k = [0u8; FILE_ID_BYTES + 8];
    k[..FILE_ID_BYTES].copy_from_slice(file_id);
    k[FILE_ID_BYTES..].copy_from_slice(&frame_no.to_be_bytes());
    k
}

/// Writes an image file, frame by frame.
pub struct FrameWriter {
    out: BufWriter<File>,
    codec: Codec,
    file_id: [u8; FILE_ID_BYTES],
    frame_no: u64,
    pending: Vec<Record>,
    pending_bytes: usize,
    records: u64,
    ended: bool,
    written_since_sync: usize,
    /// Paced writers sleep this many times as long as each frame took.
    idle_per_work: u32,
    frame_started: std::time::Instant,
    /// Asked after each frame: true ends the image with an error (its
    /// reader has gone; see `cancel_when`).
    cancelled: Option<Box<dyn Fn() -> bool + Send>>,
    /// Asked after each frame: true skips the pacing sleep (see `hurry_when`).
    hurry: Option<Box<dyn Fn() -> bool + Send>>,
}

impl FrameWriter {
    pub fn new(file: File, codec: Codec) -> Result<FrameWriter, DbError> {
        let mut file_id = [0u8; FILE_ID_BYTES];
        rand::rng().fill_bytes(&mut file_id);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&file_id).map_err(io)?;
        Ok(FrameWriter {
            out,
            codec,
            file_id,
            frame_no: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            records: 0,
            ended: false,
            written_since_sync: 0,
            idle_per_work: 0,
            frame_started: std::time::Instant::now(),
            cancelled: None,
            hurry: None,
        })
    }

    /// After each frame, sleeps `idle_per_work` times as long as making it
    /// took: a background build then takes at most 1 / (1 + idle_per_work)
    /// of a core from the nodes' foreground work, however large the state.
    pub fn paced(mut self, idle_per_work: u32) -> FrameWriter {
        self.idle_per_work = idle_per_work;
        self
    }

    /// Stops writing (an error at the next frame) once `cancelled` says so:
    /// a paced image of a large state takes minutes, and the client it is
    /// for may leave long before the end.
    pub fn cancel_when(mut self, cancelled: impl Fn() -> bool + Send + 'static) -> FrameWriter {
        self.cancelled = Some(Box::new(cancelled));
        self
    }

    /// A paced writer stops pacing while `hurry` says so: something that
    /// cannot go on until this image is done is waiting for it.
    pub fn hurry_when(mut self, hurry: impl Fn() -> bool + Send + 'static) -> FrameWriter {
        self.hurry = Some(Box::new(hurry));
        self
    }

    pub fn push(&mut self, cf: Cf, key: &[u8], value: Vec<u8>) -> Result<(), DbError> {
        assert!(!self.ended, "a record after the image's end");
        self.pending_bytes += key.len() + value.len() + 8;
        self.pending.push((cf as u8, key.to_vec(), value));
        self.records += 1;
        if self.pending_bytes >= FRAME_RECORD_BYTES {
            self.flush_records()?;
        }
        Ok(())
    }

    /// One frame as another node's [`FrameReader::next_plain`] produced it
    /// (the snapshot stream): checked by decoding, then sealed with our keys.
    pub fn push_plain(&mut self, plain: &[u8]) -> Result<(), DbError> {
        if self.ended {
            return Err(corrupt("a frame after the image's end"));
        }
        if plain.len() > FRAME_BYTES_MAX {
            return Err(corrupt(format!("a frame of {} bytes (at most {FRAME_BYTES_MAX})", plain.len())));
        }
        self.ended = count(decode::<Frame>(Cf::Snapshot, plain)?, &mut self.records)?;
        self.write_frame(plain)
    }

    /// True once the `End` frame is written.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Writes what is pending and the `End` frame (unless a streamed image
    /// brought its own), flushes and fsyncs. The file is returned at offset 0.
    pub fn finish(mut self) -> Result<File, DbError> {
        if !self.ended {
            self.flush_records()?;
            let end = encode(&Frame::End { records: self.records });
            self.write_frame(&end)?;
            self.ended = true;
        }
        let mut file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(file)
    }

    fn flush_records(&mut self) -> Result<(), DbError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let plain = encode(&Frame::Records(std::mem::take(&mut self.pending)));
        self.pending_bytes = 0;
        self.write_frame(&plain)
    }

    fn write_frame(&mut self, plain: &[u8]) -> Result<(), DbError> {
        let sealed = self.codec.seal(Cf::Snapshot, &frame_aad_key(&self.file_id, self.frame_no), plain);
        self.frame_no += 1;
        let len = u32::try_from(sealed.len()).map_err(|_| corrupt("frame too large"))?;
        self.out.write_all(&len.to_be_bytes()).map_err(io)?;
        self.out.write_all(&sealed).map_err(io)?;
        self.written_since_sync += sealed.len() + 4;
        if self.written_since_sync >= SYNC_BYTES {
            self.out.flush().map_err(io)?;
            self.out.get_ref().sync_data().map_err(io)?;
            self.written_since_sync = 0;
        }
        if self.idle_per_work > 0 && !self.hurry.as_ref().is_some_and(|h| h()) {
            std::thread::sleep(self.frame_started.elapsed() * self.idle_per_work);
        }
        self.frame_started = std::time::Instant::now();
        if self.cancelled.as_ref().is_some_and(|c| c()) {
            return Err(DbError::Format("the image's reader has gone; it was not finished".into()));
        }
        Ok(())
    }
}

/// Re-seals, under the active data key, every image file in `dir` with a
/// frame sealed by an older key, so that key can be retired (the
/// re-encryption pass calls this before retiring). A file is replaced by
/// rename: a reader holding the old one keeps reading it. Returns the number
/// of files rewritten.
pub fn reseal_files(dir: &std::path::Path, codec: &Codec) -> Result<u64, DbError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    let mut rewritten = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("snap-") && name.ends_with(".snap")) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else { continue }; // deleted meanwhile
        if !FrameReader::new(file, codec.clone())?.any_stale_frame()? {
            continue;
        }
        let tmp = dir.join(format!("{}.tmp", new_file_name()));
        let out =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).map_err(io)?;
        let mut w = FrameWriter::new(out, codec.clone())?;
        let mut r = FrameReader::new(File::open(&path).map_err(io)?, codec.clone())?;
        copy(&mut r, &mut w)?;
        w.finish()?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        rewritten += 1;
    }
    Ok(rewritten)
}

/// Reads an image file written by this node, frame by frame.
pub struct FrameReader {
    input: BufReader<File>,
    codec: Codec,
    file_id: [u8; FILE_ID_BYTES],
    frame_no: u64,
    records: u64,
    ended: bool,
}

impl FrameReader {
    pub fn new(file: File, codec: Codec) -> Result<FrameReader, DbError> {
        Self::starting_at(file, codec, 0)
    }

    /// An image that starts `offset` bytes into the file (a backup file's
    /// image follows its header).
    pub fn starting_at(mut file: File, codec: Codec, offset: u64) -> Result<FrameReader, DbError> {
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut file_id = [0u8; FILE_ID_BYTES];
        input.read_exact(&mut file_id).map_err(|e| corrupt(format!("no file id: {e}")))?;
        Ok(FrameReader { input, codec, file_id, frame_no: 0, records: 0, ended: false })
    }

    /// The next frame's plaintext (the `End` frame included); `None` after it.
    pub fn next_plain(&mut self) -> Result<Option<Vec<u8>>, DbError> {
        if self.ended {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .map_err(|e| corrupt(format!("frame {} missing (truncated image?): {e}", self.frame_no)))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > FRAME_BYTES_MAX + 64 {
            return Err(corrupt(format!("frame {} claims {len} bytes", self.frame_no)));
        }
        let mut sealed = vec![0u8; len];
        self.input
            .read_exact(&mut sealed)
            .map_err(|e| corrupt(format!("frame {} cut: {e}", self.frame_no)))?;
        let plain = self.codec.open(Cf::Snapshot, &frame_aad_key(&self.file_id, self.frame_no), &sealed)?;
        self.frame_no += 1;
        self.ended = count(decode::<Frame>(Cf::Snapshot, &plain)?, &mut self.records)?;
        Ok(Some(plain))
    }

    /// True if any frame is sealed under a data key other than the active one
    /// (reads the lengths and headers only, opening nothing).
    pub fn any_stale_frame(&mut self) -> Result<bool, DbError> {
        let mut len = [0u8; 4];
        loop {
            match self.input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(io(e)),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > FRAME_BYTES_MAX + 64 {
                return Err(corrupt(format!("a frame claims {len} bytes")));
            }
            let mut sealed = vec![0u8; len];
            self.input.read_exact(&mut sealed).map_err(io)?;
            if self.codec.stale(&sealed) {
                return Ok(true);
            }
        }
    }

    /// The next frame's records; `None` at the end.
    pub fn next_records(&mut self) -> Result<Option<Vec<Record>>, DbError> {
        while let Some(plain) = self.next_plain()? {
            if let Frame::Records(r) = decode::<Frame>(Cf::Snapshot, &plain)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// The `SmMeta` records of an image, kept aside (a handful): the Raft
/// layer's position is read from them, and an install writes them last.
#[derive(Debug, Default)]
pub struct SmMeta(Vec<(Vec<u8>, Vec<u8>)>);

impl SmMeta {
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| decode(Cf::SmMeta, v)).transpose()
    }
}

/// Writes every state machine record as of one point in time (one RocksDB
/// snapshot) and returns the image's `SmMeta` records.
pub fn export(db: &Db, w: &mut FrameWriter) -> Result<SmMeta, DbError> {
    let mut meta = SmMeta::default();
    db.for_each_consistent(&Cf::STATE_MACHINE, |cf, k, v| {
        if cf == Cf::SmMeta {
            meta.0.push((k.to_vec(), v.clone()));
        }
        w.push(cf, k, v)
    })?;
    Ok(meta)
}

/// A fresh, unique file name for an image (`snap-<random>.snap`).
pub fn new_file_name() -> String {
    format!("snap-{:016x}.snap", rand::rng().next_u64())
}

/// True for names `new_file_name` makes (what a cleanup may delete).
pub fn is_image_file_name(name: &str) -> bool {
    name.starts_with("snap-") && (name.ends_with(".snap") || name.ends_with(".tmp"))
}

/// Copies an image frame by frame (sealed again with `w`'s codec) and
/// returns its `SmMeta` records.
pub fn copy(r: &mut FrameReader, w: &mut FrameWriter) -> Result<SmMeta, DbError> {
    let mut meta = SmMeta::default();
    while let Some(plain) = r.next_plain()? {
        if let Frame::Records(records) = decode::<Frame>(Cf::Snapshot, &plain)? {
            meta.0.extend(
                records.into_iter().filter(|(cf, ..)| *cf == Cf::SmMeta as u8).map(|(_, k, v)| (k, v)),
            );
        }
        w.push_plain(&plain)?;
    }
    Ok(meta)
}

/// Reads a whole image and returns its `SmMeta` records (a check before
/// installing: the image's position must match what it claims).
///
/// Also checks, before anything is replaced, what `install` would refuse
/// half-way (with the state already emptied, and its redo marker set, a
/// node could then neither finish nor start): every record's family, the
/// older layouts' records it translates, and the image's state version.
pub fn read_meta(r: &mut FrameReader) -> Result<SmMeta, DbError> {
    let mut meta = SmMeta::default();
    while let Some(records) = r.next_records()? {
        for (cf, k, v) in records {
            let cf = image_cf(cf)?;
            if cf == Cf::SmMeta {
                meta.0.push((k, v));
                continue;
            }
            if let Some(k) = crate::requests::legacy_record(cf, &k, &v)? {
                if cf == Cf::Feed {
                    crate::feed::upgrade_legacy(&k, &v)?;
                }
            }
        }
    }
    let version: u32 = meta.get(crate::layout::sm_keys::STATE_VERSION)?.unwrap_or(1);
    if version > crate::command::STATE_VERSION_SUPPORTED {
        return Err(crate::command::set_state_version::unsupported(version));
    }
    Ok(meta)
}

/// The family an image record goes to; any other is a corrupt image.
fn image_cf(cf: u8) -> Result<Cf, DbError> {
    Cf::from_u8(cf)
        .filter(|cf| Cf::STATE_MACHINE.contains(cf) || *cf == Cf::RequestsByTime)
        .ok_or_else(|| corrupt(format!("unknown column family {cf}")))
}

/// Replaces the state machine with an image. Every state machine family is
/// emptied, records go in by batches of about `INSTALL_BATCH_BYTES`, and the
/// image's `SmMeta` (its position) goes last, in one synced batch with the
/// caller's own writes (`last`).
///
/// Not atomic by itself: a crash in the middle leaves part of the image. The
/// caller records a redo marker before (durably) and removes it in `last`;
/// a node that finds the marker at start installs the same file again.
pub fn install(db: &Db, r: &mut FrameReader, last: impl FnOnce(&mut Batch)) -> Result<(), DbError> {
    // Each family is emptied up to the last key visible, by logged writes.
    // Apply's writes are unlogged: flushed first, so that what is visible
    // is what is on disk. Otherwise a key on disk that an unlogged write
    // deleted would escape the range deletion and come back after a crash,
    // next to the image.
    db.persist_unlogged_through(0)?;
    let mut batch = db.batch();
    for cf in Cf::STATE_MACHINE {
        if let Some((last_key, _)) = db.last_raw(cf)? {
            let mut end = last_key;
            end.push(0);
            batch.delete_range(cf, &[], &end);
        }
    }
    let mut meta = Vec::new();
    let mut batch_bytes = 0usize;
    while let Some(records) = r.next_records()? {
        for (cf, k, v) in records {
            let cf = image_cf(cf)?;
            if cf == Cf::SmMeta {
                meta.push((k, v));
                continue;
            }
            // An image from a node of an older layout (request ids, feed).
            let Some(k) = crate::requests::legacy_record(cf, &k, &v)? else { continue };
            let (k, v) = match cf {
                Cf::Feed => crate::feed::upgrade_legacy(&k, &v)?.map_or((k, v), |(k, v)| (k.to_vec(), v)),
                _ => (k, v),
            };
            batch_bytes += k.len() + v.len();
            batch.put_raw(cf, &k, &v);
            if batch_bytes >= INSTALL_BATCH_BYTES {
                db.write(std::mem::replace(&mut batch, db.batch()), false)?;
                batch_bytes = 0;
            }
        }
    }
    for (k, v) in &meta {
        batch.put_raw(Cf::SmMeta, k, v);
    }
    last(&mut batch);
    db.write(batch, true)
}
