//! The landing log on local disk (the [`Landing`] port).
//!
//! A received object is appended to a segment file as it arrives, with
//! writeback started chunk by chunk; at the end its blob key and index
//! entry are appended and one `fdatasync` makes the whole record durable.
//! That one sync replaces the three a direct write needs (the blob file,
//! its directory, the index log), which is what bounds ingest over one
//! association. The archive then moves the object to its blob key in the
//! background and settles the record.
//!
//! # Layout
//! `landing/seg-<id as 16 hex digits>.log`. The first 4 KiB of a segment
//! hold its header: `SENLSEG1`, the id (u64 LE), a random 16-byte nonce and
//! at byte 32 the segment format version (u32 LE; 0, zeros, before
//! versioning). Records follow, each starting on a 4 KiB boundary:
//!
//! ```text
//! 0   "SENLAND1"
//! 8   state: 1 live, 2 settled
//! 9   record version (0 before versioning)
//! 16  data length (u64 LE)
//! 24  key length (u32 LE)
//! 28  index entry length (u32 LE)
//! 32  CRC-32 of (nonce, bytes 9..32, key, index entry)
//!     (version 0: of nonce, bytes 16..32, key, index entry)
//! 64  data, then key, then index entry (version byte and bincode;
//!     version 0: bincode)
//! ```
//!
//! The nonce makes a record that a client smuggled inside an object's own
//! bytes (left behind by an aborted write) fail its check. On open, every
//! record with a valid header, CRC and data SHA-256 is recovered; a bad one
//! (a torn write) is skipped page by page up to the next valid record, and
//! the skipped range is logged. Segments of a newer format refuse the open;
//! older ones are read as they are, take no new records and go once
//! settled. A sealed segment takes no more records. A segment whose records
//! are all settled is kept as a spare (at most two) and written again under
//! a new nonce, which voids its old records; the others are deleted.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use pacs_core::limits::MAX_INDEX_ENTRY_BYTES;
use pacs_core::ports::{BlobKey, LandedId, LandedObject, Landing, LandingWriter, PortError};
use pacs_core::records::InstanceAttributes;
use sha2::{Digest, Sha256};

use crate::format::{decode_versioned, encode_versioned, NewerFormat};

/// The segment format this build writes (and the newest it reads).
pub const SEGMENT_FORMAT: u32 = 1;
/// The record version this build writes (also the index entry's prefix).
pub const LANDING_RECORD: u8 = 1;

const SEGMENT_MAGIC: &[u8; 8] = b"SENLSEG1";
const RECORD_MAGIC: &[u8; 8] = b"SENLAND1";
const SEGMENT_HEADER: u64 = 4096;
const RECORD_HEADER: u64 = 64;
const ALIGN: u64 = 4096;
const STATE_LIVE: u8 = 1;
const STATE_SETTLED: u8 = 2;
/// A segment takes no new record once it is this long.
const SEGMENT_TARGET: u64 = 64 << 20;
/// Space reserved (fallocate) when a segment is created.
const SEGMENT_PREALLOC: u64 = SEGMENT_TARGET + (8 << 20);
const MAX_KEY: u32 = 4096;
const MAX_ENTRY: u32 = MAX_INDEX_ENTRY_BYTES as u32;
const READ_CHUNK: u64 = 4 << 20;
/// Settled segments kept to be written again instead of new ones.
const SPARE_SEGMENTS: usize = 2;

