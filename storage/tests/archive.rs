//! The archive over the real adapters (local disk with fsync, sled):
//! counters under concurrent stores and deletes, reindex equality, queries,
//! character sets against pydicom as the oracle, and two archives on one
//! PostgreSQL index sharing patient changes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pacs_core::archive::NoProgress;
use pacs_core::query::{Level, Query};
use pacs_core::{Archive, Index, Limits, StoreStatus, Uid};
use sample_data::synthetic::{object, Spec};
use storage::index::comparable;
use storage::{LocalLanding, ObjectBlobStore, SledIndex};

/// Opens the index, waiting up to 5 s for the file lock: a sled database
/// dropped a moment ago may still be held by its own background threads.
fn sled_index(dir: &Path) -> SledIndex {
    let mut tries = 0;
    loop {
        match SledIndex::open(&dir.join("index")) {
            Ok(i) => return i,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("index still locked ({e}); retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn open(dir: &Path) -> (Archive, SledIndex) {
    let blobs =
        ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display())).unwrap();
    let index = sled_index(dir);
    (
        Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default()),
        index,
    )
}

/// As the server opens it: with the landing log (inside a runtime).
fn open_landing(dir: &Path) -> (Archive, SledIndex) {
    let blobs =
        ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display())).unwrap();
    let index = sled_index(dir);
    let landing = LocalLanding::open(&dir.join("landing")).unwrap();
    (
        Archive::with_landing(
            Arc::new(blobs),
            Arc::new(index.clone()),
            Arc::new(landing),
            Limits::default(),
        ),
        index,
    )
}

use pacs_testkit::samples::{files_under, sample_dir};

async fn store_bytes(archive: &Archive, bytes: Vec<u8>) -> StoreStatus {
    archive
        .store(std::io::Cursor::new(bytes))
        .await
        .unwrap()
        .status
}

async fn import_samples(archive: &Archive) -> usize {
    let files = files_under(&sample_dir());
    for f in &files {
        let st = archive
            .store(tokio::fs::File::open(f).await.unwrap())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(st.status, StoreStatus::Stored);
    }
    files.len()
}

