//! Versioned on-disk formats of the index, through the real adapters: a
//! newer index is refused and left alone, an index written before
//! versioning (format 0) is migrated on open with every instance still
//! found, and an object whose metadata would not fit the logs is refused at
//! ingest before anything is written.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pacs_core::query::{Level, Query};
use pacs_core::records::ExtractError;
use pacs_core::{Archive, Index, Limits, StoreError, StoreStatus, Uid};
use sample_data::synthetic::{object, Spec};
use storage::format::{FORMAT_KEY, INDEX_FORMAT, INDEX_RECORD};
use storage::{LocalLanding, ObjectBlobStore, SledIndex};

/// Opens the index, waiting up to 5 s for the file lock: a sled database
/// dropped a moment ago may still be held by its own background threads.
fn sled_index(dir: &Path) -> Result<SledIndex, storage::IndexOpenError> {
    let mut tries = 0;
    loop {
        match SledIndex::open(&dir.join("index")) {
            Err(storage::IndexOpenError::Open { .. }) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The raw sled database under the index (the same lock wait).
fn raw_db(dir: &Path) -> sled::Db {
    (0..50)
        .find_map(|_| match storage::index::open_raw(&dir.join("index")) {
            Ok(db) => Some(db),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            }
        })
        .expect("the index stayed locked for 5 s")
}

fn open(dir: &Path, limits: Limits) -> (Archive, SledIndex) {
    let blobs =
        ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display())).unwrap();
    let index = sled_index(dir).unwrap();
    let landing = LocalLanding::open(&dir.join("landing")).unwrap();
    (
        Archive::with_landing(
            Arc::new(blobs),
            Arc::new(index.clone()),
            Arc::new(landing),
            limits,
        ),
        index,
    )
}

fn ct(sop: &str, series: &str, study: &str, patient: &str) -> Vec<u8> {
    object(&Spec {
        study,
        series,
        sop,
        patient_id: patient,
        pixel_bytes: 2048,
        ..Spec::default()
    })
}

/// Two patients, three studies, five instances.
async fn store_some(archive: &Archive) -> Vec<String> {
    let mut sops = Vec::new();
    for (sop, series, study, patient) in [
        ("1.9.1.1.1", "1.9.1.1", "1.9.1", "P1"),
        ("1.9.1.1.2", "1.9.1.1", "1.9.1", "P1"),
        ("1.9.1.2.1", "1.9.1.2", "1.9.1", "P1"),
        ("1.9.2.1.1", "1.9.2.1", "1.9.2", "P1"),
        ("1.9.3.1.1", "1.9.3.1", "1.9.3", "P2"),
    ] {
        let out = archive
            .store(std::io::Cursor::new(ct(sop, series, study, patient)))
            .await
            .unwrap();
        assert_eq!(out.status, StoreStatus::Stored);
        sops.push(sop.to_owned());
    }
    sops
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn names(db: &sled::Db) -> Vec<sled::IVec> {
    db.tree_names()
        .into_iter()
        .filter(|n| n.as_ref() != b"__sled__default")
        .collect()
}

/// An index written by a newer build is refused with both versions named,
/// and the data dir is left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_index_is_refused_and_left_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (archive, _) = open(tmp.path(), Limits::default());
        store_some(&archive).await;
        archive.close().await.unwrap();
    }
    {
        let db = raw_db(tmp.path());
        let meta = db.open_tree("meta").unwrap();
        let stored = meta.get(FORMAT_KEY).unwrap().expect("a format version");
        assert_eq!(stored.as_ref(), INDEX_FORMAT.to_le_bytes());
        meta.insert(FORMAT_KEY, &(INDEX_FORMAT + 1).to_le_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let refused = |dir: &Path| {
        let err = sled_index(dir).err().expect("refused").to_string();
        assert!(
            err.contains(&format!("format version {}", INDEX_FORMAT + 1))
                && err.contains(&format!("reads format version {INDEX_FORMAT} at most"))
                && err.contains("upgrade the pacs binary"),
            "{err}"
        );
    };
    // The format key alone (sled may write to its own files as it opens).
    refused(tmp.path());
    // As a newer build leaves it: the format file too. Nothing changes.
    let file = tmp.path().join("index.format");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("sen-pacs index format {INDEX_FORMAT}\n")
    );
    std::fs::write(
        &file,
        format!("sen-pacs index format {}\n", INDEX_FORMAT + 1),
    )
    .unwrap();
    let before = snapshot(tmp.path());
    refused(tmp.path());
    assert!(
        before == snapshot(tmp.path()),
        "opening a newer index changed files"
    );
}

