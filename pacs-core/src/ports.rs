//! The ports the [`crate::Archive`] drives: where blobs live and where the
//! index lives. Adapters are in the `storage` crate.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::query::{FindResult, Query};
use crate::records::{InstanceAttributes, InstanceRecord, SeriesRecord, StudyRecord};
use crate::Uid;

/// A validated storage key: `<study>/<series>/<sop>.dcm` built only from
/// validated UIDs, `staging/<uuid>.dcm` for uploads not yet published, or
/// `history/<sop>/<version>.dcm` (with its `<version>.json` sidecar) for an
/// earlier version kept by the duplicate policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    /// The key of an instance's Part 10 blob.
    pub fn for_instance(study: &Uid, series: &Uid, sop: &Uid) -> BlobKey {
        BlobKey(format!("{study}/{series}/{sop}.dcm"))
    }

    /// A fresh staging key for an upload whose final key is occupied.
    pub fn staging(id: u128) -> BlobKey {
        BlobKey(format!("staging/{id:032x}.dcm"))
    }

    /// The key of an earlier version of an instance (the object, or its
    /// JSON sidecar), kept when a different object with the same SOP
    /// Instance UID replaced it. Versions count from 1.
    pub fn history(sop: &Uid, version: u32, part: HistoryPart) -> BlobKey {
        BlobKey(format!(
            "{}{version}.{}",
            Self::history_prefix(sop),
            part.ext()
        ))
    }

    /// The key of a series' compacted metadata blob (the DICOM JSON of its
    /// instances, see `archive::series_metadata`): `metadata/<series>/<id>.gz`,
    /// `id` in 16 hex digits, a new one each time the blob is written.
    pub fn series_metadata(series: &Uid, id: u64) -> BlobKey {
        BlobKey(format!("metadata/{series}/{id:016x}.gz"))
    }

    /// The prefix under which every earlier version of `sop` is kept
    /// (`history/<sop>/`), for listing.
    pub fn history_prefix(sop: &Uid) -> String {
        format!("history/{sop}/")
    }

    /// Parses a key listed by a blob store, accepting only the shapes this
    /// archive writes.
    pub fn parse(s: &str) -> Option<BlobKey> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["history", sop, name] => {
                Uid::parse(sop).ok()?;
                let (version, ext) = name.split_once('.')?;
                HistoryPart::from_ext(ext)?;
                parse_version(version)?;
                Some(BlobKey(s.to_owned()))
            }
            ["metadata", series, name] => {
                Uid::parse(series).ok()?;
                let hex = name.strip_suffix(".gz")?;
                (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| BlobKey(s.to_owned()))
            }
            ["staging", name] => {
                let hex = name.strip_suffix(".dcm")?;
                (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| BlobKey(s.to_owned()))
            }
            [study, series, name] => {
                let sop = name.strip_suffix(".dcm")?;
                Uid::parse(study).ok()?;
                Uid::parse(series).ok()?;
                Uid::parse(sop).ok()?;
                Some(BlobKey(s.to_owned()))
            }
            _ => None,
        }
    }

    pub fn is_staging(&self) -> bool {
        self.0.starts_with("staging/")
    }

    /// Whether this key holds an earlier version (object or sidecar), not a
    /// current instance.
    pub fn is_history(&self) -> bool {
        self.0.starts_with("history/")
    }

    /// Whether this key holds a series' compacted metadata (derived data,
    /// rebuilt from the instances).
    pub fn is_metadata(&self) -> bool {
        self.0.starts_with("metadata/")
    }

    /// The SOP Instance UID, version and part a history key names.
    pub fn history_entry(&self) -> Option<(Uid, u32, HistoryPart)> {
        let rest = self.0.strip_prefix("history/")?;
        let (sop, name) = rest.split_once('/')?;
        let (version, ext) = name.split_once('.')?;
        Some((
            Uid::parse(sop).ok()?,
            parse_version(version)?,
            HistoryPart::from_ext(ext)?,
        ))
    }

    /// The SOP Instance UID an instance key names (`None` for staging and
    /// history keys).
    pub fn sop_instance_uid(&self) -> Option<Uid> {
        if self.is_history() {
            return None;
        }
        let name = self.0.rsplit('/').next()?;
        Uid::parse(name.strip_suffix(".dcm")?).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A version number as written in a history key: decimal, no sign, no
/// leading zero.
fn parse_version(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The two blobs of an earlier version: the Part 10 object and a small
/// JSON sidecar describing it (so the index stays rebuildable from blobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPart {
    Object,
    Meta,
}

impl HistoryPart {
    fn ext(self) -> &'static str {
        match self {
            HistoryPart::Object => "dcm",
            HistoryPart::Meta => "json",
        }
    }

    fn from_ext(ext: &str) -> Option<HistoryPart> {
        match ext {
            "dcm" => Some(HistoryPart::Object),
            "json" => Some(HistoryPart::Meta),
            _ => None,
        }
    }
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors of the ports, kept opaque: adapters put their detail in the
/// message, the archive maps them to "storage unavailable".
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("index error: {0}")]
    Index(String),
    /// A create-only write ([`BlobStore::writer_new`]) found the key taken.
    #[error("blob {0} already exists")]
    AlreadyExists(String),
}

