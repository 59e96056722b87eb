//! The study ZIP (`Accept: application/zip`): a DICOM file-set with a
//! DICOMDIR, checked with real readers over TCP: curl downloads it,
//! Python's `zipfile` and pydicom's `FileSet` read it, DCMTK's `dcmdump`
//! parses the DICOMDIR and `dcmmkdir --update` checks each record against
//! the file it references.
//!
//! Python comes from `PACS_PYTHON` (default `python3`). Without pydicom,
//! curl or DCMTK the checks that need them print SKIPPED, or fail when
//! `PACS_REQUIRE_PEERS` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use common::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::BodyExt;
use pacs_core::audit::{AuditError, AuditEvent, AuditEventId, AuditObject, AuditSink};
use pacs_core::ports::{BlobWriter, PortError};
use pacs_core::{Archive, BlobKey, BlobStore, Limits};
use tower::ServiceExt;

const PEER_SCRIPT: &str = r#"
import hashlib, json, os, sys, zipfile
import pydicom
from pydicom.fileset import FileSet

path, out = sys.argv[1:3]
z = zipfile.ZipFile(path)
assert z.testzip() is None
names = z.namelist()
assert names[0] == "DICOMDIR", names[:3]
for i in z.infolist():
    assert i.compress_type == zipfile.ZIP_STORED
z.extractall(out)
fs = FileSet(pydicom.dcmread(os.path.join(out, "DICOMDIR")))
found = {}
for inst in fs:
    ds = inst.load()
    assert ds.SOPInstanceUID == inst.ReferencedSOPInstanceUIDInFile
    assert ds.file_meta.TransferSyntaxUID == inst.ReferencedTransferSyntaxUIDInFile
    rel = os.path.relpath(inst.path, out).replace(os.sep, "/")
    assert rel in names, rel
    found[ds.SOPInstanceUID] = hashlib.sha256(open(inst.path, "rb").read()).hexdigest()
# Every component of every File ID: upper case, digits, underscore, <= 8.
for n in names:
    for c in n.split("/"):
        assert 1 <= len(c) <= 8 and all(ch.isupper() or ch.isdigit() or ch == "_" for ch in c), n
dd = pydicom.dcmread(os.path.join(out, "DICOMDIR"))
assert dd.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
assert dd.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
patient = [r for r in dd.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
print(json.dumps({
    "files": len(names),
    "instances": found,
    "patient_id": patient[0].PatientID,
    "patient_name": str(patient[0].PatientName),
}))
"#;

/// Compares two DICOMDIRs record by record: same tree (each record under
/// the same parent), same record types, same keys and values, the record
/// offsets and Image Type (which dcmmkdir adds) aside.
const COMPARE_SCRIPT: &str = r#"
import sys
import pydicom

SKIP = {0x00041400, 0x00041410, 0x00041420, 0x00080008}

def records(path):
    ds = pydicom.dcmread(path)
    by_offset = {r.seq_item_tell: r for r in ds.DirectoryRecordSequence}
    out = {}
    def walk(offset, parent):
        while offset:
            r = by_offset[offset]
            kind = r.DirectoryRecordType
            key = {
                "PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
                "SERIES": "SeriesInstanceUID",
            }.get(kind, "ReferencedSOPInstanceUIDInFile")
            me = (kind, str(r[key].value))
            values = {e.tag: str(e.value) for e in r if e.tag not in SKIP}
            out[me] = (parent, values)
            walk(r.OffsetOfReferencedLowerLevelDirectoryEntity, me)
            offset = r.OffsetOfTheNextDirectoryRecord
    walk(ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity, None)
    assert len(out) == len(ds.DirectoryRecordSequence), "records unreachable"
    return out

ours, theirs = records(sys.argv[1]), records(sys.argv[2])
assert ours.keys() == theirs.keys(), (ours.keys() ^ theirs.keys())
CHARSET = pydicom.tag.Tag(0x00080005)
for k in ours:
    # dcmmkdir copies the file's Specific Character Set into records with
    # SH/LO keys even when their values are ASCII; we write it only when a
    # value needs it (PS3.3 F.5: Type 1C).
    mine, dcmtk = ours[k][1], dict(theirs[k][1])
    if CHARSET not in mine and all(v.isascii() for v in mine.values()):
        dcmtk.pop(CHARSET, None)
    assert (ours[k][0], mine) == (theirs[k][0], dcmtk), (k, ours[k], theirs[k])
print(len(ours), "records")
"#;

/// Records every audit event; fails every record when `fail` is set.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<AuditEvent>>,
    fail: bool,
}

