//! Backup files: a whole state machine image taken from a running node
//! (`strongbox snapshot save`), sealed under a key of the operator's own,
//! to be restored into the data directories of a new cluster.
//!
//! A file is `MAGIC`, a `u32 BE` header length, a JSON `Header`, then an
//! image exactly as `snapshot` writes one (file id, sealed frames, an end
//! frame with the record count). The frames are sealed with a data key of a
//! keyring made for this backup alone; the keyring (its data key wrapped by
//! the backup key) travels in the header, so the backup key opens the file
//! and nothing else is needed. A wrong key, a flipped byte or a truncated
//! file is refused before anything is restored.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::db::DbError;
use crate::keyring::{Keyring, MasterKey};
use crate::snapshot::{FrameReader, FrameWriter};

const MAGIC: &[u8; 16] = b"strongbox-backup";
const FORMAT: u32 = 1;
/// The header holds a keyring and a few numbers.
const HEADER_BYTES_MAX: usize = 64 << 10;

/// What a backup says about itself, readable with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The backup's own keyring file (its data key wrapped by the backup key).
    pub keyring: String,
    /// The Raft position the image holds (the applied log id of the node
    /// that took it).
    pub applied_index: u64,
    pub applied_term: u64,
    /// The store's revision in the image.
    pub revision: u64,
    /// Node id that served the image and when the client saved it (its clock).
    pub source_node: u64,
    pub saved_ms: u64,
}

fn err(reason: impl Into<String>) -> DbError {
    DbError::Format(format!("backup file: {}", reason.into()))
}

/// The backup's keyring, in a private directory of its own (a keyring is a
/// file; it holds the data key wrapped, never in the clear), removed when
/// dropped. In the system's temp directory: a backup may sit on a
/// read-only mount.
fn keyring_dir() -> Result<tempfile::TempDir, DbError> {
    tempfile::Builder::new()
        .prefix("strongbox-backup-keys-")
        .tempdir()
        .map_err(|e| err(format!("a private temp directory for the backup's keyring: {e}")))
}

/// Writes a backup file: `create`, one `push_plain` per frame received, then
/// `finish` (fsync, then linked under its name, never over an existing
/// file). Dropped unfinished, it removes what it wrote.
pub struct BackupWriter {
    frames: Option<FrameWriter>,
    tmp: PathBuf,
    path: PathBuf,
    _keys: tempfile::TempDir,
}

impl BackupWriter {
    /// `header.keyring` and `header.format` are filled in here.
    pub fn create(path: &Path, key: MasterKey, mut header: Header) -> Result<BackupWriter, DbError> {
        if path.exists() {
            return Err(err(format!("{} exists; choose a new name", path.display())));
        }
        let keys = keyring_dir()?;
        let keyring = Keyring::create(keys.path(), key).map_err(|e| err(e.to_string()))?;
        header.format = FORMAT;
        header.keyring =
            std::fs::read_to_string(Keyring::path_in(keys.path())).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_file_name(format!(
            ".{}.partial",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| {
                    err(format!(
                        "{} (a save in progress, or one that was killed: remove it): {e}",
                        tmp.display()
                    ))
                })?
        };
        let json = serde_json::to_vec(&header).expect("header serialises");
        file.write_all(MAGIC).map_err(|e| err(e.to_string()))?;
        file.write_all(&(json.len() as u32).to_be_bytes()).map_err(|e| err(e.to_string()))?;
        file.write_all(&json).map_err(|e| err(e.to_string()))?;
        let mut w = BackupWriter { frames: None, tmp, path: path.to_path_buf(), _keys: keys };
        w.frames = Some(FrameWriter::new(file, Codec::encrypted(Arc::new(keyring)))?);
        Ok(w)
    }

    /// One frame of the image as the serving node sent it (plaintext): checked
    /// (it decodes, the record count adds up) and sealed.
    pub fn push_plain(&mut self, frame: &[u8]) -> Result<(), DbError> {
        self.frames.as_mut().expect("open until finished").push_plain(frame)
    }

    /// Refuses an image that did not end with its end frame.
    pub fn finish(mut self) -> Result<(), DbError> {
        let frames = self.frames.take().expect("open until finished");
        if !frames.ended() {
            return Err(err("the image ended before its end frame; nothing was saved"));
        }
        frames.finish()?;
        // A link fails where a file of that name appeared meanwhile; a
        // rename would replace it.
        std::fs::hard_link(&self.tmp, &self.path)
            .map_err(|e| err(format!("{}: {e}; nothing was saved", self.path.display())))?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for BackupWriter {
    /// The partial file goes, finished or not (a finished one is linked
    /// under its name by then).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// An open backup: its header and a reader of its image's frames. The
/// reader checks every frame as it goes; read it to the end (`None`) before
/// trusting anything it gave.
pub struct Backup {
    pub header: Header,
    pub frames: FrameReader,
    _keys: tempfile::TempDir,
}

/// Opens a backup file with its key.
pub fn open(path: &Path, key: MasterKey) -> Result<Backup, DbError> {
    let mut file = File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut magic = [0u8; 16];
    file.read_exact(&mut magic).map_err(|_| err("too short to be a backup"))?;
    if &magic != MAGIC {
        return Err(err(format!("{} is not a strongbox backup", path.display())));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len).map_err(|_| err("truncated header"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > HEADER_BYTES_MAX {
        return Err(err(format!("a header of {len} bytes")));
    }
    let mut json = vec![0u8; len];
    file.read_exact(&mut json).map_err(|_| err("truncated header"))?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| err(format!("unreadable header: {e}")))?;
    if header.format != FORMAT {
        return Err(err(format!("format {} (this build reads {FORMAT})", header.format)));
    }
    let keys = keyring_dir()?;
    std::fs::write(Keyring::path_in(keys.path()), &header.keyring).map_err(|e| err(e.to_string()))?;
    let keyring = Keyring::open(keys.path(), key).map_err(|e| match e {
        crate::keyring::KeyringError::WrongMasterKey { .. } => err("the key does not open this backup"),
        e => err(e.to_string()),
    })?;
    let offset = file.stream_position().map_err(|e| err(e.to_string()))?;
    let frames = FrameReader::starting_at(file, Codec::encrypted(Arc::new(keyring)), offset)?;
    Ok(Backup { header, frames, _keys: keys })
}

impl Backup {
    /// Reads the whole image, checking every frame, and returns its record
    /// count (`strongbox snapshot status`, and a check before a restore).
    pub fn verify(mut self) -> Result<u64, DbError> {
        let mut records = 0u64;
        while let Some(r) = self.frames.next_records()? {
            records += r.len() as u64;
        }
        Ok(records)
    }
}
