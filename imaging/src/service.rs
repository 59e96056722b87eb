//! The one pixel-work service: every decode, render and conversion of the
//! archive runs here, whichever protocol asked for it (DIMSE C-GET and
//! C-MOVE conversions, WADO-RS conversions, WADO-URI, rendered resources
//! and thumbnails).
//!
//! It bounds the work globally:
//! - at most [`Limits::render_concurrency`] jobs run at once;
//! - each job reserves, before it reads the object, an estimate of the
//!   memory it will hold (the object, its copy inside `dicom-object`, and
//!   its decoded pixels, from the index record), out of
//!   [`Limits::pixel_memory_budget`]; a job that could never fit is
//!   refused ([`PixelError::TooLarge`]);
//! - a job waits for both at most [`Limits::pixel_queue_wait`], then is
//!   refused as [`PixelError::Busy`] (HTTP 503, DIMSE out of resources);
//! - the work itself runs on rayon's pool (never on the async runtime),
//!   inside `catch_unwind`, on the object cut and checked by
//!   [`crate::object`].
//!
//! Renders are kept in an LRU cache bounded in bytes, keyed by the stored
//! object's SHA-256 (an instance stored again under the same SOP Instance
//! UID never gets a stale image), frame and options.
//!
//! Non-goals: choosing transfer syntaxes, mapping errors to protocol
//! statuses (each protocol crate does that), storage (objects come from
//! [`pacs_core::Archive`]).

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pacs_core::records::InstanceRecord;
use pacs_core::{Archive, ArchiveError, Limits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::render::{render_frame_with, RenderError, RenderOptions, Rendered};
use crate::transcode::{transcode_part10_with, transcode_with, TranscodeError};

/// A conversion of a whole object to a transfer syntax under limits.
type Conversion = fn(&[u8], &str, &Limits) -> Result<Vec<u8>, TranscodeError>;

/// Memory is reserved in units of this many bytes (a semaphore counts
/// permits in `u32`).
const UNIT: u64 = 1024;

/// Why pixel work was not done.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    /// No slot or memory came free within the queue wait: try again later.
    #[error("the server is busy with image work; try again later")]
    Busy,
    /// The job would need more memory than the whole budget, or the
    /// object is over a size limit.
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    /// The object could not be read from the archive.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What a job is, for its memory estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// One frame rendered.
    Render,
    /// The object converted to another transfer syntax.
    Convert,
}

/// The pixel-work service. Build one per server and share it (`Arc`).
pub struct PixelService {
    slots: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    /// The memory budget in units.
    budget_units: u64,
    limits: Limits,
    cache: Mutex<LruCache>,
}

impl std::fmt::Debug for PixelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelService")
            .field("render_concurrency", &self.limits.render_concurrency)
            .field("pixel_memory_budget", &self.limits.pixel_memory_budget)
            .field("available_slots", &self.slots.available_permits())
            .finish()
    }
}

