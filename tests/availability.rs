//! Availability notifications through the real `pacs` binary over TCP:
//! a pynetdicom modality performs a procedure (MPPS N-CREATE, C-STORE,
//! MPPS N-SET COMPLETED; `tests/peers/availability_peers.py`), a
//! pynetdicom Instance Availability Notification SCP receives the IAN
//! N-CREATE, and a small MLLP listener here plays the HIS (rejecting the
//! first "images available" message with AR, accepting the next). Then the
//! study-stable trigger, with the IAN peer down until after a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SCRIPT: &str = "availability_peers.py";

/// The pynetdicom IAN SCP (AE title RIS), waiting (bounded) for one
/// N-CREATE.
fn ian_scp(python: &str, port: u16, out: &Path) -> PeerListener {
    let args = [
        "ian".to_owned(),
        port.to_string(),
        out.to_string_lossy().into(),
        "120".into(),
    ];
    PeerListener::start(python, SCRIPT, &args, out)
}

fn header(file: &str) -> pacs_core::dicom::Header {
    let bytes = std::fs::read(file).unwrap();
    pacs_core::dicom::parse_part10(&bytes, true, &pacs_core::Limits::default()).unwrap()
}

fn of_kind<'a>(jobs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    jobs.iter().filter(|j| j["kind"] == kind).collect()
}

fn post_order(port: u16, body: &Value) {
    let payload = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
}

fn config(dir: &Path, ian_port: u16, extra: &str) -> PathBuf {
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "job_retry_base = 1\njob_retry_max = 2\nian_destinations = [\"RIS\"]\n{extra}\n\
             [[remote_ae]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = 1\n\
             [[remote_ae]]\nae_title = \"RIS\"\nhost = \"127.0.0.1\"\nport = {ian_port}\n"
        ),
    )
    .unwrap();
    cfg
}

/// MPPS COMPLETED: the IAN SCP hears of the MPPS and every stored
/// instance; the HIS gets an ORU^R01 with the order's accession and the
/// viewer link, rejects it once (AR: retried) and accepts it (AA: done).
#[test]
fn a_completed_mpps_is_announced_to_the_ian_scp_and_the_his() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ian_port = free_port();
    let (his_port, messages) = his(&["AR", "AA"]);
    let cfg = config(
        tmp.path(),
        ian_port,
        &format!(
            "[hl7_out]\naddress = \"127.0.0.1:{his_port}\"\nreceiving_application = \"HIS\"\n\
             viewer_url = \"https://pacs.bv.vn/\"\n"
        ),
    );
    let server = Server::start(
        &tmp.path().join("data"),
        &["--config", &cfg.to_string_lossy()],
    );
    let files = ct_files(3);
    let study = header(&files[0]).dataset.uid(0x0020_000D).unwrap();
    post_order(
        server.http_port,
        &json!({
            "patient_id": "079123456789",
            "issuer_of_patient_id": "CCCD",
            "patient_name": "Nguyễn^Thị Hồng",
            "accession_number": "ACC-IAN-1",
            "sps_id": "SPS-IAN-1",
            "placer_order_number": "PL-77",
            "study_instance_uid": study,
            "modality": "CT",
            "station_ae_title": "MODALITY",
            "start_date": "20261206",
            "start_time": "0930",
        }),
    );
    let scp = ian_scp(&python, ian_port, &tmp.path().join("ian.json"));
    let mut args = vec![
        "exam".to_owned(),
        server.dimse_port.to_string(),
        "ACC-IAN-1".into(),
        "SPS-IAN-1".into(),
        "--files".into(),
    ];
    args.extend(files.iter().cloned());
    let out = peer_json(&python, SCRIPT, &args);
    assert_eq!(out["create"], 0, "{out}");
    assert_eq!(out["store"], json!([0, 0, 0]), "{out}");
    assert_eq!(out["set_completed"], 0, "{out}");

    let ian = scp.result();
    assert_eq!(ian["calling_ae"], "PACS", "{ian}");
    assert_eq!(ian["sop_class"], "1.2.840.10008.5.1.4.33", "{ian}");
    assert_eq!(ian["study"], study, "{ian}");
    assert_eq!(ian["accession"], "ACC-IAN-1", "{ian}");
    assert_eq!(
        ian["pps"],
        json!([["1.2.840.10008.3.1.2.3.3", out["mpps_uid"]]]),
        "{ian}"
    );
    let series = ian["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{ian}");
    assert_eq!(
        series[0]["series"],
        header(&files[0]).dataset.uid(0x0020_000E).unwrap()
    );
    let mut got: Vec<String> = series[0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["availability"], "ONLINE", "{i}");
            assert_eq!(i["retrieve_ae"], "PACS", "{i}");
            i["instance"].as_str().unwrap().to_owned()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = files
        .iter()
        .map(|f| header(f).meta.media_storage_sop_instance_uid)
        .collect();
    want.sort();
    assert_eq!(got, want);

    // The HIS: rejected once, then acknowledged.
    let first = messages.recv_timeout(Duration::from_secs(90)).unwrap();
    let second = messages.recv_timeout(Duration::from_secs(90)).unwrap();
    for m in [&first, &second] {
        assert_eq!(field(m, "MSH", 9, 1), "ORU", "{m}");
        assert_eq!(field(m, "MSH", 9, 2), "R01", "{m}");
        assert_eq!(field(m, "MSH", 12, 1), "2.5.1", "{m}");
        assert_eq!(field(m, "MSH", 18, 1), "UNICODE UTF-8", "{m}");
        assert_eq!(field(m, "MSH", 5, 1), "HIS", "{m}");
        assert_eq!(field(m, "PID", 3, 1), "079123456789", "{m}");
        assert_eq!(field(m, "PID", 5, 1), "Nguyễn", "{m}");
        assert_eq!(field(m, "OBR", 2, 1), "PL-77", "{m}");
        assert_eq!(field(m, "OBR", 18, 1), "ACC-IAN-1", "{m}");
        assert_eq!(field(m, "OBR", 20, 1), "SPS-IAN-1", "{m}");
        assert!(
            m.contains(&format!(
                "OBX|1|RP|VIEWER^Viewer link^L||https://pacs.bv.vn/viewer?StudyInstanceUIDs={study}^"
            )),
            "{m}"
        );
        assert!(m.contains("||IMAGES AVAILABLE||"), "{m}");
    }
    assert_ne!(field(&first, "MSH", 10, 1), field(&second, "MSH", 10, 1));
    let listed = wait_jobs(server.http_port, "jobs not done", |j| {
        of_kind(j, "hl7-images-available")
            .first()
            .is_some_and(|h| h["state"] == "done")
            && of_kind(j, "ian")
                .first()
                .is_some_and(|i| i["state"] == "done")
    });
    let hl7 = of_kind(&listed, "hl7-images-available");
    assert_eq!(hl7.len(), 1, "{listed:#?}");
    assert_eq!(hl7[0]["attempts"], 2, "{listed:#?}");
    assert_eq!(of_kind(&listed, "ian").len(), 1, "{listed:#?}");
    // No study-stable trigger configured: no check jobs.
    assert!(of_kind(&listed, "study-stable").is_empty(), "{listed:#?}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(messages.try_recv().is_err(), "a message too many");
}

