//! The local-disk blob store read path: whole blobs and chunked streams come
//! back byte for byte, across the read-chunk boundary (4 MiB).
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use pacs_core::ports::{BlobKey, BlobStore};
use pacs_core::Uid;
use storage::ObjectBlobStore;

fn key(n: u32) -> BlobKey {
    let uid = |s: &str| Uid::parse(s).unwrap();
    BlobKey::for_instance(
        &uid("1.2.3"),
        &uid("1.2.3.4"),
        &uid(&format!("1.2.3.4.{n}")),
    )
}

/// Bytes that differ at every offset modulo 251, so a chunk read at the
/// wrong position cannot go unnoticed.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn local_blobs_stream_back_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectBlobStore::open(&format!("file://{}", tmp.path().display())).unwrap();
    const MIB: usize = 1024 * 1024;
    let sizes = [
        0,
        1,
        525_000,
        4 * MIB - 1,
        4 * MIB,
        4 * MIB + 1,
        9 * MIB + 7,
    ];
    for (n, &len) in sizes.iter().enumerate() {
        let k = key(n as u32 + 1);
        let bytes = content(len);
        let mut w = store.writer(&k).await.unwrap();
        // Written in odd pieces, like a network stream.
        for piece in bytes.chunks(300_001) {
            w.write(bytes::Bytes::copy_from_slice(piece)).await.unwrap();
        }
        w.finish().await.unwrap();

        let mut stream = store.get(&k).await.unwrap();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = stream.next().await {
            let c = c.unwrap();
            assert!(!c.is_empty() && c.len() <= 4 * MIB, "chunk of {}", c.len());
            got.extend_from_slice(&c);
            chunks += 1;
        }
        assert_eq!(got.len(), len);
        assert!(got == bytes, "blob of {len} bytes differs");
        assert_eq!(chunks, len.div_ceil(4 * MIB), "{len}");
        assert_eq!(store.size(&k).await.unwrap(), len as u64);
        if len > 0 {
            let r = store.get_range(&k, 0..len.min(10) as u64).await.unwrap();
            assert_eq!(&r[..], &bytes[..len.min(10)]);
        }
    }
    // A missing blob is NotFound, not an empty stream.
    assert!(store.get(&key(99)).await.is_err());
}
