//! End to end with a real third-party client: Python `dicomweb-client`
//! (pinned 0.61.2) against the router served over TCP on 127.0.0.1.
//!
//! Python comes from `PACS_PYTHON` (default `python3`). Without it or
//! without `dicomweb_client`, the test prints SKIPPED, or fails when
//! `PACS_REQUIRE_PEERS` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const SCRIPT: &str = r#"
import sys
import pydicom
from dicomweb_client.api import DICOMwebClient

url, ct_path, us_study, us_series, us_sop = sys.argv[1:6]
client = DICOMwebClient(url=url)

studies = client.search_for_studies()
assert len(studies) == 5, len(studies)
fuzzy = client.search_for_studies(search_filters={"PatientName": "nguyen"}, fuzzymatching=True)
assert len(fuzzy) == 2, fuzzy
# No match is 204 (PS3.18 Table 10.6.3-1): the client reads it as no rows.
assert client.search_for_studies(search_filters={"PatientID": "NO-SUCH-ID"}) == []

ct = pydicom.dcmread(ct_path)
study, series, sop = ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
series_list = client.search_for_series(study)
assert len(series_list) == 1
instances = client.search_for_instances(study, series, limit=5)
assert len(instances) == 5

meta = client.retrieve_series_metadata(study, series)
assert len(meta) == 24, len(meta)
for m in meta:
    ds = pydicom.Dataset.from_json(m)
    assert ds.StudyInstanceUID == study

inst = client.retrieve_instance(study, series, sop)
assert inst.SOPInstanceUID == sop
assert inst.PixelData == ct.PixelData
lossless = client.retrieve_instance(
    study, series, sop,
    media_types=(("application/dicom", "1.2.840.10008.1.2.4.70"),),
)
assert lossless.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
assert lossless.SOPInstanceUID == sop

frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
assert len(frames) == 1 and frames[0] == ct.PixelData, len(frames[0])

us_frames = client.retrieve_instance_frames(
    us_study, us_series, us_sop, frame_numbers=[1, 2],
    media_types=("image/jpeg",),
)
assert len(us_frames) == 2 and us_frames[0][:2] == b"\xff\xd8"

ct.SOPInstanceUID = pydicom.uid.generate_uid(prefix="2.25.")
ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
result = client.store_instances([ct])
refs = result.ReferencedSOPSequence
assert len(refs) == 1 and refs[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
stored = client.retrieve_instance(study, series, ct.SOPInstanceUID)
assert stored.SOPInstanceUID == ct.SOPInstanceUID
print("dicomweb-client: all checks passed")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_against_a_real_server() {
    let probe = tokio::process::Command::new(python())
        .args(["-c", "import dicomweb_client, pydicom"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => {}
        _ => {
            skip_or_fail(&format!(
                "{} cannot import dicomweb_client (pip install dicomweb-client==0.61.2)",
                python()
            ));
            return;
        }
    }
    let archive = loaded_archive().await;
    let app = app(archive, dicomweb::DicomWebConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let ct = &files_of("ct-phantom")[0];
    let us = &files_of("us-cine")[0];
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .arg(format!("http://{addr}/dicom-web"))
        .arg(samples_dir().join(s(&ct["path"])))
        .arg(s(&us["study_instance_uid"]))
        .arg(s(&us["series_instance_uid"]))
        .arg(s(&us["sop_instance_uid"]))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("dicomweb-client run timed out")
        .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dicomweb-client failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
