//! Blobs on `object_store`: local disk (fsync on), memory, and S3 behind the
//! `s3` cargo feature.
//!
//! Keys come only from [`BlobKey`], which is built from validated UIDs, so a
//! client string never becomes a path. Small objects are written with one
//! `put` (temp file, fsync, rename, directory fsync on local disk); objects
//! larger than [`BUFFER_LIMIT`] switch to a streaming multipart upload so
//! memory stays bounded.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use pacs_core::ports::{BlobKey, BlobStore, BlobWriter, PortError};
use pacs_core::Uid;

/// Objects up to this size are buffered and written with a single `put`.
pub const BUFFER_LIMIT: usize = 16 * 1024 * 1024;
/// Largest read when streaming a blob from local disk: smaller blobs are
/// read whole, in one positioned read.
const READ_CHUNK: u64 = 4 * 1024 * 1024;
/// Part size of streaming uploads.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Why a storage URL cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported storage URL {0:?}: use file:///path, memory:// or s3://bucket/prefix")]
    Unsupported(String),
    #[error("s3:// storage needs the binary built with `--features s3`")]
    S3NotCompiled,
    #[error("cannot open storage at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A [`BlobStore`] over any `object_store` backend.
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// The root directory of a local store: after a delete its parent
    /// directory is fsynced, so an acknowledged deletion cannot be undone
    /// by a crash (object_store syncs writes, not unlinks).
    local_root: Option<std::path::PathBuf>,
}

impl ObjectBlobStore {
    /// Opens `file:///abs/path`, `memory://` or (feature `s3`) `s3://bucket/prefix`.
    pub fn open(url: &str) -> Result<Self, OpenError> {
        if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(path)
                .map_err(|source| OpenError::Open {
                    url: url.to_owned(),
                    source,
                })?
                .with_fsync(true);
            return Ok(ObjectBlobStore {
                store: Arc::new(fs),
                description: url.to_owned(),
                local_root: Some(std::path::PathBuf::from(path)),
            });
        }
        if url == "memory://" || url == "memory:" {
            return Ok(ObjectBlobStore {
                store: Arc::new(InMemory::new()),
                description: "memory://".to_owned(),
                local_root: None,
            });
        }
        if url.starts_with("s3://") {
            return open_s3(url);
        }
        Err(OpenError::Unsupported(url.to_owned()))
    }
}

impl ObjectBlobStore {
    /// The keys under `prefix` (all without one) of the shapes the archive
    /// writes.
    async fn list_under(&self, prefix: Option<&Path>) -> Result<Vec<BlobKey>, PortError> {
        let metas: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(storage_err)?;
        Ok(metas
            .into_iter()
            .filter_map(|m| BlobKey::parse(m.location.as_ref()))
            .collect())
    }
}

#[cfg(feature = "s3")]
fn open_s3(url: &str) -> Result<ObjectBlobStore, OpenError> {
    let rest = url.trim_start_matches("s3://");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|source| OpenError::Open {
            url: url.to_owned(),
            source,
        })?;
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            s3,
            prefix.trim_end_matches('/'),
        ))
    };
    Ok(ObjectBlobStore {
        store,
        description: format!("s3://{bucket}/{prefix}"),
        local_root: None,
    })
}

#[cfg(not(feature = "s3"))]
fn open_s3(_url: &str) -> Result<ObjectBlobStore, OpenError> {
    Err(OpenError::S3NotCompiled)
}

fn path(key: &BlobKey) -> Path {
    Path::from(key.as_str())
}

fn storage_err(e: object_store::Error) -> PortError {
    match e {
        object_store::Error::NotFound { path, .. } => PortError::NotFound(path),
        other => PortError::Storage(other.to_string()),
    }
}

enum WriterState {
    Buffering(Vec<Bytes>, usize),
    Streaming(WriteMultipart),
}

struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: WriterState,
}

