//! The index's write-ahead log: what makes an index entry durable cheaply.
//!
//! sled makes writes durable only with a full `flush`, which costs several
//! milliseconds. Instead, every put and remove applied to sled is also
//! appended, in the same order and under the same writer lock, to this log;
//! acknowledging a store needs only an `fdatasync` of the log (shared by
//! concurrent writers). A checkpoint (sled flush, then truncating the log,
//! both under the writer lock) runs every couple of seconds and at clean
//! shutdown. On open, the log is replayed into sled; replaying a record
//! twice is harmless because a put removes the instance first.
//!
//! Format version 1: a 16-byte file header, `SENIXLOG`, the version (u32
//! LE), 4 zero bytes; then records framed as `u32 length, u32 CRC-32 of the
//! payload, payload` (little endian), the payload being the record version
//! byte and the bincode of [`WalRecord`]. Version 0 (before versioning) has
//! no file header and bare bincode payloads; it is still read, and the next
//! checkpoint rewrites the file as version 1. Replay stops at the first
//! short or corrupt record: that is where a crash cut the log, and no
//! record after it was ever acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use pacs_core::limits::MAX_INDEX_ENTRY_BYTES;
use pacs_core::records::InstanceAttributes;
use pacs_core::Uid;
use serde::{Deserialize, Serialize};

use crate::format::{encode_versioned, NewerFormat};

/// The log's format version (file header).
pub const WAL_FORMAT: u32 = 1;
/// Version byte in front of each record's bincode.
pub const WAL_RECORD: u8 = 1;
const MAGIC: &[u8; 8] = b"SENIXLOG";
const HEADER_LEN: u64 = 16;

fn file_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&WAL_FORMAT.to_le_bytes());
    h
}

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Newer(#[from] NewerFormat),
    #[error("index entry of {size} bytes exceeds the {limit}-byte record limit")]
    TooLarge { size: u64, limit: u64 },
}

/// One logged index mutation.
#[derive(Debug, Serialize, Deserialize)]
pub enum WalRecord {
    Put(Box<InstanceAttributes>),
    Remove {
        sop: Uid,
        journal_id: u64,
    },
    /// A put with its landing mark (`Index::put_landing`). Last, so logs
    /// written before it existed still decode.
    PutLanding(Box<InstanceAttributes>),
    /// Every row of one study replaced (`Index::replace_study`, after a
    /// patient change). Last, for the same reason.
    ReplaceStudy(Vec<InstanceAttributes>),
}

/// An open log file.
pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Written in format 0 (no header): rewritten at the next truncation.
    legacy: bool,
    /// Bytes appended since this log was opened (truncations do not reset
    /// it): how much the index has been written to since its last open.
    appended: u64,
}

/// A record encoded for [`Wal::append`]: framed, checked against the size
/// limit before anything is applied.
pub struct Frame(Vec<u8>);

/// Largest record accepted, on write and on replay (a put carries the
/// instance's JSON).
const MAX_RECORD: u64 = MAX_INDEX_ENTRY_BYTES;

