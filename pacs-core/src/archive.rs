//! The `Archive` service: store, find, retrieve and delete, over the ports.
//!
//! # The order of a write (the durability contract)
//! 1. The object is streamed to its blob key (or a staging key when the SOP
//!    Instance already exists); [`BlobWriter::finish`] returns only once the
//!    blob is durable (file and directory fsynced, or the PUT answered).
//! 2. The index entry is written and flushed (group commit: concurrent
//!    stores share one flush).
//! 3. Only then does `store` return `Ok`, which protocol layers turn into a
//!    success status.
//!
//! With a [`Landing`] log (the server's default), a new instance takes a
//! shorter path: the object is streamed into the landing log, its index
//! entry is appended to the same record, and one sync makes both durable
//! ([`LandingWriter::commit`]); the entry is then applied to the index
//! (without a flush) and `store` returns. A background mover copies the
//! object to its blob key, flushes the index, and settles the record. Reads
//! of an object not moved yet are served from the landing log. Recovery
//! replays every live record (moving the object, putting the entry), and a
//! delete or replacement of a landed instance first settles it, so a replay
//! can never bring back what was deleted.
//!
//! A crash between 1 and 2 leaves an orphan blob, never acknowledged, that
//! `pacs verify` lists and `pacs reindex` adopts ([`Archive::recover`] does
//! not list the store: its work is bounded by what was in flight); an index
//! entry never points to a missing blob.
//! Replacements and deletions are journalled first so recovery can finish or
//! undo them.
//!
//! # The same SOP Instance UID with different content
//! What happens is the [`DuplicatePolicy`]. By default
//! ([`DuplicatePolicy::KeepHistory`]) a corrected re-send for the same
//! patient and study replaces the object, and the earlier version is first
//! copied, durably, to `history/<sop>/<n>.dcm` with a JSON sidecar
//! ([`HistoryEntry`]) before the replacement is journalled; an object that
//! would move the instance to another patient or study is refused before
//! anything is written. Identical content is always a no-op success.
//!
//! # Free space
//! With a [`SpaceProbe`] set ([`Archive::set_space_guard`]), a store is
//! refused before anything is written while a volume the archive writes to
//! has less than the [`MinFreeSpace`] watermark available. The measure is
//! cached for about a second, so ingest resumes by itself once space
//! returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, info, warn};

use crate::access::StudyScope;
use crate::audit::{
    AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome, AuditSink,
    NoAudit,
};
use crate::credentials::Credentials;
use crate::dicom::{encode_file_meta, parse_part10, FileMeta, Header, ParseError};
use crate::ports::{
    BlobKey, BlobStore, BlobWriter, HistoryPart, Index, IndexPut, IndexStats, JournalEntry,
    LandedId, Landing, LandingWriter, PortError, SpaceProbe,
};
use crate::query::{FindResult, Query};
use crate::records::{ExtractError, InstanceAttributes, InstanceRecord, SeriesRecord, StudyRecord};
use crate::{Limits, Uid};

/// Implementation Class UID written into file meta headers this archive
/// creates (PS3.7 D.3.3.2), and the matching version name.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.74316984080446417847790985253254215249";
pub const IMPLEMENTATION_VERSION_NAME: &str = "SENPACS_0_1";

/// Size of the chunks read from an ingest source.
const CHUNK: usize = 256 * 1024;
/// Instance records `verify` reads at once.
const VERIFY_PAGE: usize = 1_000;
/// Number of per-SOP-instance locks (stores of the same instance serialize).
const SOP_LOCKS: usize = 64;
/// Past this many bytes waiting in the landing log to be moved, new objects
/// are written straight to their blob key (the mover has fallen behind).
const LANDING_BUDGET: u64 = 4 << 30;
/// Objects the mover copies before one index flush and one settle.
const MOVE_BATCH: usize = 64;
/// Copies the mover runs at once.
const MOVE_CONCURRENCY: usize = 4;
/// The mover waits until no object has landed for this long (a burst of
/// stores keeps the disk to itself)...
const MOVE_WHEN_IDLE_MS: u64 = 300;
/// ...unless this many bytes wait to be moved (a CT study of about 2,000
/// slices lands whole before the mover competes with the stores).
const MOVE_EAGER_BYTES: u64 = 1 << 30;
/// How long a free-space measure is trusted before it is taken again.
const SPACE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a store does when the SOP Instance UID is already stored with
/// different content (identical content is always a no-op success).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// The safe default: an update for the same patient and study replaces
    /// the object and keeps the earlier version as history; an object that
    /// would move the instance to another patient or study is refused.
    #[default]
    KeepHistory,
    /// Any different content is refused; what is stored stays.
    Reject,
    /// The new object replaces the old one, which is not kept (logged at
    /// warn). Only for archives fed by a system that owns the truth.
    Overwrite,
}

impl DuplicatePolicy {
    /// The configuration spelling (`keep-history`, `reject`, `overwrite`).
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicatePolicy::KeepHistory => "keep-history",
            DuplicatePolicy::Reject => "reject",
            DuplicatePolicy::Overwrite => "overwrite",
        }
    }
}

impl std::str::FromStr for DuplicatePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keep-history" | "keep_history" => Ok(DuplicatePolicy::KeepHistory),
            "reject" => Ok(DuplicatePolicy::Reject),
            "overwrite" => Ok(DuplicatePolicy::Overwrite),
            _ => Err(format!(
                "{s:?} is not a duplicate policy: use keep-history, reject or overwrite"
            )),
        }
    }
}

/// The free-space watermark: stores are refused while less than this is
/// available on a volume the archive writes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFreeSpace {
    Bytes(u64),
    /// A percentage of the volume's size.
    Percent(f64),
}

impl MinFreeSpace {
    /// The bytes that must stay available on a volume of `total` bytes.
    pub fn required(self, total: u64) -> u64 {
        match self {
            MinFreeSpace::Bytes(n) => n,
            MinFreeSpace::Percent(p) => ((total as f64) * p / 100.0).ceil() as u64,
        }
    }
}

impl Default for MinFreeSpace {
    /// 1 GiB.
    fn default() -> Self {
        MinFreeSpace::Bytes(1 << 30)
    }
}

impl std::fmt::Display for MinFreeSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFreeSpace::Bytes(n) => write!(f, "{n} bytes"),
            MinFreeSpace::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for MinFreeSpace {
    type Err = String;
    /// `1073741824`, `512MiB`, `1 GiB`, `500MB`, `2%` (units: B, KB, MB,
    /// GB, TB powers of 1000; KiB, MiB, GiB, TiB powers of 1024).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!("{s:?} is not a size: write bytes with a unit (\"1GiB\", \"500MB\") or a percentage (\"2%\")")
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage must be between 0 and 100"));
            }
            return Ok(MinFreeSpace::Percent(v));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "t" | "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = v * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(MinFreeSpace::Bytes(bytes as u64))
    }
}

/// A volume below the watermark.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LowSpace {
    pub volume: String,
    pub available: u64,
    pub required: u64,
}

/// Why an object with a stored SOP Instance UID was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuplicateRefusal {
    /// It would move the instance to another patient or study.
    MovesInstance,
    /// Its content differs and the policy is `reject`.
    DifferentContent,
}

/// The format version of history sidecars this build writes and reads.
pub const HISTORY_FORMAT: u32 = 1;

/// One earlier version of an instance, kept by
/// [`DuplicatePolicy::KeepHistory`]: the JSON sidecar beside the object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    /// The sidecar's format version ([`HISTORY_FORMAT`]).
    pub format: u32,
    pub version: u32,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
    pub size: u64,
    pub sha256: String,
    pub transfer_syntax_uid: String,
    /// When this version was received (ms since the epoch).
    pub received_at_ms: u64,
    /// When a newer version replaced it (ms since the epoch).
    pub superseded_at_ms: u64,
}

/// Why an object was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not a valid DICOM object: {0}")]
    Parse(#[from] ParseError),
    #[error("cannot be indexed: {0}")]
    Extract(#[from] ExtractError),
    #[error("object exceeds the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("reading the object failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage unavailable: {0}")]
    Storage(#[from] PortError),
    /// The data set disagrees with the command that carried it (PS3.4
    /// B.2.3: "Data Set does not match SOP Class" and its relatives).
    #[error("{0}")]
    Mismatch(String),
    #[error("SeriesInstanceUID {series} already belongs to study {existing}, not {claimed}")]
    SeriesInOtherStudy {
        series: String,
        existing: String,
        claimed: String,
    },
    /// The SOP Instance UID is stored with different content and the
    /// [`DuplicatePolicy`] refuses this object; nothing stored changed.
    #[error("{}", match reason {
        DuplicateRefusal::MovesInstance => format!("SOP Instance UID {sop} is already stored for another patient or study; refused (on_duplicate)"),
        DuplicateRefusal::DifferentContent => format!("SOP Instance UID {sop} is already stored with different content; refused (on_duplicate = reject)"),
    })]
    Duplicate {
        sop: String,
        reason: DuplicateRefusal,
    },
    /// A volume is below the free-space watermark: refused before anything
    /// was written.
    #[error("storage is full: {available} bytes available on {volume}, {required} must stay free")]
    InsufficientStorage {
        volume: String,
        available: u64,
        required: u64,
    },
}

/// Errors of the read paths.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("storage unavailable: {0}")]
    Storage(#[from] PortError),
}

/// What `store` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    /// A new instance.
    Stored,
    /// Byte-identical to the stored instance: nothing changed.
    AlreadyPresent,
    /// Same SOP Instance UID, different content: the new object replaced the
    /// old one (kept as history under the default policy; logged at warn
    /// under `overwrite`).
    Replaced,
}

/// The result of a successful store.
#[derive(Debug, Clone)]
pub struct StoreOutcome {
    pub status: StoreStatus,
    pub record: InstanceRecord,
    /// Things a person should know (unknown character set decoded as
    /// Latin-1, meta header disagreeing with the data set...).
    pub warnings: Vec<String>,
    /// The history version the replaced content was kept as.
    pub history_version: Option<u32>,
}

