//! The embedded index on sled.
//!
//! Trees: one per level (`patients`, `studies`, `series`, `instances`), the
//! secondary indexes the query planner uses (`study_by_date`,
//! `study_by_patient`, `study_by_accession`, `study_by_name` on folded name
//! words, `series_by_study`, `instance_by_series`), the `journal` of blob work
//! in progress and `meta` (counters, clean-shutdown flag). `metadata` holds
//! each instance's DICOM JSON from ingest until its series has been quiet
//! for a while and the archive has moved it into the series' metadata blob
//! (`series_metadata`: series → blob key); `metadata_dirty` marks the
//! series changed since (series → change mark and time), and
//! `metadata_garbage` the blobs replaced or orphaned, to delete. Every put and
//! remove updates all of them in one sled transaction, so counters stay right
//! under concurrent writers; a writer mutex avoids transaction retries. The
//! same database holds the users and machine tokens
//! ([`crate::credentials`]) in trees of their own.
//!
//! Durability: sled makes writes durable only with a full flush (several
//! milliseconds), so every put and remove is also appended to a write-ahead
//! log ([`crate::wal`]) under the writer lock. [`Index::flush`], called
//! before any success is acknowledged, is an `fdatasync` of that log shared
//! by concurrent callers (group commit). A background checkpoint (sled
//! flush, then log truncation) runs every [`CHECKPOINT_INTERVAL`]; opening
//! the index replays the log.
//!
//! Instances are keyed by series then SOP Instance UID (`instance_by_series`
//! holds the records, `metadata` the JSON); `instances` holds only the
//! recent entries of the locator (SOP Instance UID → series), which the
//! checkpoint thread moves into sorted run files beside the index
//! ([`crate::locator`]).
//!
//! The index is always rebuildable from the blobs (`pacs reindex`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::matching::fold_text;
use pacs_core::ports::{
    DirtySeries, Index, IndexPut, IndexStats, JournalEntry, PortError, SeriesMetadataEntries,
};
use pacs_core::query::{FindResult, Level, Match, Query};
use pacs_core::records::{
    name_words, InstanceAttributes, InstanceRecord, PatientRecord, SeriesRecord, StudyRecord,
};
use pacs_core::Uid;

use crate::format::{
    decode_versioned, encode_versioned, prefix_version, strip_version, NewerFormat, FORMAT_KEY,
    INDEX_FORMAT, INDEX_RECORD,
};
use crate::locator::{Entry, Found, Merge, Run, Runs};
use crate::wal::{Frame, Wal, WalError, WalRecord};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

const PATIENTS: usize = 0;
const STUDIES: usize = 1;
const SERIES: usize = 2;
const INSTANCES: usize = 3;
const STUDY_BY_DATE: usize = 4;
const STUDY_BY_PATIENT: usize = 5;
const STUDY_BY_ACCESSION: usize = 6;
const STUDY_BY_NAME: usize = 7;
const SERIES_BY_STUDY: usize = 8;
const INSTANCE_BY_SERIES: usize = 9;
const META: usize = 10;
const JOURNAL: usize = 11;
const METADATA: usize = 12;
const STUDY_BY_MODALITY: usize = 13;
const SERIES_METADATA: usize = 14;
const METADATA_DIRTY: usize = 15;
const METADATA_GARBAGE: usize = 16;
const STUDY_BY_NAME_LEAD: usize = 17;
const TREE_NAMES: [&str; 18] = [
    "patients",
    "studies",
    "series",
    "instances",
    "study_by_date",
    "study_by_patient",
    "study_by_accession",
    "study_by_name",
    "series_by_study",
    "instance_by_series",
    "meta",
    "journal",
    "metadata",
    "study_by_modality",
    "series_metadata",
    "metadata_dirty",
    "metadata_garbage",
    "study_by_name_lead",
];

/// The longest name prefix `study_by_name_lead` keeps: a `P*` name search
/// with `P` up to this many characters reads only its page (the total is a
/// counter); a longer `P` walks the entries of its first characters.
pub(crate) const NAME_LEAD_MAX: usize = 6;

/// Set in `meta` once `study_by_name_lead` and its counters have been
/// built for the studies an older index already held (see `open_db`).
const NAME_LEAD_INDEX_BUILT: &[u8] = b"built/study_by_name_lead";

/// Prefix in `meta` of the number of studies under each name prefix.
const NAME_LEAD_COUNT: &[u8] = b"count/lead/";

/// Set in `meta` once `study_by_modality` has been built, keyed by date
/// (format 3), for the studies an older index already held (see
/// `open_db`).
const MODALITY_INDEX_BUILT: &[u8] = b"built/study_by_modality/dated";
/// The mark of the format-2 layout (modality, UID), removed when the
/// entries are built again.
const MODALITY_INDEX_BUILT_UNDATED: &[u8] = b"built/study_by_modality";

const N_PATIENTS: &[u8] = b"count/patients";
const N_STUDIES: &[u8] = b"count/studies";
const N_SERIES: &[u8] = b"count/series";
const N_INSTANCES: &[u8] = b"count/instances";
const N_BYTES: &[u8] = b"count/bytes";
const CLEAN: &[u8] = b"clean_shutdown";
/// The value of keys whose presence is what counts (secondary trees,
/// flags, landing marks): the record version alone.
pub(crate) const PRESENT: &[u8] = &[INDEX_RECORD];
/// Prefix in `meta` of the marks of instances put while their landing
/// record was being synced (see `Index::put_landing`).
const LANDING_MARK: &[u8] = b"landing/";

fn landing_mark(sop: &Uid) -> Vec<u8> {
    let mut k = LANDING_MARK.to_vec();
    k.extend_from_slice(sop.as_str().as_bytes());
    k
}

/// The value of a `metadata_dirty` entry: the change mark, then when
/// (milliseconds since the epoch), both u64 big endian.
fn dirty_value(mark: u64, at_ms: u64) -> Vec<u8> {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&mark.to_be_bytes());
    v[8..].copy_from_slice(&at_ms.to_be_bytes());
    prefix_version(INDEX_RECORD, &v)
}

fn parse_dirty(v: &[u8]) -> Option<(u64, u64)> {
    let b = strip_version(INDEX_RECORD, v).ok()?;
    let mark = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let at = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    Some((mark, at))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Marks a series changed (its metadata blob, if any, is behind).
fn tx_mark_dirty(t: &[TransactionalTree], series: &str) -> TxResult<()> {
    let mark = t[META].generate_id()?;
    t[METADATA_DIRTY].insert(series.as_bytes(), dirty_value(mark, now_ms()))?;
    Ok(())
}

/// Why the index cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum IndexOpenError {
    #[error("cannot open the index log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot replay the index log: {0}; run `pacs reindex` to rebuild the index from the blobs"
    )]
    Replay(String),
    #[error(transparent)]
    Newer(#[from] NewerFormat),
    #[error("cannot migrate the index at {path} to format {INDEX_FORMAT}: {message}; run `pacs reindex` to rebuild it from the blobs")]
    Migrate { path: String, message: String },
    #[error("cannot open the index at {path}: {source} (is another `pacs` process using this data dir?)")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
}

/// sled's page cache, in bytes, for the indexes opened from now on
/// ([`SledIndex::set_cache_capacity`]). sled's own default (1 GiB) let the
/// server's memory follow the index up to that size; a hospital server
/// shares its memory with the pixel work, so the default here is smaller.
static CACHE_CAPACITY: AtomicU64 = AtomicU64::new(DEFAULT_CACHE_CAPACITY);

/// The default of [`CACHE_CAPACITY`] (config `index_cache_bytes`).
pub const DEFAULT_CACHE_CAPACITY: u64 = 256 << 20;

/// How often the background checkpoint runs.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The default of [`SledIndex::set_reopen_after`] (config
/// `index_reopen_after_bytes`): 128 MiB of index log, about 37,000
/// instances. A node that is never quiet reopens at twice that, a pause of
/// about 7 s on the 2-core test machine (about 27 s at 1 GiB: a DIMSE peer
/// with a 10 s timeout, Orthanc's default, would give up on a store).
pub const DEFAULT_REOPEN_AFTER: u64 = 128 << 20;

/// A node past this many times its limit reopens without waiting for a
/// quiet moment.
const FORCE_FACTOR: u64 = 2;

/// Checkpoint ticks without a write that make the index quiet (10 s).
const QUIET_TICKS: u32 = 5;

/// Whether the checkpoint thread reopens the database now: once `limit`
/// bytes have been logged since it was opened, at the first quiet moment,
/// and at once past [`FORCE_FACTOR`] times `limit` (a node that is never
/// quiet).
fn reopen_due(limit: u64, appended: u64, quiet: u32) -> bool {
    limit > 0
        && appended >= limit
        && (quiet >= QUIET_TICKS || appended >= limit.saturating_mul(FORCE_FACTOR))
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The writer lock; it owns the write-ahead log (none for temporary
    /// indexes, which then flush sled itself).
    writer: std::sync::Mutex<Option<Wal>>,
    /// A second handle on the log file, to fsync without the writer lock.
    wal_sync: Option<std::fs::File>,
    written: AtomicU64,
    durable: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// The locator runs (none for temporary indexes, whose locators all
    /// stay in `instances`).
    runs: Option<Runs>,
    /// Puts and removes since the locators were last moved into a run
    /// (at open: the entries `instances` holds, up to the move's limit).
    unmoved: AtomicU64,
}

/// The sled index.
#[derive(Clone)]
pub struct SledIndex {
    cell: Arc<Cell>,
}

/// The open database, which the checkpoint thread may replace. sled keeps
/// the first I/O error it meets (a full disk, say) and refuses every later
/// operation with it until the database is opened again; so when a
/// checkpoint finds sled in that state it reopens the index from disk and
/// replays the index log, and writes work again once space is back,
/// without a restart. While that runs (or until it succeeds) index calls
/// fail with "index unavailable".
pub(crate) struct Cell {
    current: std::sync::RwLock<Option<Arc<Inner>>>,
    /// Bytes of index log after which the checkpoint thread reopens the
    /// database (0: never); see [`SledIndex::set_reopen_after`].
    reopen_after: AtomicU64,
    /// Entries in `instances` after which the checkpoint thread moves them
    /// into a locator run; see [`SledIndex::set_locator_move_at`].
    locator_move_at: AtomicU64,
    /// Planned reopens done.
    reopens: AtomicU64,
    /// The ids of the queued and running jobs ([`crate::workflow`]).
    pub(crate) active_jobs: crate::workflow::ActiveJobs,
}

impl Cell {
    /// A handle on the current database, for a short operation (the
    /// credential trees): it must be dropped before a reopen can succeed.
    pub(crate) fn current_db(&self) -> Result<sled::Db, PortError> {
        Ok(self.current()?.db.clone())
    }

    fn current(&self) -> Result<Arc<Inner>, PortError> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                PortError::Index(
                    "index unavailable: it is being reopened after an I/O error".into(),
                )
            })
    }

    /// Replaces a database sled refuses to use with one opened again from
    /// `dir` and its log. Gives up (to be tried again at the next
    /// checkpoint) if the old one is still in use after a while or the
    /// reopen fails.
    fn reopen(&self, dir: &Path) {
        let old = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            // sled holds a lock on its files until the last handle is
            // dropped: let calls in flight finish first.
            let mut old = Some(old);
            for _ in 0..500 {
                match old.take().map(Arc::try_unwrap) {
                    Some(Ok(inner)) => drop(inner),
                    Some(Err(shared)) => {
                        old = Some(shared);
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    None => {}
                }
                break;
            }
            if let Some(old) = old {
                tracing::warn!("the index is still in use; reopening it is tried again later");
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(old);
                return;
            }
        }
        match SledIndex::open_inner(dir) {
            Ok(inner) => {
                tracing::info!("index reopened after an I/O error; writes resume");
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inner);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reopening the index failed; will retry");
            }
        }
    }
}

impl Cell {
    /// The planned reopen that bounds sled's recovery (sled writes its
    /// snapshot only when a database is opened, and replays every log
    /// segment written since at the next open, after a clean stop as after
    /// a crash). Index calls wait while it runs instead of failing: the
    /// write lock is held throughout. Gives up, to try again at a later
    /// checkpoint, if calls in flight keep the old database for 5 s.
    fn reopen_planned(&self, dir: &Path) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut old) = current.take() else {
            return;
        };
        let mut waited = 0;
        let inner = loop {
            match Arc::try_unwrap(old) {
                Ok(inner) => break inner,
                Err(shared) if waited < 500 => {
                    old = shared;
                    waited += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(shared) => {
                    tracing::info!("the index is busy; its planned reopen is tried again later");
                    *current = Some(shared);
                    return;
                }
            }
        };
        let started = std::time::Instant::now();
        // Everything logged is put into sled and flushed, so the new open
        // replays nothing of the index log.
        if let Err(e) = inner.checkpoint() {
            tracing::warn!(error = %e, "checkpoint before the planned reopen failed; the log is replayed");
        }
        drop(inner);
        match SledIndex::open_inner(dir) {
            Ok(inner) => {
                *current = Some(inner);
                self.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "index reopened: a restart or a crash recovery now replays only what is written from here"
                );
            }
            Err(e) => {
                // `current` stays empty: calls fail with "index
                // unavailable" and the next checkpoint tries again.
                tracing::warn!(error = %e, "reopening the index failed; will retry");
            }
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn ser<T: Serialize>(v: &T) -> Result<Vec<u8>, UnabortableTransactionError> {
    encode_versioned(INDEX_RECORD, v)
        .map_err(|e| UnabortableTransactionError::Storage(sled::Error::Unsupported(e.to_string())))
}

fn de<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PortError> {
    decode_versioned(INDEX_RECORD, bytes).map_err(|e| PortError::Index(e.to_string()))
}

fn de_tx<T: DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    decode_versioned(INDEX_RECORD, bytes)
        .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))
}

/// A counter in `meta`: the record version, then an i64 (big endian).
fn counter_value(v: &[u8]) -> i64 {
    strip_version(INDEX_RECORD, v)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, i64::from_be_bytes)
}

/// The DICOM JSON stored in `metadata` (after its version byte).
fn raw_metadata(v: &[u8]) -> Result<&[u8], PortError> {
    strip_version(INDEX_RECORD, v).map_err(|e| PortError::Index(e.to_string()))
}

fn idx_err(e: sled::Error) -> PortError {
    PortError::Index(e.to_string())
}

fn tx_err(e: TransactionError<String>) -> PortError {
    match e {
        TransactionError::Abort(m) => PortError::Index(m),
        TransactionError::Storage(e) => idx_err(e),
    }
}

/// The value of an instance's entry in `instances` (format 4): its
/// series, under which its record (`instance_by_series`) and its JSON
/// (`metadata`) are keyed, `join_key(series, sop)`.
fn locator(series: &str) -> Vec<u8> {
    prefix_version(INDEX_RECORD, series.as_bytes())
}

/// The series an `instances` entry names.
fn locator_series(v: &[u8]) -> Result<&str, String> {
    let b = strip_version(INDEX_RECORD, v).map_err(|e| e.to_string())?;
    std::str::from_utf8(b).map_err(|_| "an instance's series entry is not UTF-8".to_string())
}

/// The series of instance `sop`, from its entry in `instances` (`recent`)
/// if there is one, else from the locator runs (see [`crate::locator`]);
/// `None` when neither names one, or the newest entry is a tombstone (an
/// empty series).
fn locate(recent: Option<&[u8]>, runs: Option<&Runs>, sop: &str) -> Result<Option<String>, String> {
    if let Some(v) = recent {
        let series = locator_series(v)?;
        return Ok((!series.is_empty()).then(|| series.to_owned()));
    }
    let Some(runs) = runs else { return Ok(None) };
    match runs.lookup(sop.as_bytes())? {
        Found::Series(s) => String::from_utf8(s)
            .map(Some)
            .map_err(|_| format!("the locator of instance {sop} is not UTF-8")),
        Found::Removed | Found::Absent => Ok(None),
    }
}

