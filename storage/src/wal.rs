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
//! Record framing: `u32 length, u32 CRC-32 of the payload, payload`
//! (little endian; payload is bincode). Replay stops at the first short or
//! corrupt record: that is where a crash cut the log, and no record after it
//! was ever acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use pacs_core::records::InstanceAttributes;
use pacs_core::Uid;
use serde::{Deserialize, Serialize};

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
}

/// An open log file.
pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Largest record accepted on replay (a put carries the instance's JSON).
const MAX_RECORD: u32 = 256 * 1024 * 1024;

impl Wal {
    /// Opens (creating) the log at `path` and returns it with the records
    /// it holds.
    pub fn open(path: &Path) -> std::io::Result<(Wal, Vec<WalRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while let Some(head) = bytes.get(pos..pos + 8) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len > MAX_RECORD {
                break;
            }
            let Some(payload) = bytes.get(pos + 8..pos + 8 + len as usize) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            match bincode::deserialize::<WalRecord>(payload) {
                Ok(r) => records.push(r),
                Err(_) => break,
            }
            pos += 8 + len as usize;
        }
        if pos as u64 != bytes.len() as u64 {
            tracing::warn!(
                valid = pos,
                total = bytes.len(),
                "index log ends in a partial record (a crash cut it); it is dropped"
            );
        }
        Ok((
            Wal {
                path: path.to_owned(),
                file,
                len: bytes.len() as u64,
            },
            records,
        ))
    }

    /// Appends a record (not yet durable: see [`Wal::sync`]).
    pub fn append(&mut self, record: &WalRecord) -> std::io::Result<()> {
        let payload = bincode::serialize(record)
            .map_err(|e| std::io::Error::other(format!("serialize: {e}")))?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Err(e) = self.file.write_all(&frame) {
            // A partial frame (the disk filled up) would end replay there
            // and hide every later record: cut it off, so the next append
            // starts where this one did.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    /// A handle to fsync without holding the writer lock.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Empties the log durably (after a checkpoint).
    pub fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replay_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.wal");
        let (mut wal, recs) = Wal::open(&p).unwrap();
        assert!(recs.is_empty());
        for i in 0..3u64 {
            wal.append(&WalRecord::Remove {
                sop: Uid::parse(&format!("1.2.{i}")).unwrap(),
                journal_id: i,
            })
            .unwrap();
        }
        drop(wal);
        let full = std::fs::read(&p).unwrap();
        // Cut the last record in half, then corrupt a byte of the second.
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        assert_eq!(Wal::open(&p).unwrap().1.len(), 2);
        let mut bad = full.clone();
        let second = full.len() / 3 + 10;
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