/// Progress of long operations (reindex, verify, recovery).
pub trait Progress: Send + Sync {
    fn set_total(&self, total: u64);
    fn advance(&self, n: u64);
    /// A new stage of the work, named, with its own total: the count
    /// starts again from zero.
    fn stage(&self, _what: &str, total: u64) {
        self.set_total(total);
    }
}

/// The stages of [`Archive::verify`], as its progress names them.
pub const VERIFY_KEYS_STAGE: &str = "stored objects";
pub const VERIFY_BLOBS_STAGE: &str = "instances";

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {
    fn set_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// One problem found by [`Archive::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub key: String,
    pub problem: String,
}

/// The report of [`Archive::verify`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub instances_checked: u64,
    pub bytes_checked: u64,
    pub damage: Vec<Damage>,
    /// Blobs in the store that no index entry names: objects written but
    /// never acknowledged before an unclean stop (recovery does not list
    /// the store), or removed from the index by hand. Not damage to what
    /// was stored; `pacs reindex` adopts them.
    pub unindexed: Vec<String>,
}

/// What recovery did after an unclean shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Objects the landing log still held, moved to storage and indexed.
    pub landed_replayed: u64,
    /// Index entries put while their object was being synced, whose object
    /// never became durable (the store was never acknowledged): removed.
    pub unacknowledged_dropped: u64,
    pub adopted: u64,
    pub staging_removed: u64,
    pub journal_replayed: u64,
    pub unreadable: Vec<Damage>,
}

/// Incremental header scanning over a growing prefix: re-parses only when the
/// prefix has doubled since the last attempt, so the total work stays linear.
struct HeaderScan {
    prefix: Vec<u8>,
    next_attempt: usize,
    header: Option<Header>,
}

impl HeaderScan {
    fn new() -> Self {
        HeaderScan {
            prefix: Vec::new(),
            next_attempt: 4096,
            header: None,
        }
    }

    /// Feeds a chunk; returns the bytes held back (the prefix) once the header
    /// is known, so the caller can write them out.
    fn feed(&mut self, chunk: &[u8], limits: &Limits) -> Result<(), StoreError> {
        if self.header.is_some() {
            return Ok(());
        }
        self.prefix.extend_from_slice(chunk);
        if self.prefix.len() < self.next_attempt {
            return Ok(());
        }
        match parse_part10(&self.prefix, false, limits) {
            Ok(h) => {
                self.header = Some(h);
                Ok(())
            }
            Err(ParseError::Incomplete) => {
                if self.prefix.len() as u64 > limits.max_header_bytes {
                    return Err(StoreError::TooLarge {
                        limit: limits.max_header_bytes,
                    });
                }
                self.next_attempt = self.prefix.len().saturating_mul(2);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn finish(&mut self, limits: &Limits) -> Result<(), StoreError> {
        if self.header.is_none() {
            self.header = Some(parse_part10(&self.prefix, true, limits)?);
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// JSON found neither in the index nor in its series' blob is rebuilt
/// from the instance's header (a blob lost or damaged; the derived data is
/// never the only copy).
#[async_trait::async_trait]
impl crate::series_metadata::MetadataSource for Archive {
    async fn rebuild_json(&self, sop: &Uid) -> Option<Vec<u8>> {
        let record = self.inner.index.instance(sop).await.ok()??;
        let key = BlobKey::parse(&record.blob_key)?;
        match self.read_blob_attrs(&key).await {
            Ok(attrs) => {
                warn!(sop = %sop, "an instance's metadata was rebuilt from its object");
                Some(attrs.metadata)
            }
            Err(e) => {
                warn!(sop = %sop, error = %e, "an instance's metadata could not be rebuilt");
                None
            }
        }
    }
}

#[path = "archive/patient_changes.rs"]
mod patient_changes;
pub use patient_changes::{PatientChangeOutcome, PatientChangeRequest};

/// The archive service. Cheap to clone.
///
/// An archive handle may be confined to some studies ([`Archive::scoped`]):
/// its reads (`find`, metadata, instance lookups, retrieve) then see only
/// those studies, and anything else is `NotFound`, so a study-scoped
/// principal (share link, partner hospital) cannot reach another study
/// through any route that forgot to check (design piece 4).
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
    scope: Arc<StudyScope>,
}

struct Inner {
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn Index>,
    limits: Limits,
    sop_locks: Vec<tokio::sync::Mutex<()>>,
    staging_seq: AtomicU64,
    landing: Option<Arc<dyn Landing>>,
    /// Objects committed to the landing log and not moved yet, by blob key.
    landed: std::sync::Mutex<HashMap<String, LandedId>>,
    mover: Option<tokio::sync::mpsc::UnboundedSender<(LandedId, BlobKey)>>,
    /// When the last object landed (ms since the epoch).
    last_landed_ms: AtomicU64,
    /// Whether new objects go through the landing log (see
    /// [`Archive::set_landing_for_new_objects`]).
    land_new: std::sync::atomic::AtomicBool,
    /// Held while a batch of landed objects is moved.
    move_gate: tokio::sync::Mutex<()>,
    /// Set by `close`: the mover takes no more batches.
    closing: std::sync::atomic::AtomicBool,
    /// Where the boundaries record audit events (see [`Archive::with_audit`]).
    audit: std::sync::RwLock<Arc<dyn AuditSink>>,
    /// Where users and machine tokens are kept (see [`Archive::set_credentials`]).
    credentials: std::sync::RwLock<Option<Arc<dyn Credentials>>>,
    /// Where browser sessions are kept when shared by every node (see
    /// [`Archive::set_sessions`]).
    sessions: std::sync::RwLock<Option<Arc<dyn crate::sessions::SessionStore>>>,
    /// What a store of a stored SOP Instance UID with different content does.
    duplicate_policy: std::sync::RwLock<DuplicatePolicy>,
    /// The free-space watermark (none until [`Archive::set_space_guard`]).
    space: std::sync::Mutex<SpaceGuard>,
    /// Where orders (worklist steps) are kept (see [`Archive::set_orders`]).
    orders: std::sync::RwLock<Option<Arc<dyn crate::orders::OrderStore>>>,
    /// The job queue and MPPS records (see [`Archive::set_workflow`]).
    workflow: std::sync::RwLock<Workflow>,
    /// Patient changes and the coercions they left (see
    /// [`Archive::set_patients`]).
    patients: std::sync::RwLock<patient_changes::PatientState>,
    /// Held while a patient change is applied (one at a time).
    patient_gate: tokio::sync::Mutex<()>,
    /// Told of every stored instance (see [`Archive::set_store_observer`]).
    observer: std::sync::RwLock<Option<Arc<dyn StoreObserver>>>,
    /// The per-series metadata blobs (when the index compacts metadata).
    series_meta: crate::series_metadata::SeriesMetadata,
}

/// Told, after the fact, of every instance a store made durable (new or
/// replaced): the seam where work that follows arrivals (the study-stable
/// trigger of availability notifications) hears of them. It is called on
/// the storing task, so it must return at once (hand the work to a queue
/// or a channel); it cannot fail the store.
pub trait StoreObserver: Send + Sync + 'static {
    fn stored(&self, record: &InstanceRecord);
}

/// Where the workflow services keep their state: the durable job queue
/// and the MPPS records. Memory stores until [`Archive::set_workflow`]
/// (offline tools, tests).
#[derive(Clone)]
pub struct Workflow {
    pub jobs: crate::jobs::JobQueue,
    pub mpps: Arc<dyn crate::mpps::MppsStore>,
}

impl Default for Workflow {
    fn default() -> Self {
        Workflow {
            jobs: crate::jobs::JobQueue::new(
                Arc::new(crate::jobs::MemoryJobStore::default()),
                crate::jobs::RetryPolicy::default().max_attempts,
            ),
            mpps: Arc::new(crate::mpps::MemoryMppsStore::default()),
        }
    }
}

/// Reads a blob stream to its end: its size and hex SHA-256.
async fn size_and_sha256(
    mut stream: BoxStream<'static, Result<Bytes, PortError>>,
) -> Result<(u64, String), String> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|e| format!("blob unreadable: {e}"))?;
        size += c.len() as u64;
        hasher.update(&c);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// What re-reading a stored instance found (storage commitment, PS3.4
/// J.3.3: the archive vouches only for objects that still verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceCheck {
    /// Not in the index.
    Missing,
    /// Its bytes have the size and SHA-256 recorded at ingest; the record
    /// says which SOP class it is.
    Intact(Box<InstanceRecord>),
    /// Present in the index, but the blob is missing, unreadable or
    /// differs from what was recorded.
    Damaged(String),
}

#[derive(Default)]
struct SpaceGuard {
    probe: Option<Arc<dyn SpaceProbe>>,
    min: MinFreeSpace,
    /// The last measure: when, and the volume below the watermark if any.
    checked: Option<(std::time::Instant, Option<LowSpace>)>,
}

/// Where a new object's bytes go while they are received.
enum Sink {
    Blob(Box<dyn BlobWriter>),
    Landing(Box<dyn LandingWriter>),
}

impl Sink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError> {
        match self {
            Sink::Blob(w) => w.write(chunk).await,
            Sink::Landing(w) => w.write(chunk).await,
        }
    }
    async fn abort(self) {
        match self {
            Sink::Blob(w) => w.abort().await,
            Sink::Landing(w) => w.abort().await,
        }
    }
}

fn lock_landed(
    m: &std::sync::Mutex<HashMap<String, LandedId>>,
) -> std::sync::MutexGuard<'_, HashMap<String, LandedId>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The background task that moves landed objects to their blob keys. It
/// holds the archive weakly: it ends when the archive is dropped.
async fn mover(
    weak: Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(LandedId, BlobKey)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MOVE_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        // Let a burst of stores finish first.
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let idle = now_ms().saturating_sub(inner.last_landed_ms.load(Ordering::Relaxed));
            let pending = inner.landing.as_ref().map_or(0, |l| l.pending_bytes());
            drop(inner);
            if idle >= MOVE_WHEN_IDLE_MS || pending >= MOVE_EAGER_BYTES {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(
                MOVE_WHEN_IDLE_MS - idle.min(MOVE_WHEN_IDLE_MS) + 10,
            ))
            .await;
        }
        while batch.len() < MOVE_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let archive = Archive {
                inner,
                scope: Arc::new(StudyScope::All),
            };
            match archive.move_landed(&batch, true).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, objects = batch.len(),
                        "moving landed objects to storage failed; retrying");
                }
            }
            drop(archive);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
        }
    }
}