/// An index written before versioning: every value bare bincode (what the
/// unversioned build wrote: the current values without their version
/// byte), no format key, and an index log of bare records holding one
/// delete. Opening it migrates every tree, replays the log, and every
/// instance is found as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_0_index_is_migrated_and_every_instance_found() {
    let tmp = tempfile::tempdir().unwrap();
    let sops;
    let metadata_before;
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        sops = store_some(&archive).await;
        let mut m = Vec::new();
        for s in &sops {
            m.push(
                index
                    .metadata(&Uid::parse(s).unwrap())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        metadata_before = m;
        archive.close().await.unwrap();
    }
    // Rewrite it in format 0.
    {
        let db = raw_db(tmp.path());
        assert_eq!(pacs_testkit::old_index::instances_to_layout_3(&db, None), 5);
        let mut values = 0;
        for name in names(&db) {
            let tree = db.open_tree(&name).unwrap();
            for kv in tree.iter() {
                let (k, v) = kv.unwrap();
                if name.as_ref() == b"meta" && k.as_ref() == FORMAT_KEY {
                    continue;
                }
                assert_eq!(v.first(), Some(&INDEX_RECORD), "{name:?} {k:?}");
                tree.insert(k, &v[1..]).unwrap();
                values += 1;
            }
        }
        assert!(values > 30, "{values}");
        db.open_tree("meta").unwrap().remove(FORMAT_KEY).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_file(tmp.path().join("index.format")).unwrap();
    // A format 0 log (no header, bare bincode) deleting the last instance,
    // as a crash before the checkpoint would leave it.
    let removed = Uid::parse(&sops[4]).unwrap();
    let record = storage::wal::WalRecord::Remove {
        sop: removed.clone(),
        journal_id: 77,
    };
    let payload = bincode::serialize(&record).unwrap();
    let mut wal = Vec::new();
    wal.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    wal.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    wal.extend_from_slice(&payload);
    std::fs::write(tmp.path().join("index.wal"), wal).unwrap();

    let (archive, index) = open(tmp.path(), Limits::default());
    for (s, meta) in sops[..4].iter().zip(&metadata_before) {
        let uid = Uid::parse(s).unwrap();
        assert!(index.instance(&uid).await.unwrap().is_some(), "{s}");
        assert_eq!(&index.metadata(&uid).await.unwrap().unwrap(), meta);
    }
    assert!(index.instance(&removed).await.unwrap().is_none());
    let stats = index.stats().await.unwrap();
    assert_eq!(
        (stats.patients, stats.studies, stats.series, stats.instances),
        (1, 2, 3, 4)
    );
    let journal = index.journal().await.unwrap();
    assert!(journal.iter().any(|(id, _)| *id == 77), "{journal:?}");
    let studies = archive.find(&Query::new(Level::Study)).await.unwrap();
    assert_eq!(studies.total, 2);
    let mut q = Query::new(Level::Instance);
    q.add_key(0x0020_000D, "1.9.1").unwrap();
    assert_eq!(archive.find(&q).await.unwrap().matches.len(), 3);
    let mut q = Query::new(Level::Study);
    q.add_key(0x0008_0061, "CT").unwrap();
    assert_eq!(archive.find(&q).await.unwrap().total, 2);
    // New stores work on the migrated index, and it reopens as current.
    let out = archive
        .store(std::io::Cursor::new(ct(
            "1.9.1.1.3",
            "1.9.1.1",
            "1.9.1",
            "P1",
        )))
        .await
        .unwrap();
    assert_eq!(out.status, StoreStatus::Stored);
    archive.close().await.unwrap();
    drop((archive, index));
    let db = raw_db(tmp.path());
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        INDEX_FORMAT.to_le_bytes()
    );
    for name in names(&db) {
        for kv in db.open_tree(&name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            if k.as_ref() != FORMAT_KEY {
                assert_eq!(v.first(), Some(&INDEX_RECORD), "{name:?} {k:?}");
            }
        }
    }
    assert!(db.scan_prefix(b"migrate/").next().is_none());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("index.format")).unwrap(),
        format!("sen-pacs index format {INDEX_FORMAT}\n")
    );
    assert_eq!(
        &std::fs::read(tmp.path().join("index.wal")).unwrap()[..8],
        b"SENIXLOG"
    );
}