fn find_sync(archive: &Archive, q: &Query) -> Vec<pacs_core::query::Match> {
    futures::executor::block_on(archive.find(q))
        .unwrap()
        .matches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_right_under_concurrent_stores_and_deletes() {
    counters_case(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_right_under_concurrent_stores_and_deletes_with_landing() {
    counters_case(true).await;
}

async fn counters_case(landing: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, index) = if landing {
        open_landing(tmp.path())
    } else {
        open(tmp.path())
    };
    // 8 writers, 10 studies x 3 series x 8 instances, interleaved.
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let archive = archive.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30u32 {
                let n = w * 30 + i;
                let (st, se) = (n % 10, n % 3);
                let study = format!("1.2.9.{st}");
                let series = format!("1.2.9.{st}.{se}");
                let sop = format!("1.2.9.{st}.{se}.{n}");
                let modality = if se == 2 { "MR" } else { "CT" };
                let bytes = object(&Spec {
                    study: &study,
                    series: &series,
                    sop: &sop,
                    modality,
                    patient_id: &format!("P{}", st % 4),
                    ..Spec::default()
                });
                assert_eq!(store_bytes(&archive, bytes).await, StoreStatus::Stored);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Concurrent deletes: every instance with n % 5 == 0, plus whole study 7.
    let all = index.all_instances().await.unwrap();
    assert_eq!(all.len(), 240);
    let mut dels = Vec::new();
    for rec in all.iter().filter(|r| {
        r.sop_instance_uid
            .as_str()
            .rsplit('.')
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            % 5
            == 0
    }) {
        let archive = archive.clone();
        let sop = rec.sop_instance_uid.clone();
        dels.push(tokio::spawn(async move {
            archive.delete_instance(&sop).await.unwrap()
        }));
    }
    let a2 = archive.clone();
    dels.push(tokio::spawn(async move {
        a2.delete_study(&Uid::parse("1.2.9.7").unwrap())
            .await
            .unwrap()
            > 0
    }));
    for d in dels {
        d.await.unwrap();
    }

    // Recount from the instances and compare with every maintained counter.
    let remaining = index.all_instances().await.unwrap();
    let mut per_study: BTreeMap<String, (u32, BTreeMap<String, ()>)> = BTreeMap::new();
    let mut per_series: BTreeMap<String, u32> = BTreeMap::new();
    for r in &remaining {
        let e = per_study
            .entry(r.study_instance_uid.to_string())
            .or_default();
        e.0 += 1;
        e.1.insert(r.series_instance_uid.to_string(), ());
        *per_series
            .entry(r.series_instance_uid.to_string())
            .or_default() += 1;
    }
    assert!(!per_study.contains_key("1.2.9.7"));
    let stats = archive.stats().await.unwrap();
    assert_eq!(stats.instances as usize, remaining.len());
    assert_eq!(stats.studies as usize, per_study.len());
    assert_eq!(stats.series as usize, per_series.len());
    for (study, (n, series)) in &per_study {
        let s = index
            .study(&Uid::parse(study).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.num_instances, *n, "{study}");
        assert_eq!(s.num_series as usize, series.len(), "{study}");
        let expect_mr = series.keys().any(|k| k.ends_with(".2"));
        assert_eq!(
            s.modalities.contains_key("MR"),
            expect_mr,
            "{study} {:?}",
            s.modalities
        );
    }
    for (series, n) in &per_series {
        let s = index
            .series(&Uid::parse(series).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.num_instances, *n, "{series}");
    }
    let patients = find_sync(&archive, &Query::new(Level::Patient));
    let studies_by_patients: u32 = patients
        .iter()
        .map(|m| m.patient.as_ref().unwrap().num_studies)
        .sum();
    assert_eq!(studies_by_patients as usize, per_study.len());

    // The rebuilt index is the same.
    let before = comparable(remaining);
    archive.reindex(&NoProgress).await.unwrap();
    assert_eq!(comparable(index.all_instances().await.unwrap()), before);
    assert_eq!(archive.stats().await.unwrap(), stats);
    let report = archive.verify(&NoProgress).await.unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_the_sample_studies_and_reindex_equality() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, index) = open(tmp.path());
    let n = import_samples(&archive).await;

    let study_q = |keys: &[(u32, &str)], fuzzy: bool| {
        let mut q = Query::new(Level::Study);
        q.fuzzy = fuzzy;
        for (t, v) in keys {
            q.add_key(*t, v).unwrap();
        }
        q
    };
    let names = |q: &Query| -> Vec<String> {
        find_sync(&archive, q)
            .into_iter()
            .map(|m| m.study.unwrap().patient_name)
            .collect()
    };
    // All studies, newest first.
    let all = find_sync(&archive, &Query::new(Level::Study));
    assert_eq!(all.len(), 5);
    let dates: Vec<String> = all
        .iter()
        .map(|m| m.study.as_ref().unwrap().study_date.clone())
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted);

    // Fuzzy: typed without diacritics, any word prefix.
    assert_eq!(
        names(&study_q(&[(0x0010_0010, "nguyen")], true)),
        vec!["Nguyễn^Văn An"; 2]
    );
    assert_eq!(names(&study_q(&[(0x0010_0010, "van an")], true)).len(), 2);
    assert_eq!(
        names(&study_q(&[(0x0010_0010, "tran bich")], true)),
        vec!["Trần^Thị Bích"]
    );
    assert!(names(&study_q(&[(0x0010_0010, "nguyen b")], true)).is_empty());
    // Exact PN matching with wildcard (case-insensitive for PN).
    assert_eq!(names(&study_q(&[(0x0010_0010, "Nguyễn*")], false)).len(), 2);
    assert_eq!(
        names(&study_q(&[(0x0010_0010, "doe^john")], false)),
        vec!["DOE^JOHN"]
    );
    assert!(names(&study_q(&[(0x0010_0010, "Nguyen*")], false)).is_empty());
    // Date ranges, open ends.
    assert_eq!(
        names(&study_q(&[(0x0008_0020, "-20251231")], false)),
        vec!["Nguyễn^Văn An"]
    );
    assert_eq!(
        names(&study_q(&[(0x0008_0020, "20260101-")], false)).len(),
        4
    );
    assert_eq!(
        names(&study_q(&[(0x0008_0020, "20260315")], false)),
        vec!["Nguyễn^Văn An"]
    );
    // Patient ID, accession, modalities in study.
    assert_eq!(names(&study_q(&[(0x0010_0020, "VN-0001")], false)).len(), 2);
    assert_eq!(
        names(&study_q(&[(0x0008_0050, "ACC-CT-0001")], false)).len(),
        1
    );
    assert_eq!(
        names(&study_q(&[(0x0008_0061, "MR")], false)),
        vec!["Trần^Thị Bích"]
    );
    assert_eq!(names(&study_q(&[(0x0008_0061, "MR\\US")], false)).len(), 2);
    // Prefixes of patient ID and accession (planned as index ranges): the
    // same answers as the matcher over every study, case-sensitive (LO).
    assert_eq!(names(&study_q(&[(0x0010_0020, "VN-000*")], false)).len(), 4);
    assert_eq!(
        names(&study_q(&[(0x0010_0020, "VN-0001*")], false)).len(),
        2
    );
    assert_eq!(names(&study_q(&[(0x0010_0020, "VN-00*1")], false)).len(), 2);
    assert!(names(&study_q(&[(0x0010_0020, "vn-0001*")], false)).is_empty());
    assert!(names(&study_q(&[(0x0010_0020, "VN-0009*")], false)).is_empty());
    assert_eq!(
        names(&study_q(&[(0x0008_0050, "ACC-CT-*")], false)).len(),
        2
    );
    assert_eq!(
        names(&study_q(
            &[(0x0010_0020, "VN-0001*"), (0x0008_0061, "CT")],
            false
        ))
        .len(),
        2
    );

    // Series and instance levels with relational study keys and counts.
    let mut q = Query::new(Level::Series);
    q.add_key(0x0010_0020, "VN-0001").unwrap();
    let series = find_sync(&archive, &q);
    assert_eq!(series.len(), 2);
    let mut q = Query::new(Level::Instance);
    q.add_key(0x0008_0060, "MR").unwrap();
    let instances = find_sync(&archive, &q);
    let mr = instances.len();
    assert!(mr >= 8, "{mr}");
    let numbers: Vec<i64> = instances
        .iter()
        .map(|m| {
            m.instance
                .as_ref()
                .unwrap()
                .instance_number
                .parse()
                .unwrap()
        })
        .collect();
    let mut s = numbers.clone();
    s.sort();
    assert_eq!(numbers, s, "instances come in instance-number order");
    let mut q = Query::new(Level::Study);
    q.limit = Some(2);
    q.offset = 1;
    let page = archive.find(&q).await.unwrap();
    assert_eq!(page.matches.len(), 2);
    assert_eq!(page.total, 5);
    // The unfiltered page (date index walk) agrees with the sorted full list.
    assert_eq!(page.matches, all[1..3].to_vec());
    let mut q = Query::new(Level::Study);
    q.offset = 4;
    q.limit = Some(10);
    assert_eq!(archive.find(&q).await.unwrap().matches, all[4..].to_vec());

    // Reindex: same records, same answers.
    let before = comparable(index.all_instances().await.unwrap());
    assert_eq!(before.len(), n);
    let stats = archive.stats().await.unwrap();
    let progress = Counted::default();
    let report = archive.reindex(&progress).await.unwrap();
    assert_eq!(report.adopted as usize, n);
    // The total announced is the keys then walked, one step each.
    assert_eq!(progress.total.load(Ordering::SeqCst), n as u64);
    assert_eq!(progress.done.load(Ordering::SeqCst), n as u64);
    assert_eq!(comparable(index.all_instances().await.unwrap()), before);
    assert_eq!(archive.stats().await.unwrap(), stats);
    assert_eq!(find_sync(&archive, &Query::new(Level::Study)).len(), 5);
    assert_eq!(find_sync(&archive, &q_modality("MR")).len(), mr);
}

/// Progress as reported.
#[derive(Default)]
struct Counted {
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl pacs_core::archive::Progress for Counted {
    fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::SeqCst);
    }
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }
}

/// Progress stages as reported: name, total, advanced.
#[derive(Default)]
struct Staged {
    seen: std::sync::Mutex<Vec<(String, u64, u64)>>,
}