/// Entries the locator rebuild sorts in memory at once (about 80 MB of
/// UIDs); an index holding more is sorted in parts that are then merged.
const REBUILD_CHUNK: usize = 1 << 19;

/// Writes the locator of every instance whose record `instance_by_series`
/// holds (its SOP Instance UID → its series) into one new run, sorted
/// outside sled ([`Runs::write_sorted`]), unrecorded: the caller records
/// and publishes it in place of the runs it had. What `instances` holds
/// (entries and tombstones newer than any run) stays, and still comes
/// first for every lookup; so does what a put or remove writes there while
/// this runs (a remove leaves a tombstone as long as runs are live).
fn rebuild_run(trees: &[sled::Tree], runs: &Runs) -> Result<Option<Arc<Run>>, String> {
    let entries = trees[INSTANCE_BY_SERIES].iter().keys().map(|k| {
        let k = k.map_err(|e| e.to_string())?;
        let Some(cut) = k.iter().position(|b| *b == 0) else {
            return Err("an instance entry has no series part".to_owned());
        };
        Ok((k[cut + 1..].to_vec(), k[..cut].to_vec()))
    });
    runs.write_sorted(entries, REBUILD_CHUNK)
}

/// Opens the locator runs `meta` lists. A run that is missing or damaged
/// (a disk error, a file removed by hand) makes the index rebuild its
/// locator from the instances' records into one new run
/// ([`rebuild_run`]) before it opens.
fn open_runs(db: &sled::Db, trees: &[sled::Tree], dir: &Path) -> Result<Runs, IndexOpenError> {
    let fail = |message: String| IndexOpenError::Migrate {
        path: dir.display().to_string(),
        message,
    };
    let ids = match trees[META]
        .get(LOCATOR_RUNS)
        .map_err(|e| fail(e.to_string()))?
    {
        Some(v) => crate::locator::decode_ids(&v),
        None => Ok(Vec::new()),
    };
    let opened = ids.and_then(|ids| Runs::open(dir, &ids));
    match opened {
        Ok(runs) => Ok(runs),
        Err(e) => {
            tracing::warn!(error = %e, "the instance locator's runs cannot be read: rebuilding the locator from the index's records");
            let started = std::time::Instant::now();
            // Every file goes (the list still names them until the new
            // run is recorded: a crash before then rebuilds again).
            let runs = Runs::open(dir, &[]).map_err(fail)?;
            let live: Vec<Arc<Run>> = rebuild_run(trees, &runs)
                .map_err(fail)?
                .into_iter()
                .collect();
            let ids: Vec<u64> = live.iter().map(|r| r.id()).collect();
            trees[META]
                .insert(LOCATOR_RUNS, crate::locator::encode_ids(&ids))
                .map_err(|e| fail(e.to_string()))?;
            db.flush().map_err(|e| fail(e.to_string()))?;
            tracing::info!(
                instances = live.iter().map(|r| r.entries()).sum::<u64>(),
                seconds = started.elapsed().as_secs_f64(),
                "instance locator rebuilt"
            );
            runs.publish(live);
            Ok(runs)
        }
    }
}

/// Key in `meta` of the live locator runs' ids, oldest first
/// ([`crate::locator::encode_ids`]).
const LOCATOR_RUNS: &[u8] = b"locator/runs";

/// Entries in `instances` after which the checkpoint thread moves them
/// into a locator run (the default of [`SledIndex::set_locator_move_at`]).
/// Small: the fewer keys of random UIDs sled holds at once, the less of its
/// file their rewritten pages take (100 k instances: 1,024 B on disk per
/// instance with 1,024, 1,190 B with 4,096, 1,981 B with 65,536; see
/// docs/benchmarks.md). A busy node moves at every checkpoint (2 s).
pub const DEFAULT_LOCATOR_MOVE_AT: u64 = 1_024;

/// The directory of an index's locator runs.
pub fn locator_dir(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("locator")
}

fn join_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

/// The folded word a Patient's Name key lets the planner look up in
/// `study_by_name` (every candidate is then matched in full), if any.
fn name_search_word(q: &Query) -> Option<String> {
    let name_key = q.keys.iter().find(|k| k.attribute.tag == 0x0010_0010)?;
    let word = if q.fuzzy {
        name_words(&name_key.raw).into_iter().next()
    } else {
        name_key
            .matcher
            .literal_prefix()
            .or_else(|| {
                name_key
                    .matcher
                    .exact_values()
                    .and_then(|v| v.into_iter().next())
            })
            .and_then(|p| {
                // Only the first component's leading word is a safe
                // word prefix of the stored name.
                let folded = fold_text(&p);
                folded
                    .split(['^', '=', ' ', ','])
                    .next()
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
            })
    };
    word.filter(|w| !w.contains(['*', '?']))
}

/// How a study search can be answered from secondary entries alone
/// (their values carry the date key and the value matched), reading only
/// the page's records.
enum EntryPlan<'q> {
    /// Only Patient's Name constrains: `study_by_name` under this word.
    Name(&'q pacs_core::query::Key, String),
    /// Only Modalities in Study (these values), and perhaps a Study Date
    /// range: `study_by_modality` under each modality.
    Modality(Vec<String>, Option<&'q pacs_core::query::Key>),
}

fn entry_plan(q: &Query) -> Option<EntryPlan<'_>> {
    use pacs_core::matching::Matcher;
    if q.level != Level::Study || q.fuzzy || q.request_attributes.is_some() {
        return None;
    }
    let constraining: Vec<&pacs_core::query::Key> = q
        .keys
        .iter()
        .filter(|k| !k.matcher.is_universal())
        .collect();
    match constraining.as_slice() {
        [k] if k.attribute.tag == 0x0010_0010 => name_search_word(q).map(|w| EntryPlan::Name(k, w)),
        keys if !keys.is_empty() && keys.len() <= 2 => {
            let mut mods = None;
            let mut date = None;
            for k in keys {
                match k.attribute.tag {
                    0x0008_0061 => mods = Some(Matcher::exact_values(&k.matcher)?),
                    0x0008_0020 if k.matcher.range().is_some() => date = Some(*k),
                    _ => return None,
                }
            }
            let mods: Vec<String> = mods?.iter().map(|m| m.trim().to_owned()).collect();
            Some(EntryPlan::Modality(mods, date))
        }
        _ => None,
    }
}

/// A study search whose one constraint is a Patient's Name `P*` (what a
/// worklist's name box sends): the key and `P`, folded.
pub(crate) fn name_lead_plan(q: &Query) -> Option<(&pacs_core::query::Key, String)> {
    if q.level != Level::Study || q.fuzzy || q.request_attributes.is_some() {
        return None;
    }
    let mut constraining = q.keys.iter().filter(|k| !k.matcher.is_universal());
    match (constraining.next(), constraining.next()) {
        (Some(k), None) if k.attribute.tag == 0x0010_0010 => {
            k.matcher.pn_prefix_pattern().map(|p| (k, p))
        }
        _ => None,
    }
}

/// Sort key of a study by date and time: `YYYYMMDDHHMMSS` (missing parts as
/// zeros), so reverse iteration is newest first.
fn date_key(study: &StudyRecord) -> Vec<u8> {
    let date: String = study
        .study_date
        .chars()
        .filter(char::is_ascii_digit)
        .take(8)
        .collect();
    let time: String = study
        .study_time
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    join_key(
        &format!("{date:0<8}{time:0<6}"),
        study.study_instance_uid.as_str(),
    )
}

