//! The sorted runs of the sled index's instance locator (index format 4).
//!
//! The sled index keys each instance's record by series, then SOP Instance
//! UID, so that a series' instances (which arrive together) share pages.
//! Finding an instance by its SOP Instance UID alone (storage commitment,
//! duplicate detection, a retrieve by UID) needs a locator: UID → series.
//! Kept in a sled tree keyed by the UID, that locator costs about 1.2 KB on
//! disk per instance when UIDs are random (sled rewrites every page a store
//! touches and reclaims a log segment only once half of it is stale; see
//! docs/benchmarks.md). So sled's `instances` tree holds only the recent
//! locators; the index's checkpoint thread moves them, once there are
//! enough, into an immutable file sorted by UID (a *run*), and merges runs
//! when several of similar size pile up, as a log-structured merge tree
//! does. A lookup reads sled's recent entries first, then the runs from the
//! newest: the first entry found decides, and an empty series is a
//! tombstone (the instance was removed).
//!
//! This module holds the run files: their format, writing, reading and
//! merging. The index (`crate::index`) decides when, and keeps the list of
//! live runs in its `meta` tree, written in the same flush that makes a run
//! count.
//!
//! Run file, version 1 (integers little-endian):
//! - header: the magic `SENLOCR\0` (8 bytes), the version (u32), 0 (u32);
//! - blocks of up to [`BLOCK_TARGET`] bytes (more for one entry that does
//!   not fit), each a sequence of entries `key length (u8), key, value
//!   length (u8), value`, keys strictly increasing through the file;
//! - the block index: per block, `first key length (u8), first key, offset
//!   (u64), length (u32), CRC-32 of the block (u32)`;
//! - footer (40 bytes): the index's offset (u64) and length (u64), the
//!   number of entries (u64), the CRC-32 of the index (u32), the version
//!   (u32), the magic.
//!
//! Opening a run reads its footer and block index only (checked against
//! the index CRC); each block is checked against its CRC when read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The magic at both ends of a run file.
const MAGIC: &[u8; 8] = b"SENLOCR\0";
/// The run file version this build writes and reads.
pub const RUN_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const FOOTER_LEN: u64 = 40;
/// Bytes after which a block is closed.
pub const BLOCK_TARGET: usize = 4096;

/// One locator entry: the SOP Instance UID, the series UID (empty: a
/// tombstone).
pub type Entry = (Vec<u8>, Vec<u8>);

/// One block of a run, as its index describes it.
struct BlockRef {
    first: Box<[u8]>,
    offset: u64,
    len: u32,
    crc: u32,
}

/// An open run file.
pub struct Run {
    id: u64,
    path: PathBuf,
    file: File,
    entries: u64,
    bytes: u64,
    blocks: Vec<BlockRef>,
}

fn damaged(path: &Path, what: &str) -> String {
    format!("locator run {} is damaged: {what}", path.display())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The entries of one block, decoded.
fn parse_block(path: &Path, b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let klen = b[at] as usize;
        let kend = at + 1 + klen;
        if kend >= b.len() {
            return Err(damaged(path, "an entry runs past its block"));
        }
        let vlen = b[kend] as usize;
        let vend = kend + 1 + vlen;
        if vend > b.len() {
            return Err(damaged(path, "an entry runs past its block"));
        }
        out.push((b[at + 1..kend].to_vec(), b[kend + 1..vend].to_vec()));
        at = vend;
    }
    Ok(out)
}

impl Run {
    /// The run's file name for `id`.
    pub fn file_name(id: u64) -> String {
        format!("run-{id:016x}.loc")
    }

