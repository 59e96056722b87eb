//! Running [`imaging::render::render_frame`] and conversions between
//! transfer syntaxes ([`imaging::transcode`]) off the async runtime: on
//! rayon's pool, at most `concurrency` of them at a time (each holds a
//! whole Part 10 object, and its decoded pixels, in memory), renders kept
//! in a small LRU cache bounded in bytes.
//!
//! The cache key includes the stored object's SHA-256, so an instance
//! stored again under the same SOP Instance UID never gets a stale image.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imaging::render::{render_frame, RenderError, RenderOptions, Rendered};
use pacs_core::records::InstanceRecord;
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// How long a request waits for a render slot before answering 503.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct RenderService {
    permits: Arc<Semaphore>,
    cache: Mutex<LruCache>,
    max_object_bytes: u64,
}

impl RenderService {
    pub fn new(concurrency: usize, cache_bytes: usize, max_object_bytes: u64) -> RenderService {
        RenderService {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            cache: Mutex::new(LruCache::new(cache_bytes)),
            max_object_bytes,
        }
    }

    /// Renders `frame` of `record`, from the cache when possible.
    pub async fn render(
        &self,
        archive: &pacs_core::Archive,
        record: &InstanceRecord,
        frame: u32,
        opts: RenderOptions,
    ) -> ApiResult<Arc<Rendered>> {
        let key = cache_key(record, frame, &opts);
        if let Some(hit) = self.cache_get(&key) {
            return Ok(hit);
        }
        if record.size > self.max_object_bytes {
            return Err(ApiError::not_acceptable(format!(
                "the instance is too large to render ({} bytes; the limit is {})",
                record.size, self.max_object_bytes
            )));
        }
        let permit = self.permit().await?;
        let part10 = archive.retrieve_bytes(&record.sop_instance_uid).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            // The permit is released when the work ends, even if the
            // request was dropped meanwhile.
            let _permit = permit;
            // A panic must end this request, not the process (rayon aborts
            // on a panic escaping `spawn`).
            let result = catch_unwind(AssertUnwindSafe(|| render_frame(&part10, frame, &opts)))
                .unwrap_or_else(|_| {
                    Err(RenderError::Unsupported {
                        reason: "rendering failed unexpectedly".into(),
                    })
                });
            let _ = tx.send(result);
        });
        let rendered = rx
            .await
            .map_err(|_| ApiError::internal("render task ended without a result"))?
            .map_err(|e| render_error(e, &record.sop_instance_uid))?;
        let rendered = Arc::new(rendered);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, rendered.clone());
        }
        Ok(rendered)
    }

    /// `record` as a Part 10 file in transfer syntax `ts`, under the same
    /// bound as renders. A refusal is a 406 with the reason.
    pub async fn transcode(
        &self,
        archive: &pacs_core::Archive,
        record: &InstanceRecord,
        ts: &str,
    ) -> ApiResult<Vec<u8>> {
        if record.size > self.max_object_bytes {
            return Err(ApiError::not_acceptable(format!(
                "the instance is too large to convert ({} bytes; the limit is {}); ask for \
                 transfer-syntax=* to get it as stored",
                record.size, self.max_object_bytes
            )));
        }
        let permit = self.permit().await?;
        let part10 = archive.retrieve_bytes(&record.sop_instance_uid).await?;
        let ts = ts.to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            let _permit = permit;
            // transcode_part10 catches decoder panics itself; this guards
            // the rest, since a panic escaping `spawn` aborts.
            let result = catch_unwind(AssertUnwindSafe(|| {
                imaging::transcode::transcode_part10(&part10, &ts)
            }))
            .unwrap_or_else(|_| {
                Err(imaging::transcode::TranscodeError::Invalid {
                    reason: "the conversion failed unexpectedly".into(),
                })
            });
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| ApiError::internal("conversion task ended without a result"))?
            .map_err(|e| ApiError::not_acceptable(format!("cannot convert this instance: {e}")))
    }

    /// A slot for pixel work, waiting at most [`QUEUE_WAIT`] (then 503).
    async fn permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is busy with image work; try again later",
                )
            })?
            .map_err(ApiError::internal)
    }

    fn cache_get(&self, key: &str) -> Option<Arc<Rendered>> {
        self.cache.lock().ok()?.get(key)
    }
}

/// Identifies one rendering of one stored object.
pub(crate) fn cache_key(record: &InstanceRecord, frame: u32, opts: &RenderOptions) -> String {
    format!(
        "{}|{}|{frame}|{opts:?}",
        record.sop_instance_uid, record.sha256
    )
}

/// The one mapping of rendering failures to HTTP statuses.
fn render_error(e: RenderError, sop: &pacs_core::Uid) -> ApiError {
    match e {
        RenderError::Unsupported { .. }
        | RenderError::NoPixelData
        | RenderError::Malformed { .. } => {
            tracing::debug!(%sop, error = %e, "instance not rendered");
            ApiError::not_acceptable(format!("{e}; retrieve the instance or its frames instead"))
        }
        RenderError::FrameOutOfRange { .. } => ApiError::not_found(e.to_string()),
        RenderError::InvalidOptions { .. } => ApiError::bad_request(e.to_string()),
        RenderError::Encode { .. } => ApiError::internal(e),
    }
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
    use super::*;

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
}