/// A blob being written. `finish` returns only once the blob is durable
/// under its key; dropping it without `finish` abandons the upload.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError>;
    async fn finish(self: Box<Self>) -> Result<(), PortError>;
    async fn abort(self: Box<Self>);
}

/// Where the Part 10 blobs live.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a streaming upload to `key` (replacing any blob there once
    /// finished, atomically).
    async fn writer(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError>;
    /// Streams a blob.
    async fn get(
        &self,
        key: &BlobKey,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError>;
    /// Reads a byte range of a blob.
    async fn get_range(
        &self,
        key: &BlobKey,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, PortError>;
    /// Size of a blob, or NotFound.
    async fn size(&self, key: &BlobKey) -> Result<u64, PortError>;
    /// Durably moves a blob, replacing the destination.
    async fn rename(&self, from: &BlobKey, to: &BlobKey) -> Result<(), PortError>;
    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<(), PortError>;
    /// Every key in the store (keys of foreign shapes are skipped).
    async fn list(&self) -> Result<Vec<BlobKey>, PortError>;
    /// The same keys as [`BlobStore::list`], as the store lists them,
    /// without holding them all (verify walks 10 M keys with it). The
    /// default reads [`BlobStore::list`].
    fn list_stream(&self) -> BoxStream<'_, Result<BlobKey, PortError>> {
        futures::stream::once(self.list())
            .flat_map(|listed| {
                let keys: Vec<Result<BlobKey, PortError>> = match listed {
                    Ok(keys) => keys.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(keys)
            })
            .boxed()
    }
    /// The keys of the earlier versions of one instance (objects and
    /// sidecars). The default filters [`BlobStore::list`]; adapters that
    /// can list by prefix do better.
    async fn list_history(&self, sop: &Uid) -> Result<Vec<BlobKey>, PortError> {
        let prefix = BlobKey::history_prefix(sop);
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|k| k.as_str().starts_with(&prefix))
            .collect())
    }
    /// The staging keys (uploads not published). The default filters
    /// [`BlobStore::list`]; adapters that can list by prefix do better.
    async fn list_staging(&self) -> Result<Vec<BlobKey>, PortError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(BlobKey::is_staging)
            .collect())
    }
    /// A human-readable description (for logs and stats), never secrets.
    fn describe(&self) -> String;
    /// Starts an upload to a key expected to be new. Where the store can
    /// make the create conditional (S3 `If-None-Match: *`), `finish` fails
    /// with [`PortError::AlreadyExists`] instead of replacing an object
    /// another writer put there meanwhile; the default is [`BlobStore::writer`].
    async fn writer_new(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError> {
        self.writer(key).await
    }
    /// Whether the store answers (for `/healthz`). The default asks for the
    /// size of a key that never exists.
    async fn check(&self) -> Result<(), PortError> {
        match self.size(&BlobKey::staging(0)).await {
            Ok(_) | Err(PortError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
    /// Counters of the adapter (name, value), for `/healthz` and stats.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Free and total bytes of one file system the archive writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpace {
    /// What the volume is (a directory), for logs and `/healthz`.
    pub name: String,
    /// Bytes available to this process (`f_bavail`).
    pub available: u64,
    pub total: u64,
}

/// Measures the free space of the file systems the archive writes to (the
/// data directory with its index and landing log, a local blob store).
/// Remote stores (S3) have no such measure and are not listed.
pub trait SpaceProbe: Send + Sync + 'static {
    fn volumes(&self) -> Result<Vec<VolumeSpace>, PortError>;
}

/// A committed object in the landing log: which segment, where its record
/// starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LandedId {
    pub segment: u64,
    pub offset: u64,
}

/// A committed landing record that has not been settled yet.
#[derive(Debug, Clone)]
pub struct LandedObject {
    pub id: LandedId,
    pub key: BlobKey,
    pub attrs: InstanceAttributes,
}

/// An object being written to the landing log. Nothing of it is visible or
/// durable until [`LandingWriter::commit`] returns.
#[async_trait]
pub trait LandingWriter: Send {
    /// The id the record will have once committed.
    fn id(&self) -> LandedId;
    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError>;
    /// Appends the object's key and index entry to the record and makes the
    /// whole record durable with one sync.
    async fn commit(
        self: Box<Self>,
        key: &BlobKey,
        attrs: &InstanceAttributes,
    ) -> Result<LandedId, PortError>;
    async fn abort(self: Box<Self>);
}

/// The landing log: a local append-only log where a received object and
/// its index entry become durable together, with one sync, before the
/// object is moved to its blob key in the background (see
/// `Archive`'s durability contract).
#[async_trait]
pub trait Landing: Send + Sync + 'static {
    async fn writer(&self) -> Result<Box<dyn LandingWriter>, PortError>;
    /// Committed records not yet settled, oldest first (what the previous
    /// run left: recovery replays them).
    async fn live(&self) -> Result<Vec<LandedObject>, PortError>;
    /// Streams the object bytes of a record that is not settled yet;
    /// `NotFound` once its segment is gone.
    async fn get(
        &self,
        id: LandedId,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError>;
    /// Durably marks records settled: their object is at its blob key and
    /// their index entry is durable. Segments left with no live record are
    /// removed. Settling twice is harmless.
    async fn settle(&self, ids: &[LandedId]) -> Result<(), PortError>;
    /// Bytes of objects committed and not settled.
    fn pending_bytes(&self) -> u64;
    fn describe(&self) -> String;
}

/// What putting an instance into the index did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexPut {
    /// A new instance.
    Inserted,
    /// The instance existed and was replaced; the old record is returned so
    /// the caller can remove its blob if the key changed.
    Replaced(Box<InstanceRecord>),
}