impl pacs_core::archive::Progress for Staged {
    fn set_total(&self, _: u64) {
        panic!("verify names its stages");
    }
    fn advance(&self, n: u64) {
        if let Some(last) = self.seen.lock().unwrap().last_mut() {
            last.2 += n;
        }
    }
    fn stage(&self, what: &str, total: u64) {
        self.seen.lock().unwrap().push((what.to_owned(), total, 0));
    }
}

fn q_modality(m: &str) -> Query {
    let mut q = Query::new(Level::Instance);
    q.add_key(0x0008_0060, m).unwrap();
    q
}

/// Patient names of pydicom's character-set files, decoded by us and by
/// pydicom, must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charset_files_decode_like_pydicom() {
    let (Some(data), Some(python)) = (
        std::env::var_os("PACS_PYDICOM_DATA"),
        std::env::var_os("PACS_PYTHON"),
    ) else {
        pacs_testkit::peers::skip_or_fail("PACS_PYDICOM_DATA / PACS_PYTHON is not set");
        return;
    };
    let dir = PathBuf::from(data).join("charset_files");
    let files: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    assert!(files.len() >= 15, "{} charset files", files.len());
    let script = "import sys, json, pydicom\nout = {}\nfor p in sys.argv[1:]:\n    ds = pydicom.dcmread(p)\n    out[p] = [str(ds.get('SOPInstanceUID', '')), str(ds.get('PatientName', '')), str(ds.get('StudyInstanceUID', ''))]\nprint(json.dumps(out))\n";
    let o = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let oracle: BTreeMap<String, (String, String, String)> =
        serde_json::from_slice(&o.stdout).unwrap();

    let mut checked = 0;
    for f in &files {
        // A fresh archive per file: several samples share a Study UID.
        let tmp = tempfile::tempdir().unwrap();
        let (archive, _index) = open(tmp.path());
        let bytes = std::fs::read(f).unwrap();
        let (sop, name, study) = &oracle[&f.display().to_string()];
        let result = archive.store(std::io::Cursor::new(bytes)).await;
        if study.is_empty() {
            // Not archivable; refused with the reason.
            let e = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                e.contains("StudyInstanceUID is missing"),
                "{}: {e}",
                f.display()
            );
            checked += 1;
            continue;
        }
        let outcome = result.unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(outcome.record.sop_instance_uid.as_str(), sop);
        let mut q = Query::new(Level::Study);
        q.add_key(0x0020_000D, outcome.record.study_instance_uid.as_str())
            .unwrap();
        let rows = archive.find(&q).await.unwrap().matches;
        let ours = rows
            .iter()
            .map(|m| m.study.as_ref().unwrap().patient_name.clone())
            .collect::<Vec<_>>();
        assert!(
            ours.iter().any(|n| n == name),
            "{}: we decoded {ours:?}, pydicom {name:?}",
            f.display()
        );
        checked += 1;
    }
    assert_eq!(checked, files.len());
}

/// ModalitiesInStudy is planned on its own index tree: it follows deletes,
/// and an index written before the tree existed gets it built on open.
#[tokio::test]
async fn modalities_in_study_index_follows_deletes_and_is_built_for_old_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let study_names = |archive: &Archive, m: &str| -> Vec<String> {
        let mut q = Query::new(Level::Study);
        q.add_key(0x0008_0061, m).unwrap();
        find_sync(archive, &q)
            .into_iter()
            .map(|r| r.study.unwrap().patient_name)
            .collect()
    };
    {
        let (archive, _) = open(tmp.path());
        import_samples(&archive).await;
        assert_eq!(study_names(&archive, "CT"), vec!["Nguyễn^Văn An"; 2]);
        assert_eq!(study_names(&archive, "CR\\US").len(), 2);
        let ct = find_sync(&archive, &{
            let mut q = Query::new(Level::Study);
            q.add_key(0x0008_0050, "ACC-CT-0001").unwrap();
            q
        });
        let uid = ct[0].study.as_ref().unwrap().study_instance_uid.clone();
        assert!(archive.delete_study(&uid).await.unwrap() > 0);
        assert_eq!(study_names(&archive, "CT"), vec!["Nguyễn^Văn An"]);
        archive.close().await.unwrap();
    }
    // An index from before the tree, then one of format 2 (entries keyed
    // by modality and UID, without the date): the entries are built again.
    for format_2 in [false, true] {
        // The index's checkpoint thread may hold it for a moment more.
        let db = (0..50)
            .find_map(
                |_| match storage::index::open_raw(&tmp.path().join("index")) {
                    Ok(db) => Some(db),
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        None
                    }
                },
            )
            .expect("the index stayed locked for 5 s");
        let tree = db.open_tree("study_by_modality").unwrap();
        let meta = db.open_tree("meta").unwrap();
        tree.clear().unwrap();
        meta.remove(b"built/study_by_modality/dated").unwrap();
        if format_2 {
            // A format-2 entry of a study that is not there.
            tree.insert(b"XA\x001.2.999", &[1u8][..]).unwrap();
            meta.insert(b"built/study_by_modality", &[1u8][..]).unwrap();
        }
        db.flush().unwrap();
        drop((tree, meta, db));
        let (archive, _) = open(tmp.path());
        assert_eq!(study_names(&archive, "CT"), vec!["Nguyễn^Văn An"]);
        assert_eq!(study_names(&archive, "MR"), vec!["Trần^Thị Bích"]);
        assert_eq!(study_names(&archive, "CR\\US").len(), 2);
        assert!(study_names(&archive, "XA").is_empty());
        archive.close().await.unwrap();
        drop(archive);
        // Every entry is of the dated layout: modality, 0, 14 digits, 0, UID.
        let db = (0..50)
            .find_map(|_| {
                storage::index::open_raw(&tmp.path().join("index"))
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(100)))
                    .ok()
            })
            .expect("the index stayed locked for 5 s");
        let keys: Vec<Vec<u8>> = db
            .open_tree("study_by_modality")
            .unwrap()
            .iter()
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        assert_eq!(keys.len(), 4, "one entry per study and modality");
        for k in keys {
            let pos = k.iter().position(|b| *b == 0).unwrap();
            let rest = &k[pos + 1..];
            assert!(
                rest.len() > 15 && rest[..14].iter().all(u8::is_ascii_digit) && rest[14] == 0,
                "{}",
                String::from_utf8_lossy(&k)
            );
        }
    }
}