/// An index of format 3 (each instance's record and JSON keyed by its SOP
/// Instance UID alone) whose migration to format 4 was cut by a crash
/// after some instances: opened, the rest are keyed by series, none twice,
/// and every instance, its JSON, the queries and the counts are as before;
/// the migration's marks are gone and the format is current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_index_cut_in_its_migration_is_keyed_by_series() {
    let tmp = tempfile::tempdir().unwrap();
    let (sops, metadata_before, instances_before, stats_before);
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        sops = store_some(&archive).await;
        let mut m = Vec::new();
        let mut i = Vec::new();
        for s in &sops {
            let uid = Uid::parse(s).unwrap();
            m.push(index.metadata(&uid).await.unwrap().unwrap());
            i.push(index.instance(&uid).await.unwrap().unwrap());
        }
        (metadata_before, instances_before) = (m, i);
        stats_before = index.stats().await.unwrap();
        archive.close().await.unwrap();
    }
    {
        let db = raw_db(tmp.path());
        // Cut after the second instance in key order.
        let mut ordered = sops.clone();
        ordered.sort();
        assert_eq!(
            pacs_testkit::old_index::instances_to_layout_3(&db, Some(&ordered[1])),
            3
        );
        db.insert(b"migrate/4/last", ordered[1].as_bytes()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(FORMAT_KEY, &3u32.to_le_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    std::fs::write(tmp.path().join("index.format"), "sen-pacs index format 3\n").unwrap();

    let (archive, index) = open(tmp.path(), Limits::default());
    for ((s, meta), rec) in sops.iter().zip(&metadata_before).zip(&instances_before) {
        let uid = Uid::parse(s).unwrap();
        assert_eq!(
            index.instance(&uid).await.unwrap().as_ref(),
            Some(rec),
            "{s}"
        );
        assert_eq!(&index.metadata(&uid).await.unwrap().unwrap(), meta, "{s}");
    }
    assert_eq!(index.stats().await.unwrap(), stats_before);
    let mut q = Query::new(Level::Instance);
    q.add_key(0x0020_000D, "1.9.1").unwrap();
    assert_eq!(archive.find(&q).await.unwrap().matches.len(), 3);
    let series = archive
        .instances_of_study(&Uid::parse("1.9.1").unwrap())
        .await
        .unwrap();
    assert_eq!(series.len(), 3);
    // Delete and store again on the migrated layout.
    let gone = Uid::parse("1.9.1.1.2").unwrap();
    archive.delete_instance(&gone).await.unwrap();
    assert!(index.instance(&gone).await.unwrap().is_none());
    assert_eq!(
        archive
            .store(std::io::Cursor::new(ct(
                "1.9.1.1.2",
                "1.9.1.1",
                "1.9.1",
                "P1"
            )))
            .await
            .unwrap()
            .status,
        StoreStatus::Stored
    );
    assert_eq!(index.stats().await.unwrap(), stats_before);
    archive.close().await.unwrap();
    drop((archive, index));
    let db = raw_db(tmp.path());
    assert!(db.scan_prefix(b"migrate/").next().is_none());
    assert_eq!(
        db.open_tree("meta")
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        INDEX_FORMAT.to_le_bytes()
    );
    // Each instance: a locator naming its series, its record and JSON
    // under series then UID, nothing left under the UID alone.
    let instances = db.open_tree("instances").unwrap();
    let by_series = db.open_tree("instance_by_series").unwrap();
    let metadata = db.open_tree("metadata").unwrap();
    assert_eq!(instances.len(), 5);
    assert_eq!(by_series.len(), 5);
    for rec in &instances_before {
        let sop = rec.sop_instance_uid.as_str();
        let series = rec.series_instance_uid.as_str();
        let locator = instances.get(sop).unwrap().unwrap();
        assert_eq!(&locator[1..], series.as_bytes());
        let key = [series.as_bytes(), &[0], sop.as_bytes()].concat();
        assert!(by_series.get(&key).unwrap().unwrap().len() > 100);
        assert!(metadata.get(sop).unwrap().is_none());
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("index.format")).unwrap(),
        format!("sen-pacs index format {INDEX_FORMAT}\n")
    );
}

/// An object whose DICOM JSON exceeds `max_metadata_bytes` is refused at
/// ingest with a clear error, and neither log nor index sees it; one at
/// the limit is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_the_limit_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = ct("1.9.9.1.1", "1.9.9.1", "1.9.9", "P9");
    let header = pacs_core::dicom::parse_part10(&bytes, true, &Limits::default()).unwrap();
    let json_len = pacs_core::records::InstanceAttributes::from_header(&header)
        .unwrap()
        .metadata
        .len() as u64;
    let limits = Limits {
        max_metadata_bytes: json_len - 1,
        ..Limits::default()
    };
    let (archive, index) = open(tmp.path(), limits.clone());
    let wal_before = std::fs::read(tmp.path().join("index.wal")).unwrap();
    let err = archive
        .store(std::io::Cursor::new(bytes.clone()))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Extract(ExtractError::MetadataTooLarge { size, limit })
                if *size == json_len && *limit == json_len - 1
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("metadata") && msg.contains("limit"), "{msg}");
    let sop = Uid::parse("1.9.9.1.1").unwrap();
    assert!(index.instance(&sop).await.unwrap().is_none());
    assert_eq!(
        std::fs::read(tmp.path().join("index.wal")).unwrap(),
        wal_before
    );
    assert_eq!(index.stats().await.unwrap().instances, 0);
    archive.close().await.unwrap();
    drop((archive, index));

    let limits = Limits {
        max_metadata_bytes: json_len,
        ..Limits::default()
    };
    let (archive, _) = open(tmp.path(), limits);
    let out = archive.store(std::io::Cursor::new(bytes)).await.unwrap();
    assert_eq!(out.status, StoreStatus::Stored);
    archive.close().await.unwrap();
}