/// A job's place: a slot and its memory, released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl PixelService {
    /// A service bounded by `limits` (`render_concurrency`,
    /// `pixel_memory_budget`, `pixel_queue_wait`, and the object limits the
    /// work applies), with a render cache of `cache_bytes`.
    pub fn new(limits: &Limits, cache_bytes: usize) -> PixelService {
        let budget_units = (limits.pixel_memory_budget / UNIT)
            .clamp(1, u64::from(u32::MAX))
            .min(Semaphore::MAX_PERMITS as u64);
        PixelService {
            slots: Arc::new(Semaphore::new(limits.render_concurrency.max(1))),
            memory: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
            limits: limits.clone(),
            cache: Mutex::new(LruCache::new(cache_bytes)),
        }
    }

    /// The limits the service applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Waits (at most `pixel_queue_wait`) for a slot and `bytes` of the
    /// memory budget. Every job takes one; exposed so that callers and
    /// tests can see the service's bound.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, PixelError> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units > self.budget_units {
            return Err(PixelError::TooLarge(format!(
                "the work needs about {bytes} bytes of memory, more than the whole \
                 {}-byte pixel-work budget",
                self.limits.pixel_memory_budget
            )));
        }
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let acquire = async {
            // Memory first: a job waiting for room holds no slot.
            let memory = self.memory.clone().acquire_many_owned(units).await;
            let slot = self.slots.clone().acquire_owned().await;
            (memory, slot)
        };
        match tokio::time::timeout(self.limits.pixel_queue_wait, acquire).await {
            Ok((Ok(memory), Ok(slot))) => Ok(Reservation {
                _slot: slot,
                _memory: memory,
            }),
            _ => Err(PixelError::Busy),
        }
    }

    /// Frame `frame` (1-based) of `record` rendered with `opts`, from the
    /// cache when possible.
    pub async fn render(
        &self,
        archive: &Archive,
        record: &InstanceRecord,
        frame: u32,
        opts: RenderOptions,
    ) -> Result<Arc<Rendered>, PixelError> {
        let key = cache_key(record, frame, &opts);
        if let Some(hit) = self.cache.lock().ok().and_then(|mut c| c.get(&key)) {
            return Ok(hit);
        }
        let limits = self.limits.clone();
        let rendered = self
            .run(archive, record, Job::Render, move |part10| {
                render_frame_with(&part10, frame, &opts, &limits).map_err(PixelError::from)
            })
            .await?;
        let rendered = Arc::new(rendered);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, rendered.clone());
        }
        Ok(rendered)
    }

    /// `record` as a whole Part 10 file in transfer syntax `ts` (what
    /// DICOMweb sends).
    pub async fn convert_part10(
        &self,
        archive: &Archive,
        record: &InstanceRecord,
        ts: &str,
    ) -> Result<Vec<u8>, PixelError> {
        self.convert(archive, record, ts, transcode_part10_with)
            .await
    }

    /// `record`'s data set alone in transfer syntax `ts` (what a DIMSE
    /// C-STORE carries).
    pub async fn convert_dataset(
        &self,
        archive: &Archive,
        record: &InstanceRecord,
        ts: &str,
    ) -> Result<Vec<u8>, PixelError> {
        self.convert(archive, record, ts, transcode_with).await
    }

    async fn convert(
        &self,
        archive: &Archive,
        record: &InstanceRecord,
        ts: &str,
        how: Conversion,
    ) -> Result<Vec<u8>, PixelError> {
        let (ts, limits) = (ts.to_owned(), self.limits.clone());
        self.run(archive, record, Job::Convert, move |part10| {
            how(&part10, &ts, &limits).map_err(PixelError::from)
        })
        .await
    }

    /// Reserves, reads the object, and runs `work` on it on rayon's pool.
    async fn run<T: Send + 'static>(
        &self,
        archive: &Archive,
        record: &InstanceRecord,
        job: Job,
        work: impl FnOnce(Vec<u8>) -> Result<T, PixelError> + Send + 'static,
    ) -> Result<T, PixelError> {
        if record.size > self.limits.max_object_bytes {
            return Err(PixelError::TooLarge(format!(
                "the instance is {} bytes, more than the {}-byte object limit",
                record.size, self.limits.max_object_bytes
            )));
        }
        let reservation = self.reserve(self.estimate(record, job)?).await?;
        let part10 = read_object(archive, record).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            // A panic must end this job, not the process (rayon aborts on
            // a panic escaping `spawn`).
            let result = catch_unwind(AssertUnwindSafe(|| work(part10))).unwrap_or_else(|_| {
                Err(PixelError::Render(RenderError::Unsupported {
                    reason: "the pixel data decoder failed on this object".into(),
                }))
            });
            // Released when the work ends (even if the caller is gone), and
            // before the result is handed over: a caller's next job finds
            // the slot free.
            drop(reservation);
            let _ = tx.send(result);
        });
        rx.await.unwrap_or_else(|_| {
            Err(PixelError::Render(RenderError::Unsupported {
                reason: "pixel work ended without a result".into(),
            }))
        })
    }

    /// The memory a job holds at its peak, from the index record: the
    /// object and its parsed copy (three copies when converting: the
    /// output too), an inflated data set when deflated, and the decoded
    /// pixels with their intermediate forms. Refuses, before anything is
    /// read, an object whose decoded size is over the limit.
    fn estimate(&self, record: &InstanceRecord, job: Job) -> Result<u64, PixelError> {
        let samples: u64 = match record.photometric_interpretation.trim() {
            "MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR" => 1,
            "ARGB" | "CMYK" => 4,
            _ => 3,
        };
        let bytes_per_sample = u64::from(record.bits_allocated.unwrap_or(16).div_ceil(8).max(1));
        let frames = u64::from(record.number_of_frames.unwrap_or(1).max(1));
        let frame = u64::from(record.rows.unwrap_or(0))
            .saturating_mul(u64::from(record.columns.unwrap_or(0)))
            .saturating_mul(samples)
            .saturating_mul(bytes_per_sample);
        let decoded = frame.saturating_mul(frames);
        // `samples` is a guess from the index: refuse here only what is too
        // large even with one sample (the exact check reads the header).
        if decoded / samples > self.limits.max_decoded_pixel_bytes {
            return Err(PixelError::TooLarge(format!(
                "Rows × Columns × Frames make at least {} bytes of decoded pixel data, \
                 more than the {} this archive decodes",
                decoded / samples,
                self.limits.max_decoded_pixel_bytes
            )));
        }
        let deflated =
            record.transfer_syntax_uid == pacs_core::dicom::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        let inflated = if deflated {
            self.limits.max_inflated_object_bytes
        } else {
            0
        };
        let object = record.size.saturating_add(inflated);
        Ok(match job {
            // The frame as decoded, as 32-bit stored values, as 8-bit
            // presentation values, scaled and encoded.
            Job::Render => object
                .saturating_mul(2)
                .saturating_add(frame.saturating_mul(8)),
            Job::Convert => object
                .saturating_mul(3)
                .saturating_add(decoded.saturating_mul(3)),
        })
    }
}

