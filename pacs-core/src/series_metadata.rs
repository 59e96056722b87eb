//! Per-series metadata blobs: the DICOM JSON of a series' instances,
//! compressed into one blob once the series has been quiet for a while.
//!
//! At ingest each instance's JSON goes into the index with its entry (so
//! metadata answers at once). An index that [compacts
//! metadata](crate::ports::Index::compacts_metadata) marks the series
//! changed; when it has been quiet for `quiet` (config
//! `metadata_compact_after_secs`), [`SeriesMetadata::compact_due`] writes
//! the JSON of every instance into a new blob `metadata/<series>/<mark>.gz`
//! and, in one index step that checks nothing changed meanwhile, points the
//! series at it and drops the per-instance JSON from the index. The index
//! then keeps only the query attributes. A later change marks the series
//! again; JSON still in the index wins over the blob's, and the next
//! compaction writes a new blob and lists the old one as garbage.
//!
//! Reading a series' metadata is one index scan and at most one blob read,
//! whose decoded form is cached (the key names one immutable blob, so the
//! cache is right on every node). A blob replaced while a reader held its
//! key is read again from the index's new answer.
//!
//! The blobs are derived data: `pacs reindex` deletes them, and any JSON
//! found in neither place is rebuilt from the instance's own header
//! ([`MetadataSource`]).
//!
//! Blob format (gzip of): `SENMETA\0`, format byte 1, u32 LE count, then
//! per instance u16 LE length + SOP Instance UID, u32 LE length + JSON.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::ports::{BlobKey, BlobStore, DirtySeries, Index, PortError};
use crate::Uid;

const MAGIC: &[u8; 8] = b"SENMETA\0";
const FORMAT: u8 = 1;
/// Decoded blobs kept in memory, in bytes of JSON.
const CACHE_BYTES: usize = 64 << 20;
/// Largest decoded blob read (a 20,000-frame series of 50 KB headers).
const MAX_DECODED: u64 = 1 << 30;

/// Where JSON found in neither the index nor the blob comes from: the
/// instance's own header (the archive), or nowhere (benchmarks).
#[async_trait]
pub trait MetadataSource: Send + Sync {
    async fn rebuild_json(&self, sop: &Uid) -> Option<Vec<u8>>;
}

/// A [`MetadataSource`] with nothing to rebuild from.
pub struct NoSource;

#[async_trait]
impl MetadataSource for NoSource {
    async fn rebuild_json(&self, _sop: &Uid) -> Option<Vec<u8>> {
        None
    }
}

/// What one [`SeriesMetadata::compact_due`] pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Series whose blob was written and committed.
    pub series: u64,
    /// Instances whose JSON left the index.
    pub instances: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Series that changed while being compacted (tried again later).
    pub raced: u64,
    /// Replaced or orphaned blobs deleted.
    pub garbage: u64,
    pub failed: u64,
}

type Decoded = Arc<HashMap<String, Bytes>>;

