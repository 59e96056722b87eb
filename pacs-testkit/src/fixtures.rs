//! Archives for in-process tests: on a directory (local blobs and a sled
//! index with its log, as the server opens them) or entirely in memory.

use std::path::Path;
use std::sync::Arc;

use pacs_core::{Archive, Limits};

use crate::samples::{manifest, s, sample_dir};

/// The archive the server would open on `dir` (`objects/`, `index`); with
/// `PACS_TEST_ENGINES=postgres-s3`, one on a fresh PostgreSQL database and
/// S3 bucket instead ([`crate::engines`]).
pub async fn open_archive(dir: &Path, limits: Limits) -> Archive {
    if crate::engines::postgres_s3() {
        return engines_archive(limits, Some(crate::engines::bucket_for(dir))).await;
    }
    let blobs =
        storage::ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display()))
            .unwrap();
    let index = storage::SledIndex::open(&dir.join("index")).unwrap();
    Archive::new(Arc::new(blobs), Arc::new(index), limits)
}

/// An empty archive in memory (blobs in memory, a temporary sled); with
/// `PACS_TEST_ENGINES=postgres-s3`, on a fresh PostgreSQL database and S3
/// bucket instead.
pub async fn empty_archive() -> Archive {
    if crate::engines::postgres_s3() {
        return engines_archive(Limits::default(), None).await;
    }
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    Archive::new(Arc::new(blobs), Arc::new(index), Limits::default())
}

async fn engines_archive(limits: Limits, name: Option<String>) -> Archive {
    let name = name.unwrap_or_else(crate::engines::fresh_archive_name);
    let index = crate::engines::postgres_index(Some(name.clone())).await;
    let blobs = crate::engines::s3_blobs(Some(name.clone())).await;
    let archive = Archive::new(blobs, index, limits);
    crate::engines::remember(&archive, name);
    archive
}

/// [`empty_archive`] holding every sample study.
pub async fn loaded_archive() -> Archive {
    let archive = empty_archive().await;
    for f in manifest()["files"].as_array().unwrap() {
        let path = sample_dir().join(s(&f["path"]));
        let file = tokio::fs::File::open(&path).await.unwrap();
        archive.store(file).await.unwrap();
    }
    archive
}