/// The study-stable trigger: instances stored without MPPS are announced
/// once the study is left alone for `ian_stable_after_secs`. The IAN SCP
/// is down: the job fails and waits; after a restart of pacs with the SCP
/// up, the IAN arrives, listing the whole study and no MPPS.
#[test]
fn a_stable_study_is_announced_after_its_peer_comes_back_across_a_restart() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ian_port = free_port();
    let cfg = config(tmp.path(), ian_port, "ian_stable_after_secs = 2");
    let server = Server::start(&data, &["--config", &cfg.to_string_lossy()]);
    let files = ct_files(2);
    let mut args = vec![
        "store".to_owned(),
        server.dimse_port.to_string(),
        "--files".into(),
    ];
    args.extend(files.iter().cloned());
    let out = peer_json(&python, SCRIPT, &args);
    assert_eq!(out["store"], json!([0, 0]), "{out}");
    // One check for the study (not one per instance), then an IAN job
    // that fails: nobody listens at RIS.
    let listed = wait_jobs(server.http_port, "no failed IAN attempt", |j| {
        of_kind(j, "ian")
            .first()
            .is_some_and(|i| i["attempts"].as_u64() >= Some(1) && !i["last_error"].is_null())
    });
    // The checks (the first may find the last instance too recent and
    // set another) are done, and made one notice.
    let checks = of_kind(&listed, "study-stable");
    assert!(
        !checks.is_empty() && checks.iter().all(|c| c["state"] == "done"),
        "{listed:#?}"
    );
    assert_eq!(of_kind(&listed, "ian").len(), 1, "{listed:#?}");
    let failed = of_kind(&listed, "ian")[0];
    assert_ne!(failed["state"], "done");
    assert!(
        failed["last_error"].as_str().unwrap().contains("connect"),
        "{failed}"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    let scp = ian_scp(&python, ian_port, &tmp.path().join("ian.json"));
    let server = Server::start(&data, &["--config", &cfg.to_string_lossy()]);
    let ian = scp.result();
    let study = header(&files[0]).dataset.uid(0x0020_000D).unwrap();
    assert_eq!(ian["study"], study, "{ian}");
    assert_eq!(ian["has_pps_sequence"], true, "{ian}");
    assert_eq!(ian["pps"], json!([]), "{ian}");
    let mut got: Vec<String> = ian["series"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = files
        .iter()
        .map(|f| header(f).meta.media_storage_sop_instance_uid)
        .collect();
    want.sort();
    assert_eq!(got, want, "{ian}");
    let listed = wait_jobs(server.http_port, "IAN job not done", |j| {
        of_kind(j, "ian")
            .first()
            .is_some_and(|i| i["state"] == "done")
    });
    assert_eq!(of_kind(&listed, "ian")[0]["id"], failed["id"]);
    assert_eq!(of_kind(&listed, "ian").len(), 1, "{listed:#?}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