fn ct(sop: &str, patient: &str) -> Vec<u8> {
    object(&Spec {
        study: "1.2.8.1",
        series: "1.2.8.1.1",
        sop,
        patient_id: patient,
        ..Spec::default()
    })
}

/// Objects in the landing log are read back before they are moved; a
/// delete or a replacement of a landed instance settles it first, so the
/// replay after a crash (the archive dropped without `close`) neither
/// brings back the deleted one nor the replaced content; the others are
/// moved and indexed by the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landed_objects_read_back_and_survive_a_crash_without_undoing_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let uid = |s: &str| Uid::parse(s).unwrap();
    let (a, b, c) = (
        ct("1.2.8.1.1.1", "PA"),
        ct("1.2.8.1.1.2", "PA"),
        ct("1.2.8.1.1.3", "PA"),
    );
    // A corrected re-send: same patient and study, different content.
    let b2 = object(&Spec {
        study: "1.2.8.1",
        series: "1.2.8.1.1",
        sop: "1.2.8.1.1.2",
        patient_id: "PA",
        accession: "CORRECTED",
        ..Spec::default()
    });
    {
        let (archive, index) = open_landing(tmp.path());
        for o in [&a, &b, &c] {
            assert_eq!(store_bytes(&archive, o.clone()).await, StoreStatus::Stored);
        }
        assert!(archive.landed_count() > 0, "stores went straight to blobs");
        assert_eq!(
            archive.retrieve_bytes(&uid("1.2.8.1.1.1")).await.unwrap(),
            a
        );
        assert!(archive.delete_instance(&uid("1.2.8.1.1.1")).await.unwrap());
        let st = archive
            .store(std::io::Cursor::new(b2.clone()))
            .await
            .unwrap()
            .status;
        assert_eq!(st, StoreStatus::Replaced);
        assert_eq!(
            archive.retrieve_bytes(&uid("1.2.8.1.1.3")).await.unwrap(),
            c
        );
        // A crash: no close, no drain.
        drop(archive);
        drop(index);
    }
    assert!(
        std::fs::read_dir(tmp.path().join("landing"))
            .unwrap()
            .count()
            > 0,
        "the landing log is empty: the replay is not tested"
    );
    let (archive, index) = open_landing(tmp.path());
    let report = archive.recover(&NoProgress).await.unwrap().unwrap();
    assert!(report.landed_replayed >= 1, "{report:?}");
    assert!(index.instance(&uid("1.2.8.1.1.1")).await.unwrap().is_none());
    assert_eq!(
        archive.retrieve_bytes(&uid("1.2.8.1.1.2")).await.unwrap(),
        b2
    );
    assert_eq!(
        archive.retrieve_bytes(&uid("1.2.8.1.1.3")).await.unwrap(),
        c
    );
    assert_eq!(archive.landed_count(), 0);
    let report = archive.verify(&NoProgress).await.unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(report.instances_checked, 2);
    assert_eq!(archive.stats().await.unwrap().instances, 2);
    archive.close().await.unwrap();
}

/// After a clean close, everything is at its blob key and the landing log
/// holds no live record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_moves_every_landed_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, index) = open_landing(tmp.path());
    let n = import_samples(&archive).await;
    archive.close().await.unwrap();
    assert_eq!(archive.landed_count(), 0);
    drop(archive);
    drop(index);
    let blobs = files_under(&tmp.path().join("objects"));
    assert_eq!(blobs.len(), n);
    let landing = LocalLanding::open(&tmp.path().join("landing")).unwrap();
    assert!(pacs_core::ports::Landing::live(&landing)
        .await
        .unwrap()
        .is_empty());
}

/// `close` while the background mover works on the same objects: it
/// succeeds, nothing is lost, and nothing writes once it returns (a copy
/// still running would leave its temporary file beside the 300 objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_the_mover_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, index) = open_landing(tmp.path());
    for i in 0..300u32 {
        let sop = format!("1.2.8.1.1.{}", 1000 + i);
        assert_eq!(
            store_bytes(&archive, ct(&sop, "PA")).await,
            StoreStatus::Stored
        );
    }
    // The mover starts once the archive has been idle for 300 ms.
    tokio::time::sleep(std::time::Duration::from_millis(330)).await;
    archive.close().await.unwrap();
    assert_eq!(archive.landed_count(), 0);
    drop(archive);
    drop(index);
    assert_eq!(files_under(&tmp.path().join("objects")).len(), 300);
}

/// An index entry put while its object was still being synced (the
/// concurrent half of a landed store) outlives a crash that the object did
/// not: recovery removes it, and keeps marked entries whose object is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_drops_entries_whose_object_never_became_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let uid = |s: &str| Uid::parse(s).unwrap();
    let kept = ct("1.2.8.1.1.7", "PA");
    {
        let (archive, index) = open_landing(tmp.path());
        assert_eq!(store_bytes(&archive, kept).await, StoreStatus::Stored);
        // The object of this one never reached the landing log.
        let header =
            pacs_core::dicom::parse_part10(&ct("1.2.8.1.1.8", "PA"), true, &Limits::default())
                .unwrap();
        let mut attrs = pacs_core::records::InstanceAttributes::from_header(&header).unwrap();
        attrs.instance.blob_key = "1.2.8.1/1.2.8.1.1/1.2.8.1.1.8.dcm".into();
        attrs.instance.size = 10;
        index.put_landing(attrs).await.unwrap();
        index.flush().await.unwrap();
        assert_eq!(index.landing_marks().await.unwrap().len(), 2);
        drop(archive);
        drop(index);
    }
    let (archive, index) = open_landing(tmp.path());
    let report = archive.recover(&NoProgress).await.unwrap().unwrap();
    assert_eq!(report.unacknowledged_dropped, 1, "{report:?}");
    assert!(index.instance(&uid("1.2.8.1.1.8")).await.unwrap().is_none());
    assert!(index.instance(&uid("1.2.8.1.1.7")).await.unwrap().is_some());
    assert!(index.landing_marks().await.unwrap().is_empty());
    assert_eq!(archive.stats().await.unwrap().instances, 1);
    let report = archive.verify(&NoProgress).await.unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    archive.close().await.unwrap();
}

/// An audit sink that keeps what it is given.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<pacs_core::AuditEvent>>);