/// A reindex empties the index but keeps its format: reopened, it is read
/// as current, not migrated again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindexed_index_keeps_its_format() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (archive, _) = open(tmp.path(), Limits::default());
        store_some(&archive).await;
        archive.close().await.unwrap();
    }
    {
        let (archive, _) = open(tmp.path(), Limits::default());
        archive
            .reindex(&pacs_core::archive::NoProgress)
            .await
            .unwrap();
        archive.close().await.unwrap();
    }
    let (archive, index) = open(tmp.path(), Limits::default());
    assert_eq!(index.stats().await.unwrap().instances, 5);
    assert_eq!(index.all_instances().await.unwrap().len(), 5);
    archive.close().await.unwrap();
}

/// The credential trees carry their own version byte from the start: the
/// format-0 migration leaves them byte for byte, the users and tokens are
/// still read after it, and a reindex keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_and_a_reindex_leave_credentials_alone() {
    use pacs_core::access::Role;
    use pacs_core::credentials::{Credentials, TokenRecord, UserRecord};
    const CREDENTIAL_TREES: [&[u8]; 3] = [b"users", b"tokens", b"token_secrets"];
    let user = UserRecord {
        name: "an".into(),
        role: Role::Admin,
        password_hash: "$argon2id$x".into(),
        disabled: false,
        created: 1,
        updated: 1,
    };
    let token = TokenRecord {
        id: "t1".into(),
        name: "emr".into(),
        role: Role::Referrer,
        secret_sha256: [7; 32],
        created: 1,
        expires: None,
        revoked: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        store_some(&archive).await;
        let c = index.credentials().unwrap();
        assert!(c.insert_user(user.clone()).await.unwrap());
        assert!(c.insert_token(token.clone()).await.unwrap());
        drop(c);
        archive.close().await.unwrap();
    }
    // The index trees back to format 0; the credential trees as they are.
    let credentials_before;
    {
        let db = raw_db(tmp.path());
        let mut creds = BTreeMap::new();
        for name in names(&db) {
            let tree = db.open_tree(&name).unwrap();
            let credential = CREDENTIAL_TREES.contains(&name.as_ref());
            for kv in tree.iter() {
                let (k, v) = kv.unwrap();
                if credential {
                    creds.insert((name.to_vec(), k.to_vec()), v.to_vec());
                } else if !(name.as_ref() == b"meta" && k.as_ref() == FORMAT_KEY) {
                    tree.insert(k, &v[1..]).unwrap();
                }
            }
        }
        assert_eq!(creds.len(), 3, "{creds:?}");
        credentials_before = creds;
        db.open_tree("meta").unwrap().remove(FORMAT_KEY).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_file(tmp.path().join("index.format")).unwrap();
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        assert_eq!(index.stats().await.unwrap().instances, 5);
        let c = index.credentials().unwrap();
        assert_eq!(c.user("an").await.unwrap(), Some(user.clone()));
        assert_eq!(c.token_by_secret(&[7; 32]).await.unwrap(), Some(token));
        archive
            .reindex(&pacs_core::archive::NoProgress)
            .await
            .unwrap();
        assert_eq!(c.user("an").await.unwrap(), Some(user));
        drop(c);
        archive.close().await.unwrap();
    }
    let db = raw_db(tmp.path());
    let mut after = BTreeMap::new();
    for name in CREDENTIAL_TREES {
        for kv in db.open_tree(name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            after.insert((name.to_vec(), k.to_vec()), v.to_vec());
        }
    }
    assert_eq!(after, credentials_before);
}

