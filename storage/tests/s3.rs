//! The S3 adapter against a real S3-compatible server on 127.0.0.1 (moto):
//! the [`BlobStore`] contract (also run on `memory://` and `file://`, so the
//! three adapters are held to the same behaviour), conditional creates
//! (buffered and multipart), the recorded key layout, the bucket check, and
//! the archive over S3 with a second "node" storing the same instance.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pacs_core::archive::NoProgress;
use pacs_core::ports::{BlobKey, BlobStore, HistoryPart, PortError};
use pacs_core::{Archive, Limits, StoreStatus, Uid};
use pacs_testkit::s3::Moto;
use sample_data::synthetic::{object, Spec};
use storage::{KeyLayout, ObjectBlobStore, OpenError, S3Options, SledIndex};

fn options(moto: &Moto) -> S3Options {
    S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        path_style: Some(true),
        allow_http: Some(true),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        multipart_threshold: 1 << 20,
        max_retries: 1,
        ..S3Options::default()
    }
}

async fn connect(moto: &Moto, url: &str) -> Result<ObjectBlobStore, OpenError> {
    ObjectBlobStore::open_with(url, &options(moto))?
        .connect()
        .await
}

async fn write_new(store: &ObjectBlobStore, key: &BlobKey, bytes: &[u8]) -> Result<(), PortError> {
    let mut w = store.writer_new(key).await?;
    for chunk in bytes.chunks(256 * 1024) {
        w.write(Bytes::copy_from_slice(chunk)).await?;
    }
    w.finish().await
}

fn uid(s: &str) -> Uid {
    Uid::parse(s).unwrap()
}