#[async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError> {
        match &mut self.state {
            WriterState::Buffering(parts, len) => {
                *len += chunk.len();
                parts.push(chunk);
                if *len > BUFFER_LIMIT {
                    let upload = self
                        .store
                        .put_multipart(&self.path)
                        .await
                        .map_err(storage_err)?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    for p in parts.drain(..) {
                        w.put(p);
                    }
                    self.state = WriterState::Streaming(w);
                }
            }
            WriterState::Streaming(w) => {
                w.wait_for_capacity(2).await.map_err(storage_err)?;
                w.put(chunk);
            }
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), PortError> {
        match self.state {
            WriterState::Buffering(parts, _) => {
                let payload: PutPayload = parts.into_iter().collect();
                self.store
                    .put(&self.path, payload)
                    .await
                    .map_err(storage_err)?;
            }
            WriterState::Streaming(w) => {
                w.finish().await.map_err(storage_err)?;
            }
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let WriterState::Streaming(w) = self.state {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "aborting an upload failed");
            }
        }
    }
}

/// `len` bytes of a local file from `start`, as a stream of chunks of up to
/// [`READ_CHUNK`] bytes. Each chunk is one read on the blocking
/// pool straight into a buffer of its exact size: one copy out of the page
/// cache, one allocation, and one blocking task per chunk. Chunks are read
/// one after the other, so the shared file offset is never raced.
fn local_file_stream(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = Result<Bytes, PortError>> + Send + 'static {
    let file = Arc::new(file);
    let end = start.saturating_add(len);
    futures::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let n = (end - pos).min(READ_CHUNK);
            let chunk = tokio::task::spawn_blocking(move || read_at(&file, pos, n))
                .await
                .map_err(|e| PortError::Storage(format!("reading blob: {e}")))?
                .map_err(|e| PortError::Storage(format!("reading blob: {e}")))?;
            Ok(Some((chunk, pos + n)))
        }
    })
}

/// Reads exactly `n` bytes at `pos` (`n` is at most [`READ_CHUNK`]) into a
/// buffer of that capacity, without zeroing it first.
fn read_at(file: &std::fs::File, pos: u64, n: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let cap = usize::try_from(n).map_err(std::io::Error::other)?;
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(cap);
    f.take(n).read_to_end(&mut buf)?;
    if buf.len() != cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its listed size",
        ));
    }
    Ok(Bytes::from(buf))
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn writer(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError> {
        Ok(Box::new(ObjectWriter {
            store: self.store.clone(),
            path: path(key),
            state: WriterState::Buffering(Vec::new(), 0),
        }))
    }

    async fn get(
        &self,
        key: &BlobKey,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError> {
        let result = self.store.get(&path(key)).await.map_err(storage_err)?;
        let len = result.range.end - result.range.start;
        match result.payload {
            // object_store streams local files in 8 KiB reads through
            // tokio's file buffer, which caps a retrieve at about 200 MB/s;
            // read them with positioned reads of whole chunks instead.
            GetResultPayload::File(file, _) => {
                Ok(local_file_stream(file, result.range.start, len).boxed())
            }
            GetResultPayload::Stream(s) => Ok(s.map_err(storage_err).boxed()),
        }
    }

    async fn get_range(
        &self,
        key: &BlobKey,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, PortError> {
        self.store
            .get_range(&path(key), range)
            .await
            .map_err(storage_err)
    }

    async fn size(&self, key: &BlobKey) -> Result<u64, PortError> {
        Ok(self.store.head(&path(key)).await.map_err(storage_err)?.size)
    }

    async fn rename(&self, from: &BlobKey, to: &BlobKey) -> Result<(), PortError> {
        self.store
            .rename(&path(from), &path(to))
            .await
            .map_err(storage_err)
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), PortError> {
        match self.store.delete(&path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage_err(e)),
        }
        if let Some(root) = &self.local_root {
            // The key is `<study>/<series>/<sop>.dcm`, `staging/<hex>.dcm`
            // or `history/<sop>/<n>.<ext>`, built from validated UIDs:
            // joining it stays under the root.
            let file = root.join(key.as_str());
            if let Some(dir) = file.parent().map(std::path::Path::to_path_buf) {
                tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
                    Ok(d) => d.sync_all(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                })
                .await
                .map_err(|e| PortError::Storage(format!("syncing after delete: {e}")))?
                .map_err(|e| PortError::Storage(format!("syncing after delete: {e}")))?;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<BlobKey>, PortError> {
        self.list_under(None).await
    }

    async fn list_history(&self, sop: &Uid) -> Result<Vec<BlobKey>, PortError> {
        // The prefix is built from a validated UID.
        let prefix = Path::from(BlobKey::history_prefix(sop).trim_end_matches('/'));
        self.list_under(Some(&prefix)).await
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