/// An index as a format-1 build left it (before the series-metadata trees,
/// sled pages uncompressed): opened, migrated to the current format, kept
/// uncompressed (sled refuses to change that), and used as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_format_1_opens_uncompressed_and_is_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    {
        let db = sled::Config::new()
            .path(&dir)
            .use_compression(false)
            .open()
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(FORMAT_KEY, &1u32.to_le_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    std::fs::write(tmp.path().join("index.format"), "sen-pacs index format 1\n").unwrap();
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        store_some(&archive).await;
        let before = archive.find(&Query::new(Level::Study)).await.unwrap().total;
        assert!(before > 0);
        archive
            .compact_metadata(std::time::Duration::ZERO, 100)
            .await
            .unwrap();
        archive.close().await.unwrap();
        drop((archive, index));
    }
    let conf = String::from_utf8_lossy(&std::fs::read(dir.join("conf")).unwrap()).into_owned();
    assert!(conf.contains("use_compression: false"), "{conf}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("index.format")).unwrap(),
        format!("sen-pacs index format {INDEX_FORMAT}\n")
    );
    let (archive, _) = open(tmp.path(), Limits::default());
    let studies = archive.find(&Query::new(Level::Study)).await.unwrap();
    assert!(studies.total > 0);
    for m in studies.matches {
        let uid = m.study.unwrap().study_instance_uid;
        for i in archive.instances_of_study(&uid).await.unwrap() {
            assert!(!archive
                .instance_metadata(&i.sop_instance_uid)
                .await
                .unwrap()
                .is_empty());
        }
    }
    archive.close().await.unwrap();
}

/// `SledIndex::compact` (`pacs compact-index`): after stores, a metadata
/// compaction and the deletion of most studies, the index rewritten to its
/// live data answers the same (counts, every remaining instance's
/// metadata), takes less space, carries sled's id generator forward (ids
/// and metadata marks never repeat), and a compaction interrupted between
/// its two moves is undone by the next open. A running index is not
/// compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_live_data_and_frees_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let kept = "1.9.7";
    let (studies, metadata) = {
        let (archive, index) = open(tmp.path(), Limits::default());
        for st in 0..4 {
            for i in 0..60 {
                let study = format!("1.9.{}", st + 4);
                let series = format!("{study}.1");
                let sop = format!("{series}.{}", i + 1);
                let out = archive
                    .store(std::io::Cursor::new(ct(&sop, &series, &study, "P1")))
                    .await
                    .unwrap();
                assert_eq!(out.status, StoreStatus::Stored);
            }
        }
        archive
            .compact_metadata(std::time::Duration::ZERO, 100)
            .await
            .unwrap();
        for st in ["1.9.4", "1.9.5", "1.9.6"] {
            assert_eq!(
                archive
                    .delete_study(&Uid::parse(st).unwrap())
                    .await
                    .unwrap(),
                60
            );
        }
        // A running index is not compacted, and is left as it was.
        assert!(SledIndex::compact(&dir).is_err());
        let studies = archive.find(&Query::new(Level::Study)).await.unwrap().total;
        let mut metadata = BTreeMap::new();
        for i in archive
            .instances_of_study(&Uid::parse(kept).unwrap())
            .await
            .unwrap()
        {
            let sop = i.sop_instance_uid.clone();
            metadata.insert(sop.clone(), archive.instance_metadata(&sop).await.unwrap());
        }
        archive.close().await.unwrap();
        drop((archive, index));
        (studies, metadata)
    };
    assert_eq!((studies, metadata.len()), (1, 60));
    let last_id = {
        let db = raw_db(tmp.path());
        db.generate_id().unwrap()
    };
    let report = (0..50)
        .find_map(|_| match SledIndex::compact(&dir) {
            Ok(r) => Some(r),
            Err(storage::IndexOpenError::Open { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            }
            Err(e) => panic!("{e}"),
        })
        .expect("the index stayed locked for 5 s");
    assert!(report.after < report.before, "{report:?}");
    assert!(!tmp.path().join("index.compacting").exists());
    assert!(!tmp.path().join("index.before-compact").exists());
    assert!(raw_db(tmp.path()).generate_id().unwrap() > last_id);
    let check = |archive: Archive| {
        let metadata = metadata.clone();
        async move {
            assert_eq!(
                archive.find(&Query::new(Level::Study)).await.unwrap().total,
                1
            );
            assert_eq!(archive.stats().await.unwrap().instances, 60);
            for (sop, want) in &metadata {
                let got = archive.instance_metadata(sop).await.unwrap();
                assert_eq!(&got, want, "{sop}");
            }
            archive.close().await.unwrap();
        }
    };
    check(open(tmp.path(), Limits::default()).0).await;
    // A crash between the two moves: the index moved aside, the copy not
    // yet in its place. The next open puts the index back.
    std::fs::rename(&dir, tmp.path().join("index.before-compact")).unwrap();
    std::fs::create_dir(tmp.path().join("index.compacting")).unwrap();
    check(open(tmp.path(), Limits::default()).0).await;
    assert!(!tmp.path().join("index.compacting").exists());
    assert!(!tmp.path().join("index.before-compact").exists());
}