#[async_trait::async_trait]
impl pacs_core::AuditSink for Recorder {
    async fn record(
        &self,
        event: pacs_core::AuditEvent,
    ) -> Result<(), pacs_core::audit::AuditError> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

/// A corrected re-send of a landed instance keeps the earlier version as
/// history (object and sidecar, durable before the replacement), records
/// an Instances Accessed / Update audit event naming the study and the
/// instance, and survives a reindex (history is not indexed); an object
/// that would move the instance to another study or patient is refused
/// and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_resend_keeps_history_and_is_audited() {
    use pacs_core::archive::{DuplicateRefusal, StoreError};
    use pacs_core::audit::{AuditAction, AuditEventId, AuditObject};
    let tmp = tempfile::tempdir().unwrap();
    let (archive, _index) = open_landing(tmp.path());
    let recorder = Arc::new(Recorder::default());
    archive.set_audit(recorder.clone());
    let sop = Uid::parse("1.2.8.1.1.7").unwrap();
    let spec = |patient_id, accession, study| Spec {
        study,
        series: if study == "1.2.8.1" {
            "1.2.8.1.1"
        } else {
            "1.2.8.2.1"
        },
        sop: "1.2.8.1.1.7",
        patient_id,
        accession,
        ..Spec::default()
    };
    let v1 = object(&spec("PA", "A1", "1.2.8.1"));
    let v2 = object(&spec("PA", "A1-FIXED", "1.2.8.1"));
    assert_eq!(store_bytes(&archive, v1.clone()).await, StoreStatus::Stored);
    assert_eq!(
        store_bytes(&archive, v1.clone()).await,
        StoreStatus::AlreadyPresent
    );
    assert!(recorder.0.lock().unwrap().is_empty());
    let out = archive
        .store(std::io::Cursor::new(v2.clone()))
        .await
        .unwrap();
    assert_eq!(out.status, StoreStatus::Replaced);
    assert_eq!(out.history_version, Some(1));
    assert_eq!(archive.retrieve_bytes(&sop).await.unwrap(), v2);
    let history = archive.history(&sop).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].patient_id, "PA");
    assert_eq!(history[0].study_instance_uid, "1.2.8.1");
    assert_eq!(history[0].size, v1.len() as u64);
    {
        let events = recorder.0.lock().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, AuditEventId::InstancesAccessed);
        assert_eq!(events[0].action, AuditAction::Update);
        assert!(events[0].objects.contains(&AuditObject::Study {
            uid: "1.2.8.1".into()
        }));
        assert!(events[0].objects.contains(&AuditObject::Other {
            kind: "SOP Instance".into(),
            id: "1.2.8.1.1.7".into()
        }));
    }
    for moved in [
        object(&spec("PB", "A1", "1.2.8.1")),
        object(&spec("PA", "A1", "1.2.8.2")),
    ] {
        match archive.store(std::io::Cursor::new(moved)).await {
            Err(StoreError::Duplicate {
                reason: DuplicateRefusal::MovesInstance,
                ..
            }) => {}
            other => panic!("not refused: {:?}", other.map(|o| o.status)),
        }
    }
    assert_eq!(archive.retrieve_bytes(&sop).await.unwrap(), v2);
    assert_eq!(archive.history(&sop).await.unwrap().len(), 1);
    // Restoring version 1 keeps v2 as version 2.
    let out = archive.restore_version(&sop, 1).await.unwrap();
    assert_eq!(out.history_version, Some(2));
    assert_eq!(archive.retrieve_bytes(&sop).await.unwrap(), v1);
    let report = archive.reindex(&NoProgress).await.unwrap();
    assert_eq!(report.adopted, 1, "{report:?}");
    assert!(report.unreadable.is_empty(), "{report:?}");
    let report = archive.verify(&NoProgress).await.unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(archive.history(&sop).await.unwrap().len(), 2);
    archive.close().await.unwrap();
}