/// The whole stored object, refusing one longer than its record says.
async fn read_object(archive: &Archive, record: &InstanceRecord) -> Result<Vec<u8>, PixelError> {
    let (_, mut stream) = archive.retrieve(&record.sop_instance_uid).await?;
    let mut out = Vec::with_capacity(usize::try_from(record.size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ArchiveError::from)?;
        if (out.len() + chunk.len()) as u64 > record.size {
            return Err(PixelError::TooLarge(
                "the stored object is longer than its index entry says".into(),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Identifies one rendering of one stored object.
pub fn cache_key(record: &InstanceRecord, frame: u32, opts: &RenderOptions) -> String {
    format!(
        "{}|{}|{frame}|{opts:?}",
        record.sop_instance_uid, record.sha256
    )
}

/// Least-recently-used map bounded by the total size of its images.
struct LruCache {
    entries: HashMap<String, (Arc<Rendered>, u64)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, String>,
    bytes: usize,
    capacity: usize,
    tick: u64,
}

impl LruCache {
    fn new(capacity: usize) -> LruCache {
        LruCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            capacity,
            tick: 0,
        }
    }

    fn get(&mut self, key: &str) -> Option<Arc<Rendered>> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.to_owned());
        Some(value.clone())
    }

    fn insert(&mut self, key: String, value: Arc<Rendered>) {
        let size = value.bytes.len() + key.len();
        // One image may use at most an eighth of the cache.
        if size > self.capacity / 8 {
            return;
        }
        if let Some((old, used)) = self.entries.remove(&key) {
            self.order.remove(&used);
            self.bytes -= old.bytes.len() + key.len();
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
        self.bytes += size;
        while self.bytes > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.bytes -= old.bytes.len() + oldest.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn image(n: usize) -> Arc<Rendered> {
        Arc::new(Rendered {
            bytes: vec![0; n],
            media_type: "image/png",
            width: 1,
            height: 1,
        })
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        // Capacity 800: each entry is 80 bytes of image + 1 of key.
        let mut c = LruCache::new(800);
        c.insert("a".into(), image(80));
        c.insert("b".into(), image(80));
        c.insert("c".into(), image(80));
        assert!(c.get("a").is_some()); // a is now the most recent
        for k in ["d", "e", "f", "g", "h", "i", "j", "k"] {
            c.insert(k.into(), image(80));
        }
        // 11 entries would be 891 bytes: the two oldest (b, c) went.
        assert_eq!(c.bytes, 9 * 81);
        assert!(c.get("b").is_none(), "b was the oldest");
        assert!(c.get("c").is_none());
        assert!(c.get("a").is_some());
        assert!(c.get("k").is_some());
        c.insert("huge".into(), image(500));
        assert!(c.get("huge").is_none(), "larger than an eighth: not kept");
        c.insert("k".into(), image(10));
        assert_eq!(c.get("k").map(|r| r.bytes.len()), Some(10));
        let total: usize = c
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.0.bytes.len())
            .sum();
        assert_eq!(total, c.bytes);
        assert_eq!(c.entries.len(), c.order.len());
    }

    fn service(concurrency: usize, budget: u64) -> PixelService {
        PixelService::new(
            &Limits {
                render_concurrency: concurrency,
                pixel_memory_budget: budget,
                pixel_queue_wait: Duration::ZERO,
                ..Limits::default()
            },
            1 << 20,
        )
    }

    #[tokio::test]
    async fn one_slot_is_one_job_at_a_time() {
        let s = service(1, 1 << 30);
        let held = s.reserve(1024).await.unwrap();
        assert!(matches!(s.reserve(1024).await, Err(PixelError::Busy)));
        drop(held);
        assert!(s.reserve(1024).await.is_ok());
    }

    #[tokio::test]
    async fn memory_is_a_budget_shared_by_all_jobs() {
        let s = service(8, 10 * 1024 * 1024);
        let a = s.reserve(6 * 1024 * 1024).await.unwrap();
        // Slots are free, memory is not.
        assert!(matches!(
            s.reserve(6 * 1024 * 1024).await,
            Err(PixelError::Busy)
        ));
        let small = s.reserve(3 * 1024 * 1024).await.unwrap();
        drop((a, small));
        assert!(s.reserve(6 * 1024 * 1024).await.is_ok());
        // More than the whole budget can never run: refused, not queued.
        assert!(matches!(
            s.reserve(11 * 1024 * 1024).await,
            Err(PixelError::TooLarge(_))
        ));
    }
}