    /// The id a run file name stands for.
    pub fn id_of(name: &str) -> Option<u64> {
        let hex = name.strip_prefix("run-")?.strip_suffix(".loc")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The file's size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Opens run `id` in `dir`: reads and checks its footer and block index.
    pub fn open(dir: &Path, id: u64) -> Result<Run, String> {
        let path = dir.join(Run::file_name(id));
        let file = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        let bytes = file
            .metadata()
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .len();
        if bytes < HEADER_LEN + FOOTER_LEN {
            return Err(damaged(&path, "shorter than its header and footer"));
        }
        let read = |at: u64, len: usize| -> Result<Vec<u8>, String> {
            let mut b = vec![0u8; len];
            file.read_exact_at(&mut b, at)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Ok(b)
        };
        let header = read(0, HEADER_LEN as usize)?;
        let footer = read(bytes - FOOTER_LEN, FOOTER_LEN as usize)?;
        if &header[..8] != MAGIC || &footer[32..] != MAGIC {
            return Err(damaged(&path, "not a locator run (magic)"));
        }
        let version = u32_at(&footer, 28);
        if version != RUN_VERSION || u32_at(&header, 8) != version {
            return Err(format!(
                "locator run {} has version {version}; this build reads version {RUN_VERSION}",
                path.display()
            ));
        }
        let (index_at, index_len) = (u64_at(&footer, 0), u64_at(&footer, 8));
        if index_at < HEADER_LEN || index_at.saturating_add(index_len) != bytes - FOOTER_LEN {
            return Err(damaged(&path, "its block index is out of place"));
        }
        let index = read(index_at, index_len as usize)?;
        if crc32fast::hash(&index) != u32_at(&footer, 24) {
            return Err(damaged(&path, "its block index fails its checksum"));
        }
        let mut blocks = Vec::new();
        let mut at = 0;
        while at < index.len() {
            let klen = index[at] as usize;
            let end = at + 1 + klen + 16;
            if end > index.len() {
                return Err(damaged(&path, "its block index is cut short"));
            }
            let first: Box<[u8]> = index[at + 1..at + 1 + klen].into();
            let offset = u64_at(&index, at + 1 + klen);
            let len = u32_at(&index, at + 9 + klen);
            let crc = u32_at(&index, at + 13 + klen);
            if offset < HEADER_LEN || offset + u64::from(len) > index_at {
                return Err(damaged(&path, "a block lies outside the file's blocks"));
            }
            blocks.push(BlockRef {
                first,
                offset,
                len,
                crc,
            });
            at = end;
        }
        Ok(Run {
            id,
            path,
            file,
            entries: u64_at(&footer, 16),
            bytes,
            blocks,
        })
    }

    fn block(&self, i: usize) -> Result<Vec<Entry>, String> {
        let b = &self.blocks[i];
        let mut buf = vec![0u8; b.len as usize];
        self.file
            .read_exact_at(&mut buf, b.offset)
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
        if crc32fast::hash(&buf) != b.crc {
            return Err(damaged(
                &self.path,
                &format!("block {i} fails its checksum"),
            ));
        }
        parse_block(&self.path, &buf)
    }

    /// The value under `key`, if the run holds one (empty: a tombstone).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let i = self.blocks.partition_point(|b| &*b.first <= key);
        if i == 0 {
            return Ok(None);
        }
        for (k, v) in self.block(i - 1)? {
            match k.as_slice().cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(v)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// The entries after `after` (from the first with `None`), in key
    /// order, a block at a time.
    pub fn iter_after(self: &Arc<Self>, after: Option<&[u8]>) -> RunIter {
        let start = match after {
            Some(a) => self.blocks.partition_point(|b| &*b.first <= a).max(1) - 1,
            None => 0,
        };
        RunIter {
            run: self.clone(),
            next_block: start,
            pending: Vec::new().into_iter(),
            after: after.map(<[u8]>::to_vec),
        }
    }
}

/// The entries of a run in key order ([`Run::iter_after`]).
pub struct RunIter {
    run: Arc<Run>,
    next_block: usize,
    pending: std::vec::IntoIter<Entry>,
    after: Option<Vec<u8>>,
}

impl Iterator for RunIter {
    type Item = Result<Entry, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.pending.next() {
                if let Some(a) = &self.after {
                    if e.0 <= *a {
                        continue;
                    }
                    self.after = None;
                }
                return Some(Ok(e));
            }
            if self.next_block >= self.run.blocks.len() {
                return None;
            }
            match self.run.block(self.next_block) {
                Ok(entries) => {
                    self.next_block += 1;
                    self.pending = entries.into_iter();
                }
                Err(e) => {
                    self.next_block = self.run.blocks.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Writes a run file: entries in strictly increasing key order, then
/// [`RunWriter::finish`].
pub struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    block: Vec<u8>,
    block_first: Vec<u8>,
    index: Vec<u8>,
    entries: u64,
    last: Option<Vec<u8>>,
}

impl RunWriter {
    /// Starts the file `path` (replacing one left there).
    pub fn create(path: &Path) -> Result<RunWriter, String> {
        let file = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&RUN_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        out.write_all(&header)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(RunWriter {
            path: path.to_owned(),
            out,
            offset: HEADER_LEN,
            block: Vec::with_capacity(BLOCK_TARGET + 512),
            block_first: Vec::new(),
            index: Vec::new(),
            entries: 0,
            last: None,
        })
    }

    fn io(&self, e: std::io::Error) -> String {
        format!("writing {}: {e}", self.path.display())
    }

    /// Appends one entry; keys and values are at most 255 bytes, keys
    /// strictly after the previous one.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if key.is_empty() || key.len() > 255 || value.len() > 255 {
            return Err(format!(
                "a locator entry of {} and {} bytes does not fit a run",
                key.len(),
                value.len()
            ));
        }
        if self.last.as_deref().is_some_and(|l| l >= key) {
            return Err("locator entries out of order".into());
        }
        let size = 2 + key.len() + value.len();
        if !self.block.is_empty() && self.block.len() + size > BLOCK_TARGET {
            self.close_block()?;
        }
        if self.block.is_empty() {
            self.block_first = key.to_vec();
        }
        self.block.push(key.len() as u8);
        self.block.extend_from_slice(key);
        self.block.push(value.len() as u8);
        self.block.extend_from_slice(value);
        self.entries += 1;
        self.last = Some(key.to_vec());
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), String> {
        if self.block.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.block).map_err(|e| self.io(e))?;
        self.index.push(self.block_first.len() as u8);
        self.index.extend_from_slice(&self.block_first);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&crc32fast::hash(&self.block).to_le_bytes());
        self.offset += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the last block, the block index and the footer, and syncs the
    /// file. Returns the number of entries.
    pub fn finish(mut self) -> Result<u64, String> {
        self.close_block()?;
        let index = std::mem::take(&mut self.index);
        self.out.write_all(&index).map_err(|e| self.io(e))?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(&self.offset.to_le_bytes());
        footer.extend_from_slice(&(index.len() as u64).to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        footer.extend_from_slice(&RUN_VERSION.to_le_bytes());
        footer.extend_from_slice(MAGIC);
        self.out.write_all(&footer).map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.io(e))?;
        Ok(self.entries)
    }
}

/// Merges sources given oldest first into one key-ordered stream: for a
/// key several hold, the newest source's value; tombstones (empty values)
/// dropped when `drop_tombstones` (the merge reaches the oldest run, so
/// nothing older is left for them to hide).
pub struct Merge<I> {
    heads: Vec<Option<Entry>>,
    sources: Vec<I>,
    drop_tombstones: bool,
}

impl<I> Merge<I>
where
    I: Iterator<Item = Result<Entry, String>>,
{
    pub fn new(mut sources: Vec<I>, drop_tombstones: bool) -> Result<Merge<I>, String> {
        let mut heads = Vec::with_capacity(sources.len());
        for s in &mut sources {
            heads.push(s.next().transpose()?);
        }
        Ok(Merge {
            heads,
            sources,
            drop_tombstones,
        })
    }

    fn step(&mut self) -> Result<Option<Entry>, String> {
        loop {
            // The smallest key; on a tie the newest (last) source wins.
            let mut best: Option<usize> = None;
            for (i, h) in self.heads.iter().enumerate() {
                if let Some((k, _)) = h {
                    match best {
                        Some(b) if self.heads[b].as_ref().is_some_and(|(bk, _)| bk < k) => {}
                        _ => best = Some(i),
                    }
                }
            }
            let Some(b) = best else { return Ok(None) };
            let key = match &self.heads[b] {
                Some((k, _)) => k.clone(),
                None => return Ok(None),
            };
            let mut winner = None;
            for i in 0..self.heads.len() {
                if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                    let taken = self.heads[i].take();
                    self.heads[i] = self.sources[i].next().transpose()?;
                    if i == b {
                        winner = taken;
                    }
                }
            }
            match winner {
                Some((_, v)) if v.is_empty() && self.drop_tombstones => continue,
                Some(e) => return Ok(Some(e)),
                None => return Ok(None),
            }
        }
    }
}