#[async_trait]
impl AuditSink for Recorder {
    async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.fail {
            return Err(AuditError::Write("disk full".into()));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_zip_is_a_file_set_that_pydicom_and_dcmtk_read() {
    for (tool, why) in [
        ("/usr/bin/curl", "curl is not installed"),
        (
            "/usr/bin/dcmdump",
            "DCMTK is not installed (apt-get install dcmtk)",
        ),
    ] {
        if !Path::new(tool).exists() {
            skip_or_fail(why);
            return;
        }
    }
    let probe = std::process::Command::new(python())
        .args(["-c", "import pydicom.fileset"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip_or_fail(&format!("{} cannot import pydicom", python()));
        return;
    }
    let archive = loaded_archive().await;
    let audit = Arc::new(Recorder::default());
    archive.set_audit(audit.clone());
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Every sample study: CT, MR (RLE), US (JPEG, multi-frame),
    // CR, and a prior of the same patient.
    let mut names: Vec<String> = manifest()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(&f["study"]))
        .collect();
    names.dedup();
    // HEAD: the headers of the download, nothing exported nor audited.
    let study = s(&files_of(&names[0])[0]["study_instance_uid"]);
    let head = tokio::process::Command::new("/usr/bin/curl")
        .args([
            "-sS",
            "-I",
            "--max-time",
            "30",
            "-H",
            "Accept: application/zip",
        ])
        .arg(format!("http://{addr}/dicom-web/studies/{study}"))
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/zip\r\n"), "{head}");
    let head_length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().to_owned());
    assert!(audit.events.lock().unwrap().is_empty());
    for (n, name) in names.iter().enumerate() {
        let length = check_study_zip(&addr, name).await;
        if n == 0 {
            assert_eq!(head_length, Some(length.to_string()));
        }
        // One Export record per download, naming the study and the patient.
        let files = files_of(name);
        let events = audit.events.lock().unwrap().clone();
        assert_eq!(events.len(), n + 1);
        let e = &events[n];
        assert_eq!(e.id, AuditEventId::Export);
        let study = s(&files[0]["study_instance_uid"]);
        assert!(e.objects.contains(&AuditObject::Study { uid: study }));
        assert!(e.objects.iter().any(
            |o| matches!(o, AuditObject::Patient { id, .. } if *id == s(&files[0]["patient_id"]))
        ));
    }
    server.abort();
}

/// Downloads one sample study's ZIP with curl and checks it with Python
/// and DCMTK; returns its length.
async fn check_study_zip(addr: &std::net::SocketAddr, name: &str) -> u64 {
    let files = files_of(name);
    let study = s(&files[0]["study_instance_uid"]);
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("study.zip");
    let head_path = dir.path().join("headers");
    let curl = tokio::process::Command::new("/usr/bin/curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-H",
            "Accept: application/zip",
            "-o",
        ])
        .arg(&zip_path)
        .arg("-D")
        .arg(&head_path)
        .arg(format!("http://{addr}/dicom-web/studies/{study}"))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let head = std::fs::read_to_string(&head_path)
        .unwrap()
        .to_ascii_lowercase();
    let zip_len = std::fs::metadata(&zip_path).unwrap().len();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/zip\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {zip_len}\r\n")),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store\r\n"), "{head}");
    assert!(
        head.contains(&format!(
            "content-disposition: attachment; filename=\"{study}.zip\"\r\n"
        )),
        "{head}"
    );

    // Python: zipfile, then pydicom's FileSet over the extracted tree.
    let script = dir.path().join("check.py");
    std::fs::write(&script, PEER_SCRIPT).unwrap();
    let tree = dir.path().join("tree");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .arg(&zip_path)
        .arg(&tree)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("python timed out")
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"], files.len() + 1);
    assert_eq!(report["patient_id"], s(&files[0]["patient_id"]));
    assert_eq!(report["patient_name"], s(&files[0]["patient_name"]));
    // Every instance is there exactly as stored (the sample file's bytes).
    let want: BTreeMap<String, String> = files
        .iter()
        .map(|f| (s(&f["sop_instance_uid"]), s(&f["sha256"])))
        .collect();
    let got: BTreeMap<String, String> = report["instances"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), s(v)))
        .collect();
    assert_eq!(got, want);

    // DCMTK: dcmdump parses the DICOMDIR.
    let dicomdir = tree.join("DICOMDIR");
    let dump = std::process::Command::new("/usr/bin/dcmdump")
        .arg(&dicomdir)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(text.matches("CS [IMAGE]").count(), files.len(), "{text}");
    assert!(text.contains("=MediaStorageDirectoryStorage"), "{text}");
    // DCMTK's dcmmkdir builds its own DICOMDIR from the extracted files;
    // ours must hold the same records with the same keys.
    assert_eq!(
        compare_with_dcmmkdir(&tree, &dir.path().join("REFDIR")),
        format!("{} records", files.len() + 3)
    );
    zip_len
}