fn io_err(what: &str, e: std::io::Error) -> PortError {
    PortError::Storage(format!("landing log: {what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// The CRC of a record with header `head` (its state byte, rewritten at
/// settle, is left out; version 0 also left out the version byte).
fn record_crc(nonce: &[u8; 16], head: &[u8], key: &[u8], entry: &[u8]) -> u32 {
    let covered = if head[9] == 0 {
        &head[16..32]
    } else {
        &head[9..32]
    };
    let mut h = crc32fast::Hasher::new();
    h.update(nonce);
    h.update(covered);
    h.update(key);
    h.update(entry);
    h.finalize()
}

struct SegState {
    /// Live records: offset -> data length.
    live: BTreeMap<u64, u64>,
    /// No new record will be written (full, broken, or from a previous run).
    sealed: bool,
    removed: bool,
}

struct Segment {
    id: u64,
    path: PathBuf,
    file: File,
    nonce: [u8; 16],
    state: Mutex<SegState>,
}

struct Shared {
    dir: PathBuf,
    segments: Mutex<HashMap<u64, Arc<Segment>>>,
    /// Segments open for writing, with the offset of their next record.
    free: Mutex<Vec<(Arc<Segment>, u64)>>,
    next_id: AtomicU64,
    pending: AtomicU64,
    recovered: Mutex<Vec<LandedObject>>,
    /// Settled segments kept for reuse.
    spares: Mutex<Vec<PathBuf>>,
}

/// The landing log in a local directory.
pub struct LocalLanding {
    shared: Arc<Shared>,
}

impl LocalLanding {
    /// Opens (creating) the landing directory and reads what earlier runs
    /// left in it.
    pub fn open(dir: &Path) -> std::io::Result<LocalLanding> {
        std::fs::create_dir_all(dir)?;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hex) = name
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".log"))
            else {
                continue;
            };
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        // Every segment's format first: a newer one refuses the open
        // before anything is removed.
        for &id in &ids {
            let path = segment_path(dir, id);
            if let Some(v) = segment_format(&path)?.filter(|v| *v > SEGMENT_FORMAT) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    NewerFormat {
                        what: format!("the landing segment {}", path.display()),
                        found: v,
                        supported: SEGMENT_FORMAT,
                    },
                ));
            }
        }
        let mut segments = HashMap::new();
        let mut recovered = Vec::new();
        let mut pending = 0u64;
        for &id in &ids {
            let path = segment_path(dir, id);
            let (seg, live, _skipped) = scan_segment(id, &path)?;
            if live.is_empty() {
                std::fs::remove_file(&path)?;
                continue;
            }
            for obj in &live {
                pending += obj.attrs.instance.size;
            }
            tracing::info!(
                segment = %path.display(),
                records = live.len(),
                "landing log holds objects not yet moved to storage"
            );
            recovered.extend(live);
            segments.insert(id, Arc::new(seg));
        }
        sync_dir(dir)?;
        Ok(LocalLanding {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                segments: Mutex::new(segments),
                free: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(ids.last().map_or(1, |m| m + 1)),
                pending: AtomicU64::new(pending),
                recovered: Mutex::new(recovered),
                spares: Mutex::new(Vec::new()),
            }),
        })
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:016x}.log"))
}

fn segment_header(id: u64, nonce: &[u8; 16]) -> Vec<u8> {
    let mut head = vec![0u8; SEGMENT_HEADER as usize];
    head[..8].copy_from_slice(SEGMENT_MAGIC);
    head[8..16].copy_from_slice(&id.to_le_bytes());
    head[16..32].copy_from_slice(nonce);
    head[32..36].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    head
}

/// The format version in a segment's header (`None` without a header).
fn segment_format(path: &Path) -> std::io::Result<Option<u32>> {
    let file = File::open(path)?;
    let mut head = [0u8; 36];
    if file.read_exact_at(&mut head, 0).is_err() || &head[..8] != SEGMENT_MAGIC {
        return Ok(None);
    }
    Ok(Some(u32::from_le_bytes([
        head[32], head[33], head[34], head[35],
    ])))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A damaged stretch of a segment skipped on recovery: offset and length.
type Skipped = (u64, u64);

/// Reads a segment of an earlier run: its live records, verified, and the
/// damaged stretches skipped between valid records.
fn scan_segment(
    id: u64,
    path: &Path,
) -> std::io::Result<(Segment, Vec<LandedObject>, Vec<Skipped>)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; 36];
    let mut nonce = [0u8; 16];
    let mut live_map = BTreeMap::new();
    let mut live = Vec::new();
    let mut skipped = Vec::new();
    let header_ok = file.read_exact_at(&mut head, 0).is_ok() && &head[..8] == SEGMENT_MAGIC;
    if header_ok {
        nonce.copy_from_slice(&head[16..32]);
        let format = u32::from_le_bytes([head[32], head[33], head[34], head[35]]);
        let mut off = SEGMENT_HEADER;
        // Start of a run of pages holding no valid record.
        let mut bad_from: Option<u64> = None;
        while off + RECORD_HEADER <= len {
            match read_record(
                &mut file,
                len,
                off,
                &nonce,
                format,
                &mut live_map,
                &mut live,
                id,
            )? {
                Some(next) => {
                    if let Some(from) = bad_from.take() {
                        tracing::warn!(
                            segment = %path.display(),
                            offset = from,
                            bytes = off - from,
                            "landing segment: skipped a damaged record (torn write) to the next valid one"
                        );
                        skipped.push((from, off - from));
                    }
                    off = next;
                }
                None => {
                    bad_from.get_or_insert(off);
                    off += ALIGN;
                }
            }
        }
        if let Some(from) = bad_from {
            // Usually where a crash cut the last write, or the old records
            // of a reused segment (void under its new nonce).
            tracing::info!(
                segment = %path.display(),
                offset = from,
                bytes = len - from,
                "landing segment: no valid record after this offset"
            );
        }
    } else {
        // Its header is synced before any record is written: no record in
        // it was ever acknowledged.
        tracing::warn!(
            segment = %path.display(),
            "landing segment without a valid header; it holds nothing acknowledged and is removed"
        );
    }
    Ok((
        Segment {
            id,
            path: path.to_owned(),
            file,
            nonce,
            state: Mutex::new(SegState {
                live: live_map,
                sealed: true,
                removed: false,
            }),
        },
        live,
        skipped,
    ))
}