#[derive(Default)]
struct Cache {
    map: HashMap<String, (Decoded, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

/// The metadata blobs of one archive.
pub struct SeriesMetadata {
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn Index>,
    cache: Mutex<Cache>,
}

/// Encodes a series' entries (SOP Instance UID, JSON) as a blob.
pub fn encode_blob(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut raw = Vec::with_capacity(13 + entries.iter().map(|e| e.1.len() + 80).sum::<usize>());
    raw.extend_from_slice(MAGIC);
    raw.push(FORMAT);
    let count = u32::try_from(entries.len()).map_err(|_| "too many instances".to_owned())?;
    raw.extend_from_slice(&count.to_le_bytes());
    for (sop, json) in entries {
        let n = u16::try_from(sop.len()).map_err(|_| "UID too long".to_owned())?;
        raw.extend_from_slice(&n.to_le_bytes());
        raw.extend_from_slice(sop.as_bytes());
        let n = u32::try_from(json.len()).map_err(|_| "JSON too long".to_owned())?;
        raw.extend_from_slice(&n.to_le_bytes());
        raw.extend_from_slice(json);
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 8),
        flate2::Compression::new(3),
    );
    gz.write_all(&raw).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// Decodes a blob written by [`encode_blob`].
pub fn decode_blob(blob: &[u8]) -> Result<HashMap<String, Bytes>, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .take(MAX_DECODED + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not a metadata blob: {e}"))?;
    if raw.len() as u64 > MAX_DECODED {
        return Err(format!("metadata blob over {MAX_DECODED} bytes"));
    }
    let raw = Bytes::from(raw);
    if raw.get(..8) != Some(MAGIC.as_slice()) {
        return Err("not a metadata blob".into());
    }
    match raw.get(8) {
        Some(&FORMAT) => {}
        Some(v) => {
            return Err(format!(
                "metadata blob format {v}; this build reads format {FORMAT}"
            ))
        }
        None => return Err("metadata blob truncated".into()),
    }
    let truncated = || "metadata blob truncated".to_owned();
    let mut at = 9usize;
    let take = |at: &mut usize, n: usize| -> Result<std::ops::Range<usize>, String> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= raw.len())
            .ok_or_else(truncated)?;
        let r = *at..end;
        *at = end;
        Ok(r)
    };
    let count = u32::from_le_bytes(raw[take(&mut at, 4)?].try_into().map_err(|_| truncated())?);
    let mut out = HashMap::with_capacity(count.min(100_000) as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(raw[take(&mut at, 2)?].try_into().map_err(|_| truncated())?);
        let sop = std::str::from_utf8(&raw[take(&mut at, n as usize)?])
            .map_err(|_| "metadata blob: a UID is not text".to_owned())?
            .to_owned();
        let n = u32::from_le_bytes(raw[take(&mut at, 4)?].try_into().map_err(|_| truncated())?);
        let json = raw.slice(take(&mut at, n as usize)?);
        out.insert(sop, json);
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SeriesMetadata {
    pub fn new(blobs: Arc<dyn BlobStore>, index: Arc<dyn Index>) -> SeriesMetadata {
        SeriesMetadata {
            blobs,
            index,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The decoded blob at `key`, from the cache or the store.
    async fn load(&self, key: &str) -> Result<Decoded, PortError> {
        if let Some((d, _)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .get(key)
        {
            return Ok(d.clone());
        }
        let blob_key = BlobKey::parse(key)
            .filter(BlobKey::is_metadata)
            .ok_or_else(|| PortError::Index(format!("bad metadata blob key {key:?}")))?;
        let mut stream = self.blobs.get(&blob_key).await?;
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let decoded = tokio::task::spawn_blocking(move || decode_blob(&buf))
            .await
            .map_err(|e| PortError::Storage(format!("decoding task failed: {e}")))?
            .map_err(|e| PortError::Storage(format!("{key}: {e}")))?;
        let size: usize = decoded.values().map(Bytes::len).sum();
        let decoded = Arc::new(decoded);
        let mut c = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if size <= CACHE_BYTES / 4 && !c.map.contains_key(key) {
            while c.bytes + size > CACHE_BYTES || c.order.len() >= 4096 {
                let Some(old) = c.order.pop_front() else {
                    break;
                };
                if let Some((_, n)) = c.map.remove(&old) {
                    c.bytes -= n;
                }
            }
            c.map.insert(key.to_owned(), (decoded.clone(), size));
            c.order.push_back(key.to_owned());
            c.bytes += size;
        }
        Ok(decoded)
    }

    /// The DICOM JSON of every instance of a series, in instance order.
    pub async fn of_series(
        &self,
        series: &Uid,
        source: &dyn MetadataSource,
    ) -> Result<Vec<Vec<u8>>, PortError> {
        Ok(self
            .entries_of_series(series, source)
            .await?
            .into_iter()
            .map(|(_, json)| json)
            .collect())
    }

    /// [`SeriesMetadata::of_series`] with each instance's SOP Instance
    /// UID: the series' blob is read once, however many instances it holds
    /// (one read per instance would load it again each time the cache
    /// does not hold it).
    pub async fn entries_of_series(
        &self,
        series: &Uid,
        source: &dyn MetadataSource,
    ) -> Result<Vec<(Uid, Vec<u8>)>, PortError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = self.index.metadata_entries(series).await?;
            let blob = match (&e.blob, e.entries.iter().any(|x| x.1.is_none())) {
                (Some(key), true) => match self.load(key).await {
                    Ok(d) => Some(d),
                    // Replaced by a compaction since the index answered.
                    Err(PortError::NotFound(_)) if attempt < 3 => continue,
                    Err(err) => return Err(err),
                },
                _ => None,
            };
            let mut out = Vec::with_capacity(e.entries.len());
            for (sop, json) in e.entries {
                if let Some(j) = json {
                    out.push((sop, j));
                } else if let Some(j) = blob.as_ref().and_then(|b| b.get(sop.as_str())) {
                    out.push((sop, j.to_vec()));
                } else if let Some(j) = source.rebuild_json(&sop).await {
                    out.push((sop, j));
                } else {
                    warn!(series = %series, sop = %sop, "no metadata for an instance");
                }
            }
            return Ok(out);
        }
    }

    /// The DICOM JSON of one instance (`None` if it is not indexed).
    pub async fn of_instance(
        &self,
        sop: &Uid,
        source: &dyn MetadataSource,
    ) -> Result<Option<Vec<u8>>, PortError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(json) = self.index.metadata(sop).await? {
                return Ok(Some(json));
            }
            let Some(record) = self.index.instance(sop).await? else {
                return Ok(None);
            };
            if let Some(key) = self
                .index
                .series_metadata_blob(&record.series_instance_uid)
                .await?
            {
                match self.load(&key).await {
                    Ok(d) => {
                        if let Some(j) = d.get(sop.as_str()) {
                            return Ok(Some(j.to_vec()));
                        }
                    }
                    Err(PortError::NotFound(_)) if attempt < 3 => continue,
                    Err(err) => return Err(err),
                }
            }
            return Ok(source.rebuild_json(sop).await);
        }
    }

    /// Compacts every series quiet for `quiet`, at most `max` of them, then
    /// deletes replaced blobs.
    pub async fn compact_due(
        &self,
        quiet: Duration,
        max: usize,
        source: &dyn MetadataSource,
    ) -> Result<CompactReport, PortError> {
        let before = now_ms().saturating_sub(quiet.as_millis() as u64);
        let due = self.index.dirty_series(before, max).await?;
        let mut report = CompactReport::default();
        for d in &due {
            match self.compact_series(d, source).await {
                Ok(Some((n, bytes))) => {
                    report.series += 1;
                    report.instances += n;
                    report.bytes += bytes;
                }
                Ok(None) => report.raced += 1,
                Err(e) => {
                    report.failed += 1;
                    warn!(series = %d.series, error = %e, "compacting a series' metadata failed; tried again later");
                }
            }
        }
        report.garbage = self.collect_garbage().await?;
        Ok(report)
    }

    /// Writes one series' blob and commits it if the series is still as
    /// read. `Some((instances moved, bytes))`, or `None` if it changed.
    pub async fn compact_series(
        &self,
        d: &DirtySeries,
        source: &dyn MetadataSource,
    ) -> Result<Option<(u64, u64)>, PortError> {
        let e = self.index.metadata_entries(&d.series).await?;
        if e.dirty != Some(d.mark) || e.entries.is_empty() {
            return Ok(None);
        }
        let old = match (&e.blob, e.entries.iter().any(|x| x.1.is_none())) {
            (Some(key), true) => match self.load(key).await {
                Ok(d) => Some(d),
                Err(PortError::NotFound(_)) => None,
                Err(err) => return Err(err),
            },
            _ => None,
        };
        let mut moved = Vec::new();
        let mut rows: Vec<(String, Bytes)> = Vec::with_capacity(e.entries.len());
        for (sop, json) in e.entries {
            let json = match json {
                Some(j) => {
                    moved.push(sop.clone());
                    Some(Bytes::from(j))
                }
                None => match old.as_ref().and_then(|o| o.get(sop.as_str())) {
                    Some(j) => Some(j.clone()),
                    None => source.rebuild_json(&sop).await.map(Bytes::from),
                },
            };
            match json {
                Some(j) => rows.push((sop.as_str().to_owned(), j)),
                None => {
                    warn!(series = %d.series, sop = %sop, "no metadata for an instance; left out of the series' blob")
                }
            }
        }
        let encoded = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&str, &[u8])> =
                rows.iter().map(|(s, j)| (s.as_str(), j.as_ref())).collect();
            encode_blob(&refs)
        })
        .await
        .map_err(|e| PortError::Storage(format!("encoding task failed: {e}")))?
        .map_err(PortError::Storage)?;
        let bytes = encoded.len() as u64;
        let key = BlobKey::series_metadata(&d.series, d.mark);
        let mut w = self.blobs.writer(&key).await?;
        let written = async {
            w.write(Bytes::from(encoded)).await?;
            w.finish().await
        };
        written.await?;
        if self
            .index
            .commit_series_metadata(&d.series, d.mark, key.as_str(), &moved)
            .await?
        {
            debug!(series = %d.series, instances = moved.len(), bytes, "series metadata blob written");
            Ok(Some((moved.len() as u64, bytes)))
        } else {
            self.blobs.delete(&key).await?;
            Ok(None)
        }
    }

    /// Deletes the blobs the index lists as replaced or orphaned.
    pub async fn collect_garbage(&self) -> Result<u64, PortError> {
        let keys = self.index.metadata_garbage().await?;
        if keys.is_empty() {
            return Ok(0);
        }
        // The commits that replaced them must outlive a crash first, or
        // the index could come back pointing at a deleted blob.
        self.index.checkpoint().await?;
        let mut done = Vec::new();
        for key in &keys {
            match BlobKey::parse(key).filter(BlobKey::is_metadata) {
                Some(k) => match self.blobs.delete(&k).await {
                    Ok(()) => done.push(key.clone()),
                    Err(e) => {
                        warn!(key = %key, error = %e, "deleting a replaced metadata blob failed")
                    }
                },
                None => done.push(key.clone()),
            }
            let mut c = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, n)) = c.map.remove(key.as_str()) {
                c.bytes -= n;
            }
        }
        self.index.clear_metadata_garbage(&done).await?;
        Ok(done.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metadata_keys_parse_only_in_their_shape() {
        let series = Uid::parse("1.2.3.4").unwrap();
        let key = BlobKey::series_metadata(&series, 0x1f);
        assert_eq!(key.as_str(), "metadata/1.2.3.4/000000000000001f.gz");
        assert_eq!(BlobKey::parse(key.as_str()), Some(key.clone()));
        assert!(key.is_metadata() && !key.is_staging() && !key.is_history());
        assert_eq!(key.sop_instance_uid(), None);
        for bad in [
            "metadata/1.2.3.4/1f.gz",
            "metadata/1.2.3.4/000000000000001g.gz",
            "metadata/1.2.3.4/000000000000001f.dcm",
            "metadata/1..2/000000000000001f.gz",
            "metadata/../000000000000001f.gz",
            "metadata/1.2.3.4/x/000000000000001f.gz",
        ] {
            assert_eq!(BlobKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn blob_round_trip_and_damage() {
        let a = br#"{"00080018":{"vr":"UI","Value":["1.2.3"]}}"#;
        let b = br#"{"00080018":{"vr":"UI","Value":["1.2.4"]}}"#;
        let blob = encode_blob(&[("1.2.3", a), ("1.2.4", b)]).unwrap();
        let d = decode_blob(&blob).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d["1.2.3"].as_ref(), a);
        assert_eq!(d["1.2.4"].as_ref(), b);
        // Not gzip, and a truncated body: errors, not panics.
        assert!(decode_blob(b"nonsense").is_err());
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        for cut in [5, 9, 12, 15, raw.len() - 1] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw[..cut]).unwrap();
            assert!(decode_blob(&gz.finish().unwrap()).is_err(), "cut {cut}");
        }
        // A newer format is named.
        raw[8] = 9;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let err = decode_blob(&gz.finish().unwrap()).unwrap_err();
        assert!(err.contains("format 9"), "{err}");
    }
}