/// Writes a Basic Text SR (verified) and a Key Object Selection into the
/// study of the CR sample given, as `sr.dcm` and `ko.dcm` in the folder
/// given.
const DOCUMENTS_SCRIPT: &str = r#"
import os, sys
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

cr = pydicom.dcmread(sys.argv[1])
out = sys.argv[2]

def code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c

def document(sop_class, modality, number, name):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(prefix="2.25.")
    for kw in ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
               "AccessionNumber", "ReferringPhysicianName"]:
        setattr(ds, kw, cr.get(kw, ""))
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid(prefix="2.25.")
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20260316", "101500"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ContentSequence = []
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds

sr = document("1.2.840.10008.5.1.4.1.1.88.11", "SR", 90, "sr")
sr.ConceptNameCodeSequence = [code("18748-4", "LN", "Chẩn đoán hình ảnh")]
sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "VERIFIED"
observer = Dataset()
observer.VerificationDateTime = "20260316103000"
observer.VerifyingObserverName = "Tran^Binh"
observer.VerifyingOrganization = "BV"
sr.VerifyingObserverSequence = [observer]
sr.save_as(os.path.join(out, "sr.dcm"), enforce_file_format=True)

ko = document("1.2.840.10008.5.1.4.1.1.88.59", "KO", 91, "ko")
ko.ConceptNameCodeSequence = [code("113000", "DCM", "Of Interest")]
ko.save_as(os.path.join(out, "ko.dcm"), enforce_file_format=True)
"#;