/// An index of format 4 (MPPS records without accession entries): opened,
/// it is format 5 and each record is found by the accession numbers its
/// steps name; the instances are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_4_index_gets_its_mpps_accession_entries() {
    use pacs_core::mpps::{MppsRecord, MppsStatus, MppsStore, ScheduledStepRef};
    let tmp = tempfile::tempdir().unwrap();
    let record = |uid: &str, accessions: &[&str]| MppsRecord {
        sop_instance_uid: uid.into(),
        status: MppsStatus::InProgress,
        creator_ae: "CT1".into(),
        created_ms: 1,
        updated_ms: 1,
        steps: accessions
            .iter()
            .map(|a| ScheduledStepRef {
                accession_number: (*a).into(),
                ..ScheduledStepRef::default()
            })
            .collect(),
        series_uids: Vec::new(),
        dataset: vec![0; 4],
    };
    let stats_before;
    {
        let (archive, index) = open(tmp.path(), Limits::default());
        store_some(&archive).await;
        let mpps = index.workflow().unwrap();
        assert!(mpps
            .create(&record("1.5.1", &["ACC1", "ACC2"]))
            .await
            .unwrap());
        assert!(mpps.create(&record("1.5.2", &["ACC2"])).await.unwrap());
        stats_before = index.stats().await.unwrap();
        archive.close().await.unwrap();
    }
    {
        let db = raw_db(tmp.path());
        db.drop_tree("mpps_by_accession").unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.remove(b"built/mpps_by_accession").unwrap();
        meta.insert(FORMAT_KEY, &4u32.to_le_bytes()).unwrap();
        db.flush().unwrap();
    }
    std::fs::write(tmp.path().join("index.format"), "sen-pacs index format 4\n").unwrap();

    let (archive, index) = open(tmp.path(), Limits::default());
    assert_eq!(index.stats().await.unwrap(), stats_before);
    let mpps = index.workflow().unwrap();
    let uids =
        |v: Vec<MppsRecord>| -> Vec<String> { v.into_iter().map(|r| r.sop_instance_uid).collect() };
    assert_eq!(uids(mpps.of_accession("ACC1").await.unwrap()), ["1.5.1"]);
    assert_eq!(
        uids(mpps.of_accession("ACC2").await.unwrap()),
        ["1.5.1", "1.5.2"]
    );
    assert!(mpps.of_accession("ACC3").await.unwrap().is_empty());
    archive.close().await.unwrap();
    drop((archive, index, mpps));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("index.format")).unwrap(),
        format!("sen-pacs index format {INDEX_FORMAT}\n")
    );
    assert_eq!(INDEX_FORMAT, 5);
}