/// Reads the record at `off`; returns where the next one starts, or `None`
/// when no valid record starts there.
#[allow(clippy::too_many_arguments)]
fn read_record(
    file: &mut File,
    len: u64,
    off: u64,
    nonce: &[u8; 16],
    format: u32,
    live_map: &mut BTreeMap<u64, u64>,
    live: &mut Vec<LandedObject>,
    segment: u64,
) -> std::io::Result<Option<u64>> {
    let mut h = [0u8; RECORD_HEADER as usize];
    if off + RECORD_HEADER > len || file.read_exact_at(&mut h, off).is_err() {
        return Ok(None);
    }
    if &h[..8] != RECORD_MAGIC {
        return Ok(None);
    }
    // A segment holds records of its own format only.
    let version = h[9];
    if u32::from(version) != format {
        return Ok(None);
    }
    let state = h[8];
    let le8 = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX);
    let le4 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
    let data_len = le8(&h[16..24]);
    let key_len = le4(&h[24..28]);
    let entry_len = le4(&h[28..32]);
    let crc = le4(&h[32..36]);
    if key_len > MAX_KEY || entry_len > MAX_ENTRY {
        return Ok(None);
    }
    let data_at = off + RECORD_HEADER;
    let Some(tail_at) = data_at.checked_add(data_len) else {
        return Ok(None);
    };
    let end = tail_at + u64::from(key_len) + u64::from(entry_len);
    if end > len {
        return Ok(None);
    }
    let mut tail = vec![0u8; (key_len + entry_len) as usize];
    file.read_exact_at(&mut tail, tail_at)?;
    let (key, entry) = tail.split_at(key_len as usize);
    if record_crc(nonce, &h, key, entry) != crc {
        return Ok(None);
    }
    let next = align_up(end);
    if state == STATE_SETTLED {
        return Ok(Some(next));
    }
    if state != STATE_LIVE {
        return Ok(None);
    }
    let Some(key) = std::str::from_utf8(key).ok().and_then(BlobKey::parse) else {
        return Ok(None);
    };
    let attrs = if version == 0 {
        bincode::deserialize::<InstanceAttributes>(entry).ok()
    } else {
        decode_versioned::<InstanceAttributes>(version, entry).ok()
    };
    let Some(attrs) = attrs else {
        return Ok(None);
    };
    // The data must be exactly what was acknowledged.
    let mut hasher = Sha256::new();
    file.seek(SeekFrom::Start(data_at))?;
    let mut rest = data_len;
    let mut buf = vec![0u8; 1 << 20];
    while rest > 0 {
        let n = rest.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        rest -= n as u64;
    }
    let sha = hex::encode(hasher.finalize());
    if attrs.instance.size != data_len || attrs.instance.sha256 != sha {
        return Ok(None);
    }
    live_map.insert(off, data_len);
    live.push(LandedObject {
        id: LandedId {
            segment,
            offset: off,
        },
        key,
        attrs,
    });
    Ok(Some(next))
}

impl Shared {
    /// A segment to write the next record into, with its offset.
    fn take_segment(&self) -> std::io::Result<(Arc<Segment>, u64)> {
        if let Some(s) = lock(&self.free).pop() {
            return Ok(s);
        }
        let nonce = *uuid::Uuid::new_v4().as_bytes();
        let spare = lock(&self.spares).pop();
        let (id, path, file) = match spare {
            // A recycled segment: its blocks are allocated and written,
            // so a commit syncs data only. The new nonce voids every old
            // record in it, and a new id (the file keeps its name) makes
            // sure no `LandedId` of an old record finds a new one.
            Some(path) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                file.write_all_at(&segment_header(id, &nonce), 0)?;
                file.sync_data()?;
                (id, path, file)
            }
            None => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let path = segment_path(&self.dir, id);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                file.write_all_at(&segment_header(id, &nonce), 0)?;
                preallocate(&file, SEGMENT_PREALLOC);
                file.sync_all()?;
                sync_dir(&self.dir)?;
                (id, path, file)
            }
        };
        let seg = Arc::new(Segment {
            id,
            path,
            file,
            nonce,
            state: Mutex::new(SegState {
                live: BTreeMap::new(),
                sealed: false,
                removed: false,
            }),
        });
        lock(&self.segments).insert(id, seg.clone());
        Ok((seg, SEGMENT_HEADER))
    }

    /// Hands a segment back after a record: open for the next one unless
    /// it is full.
    fn give_back(&self, seg: Arc<Segment>, next: u64) {
        if next >= SEGMENT_TARGET {
            self.seal(&seg);
        } else {
            lock(&self.free).push((seg, next));
        }
    }

    /// Retires an empty segment from the open ones, unless it is the only
    /// one open (or a writer holds it).
    fn retire_idle(&self, id: u64) {
        let (seg, next) = {
            let mut free = lock(&self.free);
            if free.len() < 2 {
                return;
            }
            match free.iter().position(|(s, _)| s.id == id) {
                Some(i) => free.swap_remove(i),
                None => return,
            }
        };
        if lock(&seg.state).live.is_empty() {
            self.seal(&seg);
        } else {
            lock(&self.free).push((seg, next));
        }
    }

    /// No more records in this segment; removes it if nothing is live.
    fn seal(&self, seg: &Arc<Segment>) {
        let empty = {
            let mut st = lock(&seg.state);
            st.sealed = true;
            st.live.is_empty() && !st.removed
        };
        if empty {
            self.remove(seg);
        }
    }

    fn remove(&self, seg: &Arc<Segment>) {
        lock(&seg.state).removed = true;
        lock(&self.segments).remove(&seg.id);
        // Kept for reuse only when no reader holds it: once out of the map
        // no new reader can find it, and a reader streaming an object from
        // it must not see the bytes overwritten.
        if Arc::strong_count(seg) == 1 {
            let mut spares = lock(&self.spares);
            if spares.len() < SPARE_SEGMENTS {
                spares.push(seg.path.clone());
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "removing a landing segment failed");
        }
    }
}