impl Archive {
    pub fn new(blobs: Arc<dyn BlobStore>, index: Arc<dyn Index>, limits: Limits) -> Archive {
        Self::build(blobs, index, None, limits)
    }

    /// An archive that lands new objects in `landing` first (see the
    /// module's durability contract). Must be called inside a Tokio
    /// runtime: it starts the background mover. Call [`Archive::recover`]
    /// before serving, so what an earlier run left landed is replayed.
    pub fn with_landing(
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn Index>,
        landing: Arc<dyn Landing>,
        limits: Limits,
    ) -> Archive {
        Self::build(blobs, index, Some(landing), limits)
    }

    fn build(
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn Index>,
        landing: Option<Arc<dyn Landing>>,
        limits: Limits,
    ) -> Archive {
        let seed = now_ms() << 20;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let has_landing = landing.is_some();
        let series_meta = crate::series_metadata::SeriesMetadata::new(blobs.clone(), index.clone());
        let inner = Arc::new(Inner {
            blobs,
            index,
            limits,
            series_meta,
            sop_locks: (0..SOP_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            staging_seq: AtomicU64::new(seed),
            landing,
            landed: std::sync::Mutex::new(HashMap::new()),
            mover: has_landing.then_some(tx),
            last_landed_ms: AtomicU64::new(0),
            land_new: std::sync::atomic::AtomicBool::new(true),
            move_gate: tokio::sync::Mutex::new(()),
            closing: std::sync::atomic::AtomicBool::new(false),
            audit: std::sync::RwLock::new(Arc::new(NoAudit)),
            credentials: std::sync::RwLock::new(None),
            sessions: std::sync::RwLock::new(None),
            orders: std::sync::RwLock::new(None),
            duplicate_policy: std::sync::RwLock::new(DuplicatePolicy::default()),
            space: std::sync::Mutex::new(SpaceGuard::default()),
            workflow: std::sync::RwLock::new(Workflow::default()),
            patients: std::sync::RwLock::new(patient_changes::PatientState::default()),
            patient_gate: tokio::sync::Mutex::new(()),
            observer: std::sync::RwLock::new(None),
        });
        if has_landing {
            tokio::spawn(mover(Arc::downgrade(&inner), rx));
        }
        Archive {
            inner,
            scope: Arc::new(StudyScope::All),
        }
    }

    /// This archive confined to `scope`: reads outside it answer
    /// `NotFound` (never a different error, so they do not reveal whether
    /// the study exists), searches return only rows of its studies.
    pub fn scoped(&self, scope: StudyScope) -> Archive {
        Archive {
            inner: self.inner.clone(),
            scope: Arc::new(scope),
        }
    }

    /// The studies this handle may read.
    pub fn scope(&self) -> &StudyScope {
        &self.scope
    }

    /// `NotFound` unless this handle's scope allows `study`.
    fn in_scope(&self, study: &Uid, what: impl FnOnce() -> String) -> Result<(), ArchiveError> {
        if self.scope.allows(study) {
            Ok(())
        } else {
            Err(ArchiveError::NotFound(what()))
        }
    }

    /// Copies landed objects to their blob keys, flushes the index, and
    /// settles their records. Objects settled meanwhile (deleted, replaced)
    /// are skipped.
    async fn move_landed(
        &self,
        batch: &[(LandedId, BlobKey)],
        from_mover: bool,
    ) -> Result<(), PortError> {
        let Some(landing) = &self.inner.landing else {
            return Ok(());
        };
        // One batch at a time (the mover's or a drain's); once the archive
        // is closing, the mover stops and `close` moves what is left.
        let _gate = self.inner.move_gate.lock().await;
        if from_mover && self.inner.closing.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A few copies at once: their syncs overlap.
        let copies = futures::stream::iter(batch.iter().cloned().map(|(id, key)| {
            let this = self.clone();
            let landing = landing.clone();
            async move {
                let Some(sop) = key.sop_instance_uid() else {
                    return Ok(None);
                };
                let _guard = this.sop_lock(&sop).lock().await;
                if lock_landed(&this.inner.landed).get(key.as_str()) != Some(&id) {
                    return Ok(None);
                }
                this.copy_landed(&landing, id, &key).await?;
                Ok::<_, PortError>(Some((id, key)))
            }
        }))
        .buffer_unordered(MOVE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let mut moved = Vec::with_capacity(batch.len());
        let mut failed = None;
        for c in copies {
            match c {
                Ok(Some(m)) => moved.push(m),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        if moved.is_empty() {
            return failed.map_or(Ok(()), Err);
        }
        self.inner.index.flush().await?;
        let ids: Vec<LandedId> = moved.iter().map(|(id, _)| *id).collect();
        landing.settle(&ids).await?;
        let sops: Vec<Uid> = moved
            .iter()
            .filter_map(|(_, k)| k.sop_instance_uid())
            .collect();
        self.inner.index.clear_landing_marks(&sops).await?;
        for (id, key) in &moved {
            self.forget_landed(key, *id);
        }
        // What was copied is settled; a failed copy is retried.
        failed.map_or(Ok(()), Err)
    }

    /// Copies one landed object to its blob key. A record settled meanwhile
    /// (by the mover or a delete racing this call) is not an error: its
    /// object is already in place.
    async fn copy_landed(
        &self,
        landing: &Arc<dyn Landing>,
        id: LandedId,
        key: &BlobKey,
    ) -> Result<(), PortError> {
        let mut source = match landing.get(id).await {
            Ok(s) => s,
            Err(PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.copy_to(&mut source, key).await
    }

    /// Streams `source` to a new blob at `key`; durable when this returns.
    async fn copy_to(
        &self,
        source: &mut BoxStream<'static, Result<Bytes, PortError>>,
        key: &BlobKey,
    ) -> Result<(), PortError> {
        let mut writer = self.inner.blobs.writer(key).await?;
        while let Some(chunk) = source.next().await {
            match chunk {
                Ok(c) => writer.write(c).await?,
                Err(e) => {
                    writer.abort().await;
                    return Err(e);
                }
            }
        }
        writer.finish().await
    }

    /// Drops a key from the landed map if it still names record `id`.
    fn forget_landed(&self, key: &BlobKey, id: LandedId) {
        let mut landed = lock_landed(&self.inner.landed);
        if landed.get(key.as_str()) == Some(&id) {
            landed.remove(key.as_str());
        }
    }

    /// Whether a blob of this size is at `key`.
    async fn blob_present(&self, key: &BlobKey, size: u64) -> Result<bool, PortError> {
        match self.inner.blobs.size(key).await {
            Ok(n) => Ok(n == size),
            Err(PortError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Settles a landed object now (before it is deleted or replaced); the
    /// caller holds its SOP lock.
    async fn settle_landed(&self, key: &BlobKey) -> Result<(), PortError> {
        let Some(landing) = &self.inner.landing else {
            return Ok(());
        };
        let Some(id) = lock_landed(&self.inner.landed).get(key.as_str()).copied() else {
            return Ok(());
        };
        self.copy_landed(landing, id, key).await?;
        self.inner.index.flush().await?;
        landing.settle(&[id]).await?;
        if let Some(sop) = key.sop_instance_uid() {
            self.inner.index.clear_landing_marks(&[sop]).await?;
        }
        lock_landed(&self.inner.landed).remove(key.as_str());
        Ok(())
    }

    /// Moves every landed object to its blob key (before a clean shutdown,
    /// a verify or a reindex). Returns how many were moved.
    pub async fn drain_landing(&self) -> Result<u64, ArchiveError> {
        let all: Vec<(LandedId, BlobKey)> = lock_landed(&self.inner.landed)
            .iter()
            .filter_map(|(k, id)| BlobKey::parse(k).map(|k| (*id, k)))
            .collect();
        if all.is_empty() {
            return Ok(0);
        }
        info!(objects = all.len(), "moving landed objects to storage");
        for batch in all.chunks(MOVE_BATCH) {
            self.move_landed(batch, false).await?;
        }
        Ok(all.len() as u64)
    }

    /// Whether new objects land first (the default with a landing log) or
    /// go straight to their blob keys. Landing makes each store return
    /// sooner but writes every byte twice: a bulk import is faster without.
    /// What the log already holds is replayed and moved either way.
    pub fn set_landing_for_new_objects(&self, on: bool) {
        self.inner.land_new.store(on, Ordering::Relaxed);
    }

    /// Objects received and not yet moved to their blob key.
    pub fn landed_count(&self) -> usize {
        lock_landed(&self.inner.landed).len()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// A number that identifies this archive: the same for its clones and
    /// scoped views, different from every other archive alive at the same
    /// time (it may be reused once this one is dropped). Lets a caller keep
    /// facts about an archive without holding it open.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Sets the audit sink the boundaries record to (the default records
    /// nothing). Set it once, before serving.
    pub fn set_audit(&self, sink: Arc<dyn AuditSink>) {
        let mut a = self
            .inner
            .audit
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *a = sink;
    }

    /// The audit sink: the one place every boundary records its events.
    pub fn audit(&self) -> Arc<dyn AuditSink> {
        self.inner
            .audit
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets where users and machine tokens are kept (the index's database
    /// in a server; none in offline tools and memory archives).
    pub fn set_credentials(&self, store: Arc<dyn Credentials>) {
        let mut c = self
            .inner
            .credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c = Some(store);
    }

    /// Sets where browser sessions are kept (the PostgreSQL index's
    /// database, shared by every node); without one the access layer keeps
    /// them in memory.
    pub fn set_sessions(&self, store: Arc<dyn crate::sessions::SessionStore>) {
        *self
            .inner
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
    }

    /// The shared session store, if this archive has one.
    pub fn sessions(&self) -> Option<Arc<dyn crate::sessions::SessionStore>> {
        self.inner
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets where the job queue and MPPS records are kept (the index's
    /// database in a server).
    pub fn set_workflow(&self, workflow: Workflow) {
        *self
            .inner
            .workflow
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = workflow;
    }

    /// The job queue and MPPS store.
    pub fn workflow(&self) -> Workflow {
        self.inner
            .workflow
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads one instance's stored bytes and compares their size and
    /// SHA-256 with what was recorded at ingest.
    pub async fn check_instance(&self, sop: &Uid) -> Result<InstanceCheck, ArchiveError> {
        let (record, stream) = match self.retrieve_stored(sop).await {
            Ok(r) => r,
            Err(ArchiveError::NotFound(_)) => return Ok(InstanceCheck::Missing),
            Err(ArchiveError::Storage(PortError::NotFound(m))) => {
                return Ok(InstanceCheck::Damaged(format!("blob missing: {m}")))
            }
            Err(e) => return Err(e),
        };
        let (size, sha256) = match size_and_sha256(stream).await {
            Ok(m) => m,
            Err(e) => return Ok(InstanceCheck::Damaged(e)),
        };
        if size != record.size {
            return Ok(InstanceCheck::Damaged(format!(
                "size is {size} bytes, {} recorded",
                record.size
            )));
        }
        if sha256 != record.sha256 {
            return Ok(InstanceCheck::Damaged(
                "SHA-256 differs from the one recorded".into(),
            ));
        }
        Ok(InstanceCheck::Intact(Box::new(record)))
    }

    /// The credential store, if this archive has one.
    pub fn credentials(&self) -> Option<Arc<dyn Credentials>> {
        self.inner
            .credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets where orders are kept (the index's database in a server).
    pub fn set_orders(&self, store: Arc<dyn crate::orders::OrderStore>) {
        *self
            .inner
            .orders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
    }

    /// The order store, if this archive has one.
    pub fn orders(&self) -> Option<Arc<dyn crate::orders::OrderStore>> {
        self.inner
            .orders
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn describe_storage(&self) -> String {
        self.inner.blobs.describe()
    }

    /// Sets what a store of a stored SOP Instance UID with different
    /// content does (default [`DuplicatePolicy::KeepHistory`]).
    pub fn set_duplicate_policy(&self, policy: DuplicatePolicy) {
        *self
            .inner
            .duplicate_policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    pub fn duplicate_policy(&self) -> DuplicatePolicy {
        *self
            .inner
            .duplicate_policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses stores while a volume `probe` measures has less than `min`
    /// available (without a probe, nothing is measured).
    pub fn set_space_guard(&self, probe: Arc<dyn SpaceProbe>, min: MinFreeSpace) {
        let mut g = self
            .inner
            .space
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.probe = Some(probe);
        g.min = min;
        g.checked = None;
    }

    /// The volume below the free-space watermark, if any. Measured at most
    /// once a second ([`SPACE_CHECK_INTERVAL`]); a probe that fails counts
    /// as enough space (an unreachable store shows in [`Archive::health`]).
    pub fn space_low(&self) -> Option<LowSpace> {
        let mut g = self
            .inner
            .space
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let probe = g.probe.clone()?;
        if let Some((at, low)) = &g.checked {
            if at.elapsed() < SPACE_CHECK_INTERVAL {
                return low.clone();
            }
        }
        let low = match probe.volumes() {
            Ok(volumes) => volumes.into_iter().find_map(|v| {
                let required = g.min.required(v.total);
                (v.available < required).then_some(LowSpace {
                    volume: v.name,
                    available: v.available,
                    required,
                })
            }),
            Err(e) => {
                warn!(error = %e, "free space could not be measured");
                None
            }
        };
        let was_low = matches!(&g.checked, Some((_, Some(_))));
        match (&low, was_low) {
            (Some(l), false) => warn!(volume = %l.volume, available = l.available,
                required = l.required, "storage below the free-space watermark: stores are refused"),
            (None, true) => {
                info!("free space is back above the watermark: stores are accepted again")
            }
            _ => {}
        }
        g.checked = Some((std::time::Instant::now(), low.clone()));
        low
    }

    fn check_space(&self) -> Result<(), StoreError> {
        match self.space_low() {
            Some(l) => Err(StoreError::InsufficientStorage {
                volume: l.volume,
                available: l.available,
                required: l.required,
            }),
            None => Ok(()),
        }
    }

    /// The earlier versions of an instance kept by
    /// [`DuplicatePolicy::KeepHistory`], oldest first. An object whose
    /// sidecar is missing (a crash between the two writes) is listed with
    /// what its blob tells.
    pub async fn history(&self, sop: &Uid) -> Result<Vec<HistoryEntry>, ArchiveError> {
        let keys = self.inner.blobs.list_history(sop).await?;
        let mut versions: std::collections::BTreeMap<u32, (bool, bool)> = Default::default();
        for k in &keys {
            if let Some((_, v, part)) = k.history_entry() {
                let e = versions.entry(v).or_default();
                match part {
                    HistoryPart::Object => e.0 = true,
                    HistoryPart::Meta => e.1 = true,
                }
            }
        }
        let mut out = Vec::new();
        for (version, (object, meta)) in versions {
            if !object {
                continue;
            }
            let sidecar = if meta {
                let key = BlobKey::history(sop, version, HistoryPart::Meta);
                let bytes = self.read_small(&key).await?;
                match serde_json::from_slice::<HistoryEntry>(&bytes) {
                    Ok(e) if e.format <= HISTORY_FORMAT => Some(e),
                    Ok(e) => {
                        warn!(sop = %sop, version, format = e.format,
                            "a history sidecar of a newer format is listed from its object only");
                        None
                    }
                    Err(_) => None,
                }
            } else {
                None
            };
            let entry = match sidecar {
                Some(e) => e,
                None => {
                    let key = BlobKey::history(sop, version, HistoryPart::Object);
                    HistoryEntry {
                        format: HISTORY_FORMAT,
                        version,
                        sop_instance_uid: sop.to_string(),
                        study_instance_uid: String::new(),
                        series_instance_uid: String::new(),
                        patient_id: String::new(),
                        size: self.inner.blobs.size(&key).await?,
                        sha256: String::new(),
                        transfer_syntax_uid: String::new(),
                        received_at_ms: 0,
                        superseded_at_ms: 0,
                    }
                }
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// Makes an earlier version current again; the current content is kept
    /// as history first (the restore is itself a replacement under
    /// [`DuplicatePolicy::KeepHistory`], whatever the configured policy).
    pub async fn restore_version(
        &self,
        sop: &Uid,
        version: u32,
    ) -> Result<StoreOutcome, StoreError> {
        let key = BlobKey::history(sop, version, HistoryPart::Object);
        let stream = self.inner.blobs.get(&key).await?;
        let reader = tokio_util::io::StreamReader::new(
            stream.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))),
        );
        self.store_inner(
            HeaderScan::new(),
            reader,
            false,
            DuplicatePolicy::KeepHistory,
        )
        .await
    }

    /// A whole small blob (a history sidecar).
    async fn read_small(&self, key: &BlobKey) -> Result<Vec<u8>, PortError> {
        let mut stream = self.inner.blobs.get(key).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > 1 << 20 {
                return Err(PortError::Storage(format!("{key} is not a sidecar")));
            }
        }
        Ok(out)
    }

    /// Copies the stored object of `old` to the next history version and
    /// writes its sidecar; both are durable when this returns.
    async fn keep_history(&self, old: &InstanceRecord, patient_id: &str) -> Result<u32, PortError> {
        let sop = &old.sop_instance_uid;
        let version = self
            .inner
            .blobs
            .list_history(sop)
            .await?
            .iter()
            .filter_map(|k| k.history_entry().map(|(_, v, _)| v))
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| PortError::Storage(format!("too many versions of {sop}")))?;
        let from = BlobKey::parse(&old.blob_key)
            .ok_or_else(|| PortError::Index(format!("bad blob key {}", old.blob_key)))?;
        let mut source = self.inner.blobs.get(&from).await?;
        self.copy_to(
            &mut source,
            &BlobKey::history(sop, version, HistoryPart::Object),
        )
        .await?;
        let entry = HistoryEntry {
            format: HISTORY_FORMAT,
            version,
            sop_instance_uid: sop.to_string(),
            study_instance_uid: old.study_instance_uid.to_string(),
            series_instance_uid: old.series_instance_uid.to_string(),
            patient_id: patient_id.to_owned(),
            size: old.size,
            sha256: old.sha256.clone(),
            transfer_syntax_uid: old.transfer_syntax_uid.clone(),
            received_at_ms: old.received_at_ms,
            superseded_at_ms: now_ms(),
        };
        let json = serde_json::to_vec_pretty(&entry)
            .map_err(|e| PortError::Storage(format!("history sidecar: {e}")))?;
        let mut writer = self
            .inner
            .blobs
            .writer(&BlobKey::history(sop, version, HistoryPart::Meta))
            .await?;
        writer.write(Bytes::from(json)).await?;
        writer.finish().await?;
        Ok(version)
    }

    /// Records a replacement (PS3.15 A.5.3.2 DICOM Instances Accessed,
    /// action Update). The replacement is done: a sink that fails is
    /// logged, not undone.
    async fn audit_replaced(&self, rec: &InstanceRecord, patient_id: &str, detail: String) {
        let mut event = AuditEvent::new(
            AuditEventId::InstancesAccessed,
            AuditAction::Update,
            AuditOutcome::Success,
        )
        .describe(detail)
        .actor(AuditActor {
            user_id: IMPLEMENTATION_VERSION_NAME.to_owned(),
            role: Some("Application".to_owned()),
            ..AuditActor::default()
        })
        .object(AuditObject::Study {
            uid: rec.study_instance_uid.to_string(),
        })
        .object(AuditObject::Other {
            kind: "SOP Instance".to_owned(),
            id: rec.sop_instance_uid.to_string(),
        });
        if !patient_id.is_empty() {
            event = event.object(AuditObject::Patient {
                id: patient_id.to_owned(),
                name: None,
            });
        }
        if let Err(e) = self.audit().record(event).await {
            warn!(sop = %rec.sop_instance_uid, error = %e, "the audit record of a replacement could not be written");
        }
    }

    fn sop_lock(&self, sop: &Uid) -> &tokio::sync::Mutex<()> {
        let h = sop
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.inner.sop_locks[h % SOP_LOCKS]
    }

    fn staging_key(&self) -> BlobKey {
        let n = self.inner.staging_seq.fetch_add(1, Ordering::Relaxed);
        BlobKey::staging(((std::process::id() as u128) << 64) | n as u128)
    }

    /// Stores one Part 10 object read from `source`. Returns only after the
    /// blob and its index entry are durable.
    pub async fn store<R>(&self, source: R) -> Result<StoreOutcome, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        self.store_inner(HeaderScan::new(), source, false, self.duplicate_policy())
            .await
    }

    /// Stores one Part 10 object whose first bytes `prefix` a boundary has
    /// already read and parsed into `header` (with [`parse_part10`] under
    /// limits no looser than the archive's), followed by the rest in
    /// `source`. The header is not parsed again: a deflated data set (PS3.5
    /// A.5) is inflated once.
    pub async fn store_parsed<R>(
        &self,
        prefix: Vec<u8>,
        header: Header,
        source: R,
    ) -> Result<StoreOutcome, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let scan = HeaderScan {
            prefix,
            next_attempt: 0,
            header: Some(header),
        };
        self.store_inner(scan, source, false, self.duplicate_policy())
            .await
    }

    /// Sets the [`StoreObserver`] told of every stored instance.
    pub fn set_store_observer(&self, observer: Arc<dyn StoreObserver>) {
        *self
            .inner
            .observer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(observer);
    }

    /// A study's record, if the index has it (and this handle's scope
    /// allows it).
    pub async fn study(&self, study: &Uid) -> Result<Option<StudyRecord>, ArchiveError> {
        if !self.scope.allows(study) {
            return Ok(None);
        }
        Ok(self.inner.index.study(study).await?)
    }

    /// [`Self::store_unobserved`], then the [`StoreObserver`] is told.
    async fn store_inner<R>(
        &self,
        scan: HeaderScan,
        source: R,
        strict: bool,
        policy: DuplicatePolicy,
    ) -> Result<StoreOutcome, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let outcome = self.store_unobserved(scan, source, strict, policy).await?;
        let observer = self
            .inner
            .observer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(o) = observer {
            o.stored(&outcome.record);
        }
        Ok(outcome)
    }

    /// `strict`: the file meta's SOP Class / Instance UIDs came from a DIMSE
    /// command and the data set must agree with them.
    async fn store_unobserved<R>(
        &self,
        mut scan: HeaderScan,
        mut source: R,
        strict: bool,
        policy: DuplicatePolicy,
    ) -> Result<StoreOutcome, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        // Before a byte is read or written (PS3.4 B.2.3 A7xx: refused, out
        // of resources).
        self.check_space()?;
        let limits = &self.inner.limits;
        let mut buf = vec![0u8; CHUNK];
        let mut total: u64 = scan.prefix.len() as u64;
        let mut eof = false;
        // 1. Read until the header (everything before Pixel Data) is parsed.
        while scan.header.is_none() {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                eof = true;
                scan.finish(limits)?;
                break;
            }
            total += n as u64;
            if total > limits.max_object_bytes {
                return Err(StoreError::TooLarge {
                    limit: limits.max_object_bytes,
                });
            }
            scan.feed(&buf[..n], limits)?;
        }
        let header = scan.header.take().ok_or(ParseError::Incomplete)?;
        let mut warnings: Vec<String> = header.warnings.iter().map(|w| w.to_string()).collect();
        let mut attrs = InstanceAttributes::from_header(&header)?;
        // The index entry carries this JSON; the index and landing logs
        // refuse entries over `MAX_INDEX_ENTRY_BYTES` on replay, so an
        // object is refused here, before anything is written.
        let metadata_len = attrs.metadata.len() as u64;
        if metadata_len > limits.max_metadata_bytes {
            return Err(ExtractError::MetadataTooLarge {
                size: metadata_len,
                limit: limits.max_metadata_bytes,
            }
            .into());
        }
        self.coercions().apply_to_attrs(&mut attrs);
        let meta_sop = header
            .meta
            .media_storage_sop_instance_uid
            .trim_end_matches('\0');
        let meta_class = header
            .meta
            .media_storage_sop_class_uid
            .trim_end_matches('\0');
        if strict && meta_class != attrs.instance.sop_class_uid.as_str() {
            return Err(StoreError::Mismatch(format!(
                "the data set's SOPClassUID {} does not match the command's {meta_class}",
                attrs.instance.sop_class_uid
            )));
        }
        if !meta_sop.is_empty() && meta_sop != attrs.instance.sop_instance_uid.as_str() {
            if strict {
                return Err(StoreError::Mismatch(format!(
                    "the data set's SOPInstanceUID {} does not match the command's {meta_sop}",
                    attrs.instance.sop_instance_uid
                )));
            }
            warnings.push(format!(
                "MediaStorageSOPInstanceUID {meta_sop} differs from SOPInstanceUID {}; the data set's value is used",
                attrs.instance.sop_instance_uid
            ));
        }
        if let Some(existing) = self
            .inner
            .index
            .series(&attrs.series.series_instance_uid)
            .await?
        {
            if existing.study_instance_uid != attrs.study.study_instance_uid {
                return Err(StoreError::SeriesInOtherStudy {
                    series: attrs.series.series_instance_uid.to_string(),
                    existing: existing.study_instance_uid.to_string(),
                    claimed: attrs.study.study_instance_uid.to_string(),
                });
            }
        }
        let sop = attrs.instance.sop_instance_uid.clone();
        let key = BlobKey::for_instance(
            &attrs.study.study_instance_uid,
            &attrs.series.series_instance_uid,
            &sop,
        );

        let _guard = self.sop_lock(&sop).lock().await;
        let existing = self.inner.index.instance(&sop).await?;
        // The stored instance's patient, for the duplicate policy and its
        // history sidecar.
        let mut existing_patient: Option<(String, String)> = None;
        if let Some(old) = &existing {
            // A duplicate or a replacement of an instance still landed:
            // settle it first, so the rest works on its blob.
            self.settle_landed(&key).await?;
            let study = self.inner.index.study(&old.study_instance_uid).await?;
            let (patient_key, patient_id) = study
                .map(|s| (s.patient_key, s.patient_id))
                .unwrap_or_default();
            // Identical content cannot name another patient or study, so
            // an object that does is different: refused before anything
            // is written (unless the old behaviour is asked for).
            let moves = old.study_instance_uid != attrs.study.study_instance_uid
                || patient_key != attrs.study.patient_key;
            if moves && policy != DuplicatePolicy::Overwrite {
                return Err(StoreError::Duplicate {
                    sop: sop.to_string(),
                    reason: DuplicateRefusal::MovesInstance,
                });
            }
            existing_patient = Some((patient_key, patient_id));
        }
        let landing = match (&existing, &self.inner.landing) {
            (None, Some(l))
                if l.pending_bytes() < LANDING_BUDGET
                    && self.inner.land_new.load(Ordering::Relaxed) =>
            {
                Some(l.clone())
            }
            _ => None,
        };
        let target = if existing.is_some() {
            self.staging_key()
        } else {
            key.clone()
        };

        // 2. Stream the object to the landing log or its blob, hashing as
        //    it goes.
        let mut hasher = Sha256::new();
        let mut writer = match &landing {
            Some(l) => Sink::Landing(l.writer().await?),
            // A new key is created conditionally where the store can: two
            // nodes storing the same new instance cannot overwrite each
            // other silently.
            None if existing.is_none() => Sink::Blob(self.inner.blobs.writer_new(&target).await?),
            None => Sink::Blob(self.inner.blobs.writer(&target).await?),
        };
        let prefix = Bytes::from(std::mem::take(&mut scan.prefix));
        hasher.update(&prefix);
        let mut size = prefix.len() as u64;
        let written: Result<(), StoreError> = async {
            writer.write(prefix).await?;
            if !eof {
                loop {
                    let n = source.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    if size > limits.max_object_bytes {
                        return Err(StoreError::TooLarge {
                            limit: limits.max_object_bytes,
                        });
                    }
                    hasher.update(&buf[..n]);
                    writer.write(Bytes::copy_from_slice(&buf[..n])).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            writer.abort().await;
            return Err(e);
        }
        if let Some(p) = &header.pixel_data {
            if let Some(len) = p.length {
                let end = p.value_offset + u64::from(len);
                if end > size && !p.inflated {
                    writer.abort().await;
                    return Err(StoreError::Parse(ParseError::Truncated {
                        tag: 0x7FE0_0010,
                        offset: p.offset,
                        len: u64::from(len),
                        available: size.saturating_sub(p.value_offset),
                    }));
                }
            }
        }
        let tail_started = std::time::Instant::now();
        let sha256 = hex::encode(hasher.finalize());
        attrs.instance.blob_key = key.as_str().to_owned();
        attrs.instance.size = size;
        attrs.instance.sha256 = sha256.clone();
        attrs.instance.received_at_ms = now_ms();
        let writer = match writer {
            Sink::Blob(w) => w,
            Sink::Landing(w) => {
                // 3. One sync makes object and index entry durable in the
                //    landing log; meanwhile the entry goes into the index
                //    with a landing mark (recovery drops a marked entry
                //    whose object never became durable).
                let id = w.id();
                lock_landed(&self.inner.landed).insert(key.as_str().to_owned(), id);
                let (committed, put) = tokio::join!(
                    w.commit(&key, &attrs),
                    self.inner.index.put_landing(attrs.clone())
                );
                let landed_us = tail_started.elapsed().as_micros() as u64;
                if let Err(e) = committed {
                    self.forget_landed(&key, id);
                    if put.is_ok() {
                        if let Some((_, journal)) = self.inner.index.remove(&sop).await? {
                            self.inner.index.journal_clear(journal).await?;
                        }
                    }
                    return Err(e.into());
                }
                if let Err(e) = put {
                    // The object is durable in the log but its index entry
                    // is not (a full disk, say): the store failed, so the
                    // record is settled without being moved, and what the
                    // index may hold of the entry is removed (best effort:
                    // recovery drops a marked entry without its object).
                    // Otherwise the object would appear later although the
                    // peer was told it was not stored.
                    self.forget_landed(&key, id);
                    if let Some(l) = &landing {
                        if let Err(s) = l.settle(&[id]).await {
                            warn!(sop = %sop, error = %s, "a landed object whose store failed could not be discarded");
                        }
                    }
                    if let Ok(Some((_, journal))) = self.inner.index.remove(&sop).await {
                        let _ = self.inner.index.journal_clear(journal).await;
                    }
                    return Err(e.into());
                }
                self.inner.last_landed_ms.store(now_ms(), Ordering::Relaxed);
                if let Some(tx) = &self.inner.mover {
                    let _ = tx.send((id, key.clone()));
                }
                debug!(sop = %sop, size, landed_us, "stored (landed)");
                return Ok(StoreOutcome {
                    status: StoreStatus::Stored,
                    record: attrs.instance,
                    warnings,
                    history_version: None,
                });
            }
        };
        match writer.finish().await {
            Ok(()) => {}
            // Another writer created the key after the index was asked (a
            // second node storing the same new instance, or an object left
            // by a crash before its index entry). The same content is the
            // same instance and is indexed as ours; other content is not
            // overwritten: the store fails (a transient failure), and a
            // retry finds the instance and follows the duplicate policy.
            Err(PortError::AlreadyExists(_)) if existing.is_none() => {
                let theirs = self.read_blob_attrs(&key).await?;
                if theirs.instance.sha256 != sha256 {
                    warn!(sop = %sop, key = %key,
                        "another writer created this object with different content meanwhile; store refused, a retry follows the duplicate policy");
                    return Err(StoreError::Storage(PortError::Storage(format!(
                        "{key} was created meanwhile by another writer with different content"
                    ))));
                }
                debug!(sop = %sop, "identical object created meanwhile by another writer");
            }
            Err(e) => return Err(e.into()),
        }
        let blob_durable_us = tail_started.elapsed().as_micros() as u64;
        let mut history_version = None;

        // An index entry whose object is not there (an entry that outlived
        // a store that failed, e.g. on a full disk) is no stored version:
        // the new object takes its place, nothing is kept or compared.
        let old_present = match &existing {
            Some(old) => match BlobKey::parse(&old.blob_key) {
                Some(k) => self.blob_present(&k, old.size).await?,
                None => false,
            },
            None => false,
        };
        if let (Some(old), false) = (&existing, old_present) {
            warn!(sop = %sop, key = %old.blob_key,
                "the index names an object that is not in storage; the new object takes its place");
        }
        let status = match existing {
            None => {
                let index_started = std::time::Instant::now();
                self.inner.index.put(attrs.clone()).await?;
                self.inner.index.flush().await?;
                let index_durable_us = index_started.elapsed().as_micros() as u64;
                debug!(sop = %sop, size, blob_durable_us, index_durable_us, "stored");
                StoreStatus::Stored
            }
            Some(old) if old_present && old.sha256 == sha256 && old.blob_key == key.as_str() => {
                self.inner.blobs.delete(&target).await?;
                debug!(sop = %sop, "identical instance already present");
                return Ok(StoreOutcome {
                    status: StoreStatus::AlreadyPresent,
                    record: old,
                    warnings,
                    history_version: None,
                });
            }
            Some(_) if old_present && policy == DuplicatePolicy::Reject => {
                self.inner.blobs.delete(&target).await?;
                return Err(StoreError::Duplicate {
                    sop: sop.to_string(),
                    reason: DuplicateRefusal::DifferentContent,
                });
            }
            Some(old) => {
                let patient_id = existing_patient.map(|(_, id)| id).unwrap_or_default();
                // The earlier version is durable under its history key
                // before the replacement is journalled and done.
                if old_present && policy == DuplicatePolicy::KeepHistory {
                    match self.keep_history(&old, &patient_id).await {
                        Ok(v) => history_version = Some(v),
                        Err(e) => {
                            self.inner.blobs.delete(&target).await?;
                            return Err(e.into());
                        }
                    }
                }
                let journal = self
                    .inner
                    .index
                    .journal_add(JournalEntry::Replace {
                        staging: target.as_str().to_owned(),
                        target: key.as_str().to_owned(),
                        old: old.blob_key.clone(),
                    })
                    .await?;
                self.inner.blobs.rename(&target, &key).await?;
                if let IndexPut::Replaced(prev) = self.inner.index.put(attrs.clone()).await? {
                    if prev.blob_key != key.as_str() {
                        if let Some(old_key) = BlobKey::parse(&prev.blob_key) {
                            self.inner.index.flush().await?;
                            self.inner.blobs.delete(&old_key).await?;
                        }
                    }
                }
                self.inner.index.journal_clear(journal).await?;
                self.inner.index.flush().await?;
                match history_version {
                    // Nothing was stored under this UID after all.
                    None if !old_present => {
                        return Ok(StoreOutcome {
                            status: StoreStatus::Stored,
                            record: attrs.instance,
                            warnings,
                            history_version: None,
                        })
                    }
                    Some(v) => {
                        info!(sop = %sop, old_sha256 = %old.sha256, new_sha256 = %sha256,
                            history_version = v,
                            "instance replaced by a new version; the earlier one is kept as history");
                        self.audit_replaced(
                            &attrs.instance,
                            &patient_id,
                            format!("replaced; earlier version kept as history version {v}"),
                        )
                        .await;
                    }
                    None => {
                        warn!(sop = %sop, old_sha256 = %old.sha256, new_sha256 = %sha256,
                            "instance overwritten by different content with the same SOP Instance UID; the earlier version is not kept (on_duplicate = overwrite)");
                        self.audit_replaced(
                            &attrs.instance,
                            &patient_id,
                            "overwritten; earlier version not kept".to_owned(),
                        )
                        .await;
                    }
                }
                StoreStatus::Replaced
            }
        };
        Ok(StoreOutcome {
            status,
            record: attrs.instance,
            warnings,
            history_version,
        })
    }

    /// Stores a bare data set (as DIMSE C-STORE delivers it) by wrapping it
    /// in a Part 10 file meta header built from the command's SOP Class and
    /// Instance UIDs and the negotiated transfer syntax. The data set bytes
    /// are streamed, never held whole.
    pub async fn store_dataset<R>(
        &self,
        transfer_syntax_uid: &str,
        sop_class_uid: &Uid,
        sop_instance_uid: &Uid,
        source_ae_title: Option<&str>,
        dataset: R,
    ) -> Result<StoreOutcome, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let meta = FileMeta {
            transfer_syntax_uid: transfer_syntax_uid.to_owned(),
            media_storage_sop_class_uid: sop_class_uid.to_string(),
            media_storage_sop_instance_uid: sop_instance_uid.to_string(),
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
            source_ae_title: source_ae_title.map(str::to_owned),
        };
        let prefix = std::io::Cursor::new(encode_file_meta(&meta));
        self.store_inner(
            HeaderScan::new(),
            prefix.chain(dataset),
            true,
            self.duplicate_policy(),
        )
        .await
    }

    pub async fn find(&self, query: &Query) -> Result<FindResult, ArchiveError> {
        let StudyScope::Studies(allowed) = &*self.scope else {
            return Ok(self.inner.index.find(query).await?);
        };
        if allowed.is_empty() {
            return Ok(FindResult::default());
        }
        // The scope's studies become a Study Instance UID list key (PS3.4
        // C.2.2.2.2), ANDed with the query's own keys, so paging and the
        // total count only ever see rows of those studies.
        let mut confined = query.clone();
        confined.confine_to_studies(allowed.iter());
        let mut found = self.inner.index.find(&confined).await?;
        // And whatever the index does with a second key on one attribute,
        // no row of another study leaves here.
        found.matches.retain(|m| {
            let study = m
                .study
                .as_ref()
                .map(|s| &s.study_instance_uid)
                .or(m.instance.as_ref().map(|i| &i.study_instance_uid));
            study.is_some_and(|s| allowed.contains(s))
        });
        Ok(found)
    }

    /// The DICOM JSON of one instance (built at ingest).
    pub async fn instance_metadata(&self, sop: &Uid) -> Result<Vec<u8>, ArchiveError> {
        if !matches!(*self.scope, StudyScope::All) {
            self.instance(sop).await?;
        }
        let json = if self.inner.index.compacts_metadata() {
            self.inner.series_meta.of_instance(sop, self).await?
        } else {
            self.inner.index.metadata(sop).await?
        };
        json.ok_or_else(|| ArchiveError::NotFound(format!("instance {sop}")))
    }

    /// Moves the DICOM JSON of series quiet for `quiet` out of the index
    /// into their metadata blobs (at most `max` series), and deletes the
    /// blobs that replaced ones left (see [`crate::series_metadata`]).
    /// Nothing to do when the index keeps all JSON itself.
    pub async fn compact_metadata(
        &self,
        quiet: std::time::Duration,
        max: usize,
    ) -> Result<crate::series_metadata::CompactReport, ArchiveError> {
        if !self.inner.index.compacts_metadata() {
            return Ok(Default::default());
        }
        Ok(self.inner.series_meta.compact_due(quiet, max, self).await?)
    }

    /// The DICOM JSON of every instance of a series.
    pub async fn series_metadata(&self, series: &Uid) -> Result<Vec<Vec<u8>>, ArchiveError> {
        if !matches!(*self.scope, StudyScope::All)
            && self.instances_of_series(series).await?.is_empty()
        {
            return Ok(Vec::new());
        }
        if self.inner.index.compacts_metadata() {
            return Ok(self.inner.series_meta.of_series(series, self).await?);
        }
        Ok(self.inner.index.metadata_of_series(series).await?)
    }

    /// The DICOM JSON of every instance of a series with its SOP Instance
    /// UID, in instance order; a compacted series' blob is read once.
    pub async fn series_metadata_entries(
        &self,
        series: &Uid,
    ) -> Result<Vec<(Uid, Vec<u8>)>, ArchiveError> {
        let instances = self.instances_of_series(series).await?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.index.compacts_metadata() {
            return Ok(self
                .inner
                .series_meta
                .entries_of_series(series, self)
                .await?);
        }
        let mut out = Vec::with_capacity(instances.len());
        for i in instances {
            if let Some(json) = self.inner.index.metadata(&i.sop_instance_uid).await? {
                out.push((i.sop_instance_uid, json));
            }
        }
        Ok(out)
    }

    pub async fn instance(&self, sop: &Uid) -> Result<InstanceRecord, ArchiveError> {
        let record = self
            .inner
            .index
            .instance(sop)
            .await?
            .ok_or_else(|| ArchiveError::NotFound(format!("instance {sop}")))?;
        self.in_scope(&record.study_instance_uid, || format!("instance {sop}"))?;
        Ok(record)
    }

    pub async fn instances_of_study(
        &self,
        study: &Uid,
    ) -> Result<Vec<InstanceRecord>, ArchiveError> {
        if !self.scope.allows(study) {
            return Ok(Vec::new());
        }
        Ok(self.inner.index.instances_of_study(study).await?)
    }

    /// A series' record, if the index has it (and this handle's scope
    /// allows its study).
    pub async fn series(&self, series: &Uid) -> Result<Option<SeriesRecord>, ArchiveError> {
        Ok(self
            .inner
            .index
            .series(series)
            .await?
            .filter(|r| self.scope.allows(&r.study_instance_uid)))
    }

    pub async fn instances_of_series(
        &self,
        series: &Uid,
    ) -> Result<Vec<InstanceRecord>, ArchiveError> {
        let mut found = self.inner.index.instances_of_series(series).await?;
        found.retain(|r| self.scope.allows(&r.study_instance_uid));
        Ok(found)
    }

    /// Streams an instance's Part 10 bytes as every answer sends them:
    /// exactly as stored, except that the Patient Module attributes of a
    /// corrected or merged patient are rewritten in the header (design
    /// piece 6; the returned record's size and pixel data offset are
    /// those of the bytes sent).
    pub async fn retrieve(
        &self,
        sop: &Uid,
    ) -> Result<(InstanceRecord, BoxStream<'static, Result<Bytes, PortError>>), ArchiveError> {
        let (record, stream) = self.retrieve_stored(sop).await?;
        self.coerce_retrieved(record, stream).await
    }

    /// Streams an instance's Part 10 bytes exactly as stored.
    pub async fn retrieve_stored(
        &self,
        sop: &Uid,
    ) -> Result<(InstanceRecord, BoxStream<'static, Result<Bytes, PortError>>), ArchiveError> {
        let record = self.instance(sop).await?;
        let key = BlobKey::parse(&record.blob_key)
            .ok_or_else(|| PortError::Index(format!("bad blob key {}", record.blob_key)))?;
        if let Some(landing) = &self.inner.landing {
            let id = lock_landed(&self.inner.landed).get(key.as_str()).copied();
            if let Some(id) = id {
                match landing.get(id).await {
                    Ok(stream) => return Ok((record, stream)),
                    // Moved meanwhile: read the blob.
                    Err(PortError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let stream = self.inner.blobs.get(&key).await?;
        Ok((record, stream))
    }

    /// Reads a whole instance into memory exactly as stored (small
    /// objects, tests).
    pub async fn retrieve_bytes(&self, sop: &Uid) -> Result<Vec<u8>, ArchiveError> {
        let (record, mut stream) = self.retrieve_stored(sop).await?;
        let mut out = Vec::with_capacity(record.size as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Deletes one instance: index entry first (with a journalled blob
    /// deletion), then the blob.
    pub async fn delete_instance(&self, sop: &Uid) -> Result<bool, ArchiveError> {
        let _guard = self.sop_lock(sop).lock().await;
        if let Some(rec) = self.inner.index.instance(sop).await? {
            if let Some(key) = BlobKey::parse(&rec.blob_key) {
                self.settle_landed(&key).await?;
            }
        }
        let Some((record, journal)) = self.inner.index.remove(sop).await? else {
            return Ok(false);
        };
        self.inner.index.flush().await?;
        if let Some(key) = BlobKey::parse(&record.blob_key) {
            self.inner.blobs.delete(&key).await?;
        }
        self.inner.index.journal_clear(journal).await?;
        info!(sop = %sop, "instance deleted");
        Ok(true)
    }

    /// Deletes every instance of a series; returns how many.
    pub async fn delete_series(&self, series: &Uid) -> Result<u64, ArchiveError> {
        let mut n = 0;
        for i in self.inner.index.instances_of_series(series).await? {
            n += u64::from(self.delete_instance(&i.sop_instance_uid).await?);
        }
        Ok(n)
    }

    /// Deletes every instance of a study; returns how many.
    pub async fn delete_study(&self, study: &Uid) -> Result<u64, ArchiveError> {
        let mut n = 0;
        for i in self.inner.index.instances_of_study(study).await? {
            n += u64::from(self.delete_instance(&i.sop_instance_uid).await?);
        }
        Ok(n)
    }

    /// A cheap probe of both ports: the index answers and the blob store is
    /// reachable (a missing probe key is the expected answer).
    pub async fn health(&self) -> Result<IndexStats, ArchiveError> {
        let stats = self.inner.index.stats().await?;
        self.inner.blobs.check().await?;
        Ok(stats)
    }

    /// The blob store's description and counters, for `/healthz`.
    pub fn storage_info(&self) -> (String, Vec<(&'static str, u64)>) {
        (self.inner.blobs.describe(), self.inner.blobs.counters())
    }

    /// Whether the blob store answers (for `/healthz`).
    pub async fn storage_check(&self) -> Result<(), ArchiveError> {
        Ok(self.inner.blobs.check().await?)
    }

    /// Whether the index answers: its counts (for `/healthz`).
    pub async fn index_check(&self) -> Result<IndexStats, ArchiveError> {
        Ok(self.inner.index.stats().await?)
    }

    pub async fn stats(&self) -> Result<IndexStats, ArchiveError> {
        Ok(self.inner.index.stats().await?)
    }

    /// Reads a blob and derives its index entry (size, checksum, records).
    async fn read_blob_attrs(&self, key: &BlobKey) -> Result<InstanceAttributes, StoreError> {
        let limits = &self.inner.limits;
        let mut stream = self.inner.blobs.get(key).await?;
        let mut scan = HeaderScan::new();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
            scan.feed(&chunk, limits)?;
        }
        scan.finish(limits)?;
        let header = scan.header.take().ok_or(ParseError::Incomplete)?;
        let mut attrs = InstanceAttributes::from_header(&header)?;
        attrs.instance.blob_key = key.as_str().to_owned();
        attrs.instance.size = size;
        attrs.instance.sha256 = hex::encode(hasher.finalize());
        attrs.instance.received_at_ms = now_ms();
        // Patient changes apply to every entry built from a blob (design
        // piece 6), so a reindex keeps them.
        self.coercions().apply_to_attrs(&mut attrs);
        Ok(attrs)
    }

    /// Rebuilds the whole index from the blobs. The store's keys are
    /// counted first (for the progress), then read again as they are
    /// listed: they are never all held (10 M keys would be gigabytes).
    pub async fn reindex(&self, progress: &dyn Progress) -> Result<RecoveryReport, ArchiveError> {
        self.drain_landing().await?;
        let mut total = 0u64;
        {
            let mut keys = self.inner.blobs.list_stream();
            while let Some(key) = keys.next().await {
                key?;
                total += 1;
            }
        }
        self.inner.index.clear().await?;
        progress.set_total(total);
        let mut report = RecoveryReport::default();
        let mut work = self
            .inner
            .blobs
            .list_stream()
            .map(|key| async move {
                match key {
                    Ok(key) => Ok(self.reindex_one(key).await),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(4);
        while let Some(done) = work.next().await {
            let (key, result) = done?;
            match result {
                Ok(Some(Some(attrs))) => {
                    self.inner.index.put(attrs).await?;
                    report.adopted += 1;
                }
                // Earlier versions are not indexed.
                Ok(Some(None)) => {}
                Ok(None) => report.staging_removed += 1,
                Err(e) => {
                    warn!(key = %key, error = %e, "blob could not be indexed");
                    report.unreadable.push(Damage {
                        key: key.to_string(),
                        problem: e.to_string(),
                    });
                }
            }
            progress.advance(1);
        }
        self.inner.index.flush().await?;
        Ok(report)
    }

    /// What one key of the store gives a reindex: `None` for a staging
    /// upload (deleted), `Some(None)` for what is not indexed (an earlier
    /// version; a metadata blob, deleted: derived from the index being
    /// rebuilt), or the attributes of an instance.
    async fn reindex_one(
        &self,
        key: BlobKey,
    ) -> (
        BlobKey,
        Result<Option<Option<InstanceAttributes>>, StoreError>,
    ) {
        if key.is_staging() {
            let r = self.inner.blobs.delete(&key).await.map(|_| None);
            return (key, r.map_err(StoreError::from));
        }
        if key.is_history() {
            return (key, Ok(Some(None)));
        }
        if key.is_metadata() {
            // Derived from the index it pointed into, which is rebuilt.
            let r = self.inner.blobs.delete(&key).await.map(|_| Some(None));
            return (key, r.map_err(StoreError::from));
        }
        let r = self.read_blob_attrs(&key).await.map(|a| Some(Some(a)));
        (key, r)
    }

    /// Start-up: after an unclean shutdown, replay the journal and the
    /// landing log, check the landing marks and delete staging uploads.
    /// Bounded by the work in flight at the crash, not the archive's size.
    pub async fn recover(
        &self,
        progress: &dyn Progress,
    ) -> Result<Option<RecoveryReport>, ArchiveError> {
        let journal = self.inner.index.journal().await?;
        let clean = self.inner.index.was_clean_shutdown().await?;
        self.inner.index.set_clean_shutdown(false).await?;
        self.inner.index.flush().await?;
        let mut report = RecoveryReport {
            landed_replayed: self.replay_landing(progress).await?,
            unacknowledged_dropped: self.check_landing_marks().await?,
            ..RecoveryReport::default()
        };
        if clean
            && journal.is_empty()
            && report.landed_replayed + report.unacknowledged_dropped == 0
        {
            return Ok(None);
        }
        for (id, entry) in journal {
            match entry {
                JournalEntry::Delete { key } => {
                    if let Some(k) = BlobKey::parse(&key) {
                        // The entry can outlive its deletion (its clear
                        // failed, e.g. on a full disk) while the instance
                        // was stored again at the same key: that object is
                        // acknowledged and stays.
                        let stored_again = match k.sop_instance_uid() {
                            Some(sop) => self
                                .inner
                                .index
                                .instance(&sop)
                                .await?
                                .is_some_and(|rec| rec.blob_key == key),
                            None => false,
                        };
                        if stored_again {
                            info!(key = %k, "a journalled deletion is skipped: the instance was stored again");
                        } else {
                            self.inner.blobs.delete(&k).await?;
                        }
                    }
                }
                JournalEntry::Replace {
                    staging,
                    target,
                    old,
                } => {
                    if let Some(k) = BlobKey::parse(&staging) {
                        self.inner.blobs.delete(&k).await?;
                    }
                    if let Some(t) = BlobKey::parse(&target) {
                        if self.inner.blobs.size(&t).await.is_ok() {
                            match self.read_blob_attrs(&t).await {
                                Ok(attrs) => {
                                    self.inner.index.put(attrs).await?;
                                    if old != target {
                                        if let Some(o) = BlobKey::parse(&old) {
                                            self.inner.index.flush().await?;
                                            self.inner.blobs.delete(&o).await?;
                                        }
                                    }
                                }
                                Err(e) => report.unreadable.push(Damage {
                                    key: target.clone(),
                                    problem: e.to_string(),
                                }),
                            }
                        }
                    }
                }
            }
            self.inner.index.journal_clear(id).await?;
            report.journal_replayed += 1;
        }
        if !clean {
            // Bounded by the work in flight at the crash, not by the
            // archive's size: acknowledged objects are in the index (an
            // acknowledgement waits for its flush; the index log, the
            // journal and the landing log replayed above bring back what
            // the crash cut), so only uploads never published are left to
            // clean. An object written but never acknowledged stays in the
            // store unindexed: `pacs verify` lists it, `pacs reindex`
            // adopts it.
            let keys = self.inner.blobs.list_staging().await?;
            progress.set_total(keys.len() as u64);
            for key in keys {
                progress.advance(1);
                self.inner.blobs.delete(&key).await?;
                report.staging_removed += 1;
            }
        }
        self.inner.index.flush().await?;
        if report.adopted + report.staging_removed + report.journal_replayed > 0 {
            info!(
                landed_replayed = report.landed_replayed,
                adopted = report.adopted,
                staging_removed = report.staging_removed,
                journal_replayed = report.journal_replayed,
                "recovery after unclean shutdown done"
            );
        }
        Ok(Some(report))
    }

    /// What the landing log held when the archive was opened: each object
    /// is moved to its blob key (unless it already is there) and its index
    /// entry put (unless the index has it), then the records are settled.
    async fn replay_landing(&self, progress: &dyn Progress) -> Result<u64, ArchiveError> {
        let Some(landing) = &self.inner.landing else {
            return Ok(0);
        };
        let live = landing.live().await?;
        if live.is_empty() {
            return Ok(0);
        }
        info!(
            objects = live.len(),
            "the landing log holds objects from the last run; moving them to storage"
        );
        progress.set_total(live.len() as u64);
        for obj in &live {
            let attrs = &obj.attrs;
            let have_blob = self.blob_present(&obj.key, attrs.instance.size).await?;
            match self
                .inner
                .index
                .instance(&attrs.instance.sop_instance_uid)
                .await?
            {
                Some(rec) => {
                    if !have_blob && rec.sha256 == attrs.instance.sha256 {
                        self.copy_landed(landing, obj.id, &obj.key).await?;
                    }
                }
                None => {
                    if !have_blob {
                        self.copy_landed(landing, obj.id, &obj.key).await?;
                    }
                    let mut attrs = attrs.clone();
                    self.coercions().apply_to_attrs(&mut attrs);
                    self.inner.index.put(attrs).await?;
                }
            }
            progress.advance(1);
        }
        self.inner.index.flush().await?;
        let ids: Vec<LandedId> = live.iter().map(|o| o.id).collect();
        landing.settle(&ids).await?;
        Ok(live.len() as u64)
    }

    /// Every instance still marked by `put_landing` (after the landing log
    /// was replayed): kept if its blob is there, removed otherwise.
    async fn check_landing_marks(&self) -> Result<u64, ArchiveError> {
        let marks = self.inner.index.landing_marks().await?;
        let mut dropped = 0;
        for sop in &marks {
            let Some(rec) = self.inner.index.instance(sop).await? else {
                continue;
            };
            let present = match BlobKey::parse(&rec.blob_key) {
                Some(key) => self.blob_present(&key, rec.size).await?,
                None => false,
            };
            if !present {
                warn!(sop = %sop, "an instance whose store was never acknowledged is removed from the index");
                if let Some((_, journal)) = self.inner.index.remove(sop).await? {
                    self.inner.index.journal_clear(journal).await?;
                }
                dropped += 1;
            }
        }
        if !marks.is_empty() {
            self.inner.index.clear_landing_marks(&marks).await?;
            self.inner.index.flush().await?;
        }
        Ok(dropped)
    }

    /// Marks a clean shutdown (after in-flight work has finished), once
    /// every landed object is in its place.
    pub async fn close(&self) -> Result<(), ArchiveError> {
        // The mover finishes the batch it is in and stops; the drain moves
        // the rest, so nothing writes blobs once `close` returns.
        self.inner.closing.store(true, Ordering::Relaxed);
        self.drain_landing().await?;
        self.inner.index.set_clean_shutdown(true).await?;
        self.inner.index.flush().await?;
        Ok(())
    }

    /// Checks every indexed instance against its blob (presence, size,
    /// SHA-256) and every blob against the index. Holds one page of
    /// instance records at a time and reads the store's keys as they are
    /// listed (not every record and a set of every key), so a
    /// 10 M-instance archive is verified in bounded memory.
    pub async fn verify(&self, progress: &dyn Progress) -> Result<VerifyReport, ArchiveError> {
        self.drain_landing().await?;
        let mut report = VerifyReport::default();
        let total = self.inner.index.stats().await?.instances;
        // Every blob against the index: an instance key must be the one its
        // SOP Instance UID's record names.
        progress.stage(VERIFY_KEYS_STAGE, total);
        let mut keys = self.inner.blobs.list_stream();
        while let Some(key) = keys.next().await {
            let key = key?;
            if key.is_staging() || key.is_history() || key.is_metadata() {
                continue;
            }
            progress.advance(1);
            let indexed = match key.sop_instance_uid() {
                Some(sop) => self
                    .inner
                    .index
                    .instance(&sop)
                    .await?
                    .is_some_and(|rec| rec.blob_key == key.as_str()),
                None => false,
            };
            if !indexed {
                report.unindexed.push(key.to_string());
            }
        }
        // Every instance against its blob.
        progress.stage(VERIFY_BLOBS_STAGE, total);
        let mut after: Option<Uid> = None;
        loop {
            let page = self
                .inner
                .index
                .instances_after(after.as_ref(), VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            let next = last.sop_instance_uid.clone();
            let full = page.len() == VERIFY_PAGE;
            self.verify_page(page, &mut report, progress).await;
            if !full {
                break;
            }
            after = Some(next);
        }
        Ok(report)
    }

    /// Reads the blobs of one page of instance records, four at a time.
    async fn verify_page(
        &self,
        page: Vec<InstanceRecord>,
        report: &mut VerifyReport,
        progress: &dyn Progress,
    ) {
        let mut work = futures::stream::iter(page.into_iter().map(|rec| async move {
            let key = match BlobKey::parse(&rec.blob_key) {
                Some(k) => k,
                None => return (rec, Err("index holds an invalid blob key".to_string())),
            };
            let stream = match self.inner.blobs.get(&key).await {
                Ok(s) => s,
                Err(e) => return (rec, Err(format!("blob missing or unreadable: {e}"))),
            };
            let measured = size_and_sha256(stream).await;
            (rec, measured)
        }))
        .buffer_unordered(4);
        while let Some((rec, result)) = work.next().await {
            report.instances_checked += 1;
            match result {
                Ok((size, sha)) => {
                    report.bytes_checked += size;
                    if size != rec.size {
                        report.damage.push(Damage {
                            key: rec.blob_key.clone(),
                            problem: format!("size is {size} bytes, the index says {}", rec.size),
                        });
                    } else if sha != rec.sha256 {
                        report.damage.push(Damage {
                            key: rec.blob_key.clone(),
                            problem: format!("SHA-256 is {sha}, the index says {}", rec.sha256),
                        });
                    }
                }
                Err(problem) => report.damage.push(Damage {
                    key: rec.blob_key.clone(),
                    problem,
                }),
            }
            progress.advance(1);
        }
    }
}