impl<I> Iterator for Merge<I>
where
    I: Iterator<Item = Result<Entry, String>>,
{
    type Item = Result<Entry, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

/// What a lookup in the runs found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The series the newest entry names.
    Series(Vec<u8>),
    /// The newest entry is a tombstone.
    Removed,
    /// No run holds the key.
    Absent,
}

/// The live runs of an index, oldest first, and the directory they live in.
pub struct Runs {
    dir: PathBuf,
    live: RwLock<Arc<Vec<Arc<Run>>>>,
    /// Set when a read found a run damaged: the index rebuilds its locator.
    damaged: std::sync::atomic::AtomicBool,
    /// Held by whoever adds or merges runs (the index's checkpoint thread,
    /// a clear).
    pub(crate) work: std::sync::Mutex<()>,
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

impl Runs {
    /// Opens the runs `ids` (oldest first) in `dir`, creating the directory,
    /// and removes every other run or unfinished file there (a crash
    /// between writing a run and recording it, or between recording a merge
    /// and removing what it merged).
    pub fn open(dir: &Path, ids: &[u64]) -> Result<Runs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            live.push(Arc::new(Run::open(dir, *id)?));
        }
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let keep = Run::id_of(&name).is_some_and(|id| ids.contains(&id));
            if !keep && (name.ends_with(".loc") || name.ends_with(".tmp")) {
                std::fs::remove_file(e.path())
                    .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
            }
        }
        Ok(Runs {
            dir: dir.to_owned(),
            live: RwLock::new(Arc::new(live)),
            damaged: std::sync::atomic::AtomicBool::new(false),
            work: std::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live runs, oldest first.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Run>>> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The ids of the live runs, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.snapshot().iter().map(|r| r.id).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// Marks the runs damaged (a read failed its checksum).
    pub fn mark_damaged(&self) {
        self.damaged
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a read found a run damaged since the last call.
    pub fn take_damaged(&self) -> bool {
        self.damaged
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Looks `key` up from the newest run to the oldest.
    pub fn lookup(&self, key: &[u8]) -> Result<Found, String> {
        for run in self.snapshot().iter().rev() {
            let found = run.get(key).inspect_err(|_| self.mark_damaged())?;
            match found {
                Some(v) if v.is_empty() => return Ok(Found::Removed),
                Some(v) => return Ok(Found::Series(v)),
                None => {}
            }
        }
        Ok(Found::Absent)
    }

    /// An id after every run's.
    fn next_id(&self) -> u64 {
        self.snapshot().iter().map(|r| r.id + 1).max().unwrap_or(1)
    }

    /// Writes `entries` (key order) into a new run file, synced and named,
    /// and opens it; the caller records it ([`Runs::publish`]). `None` when
    /// there were no entries.
    pub fn write(
        &self,
        entries: impl Iterator<Item = Result<Entry, String>>,
    ) -> Result<Option<Arc<Run>>, String> {
        self.write_as(self.next_id(), entries)
    }

    /// Writes `entries` in any order (a key twice: either value) into one
    /// new run, as [`Runs::write`] does: an external sort. Each `chunk`
    /// entries are sorted in memory and written to a run of their own (not
    /// recorded: a crash leaves files that the next open removes), then
    /// those runs are merged into one and removed.
    pub fn write_sorted(
        &self,
        entries: impl Iterator<Item = Result<Entry, String>>,
        chunk: usize,
    ) -> Result<Option<Arc<Run>>, String> {
        let chunk = chunk.max(1);
        let mut next = self.next_id();
        let mut parts: Vec<Arc<Run>> = Vec::new();
        let mut buf: Vec<Entry> = Vec::with_capacity(chunk.min(1 << 16));
        let mut flush = |buf: &mut Vec<Entry>, parts: &mut Vec<Arc<Run>>| -> Result<(), String> {
            buf.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            buf.dedup_by(|a, b| a.0 == b.0);
            if let Some(run) = self.write_as(next, buf.drain(..).map(Ok))? {
                next += 1;
                parts.push(run);
            }
            Ok(())
        };
        for e in entries {
            buf.push(e?);
            if buf.len() >= chunk {
                flush(&mut buf, &mut parts)?;
            }
        }
        flush(&mut buf, &mut parts)?;
        if parts.len() <= 1 {
            return Ok(parts.pop());
        }
        // Keys are unique within a part; a key in two parts (read twice
        // while it moved) keeps either value, as above.
        let sources = parts.iter().map(|r| r.iter_after(None)).collect();
        let merged = self.write_as(next, Merge::new(sources, false)?);
        self.remove_files(&parts)?;
        merged
    }

    /// [`Runs::write`] under run id `id`.
    fn write_as(
        &self,
        id: u64,
        entries: impl Iterator<Item = Result<Entry, String>>,
    ) -> Result<Option<Arc<Run>>, String> {
        let tmp = self.dir.join(format!("run-{id:016x}.tmp"));
        let mut w = RunWriter::create(&tmp)?;
        for e in entries {
            let (k, v) = e?;
            w.push(&k, &v)?;
        }
        if w.entries() == 0 {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        w.finish()?;
        let path = self.dir.join(Run::file_name(id));
        std::fs::rename(&tmp, &path).map_err(|e| format!("naming {}: {e}", path.display()))?;
        sync_dir(&self.dir)?;
        Ok(Some(Arc::new(Run::open(&self.dir, id)?)))
    }

    /// Makes `live` (oldest first) the runs lookups read.
    pub fn publish(&self, live: Vec<Arc<Run>>) {
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(live);
    }

    /// Removes the files of runs no longer live (readers holding them keep
    /// reading what they opened).
    pub fn remove_files(&self, gone: &[Arc<Run>]) -> Result<(), String> {
        for r in gone {
            match std::fs::remove_file(&r.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", r.path.display())),
            }
        }
        Ok(())
    }

    /// The runs a merge should take now, as a range of [`Runs::snapshot`]:
    /// the newest run and the older ones, back from it, as long as each is
    /// no bigger than twice those taken so far (so each entry is rewritten
    /// about log2(runs) times). `None`: nothing to merge.
    pub fn merge_plan(live: &[Arc<Run>]) -> Option<std::ops::Range<usize>> {
        let n = live.len();
        if n < 2 {
            return None;
        }
        let mut acc = live[n - 1].entries;
        let mut start = n - 1;
        while start > 0 && live[start - 1].entries <= acc.saturating_mul(2) {
            start -= 1;
            acc += live[start].entries;
        }
        (start < n - 1).then_some(start..n)
    }

    /// Bytes of every live run.
    pub fn bytes(&self) -> u64 {
        self.snapshot().iter().map(|r| r.bytes).sum()
    }
}

/// The ids of a recorded run list (u64 LE each).
pub fn decode_ids(v: &[u8]) -> Result<Vec<u64>, String> {
    if !v.len().is_multiple_of(8) {
        return Err("the index's list of locator runs is unreadable".into());
    }
    Ok(v.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
}

pub fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut v: Vec<_> = (0..n)
            .map(|i| {
                (
                    format!(
                        "2.25.{:040}",
                        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000_007
                    )
                    .into_bytes(),
                    format!("1.2.3.{tag}.{}", i % 7).into_bytes(),
                )
            })
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }

    fn write(runs: &Runs, e: &[(Vec<u8>, Vec<u8>)]) -> Arc<Run> {
        let run = runs
            .write(e.iter().cloned().map(Ok))
            .expect("written")
            .expect("not empty");
        let mut live = runs.snapshot().to_vec();
        live.push(run.clone());
        runs.publish(live);
        run
    }

    #[test]
    fn a_run_finds_every_key_it_holds_and_no_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        let e = entries(5_000, "a");
        let run = write(&runs, &e);
        assert!(run.blocks.len() > 10, "{} blocks", run.blocks.len());
        assert_eq!(run.entries(), e.len() as u64);
        for (k, v) in &e {
            assert_eq!(run.get(k).expect("read").as_ref(), Some(v));
        }
        for miss in [
            &b"0"[..],
            b"2.25.",
            b"2.25.0000000000000000000000000000000000000000x",
            b"9",
        ] {
            assert_eq!(run.get(miss).expect("read"), None);
        }
        // Reopened from its file.
        let again = Run::open(dir.path(), run.id()).expect("reopen");
        let all: Vec<_> = Arc::new(again)
            .iter_after(None)
            .collect::<Result<_, _>>()
            .expect("walk");
        assert_eq!(all, e);
        // From any key on, exclusive.
        let run = Arc::new(Run::open(dir.path(), run.id()).expect("reopen"));
        for cut in [0, 1, 77, 1_000, e.len() - 1] {
            let after: Vec<_> = run
                .iter_after(Some(&e[cut].0))
                .collect::<Result<_, _>>()
                .expect("walk");
            assert_eq!(after, e[cut + 1..].to_vec(), "after entry {cut}");
        }
    }

    #[test]
    fn a_damaged_run_is_refused_not_misread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        let e = entries(3_000, "a");
        let run = write(&runs, &e);
        let path = dir.path().join(Run::file_name(run.id()));
        let mut bytes = std::fs::read(&path).expect("read");
        // A changed byte inside the first block: that block's reads fail.
        bytes[100] ^= 0x20;
        std::fs::write(&path, &bytes).expect("write");
        let run = Run::open(dir.path(), run.id()).expect("the index is intact");
        let err = run.get(&e[0].0).expect_err("block checksum");
        assert!(err.contains("block 0 fails its checksum"), "{err}");
        assert_eq!(
            run.get(&e[e.len() - 1].0)
                .expect("other blocks read")
                .as_ref(),
            Some(&e[e.len() - 1].1)
        );
        // A changed byte in the block index: the run does not open.
        let n = bytes.len();
        bytes[n - 60] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let err = Run::open(dir.path(), run.id())
            .err()
            .expect("index checksum");
        assert!(err.contains("damaged"), "{err}");
        // Cut short.
        std::fs::write(&path, &bytes[..n / 2]).expect("write");
        assert!(Run::open(dir.path(), run.id()).is_err());
    }

    #[test]
    fn out_of_order_or_oversized_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = RunWriter::create(&dir.path().join("x.tmp")).expect("create");
        w.push(b"2", b"a").expect("first");
        assert!(w.push(b"2", b"b").is_err());
        assert!(w.push(b"1", b"b").is_err());
        assert!(w.push(&[b'3'; 256], b"b").is_err());
        assert!(w.push(b"", b"b").is_err());
    }

    #[test]
    fn merges_keep_the_newest_value_and_drop_tombstones_only_at_the_bottom() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        let old = write(
            &runs,
            &[
                (b"a".to_vec(), b"s1".to_vec()),
                (b"b".to_vec(), b"s1".to_vec()),
                (b"c".to_vec(), b"s1".to_vec()),
            ],
        );
        let new = write(
            &runs,
            &[
                (b"b".to_vec(), b"".to_vec()),
                (b"c".to_vec(), b"s2".to_vec()),
                (b"d".to_vec(), b"".to_vec()),
            ],
        );
        assert_eq!(runs.lookup(b"a").expect("a"), Found::Series(b"s1".to_vec()));
        assert_eq!(runs.lookup(b"b").expect("b"), Found::Removed);
        assert_eq!(runs.lookup(b"c").expect("c"), Found::Series(b"s2".to_vec()));
        assert_eq!(runs.lookup(b"e").expect("e"), Found::Absent);
        let merged = |drop| -> Vec<(Vec<u8>, Vec<u8>)> {
            Merge::new(vec![old.iter_after(None), new.iter_after(None)], drop)
                .expect("merge")
                .collect::<Result<_, _>>()
                .expect("merged")
        };
        assert_eq!(
            merged(true),
            vec![
                (b"a".to_vec(), b"s1".to_vec()),
                (b"c".to_vec(), b"s2".to_vec())
            ]
        );
        assert_eq!(
            merged(false),
            vec![
                (b"a".to_vec(), b"s1".to_vec()),
                (b"b".to_vec(), b"".to_vec()),
                (b"c".to_vec(), b"s2".to_vec()),
                (b"d".to_vec(), b"".to_vec())
            ]
        );
    }

    #[test]
    fn opening_keeps_the_recorded_runs_and_removes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        let a = write(&runs, &entries(10, "a"));
        let b = write(&runs, &entries(10, "b"));
        std::fs::write(dir.path().join("run-0000000000000009.tmp"), b"half").expect("tmp");
        let again = Runs::open(dir.path(), &[b.id()]).expect("reopen");
        assert_eq!(again.ids(), vec![b.id()]);
        assert!(!dir.path().join(Run::file_name(a.id())).exists());
        assert!(!dir.path().join("run-0000000000000009.tmp").exists());
        assert!(dir.path().join(Run::file_name(b.id())).exists());
        // A recorded run that is gone is an error, not an empty locator.
        assert!(Runs::open(dir.path(), &[a.id()]).is_err());
    }

    #[test]
    fn merge_plans_take_runs_of_similar_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        assert_eq!(Runs::merge_plan(&runs.snapshot()), None);
        write(&runs, &entries(400, "a"));
        assert_eq!(Runs::merge_plan(&runs.snapshot()), None);
        write(&runs, &entries(50, "b"));
        // 400 > 2 * 50: left alone.
        assert_eq!(Runs::merge_plan(&runs.snapshot()), None);
        write(&runs, &entries(50, "c"));
        // 50 <= 2 * 50, then 400 > 2 * 100.
        assert_eq!(Runs::merge_plan(&runs.snapshot()), Some(1..3));
        write(&runs, &entries(200, "d"));
        // 50 <= 400, 50 <= 500, 400 <= 1100: all four.
        assert_eq!(Runs::merge_plan(&runs.snapshot()), Some(0..4));
    }

    #[test]
    fn an_external_sort_writes_one_run_of_every_key_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Runs::open(dir.path(), &[]).expect("open");
        let live = write(&runs, &entries(5, "old"));
        let want = entries(1_000, "a");
        // Out of order (a fixed shuffle), with 50 keys given twice.
        let mut given = want.clone();
        given.extend(want.iter().take(50).cloned());
        let n = given.len();
        for i in 0..n {
            given.swap(i, (i * 7_919 + 13) % n);
        }
        let run = runs
            .write_sorted(given.iter().cloned().map(Ok), 64)
            .expect("sorted")
            .expect("not empty");
        assert!(run.id() > live.id());
        let got: Vec<Entry> = run.iter_after(None).map(|e| e.expect("entry")).collect();
        assert_eq!(got, want);
        // The parts are gone: the live run and the sorted one are left.
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            vec![Run::file_name(live.id()), Run::file_name(run.id())]
        );
        // One part: written as is.
        let one = runs
            .write_sorted(entries(10, "b").into_iter().rev().map(Ok), 64)
            .expect("sorted")
            .expect("not empty");
        assert_eq!(one.entries(), 10);
        assert!(runs
            .write_sorted(std::iter::empty(), 64)
            .expect("sorted")
            .is_none());
    }

    #[test]
    fn recorded_id_lists_round_trip() {
        assert_eq!(
            decode_ids(&encode_ids(&[1, 7, u64::MAX])).expect("ids"),
            vec![1, 7, u64::MAX]
        );
        assert!(decode_ids(b"123").is_err());
    }
}