/// Starts writeback of what was just written, without waiting for it, so
/// the commit's `fdatasync` finds little left to write. (On Linux,
/// `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages; pages
/// under writeback stay cached.) Failure only costs speed.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        offset as i64,
        len as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Reserves the segment's space up front, so records are written into
/// allocated blocks. Failure (a file system without fallocate) only costs
/// speed: writes then extend the file.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, len: u64) {
    let _ = nix::fcntl::fallocate(
        file,
        nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        len as i64,
    );
}

#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _len: u64) {}

async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, PortError>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| io_err(what, e)),
        Err(e) => Err(PortError::Storage(format!("landing log: {what}: {e}"))),
    }
}

/// What a writer's worker thread is asked to do.
enum Op {
    Data(Bytes),
    Commit {
        tail: Vec<u8>,
        head: [u8; RECORD_HEADER as usize],
        reply: tokio::sync::oneshot::Sender<std::io::Result<()>>,
    },
}

/// Chunks queued to a writer's worker: bounds the memory of one write.
const WRITE_QUEUE: usize = 8;

/// The worker of one record: writes chunks in order as they come (so the
/// receiving task goes on hashing and reading meanwhile), starts their
/// writeback, and at commit writes key, entry and header and syncs.
fn write_worker(seg: Arc<Segment>, start: u64, mut rx: tokio::sync::mpsc::Receiver<Op>) {
    let mut pos = start + RECORD_HEADER;
    let mut failed: Option<std::io::Error> = None;
    let mut written_back = start + ALIGN;
    while let Some(op) = rx.blocking_recv() {
        match op {
            Op::Data(chunk) => {
                if failed.is_none() {
                    match seg.file.write_all_at(&chunk, pos) {
                        Ok(()) => {
                            // Whole pages only, and not the record's first
                            // page (the header goes there at commit): a
                            // page under writeback cannot be written again
                            // until the writeback ends.
                            let upto = (pos + chunk.len() as u64) / ALIGN * ALIGN;
                            if upto > written_back {
                                start_writeback(&seg.file, written_back, upto - written_back);
                                written_back = upto;
                            }
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                pos += chunk.len() as u64;
            }
            Op::Commit { tail, head, reply } => {
                let r = match failed.take() {
                    Some(e) => Err(e),
                    None => seg
                        .file
                        .write_all_at(&tail, pos)
                        .and_then(|()| seg.file.write_all_at(&head, start))
                        .and_then(|()| seg.file.sync_data()),
                };
                let _ = reply.send(r);
                return;
            }
        }
    }
}

struct LocalWriter {
    shared: Arc<Shared>,
    seg: Option<Arc<Segment>>,
    start: u64,
    pos: u64,
    tx: Option<tokio::sync::mpsc::Sender<Op>>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl LocalWriter {
    /// Stops the worker and waits until it has written its last byte, so
    /// the segment can take another record at the same offset.
    async fn stop_worker(&mut self) -> bool {
        self.tx = None;
        match self.worker.take() {
            Some(h) => h.await.is_ok(),
            None => true,
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Neither committed nor aborted (the task was cancelled): the
        // worker may still be writing, so the segment takes no more
        // records.
        if let Some(seg) = self.seg.take() {
            self.shared.seal(&seg);
        }
    }
}

#[async_trait]
impl LandingWriter for LocalWriter {
    fn id(&self) -> LandedId {
        LandedId {
            segment: self.seg.as_ref().map_or(0, |s| s.id),
            offset: self.start,
        }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError> {
        let closed = || PortError::Storage("landing log: writer already closed".into());
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        let len = chunk.len() as u64;
        tx.send(Op::Data(chunk)).await.map_err(|_| closed())?;
        self.pos += len;
        Ok(())
    }

    async fn commit(
        mut self: Box<Self>,
        key: &BlobKey,
        attrs: &InstanceAttributes,
    ) -> Result<LandedId, PortError> {
        let Some(seg) = self.seg.clone() else {
            return Err(PortError::Storage(
                "landing log: writer already closed".into(),
            ));
        };
        let start = self.start;
        let entry = encode_versioned(LANDING_RECORD, attrs)
            .map_err(|e| PortError::Storage(format!("landing log: encode entry: {e}")));
        let key = key.as_str().as_bytes().to_vec();
        let entry = match entry {
            Ok(e) if key.len() <= MAX_KEY as usize && e.len() <= MAX_ENTRY as usize => e,
            other => {
                self.abort_inner().await;
                return Err(other.err().unwrap_or_else(|| {
                    PortError::Storage("landing log: index entry too large".into())
                }));
            }
        };
        let data_len = self.pos - start - RECORD_HEADER;
        let mut head = [0u8; RECORD_HEADER as usize];
        head[..8].copy_from_slice(RECORD_MAGIC);
        head[8] = STATE_LIVE;
        head[9] = LANDING_RECORD;
        head[16..24].copy_from_slice(&data_len.to_le_bytes());
        head[24..28].copy_from_slice(&(key.len() as u32).to_le_bytes());
        head[28..32].copy_from_slice(&(entry.len() as u32).to_le_bytes());
        let crc = record_crc(&seg.nonce, &head, &key, &entry);
        head[32..36].copy_from_slice(&crc.to_le_bytes());
        let end = self.pos + key.len() as u64 + entry.len() as u64;
        let mut tail = key;
        tail.extend_from_slice(&entry);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match &self.tx {
            Some(tx) => tx.send(Op::Commit { tail, head, reply }).await.is_ok(),
            None => false,
        };
        let synced = match answer.await {
            Ok(r) if sent => r.map_err(|e| io_err("commit", e)),
            _ => Err(PortError::Storage("landing log: writer stopped".into())),
        };
        let stopped = self.stop_worker().await;
        self.seg = None;
        if let Err(e) = synced {
            // What reached the disk is unknown: nothing more goes into
            // this segment.
            self.shared.seal(&seg);
            return Err(e);
        }
        lock(&seg.state).live.insert(start, data_len);
        self.shared.pending.fetch_add(data_len, Ordering::Relaxed);
        if stopped {
            self.shared.give_back(seg.clone(), align_up(end));
        } else {
            self.shared.seal(&seg);
        }
        Ok(LandedId {
            segment: seg.id,
            offset: start,
        })
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_inner().await;
    }
}

impl LocalWriter {
    async fn abort_inner(&mut self) {
        let stopped = self.stop_worker().await;
        if let Some(seg) = self.seg.take() {
            if stopped {
                self.shared.give_back(seg, self.start);
            } else {
                self.shared.seal(&seg);
            }
        }
    }
}

#[async_trait]
impl Landing for LocalLanding {
    async fn writer(&self) -> Result<Box<dyn LandingWriter>, PortError> {
        let shared = self.shared.clone();
        let (seg, start) = blocking("new segment", move || shared.take_segment()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let s = seg.clone();
        let worker = tokio::task::spawn_blocking(move || write_worker(s, start, rx));
        Ok(Box::new(LocalWriter {
            shared: self.shared.clone(),
            seg: Some(seg),
            start,
            pos: start + RECORD_HEADER,
            tx: Some(tx),
            worker: Some(worker),
        }))
    }

    async fn live(&self) -> Result<Vec<LandedObject>, PortError> {
        Ok(lock(&self.shared.recovered).clone())
    }

    async fn get(
        &self,
        id: LandedId,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError> {
        let not_found =
            || PortError::NotFound(format!("landed object {}/{}", id.segment, id.offset));
        let seg = lock(&self.shared.segments)
            .get(&id.segment)
            .cloned()
            .ok_or_else(not_found)?;
        let len = *lock(&seg.state)
            .live
            .get(&id.offset)
            .ok_or_else(not_found)?;
        let start = id.offset + RECORD_HEADER;
        let stream = futures::stream::unfold(0u64, move |done| {
            let seg = seg.clone();
            async move {
                if done >= len {
                    return None;
                }
                let n = (len - done).min(READ_CHUNK);
                let r = blocking("read", move || {
                    let mut buf = vec![0u8; n as usize];
                    seg.file.read_exact_at(&mut buf, start + done)?;
                    Ok(Bytes::from(buf))
                })
                .await;
                let next = if r.is_ok() { done + n } else { len };
                Some((r, next))
            }
        });
        Ok(stream.boxed())
    }

    async fn settle(&self, ids: &[LandedId]) -> Result<(), PortError> {
        let mut by_segment: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            by_segment.entry(id.segment).or_default().push(id.offset);
        }
        for (segment, offsets) in by_segment {
            let Some(seg) = lock(&self.shared.segments).get(&segment).cloned() else {
                continue;
            };
            let s = seg.clone();
            let offs = offsets.clone();
            blocking("settle", move || {
                for off in offs {
                    if lock(&s.state).live.contains_key(&off) {
                        s.file.write_all_at(&[STATE_SETTLED], off + 8)?;
                    }
                }
                s.file.sync_data()
            })
            .await?;
            let (empty, sealed) = {
                let mut st = lock(&seg.state);
                for off in &offsets {
                    if let Some(len) = st.live.remove(off) {
                        self.shared.pending.fetch_sub(len, Ordering::Relaxed);
                    }
                }
                (st.live.is_empty() && !st.removed, st.sealed)
            };
            if empty && sealed {
                self.shared.remove(&seg);
            } else if empty {
                // Open for writing but empty: concurrent writers leave one
                // such segment each; keep one, retire the others (they
                // become spares or are deleted).
                let id = seg.id;
                drop(seg);
                self.shared.retire_idle(id);
            }
        }
        lock(&self.shared.recovered).retain(|o| !ids.contains(&o.id));
        Ok(())
    }

    fn pending_bytes(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("landing log in {}", self.shared.dir.display())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn attrs(sop: &str, data: &[u8]) -> (BlobKey, InstanceAttributes) {
        let object = sample_data::synthetic::object(&sample_data::synthetic::Spec {
            study: "1.2.3",
            series: "1.2.3.4",
            sop,
            ..Default::default()
        });
        let header =
            pacs_core::dicom::parse_part10(&object, true, &pacs_core::Limits::default()).unwrap();
        let mut a = InstanceAttributes::from_header(&header).unwrap();
        a.instance.size = data.len() as u64;
        a.instance.sha256 = hex::encode(Sha256::digest(data));
        let key = BlobKey::for_instance(
            &a.study.study_instance_uid,
            &a.series.series_instance_uid,
            &a.instance.sop_instance_uid,
        );
        a.instance.blob_key = key.as_str().to_owned();
        (key, a)
    }

    async fn land(l: &LocalLanding, sop: &str, data: &[u8]) -> LandedId {
        let (key, a) = attrs(sop, data);
        let mut w = l.writer().await.unwrap();
        for c in data.chunks(10_000) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        w.commit(&key, &a).await.unwrap()
    }

    async fn read(l: &LocalLanding, id: LandedId) -> Vec<u8> {
        let mut s = l.get(id).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[tokio::test]
    async fn committed_records_come_back_aborted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (data(70_000, 1), data(5_000, 2));
        {
            let l = LocalLanding::open(dir.path()).unwrap();
            let ia = land(&l, "1.2.3.4.1", &a).await;
            // An aborted write in between leaves nothing behind.
            let mut w = l.writer().await.unwrap();
            w.write(Bytes::from(data(50_000, 9))).await.unwrap();
            w.abort().await;
            let ib = land(&l, "1.2.3.4.2", &b).await;
            assert_eq!(read(&l, ia).await, a);
            assert_eq!(read(&l, ib).await, b);
            assert_eq!(l.pending_bytes(), (a.len() + b.len()) as u64);
        }
        let l = LocalLanding::open(dir.path()).unwrap();
        let live = l.live().await.unwrap();
        let sops: Vec<_> = live
            .iter()
            .map(|o| o.attrs.instance.sop_instance_uid.to_string())
            .collect();
        assert_eq!(sops, ["1.2.3.4.1", "1.2.3.4.2"]);
        assert_eq!(read(&l, live[0].id).await, a);
        assert_eq!(read(&l, live[1].id).await, b);
        assert_eq!(live[1].key.as_str(), "1.2.3/1.2.3.4/1.2.3.4.2.dcm");

        // Settled records are gone after the next open, and so is the file.
        l.settle(&[live[0].id, live[1].id]).await.unwrap();
        assert_eq!(l.pending_bytes(), 0);
        drop(l);
        let l = LocalLanding::open(dir.path()).unwrap();
        assert!(l.live().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    async fn live_sops(l: &LocalLanding) -> Vec<String> {
        l.live()
            .await
            .unwrap()
            .iter()
            .map(|o| o.attrs.instance.sop_instance_uid.to_string())
            .collect()
    }

    /// Records A, B, C with B damaged: A and C are recovered (B is skipped
    /// page by page up to C), whether B's data or its header is hit.
    #[tokio::test]
    async fn a_damaged_record_is_skipped_to_the_next_valid_one() {
        for damage_header in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let l = LocalLanding::open(dir.path()).unwrap();
            land(&l, "1.2.3.4.1", &data(9_000, 1)).await;
            let second = land(&l, "1.2.3.4.2", &data(9_000, 2)).await;
            let third = land(&l, "1.2.3.4.3", &data(9_000, 3)).await;
            drop(l);
            let path = segment_path(dir.path(), second.segment);
            let mut bytes = std::fs::read(&path).unwrap();
            if damage_header {
                // A header torn in the middle of its lengths.
                bytes[(second.offset + 20) as usize] ^= 0x40;
            } else {
                // One flipped bit in the second record's data.
                bytes[(second.offset + RECORD_HEADER + 100) as usize] ^= 1;
            }
            std::fs::write(&path, &bytes).unwrap();
            // What is skipped (and logged): B, from its start to C's.
            let (_, _, skipped) = scan_segment(second.segment, &path).unwrap();
            assert_eq!(skipped, [(second.offset, third.offset - second.offset)]);
            let l = LocalLanding::open(dir.path()).unwrap();
            assert_eq!(live_sops(&l).await, ["1.2.3.4.1", "1.2.3.4.3"]);
            let live = l.live().await.unwrap();
            assert_eq!(read(&l, live[1].id).await, data(9_000, 3));
            drop(l);
            // A segment cut short in the last record keeps the first.
            std::fs::write(&path, &bytes[..(second.offset + 1000) as usize]).unwrap();
            let l = LocalLanding::open(dir.path()).unwrap();
            assert_eq!(live_sops(&l).await, ["1.2.3.4.1"]);
        }
    }

    /// One record laid out by hand, in `version`'s layout (0: before
    /// versioning), padded to the next record boundary.
    fn raw_record(version: u8, nonce: &[u8; 16], sop: &str, payload: &[u8]) -> Vec<u8> {
        let (key, a) = attrs(sop, payload);
        let entry = if version == 0 {
            bincode::serialize(&a).unwrap()
        } else {
            encode_versioned(version, &a).unwrap()
        };
        let mut rec = vec![0u8; RECORD_HEADER as usize];
        rec[..8].copy_from_slice(RECORD_MAGIC);
        rec[8] = STATE_LIVE;
        rec[9] = version;
        rec[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        rec[24..28].copy_from_slice(&(key.as_str().len() as u32).to_le_bytes());
        rec[28..32].copy_from_slice(&(entry.len() as u32).to_le_bytes());
        let crc = record_crc(nonce, &rec, key.as_str().as_bytes(), &entry);
        rec[32..36].copy_from_slice(&crc.to_le_bytes());
        rec.extend_from_slice(payload);
        rec.extend_from_slice(key.as_str().as_bytes());
        rec.extend_from_slice(&entry);
        rec.resize(align_up(rec.len() as u64) as usize, 0);
        rec
    }

    /// A segment written before versioning (no version in its header or
    /// records, bare bincode entries) is recovered.
    #[tokio::test]
    async fn a_format_0_segment_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let nonce = [5u8; 16];
        let mut seg = segment_header(3, &nonce);
        seg[32..36].fill(0);
        seg.extend(raw_record(0, &nonce, "1.2.3.4.1", &data(5_000, 1)));
        seg.extend(raw_record(0, &nonce, "1.2.3.4.2", &data(7_000, 2)));
        std::fs::write(segment_path(dir.path(), 3), &seg).unwrap();
        let l = LocalLanding::open(dir.path()).unwrap();
        assert_eq!(live_sops(&l).await, ["1.2.3.4.1", "1.2.3.4.2"]);
        let live = l.live().await.unwrap();
        assert_eq!(read(&l, live[1].id).await, data(7_000, 2));
        // New records go to a new segment in the current format.
        let id = land(&l, "1.2.3.4.3", &data(1_000, 3)).await;
        assert_ne!(id.segment, 3);
        let path = segment_path(dir.path(), id.segment);
        assert_eq!(segment_format(&path).unwrap(), Some(SEGMENT_FORMAT));
        drop(l);
        let l = LocalLanding::open(dir.path()).unwrap();
        assert_eq!(live_sops(&l).await, ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"]);
    }

    /// A segment of a newer format refuses the open, naming both versions,
    /// and nothing in the directory changes (not even empty segments).
    #[tokio::test]
    async fn a_newer_segment_is_refused_and_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let nonce = [9u8; 16];
        let mut newer = segment_header(2, &nonce);
        newer[32..36].copy_from_slice(&(SEGMENT_FORMAT + 1).to_le_bytes());
        std::fs::write(segment_path(dir.path(), 2), &newer).unwrap();
        // An empty current segment, which an open would delete.
        std::fs::write(segment_path(dir.path(), 1), segment_header(1, &nonce)).unwrap();
        let err = LocalLanding::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("format version {}", SEGMENT_FORMAT + 1))
                && err.contains(&format!("format version {SEGMENT_FORMAT} at most"))
                && err.contains("upgrade"),
            "{err}"
        );
        assert_eq!(std::fs::read(segment_path(dir.path(), 2)).unwrap(), newer);
        assert!(segment_path(dir.path(), 1).exists());
    }

    /// A record planted inside an object's bytes (left behind by an aborted
    /// write, where the next record would start) is not taken for a real
    /// one: it cannot know the segment's nonce. With the nonce it would be.
    #[tokio::test]
    async fn a_record_smuggled_in_object_bytes_is_not_replayed() {
        for knows_nonce in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let l = LocalLanding::open(dir.path()).unwrap();
            let first = land(&l, "1.2.3.4.1", &data(1_000, 1)).await;
            let seg = lock(&l.shared.segments)[&first.segment].clone();
            let nonce = if knows_nonce { seg.nonce } else { [7u8; 16] };
            // The forged record: its data, key and entry, framed as ours.
            let payload = b"forged".to_vec();
            let (key, a) = attrs("1.2.3.4.66", &payload);
            let entry = encode_versioned(LANDING_RECORD, &a).unwrap();
            let mut forged = vec![0u8; RECORD_HEADER as usize];
            forged[..8].copy_from_slice(RECORD_MAGIC);
            forged[8] = STATE_LIVE;
            forged[9] = LANDING_RECORD;
            forged[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
            forged[24..28].copy_from_slice(&(key.as_str().len() as u32).to_le_bytes());
            forged[28..32].copy_from_slice(&(entry.len() as u32).to_le_bytes());
            let crc = record_crc(&nonce, &forged, key.as_str().as_bytes(), &entry);
            forged[32..36].copy_from_slice(&crc.to_le_bytes());
            forged.extend_from_slice(&payload);
            forged.extend_from_slice(key.as_str().as_bytes());
            forged.extend_from_slice(&entry);
            // Bytes an aborted object left where the next record starts
            // (what a client controls).
            let next = lock(&l.shared.free)[0].1;
            seg.file.write_all_at(&forged, next).unwrap();
            drop(seg);
            drop(l);
            let l = LocalLanding::open(dir.path()).unwrap();
            let sops: Vec<_> = l
                .live()
                .await
                .unwrap()
                .iter()
                .map(|o| o.attrs.instance.sop_instance_uid.to_string())
                .collect();
            if knows_nonce {
                assert_eq!(sops, ["1.2.3.4.1", "1.2.3.4.66"], "the test can fail");
            } else {
                assert_eq!(sops, ["1.2.3.4.1"]);
            }
        }
    }

    #[tokio::test]
    async fn a_settled_segment_is_reused_under_a_new_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let l = LocalLanding::open(dir.path()).unwrap();
        let id = land(&l, "1.2.3.4.1", &data(20_000, 1)).await;
        let seg = lock(&l.shared.segments)[&id.segment].clone();
        let old_nonce = seg.nonce;
        // Full: sealed, then settled -> kept as a spare.
        lock(&l.shared.free).clear();
        l.shared.seal(&seg);
        drop(seg);
        l.settle(&[id]).await.unwrap();
        assert_eq!(lock(&l.shared.spares).len(), 1);
        let id2 = land(&l, "1.2.3.4.2", &data(3_000, 2)).await;
        assert_eq!(id2.offset, SEGMENT_HEADER);
        assert_ne!(
            id2.segment, id.segment,
            "an old id must not find the new record"
        );
        assert!(l.get(id).await.is_err());
        let seg = lock(&l.shared.segments)[&id2.segment].clone();
        assert_eq!(
            seg.path,
            segment_path(dir.path(), id.segment),
            "the spare is reused"
        );
        drop(seg);
        let seg = lock(&l.shared.segments)[&id2.segment].clone();
        assert_ne!(seg.nonce, old_nonce);
        drop(seg);
        drop(l);
        let l = LocalLanding::open(dir.path()).unwrap();
        let live = l.live().await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(read(&l, live[0].id).await, data(3_000, 2));
    }

    /// Concurrent writers each open a segment; once all is settled, one
    /// stays open, two are kept as spares and the rest are deleted.
    #[tokio::test]
    async fn idle_segments_are_retired() {
        let dir = tempfile::tempdir().unwrap();
        let l = LocalLanding::open(dir.path()).unwrap();
        let mut writers = Vec::new();
        for i in 0..4u8 {
            let mut w = l.writer().await.unwrap();
            w.write(Bytes::from(data(5_000, i))).await.unwrap();
            writers.push((i, w));
        }
        let mut ids = Vec::new();
        for (i, w) in writers {
            let (key, a) = attrs(&format!("1.2.3.4.{}", i + 1), &data(5_000, i));
            ids.push(w.commit(&key, &a).await.unwrap());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        l.settle(&ids).await.unwrap();
        assert_eq!(lock(&l.shared.free).len(), 1);
        assert_eq!(lock(&l.shared.spares).len(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        // The open one and the spares take new records.
        for i in 0..3u8 {
            land(&l, &format!("1.2.3.4.{}", 10 + i), &data(1_000, i)).await;
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