fn add_counter(meta: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<()> {
    let cur = meta.get(key)?.map_or(0, |v| counter_value(&v));
    meta.insert(
        key,
        prefix_version(INDEX_RECORD, &(cur + delta).to_be_bytes()),
    )?;
    Ok(())
}

/// The value of a `study_by_name` entry: the record version, the study's
/// date key (14 digits, as in `study_by_date`), then its Patient's Name as
/// stored. A name search counts, orders and matches its candidates from
/// these without reading their study records (older entries hold the
/// version alone and are read from the record).
fn name_entry(study: &StudyRecord) -> Vec<u8> {
    entry_value(study, &study.patient_name)
}

/// The value of a `study_by_modality` entry: the record version, the
/// study's date key (14 digits), then its Study Date as stored.
fn date_entry(study: &StudyRecord) -> Vec<u8> {
    entry_value(study, &study.study_date)
}

/// The record version, the study's date key (14 digits), then `matched`.
fn entry_value(study: &StudyRecord, matched: &str) -> Vec<u8> {
    let date = date_key(study);
    let mut v = Vec::with_capacity(1 + 14 + matched.len());
    v.push(INDEX_RECORD);
    v.extend_from_slice(&date[..14]);
    v.extend_from_slice(matched.as_bytes());
    v
}

/// What a `study_by_name` (or `study_by_modality`) value holds: (date
/// key, Patient's Name or Study Date), or `None` for an entry written
/// before the value carried them.
fn parse_name_entry(v: &[u8]) -> Option<(&[u8], &str)> {
    let rest = strip_version(INDEX_RECORD, v).ok()?;
    if rest.len() < 14 {
        return None;
    }
    Some((&rest[..14], std::str::from_utf8(&rest[14..]).ok()?))
}

/// The `study_by_name_lead` entries of a study and the `meta` counters
/// they count in: for each lead prefix `P` of its Patient's Name (see
/// [`pacs_core::matching::pn_lead_prefixes`]), the key `P`, 0, then the date
/// key (so a reversed scan of `P`, 0 is newest first, in the general plan's
/// order), and the counter `count/lead/P`.
fn name_lead_keys(study: &StudyRecord) -> Vec<(Vec<u8>, Vec<u8>)> {
    let date = date_key(study);
    pacs_core::matching::pn_lead_prefixes(&study.patient_name, NAME_LEAD_MAX)
        .into_iter()
        .map(|p| {
            let mut key = Vec::with_capacity(p.len() + 1 + date.len());
            key.extend_from_slice(p.as_bytes());
            key.push(0);
            key.extend_from_slice(&date);
            (key, name_lead_counter(&p))
        })
        .collect()
}

fn name_lead_counter(prefix: &str) -> Vec<u8> {
    let mut k = NAME_LEAD_COUNT.to_vec();
    k.extend_from_slice(prefix.as_bytes());
    k
}

fn study_secondary_keys(study: &StudyRecord) -> Vec<(usize, Vec<u8>)> {
    let uid = study.study_instance_uid.as_str();
    let mut keys = vec![
        (STUDY_BY_DATE, date_key(study)),
        (STUDY_BY_PATIENT, join_key(&study.patient_id, uid)),
    ];
    if !study.accession_number.is_empty() {
        keys.push((STUDY_BY_ACCESSION, join_key(&study.accession_number, uid)));
    }
    for w in name_words(&study.patient_name) {
        keys.push((STUDY_BY_NAME, join_key(&w, uid)));
    }
    keys
}

/// The `study_by_modality` key of a study with modality `m`: `m`, 0, then
/// the date key (14 digits, 0, the UID), so a date range of one modality
/// is a range of keys, newest last.
fn modality_key(m: &str, study: &StudyRecord) -> Vec<u8> {
    let date = date_key(study);
    let mut k = Vec::with_capacity(m.len() + 1 + date.len());
    k.extend_from_slice(m.as_bytes());
    k.push(0);
    k.extend_from_slice(&date);
    k
}

/// The Study Instance UID at the end of a `study_by_modality` key.
fn modality_key_uid(k: &[u8]) -> Option<&[u8]> {
    let pos = k.iter().position(|b| *b == 0)?;
    k.get(pos + 1 + 15..)
}

/// Fills `study_by_modality` from the studies of an index written before
/// that tree existed or before its keys carried the date (format 2, whose
/// entries are removed first); once, then `tx_insert` / `tx_remove`
/// maintain it. Starts from empty each time, so an open cut short builds
/// it again.
fn build_modality_index(db: &sled::Db, trees: &[sled::Tree]) -> sled::Result<()> {
    if trees[META].contains_key(MODALITY_INDEX_BUILT)? {
        return Ok(());
    }
    trees[STUDY_BY_MODALITY].clear()?;
    for kv in trees[STUDIES].iter() {
        let (_, v) = kv?;
        let Ok(study) = decode_versioned::<StudyRecord>(INDEX_RECORD, &v) else {
            continue;
        };
        for m in study.modalities.keys() {
            trees[STUDY_BY_MODALITY].insert(modality_key(m, &study), date_entry(&study))?;
        }
    }
    trees[META].remove(MODALITY_INDEX_BUILT_UNDATED)?;
    trees[META].insert(MODALITY_INDEX_BUILT, PRESENT)?;
    db.flush()?;
    Ok(())
}

/// Fills `study_by_name_lead` and its counters from the studies of an index
/// written before that tree existed; once, then `tx_insert` / `tx_remove`
/// maintain them. Starts from empty each time, so an open interrupted
/// half-way builds them again from the start; the counters are set, not
/// added to.
fn build_name_lead_index(db: &sled::Db, trees: &[sled::Tree]) -> sled::Result<()> {
    if trees[META].contains_key(NAME_LEAD_INDEX_BUILT)? {
        return Ok(());
    }
    trees[STUDY_BY_NAME_LEAD].clear()?;
    for kv in trees[META].scan_prefix(NAME_LEAD_COUNT) {
        let (k, _) = kv?;
        trees[META].remove(k)?;
    }
    let mut counts: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
    let mut studies = 0u64;
    for kv in trees[STUDIES].iter() {
        let (_, v) = kv?;
        let Ok(study) = decode_versioned::<StudyRecord>(INDEX_RECORD, &v) else {
            continue;
        };
        for (key, counter) in name_lead_keys(&study) {
            trees[STUDY_BY_NAME_LEAD].insert(key, name_entry(&study))?;
            *counts.entry(counter).or_insert(0) += 1;
        }
        studies += 1;
    }
    for (counter, n) in counts {
        trees[META].insert(counter, prefix_version(INDEX_RECORD, &n.to_be_bytes()))?;
    }
    trees[META].insert(NAME_LEAD_INDEX_BUILT, PRESENT)?;
    db.flush()?;
    if studies > 0 {
        tracing::info!(
            studies,
            "name prefix index built for the studies already held"
        );
    }
    Ok(())
}

/// Removes one instance inside a transaction, maintaining every counter.
fn tx_remove(
    t: &[TransactionalTree],
    runs: Option<&Runs>,
    sop: &Uid,
) -> TxResult<Option<InstanceRecord>> {
    let recent = t[INSTANCES].get(sop.as_str().as_bytes())?;
    let from_recent = recent.is_some();
    let Some(series) = locate(recent.as_deref(), runs, sop.as_str())
        .map_err(ConflictableTransactionError::Abort)?
    else {
        return Ok(None);
    };
    let entry = join_key(&series, sop.as_str());
    let Some(raw) = t[INSTANCE_BY_SERIES].remove(entry.as_slice())? else {
        if !from_recent {
            // A run's entry for an instance removed since: absent.
            return Ok(None);
        }
        return Err(ConflictableTransactionError::Abort(format!(
            "the index names a series for instance {sop} but holds no record of it"
        )));
    };
    // A run may hold the instance's locator: a tombstone hides it.
    if runs.is_some_and(|r| !r.is_empty()) {
        t[INSTANCES].insert(sop.as_str().as_bytes(), locator(""))?;
    } else {
        t[INSTANCES].remove(sop.as_str().as_bytes())?;
    }
    let inst: InstanceRecord = de_tx(&raw)?;
    let series_uid = inst.series_instance_uid.as_str();
    let study_uid = inst.study_instance_uid.as_str();
    t[META].remove(landing_mark(sop))?;
    t[METADATA].remove(entry)?;
    add_counter(&t[META], N_INSTANCES, -1)?;
    add_counter(&t[META], N_BYTES, -(inst.size as i64))?;

    let mut series_gone = false;
    let mut series_modality = String::new();
    if let Some(raw) = t[SERIES].get(series_uid.as_bytes())? {
        let mut series: SeriesRecord = de_tx(&raw)?;
        series.num_instances = series.num_instances.saturating_sub(1);
        series_modality = series.modality.clone();
        if series.num_instances == 0 {
            t[SERIES].remove(series_uid.as_bytes())?;
            t[SERIES_BY_STUDY].remove(join_key(study_uid, series_uid))?;
            add_counter(&t[META], N_SERIES, -1)?;
            series_gone = true;
            t[METADATA_DIRTY].remove(series_uid.as_bytes())?;
            if let Some(blob) = t[SERIES_METADATA].remove(series_uid.as_bytes())? {
                if let Ok(key) = strip_version(INDEX_RECORD, &blob) {
                    t[METADATA_GARBAGE].insert(key, PRESENT)?;
                }
            }
        } else {
            t[SERIES].insert(series_uid.as_bytes(), ser(&series)?)?;
            tx_mark_dirty(t, series_uid)?;
        }
    }
    let Some(raw) = t[STUDIES].get(study_uid.as_bytes())? else {
        return Ok(Some(inst));
    };
    let mut study: StudyRecord = de_tx(&raw)?;
    study.num_instances = study.num_instances.saturating_sub(1);
    decrement(&mut study.sop_classes, inst.sop_class_uid.as_str());
    if series_gone {
        study.num_series = study.num_series.saturating_sub(1);
        decrement(&mut study.modalities, &series_modality);
        if !study.modalities.contains_key(&series_modality) {
            t[STUDY_BY_MODALITY].remove(modality_key(&series_modality, &study))?;
        }
    }
    let mut study_gone = false;
    if study.num_series == 0 || study.num_instances == 0 {
        t[STUDIES].remove(study_uid.as_bytes())?;
        for (tree, key) in study_secondary_keys(&study) {
            t[tree].remove(key)?;
        }
        for m in study.modalities.keys() {
            t[STUDY_BY_MODALITY].remove(modality_key(m, &study))?;
        }
        for (key, counter) in name_lead_keys(&study) {
            t[STUDY_BY_NAME_LEAD].remove(key)?;
            add_counter(&t[META], &counter, -1)?;
        }
        add_counter(&t[META], N_STUDIES, -1)?;
        study_gone = true;
    } else {
        t[STUDIES].insert(study_uid.as_bytes(), ser(&study)?)?;
    }
    if let Some(raw) = t[PATIENTS].get(study.patient_key.as_bytes())? {
        let mut patient: PatientRecord = de_tx(&raw)?;
        patient.num_instances = patient.num_instances.saturating_sub(1);
        if series_gone {
            patient.num_series = patient.num_series.saturating_sub(1);
        }
        if study_gone {
            patient.num_studies = patient.num_studies.saturating_sub(1);
        }
        if patient.num_studies == 0 {
            t[PATIENTS].remove(study.patient_key.as_bytes())?;
            add_counter(&t[META], N_PATIENTS, -1)?;
        } else {
            t[PATIENTS].insert(study.patient_key.as_bytes(), ser(&patient)?)?;
        }
    }
    Ok(Some(inst))
}

fn decrement(map: &mut std::collections::BTreeMap<String, u32>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Inserts one instance (which must not be present) inside a transaction.
fn tx_insert(t: &[TransactionalTree], attrs: &InstanceAttributes) -> TxResult<()> {
    let inst = &attrs.instance;
    let sop = inst.sop_instance_uid.as_str();
    let series_uid = inst.series_instance_uid.as_str();
    let study_uid = inst.study_instance_uid.as_str();

    let (mut series, new_series) = match t[SERIES].get(series_uid.as_bytes())? {
        Some(raw) => (de_tx::<SeriesRecord>(&raw)?, false),
        None => {
            let mut s = attrs.series.clone();
            s.num_instances = 0;
            (s, true)
        }
    };
    series.num_instances += 1;
    t[SERIES].insert(series_uid.as_bytes(), ser(&series)?)?;

    let (mut study, new_study) = match t[STUDIES].get(study_uid.as_bytes())? {
        Some(raw) => (de_tx::<StudyRecord>(&raw)?, false),
        None => {
            let mut s = attrs.study.clone();
            s.num_series = 0;
            s.num_instances = 0;
            s.modalities.clear();
            s.sop_classes.clear();
            (s, true)
        }
    };
    study.num_instances += 1;
    *study
        .sop_classes
        .entry(inst.sop_class_uid.as_str().to_owned())
        .or_insert(0) += 1;
    if new_series {
        study.num_series += 1;
        if !series.modality.is_empty() {
            let n = study.modalities.entry(series.modality.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                t[STUDY_BY_MODALITY]
                    .insert(modality_key(&series.modality, &study), date_entry(&study))?;
            }
        }
        t[SERIES_BY_STUDY].insert(join_key(study_uid, series_uid), PRESENT)?;
        add_counter(&t[META], N_SERIES, 1)?;
    }
    if new_study {
        for (tree, key) in study_secondary_keys(&study) {
            if tree == STUDY_BY_NAME {
                t[tree].insert(key, name_entry(&study))?;
            } else {
                t[tree].insert(key, PRESENT)?;
            }
        }
        for (key, counter) in name_lead_keys(&study) {
            t[STUDY_BY_NAME_LEAD].insert(key, name_entry(&study))?;
            add_counter(&t[META], &counter, 1)?;
        }
        add_counter(&t[META], N_STUDIES, 1)?;
    }
    t[STUDIES].insert(study_uid.as_bytes(), ser(&study)?)?;

    let (mut patient, new_patient) = match t[PATIENTS].get(study.patient_key.as_bytes())? {
        Some(raw) => (de_tx::<PatientRecord>(&raw)?, false),
        None => {
            let mut p = attrs.patient.clone();
            p.num_studies = 0;
            p.num_series = 0;
            p.num_instances = 0;
            (p, true)
        }
    };
    patient.num_instances += 1;
    if new_series {
        patient.num_series += 1;
    }
    if new_study {
        patient.num_studies += 1;
    }
    if new_patient {
        add_counter(&t[META], N_PATIENTS, 1)?;
    }
    t[PATIENTS].insert(study.patient_key.as_bytes(), ser(&patient)?)?;

    // Keyed by series then SOP Instance UID: the instances of a series,
    // which arrive together, land in the same pages; only the small
    // locator is keyed by the (often random) SOP Instance UID alone.
    let entry = join_key(series_uid, sop);
    t[INSTANCES].insert(sop.as_bytes(), locator(series_uid))?;
    t[INSTANCE_BY_SERIES].insert(entry.as_slice(), ser(inst)?)?;
    t[METADATA].insert(entry, prefix_version(INDEX_RECORD, &attrs.metadata))?;
    tx_mark_dirty(t, series_uid)?;
    add_counter(&t[META], N_INSTANCES, 1)?;
    add_counter(&t[META], N_BYTES, inst.size as i64)?;
    Ok(())
}

/// Removes every row given, then inserts them again: the study, its
/// patient and the secondary entries are rebuilt from the new values.
fn tx_replace_study(
    t: &[TransactionalTree],
    runs: Option<&Runs>,
    rows: &[InstanceAttributes],
) -> TxResult<()> {
    for attrs in rows {
        tx_remove(t, runs, &attrs.instance.sop_instance_uid)?;
    }
    for attrs in rows {
        tx_insert(t, attrs)?;
    }
    Ok(())
}

/// Replays what the index log holds into sled, then checkpoints (at open,
/// and when the index is reopened after an I/O error).
fn replay(inner: &Inner, records: Vec<WalRecord>) -> Result<(), IndexOpenError> {
    if records.is_empty() {
        return Ok(());
    }
    let n = records.len();
    let log_err = |e: PortError| IndexOpenError::Replay(e.to_string());
    for record in &records {
        inner
            .trees
            .as_slice()
            .transaction(|t| apply(t, inner.runs.as_ref(), record))
            .map_err(tx_err)
            .map_err(log_err)?;
    }
    inner.checkpoint().map_err(log_err)?;
    tracing::info!(records = n, "index log replayed");
    Ok(())
}

/// Applies one logged mutation (replay after a crash).
fn apply(t: &[TransactionalTree], runs: Option<&Runs>, record: &WalRecord) -> TxResult<()> {
    match record {
        WalRecord::Put(attrs) => {
            tx_remove(t, runs, &attrs.instance.sop_instance_uid)?;
            tx_insert(t, attrs)
        }
        WalRecord::PutLanding(attrs) => {
            tx_remove(t, runs, &attrs.instance.sop_instance_uid)?;
            tx_insert(t, attrs)?;
            t[META].insert(landing_mark(&attrs.instance.sop_instance_uid), PRESENT)?;
            Ok(())
        }
        WalRecord::ReplaceStudy(rows) => tx_replace_study(t, runs, rows),
        WalRecord::Remove { sop, journal_id } => {
            if let Some(old) = tx_remove(t, runs, sop)? {
                let entry = JournalEntry::Delete { key: old.blob_key };
                t[JOURNAL].insert(&journal_id.to_be_bytes(), ser(&entry)?)?;
            }
            Ok(())
        }
    }
}

/// Opens sled and its trees, checking the index format: a newer one is
/// refused before anything is written, an older one is migrated, a new
/// index gets the current one.
fn open_db(
    config: sled::Config,
    path: &str,
    format_file: Option<&Path>,
) -> Result<(sled::Db, Vec<sled::Tree>), IndexOpenError> {
    let open_err = |source| IndexOpenError::Open {
        path: path.to_owned(),
        source,
    };
    let db = config.open().map_err(open_err)?;
    let meta = db.open_tree(TREE_NAMES[META]).map_err(open_err)?;
    let found = match meta.get(FORMAT_KEY).map_err(open_err)? {
        Some(v) => Some(
            <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_le_bytes)
                .map_err(|_| IndexOpenError::Migrate {
                    path: path.to_owned(),
                    message: "the stored format version is unreadable".into(),
                })?,
        ),
        None => None,
    };
    if let Some(v) = found.filter(|v| *v > INDEX_FORMAT) {
        return Err(NewerFormat {
            what: format!("the index at {path}"),
            found: v,
            supported: INDEX_FORMAT,
        }
        .into());
    }
    let trees = TREE_NAMES
        .iter()
        .map(|n| db.open_tree(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(open_err)?;
    match found {
        Some(INDEX_FORMAT) => {}
        None if trees.iter().all(sled::Tree::is_empty) && db.is_empty() => {
            // A new index. Flushed at once: later writes then never reach
            // the disk without it.
            meta.insert(FORMAT_KEY, &INDEX_FORMAT.to_le_bytes())
                .map_err(open_err)?;
            db.flush().map_err(open_err)?;
        }
        // Values already current without the key (it was lost): a format-0
        // counter is 8 bytes, a current one 9.
        None if meta
            .get(N_INSTANCES)
            .map_err(open_err)?
            .is_some_and(|v| v.len() == 9 && v[0] == INDEX_RECORD) =>
        {
            tracing::warn!(
                index = path,
                "the index's format key was missing but its values are current; it is written again"
            );
            meta.insert(FORMAT_KEY, &INDEX_FORMAT.to_le_bytes())
                .map_err(open_err)?;
            db.flush().map_err(open_err)?;
        }
        other => migrate(&db, other.unwrap_or(0)).map_err(|message| IndexOpenError::Migrate {
            path: path.to_owned(),
            message,
        })?,
    }
    if let Some(f) = format_file {
        write_format_file(f).map_err(|source| IndexOpenError::Log {
            path: f.display().to_string(),
            source,
        })?;
    }
    build_modality_index(&db, &trees).map_err(open_err)?;
    build_name_lead_index(&db, &trees).map_err(open_err)?;
    crate::workflow::build_mpps_accessions(&db, &trees[META]).map_err(open_err)?;
    Ok((db, trees))
}

const FORMAT_FILE_PREFIX: &str = "sen-pacs index format ";

/// Refuses an index whose format file (`index.format`, beside the sled
/// directory) names a newer format, before sled opens it. The `meta` key
/// is the authority; the file lets a newer index be refused untouched.
fn check_format_file(path: &Path) -> Result<(), IndexOpenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(IndexOpenError::Log {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let found = text
        .trim()
        .strip_prefix(FORMAT_FILE_PREFIX.trim_end())
        .and_then(|v| v.trim().parse::<u32>().ok());
    match found {
        Some(v) if v > INDEX_FORMAT => Err(NewerFormat {
            what: format!("the index beside {}", path.display()),
            found: v,
            supported: INDEX_FORMAT,
        }
        .into()),
        Some(_) => Ok(()),
        None => Err(IndexOpenError::Migrate {
            path: path.display().to_string(),
            message: "the format file is unreadable".into(),
        }),
    }
}

/// Writes the format file (temporary file, sync, rename) unless it is
/// already current.
fn write_format_file(path: &Path) -> std::io::Result<()> {
    let text = format!("{FORMAT_FILE_PREFIX}{INDEX_FORMAT}\n");
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension("format.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Records converted per transaction while migrating.
const MIGRATE_BATCH: usize = 1000;
/// A progress line every so many records.
const MIGRATE_REPORT: u64 = 100_000;

/// Migrates the index to [`INDEX_FORMAT`] in place: format 0 (before
/// versioning) first gets the version byte in front of each value
/// ([`add_version_bytes`]), then formats 0 to 3 get their instances keyed
/// by series ([`rekey_instances_by_series`]); format 4 needs no change of
/// a record (format 5's MPPS accession entries are built at open). Each
/// batch of either and the
/// key it ends at (in sled's default tree, under `migrate/`) are written
/// in one transaction, so a migration cut by a crash resumes where it
/// stopped and converts no value twice; the format key is written last,
/// then the `migrate/` keys removed.
fn migrate(db: &sled::Db, from: u32) -> Result<(), String> {
    let err = |e: sled::Error| e.to_string();
    if from > 4 {
        return Err(format!("no migration from format {from}"));
    }
    if from == 0 {
        add_version_bytes(db)?;
    }
    // Format 2 added the per-series metadata trees (created empty at
    // open), format 3 the name prefix entries (built after this, at open,
    // until `built/study_by_name_lead` is set); neither changed a record.
    // Format 4 keys the instances by series; format 5 added the MPPS
    // accession entries (built after this, at open, until
    // `built/mpps_by_accession` is set).
    if from < 4 {
        rekey_instances_by_series(db)?;
    }
    db.open_tree(TREE_NAMES[META])
        .and_then(|meta| meta.insert(FORMAT_KEY, &INDEX_FORMAT.to_le_bytes()))
        .map_err(err)?;
    db.flush().map_err(err)?;
    for kv in db.scan_prefix(b"migrate/") {
        let (k, _) = kv.map_err(err)?;
        db.remove(k).map_err(err)?;
    }
    db.flush().map_err(err)?;
    tracing::info!(from, to = INDEX_FORMAT, "index migrated");
    Ok(())
}

/// Format 0 to 1: every value of every tree gets the version byte.
fn add_version_bytes(db: &sled::Db) -> Result<(), String> {
    let err = |e: sled::Error| e.to_string();
    let from = 0;
    let default_tree: &sled::Tree = db;
    // The trees of format 0 only: trees added since (credentials) carry
    // versions of their own from the start.
    let names: Vec<sled::IVec> = TREE_NAMES.iter().map(|n| sled::IVec::from(*n)).collect();
    let total: u64 = names
        .iter()
        .map(|n| db.open_tree(n).map(|t| t.len() as u64))
        .sum::<sled::Result<u64>>()
        .map_err(err)?;
    tracing::info!(
        from,
        to = INDEX_FORMAT,
        records = total,
        "migrating the index to the current format"
    );
    let mut done: u64 = 0;
    let mut reported: u64 = 0;
    for name in &names {
        let tree = db.open_tree(name).map_err(err)?;
        let done_key = [b"migrate/1/done/".as_slice(), name].concat();
        let last_key = [b"migrate/1/last/".as_slice(), name].concat();
        if db.contains_key(&done_key).map_err(err)? {
            done += tree.len() as u64;
            continue;
        }
        let mut last = db.get(&last_key).map_err(err)?;
        loop {
            let iter = match &last {
                Some(k) => tree.range::<&[u8], _>((
                    std::ops::Bound::Excluded(k.as_ref()),
                    std::ops::Bound::Unbounded,
                )),
                None => tree.iter(),
            };
            let batch = iter
                .take(MIGRATE_BATCH)
                .collect::<sled::Result<Vec<_>>>()
                .map_err(err)?;
            let Some((end, _)) = batch.last() else { break };
            let end = end.clone();
            (&tree, default_tree)
                .transaction(|(t, d)| {
                    for (k, v) in &batch {
                        if name.as_ref() == TREE_NAMES[META].as_bytes() && k == FORMAT_KEY {
                            continue;
                        }
                        t.insert(k.clone(), prefix_version(INDEX_RECORD, v))?;
                    }
                    d.insert(last_key.as_slice(), end.clone())?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| format!("{e:?}"))?;
            done += batch.len() as u64;
            if done >= reported + MIGRATE_REPORT {
                reported = done;
                tracing::info!(done, total, "migrating the index");
            }
            last = Some(end);
        }
        db.insert(&done_key, PRESENT).map_err(err)?;
    }
    db.flush().map_err(err)?;
    tracing::info!(records = done, "every index value versioned");
    Ok(())
}

/// Where the format-4 step has got to (in sled's default tree): the last
/// SOP Instance UID rekeyed.
const REKEY_LAST: &[u8] = b"migrate/4/last";

/// Formats 1 to 3 to 4: each instance's record moves from `instances`
/// (keyed by SOP Instance UID) to `instance_by_series` (keyed by series
/// then SOP Instance UID, where the key alone stood), `instances` keeps a
/// locator naming the series, and the instance's JSON in `metadata` moves
/// to the same series-first key. Series arrive together, so their entries
/// share pages, where keys of random UIDs spread every store over the
/// whole tree (sled rewrites each page a store touches; see
/// docs/benchmarks.md). In batches, each with the UID it ends at in one
/// transaction, so a migration cut by a crash resumes after the last batch
/// and rekeys nothing twice.
fn rekey_instances_by_series(db: &sled::Db) -> Result<(), String> {
    let err = |e: sled::Error| e.to_string();
    let open = |i: usize| db.open_tree(TREE_NAMES[i]).map_err(err);
    let default_tree: sled::Tree = (**db).clone();
    let trees = [
        open(INSTANCES)?,
        open(INSTANCE_BY_SERIES)?,
        open(METADATA)?,
        default_tree,
    ];
    let total = trees[0].len() as u64;
    let mut last = db.get(REKEY_LAST).map_err(err)?;
    if total > 0 {
        tracing::info!(
            instances = total,
            resumed = last.is_some(),
            to = INDEX_FORMAT,
            "keying the index's instances by series"
        );
    }
    let (mut done, mut reported) = (0u64, 0u64);
    loop {
        let iter = match &last {
            Some(k) => trees[0].range::<&[u8], _>((
                std::ops::Bound::Excluded(k.as_ref()),
                std::ops::Bound::Unbounded,
            )),
            None => trees[0].iter(),
        };
        let batch = iter
            .take(MIGRATE_BATCH)
            .collect::<sled::Result<Vec<_>>>()
            .map_err(err)?;
        let Some((end, _)) = batch.last() else { break };
        let end = end.clone();
        trees
            .as_slice()
            .transaction(|t| {
                for (sop, record) in &batch {
                    // Already a locator (a series UID; a record starts
                    // with a length holding zero bytes): rekeyed.
                    if locator_series(record).is_ok_and(|s| Uid::parse(s).is_ok()) {
                        continue;
                    }
                    let inst: InstanceRecord = de_tx(record)?;
                    let sop = std::str::from_utf8(sop).map_err(|_| {
                        ConflictableTransactionError::Abort(format!(
                            "an instance key is not UTF-8: {sop:?}"
                        ))
                    })?;
                    let series = inst.series_instance_uid.as_str();
                    let entry = join_key(series, sop);
                    t[1].insert(entry.as_slice(), record.clone())?;
                    t[0].insert(sop.as_bytes(), locator(series))?;
                    if let Some(json) = t[2].remove(sop.as_bytes())? {
                        t[2].insert(entry, json)?;
                    }
                }
                t[3].insert(REKEY_LAST, end.clone())?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(m) => m,
                TransactionError::Storage(e) => e.to_string(),
            })?;
        done += batch.len() as u64;
        if done >= reported + MIGRATE_REPORT {
            reported = done;
            tracing::info!(done, total, "keying the index's instances by series");
        }
        last = Some(end);
    }
    db.flush().map_err(err)?;
    Ok(())
}

/// Removes the snapshot files sled was still writing when its process died.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, syncs it and
/// renames it to `snap.<lsn>`; only then does it delete the older snapshot.
/// The rename is the commit point, so a `.generating` file is never a
/// snapshot sled finished, and the previous snapshot is still on disk. sled's
/// own listing does not skip such files, though: it picks the one that sorts
/// last, finds it empty or torn and refuses to open ("Read corrupted data").
/// Removing them restores exactly the state before the interrupted write.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), IndexOpenError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(IndexOpenError::Log {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(
                file = %path.display(),
                "removing an index snapshot left unfinished by a crash"
            );
            std::fs::remove_file(&path).map_err(|source| IndexOpenError::Log {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Whether sled compresses the index's pages (zstd): yes for a new index;
/// an existing one keeps what it was created with (its `conf` file), as
/// sled refuses to change it.
fn sled_compression(dir: &Path) -> bool {
    // The file ends in a binary checksum: read it as bytes.
    match std::fs::read(dir.join("conf")) {
        Ok(conf) => String::from_utf8_lossy(&conf)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == "use_compression")
            .is_some_and(|(_, v)| v.trim() == "true"),
        Err(_) => true,
    }
}

/// The index's size on disk before and after [`SledIndex::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    pub before: u64,
    pub after: u64,
}

/// Writes every tree of `db` into a new sled database at `dest`, carrying
/// its id generator forward (sled's export leaves it out, and the index,
/// job and patient-change ids and the series metadata marks must never
/// repeat one already given), and syncs it.
fn copy_db(db: &sled::Db, dest: &Path) -> Result<(), PortError> {
    let copy = sled::Config::new()
        .path(dest)
        .use_compression(true)
        .compression_factor(1)
        .flush_every_ms(None)
        .open()
        .map_err(idx_err)?;
    copy.import(db.export());
    let next = db.generate_id().map_err(idx_err)?;
    while copy.generate_id().map_err(idx_err)? < next {}
    copy.flush().map_err(idx_err)?;
    Ok(())
}

/// Puts back an index a crash left moved aside in the middle of
/// [`SledIndex::compact`] (no `<dir>`, a `<dir>.before-compact`); removes a
/// copy left unfinished (`<dir>.compacting`) when the index is in place.
fn restore_interrupted_compaction(dir: &Path) -> Result<(), IndexOpenError> {
    let old = dir.with_extension("before-compact");
    let copy = dir.with_extension("compacting");
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source: std::io::Error| IndexOpenError::Log {
            path: path.clone(),
            source,
        }
    };
    if !dir.exists() && old.exists() {
        tracing::warn!(index = %dir.display(), "putting back the index an interrupted compaction moved aside");
        std::fs::rename(&old, dir).map_err(err(&old))?;
    }
    if dir.exists() {
        if copy.exists() {
            std::fs::remove_dir_all(&copy).map_err(err(&copy))?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(err(&old))?;
        }
    }
    Ok(())
}

/// The bytes of every file under `dir`.
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// Opens the sled database of an index directly, with the compression it
/// was created with (tests and inspection; the server opens the index with
/// [`SledIndex::open`]).
pub fn open_raw(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .use_compression(sled_compression(dir))
        .compression_factor(1)
        .open()
}

impl SledIndex {
    /// Writes every tree into a new sled database at `dest` (which must not
    /// exist) and returns its size on disk: the index's live data without
    /// the space sled's log-structured files still hold for replaced
    /// pages (benchmarks compare the two).
    pub fn copy_to(&self, dest: &Path) -> Result<u64, PortError> {
        if dest.exists() {
            return Err(PortError::Index(format!("{} exists", dest.display())));
        }
        let db = self.cell.current_db()?;
        copy_db(&db, dest)?;
        dir_size(dest).map_err(|e| PortError::Index(format!("sizing {}: {e}", dest.display())))
    }

    /// Rewrites the index in `dir` into new files that hold only its live
    /// data, offline (`pacs compact-index`): sled's log-structured files
    /// keep replaced pages, so a long-lived index holds several times its
    /// live data on disk. Fails, touching nothing, if another process holds
    /// the index. The log is replayed and emptied first; the copy is
    /// written beside the index (`<dir>.compacting`) and synced, then the
    /// index is moved to `<dir>.before-compact`, the copy into its place,
    /// and the old files removed. A crash between the two moves leaves no
    /// `<dir>`: the next open moves `<dir>.before-compact` back.
    pub fn compact(dir: &Path) -> Result<CompactReport, IndexOpenError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source: std::io::Error| IndexOpenError::Log {
                path: path.clone(),
                source,
            }
        };
        let port = |e: PortError| IndexOpenError::Migrate {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        restore_interrupted_compaction(dir)?;
        let before = dir_size(dir).map_err(io(dir))?;
        let copy = dir.with_extension("compacting");
        let old = dir.with_extension("before-compact");
        {
            let inner = Self::open_inner(dir)?;
            inner.checkpoint().map_err(port)?;
            if copy.exists() {
                std::fs::remove_dir_all(&copy).map_err(io(&copy))?;
            }
            copy_db(&inner.db, &copy).map_err(port)?;
        }
        std::fs::rename(dir, &old).map_err(io(dir))?;
        std::fs::rename(&copy, dir).map_err(io(&copy))?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
        let after = dir_size(dir).map_err(io(dir))?;
        Ok(CompactReport { before, after })
    }

    /// Reopens the database, at the first quiet moment (10 s without a
    /// write), once `bytes` of index log have been written since it was
    /// opened, and at once past twice that (config
    /// `index_reopen_after_bytes`; 0: never). sled replays at each open
    /// all it has written since the previous one, after a clean stop as
    /// after a crash; this bounds that. Calls wait while it runs.
    pub fn set_reopen_after(&self, bytes: u64) {
        self.cell.reopen_after.store(bytes, Ordering::Relaxed);
    }

    /// Moves the instance locators sled holds into a sorted run file once
    /// there are `n` of them (0: never; tests use small values).
    pub fn set_locator_move_at(&self, n: u64) {
        self.cell.locator_move_at.store(n, Ordering::Relaxed);
    }

    /// Does the locator upkeep of a checkpoint now, moving whatever sled
    /// holds when `force` (tests, benchmarks).
    pub fn maintain_locators(&self, force: bool) -> Result<(), PortError> {
        let inner = self.inner()?;
        let at = if force {
            1
        } else {
            self.cell.locator_move_at.load(Ordering::Relaxed)
        };
        if force {
            inner.unmoved.fetch_max(1, Ordering::SeqCst);
        }
        inner.maintain_locators(at)
    }

    /// The ids and entries of the locator runs, oldest first (tests).
    pub fn locator_runs(&self) -> Result<Vec<(u64, u64)>, PortError> {
        Ok(match &self.inner()?.runs {
            Some(runs) => runs
                .snapshot()
                .iter()
                .map(|r| (r.id(), r.entries()))
                .collect(),
            None => Vec::new(),
        })
    }

    /// Planned reopens since this index was opened.
    pub fn planned_reopens(&self) -> u64 {
        self.cell.reopens.load(Ordering::Relaxed)
    }

    /// The page-cache size of every index opened (or reopened) after this
    /// call, in bytes (config `index_cache_bytes`).
    pub fn set_cache_capacity(bytes: u64) {
        CACHE_CAPACITY.store(bytes.max(1 << 20), Ordering::Relaxed);
    }

    /// Opens (or creates) the index in `dir`, with its log beside it
    /// (`<dir>.wal`), replaying the log.
    pub fn open(dir: &Path) -> Result<SledIndex, IndexOpenError> {
        let index = SledIndex::from_inner(Self::open_inner(dir)?);
        let wal_path = dir.with_extension("wal");
        let weak = Arc::downgrade(&index.cell);
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("index-checkpoint".into())
            .spawn(move || {
                // Index log bytes at the last tick, and ticks since they moved.
                let mut last = 0u64;
                let mut quiet = 0u32;
                loop {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    let Some(cell) = weak.upgrade() else { break };
                    let Ok(inner) = cell.current() else {
                        cell.reopen(&dir);
                        continue;
                    };
                    if let Err(e) = inner.checkpoint() {
                        tracing::warn!(error = %e, "index checkpoint failed; will retry");
                        // A sled that keeps an I/O error refuses even a flush.
                        if matches!(inner.db.flush(), Err(sled::Error::Io(_))) {
                            drop(inner);
                            cell.reopen(&dir);
                        }
                        continue;
                    }
                    if let Err(e) =
                        inner.maintain_locators(cell.locator_move_at.load(Ordering::Relaxed))
                    {
                        tracing::warn!(error = %e, "instance locator upkeep failed; will retry");
                    }
                    let appended = inner.appended();
                    drop(inner);
                    if appended == last {
                        quiet = quiet.saturating_add(1);
                    } else {
                        quiet = 0;
                        last = appended;
                    }
                    if reopen_due(cell.reopen_after.load(Ordering::Relaxed), appended, quiet) {
                        cell.reopen_planned(&dir);
                        last = 0;
                        quiet = 0;
                    }
                }
            })
            .map_err(|source| IndexOpenError::Log {
                path: wal_path.display().to_string(),
                source,
            })?;
        Ok(index)
    }

    /// Opens sled in `dir` and its log, and replays the log.
    fn open_inner(dir: &Path) -> Result<Arc<Inner>, IndexOpenError> {
        // sled's own periodic flush is off: durability comes from the log,
        // and the checkpoint flushes sled itself. The periodic flush only
        // competed with the stores' fsyncs for the disk.
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY.load(Ordering::Relaxed))
            .use_compression(sled_compression(dir))
            .compression_factor(1)
            .flush_every_ms(None);
        // The format file first: sled writes to its files as it opens, and
        // a newer index must be left as it is.
        let format_path = dir.with_extension("format");
        check_format_file(&format_path)?;
        restore_interrupted_compaction(dir)?;
        remove_unfinished_snapshots(dir)?;
        // Then sled: it holds the data dir's lock, and its format key
        // decides before the log is touched.
        let (db, trees) = open_db(config, &dir.display().to_string(), Some(&format_path))?;
        let wal_path = dir.with_extension("wal");
        let (wal, records) = Wal::open(&wal_path).map_err(|e| match e {
            WalError::Newer(n) => IndexOpenError::Newer(n),
            WalError::Io(source) => IndexOpenError::Log {
                path: wal_path.display().to_string(),
                source,
            },
            other => IndexOpenError::Log {
                path: wal_path.display().to_string(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        let runs = open_runs(&db, &trees, &locator_dir(dir))?;
        let inner = Self::assemble(db, trees, Some(wal), Some(runs))?;
        replay(&inner, records)?;
        Ok(inner)
    }

    fn from_inner(inner: Arc<Inner>) -> SledIndex {
        SledIndex {
            cell: Arc::new(Cell {
                current: std::sync::RwLock::new(Some(inner)),
                reopen_after: AtomicU64::new(DEFAULT_REOPEN_AFTER),
                locator_move_at: AtomicU64::new(DEFAULT_LOCATOR_MOVE_AT),
                reopens: AtomicU64::new(0),
                active_jobs: crate::workflow::ActiveJobs::default(),
            }),
        }
    }

    fn inner(&self) -> Result<Arc<Inner>, PortError> {
        self.cell.current()
    }

    /// The users and machine tokens kept in the same database (trees that
    /// `clear` leaves alone).
    pub fn credentials(&self) -> Result<crate::SledCredentials, IndexOpenError> {
        crate::SledCredentials::open(self.cell.clone()).map_err(|e| IndexOpenError::Open {
            path: "credential trees".to_owned(),
            source: sled::Error::Unsupported(e.to_string()),
        })
    }

    /// The job queue and MPPS trees in the same database.
    pub fn workflow(&self) -> Result<crate::SledWorkflow, IndexOpenError> {
        crate::SledWorkflow::open(self.cell.clone()).map_err(|e| IndexOpenError::Open {
            path: "workflow trees".to_owned(),
            source: sled::Error::Unsupported(e.to_string()),
        })
    }

    /// The orders (worklist steps) kept in the same database (trees that
    /// `clear` leaves alone).
    pub fn orders(&self) -> Result<crate::SledOrders, IndexOpenError> {
        crate::SledOrders::open(self.cell.clone()).map_err(|e| IndexOpenError::Open {
            path: "order trees".to_owned(),
            source: sled::Error::Unsupported(e.to_string()),
        })
    }

    /// The patient changes and coercions kept in the same database (trees
    /// that `clear` leaves alone).
    pub fn patients(&self) -> Result<crate::SledPatients, IndexOpenError> {
        crate::SledPatients::open(self.cell.clone()).map_err(|e| IndexOpenError::Open {
            path: "patient trees".to_owned(),
            source: sled::Error::Unsupported(e.to_string()),
        })
    }

    /// Opens a temporary index that disappears when dropped (tests).
    pub fn temporary() -> Result<SledIndex, IndexOpenError> {
        let (db, trees) = open_db(sled::Config::new().temporary(true), "<temporary>", None)?;
        Self::assemble(db, trees, None, None).map(SledIndex::from_inner)
    }

    fn assemble(
        db: sled::Db,
        trees: Vec<sled::Tree>,
        wal: Option<Wal>,
        runs: Option<Runs>,
    ) -> Result<Arc<Inner>, IndexOpenError> {
        let unmoved = trees[INSTANCES]
            .iter()
            .take(DEFAULT_LOCATOR_MOVE_AT as usize)
            .count() as u64;
        let wal_sync = match &wal {
            Some(w) => Some(w.sync_handle().map_err(|source| IndexOpenError::Log {
                path: w.path().display().to_string(),
                source,
            })?),
            None => None,
        };
        Ok(Arc::new(Inner {
            db,
            trees,
            writer: std::sync::Mutex::new(wal),
            wal_sync,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            runs,
            unmoved: AtomicU64::new(unmoved),
        }))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, PortError> + Send + 'static,
    {
        let inner = self.inner()?;
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| PortError::Index(format!("index task failed: {e}")))?
    }

    fn mark_written(&self) {
        if let Ok(inner) = self.inner() {
            inner.written.fetch_add(1, Ordering::SeqCst);
            inner.unmoved.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl SledIndex {
    async fn put_inner(
        &self,
        attrs: InstanceAttributes,
        landing: bool,
    ) -> Result<IndexPut, PortError> {
        let result = self
            .blocking(move |inner| {
                let mut w = inner.writer_lock()?;
                let attrs = Box::new(attrs);
                let sop = attrs.instance.sop_instance_uid.clone();
                let record = if landing {
                    WalRecord::PutLanding(attrs)
                } else {
                    WalRecord::Put(attrs)
                };
                // Encoded first: an entry the log could not replay is
                // refused before sled sees it.
                let frame = Inner::frame(&w, &record)?;
                let (WalRecord::Put(attrs) | WalRecord::PutLanding(attrs)) = &record else {
                    return Err(PortError::Index("not a put".into()));
                };
                let result = inner
                    .trees
                    .as_slice()
                    .transaction(|t| {
                        let old = tx_remove(t, inner.runs.as_ref(), &sop)?;
                        tx_insert(t, attrs)?;
                        if landing {
                            t[META].insert(landing_mark(&sop), PRESENT)?;
                        }
                        Ok(match old {
                            Some(o) => IndexPut::Replaced(Box::new(o)),
                            None => IndexPut::Inserted,
                        })
                    })
                    .map_err(tx_err)?;
                Inner::log(&mut w, frame)?;
                Ok(result)
            })
            .await?;
        self.mark_written();
        Ok(result)
    }
}

impl Inner {
    /// The writer lock, which orders sled transactions and log records.
    fn writer_lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Wal>>, PortError> {
        self.writer
            .lock()
            .map_err(|_| PortError::Index("index writer lock poisoned".into()))
    }

    /// Bytes of index log written since the database was opened.
    fn appended(&self) -> u64 {
        self.writer
            .lock()
            .map(|w| w.as_ref().map_or(0, Wal::appended))
            .unwrap_or(0)
    }

    /// Flushes sled and empties the log, under the writer lock; every write
    /// logged so far is then durable in sled.
    fn checkpoint(&self) -> Result<(), PortError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| PortError::Index("index writer lock poisoned".into()))?;
        let covering = self.written.load(Ordering::SeqCst);
        self.db.flush().map_err(idx_err)?;
        if let Some(wal) = w.as_mut() {
            if !wal.is_empty() {
                wal.truncate()
                    .map_err(|e| PortError::Index(format!("truncating the index log: {e}")))?;
            }
        }
        self.durable.fetch_max(covering, Ordering::SeqCst);
        Ok(())
    }

    /// Moves the locators `instances` holds into a new run, merges runs
    /// when due, and rebuilds the locator when a read found a run damaged
    /// (the checkpoint thread, after each checkpoint).
    fn maintain_locators(&self, move_at: u64) -> Result<(), PortError> {
        let Some(runs) = &self.runs else {
            return Ok(());
        };
        if runs.take_damaged() {
            return self.rebuild_locators(runs);
        }
        if move_at > 0 && self.unmoved.load(Ordering::SeqCst) >= move_at {
            self.move_locators(runs)?;
        }
        self.merge_locators(runs)
    }

    /// Records `live` (oldest first) as the index's locator runs, durably.
    fn record_runs(&self, live: &[Arc<crate::locator::Run>]) -> Result<(), PortError> {
        let ids: Vec<u64> = live.iter().map(|r| r.id()).collect();
        self.trees[META]
            .insert(LOCATOR_RUNS, crate::locator::encode_ids(&ids))
            .map_err(idx_err)?;
        self.db.flush().map_err(idx_err)?;
        Ok(())
    }

    /// Writes every entry of `instances` into a new run, records it, then
    /// removes from `instances` each entry the run holds unchanged (a put
    /// or remove since has the newer value, which stays).
    fn move_locators(&self, runs: &Runs) -> Result<(), PortError> {
        let _work = runs.work.lock();
        let started = std::time::Instant::now();
        self.unmoved.store(0, Ordering::SeqCst);
        let entries = self.trees[INSTANCES].iter().map(|kv| {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            Ok((k.to_vec(), locator_series(&v)?.as_bytes().to_vec()))
        });
        let Some(run) = runs.write(entries).map_err(PortError::Index)? else {
            return Ok(());
        };
        let mut live = runs.snapshot().to_vec();
        live.push(run.clone());
        // Published before any entry leaves `instances`: a lookup reads
        // `instances` first, then the runs, so it always finds one of them.
        runs.publish(live.clone());
        self.record_runs(&live)?;
        let tree = &self.trees[INSTANCES];
        let mut batch: Vec<Entry> = Vec::with_capacity(MIGRATE_BATCH);
        let mut moved = 0u64;
        let mut remove = |batch: &mut Vec<Entry>| -> Result<(), PortError> {
            tree.transaction(|t| {
                for (k, series) in batch.iter() {
                    let unchanged = t.get(k)?.is_some_and(|v| {
                        locator_series(&v).is_ok_and(|s| s.as_bytes() == series.as_slice())
                    });
                    if unchanged {
                        t.remove(k.as_slice())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(tx_err)?;
            moved += batch.len() as u64;
            batch.clear();
            Ok(())
        };
        for e in run.iter_after(None) {
            batch.push(e.map_err(PortError::Index)?);
            if batch.len() >= MIGRATE_BATCH {
                remove(&mut batch)?;
            }
        }
        remove(&mut batch)?;
        tracing::info!(
            entries = moved,
            run = run.id(),
            runs = live.len(),
            seconds = started.elapsed().as_secs_f64(),
            "instance locators moved into a run"
        );
        Ok(())
    }

    /// Merges the runs [`Runs::merge_plan`] names into one.
    fn merge_locators(&self, runs: &Runs) -> Result<(), PortError> {
        let _work = runs.work.lock();
        let live = runs.snapshot();
        let Some(range) = Runs::merge_plan(&live) else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let sources: Vec<_> = live[range.clone()]
            .iter()
            .map(|r| r.iter_after(None))
            .collect();
        // Tombstones go once nothing older is left for them to hide.
        let merged = Merge::new(sources, range.start == 0).map_err(PortError::Index)?;
        let new = runs.write(merged).map_err(PortError::Index)?;
        let mut next = live[..range.start].to_vec();
        next.extend(new.clone());
        runs.publish(next.clone());
        self.record_runs(&next)?;
        runs.remove_files(&live[range.clone()])
            .map_err(PortError::Index)?;
        tracing::info!(
            merged = range.len(),
            entries = new.as_ref().map_or(0, |r| r.entries()),
            runs = next.len(),
            seconds = started.elapsed().as_secs_f64(),
            "instance locator runs merged"
        );
        Ok(())
    }

    /// Rebuilds the locator from the instances' records (a run found
    /// damaged) into one new run ([`rebuild_run`]) that replaces every run.
    /// Lookups keep working throughout, but for the damaged run's entries
    /// until it is replaced.
    fn rebuild_locators(&self, runs: &Runs) -> Result<(), PortError> {
        let _work = runs.work.lock();
        tracing::warn!(
            dir = %runs.dir().display(),
            "an instance locator run is damaged: rebuilding the locator from the index's records"
        );
        let started = std::time::Instant::now();
        let live: Vec<Arc<Run>> = rebuild_run(&self.trees, runs)
            .map_err(PortError::Index)?
            .into_iter()
            .collect();
        let gone = runs.snapshot().to_vec();
        runs.publish(live.clone());
        self.record_runs(&live)?;
        runs.remove_files(&gone).map_err(PortError::Index)?;
        tracing::info!(
            instances = live.iter().map(|r| r.entries()).sum::<u64>(),
            seconds = started.elapsed().as_secs_f64(),
            "instance locator rebuilt"
        );
        Ok(())
    }

    /// The record encoded for the log (none without a log).
    fn frame(wal: &Option<Wal>, record: &WalRecord) -> Result<Option<Frame>, PortError> {
        match wal {
            Some(_) => Wal::encode(record)
                .map(Some)
                .map_err(|e| PortError::Index(format!("index log: {e}"))),
            None => Ok(None),
        }
    }

    fn log(wal: &mut Option<Wal>, frame: Option<Frame>) -> Result<(), PortError> {
        if let (Some(wal), Some(frame)) = (wal.as_mut(), frame) {
            wal.append(&frame)
                .map_err(|e| PortError::Index(format!("writing the index log: {e}")))?;
        }
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, tree: usize, key: &[u8]) -> Result<Option<T>, PortError> {
        match self.trees[tree].get(key).map_err(idx_err)? {
            Some(raw) => Ok(Some(de(&raw)?)),
            None => Ok(None),
        }
    }

    /// The series instance `sop` is in, by its locator.
    fn locate(&self, sop: &str) -> Result<Option<String>, PortError> {
        let recent = self.trees[INSTANCES].get(sop.as_bytes()).map_err(idx_err)?;
        locate(recent.as_deref(), self.runs.as_ref(), sop).map_err(PortError::Index)
    }

    /// The record of instance `sop`: its locator, then its entry.
    fn instance_rec(&self, sop: &str) -> Result<Option<InstanceRecord>, PortError> {
        let Some(series) = self.locate(sop)? else {
            return Ok(None);
        };
        self.get(INSTANCE_BY_SERIES, &join_key(&series, sop))
    }

    /// The records of a series' instances, in SOP Instance UID order: one
    /// range of `instance_by_series`.
    fn series_instances(&self, series: &str) -> Result<Vec<InstanceRecord>, PortError> {
        let mut p = series.as_bytes().to_vec();
        p.push(0);
        let mut out = Vec::new();
        for kv in self.trees[INSTANCE_BY_SERIES].scan_prefix(&p) {
            let (_, v) = kv.map_err(idx_err)?;
            out.push(de(&v)?);
        }
        Ok(out)
    }

    /// Second components of `a\0b` keys under `prefix\0`.
    fn scan_suffixes(&self, tree: usize, prefix: &str) -> Result<Vec<String>, PortError> {
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        let mut out = Vec::new();
        for kv in self.trees[tree].scan_prefix(&p) {
            let (k, _) = kv.map_err(idx_err)?;
            out.push(String::from_utf8_lossy(&k[p.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Second components of the `a\0b` keys whose `a` starts with
    /// `prefix`, each once, in key order.
    fn scan_prefix_suffixes(&self, tree: usize, prefix: &str) -> Result<Vec<String>, PortError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for kv in self.trees[tree].scan_prefix(prefix.as_bytes()) {
            let (k, _) = kv.map_err(idx_err)?;
            if let Some(pos) = k.iter().position(|b| *b == 0) {
                let uid = String::from_utf8_lossy(&k[pos + 1..]).into_owned();
                if seen.insert(uid.clone()) {
                    out.push(uid);
                }
            }
        }
        Ok(out)
    }

    fn counter(&self, key: &[u8]) -> Result<u64, PortError> {
        Ok(match self.trees[META].get(key).map_err(idx_err)? {
            Some(v) => counter_value(&v).max(0) as u64,
            None => 0,
        })
    }

    fn study_row(&self, study: StudyRecord) -> Match {
        Match {
            study: Some(study),
            ..Match::default()
        }
    }

    fn studies_by_uids(&self, uids: &[String]) -> Result<Vec<StudyRecord>, PortError> {
        let mut out = Vec::new();
        for u in uids {
            if let Some(s) = self.get::<StudyRecord>(STUDIES, u.as_bytes())? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Candidate studies for a query, from the most selective key it has.
    fn candidate_studies(&self, q: &Query) -> Result<Vec<StudyRecord>, PortError> {
        use pacs_core::matching::Matcher;
        if let Some(uids) = q.key(0x0020_000D).and_then(Matcher::exact_values) {
            return self.studies_by_uids(&uids);
        }
        if let Some(ids) = q.key(0x0010_0020).and_then(Matcher::exact_values) {
            let mut uids = Vec::new();
            for id in ids {
                uids.extend(self.scan_suffixes(STUDY_BY_PATIENT, &id)?);
            }
            return self.studies_by_uids(&uids);
        }
        if let Some(accs) = q.key(0x0008_0050).and_then(Matcher::exact_values) {
            let mut uids = Vec::new();
            for a in accs {
                uids.extend(self.scan_suffixes(STUDY_BY_ACCESSION, &a)?);
            }
            return self.studies_by_uids(&uids);
        }
        // `VN-0001*`: a prefix of a case-sensitive LO key is a range of
        // the secondary tree (the matcher still checks every candidate).
        for (tag, tree) in [
            (0x0010_0020, STUDY_BY_PATIENT),
            (0x0008_0050, STUDY_BY_ACCESSION),
        ] {
            if let Some(prefix) = q.key(tag).and_then(Matcher::literal_prefix) {
                return self.studies_by_uids(&self.scan_prefix_suffixes(tree, &prefix)?);
            }
        }
        if let Some(word) = name_search_word(q) {
            return self.studies_by_uids(&self.scan_prefix_suffixes(STUDY_BY_NAME, &word)?);
        }
        // Modalities in study, unless a date range walks fewer studies.
        if q.key(0x0008_0020).and_then(Matcher::range).is_none() {
            if let Some(mods) = q.key(0x0008_0061).and_then(Matcher::exact_values) {
                let mut seen = HashSet::new();
                let mut uids = Vec::new();
                for m in mods {
                    // The suffix: the 14-digit date, 0, the UID.
                    for suffix in self.scan_suffixes(STUDY_BY_MODALITY, m.trim())? {
                        let Some(uid) = suffix.get(15..) else {
                            continue;
                        };
                        if seen.insert(uid.to_owned()) {
                            uids.push(uid.to_owned());
                        }
                    }
                }
                return self.studies_by_uids(&uids);
            }
        }
        let tree = &self.trees[STUDY_BY_DATE];
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match q.key(0x0008_0020).and_then(Matcher::range) {
                Some((from, to)) => {
                    let lo = from.unwrap_or_default();
                    let hi = to
                        .map(|t| format!("{t}\u{ff}"))
                        .unwrap_or_else(|| "\u{ff}".into());
                    Box::new(tree.range(lo.as_bytes().to_vec()..hi.as_bytes().to_vec()))
                }
                None => Box::new(tree.iter()),
            };
        let mut out = Vec::new();
        for kv in iter {
            let (k, _) = kv.map_err(idx_err)?;
            if let Some(pos) = k.iter().position(|b| *b == 0) {
                if let Some(s) = self.get::<StudyRecord>(STUDIES, &k[pos + 1..])? {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    fn study_level_query(q: &Query) -> Query {
        q.study_level()
    }

    /// A study search constrained only by Patient's Name (what a
    /// worklist's name box sends), or only by Modalities in Study and a
    /// Study Date range: candidates, their order and the total come from
    /// the `study_by_name` / `study_by_modality` entries (the date key and
    /// the matched value are in the value); only the page's study records
    /// are read. The same rows, order and total as the general plan.
    fn find_by_entries(&self, q: &Query) -> Result<FindResult, PortError> {
        let Some(plan) = entry_plan(q) else {
            return Err(PortError::Index("not an entry-planned search".into()));
        };
        let matches_value = |key: &pacs_core::query::Key, value: &str| {
            let values = if value.is_empty() {
                Vec::new()
            } else {
                vec![value.to_owned()]
            };
            key.matcher.matches_any(key.attribute.kind, &values)
        };
        // (tree, the keys from and below, the key to match the entry's
        // value against): a name word's entries (`word…` 0 UID), or one
        // modality's (`m` 0 date 0 UID) in the Study Date range, if any.
        type Scan<'k> = (usize, Vec<u8>, Vec<u8>, Option<&'k pacs_core::query::Key>);
        let scans: Vec<Scan<'_>> = match &plan {
            EntryPlan::Name(key, word) => {
                let from = word.as_bytes().to_vec();
                let mut below = from.clone();
                below.push(0xFF);
                vec![(STUDY_BY_NAME, from, below, Some(key))]
            }
            EntryPlan::Modality(mods, date) => {
                let (lo, hi) = date
                    .and_then(|k| k.matcher.range())
                    .map(|(from, to)| {
                        (
                            from.unwrap_or_default(),
                            to.map_or_else(|| "\u{ff}".to_owned(), |t| format!("{t}\u{ff}")),
                        )
                    })
                    .unwrap_or_else(|| (String::new(), "\u{ff}".to_owned()));
                mods.iter()
                    .map(|m| {
                        let mut from = m.as_bytes().to_vec();
                        from.push(0);
                        let mut below = from.clone();
                        from.extend_from_slice(lo.as_bytes());
                        below.extend_from_slice(hi.as_bytes());
                        (STUDY_BY_MODALITY, from, below, *date)
                    })
                    .collect()
            }
        };
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut hits: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (tree, from, below, key) in scans {
            if from >= below {
                // An empty range (its end before its start).
                continue;
            }
            for kv in self.trees[tree].range(from..below) {
                let (k, v) = kv.map_err(idx_err)?;
                let uid = if tree == STUDY_BY_MODALITY {
                    modality_key_uid(&k)
                } else {
                    k.iter().position(|b| *b == 0).and_then(|p| k.get(p + 1..))
                };
                let Some(uid) = uid.map(<[u8]>::to_vec) else {
                    continue;
                };
                if seen.contains(&uid) {
                    continue;
                }
                let (date, ok) = match parse_name_entry(&v) {
                    Some((date, value)) => {
                        (date.to_vec(), key.is_none_or(|k| matches_value(k, value)))
                    }
                    None => match self.get::<StudyRecord>(STUDIES, &uid)? {
                        Some(s) => {
                            let value = if tree == STUDY_BY_NAME {
                                &s.patient_name
                            } else {
                                &s.study_date
                            };
                            (
                                date_key(&s)[..14].to_vec(),
                                key.is_none_or(|k| matches_value(k, value)),
                            )
                        }
                        None => continue,
                    },
                };
                seen.insert(uid.clone());
                if ok {
                    hits.push((date, uid));
                }
            }
        }
        // Newest first, as the general plan orders (date key, then UID).
        hits.sort_unstable_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
        let total = hits.len();
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut matches = Vec::new();
        for (_, uid) in hits.into_iter().skip(q.offset).take(limit) {
            if let Some(s) = self.get::<StudyRecord>(STUDIES, &uid)? {
                matches.push(self.study_row(s));
            }
        }
        Ok(FindResult { matches, total })
    }

    /// A study search constrained only by a Patient's Name `P*`: a reversed
    /// scan of the `study_by_name_lead` entries under `P` (its first
    /// [`NAME_LEAD_MAX`] characters), newest first as the general plan
    /// orders. With `P` no longer than that every entry matches: only the
    /// page is read and the total is the prefix's counter. A longer `P`
    /// matches each entry's stored name and counts them all.
    fn find_by_name_lead(&self, q: &Query) -> Result<FindResult, PortError> {
        let Some((key, prefix)) = name_lead_plan(q) else {
            return Err(PortError::Index("not a name prefix search".into()));
        };
        let exact = prefix.chars().count() <= NAME_LEAD_MAX;
        let lead: String = prefix.chars().take(NAME_LEAD_MAX).collect();
        let mut scan = lead.as_bytes().to_vec();
        scan.push(0);
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut matches = Vec::new();
        let mut matched = 0usize;
        for kv in self.trees[STUDY_BY_NAME_LEAD].scan_prefix(&scan).rev() {
            if exact && matches.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(idx_err)?;
            // The key: P, 0, the 14-digit date, 0, the Study Instance UID.
            let Some(uid) = k.get(scan.len() + 15..) else {
                continue;
            };
            if !exact {
                let name = match parse_name_entry(&v) {
                    Some((_, name)) => name.to_owned(),
                    None => match self.get::<StudyRecord>(STUDIES, uid)? {
                        Some(s) => s.patient_name,
                        None => continue,
                    },
                };
                let values = if name.is_empty() {
                    Vec::new()
                } else {
                    vec![name]
                };
                if !key.matcher.matches_any(key.attribute.kind, &values) {
                    continue;
                }
            }
            matched += 1;
            if matched > q.offset && matches.len() < limit {
                if let Some(s) = self.get::<StudyRecord>(STUDIES, uid)? {
                    matches.push(self.study_row(s));
                }
            }
        }
        let total = if exact {
            self.counter(&name_lead_counter(&lead))? as usize
        } else {
            matched
        };
        Ok(FindResult { matches, total })
    }

    /// Every series, or every instance, in the order of a keyed search
    /// (studies newest first, then series and instances by number), read
    /// only up to `offset + limit` rows: studies from the date index, one
    /// series' records at a time. The total is the counter, not a count of
    /// the rows.
    fn find_unkeyed(&self, q: &Query) -> Result<FindResult, PortError> {
        let total = self.counter(if q.level == Level::Series {
            N_SERIES
        } else {
            N_INSTANCES
        })? as usize;
        let want = q.offset.saturating_add(q.limit.unwrap_or(usize::MAX));
        let num = |s: &str| s.trim().parse::<i64>().unwrap_or(i64::MAX);
        let mut rows: Vec<Match> = Vec::new();
        'studies: for kv in self.trees[STUDY_BY_DATE].iter().rev() {
            if rows.len() >= want {
                break;
            }
            let (k, _) = kv.map_err(idx_err)?;
            let Some(pos) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let Some(study) = self.get::<StudyRecord>(STUDIES, &k[pos + 1..])? else {
                continue;
            };
            let mut series = Vec::new();
            for su in self.scan_suffixes(SERIES_BY_STUDY, study.study_instance_uid.as_str())? {
                if let Some(s) = self.get::<SeriesRecord>(SERIES, su.as_bytes())? {
                    series.push(s);
                }
            }
            series.sort_by_cached_key(|s| num(&s.series_number));
            for s in series {
                if q.level == Level::Series {
                    rows.push(Match {
                        study: Some(study.clone()),
                        series: Some(s),
                        ..Match::default()
                    });
                    if rows.len() >= want {
                        break 'studies;
                    }
                    continue;
                }
                let su = s.series_instance_uid.as_str();
                let mut instances = self.series_instances(su)?;
                instances.sort_by_cached_key(|i| num(&i.instance_number));
                for i in instances {
                    rows.push(Match {
                        study: Some(study.clone()),
                        series: Some(s.clone()),
                        instance: Some(i),
                        ..Match::default()
                    });
                    if rows.len() >= want {
                        break 'studies;
                    }
                }
            }
        }
        let matches = rows.into_iter().skip(q.offset).collect();
        Ok(FindResult { matches, total })
    }

    fn find(&self, q: &Query) -> Result<FindResult, PortError> {
        use pacs_core::matching::Matcher;
        let mut rows: Vec<Match> = Vec::new();
        match q.level {
            Level::Patient => {
                for kv in self.trees[PATIENTS].iter() {
                    let (_, v) = kv.map_err(idx_err)?;
                    let row = Match {
                        patient: Some(de(&v)?),
                        ..Match::default()
                    };
                    if q.matches(&row) {
                        rows.push(row);
                    }
                }
                rows.sort_by(|a, b| {
                    let n = |m: &Match| m.patient.as_ref().map(|p| p.patient_name.clone());
                    n(a).cmp(&n(b))
                });
            }
            Level::Study if q.keys.is_empty() && q.request_attributes.is_none() => {
                // The study list a viewer opens with: walk the date index
                // newest first and stop at the page; the total is a counter.
                let total = self.counter(N_STUDIES)? as usize;
                let want = q.limit.unwrap_or(usize::MAX);
                let mut matches = Vec::new();
                for kv in self.trees[STUDY_BY_DATE].iter().rev().skip(q.offset) {
                    if matches.len() >= want {
                        break;
                    }
                    let (k, _) = kv.map_err(idx_err)?;
                    if let Some(pos) = k.iter().position(|b| *b == 0) {
                        if let Some(s) = self.get::<StudyRecord>(STUDIES, &k[pos + 1..])? {
                            matches.push(self.study_row(s));
                        }
                    }
                }
                return Ok(FindResult { matches, total });
            }
            Level::Study if name_lead_plan(q).is_some() => {
                return self.find_by_name_lead(q);
            }
            Level::Study if entry_plan(q).is_some() => {
                return self.find_by_entries(q);
            }
            Level::Study => {
                for s in self.candidate_studies(q)? {
                    let row = self.study_row(s);
                    if q.matches(&row) {
                        rows.push(row);
                    }
                }
                // Newest first; the key is built once per row, not per
                // comparison.
                rows.sort_by_cached_key(|m| std::cmp::Reverse(m.study.as_ref().map(date_key)));
            }
            Level::Series | Level::Instance
                if q.keys.is_empty() && q.request_attributes.is_none() =>
            {
                return self.find_unkeyed(q);
            }
            Level::Series | Level::Instance => {
                let series_uids: Vec<String> =
                    if let Some(uids) = q.key(0x0020_000E).and_then(Matcher::exact_values) {
                        uids
                    } else {
                        let sq = Self::study_level_query(q);
                        let studies = if sq.keys.is_empty() {
                            let mut all = Vec::new();
                            for kv in self.trees[STUDIES].iter() {
                                let (_, v) = kv.map_err(idx_err)?;
                                all.push(de::<StudyRecord>(&v)?);
                            }
                            all
                        } else {
                            self.candidate_studies(&sq)?
                        };
                        let mut uids = Vec::new();
                        for s in studies {
                            let row = self.study_row(s);
                            if sq.matches(&row) {
                                if let Some(s) = row.study {
                                    uids.extend(self.scan_suffixes(
                                        SERIES_BY_STUDY,
                                        s.study_instance_uid.as_str(),
                                    )?);
                                }
                            }
                        }
                        uids
                    };
                let sop_filter = q.key(0x0008_0018).and_then(Matcher::exact_values);
                for su in series_uids {
                    let Some(series) = self.get::<SeriesRecord>(SERIES, su.as_bytes())? else {
                        continue;
                    };
                    let study = self.get::<StudyRecord>(
                        STUDIES,
                        series.study_instance_uid.as_str().as_bytes(),
                    )?;
                    if q.level == Level::Series {
                        let row = Match {
                            study,
                            series: Some(series),
                            ..Match::default()
                        };
                        if q.matches(&row) {
                            rows.push(row);
                        }
                        continue;
                    }
                    let instances = match &sop_filter {
                        Some(sops) => {
                            let mut found = Vec::new();
                            for sop in sops {
                                if let Some(i) =
                                    self.get(INSTANCE_BY_SERIES, &join_key(&su, sop))?
                                {
                                    found.push(i);
                                }
                            }
                            found
                        }
                        None => self.series_instances(&su)?,
                    };
                    for inst in instances {
                        let row = Match {
                            study: study.clone(),
                            series: Some(series.clone()),
                            instance: Some(inst),
                            ..Match::default()
                        };
                        if q.matches(&row) {
                            rows.push(row);
                        }
                    }
                }
                let num = |s: &str| s.trim().parse::<i64>().unwrap_or(i64::MAX);
                // Studies newest first, then series and instances by number;
                // keys built once per row.
                rows.sort_by_cached_key(|m| {
                    (
                        std::cmp::Reverse(m.study.as_ref().map(date_key)),
                        m.series.as_ref().map(|s| num(&s.series_number)),
                        m.instance.as_ref().map(|i| num(&i.instance_number)),
                    )
                });
            }
        }
        let total = rows.len();
        let matches: Vec<Match> = rows
            .into_iter()
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect();
        Ok(FindResult { matches, total })
    }
}

#[async_trait]
impl Index for SledIndex {
    async fn put(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError> {
        self.put_inner(attrs, false).await
    }

    async fn replace_study(
        &self,
        study: &Uid,
        rows: Vec<InstanceAttributes>,
    ) -> Result<(), PortError> {
        if rows.iter().any(|r| r.instance.study_instance_uid != *study) {
            return Err(PortError::Index(
                "replace_study: a row of another study".into(),
            ));
        }
        self.blocking(move |inner| {
            let mut w = inner.writer_lock()?;
            let record = WalRecord::ReplaceStudy(rows);
            let frame = Inner::frame(&w, &record)?;
            let WalRecord::ReplaceStudy(rows) = &record else {
                return Err(PortError::Index("not a study replacement".into()));
            };
            inner
                .trees
                .as_slice()
                .transaction(|t| tx_replace_study(t, inner.runs.as_ref(), rows))
                .map_err(tx_err)?;
            Inner::log(&mut w, frame)
        })
        .await?;
        self.mark_written();
        Ok(())
    }

    async fn put_landing(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError> {
        self.put_inner(attrs, true).await
    }

    async fn landing_marks(&self) -> Result<Vec<Uid>, PortError> {
        let mut out = Vec::new();
        for kv in self.inner()?.trees[META].scan_prefix(LANDING_MARK) {
            let (k, _) = kv.map_err(idx_err)?;
            if let Some(uid) = std::str::from_utf8(&k[LANDING_MARK.len()..])
                .ok()
                .and_then(|s| Uid::parse(s).ok())
            {
                out.push(uid);
            }
        }
        Ok(out)
    }

    async fn clear_landing_marks(&self, sops: &[Uid]) -> Result<(), PortError> {
        let keys: Vec<Vec<u8>> = sops.iter().map(landing_mark).collect();
        self.blocking(move |inner| {
            for k in keys {
                inner.trees[META].remove(k).map_err(idx_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<(), PortError> {
        let me = self.inner()?;
        let target = me.written.load(Ordering::SeqCst);
        if me.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _g = me.flush_lock.lock().await;
        if me.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let covering = me.written.load(Ordering::SeqCst);
        self.blocking(|inner| match &inner.wal_sync {
            Some(f) => f
                .sync_data()
                .map_err(|e| PortError::Index(format!("syncing the index log: {e}"))),
            None => inner.db.flush().map(|_| ()).map_err(idx_err),
        })
        .await?;
        me.durable.fetch_max(covering, Ordering::SeqCst);
        Ok(())
    }

    async fn instance(&self, sop: &Uid) -> Result<Option<InstanceRecord>, PortError> {
        self.inner()?.instance_rec(sop.as_str())
    }

    async fn study(&self, study: &Uid) -> Result<Option<StudyRecord>, PortError> {
        self.inner()?.get(STUDIES, study.as_str().as_bytes())
    }

    async fn series(&self, series: &Uid) -> Result<Option<SeriesRecord>, PortError> {
        self.inner()?.get(SERIES, series.as_str().as_bytes())
    }

    async fn instances_of_series(&self, series: &Uid) -> Result<Vec<InstanceRecord>, PortError> {
        let series = series.clone();
        self.blocking(move |inner| inner.series_instances(series.as_str()))
            .await
    }

    async fn instances_of_study(&self, study: &Uid) -> Result<Vec<InstanceRecord>, PortError> {
        let study = study.clone();
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for series in inner.scan_suffixes(SERIES_BY_STUDY, study.as_str())? {
                out.extend(inner.series_instances(&series)?);
            }
            Ok(out)
        })
        .await
    }

    async fn find(&self, query: &Query) -> Result<FindResult, PortError> {
        let q = query.clone();
        self.blocking(move |inner| inner.find(&q)).await
    }

    async fn metadata(&self, sop: &Uid) -> Result<Option<Vec<u8>>, PortError> {
        let inner = self.inner()?;
        let Some(series) = inner.locate(sop.as_str())? else {
            return Ok(None);
        };
        match inner.trees[METADATA]
            .get(join_key(&series, sop.as_str()))
            .map_err(idx_err)?
        {
            Some(v) => Ok(Some(raw_metadata(&v)?.to_vec())),
            None => Ok(None),
        }
    }

    async fn metadata_of_series(&self, series: &Uid) -> Result<Vec<Vec<u8>>, PortError> {
        let series = series.clone();
        self.blocking(move |inner| {
            let mut rows: Vec<(i64, String, Vec<u8>)> = Vec::new();
            for rec in inner.series_instances(series.as_str())? {
                let sop = rec.sop_instance_uid.as_str();
                let Some(json) = inner.trees[METADATA]
                    .get(join_key(series.as_str(), sop))
                    .map_err(idx_err)?
                else {
                    continue;
                };
                let number = rec
                    .instance_number
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(i64::MAX);
                rows.push((number, sop.to_owned(), raw_metadata(&json)?.to_vec()));
            }
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            Ok(rows.into_iter().map(|r| r.2).collect())
        })
        .await
    }

    fn compacts_metadata(&self) -> bool {
        true
    }

    async fn metadata_entries(&self, series: &Uid) -> Result<SeriesMetadataEntries, PortError> {
        let series = series.clone();
        self.blocking(move |inner| {
            let mut rows: Vec<(i64, Uid, Option<Vec<u8>>)> = Vec::new();
            for rec in inner.series_instances(series.as_str())? {
                let entry = join_key(series.as_str(), rec.sop_instance_uid.as_str());
                let json = match inner.trees[METADATA].get(entry).map_err(idx_err)? {
                    Some(v) => Some(raw_metadata(&v)?.to_vec()),
                    None => None,
                };
                let number = rec
                    .instance_number
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(i64::MAX);
                rows.push((number, rec.sop_instance_uid, json));
            }
            rows.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
            let blob = match inner.trees[SERIES_METADATA]
                .get(series.as_str().as_bytes())
                .map_err(idx_err)?
            {
                Some(v) => Some(String::from_utf8_lossy(raw_metadata(&v)?).into_owned()),
                None => None,
            };
            let dirty = inner.trees[METADATA_DIRTY]
                .get(series.as_str().as_bytes())
                .map_err(idx_err)?
                .and_then(|v| parse_dirty(&v))
                .map(|(mark, _)| mark);
            Ok(SeriesMetadataEntries {
                blob,
                entries: rows.into_iter().map(|r| (r.1, r.2)).collect(),
                dirty,
            })
        })
        .await
    }

    async fn series_metadata_blob(&self, series: &Uid) -> Result<Option<String>, PortError> {
        match self.inner()?.trees[SERIES_METADATA]
            .get(series.as_str().as_bytes())
            .map_err(idx_err)?
        {
            Some(v) => Ok(Some(
                String::from_utf8_lossy(raw_metadata(&v)?).into_owned(),
            )),
            None => Ok(None),
        }
    }

    async fn dirty_series(
        &self,
        changed_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<DirtySeries>, PortError> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for kv in inner.trees[METADATA_DIRTY].iter() {
                let (k, v) = kv.map_err(idx_err)?;
                let Some((mark, at)) = parse_dirty(&v) else {
                    continue;
                };
                if at > changed_before_ms {
                    continue;
                }
                let Some(series) = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|s| Uid::parse(s).ok())
                else {
                    continue;
                };
                out.push(DirtySeries {
                    series,
                    mark,
                    changed_at_ms: at,
                });
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn commit_series_metadata(
        &self,
        series: &Uid,
        mark: u64,
        blob: &str,
        moved: &[Uid],
    ) -> Result<bool, PortError> {
        let series = series.clone();
        let blob = blob.to_owned();
        let moved = moved.to_vec();
        self.blocking(move |inner| {
            let done = {
                let _w = inner.writer_lock()?;
                inner
                    .trees
                    .as_slice()
                    .transaction(|t| {
                        let key = series.as_str().as_bytes();
                        let current = t[METADATA_DIRTY].get(key)?.and_then(|v| parse_dirty(&v));
                        if current.map(|c| c.0) != Some(mark) {
                            return Ok(false);
                        }
                        if let Some(old) = t[SERIES_METADATA].get(key)? {
                            let old = strip_version(INDEX_RECORD, &old)
                                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                            if old != blob.as_bytes() {
                                t[METADATA_GARBAGE].insert(old, PRESENT)?;
                            }
                        }
                        t[SERIES_METADATA]
                            .insert(key, prefix_version(INDEX_RECORD, blob.as_bytes()))?;
                        for sop in &moved {
                            t[METADATA].remove(join_key(series.as_str(), sop.as_str()))?;
                        }
                        t[METADATA_DIRTY].remove(key)?;
                        Ok(true)
                    })
                    .map_err(tx_err)?
            };
            Ok(done)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<(), PortError> {
        self.blocking(|inner| inner.checkpoint()).await
    }

    async fn metadata_garbage(&self) -> Result<Vec<String>, PortError> {
        let mut out = Vec::new();
        for kv in self.inner()?.trees[METADATA_GARBAGE].iter() {
            let (k, _) = kv.map_err(idx_err)?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    async fn clear_metadata_garbage(&self, keys: &[String]) -> Result<(), PortError> {
        let keys = keys.to_vec();
        self.blocking(move |inner| {
            for k in keys {
                inner.trees[METADATA_GARBAGE]
                    .remove(k.as_bytes())
                    .map_err(idx_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove(&self, sop: &Uid) -> Result<Option<(InstanceRecord, u64)>, PortError> {
        let sop = sop.clone();
        let result = self
            .blocking(move |inner| {
                let mut w = inner.writer_lock()?;
                let id = inner.db.generate_id().map_err(idx_err)?;
                let removed = inner
                    .trees
                    .as_slice()
                    .transaction(|t| {
                        let Some(old) = tx_remove(t, inner.runs.as_ref(), &sop)? else {
                            return Ok(None);
                        };
                        let entry = JournalEntry::Delete {
                            key: old.blob_key.clone(),
                        };
                        t[JOURNAL].insert(&id.to_be_bytes(), ser(&entry)?)?;
                        Ok(Some((old, id)))
                    })
                    .map_err(tx_err)?;
                if removed.is_some() {
                    let frame = Inner::frame(
                        &w,
                        &WalRecord::Remove {
                            sop,
                            journal_id: id,
                        },
                    )?;
                    Inner::log(&mut w, frame)?;
                }
                Ok(removed)
            })
            .await?;
        self.mark_written();
        Ok(result)
    }

    async fn journal_add(&self, entry: JournalEntry) -> Result<u64, PortError> {
        let id = self
            .blocking(move |inner| {
                let id = inner.db.generate_id().map_err(idx_err)?;
                let bytes = encode_versioned(INDEX_RECORD, &entry)
                    .map_err(|e| PortError::Index(e.to_string()))?;
                inner.trees[JOURNAL]
                    .insert(id.to_be_bytes(), bytes)
                    .map_err(idx_err)?;
                Ok(id)
            })
            .await?;
        self.mark_written();
        self.blocking(|inner| inner.checkpoint()).await?;
        Ok(id)
    }

    async fn journal(&self) -> Result<Vec<(u64, JournalEntry)>, PortError> {
        let mut out = Vec::new();
        for kv in self.inner()?.trees[JOURNAL].iter() {
            let (k, v) = kv.map_err(idx_err)?;
            if k.len() == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k);
                out.push((u64::from_be_bytes(b), de(&v)?));
            }
        }
        Ok(out)
    }

    async fn journal_clear(&self, id: u64) -> Result<(), PortError> {
        self.inner()?.trees[JOURNAL]
            .remove(id.to_be_bytes())
            .map_err(idx_err)?;
        self.mark_written();
        Ok(())
    }

    async fn all_instances(&self) -> Result<Vec<InstanceRecord>, PortError> {
        self.blocking(|inner| {
            let mut out = Vec::new();
            for kv in inner.trees[INSTANCE_BY_SERIES].iter() {
                let (_, v) = kv.map_err(idx_err)?;
                out.push(de(&v)?);
            }
            Ok(out)
        })
        .await
    }

    async fn instances_after(
        &self,
        after: Option<&Uid>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, PortError> {
        let after = after.map(|u| u.as_str().as_bytes().to_vec());
        self.blocking(move |inner| {
            // No run is added or merged during the walk of a page.
            let _work = inner.runs.as_ref().map(|r| r.work.lock());
            let tree = &inner.trees[INSTANCES];
            let range = match &after {
                Some(a) => tree.range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => tree.range::<&[u8], _>(..),
            };
            let recent = range.map(|kv| {
                let (k, v) = kv.map_err(|e| e.to_string())?;
                Ok((k.to_vec(), locator_series(&v)?.as_bytes().to_vec()))
            });
            let mut sources: Vec<Box<dyn Iterator<Item = Result<Entry, String>>>> = Vec::new();
            if let Some(runs) = &inner.runs {
                for run in runs.snapshot().iter() {
                    sources.push(Box::new(run.iter_after(after.as_deref())));
                }
            }
            sources.push(Box::new(recent));
            // Newest first wins; tombstones (removed instances) dropped.
            let merged = Merge::new(sources, true).map_err(PortError::Index)?;
            let mut out = Vec::with_capacity(limit.min(10_000));
            for e in merged {
                if out.len() >= limit {
                    break;
                }
                let (sop, series) = e.map_err(|e| {
                    if let Some(runs) = &inner.runs {
                        runs.mark_damaged();
                    }
                    PortError::Index(e)
                })?;
                let (Ok(sop), Ok(series)) =
                    (std::str::from_utf8(&sop), std::str::from_utf8(&series))
                else {
                    return Err(PortError::Index("an instance locator is not UTF-8".into()));
                };
                // None: a run's entry for an instance removed since.
                if let Some(rec) = inner.get(INSTANCE_BY_SERIES, &join_key(series, sop))? {
                    out.push(rec);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn clear(&self) -> Result<(), PortError> {
        self.blocking(|inner| {
            let _w = inner
                .writer
                .lock()
                .map_err(|_| PortError::Index("index writer lock poisoned".into()))?;
            let _work = inner.runs.as_ref().map(|r| r.work.lock());
            for (i, t) in inner.trees.iter().enumerate() {
                if i != JOURNAL {
                    t.clear().map_err(idx_err)?;
                }
            }
            // The list of locator runs went with `meta`: once that is on
            // disk, their files go too.
            if let Some(runs) = &inner.runs {
                inner.db.flush().map_err(idx_err)?;
                let gone = runs.snapshot().to_vec();
                runs.publish(Vec::new());
                runs.remove_files(&gone).map_err(PortError::Index)?;
            }
            // The format key stays: without it the next open would take
            // the (current) values for format 0. The secondary indexes of
            // no studies are built.
            inner.trees[META]
                .insert(FORMAT_KEY, &INDEX_FORMAT.to_le_bytes())
                .map_err(idx_err)?;
            for built in [MODALITY_INDEX_BUILT, NAME_LEAD_INDEX_BUILT] {
                inner.trees[META].insert(built, PRESENT).map_err(idx_err)?;
            }
            Ok(())
        })
        .await?;
        self.mark_written();
        self.blocking(|inner| inner.checkpoint()).await
    }

    async fn stats(&self) -> Result<IndexStats, PortError> {
        Ok(IndexStats {
            patients: self.inner()?.counter(N_PATIENTS)?,
            studies: self.inner()?.counter(N_STUDIES)?,
            series: self.inner()?.counter(N_SERIES)?,
            instances: self.inner()?.counter(N_INSTANCES)?,
            total_bytes: self.inner()?.counter(N_BYTES)?,
        })
    }

    async fn set_clean_shutdown(&self, clean: bool) -> Result<(), PortError> {
        let inner = self.inner()?;
        let t = &inner.trees[META];
        if clean {
            t.insert(CLEAN, PRESENT).map_err(idx_err)?;
        } else {
            t.remove(CLEAN).map_err(idx_err)?;
        }
        self.mark_written();
        self.blocking(|inner| inner.checkpoint()).await?;
        Ok(())
    }

    async fn was_clean_shutdown(&self) -> Result<bool, PortError> {
        // A brand-new index counts as unclean: recovery then adopts whatever
        // blobs exist (none, or an archive whose index was lost).
        Ok(self.inner()?.trees[META]
            .get(CLEAN)
            .map_err(idx_err)?
            .is_some())
    }
}

/// Used by tests that compare a rebuilt index with a live one.
pub fn comparable(mut records: Vec<InstanceRecord>) -> Vec<InstanceRecord> {
    for r in &mut records {
        r.received_at_ms = 0;
    }
    records.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    records
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use pacs_core::query::{Level, Query};
    use pacs_core::{Archive, Limits};
    use sample_data::synthetic::{object, Spec};

    use super::*;
    use crate::ObjectBlobStore;

    /// A crash while sled writes a snapshot leaves `snap.<lsn>.generating`
    /// behind; sled alone then refuses to open ("Read corrupted data"). The
    /// index removes it and opens with everything that was logged.
    #[tokio::test]
    async fn an_unfinished_snapshot_does_not_stop_the_index_from_opening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let bytes = object(&Spec {
            study: "1.2.9.1",
            series: "1.2.9.1.1",
            sop: "1.2.9.1.1.1",
            ..Spec::default()
        });
        {
            let index = SledIndex::open(&dir).unwrap();
            let blobs = ObjectBlobStore::open("memory://").unwrap();
            let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
            archive.store(std::io::Cursor::new(bytes)).await.unwrap();
            index.flush().await.unwrap();
        }
        // What a kill in the middle of sled's snapshot write leaves: an
        // empty file that sorts after every finished snapshot.
        let torn = dir.join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&torn, b"").unwrap();
        let raw = open_raw(&dir);
        assert!(raw.is_err(), "sled alone opens past a torn snapshot");
        drop(raw);
        let index = SledIndex::open(&dir).unwrap();
        assert!(!torn.exists());
        assert_eq!(index.stats().await.unwrap().instances, 1);
    }

    #[test]
    fn a_reopen_waits_for_a_quiet_moment_unless_far_past_its_limit() {
        assert!(!reopen_due(100, 99, QUIET_TICKS));
        assert!(!reopen_due(100, 100, QUIET_TICKS - 1));
        assert!(reopen_due(100, 100, QUIET_TICKS));
        assert!(!reopen_due(100, 199, 0));
        assert!(reopen_due(100, 200, 0));
        assert!(!reopen_due(0, u64::MAX, QUIET_TICKS));
    }

    /// sled replays at each open everything written since its previous
    /// open (its snapshot is written only then): the index reopens itself
    /// once enough has been logged (here 64 KiB; past twice that at
    /// once, without waiting for a quiet moment). Stores made meanwhile
    /// wait instead of failing, nothing is lost, and the snapshot a restart
    /// would start from moves forward.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_index_reopens_itself_to_bound_what_a_restart_replays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let index = SledIndex::open(&dir).unwrap();
        index.set_reopen_after(64 << 10);
        let newest_snapshot = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("snap.") && !n.ends_with(".generating"))
                .max()
        };
        let before = newest_snapshot();
        let blobs = ObjectBlobStore::open("memory://").unwrap();
        let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
        let store = |n: u32| {
            let archive = archive.clone();
            async move {
                let bytes = object(&Spec {
                    study: &format!("1.2.6.{}", n / 50),
                    series: &format!("1.2.6.{}.1", n / 50),
                    sop: &format!("1.2.6.{}.1.{n}", n / 50),
                    ..Spec::default()
                });
                archive
                    .store(std::io::Cursor::new(bytes))
                    .await
                    .unwrap_or_else(|e| panic!("store {n} failed: {e}"));
            }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut n = 0u32;
        while index.planned_reopens() == 0 {
            assert!(
                std::time::Instant::now() < deadline && n < 20_000,
                "no planned reopen after {n} stores"
            );
            store(n).await;
            n += 1;
        }
        for _ in 0..20 {
            store(n).await;
            n += 1;
        }
        index.flush().await.unwrap();
        assert_eq!(index.stats().await.unwrap().instances, u64::from(n));
        let after = newest_snapshot();
        assert!(
            after > before,
            "the snapshot did not move: {before:?} → {after:?}"
        );
        // Searches answer from the reopened database.
        let found = index.find(&Query::new(Level::Study)).await.unwrap();
        assert_eq!(found.total, n.div_ceil(50) as usize);
    }

    /// A search for every instance (or series) without keys reads the
    /// index only up to the page: records past it are never decoded, so a
    /// damaged record in an older study does not even fail the search.
    #[tokio::test]
    async fn entry_planned_searches_read_only_the_page_and_old_entries_still_match() {
        let index = SledIndex::temporary().unwrap();
        let blobs = ObjectBlobStore::open("memory://").unwrap();
        let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
        let names = [
            "Nguyễn^Văn An",
            "NGUYEN^BINH",
            "Trần^Nguyệt",
            "nguy^x",
            "Lê^Minh",
        ];
        for st in 1..=9u32 {
            let (study, series, sop) = (
                format!("1.2.7.{st}"),
                format!("1.2.7.{st}.1"),
                format!("1.2.7.{st}.1.1"),
            );
            let date = format!("2026010{st}");
            let name = names[st as usize % names.len()];
            let bytes = object(&Spec {
                study: &study,
                series: &series,
                sop: &sop,
                study_date: &date,
                patient_name: name,
                ..Spec::default()
            });
            archive.store(std::io::Cursor::new(bytes)).await.unwrap();
        }
        let search = |pattern: &str, offset: usize, limit: usize| {
            let mut q = Query::new(Level::Study);
            q.add_key(0x0010_0010, pattern).unwrap();
            q.add_key(0x0008_1030, "").unwrap();
            q.offset = offset;
            q.limit = Some(limit);
            q
        };
        let uids = |r: &FindResult| -> Vec<String> {
            r.matches
                .iter()
                .map(|m| m.study.as_ref().unwrap().study_instance_uid.to_string())
                .collect()
        };
        // Nguy* matches "Nguyễn", "NGUYEN" and "nguy" (case-insensitive),
        // not "Trần^Nguyệt" (its second component): studies 1, 3, 5, 6, 8.
        let r = index.find(&search("Nguy*", 0, 3)).await.unwrap();
        assert_eq!(r.total, 5);
        assert_eq!(uids(&r), ["1.2.7.8", "1.2.7.6", "1.2.7.5"]);
        let r = index.find(&search("Nguy*", 3, 3)).await.unwrap();
        assert_eq!(uids(&r), ["1.2.7.3", "1.2.7.1"]);
        // Only the page's records are read: damage one outside it.
        let inner = index.inner().unwrap();
        let kept = inner.trees[STUDIES].get("1.2.7.1").unwrap().unwrap();
        inner.trees[STUDIES]
            .insert("1.2.7.1", vec![INDEX_RECORD, 0xFF])
            .unwrap();
        let r = index.find(&search("Nguy*", 0, 3)).await.unwrap();
        assert_eq!((r.total, uids(&r).len()), (5, 3));
        inner.trees[STUDIES].insert("1.2.7.1", kept).unwrap();
        // Entries written before they carried date and name: read from the
        // record, with the same answers (`?` keeps the search off the
        // name prefix entries).
        let r = index.find(&search("Nguy?n*", 0, 10)).await.unwrap();
        let keys: Vec<_> = inner.trees[STUDY_BY_NAME]
            .iter()
            .map(|kv| kv.unwrap().0)
            .collect();
        for k in keys {
            inner.trees[STUDY_BY_NAME].insert(k, PRESENT).unwrap();
        }
        let old = index.find(&search("Nguy?n*", 0, 10)).await.unwrap();
        assert_eq!(uids(&old), uids(&r));
        assert_eq!(uids(&r), ["1.2.7.6", "1.2.7.5", "1.2.7.1"]);
        // Modalities in Study and a Study Date range, from the modality
        // entries; then from entries without date.
        let mut q = Query::new(Level::Study);
        q.add_key(0x0008_0061, "CT").unwrap();
        q.add_key(0x0008_0020, "20260102-20260104").unwrap();
        let r = index.find(&q).await.unwrap();
        assert_eq!(uids(&r), ["1.2.7.4", "1.2.7.3", "1.2.7.2"]);
        let keys: Vec<_> = inner.trees[STUDY_BY_MODALITY]
            .iter()
            .map(|kv| kv.unwrap().0)
            .collect();
        for k in keys {
            inner.trees[STUDY_BY_MODALITY].insert(k, PRESENT).unwrap();
        }
        assert_eq!(uids(&index.find(&q).await.unwrap()), uids(&r));
    }

    /// `P*` name searches through `study_by_name_lead` give the rows, order
    /// and total the matcher gives over every study: short and long
    /// prefixes, several component groups, pages, after deletions, and on
    /// a format-2 index, written before the tree existed (migrated and
    /// built when it opens).
    #[tokio::test]
    async fn name_prefix_searches_agree_with_the_matcher() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let names = [
            "Nguyễn^Văn An",
            "NGUYEN^BINH",
            "Ngụy^Bá",
            "Nguyễn^Văn Bình",
            "Trần^Nguyệt",
            "Lê",
            "Lê^Minh",
            "Trần^Thị=陳^氏",
            "=山田^太郎",
            "",
        ];
        let patterns = [
            "N*",
            "Ng*",
            "NGUY*",
            "nguyễn*",
            "Nguyễn^*",
            "Nguyễn^V*",
            "Nguyễn^Văn B*",
            "Ngụy*",
            "Lê*",
            "Lê^*",
            "L*",
            "T*",
            "陳*",
            "山田^*",
            "X*",
            "Nguyễn^Văn An*",
        ];
        let index = SledIndex::open(&dir).unwrap();
        let blobs = ObjectBlobStore::open("memory://").unwrap();
        let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
        for st in 1..=40u32 {
            let (study, series, sop) = (
                format!("1.2.8.{st}"),
                format!("1.2.8.{st}.1"),
                format!("1.2.8.{st}.1.1"),
            );
            // Some studies share a date: the UID breaks the tie.
            let date = format!("202601{:02}", 1 + (st * 7) % 23);
            let bytes = object(&Spec {
                study: &study,
                series: &series,
                sop: &sop,
                study_date: &date,
                patient_name: names[(st as usize * 3) % names.len()],
                ..Spec::default()
            });
            archive.store(std::io::Cursor::new(bytes)).await.unwrap();
        }
        let uids = |r: &FindResult| -> Vec<String> {
            r.matches
                .iter()
                .map(|m| m.study.as_ref().unwrap().study_instance_uid.to_string())
                .collect()
        };
        async fn check(
            index: &SledIndex,
            patterns: &[&str],
            uids: &dyn Fn(&FindResult) -> Vec<String>,
        ) {
            let all = index.find(&Query::new(Level::Study)).await.unwrap();
            for pattern in patterns {
                let mut q = Query::new(Level::Study);
                q.add_key(0x0010_0010, pattern).unwrap();
                assert!(
                    name_lead_plan(&q).is_some(),
                    "{pattern} is a name prefix search"
                );
                let want: Vec<Match> = all
                    .matches
                    .iter()
                    .filter(|m| q.matches(m))
                    .cloned()
                    .collect();
                let want = FindResult {
                    total: want.len(),
                    matches: want,
                };
                for (offset, limit) in [(0, None), (0, Some(2)), (1, Some(3)), (5, Some(100))] {
                    q.offset = offset;
                    q.limit = limit;
                    let got = index.find(&q).await.unwrap();
                    let expected: Vec<String> = uids(&want)
                        .into_iter()
                        .skip(offset)
                        .take(limit.unwrap_or(usize::MAX))
                        .collect();
                    assert_eq!(
                        uids(&got),
                        expected,
                        "{pattern} offset {offset} limit {limit:?}"
                    );
                    assert_eq!(got.total, want.total, "{pattern}: total");
                }
            }
        }
        check(&index, &patterns, &uids).await;
        // "Nguy*" is not empty, so the check is not vacuous.
        let mut q = Query::new(Level::Study);
        q.add_key(0x0010_0010, "Nguy*").unwrap();
        assert!(index.find(&q).await.unwrap().total >= 8);
        // Deletions take studies out of the entries and counters.
        for st in (1..=40u32).step_by(3) {
            index
                .remove(&Uid::parse(&format!("1.2.8.{st}.1.1")).unwrap())
                .await
                .unwrap();
        }
        check(&index, &patterns, &uids).await;
        // An index from before the tree: no entries, counters or mark.
        let inner = index.inner().unwrap();
        inner.trees[STUDY_BY_NAME_LEAD].clear().unwrap();
        let counters: Vec<_> = inner.trees[META]
            .scan_prefix(NAME_LEAD_COUNT)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert!(!counters.is_empty());
        for k in counters {
            inner.trees[META].remove(k).unwrap();
        }
        inner.trees[META].remove(NAME_LEAD_INDEX_BUILT).unwrap();
        inner.trees[META]
            .insert(FORMAT_KEY, &2u32.to_le_bytes())
            .unwrap();
        index.flush().await.unwrap();
        index.checkpoint().await.unwrap();
        drop((inner, archive, index));
        let index = SledIndex::open(&dir).unwrap();
        let format = index.inner().unwrap().trees[META]
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(format.as_ref(), INDEX_FORMAT.to_le_bytes());
        check(&index, &patterns, &uids).await;
    }

    #[tokio::test]
    async fn unkeyed_series_and_instance_searches_stop_at_the_page() {
        let index = SledIndex::temporary().unwrap();
        let blobs = ObjectBlobStore::open("memory://").unwrap();
        let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
        // Five studies of two series of three instances, study N dated
        // 2026-01-0N (so study 5 comes first).
        for st in 1..=5 {
            for se in 1..=2 {
                for i in 1..=3 {
                    let (study, series, sop) = (
                        format!("1.2.9.{st}"),
                        format!("1.2.9.{st}.{se}"),
                        format!("1.2.9.{st}.{se}.{i}"),
                    );
                    let date = format!("2026010{st}");
                    let bytes = object(&Spec {
                        study: &study,
                        series: &series,
                        sop: &sop,
                        study_date: &date,
                        ..Spec::default()
                    });
                    archive.store(std::io::Cursor::new(bytes)).await.unwrap();
                }
            }
        }
        let page = |level: Level, offset: usize, limit: usize| {
            let mut q = Query::new(level);
            q.offset = offset;
            q.limit = Some(limit);
            q
        };
        let before = index.find(&page(Level::Instance, 2, 3)).await.unwrap();
        assert_eq!(before.total, 30);
        // Damage every record of the oldest study.
        for se in 1..=2 {
            for i in 1..=3 {
                let sop = format!("1.2.9.1.{se}.{i}");
                let entry = join_key(&format!("1.2.9.1.{se}"), &sop);
                index.inner().unwrap().trees[INSTANCE_BY_SERIES]
                    .insert(entry, &b"not a record"[..])
                    .unwrap();
            }
            let series = format!("1.2.9.1.{se}");
            index.inner().unwrap().trees[SERIES]
                .insert(series.as_bytes(), &b"not a record"[..])
                .unwrap();
        }
        let r = index.find(&page(Level::Instance, 2, 3)).await.unwrap();
        assert_eq!(r.total, 30);
        assert_eq!(r.matches, before.matches);
        let sops: Vec<String> = r
            .matches
            .iter()
            .map(|m| m.instance.as_ref().unwrap().sop_instance_uid.to_string())
            .collect();
        // Newest study first; its first series' instances 3.., then the
        // next series.
        assert_eq!(sops.len(), 3);
        assert!(sops.iter().all(|s| s.starts_with("1.2.9.5.")), "{sops:?}");
        let r = index.find(&page(Level::Series, 0, 4)).await.unwrap();
        assert_eq!(r.total, 10);
        let series: Vec<String> = r
            .matches
            .iter()
            .map(|m| m.series.as_ref().unwrap().series_instance_uid.to_string())
            .collect();
        assert_eq!(series, ["1.2.9.5.1", "1.2.9.5.2", "1.2.9.4.1", "1.2.9.4.2"]);
        // A page reaching the damaged study does read it.
        assert!(index.find(&page(Level::Instance, 0, 30)).await.is_err());
    }
}