impl Wal {
    /// Opens (creating) the log at `path` and returns it with the records
    /// it holds. A log of a newer format is refused before anything is
    /// written to it.
    pub fn open(path: &Path) -> Result<(Wal, Vec<WalRecord>), WalError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (version, mut pos) = match bytes.get(..HEADER_LEN as usize) {
            Some(h) if &h[..8] == MAGIC => {
                let v = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
                (v, HEADER_LEN as usize)
            }
            // Version 0 starts with a record length, which cannot spell
            // the magic (it would exceed the record limit).
            _ => (0, 0),
        };
        if version > WAL_FORMAT {
            return Err(NewerFormat {
                what: format!("the index log {}", path.display()),
                found: version,
                supported: WAL_FORMAT,
            }
            .into());
        }
        let mut records = Vec::new();
        while let Some(head) = bytes.get(pos..pos + 8) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if u64::from(len) > MAX_RECORD {
                break;
            }
            let Some(payload) = bytes.get(pos + 8..pos + 8 + len as usize) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let body = match (version, payload.split_first()) {
                (0, _) => payload,
                (_, Some((&WAL_RECORD, body))) => body,
                _ => break,
            };
            match bincode::deserialize::<WalRecord>(body) {
                Ok(r) => records.push(r),
                Err(_) => break,
            }
            pos += 8 + len as usize;
        }
        if pos != bytes.len() {
            tracing::warn!(
                valid = pos,
                total = bytes.len(),
                "index log ends in a partial record (a crash cut it); it is dropped"
            );
        }
        let mut wal = Wal {
            path: path.to_owned(),
            file,
            len: bytes.len() as u64,
            legacy: version == 0,
            appended: 0,
        };
        if bytes.is_empty() {
            wal.truncate()?;
        } else if version == 0 {
            tracing::info!(
                log = %path.display(),
                records = records.len(),
                "index log in format 0 (unversioned); it is rewritten in format {WAL_FORMAT} after replay"
            );
        }
        Ok((wal, records))
    }

    /// Encodes and frames a record, refusing one over the record limit
    /// (replay would not read it back).
    pub fn encode(record: &WalRecord) -> Result<Frame, WalError> {
        let payload = encode_versioned(WAL_RECORD, record)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if payload.len() as u64 > MAX_RECORD {
            return Err(WalError::TooLarge {
                size: payload.len() as u64,
                limit: MAX_RECORD,
            });
        }
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        Ok(Frame(frame))
    }

    /// Appends a record (not yet durable: see [`Wal::sync_handle`]).
    pub fn append(&mut self, frame: &Frame) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(&frame.0) {
            // A partial frame (the disk filled up) would end replay there
            // and hide every later record: cut it off, so the next append
            // starts where this one did.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += frame.0.len() as u64;
        self.appended += frame.0.len() as u64;
        Ok(())
    }

    /// Bytes appended since the log was opened.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// A handle to fsync without holding the writer lock.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Empties the log durably (after a checkpoint), leaving its header.
    pub fn truncate(&mut self) -> std::io::Result<()> {
        if self.legacy || self.len < HEADER_LEN {
            self.file.set_len(0)?;
            self.file.write_all(&file_header())?;
            self.legacy = false;
        } else {
            self.file.set_len(HEADER_LEN)?;
        }
        self.file.sync_all()?;
        self.len = HEADER_LEN;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        !self.legacy && self.len == HEADER_LEN
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn remove(i: u64) -> WalRecord {
        WalRecord::Remove {
            sop: Uid::parse(&format!("1.2.{i}")).unwrap(),
            journal_id: i,
        }
    }

    /// A log written before versioning (no header, bare bincode) is
    /// replayed, and rewritten with a header at the next truncation.
    #[test]
    fn a_format_0_log_is_replayed_then_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.wal");
        let mut v0 = Vec::new();
        for i in 0..2u64 {
            let payload = bincode::serialize(&remove(i)).unwrap();
            v0.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v0.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            v0.extend_from_slice(&payload);
        }
        std::fs::write(&p, &v0).unwrap();
        let (mut wal, recs) = Wal::open(&p).unwrap();
        assert!(matches!(
            recs.as_slice(),
            [
                WalRecord::Remove { journal_id: 0, .. },
                WalRecord::Remove { journal_id: 1, .. }
            ]
        ));
        assert!(!wal.is_empty());
        wal.truncate().unwrap();
        wal.append(&Wal::encode(&remove(5)).unwrap()).unwrap();
        drop(wal);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes[8..12], WAL_FORMAT.to_le_bytes());
        assert_eq!(bytes[HEADER_LEN as usize + 8], WAL_RECORD);
        let recs = Wal::open(&p).unwrap().1;
        assert!(matches!(
            recs.as_slice(),
            [WalRecord::Remove { journal_id: 5, .. }]
        ));
    }

    /// A log of a newer format is refused, naming both versions, and left
    /// as it was.
    #[test]
    fn a_newer_log_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.wal");
        let (mut wal, _) = Wal::open(&p).unwrap();
        wal.append(&Wal::encode(&remove(1)).unwrap()).unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[8..12].copy_from_slice(&(WAL_FORMAT + 1).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let err = Wal::open(&p).err().unwrap().to_string();
        assert!(
            err.contains(&format!("format version {}", WAL_FORMAT + 1))
                && err.contains(&format!("reads format version {WAL_FORMAT} at most"))
                && err.contains("upgrade"),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
    }

    #[test]
    fn replay_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.wal");
        let (mut wal, recs) = Wal::open(&p).unwrap();
        assert!(recs.is_empty());
        for i in 0..3u64 {
            wal.append(&Wal::encode(&remove(i)).unwrap()).unwrap();
        }
        drop(wal);
        let full = std::fs::read(&p).unwrap();
        // Cut the last record in half, then corrupt a byte of the second.
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        assert_eq!(Wal::open(&p).unwrap().1.len(), 2);
        let mut bad = full.clone();
        let second = HEADER_LEN as usize + (full.len() - HEADER_LEN as usize) / 3 + 10;
        bad[second] ^= 0xFF;
        std::fs::write(&p, &bad).unwrap();
        assert_eq!(Wal::open(&p).unwrap().1.len(), 1);
        std::fs::write(&p, &full).unwrap();
        let (mut wal, recs) = Wal::open(&p).unwrap();
        assert_eq!(recs.len(), 3);
        wal.truncate().unwrap();
        assert!(Wal::open(&p).unwrap().1.is_empty());
    }
}