fn counter(store: &ObjectBlobStore, name: &str) -> u64 {
    store
        .counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

/// Bytes that differ at every offset modulo 251, so a misplaced part or
/// range cannot go unnoticed; `seed` makes two contents of one length differ.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

async fn put(store: &dyn BlobStore, key: &BlobKey, bytes: &[u8]) {
    let mut w = store.writer(key).await.unwrap();
    // In odd pieces, like a network stream.
    for piece in bytes.chunks(300_001) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    w.finish().await.unwrap();
}

async fn read_all(store: &dyn BlobStore, key: &BlobKey) -> Vec<u8> {
    let mut s = store.get(key).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    got
}

fn sorted(mut keys: Vec<BlobKey>) -> Vec<String> {
    let mut out: Vec<String> = keys.drain(..).map(|k| k.as_str().to_owned()).collect();
    out.sort();
    out
}

/// What the archive relies on from any [`BlobStore`], checked on an empty
/// store: whole objects and ranges come back byte for byte (including an
/// empty one and one above the multipart threshold of the S3 options,
/// 1 MiB), sizes, NotFound for a missing key, replacement by `writer`, an
/// abandoned or aborted upload leaving nothing, rename, idempotent delete,
/// listing of exactly the archive's keys, and history listing per instance.
async fn blob_store_contract(store: &dyn BlobStore) {
    assert!(store.list().await.unwrap().is_empty());
    store.check().await.unwrap();
    let k = |n: u32| {
        BlobKey::for_instance(
            &uid("1.2.3"),
            &uid("1.2.3.4"),
            &uid(&format!("1.2.3.4.{n}")),
        )
    };
    let sizes = [0usize, 1, 100_000, (3 << 20) + 7];
    for (n, &len) in sizes.iter().enumerate() {
        let key = k(n as u32 + 1);
        let bytes = content(len, n as u8);
        put(store, &key, &bytes).await;
        let got = read_all(store, &key).await;
        assert_eq!(got.len(), len);
        assert!(got == bytes, "blob of {len} bytes differs");
        assert_eq!(store.size(&key).await.unwrap(), len as u64);
        if len > 10 {
            let mid = len as u64 / 2;
            let r = store.get_range(&key, mid..mid + 10).await.unwrap();
            assert_eq!(&r[..], &bytes[len / 2..len / 2 + 10]);
        }
    }
    // Missing keys are NotFound, not empty.
    let missing = k(99);
    assert!(matches!(
        store.size(&missing).await,
        Err(PortError::NotFound(_))
    ));
    assert!(store.get(&missing).await.is_err());
    // `writer` replaces, whatever the sizes.
    let big = k(4);
    put(store, &big, b"small now").await;
    assert_eq!(read_all(store, &big).await, b"small now");
    put(store, &k(1), &content(2 << 20, 9)).await;
    assert!(read_all(store, &k(1)).await == content(2 << 20, 9));
    // An upload dropped or aborted before `finish` leaves no object, for a
    // buffered one and a streaming (multipart) one.
    for len in [10usize, 3 << 20] {
        let mut w = store.writer(&k(50)).await.unwrap();
        w.write(Bytes::from(content(len, 1))).await.unwrap();
        w.abort().await;
        let mut w = store.writer(&k(51)).await.unwrap();
        w.write(Bytes::from(content(len, 2))).await.unwrap();
        drop(w);
        assert!(matches!(
            store.size(&k(50)).await,
            Err(PortError::NotFound(_))
        ));
        assert!(matches!(
            store.size(&k(51)).await,
            Err(PortError::NotFound(_))
        ));
    }
    // `writer_new` creates a new key.
    put_new(store, &k(60), b"created").await.unwrap();
    assert_eq!(read_all(store, &k(60)).await, b"created");
    // Rename moves, replacing the destination.
    let staging = BlobKey::staging(0xfeed);
    put(store, &staging, b"staged").await;
    store.rename(&staging, &k(2)).await.unwrap();
    assert_eq!(read_all(store, &k(2)).await, b"staged");
    assert!(matches!(
        store.size(&staging).await,
        Err(PortError::NotFound(_))
    ));
    // History keys list per instance.
    let sop_a = uid("1.2.3.4.1");
    let sop_b = uid("1.2.3.4.10");
    let hist = [
        BlobKey::history(&sop_a, 1, HistoryPart::Object),
        BlobKey::history(&sop_a, 1, HistoryPart::Meta),
        BlobKey::history(&sop_a, 2, HistoryPart::Object),
        BlobKey::history(&sop_b, 1, HistoryPart::Object),
    ];
    for h in &hist {
        put(store, h, h.as_str().as_bytes()).await;
    }
    assert_eq!(
        sorted(store.list_history(&sop_a).await.unwrap()),
        sorted(hist[..3].to_vec())
    );
    assert_eq!(
        sorted(store.list_history(&sop_b).await.unwrap()),
        sorted(hist[3..].to_vec())
    );
    let staging2 = BlobKey::staging(0xbeef);
    put(store, &staging2, b"left over").await;
    // `list` holds exactly the archive's keys.
    let mut want: Vec<BlobKey> = (1..=4).map(k).collect();
    want.push(k(60));
    want.push(staging2.clone());
    want.extend(hist.iter().cloned());
    assert_eq!(sorted(store.list().await.unwrap()), sorted(want.clone()));
    // So does the streamed listing.
    let streamed: Vec<BlobKey> = store.list_stream().try_collect().await.unwrap();
    assert_eq!(sorted(streamed), sorted(want.clone()));
    // Delete removes; a second delete, or of a missing key, is no error.
    for key in &want {
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(matches!(store.size(key).await, Err(PortError::NotFound(_))));
    }
    store.delete(&missing).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.list_stream().next().await.is_none());
    assert!(store.list_history(&sop_a).await.unwrap().is_empty());
    store.check().await.unwrap();
}

async fn put_new(store: &dyn BlobStore, key: &BlobKey, bytes: &[u8]) -> Result<(), PortError> {
    let mut w = store.writer_new(key).await?;
    w.write(Bytes::copy_from_slice(bytes)).await?;
    w.finish().await
}

#[tokio::test]
async fn blob_store_contract_on_memory_and_local_disk() {
    blob_store_contract(&ObjectBlobStore::open("memory://").unwrap()).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().display());
    blob_store_contract(&ObjectBlobStore::open(&url).unwrap()).await;
}