/// A boundary that already parsed a part's header (STOW-RS, which must
/// inflate a deflated data set to read it) hands it on: the archive does
/// not parse the bytes again. Shown by bytes whose patient differs from the
/// header given: the header wins.
#[tokio::test]
async fn a_header_parsed_by_the_boundary_is_not_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, index) = open(dir.path());
    let spec = |patient_id| Spec {
        study: "2.25.8101",
        series: "2.25.8101.1",
        sop: "2.25.8101.1.1",
        patient_id,
        ..Spec::default()
    };
    let parsed_as = object(&spec("PAT-A"));
    let bytes = object(&spec("PAT-B"));
    assert_eq!(parsed_as.len(), bytes.len());
    let header = pacs_core::dicom::parse_part10(&parsed_as, true, &Limits::default()).unwrap();
    let stored = archive
        .store_parsed(bytes, header, tokio::io::empty())
        .await
        .unwrap();
    let study = index
        .study(&stored.record.study_instance_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(study.patient_id, "PAT-A");
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Files under `objects/` whose key is a series metadata blob.
fn metadata_blobs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(&dir.join("objects"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/metadata/"))
        .collect();
    out.sort();
    out
}

/// The DICOM JSON of quiet series moves out of the sled index into one
/// compressed blob per series; metadata answers stay the same through
/// compaction, later stores and deletes, a lost blob (rebuilt from the
/// objects), a whole series deleted, a stale commit, and a reindex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_metadata_moves_into_one_blob_per_series_and_answers_stay_the_same() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (archive, index) = open(tmp.path());
    let series = Uid::parse("1.2.8.1.1").unwrap();
    let sops: Vec<String> = (1..=12).map(|i| format!("1.2.8.1.1.{i}")).collect();
    for s in &sops {
        assert_eq!(
            store_bytes(&archive, ct(s, "P1")).await,
            StoreStatus::Stored
        );
    }
    let before = archive.series_metadata(&series).await.unwrap();
    assert_eq!(before.len(), 12);
    let one = Uid::parse(&sops[3]).unwrap();
    let one_before = archive.instance_metadata(&one).await.unwrap();
    assert!(index.metadata(&one).await.unwrap().is_some());

    // Not quiet long enough: nothing moves.
    let r = archive
        .compact_metadata(Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!(r.series, 0);
    let r = archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!((r.series, r.instances, r.failed), (1, 12, 0), "{r:?}");
    assert!(r.bytes > 0 && r.bytes < 12 * 500, "{r:?}");
    assert!(
        index.metadata(&one).await.unwrap().is_none(),
        "JSON left the index"
    );
    let blobs = metadata_blobs(tmp.path());
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(archive.series_metadata(&series).await.unwrap(), before);
    assert_eq!(archive.instance_metadata(&one).await.unwrap(), one_before);
    // Nothing changed since: a second pass does nothing.
    let r = archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!(r.series, 0);

    // A new instance and a deleted one: answered from index + blob.
    let extra = "1.2.8.1.1.13";
    assert_eq!(
        store_bytes(&archive, ct(extra, "P1")).await,
        StoreStatus::Stored
    );
    assert!(archive
        .delete_instance(&Uid::parse(&sops[0]).unwrap())
        .await
        .unwrap());
    let mixed = archive.series_metadata(&series).await.unwrap();
    assert_eq!(mixed.len(), 12);
    let kept: Vec<Vec<u8>> = before
        .iter()
        .filter(|j| !String::from_utf8_lossy(j).contains(&format!("\"{}\"", sops[0])))
        .cloned()
        .collect();
    assert_eq!(kept.len(), 11);
    assert_eq!(
        sorted(
            mixed
                .iter()
                .filter(|j| !String::from_utf8_lossy(j).contains(extra))
                .cloned()
                .collect()
        ),
        sorted(kept)
    );
    assert!(mixed
        .iter()
        .any(|j| String::from_utf8_lossy(j).contains(extra)));
    // A compaction that raced a change commits nothing.
    let dirty = index.dirty_series(u64::MAX, 10).await.unwrap();
    assert_eq!(dirty.len(), 1);
    assert!(!index
        .commit_series_metadata(
            &series,
            dirty[0].mark + 1,
            "metadata/1.2.8.1.1/00000000000000ff.gz",
            &[]
        )
        .await
        .unwrap());
    let r = archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!((r.series, r.instances, r.garbage), (1, 1, 1), "{r:?}");
    let now = metadata_blobs(tmp.path());
    assert_eq!(now.len(), 1, "the replaced blob is deleted: {now:?}");
    assert_ne!(now, blobs);
    assert_eq!(archive.series_metadata(&series).await.unwrap(), mixed);

    // The blob lost: every answer is rebuilt from the objects themselves.
    std::fs::remove_file(&now[0]).unwrap();
    assert_eq!(archive.series_metadata(&series).await.unwrap(), mixed);
    assert_eq!(archive.instance_metadata(&one).await.unwrap(), one_before);

    // Reindex drops the derived blobs and the answers stay.
    let r = archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!(r.series, 0, "nothing changed: no new blob");
    assert_eq!(
        store_bytes(&archive, ct("1.2.8.1.1.14", "P1")).await,
        StoreStatus::Stored
    );
    archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!(metadata_blobs(tmp.path()).len(), 1);
    archive.reindex(&NoProgress).await.unwrap();
    assert!(metadata_blobs(tmp.path()).is_empty());
    let after = archive.series_metadata(&series).await.unwrap();
    assert_eq!(after.len(), 13);
    assert_eq!(
        sorted(
            after
                .into_iter()
                .filter(|j| !String::from_utf8_lossy(j).contains("1.2.8.1.1.14"))
                .collect()
        ),
        sorted(mixed.clone())
    );

    // A whole series deleted: its blob goes too.
    archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!(metadata_blobs(tmp.path()).len(), 1);
    assert_eq!(archive.delete_series(&series).await.unwrap(), 13);
    assert!(archive.series_metadata(&series).await.unwrap().is_empty());
    let r = archive.compact_metadata(Duration::ZERO, 10).await.unwrap();
    assert_eq!((r.series, r.garbage), (0, 1), "{r:?}");
    assert!(metadata_blobs(tmp.path()).is_empty());
}

/// A blob store that counts full listings.
struct CountingStore {
    inner: ObjectBlobStore,
    lists: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl pacs_core::ports::BlobStore for CountingStore {
    async fn writer(
        &self,
        key: &pacs_core::ports::BlobKey,
    ) -> Result<Box<dyn pacs_core::ports::BlobWriter>, pacs_core::ports::PortError> {
        self.inner.writer(key).await
    }
    async fn get(
        &self,
        key: &pacs_core::ports::BlobKey,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<bytes::Bytes, pacs_core::ports::PortError>>,
        pacs_core::ports::PortError,
    > {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &pacs_core::ports::BlobKey,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, pacs_core::ports::PortError> {
        self.inner.get_range(key, range).await
    }
    async fn size(
        &self,
        key: &pacs_core::ports::BlobKey,
    ) -> Result<u64, pacs_core::ports::PortError> {
        self.inner.size(key).await
    }
    async fn rename(
        &self,
        from: &pacs_core::ports::BlobKey,
        to: &pacs_core::ports::BlobKey,
    ) -> Result<(), pacs_core::ports::PortError> {
        self.inner.rename(from, to).await
    }
    async fn delete(
        &self,
        key: &pacs_core::ports::BlobKey,
    ) -> Result<(), pacs_core::ports::PortError> {
        self.inner.delete(key).await
    }
    async fn list(&self) -> Result<Vec<pacs_core::ports::BlobKey>, pacs_core::ports::PortError> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list().await
    }
    async fn list_staging(
        &self,
    ) -> Result<Vec<pacs_core::ports::BlobKey>, pacs_core::ports::PortError> {
        self.inner.list_staging().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Recovery after an unclean stop does not list the store: it replays what
/// was in flight (index log, journal, landing log), deletes staging
/// uploads, and keeps every acknowledged instance. An object written but
/// never acknowledged is left for `verify` to list and `reindex` to adopt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_bounded_by_the_work_in_flight() {
    let uid = |s: &str| Uid::parse(s).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let open_counting = |dir: &Path| {
        let store = Arc::new(CountingStore {
            inner: ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display()))
                .unwrap(),
            lists: Default::default(),
        });
        let index = sled_index(dir);
        let landing = LocalLanding::open(&dir.join("landing")).unwrap();
        let archive = Archive::with_landing(
            store.clone(),
            Arc::new(index.clone()),
            Arc::new(landing),
            Limits::default(),
        );
        (archive, index, store)
    };
    {
        let (archive, index, _) = open_counting(tmp.path());
        archive.recover(&NoProgress).await.unwrap();
        for i in 1..=20 {
            let sop = format!("1.2.8.1.1.{i}");
            assert_eq!(
                store_bytes(&archive, ct(&sop, "P1")).await,
                StoreStatus::Stored
            );
        }
        // Killed: no close, so the next start is unclean.
        drop(archive);
        drop(index);
    }
    // What a crash can leave besides: a staging upload, and an object
    // written to its key whose index entry never became durable.
    std::fs::create_dir_all(objects.join("staging")).unwrap();
    let staging = objects.join(format!("staging/{:032x}.dcm", 7));
    std::fs::write(&staging, b"partial").unwrap();
    let orphan_dir = objects.join("1.2.8.9/1.2.8.9.1");
    std::fs::create_dir_all(&orphan_dir).unwrap();
    std::fs::write(
        orphan_dir.join("1.2.8.9.1.1.dcm"),
        object(&Spec {
            study: "1.2.8.9",
            series: "1.2.8.9.1",
            sop: "1.2.8.9.1.1",
            ..Spec::default()
        }),
    )
    .unwrap();

    let (archive, index, store) = open_counting(tmp.path());
    let report = archive.recover(&NoProgress).await.unwrap().unwrap();
    assert_eq!(
        store.lists.load(Ordering::SeqCst),
        0,
        "recovery listed the store"
    );
    assert_eq!(report.staging_removed, 1, "{report:?}");
    assert!(!staging.exists());
    assert_eq!(report.adopted, 0, "{report:?}");
    assert_eq!(archive.stats().await.unwrap().instances, 20);
    for i in 1..=20 {
        let sop = uid(&format!("1.2.8.1.1.{i}"));
        assert_eq!(
            archive.retrieve_bytes(&sop).await.unwrap(),
            ct(sop.as_str(), "P1")
        );
    }
    assert!(index.instance(&uid("1.2.8.9.1.1")).await.unwrap().is_none());
    // The orphan: listed by verify, adopted by reindex.
    let report = archive.verify(&NoProgress).await.unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(report.unindexed.len(), 1, "{:?}", report.unindexed);
    assert!(report.unindexed[0].contains("1.2.8.9.1.1"));
    archive.reindex(&NoProgress).await.unwrap();
    assert!(index.instance(&uid("1.2.8.9.1.1")).await.unwrap().is_some());
    assert_eq!(archive.stats().await.unwrap().instances, 21);
    archive.close().await.unwrap();
}

/// One node's archive on the PostgreSQL database `url` and the blobs under
/// `dir`, with the patient store of that database.
#[cfg(feature = "postgres")]
async fn pg_node(url: &str, dir: &Path) -> Archive {
    let blobs =
        ObjectBlobStore::open(&format!("file://{}", dir.join("objects").display())).unwrap();
    let index = storage::PgIndex::connect(url, 4).await.unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index.clone()), Limits::default());
    archive
        .set_patients(Arc::new(index.patients()))
        .await
        .unwrap();
    archive
}

/// Two archives on one PostgreSQL index, one blob store and one patient
/// store, as two nodes are: a merge recorded by A reaches B at B's next
/// refresh; an object of the merged patient B indexed before that refresh
/// (B's coercions still the old ones) is rebuilt under the survivor by it;
/// a change B records is kept in B's map through the reload that follows,
/// and reaches A.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archives_on_one_postgres_share_patient_changes() {
    use pacs_core::audit::AuditActor;
    use pacs_core::patients::{ChangeKind, Demographics, PatientKey};
    use pacs_core::PatientChangeRequest;
    use pacs_testkit::postgres::TestPostgres;

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("archives");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        pg_node(&url, dir.path()).await,
        pg_node(&url, dir.path()).await,
    );
    let spec = |study: &'static str, sop: &'static str, id: &'static str| {
        object(&Spec {
            study,
            series: &sop[..sop.len() - 2],
            sop,
            patient_id: id,
            patient_name: "OLD^NAME",
            ..Spec::default()
        })
    };
    assert_eq!(
        store_bytes(&a, spec("1.2.9.1", "1.2.9.1.1.1", "PA")).await,
        StoreStatus::Stored
    );
    let (pa, pb) = (PatientKey::new("", "PA"), PatientKey::new("", "PB"));
    let request =
        |kind, from: &PatientKey, into: &PatientKey, name: Option<&str>| PatientChangeRequest {
            kind,
            from: from.clone(),
            into: into.clone(),
            demographics: Demographics {
                name: name.map(str::to_owned),
                ..Demographics::default()
            },
            actor: AuditActor {
                user_id: "admin".into(),
                ..AuditActor::default()
            },
            source: "rest",
        };
    a.change_patient(request(ChangeKind::Merge, &pa, &pb, Some("NEW^NAME")))
        .await
        .unwrap();
    let patient_of = |archive: &Archive, study: &str| {
        let mut q = Query::new(Level::Study);
        q.add_key(0x0020_000D, study).unwrap();
        let m = find_sync(archive, &q);
        assert_eq!(m.len(), 1, "{study}");
        m[0].study.clone().unwrap()
    };
    // The shared index answers the merge on B at once.
    assert_eq!(patient_of(&b, "1.2.9.1").patient_id, "PB");
    assert!(b.coercions().get(&pa).is_none(), "B has not refreshed yet");

    // B takes an object of PA before it refreshes: indexed as stored.
    assert_eq!(
        store_bytes(&b, spec("1.2.9.2", "1.2.9.2.1.1", "PA")).await,
        StoreStatus::Stored
    );
    assert_eq!(patient_of(&b, "1.2.9.2").patient_id, "PA");
    assert_eq!(b.refresh_patients().await.unwrap(), 1, "one study rebuilt");
    assert_eq!(b.coercions().get(&pa).unwrap().target, pb);
    let rebuilt = patient_of(&a, "1.2.9.2");
    assert_eq!(rebuilt.patient_id, "PB");
    assert_eq!(rebuilt.patient_name, "NEW^NAME");
    assert_eq!(
        b.refresh_patients().await.unwrap(),
        0,
        "nothing moved since"
    );

    // A change B records stays in B's map through the reload after it,
    // and reaches A.
    b.change_patient(request(ChangeKind::Update, &pb, &pb, Some("NEWER^NAME")))
        .await
        .unwrap();
    let newer = Some("NEWER^NAME".to_owned());
    assert_eq!(b.coercions().get(&pa).unwrap().demographics.name, newer);
    b.refresh_patients().await.unwrap();
    assert_eq!(b.coercions().get(&pa).unwrap().demographics.name, newer);
    assert_eq!(
        a.coercions().get(&pa).unwrap().demographics.name,
        Some("NEW^NAME".into())
    );
    a.refresh_patients().await.unwrap();
    assert_eq!(a.coercions().get(&pa).unwrap().demographics.name, newer);
    assert_eq!(
        a.patient_history(&pb).await.unwrap(),
        b.patient_history(&pb).await.unwrap()
    );
    assert_eq!(a.patient_history(&pb).await.unwrap().len(), 2);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Two archives on one PostgreSQL index (two nodes) change related