/// Multi-step blob work recorded before it starts, so that recovery after a
/// crash can finish or undo it (see `Archive::recover`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JournalEntry {
    /// The blob must be deleted: its index entry is already gone.
    Delete { key: String },
    /// An instance is being replaced: new content goes to `staging`, is
    /// renamed to `target`, and `old` (if different) is deleted afterwards.
    Replace {
        staging: String,
        target: String,
        old: String,
    },
}

/// A series whose instances changed since its metadata blob was written
/// ([`Index::dirty_series`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtySeries {
    pub series: Uid,
    /// Changes with every put or remove in the series: a compaction commits
    /// only if it is still the same ([`Index::commit_series_metadata`]).
    pub mark: u64,
    /// When the series last changed (milliseconds since the epoch).
    pub changed_at_ms: u64,
}

/// Where the DICOM JSON of a series' instances is ([`Index::metadata_entries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesMetadataEntries {
    /// The key of the series' metadata blob, holding the JSON of every entry
    /// answered `None`.
    pub blob: Option<String>,
    /// Every instance of the series in instance order (Instance Number,
    /// then SOP Instance UID), with its JSON when the index still holds it.
    pub entries: Vec<(Uid, Option<Vec<u8>>)>,
    /// The series' change mark when it has changed since the blob was written.
    pub dirty: Option<u64>,
}

/// Counts for `pacs stats` and `/api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub total_bytes: u64,
}