/// The contract on S3, at the bucket root and under a prefix (the
/// layout marker at the root is not an archive key, so it is not listed).
#[tokio::test]
async fn blob_store_contract_on_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("contract");
    for url in ["s3://contract", "s3://contract/some/prefix"] {
        let store = connect(&moto, url).await.unwrap();
        assert_eq!(store.layout(), KeyLayout::Spread);
        blob_store_contract(&store).await;
    }
    // Nothing but the two layout records is left in the bucket.
    let mut keys = moto.keys("contract");
    keys.sort();
    assert_eq!(keys, ["pacs-layout.json", "some/prefix/pacs-layout.json"]);
}

/// A second create of the same key fails with `AlreadyExists` and leaves
/// the first object whole, for a single PUT and for a multipart upload
/// (which goes through a staging key and a conditional copy, leaving no
/// staging object behind); the key sits under its spread prefix.
#[tokio::test]
async fn conditional_create_never_clobbers_a_taken_key() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cond");
    let store = connect(&moto, "s3://cond/arch").await.unwrap();
    assert_eq!(store.layout(), KeyLayout::Spread);
    for (n, size) in [(1u8, 4096usize), (2, 3 << 20)] {
        let key = BlobKey::for_instance(
            &uid("1.2.3"),
            &uid("1.2.3.4"),
            &uid(&format!("1.2.3.4.{n}")),
        );
        let first = vec![n; size];
        let second = vec![n + 100; size];
        write_new(&store, &key, &first).await.unwrap();
        let err = write_new(&store, &key, &second).await.unwrap_err();
        assert!(matches!(err, PortError::AlreadyExists(_)), "{err}");
        let mut got = Vec::new();
        let mut s = store.get(&key).await.unwrap();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert!(got == first, "object {n} was overwritten");
        // The object lies under the two hex digits of its SOP's SHA-256.
        let keys = moto.keys("cond");
        let path = keys
            .iter()
            .find(|k| k.ends_with(&format!("/1.2.3.4.{n}.dcm")))
            .unwrap();
        let prefix = path.split('/').nth(1).unwrap();
        assert!(
            prefix.len() == 2 && prefix.chars().all(|c| c.is_ascii_hexdigit()),
            "{path}"
        );
    }
    assert_eq!(counter(&store, "multipart_uploads"), 1);
    assert_eq!(counter(&store, "create_conflicts"), 2);
    assert!(
        !moto.keys("cond").iter().any(|k| k.contains("staging/")),
        "{:?}",
        moto.keys("cond")
    );
    // A plain writer replaces (what a replacement's rename relies on).
    let key = BlobKey::for_instance(&uid("1.2.3"), &uid("1.2.3.4"), &uid("1.2.3.4.1"));
    let mut w = store.writer(&key).await.unwrap();
    w.write(Bytes::from_static(b"new")).await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(store.size(&key).await.unwrap(), 3);
    // Listing maps paths back to keys.
    assert_eq!(store.list().await.unwrap().len(), 2);
}

/// A new bucket prefix gets the spread layout recorded; one holding flat
/// keys from before the record keeps them (and lists them); a record of a
/// newer format is refused; a missing bucket is one clear error.
#[tokio::test]
async fn key_layout_is_recorded_and_respected() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("layouts");
    let fresh = connect(&moto, "s3://layouts/fresh").await.unwrap();
    assert_eq!(fresh.layout(), KeyLayout::Spread);
    let (marker, _) = moto.object("layouts", "fresh/pacs-layout.json").unwrap();
    let marker: serde_json::Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker, serde_json::json!({"format": 1, "layout": "spread"}));
    // Opening again reads the record.
    assert_eq!(
        connect(&moto, "s3://layouts/fresh").await.unwrap().layout(),
        KeyLayout::Spread
    );

    moto.put("layouts", "legacy/1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"old");
    let legacy = connect(&moto, "s3://layouts/legacy").await.unwrap();
    assert_eq!(legacy.layout(), KeyLayout::Flat);
    let keys: Vec<String> = legacy
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(keys, ["1.2.3/1.2.3.4/1.2.3.4.5.dcm"]);
    assert!(moto.object("layouts", "legacy/pacs-layout.json").is_some());

    moto.put(
        "layouts",
        "future/pacs-layout.json",
        br#"{"format": 2, "layout": "spread"}"#,
    );
    let err = connect(&moto, "s3://layouts/future").await.err().unwrap();
    assert!(matches!(err, OpenError::NewerLayout(_)), "{err}");
    assert!(err.to_string().contains("upgrade"), "{err}");

    let err = connect(&moto, "s3://no-such-bucket/x").await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("\"no-such-bucket\"")
            && text.contains(&moto.endpoint())
            && text.contains("does not exist"),
        "{text}"
    );
}

