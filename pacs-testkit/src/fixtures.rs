//! Archives for in-process tests: on a directory (local blobs and a sled
//! index with its log, as the server opens them) or entirely in memory.

use std::path::Path;
use std::sync::Arc;

use pacs_core::{Archive, Limits};

use crate::samples::{manifest, s, sample_dir};

/// The archive the server would open on `dir` (`objects/`, `index`).
pub fn open_archive(dir: &Path, limits: Limits) -> Archive {
    let blobs =
        storage::ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display()))
            .unwrap();
    let index = storage::SledIndex::open(&dir.join("index")).unwrap();
    Archive::new(Arc::new(blobs), Arc::new(index), limits)
}

/// An empty archive in memory (blobs in memory, a temporary sled).
pub fn empty_archive() -> Archive {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    Archive::new(Arc::new(blobs), Arc::new(index), Limits::default())
}

/// [`empty_archive`] holding every sample study.
pub async fn loaded_archive() -> Archive {
    let archive = empty_archive();
    for f in manifest()["files"].as_array().unwrap() {
        let path = sample_dir().join(s(&f["path"]));
        let file = tokio::fs::File::open(&path).await.unwrap();
        archive.store(file).await.unwrap();
    }
    archive
}