/// The index over the blobs. It is always rebuildable from them.
#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// Inserts or replaces an instance, maintaining every counter, in one
    /// atomic step. Not durable until [`Index::flush`] returns.
    async fn put(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError>;
    /// Replaces every row of one study with `rows` (the study's instances
    /// re-read with patient changes applied) in one transaction: the
    /// study, patient and secondary entries follow the new values.
    async fn replace_study(
        &self,
        study: &Uid,
        rows: Vec<InstanceAttributes>,
    ) -> Result<(), PortError>;
    /// Like [`Index::put`], and marks the instance as landing: its object
    /// and this entry are being made durable in the landing log at the same
    /// time, so the entry may outlive an object that never became durable.
    /// After a crash, `Archive::recover` checks every marked instance.
    async fn put_landing(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError>;
    /// Instances marked by [`Index::put_landing`] and not cleared.
    async fn landing_marks(&self) -> Result<Vec<Uid>, PortError>;
    /// Clears marks (the objects are at their blob keys). Not durable by
    /// itself: a mark that comes back after a crash is only checked again.
    async fn clear_landing_marks(&self, sops: &[Uid]) -> Result<(), PortError>;
    /// Makes every write that completed before the call durable. Concurrent
    /// callers share one flush (group commit).
    async fn flush(&self) -> Result<(), PortError>;
    async fn instance(&self, sop: &Uid) -> Result<Option<InstanceRecord>, PortError>;
    async fn study(&self, study: &Uid) -> Result<Option<StudyRecord>, PortError>;
    async fn series(&self, series: &Uid) -> Result<Option<SeriesRecord>, PortError>;
    /// Instances of a series or a study, ordered by series then instance key.
    async fn instances_of_series(&self, series: &Uid) -> Result<Vec<InstanceRecord>, PortError>;
    async fn instances_of_study(&self, study: &Uid) -> Result<Vec<InstanceRecord>, PortError>;
    async fn find(&self, query: &Query) -> Result<FindResult, PortError>;
    /// The DICOM JSON kept for an instance at ingest (`None` also when it
    /// has moved to its series' metadata blob).
    async fn metadata(&self, sop: &Uid) -> Result<Option<Vec<u8>>, PortError>;
    /// The DICOM JSON of every instance of a series, in instance order.
    async fn metadata_of_series(&self, series: &Uid) -> Result<Vec<Vec<u8>>, PortError>;
    /// Whether this index moves the DICOM JSON of quiet series out into
    /// per-series metadata blobs (the methods below). When it does not,
    /// [`Index::metadata`] and [`Index::metadata_of_series`] hold all of it.
    fn compacts_metadata(&self) -> bool {
        false
    }
    /// A series' instances and where their JSON is.
    async fn metadata_entries(&self, _series: &Uid) -> Result<SeriesMetadataEntries, PortError> {
        Err(PortError::Index(
            "this index keeps no per-series metadata blobs".into(),
        ))
    }
    /// The key of a series' metadata blob, if it has one.
    async fn series_metadata_blob(&self, _series: &Uid) -> Result<Option<String>, PortError> {
        Ok(None)
    }
    /// Series changed at or before `changed_before_ms` and not compacted since,
    /// at most `limit`.
    async fn dirty_series(
        &self,
        _changed_before_ms: u64,
        _limit: usize,
    ) -> Result<Vec<DirtySeries>, PortError> {
        Ok(Vec::new())
    }
    /// Points the series at a new metadata blob and drops the JSON of
    /// `moved` from the index, in one step, if the series' mark is still
    /// `mark` (nothing was put or removed since its entries were read);
    /// the replaced blob is listed in [`Index::metadata_garbage`]. Durable
    /// after the next [`Index::checkpoint`]. `false` when the mark changed:
    /// nothing was done.
    async fn commit_series_metadata(
        &self,
        _series: &Uid,
        _mark: u64,
        _blob: &str,
        _moved: &[Uid],
    ) -> Result<bool, PortError> {
        Err(PortError::Index(
            "this index keeps no per-series metadata blobs".into(),
        ))
    }
    /// Makes every write so far durable, including those [`Index::flush`]
    /// does not cover (compaction commits).
    async fn checkpoint(&self) -> Result<(), PortError> {
        self.flush().await
    }
    /// Metadata blobs no series points at any more, to delete.
    async fn metadata_garbage(&self) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }
    async fn clear_metadata_garbage(&self, _keys: &[String]) -> Result<(), PortError> {
        Ok(())
    }
    /// Removes an instance, maintaining counters, and journals the deletion
    /// of its blob in the same atomic step. Returns the removed record and
    /// the journal id to clear once the blob is gone.
    async fn remove(&self, sop: &Uid) -> Result<Option<(InstanceRecord, u64)>, PortError>;
    /// Adds a journal entry and makes it durable before returning.
    async fn journal_add(&self, entry: JournalEntry) -> Result<u64, PortError>;
    /// Journal entries whose work may not have completed (crash recovery).
    async fn journal(&self) -> Result<Vec<(u64, JournalEntry)>, PortError>;
    async fn journal_clear(&self, id: u64) -> Result<(), PortError>;
    /// Every instance record (for comparisons; holds them all in memory).
    async fn all_instances(&self) -> Result<Vec<InstanceRecord>, PortError>;
    /// Up to `limit` instance records in SOP Instance UID order (bytes),
    /// from the first after `after` (from the start with `None`): a walk
    /// of every instance that holds one page at a time (verify).
    async fn instances_after(
        &self,
        after: Option<&Uid>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, PortError>;
    /// Removes everything (before a reindex).
    async fn clear(&self) -> Result<(), PortError>;
    async fn stats(&self) -> Result<IndexStats, PortError>;
    /// Marks whether the archive was shut down cleanly; an unclean start
    /// triggers the recovery scan.
    async fn set_clean_shutdown(&self, clean: bool) -> Result<(), PortError>;
    async fn was_clean_shutdown(&self) -> Result<bool, PortError>;
}