/// The archive on S3: store, retrieve, reindex from the bucket, delete.
/// A second node (its own index, the same bucket) storing the same new
/// instance finds the key taken: identical content is indexed as its own,
/// different content is refused (nothing overwritten).
#[tokio::test]
async fn archive_on_s3_with_a_second_node() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("nodes");
    let tmp = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        let index = SledIndex::open(&tmp.path().join(name)).unwrap();
        (index, name.to_owned())
    };
    let (index_a, _) = node("a");
    let (index_b, _) = node("b");
    let a = Archive::new(
        Arc::new(connect(&moto, "s3://nodes/pacs").await.unwrap()),
        Arc::new(index_a.clone()),
        Limits::default(),
    );
    let b = Archive::new(
        Arc::new(connect(&moto, "s3://nodes/pacs").await.unwrap()),
        Arc::new(index_b),
        Limits::default(),
    );
    let spec = Spec {
        study: "1.2.826.0.1.3680043.10.9.1",
        series: "1.2.826.0.1.3680043.10.9.1.1",
        sop: "1.2.826.0.1.3680043.10.9.1.1.1",
        ..Spec::default()
    };
    let bytes = object(&spec);
    let sop = uid(spec.sop);
    let out = a.store(std::io::Cursor::new(bytes.clone())).await.unwrap();
    assert_eq!(out.status, StoreStatus::Stored);
    assert_eq!(a.retrieve_bytes(&sop).await.unwrap(), bytes);
    let path = moto
        .keys("nodes")
        .into_iter()
        .find(|k| k.ends_with(&format!("{}.dcm", spec.sop)))
        .unwrap();
    assert_eq!(moto.object("nodes", &path).unwrap().0, bytes);

    // The same instance through node B: indexed there too.
    let out = b.store(std::io::Cursor::new(bytes.clone())).await.unwrap();
    assert_eq!(out.status, StoreStatus::Stored);
    assert_eq!(b.retrieve_bytes(&sop).await.unwrap(), bytes);
    // Other content under the same UID through a third index: refused,
    // the object is untouched.
    let index_c = SledIndex::open(&tmp.path().join("c")).unwrap();
    let c = Archive::new(
        Arc::new(connect(&moto, "s3://nodes/pacs").await.unwrap()),
        Arc::new(index_c.clone()),
        Limits::default(),
    );
    let other = object(&Spec {
        accession: "CHANGED",
        ..spec
    });
    assert_ne!(other, bytes);
    let err = c.store(std::io::Cursor::new(other)).await.unwrap_err();
    assert!(err.to_string().contains("another writer"), "{err}");
    assert_eq!(moto.object("nodes", &path).unwrap().0, bytes);

    // A fresh index rebuilt from the bucket finds the instance.
    let report = c.reindex(&NoProgress).await.unwrap();
    assert!(report.adopted >= 1, "{report:?}");
    assert_eq!(c.retrieve_bytes(&sop).await.unwrap(), bytes);

    // Deleting removes the object from the bucket.
    assert!(a.delete_instance(&sop).await.unwrap());
    assert!(moto.object("nodes", &path).is_none());
    drop(index_a);
}