/// An SR and a key object selection get SR DOCUMENT and KEY OBJECT DOC
/// records with the keys DCMTK's dcmmkdir gives them.
#[tokio::test]
async fn documents_get_their_own_record_types() {
    if !Path::new("/usr/bin/dcmmkdir").exists() {
        skip_or_fail("DCMTK is not installed (apt-get install dcmtk)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cr = &files_of("cr-chest")[0];
    let made = std::process::Command::new(python())
        .args(["-c", DOCUMENTS_SCRIPT])
        .arg(samples_dir().join(s(&cr["path"])))
        .arg(dir.path())
        .output()
        .unwrap();
    if !made.status.success() {
        skip_or_fail(&format!(
            "{} cannot write an SR with pydicom: {}",
            python(),
            String::from_utf8_lossy(&made.stderr)
        ));
        return;
    }
    let archive = loaded_archive().await;
    for f in ["sr.dcm", "ko.dcm"] {
        let file = tokio::fs::File::open(dir.path().join(f)).await.unwrap();
        archive.store(file).await.unwrap();
    }
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let study = s(&cr["study_instance_uid"]);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}"),
        &[("accept", "application/zip")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(dir.path().join("study.zip"), &r.body).unwrap();
    let unzip = std::process::Command::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(dir.path().join("study.zip"))
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    // Patient, study, the CR series and image, two document series and
    // their records.
    assert_eq!(
        compare_with_dcmmkdir(&tree, &dir.path().join("REFDIR")),
        "8 records"
    );
    let dump = std::process::Command::new("/usr/bin/dcmdump")
        .arg(tree.join("DICOMDIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("CS [SR DOCUMENT]"), "{text}");
    assert!(text.contains("CS [KEY OBJECT DOC]"), "{text}");
}

/// Has DCMTK's dcmmkdir build its own DICOMDIR (at `reference`) from the
/// files of the extracted `tree` and compares it with ours (the tree's
/// `DICOMDIR`) record by record; returns the comparison's "N records".
fn compare_with_dcmmkdir(tree: &Path, reference: &Path) -> String {
    let mkdir = std::process::Command::new("/usr/bin/dcmmkdir")
        .current_dir(tree)
        .args(["-q", "+r", "-Nxc", "-Nec", "-Nrc", "+D"])
        .arg(reference)
        .arg("DICOM")
        .output()
        .unwrap();
    assert!(
        mkdir.status.success(),
        "dcmmkdir: {}",
        String::from_utf8_lossy(&mkdir.stderr)
    );
    let out = std::process::Command::new(python())
        .args(["-c", COMPARE_SCRIPT])
        .arg(tree.join("DICOMDIR"))
        .arg(reference)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The ZIP's entry names, from its central directory, read with Python.
fn entry_names(zip: &[u8]) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, zip).unwrap();
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
             assert z.testzip() is None; print('\\n'.join(z.namelist()))",
        ])
        .arg(&path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[tokio::test]
async fn zip_only_when_asked_and_series_too() {
    let archive = loaded_archive().await;
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let mr = files_of("mr-head");
    let study = s(&mr[0]["study_instance_uid"]);
    let series = s(&mr[0]["series_instance_uid"]);
    let in_series = mr
        .iter()
        .filter(|f| s(&f["series_instance_uid"]) == series)
        .count();

    // The default stays multipart/related, wildcards too.
    for accept in [None, Some("*/*"), Some("*/*, application/zip")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let r = get(&app, &format!("/dicom-web/studies/{study}"), &headers).await;
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("multipart/related"));
    }

    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/{series}"),
        &[("accept", "application/zip")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").unwrap(), "application/zip");
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    assert_eq!(&r.body[..4], b"PK\x03\x04");
    // The DICOMDIR comes first (its name follows the local header).
    assert_eq!(&r.body[30..38], b"DICOMDIR");
    if let Some(names) = entry_names(&r.body) {
        assert_eq!(names.len(), in_series + 1);
        assert!(names[1..]
            .iter()
            .all(|n| n.starts_with("DICOM/ST000001/SE000001/IM")));
    }

    // A plain link: the accept query parameter (PS3.18 8.3.3.1).
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}?accept=application%2Fzip"),
        &[("accept", "text/html,*/*;q=0.8")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "application/zip");
    if let Some(names) = entry_names(&r.body) {
        assert_eq!(names.len(), mr.len() + 1);
    }

    let zip = [("accept", "application/zip")];
    let r = get(&app, "/dicom-web/studies/1.2.3.4.5.6", &zip).await;
    assert_eq!(r.status, 404);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/1.2.3.4"),
        &zip,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = get(&app, "/dicom-web/studies/1.2.abc", &zip).await;
    assert_eq!(r.status, 400);
    let r = get(&app, "/dicom-web/studies/1..2", &zip).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn no_download_when_the_audit_record_fails() {
    let archive = loaded_archive().await;
    archive.set_audit(Arc::new(Recorder {
        fail: true,
        ..Recorder::default()
    }));
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let study = s(&files_of("cr-chest")[0]["study_instance_uid"]);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}"),
        &[("accept", "application/zip")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(!r.body.starts_with(b"PK"));
}

/// A principal scoped to some studies (a share link) gets the ZIP of those
/// only; the audit record names it.
#[tokio::test]
async fn a_scoped_principal_downloads_only_its_studies() {
    use pacs_core::access::{PrincipalKind, StudyScope};
    let archive = loaded_archive().await;
    let audit = Arc::new(Recorder::default());
    archive.set_audit(audit.clone());
    let ct = s(&files_of("ct-phantom")[0]["study_instance_uid"]);
    let mr = s(&files_of("mr-head")[0]["study_instance_uid"]);
    let principal = pacs_core::Principal {
        kind: PrincipalKind::Share,
        name: "share-7f3a".into(),
        role: None,
        address: Some("192.0.2.7".parse().unwrap()),
        scope: StudyScope::Studies([pacs_core::Uid::parse(&ct).unwrap()].into()),
    };
    let app = app(archive, dicomweb::DicomWebConfig::default()).layer(axum::Extension(principal));
    let zip = [("accept", "application/zip")];
    let r = get(&app, &format!("/dicom-web/studies/{mr}"), &zip).await;
    assert_eq!(r.status, 404);
    assert!(audit.events.lock().unwrap().is_empty());
    let r = get(&app, &format!("/dicom-web/studies/{ct}"), &zip).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "application/zip");
    let events = audit.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let requestor = events[0].actors.iter().find(|a| a.requestor).unwrap();
    assert_eq!(requestor.user_id, "share-7f3a");
    assert_eq!(requestor.address.as_deref(), Some("192.0.2.7"));
}

/// A blob store that counts the blob streams opened and still open.
struct Counting {
    inner: Arc<dyn BlobStore>,
    opened: Arc<AtomicUsize>,
    open_now: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl BlobStore for Counting {
    async fn writer(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError> {
        self.inner.writer(key).await
    }
    async fn get(
        &self,
        key: &BlobKey,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError> {
        let stream = self.inner.get(key).await?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        let now = self.open_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_open.fetch_max(now, Ordering::SeqCst);
        let guard = OpenGuard(self.open_now.clone());
        Ok(stream
            .map(move |c| {
                let _ = &guard;
                c
            })
            .boxed())
    }
    async fn get_range(
        &self,
        key: &BlobKey,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, PortError> {
        self.inner.get_range(key, range).await
    }
    async fn size(&self, key: &BlobKey) -> Result<u64, PortError> {
        self.inner.size(key).await
    }
    async fn rename(&self, from: &BlobKey, to: &BlobKey) -> Result<(), PortError> {
        self.inner.rename(from, to).await
    }
    async fn delete(&self, key: &BlobKey) -> Result<(), PortError> {
        self.inner.delete(key).await
    }
    async fn list(&self) -> Result<Vec<BlobKey>, PortError> {
        self.inner.list().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A copy of a Part 10 file with another SOP Instance UID of the same
/// length (both occurrences, meta and data set, replaced).
fn with_sop(bytes: &[u8], sop: &str, n: usize) -> (Vec<u8>, String) {
    let new = format!("{}{}", &sop[..sop.len() - 3], 100 + n);
    let mut out = bytes.to_vec();
    let (old, new_b) = (sop.as_bytes(), new.as_bytes());
    let mut i = 0;
    while i + old.len() <= out.len() {
        if &out[i..i + old.len()] == old {
            out[i..i + old.len()].copy_from_slice(new_b);
            i += old.len();
        } else {
            i += 1;
        }
    }
    (out, new)
}

/// Fifty instances are read one after the other, as the body is sent:
/// the answer starts before the later instances are opened, and at most
/// one instance is open at a time, so memory does not grow with the
/// study (the central directory aside).
#[tokio::test]
async fn instances_stream_one_at_a_time() {
    let opened = Arc::new(AtomicUsize::new(0));
    let open_now = Arc::new(AtomicUsize::new(0));
    let most_open = Arc::new(AtomicUsize::new(0));
    let blobs = Counting {
        inner: Arc::new(storage::ObjectBlobStore::open("memory://").unwrap()),
        opened: opened.clone(),
        open_now: open_now.clone(),
        most_open: most_open.clone(),
    };
    let index = storage::SledIndex::temporary().unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    let ct = &files_of("ct-phantom")[0];
    let bytes = std::fs::read(samples_dir().join(s(&ct["path"]))).unwrap();
    let mut sops = Vec::new();
    for n in 0..50 {
        let (copy, sop) = with_sop(&bytes, &s(&ct["sop_instance_uid"]), n);
        archive.store(std::io::Cursor::new(copy)).await.unwrap();
        sops.push(sop);
    }
    assert_eq!(opened.load(Ordering::SeqCst), 0);
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let req = Request::get(format!(
        "/dicom-web/studies/{}",
        s(&ct["study_instance_uid"])
    ))
    .header("accept", "application/zip")
    .body(Body::empty())
    .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"PK\x03\x04"));
    // The producer runs at most a few chunks ahead of the client (each
    // instance is at least three: header, data, descriptor), whatever the
    // timing.
    assert!(
        opened.load(Ordering::SeqCst) <= 3,
        "{} instances opened before the client read more than the first chunk",
        opened.load(Ordering::SeqCst)
    );
    let mut all = first.to_vec();
    while let Some(frame) = body.frame().await {
        all.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(all.len(), length);
    assert_eq!(opened.load(Ordering::SeqCst), 50);
    assert_eq!(most_open.load(Ordering::SeqCst), 1);
    assert_eq!(open_now.load(Ordering::SeqCst), 0);
    if let Some(names) = entry_names(&all) {
        assert_eq!(names.len(), 51);
    }
}