/// patients at the same moment: A merges Xi into Yi while B merges Yi into
/// Zi, for several i at once. Whatever order the changes land in, each is
/// planned on the history before it: Xi ends under Zi when A's merge came
/// first, under Yi (itself under Zi) when B's did. Planned on a history
/// without the other's change, A's merge coming first would leave Xi
/// under Yi, a patient merged away.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archives_changing_related_patients_at_once_build_on_each_other() {
    use pacs_core::audit::AuditActor;
    use pacs_core::patients::{ChangeKind, Demographics, PatientKey};
    use pacs_core::PatientChangeRequest;
    use pacs_testkit::postgres::TestPostgres;

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("races");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        pg_node(&url, dir.path()).await,
        pg_node(&url, dir.path()).await,
    );
    const PAIRS: usize = 6;
    let ids: Vec<[String; 3]> = (0..PAIRS)
        .map(|i| [format!("X{i}"), format!("Y{i}"), format!("Z{i}")])
        .collect();
    for (i, [x, y, z]) in ids.iter().enumerate() {
        for (j, id) in [x, y, z].into_iter().enumerate() {
            let study = format!("1.2.9.7.{i}.{j}");
            let sop = format!("{study}.1.1");
            let bytes = object(&Spec {
                study: &study,
                series: &sop[..sop.len() - 2],
                sop: &sop,
                patient_id: id,
                patient_name: "SOME^ONE",
                ..Spec::default()
            });
            assert_eq!(store_bytes(&a, bytes).await, StoreStatus::Stored);
        }
    }
    let merge = |from: &str, into: &str| PatientChangeRequest {
        kind: ChangeKind::Merge,
        from: PatientKey::new("", from),
        into: PatientKey::new("", into),
        demographics: Demographics::default(),
        actor: AuditActor {
            user_id: "admin".into(),
            ..AuditActor::default()
        },
        source: "rest",
    };
    let mut tasks = Vec::new();
    for [x, y, z] in &ids {
        let (na, nb) = (a.clone(), b.clone());
        let (ra, rb) = (merge(x, y), merge(y, z));
        tasks.push(tokio::spawn(async move {
            let (ca, cb) = tokio::join!(na.change_patient(ra), nb.change_patient(rb));
            (ca.unwrap().change.id, cb.unwrap().change.id)
        }));
    }
    let mut order = Vec::new();
    for t in tasks {
        order.push(t.await.unwrap());
    }
    a.refresh_patients().await.unwrap();
    b.refresh_patients().await.unwrap();
    for ([x, y, z], (id_a, id_b)) in ids.iter().zip(&order) {
        let want = if id_a < id_b { z } else { y };
        for node in [&a, &b] {
            let c = node.coercions();
            let got = c.get(&PatientKey::new("", x)).unwrap();
            assert_eq!(
                &got.target.patient_id, want,
                "{x}: A's merge {id_a}, B's merge {id_b}"
            );
            assert_eq!(
                c.get(&PatientKey::new("", y)).unwrap().target.patient_id,
                *z
            );
        }
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// `verify` walks the index a page at a time: over more instances than
/// one page, every instance is checked once, and damage on either side of
/// a page's end (a truncated blob, a changed byte, a missing blob) is
/// each reported against its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_every_instance_across_its_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, _index) = open(tmp.path());
    let count = 1_005;
    let mut sops: Vec<String> = (1..=count).map(|i| format!("1.2.8.1.1.{i}")).collect();
    for sop in &sops {
        assert_eq!(
            store_bytes(&archive, ct(sop, "P1")).await,
            StoreStatus::Stored
        );
    }
    // The walk's order: bytes of the SOP Instance UID; pages of 1,000.
    sops.sort();
    let file = |sop: &str| {
        tmp.path()
            .join(format!("objects/1.2.8.1/1.2.8.1.1/{sop}.dcm"))
    };
    let (end_of_page, start_of_next, last) = (&sops[999], &sops[1000], &sops[1004]);
    let bytes = std::fs::read(file(end_of_page)).unwrap();
    std::fs::write(file(end_of_page), &bytes[..bytes.len() - 10]).unwrap();
    let mut bytes = std::fs::read(file(start_of_next)).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0xff;
    std::fs::write(file(start_of_next), &bytes).unwrap();
    std::fs::remove_file(file(last)).unwrap();

    let stages = Staged::default();
    let report = archive.verify(&stages).await.unwrap();
    assert_eq!(report.instances_checked, count as u64);
    // Progress in two stages, each counted from zero: the stored objects
    // (one is gone) against the index, then the instances against them.
    assert_eq!(
        *stages.seen.lock().unwrap(),
        vec![
            (
                pacs_core::archive::VERIFY_KEYS_STAGE.to_owned(),
                count as u64,
                count as u64 - 1
            ),
            (
                pacs_core::archive::VERIFY_BLOBS_STAGE.to_owned(),
                count as u64,
                count as u64
            ),
        ]
    );
    assert!(report.unindexed.is_empty(), "{:?}", report.unindexed);
    let mut damage: Vec<(String, String)> = report
        .damage
        .iter()
        .map(|d| (d.key.clone(), d.problem.clone()))
        .collect();
    damage.sort();
    assert_eq!(damage.len(), 3, "{damage:?}");
    let problem = |sop: &str| {
        damage
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{sop}.dcm")))
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no damage reported for {sop}: {damage:?}"))
    };
    assert!(problem(end_of_page).starts_with("size is"), "{damage:?}");
    assert!(
        problem(start_of_next).starts_with("SHA-256 is"),
        "{damage:?}"
    );
    assert!(problem(last).contains("missing"), "{damage:?}");
    archive.close().await.unwrap();
}
