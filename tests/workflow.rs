//! The workflow N-services through the real `pacs` binary over TCP, with
//! pynetdicom as the modality (`tests/peers/workflow_modality.py`): MPPS
//! N-CREATE / N-SET and its final states; Storage Commitment reported on
//! the requestor's association, on a new association to its
//! `[[remote_ae]]` (with a corrupted blob in the failure list), and
//! delivered by the durable job queue after the report AE was unreachable
//! and the server restarted.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SCRIPT: &str = "workflow_modality.py";

/// Runs the modality script to completion (bounded) and parses its JSON.
fn modality(python: &str, args: &[String]) -> Value {
    peer_json(python, SCRIPT, args)
}

/// A Storage Commitment SCU waiting (bounded) for the report; it has
/// printed that it listens when this returns.
struct Listener(PeerListener);

impl Listener {
    fn start(python: &str, port: u16, out: &Path) -> Listener {
        let args = [
            "listen".to_owned(),
            port.to_string(),
            out.to_string_lossy().into(),
            "90".into(),
        ];
        Listener(PeerListener::start(python, SCRIPT, &args, out))
    }

    /// The report it received (waits for the script to end, bounded).
    fn report(self) -> Value {
        self.0.result()
    }
}

/// A config listing the modality at `port`, with quick retries.
fn config(dir: &Path, modality_port: u16, landing_log: bool) -> PathBuf {
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "landing_log = {landing_log}\njob_retry_base = 1\njob_retry_max = 2\n\
             [[remote_ae]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = {modality_port}\n"
        ),
    )
    .unwrap();
    cfg
}

fn start(data: &Path, cfg: &Path) -> Server {
    Server::start(data, &["--config", &cfg.to_string_lossy()])
}

fn sop_of(file: &str) -> String {
    let bytes = std::fs::read(file).unwrap();
    let header =
        pacs_core::dicom::parse_part10(&bytes, true, &pacs_core::Limits::default()).unwrap();
    header.meta.media_storage_sop_instance_uid
}

/// The stage and image count of exam `accession` on the technologist's
/// page for 2026-12-06.
fn exam_stage(port: u16, accession: &str) -> (String, usize) {
    let r = http(port, "GET", "/technologist?date=20261206", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let row = page
        .split("<tr class=\"exam\"")
        .find(|row| row.contains(&format!("data-accession=\"{accession}\"")))
        .unwrap_or_else(|| panic!("{accession} not on the page: {page}"));
    let stage = row.split("data-stage=\"").nth(1).unwrap();
    let images = row.split("<td class=\"images\">").nth(1).unwrap();
    (
        stage[..stage.find('"').unwrap()].to_owned(),
        images[..images.find('<').unwrap()].parse().unwrap(),
    )
}

fn jobs(server: &Server) -> Vec<Value> {
    queue_jobs(server.http_port)
}

/// The audit messages (XML) recorded under `data`, with their event ID
/// and action code.
fn audit_messages(data: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(data.join("audit")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec: Value = serde_json::from_str(line).unwrap();
            let msg = rec["msg"].as_str().unwrap_or("").to_owned();
            let attr = |name: &str| {
                msg.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("")
                    .to_owned()
            };
            let (id, action) = (
                msg.split("<EventID csd-code=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("")
                    .to_owned(),
                attr("EventActionCode"),
            );
            out.push((id, action, msg));
        }
    }
    out
}

/// The Instances Transferred records of Storage Commitment reports.
fn commitment_records(data: &Path) -> Vec<String> {
    audit_messages(data)
        .into_iter()
        .filter(|(id, action, msg)| {
            id == "110104" && action == "R" && msg.contains("storage commitment")
        })
        .map(|(_, _, m)| m)
        .collect()
}

fn commit_args(port: u16, files: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["commit".to_owned(), port.to_string(), "--files".to_owned()];
    args.extend(files.iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn mpps_create_set_and_final_states() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1, true);
    let server = start(&tmp.path().join("data"), &cfg);
    let out = modality(&python, &["mpps".into(), server.dimse_port.to_string()]);
    assert_eq!(out["create"], 0x0000, "{out}");
    assert_eq!(out["duplicate"], 0x0111, "{out}");
    assert_eq!(out["create_completed"], 0x0106, "{out}");
    assert_eq!(out["set_in_progress"], 0x0000, "{out}");
    assert_eq!(out["set_completed"], 0x0000, "{out}");
    assert_eq!(out["set_after_completed"], 0x0110, "{out}");
    assert!(
        out["set_after_completed_comment"]
            .as_str()
            .unwrap()
            .contains("COMPLETED"),
        "{out}"
    );
    assert_eq!(out["set_unknown"], 0x0112, "{out}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    // The accepted N-CREATE and the two accepted N-SETs are Procedure
    // Records (110111), naming the study of the step; refusals are not.
    let records: Vec<(String, String, String)> = audit_messages(&tmp.path().join("data"))
        .into_iter()
        .filter(|(id, _, _)| id == "110111")
        .collect();
    let actions: Vec<&str> = records.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(actions, ["C", "U", "U"], "{records:?}");
    for (_, _, m) in &records {
        assert!(
            m.contains("ParticipantObjectID=\"1.2.826.0.1.3680043.2.1125.1\""),
            "{m}"
        );
        assert!(m.contains(" UserID=\"MODALITY\""), "{m}");
    }
}

#[test]
fn commitment_report_on_the_same_association() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), free_port(), true);
    let server = start(&tmp.path().join("data"), &cfg);
    let files = ct_files(2);
    let unknown = "1.2.826.0.1.3680043.2.1125.404";
    let out = modality(
        &python,
        &commit_args(
            server.dimse_port,
            &files,
            &["--unknown", unknown, "--same-association"],
        ),
    );
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["report"];
    assert_eq!(report["transaction_uid"], out["transaction_uid"], "{out}");
    assert_eq!(report["event_type"], 2, "{out}");
    let committed: Vec<String> = serde_json::from_value(report["committed"].clone()).unwrap();
    assert_eq!(committed, vec![sop_of(&files[0]), sop_of(&files[1])]);
    assert_eq!(report["failed"], serde_json::json!([[unknown, 0x0112]]));
    // Delivered here, so the queue does not send it again.
    let listed = jobs(&server);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "done");
    assert_eq!(listed[0]["attempts"], 0);
    // It keeps what the report said (payload version 2).
    assert_eq!(listed[0]["payload_version"], 2, "{listed:?}");
    server.stop();
    // The report sent is audited (Instances Transferred, Read), with its
    // counts and a minor failure for the unknown instance.
    let records = commitment_records(&tmp.path().join("data"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("2 committed, 1 failed"),
        "{}",
        records[0]
    );
    assert!(
        records[0].contains("EventOutcomeIndicator=\"4\""),
        "{}",
        records[0]
    );
}

#[test]
fn commitment_report_on_a_new_association_lists_a_corrupted_blob() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files = ct_files(2);
    let imported = pacs(&data, &["import", &files[0], &files[1]]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    // Damage one stored object in place (same size, one byte flipped).
    let damaged = sop_of(&files[1]);
    let blob = tree(&data.join("objects"))
        .into_iter()
        .find(|p| p.ends_with(&format!("{damaged}.dcm")))
        .unwrap();
    let blob = data.join("objects").join(blob);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&blob, bytes).unwrap();

    let modality_port = free_port();
    let cfg = config(tmp.path(), modality_port, false);
    let server = start(&data, &cfg);
    // The exam is on the technologist's page through its order.
    let studies = http(server.http_port, "GET", "/dicom-web/studies", None, None).json();
    assert_eq!(studies.as_array().map(Vec::len), Some(1), "{studies}");
    let order = serde_json::json!({
        "patient_id": "CS-1",
        "patient_name": "Lê^Văn^Cường",
        "accession_number": "CMT-1",
        "modality": "CT",
        "station_ae_title": "MODALITY",
        "start_date": "20261206",
        "start_time": "0800",
        "study_instance_uid": studies[0]["0020000D"]["Value"][0],
    });
    let r = http(
        server.http_port,
        "POST",
        "/api/v1/orders",
        None,
        Some(&order),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        exam_stage(server.http_port, "CMT-1"),
        ("images_received".into(), 2)
    );
    let listener = Listener::start(&python, modality_port, &tmp.path().join("report.json"));
    let out = modality(
        &python,
        &commit_args(server.dimse_port, &files, &["--no-store"]),
    );
    assert_eq!(out["action_status"], 0, "{out}");
    let report = listener.report();
    assert_eq!(
        report["transaction_uid"], out["transaction_uid"],
        "{report}"
    );
    assert_eq!(report["calling_ae"], "PACS");
    assert_eq!(report["requestor_scp_role"], true, "{report}");
    assert_eq!(report["event_type"], 2, "{report}");
    assert_eq!(report["committed"], serde_json::json!([sop_of(&files[0])]));
    assert_eq!(report["failed"], serde_json::json!([[damaged, 0x0110]]));
    // Once its job is done, the page still shows the exam not committed:
    // the modality was told one instance failed.
    let done = wait_jobs(server.http_port, "the report's job done", |jobs| {
        jobs.iter().any(|j| j["state"] == "done")
    });
    assert_eq!(done[0]["payload_version"], 2, "{done:?}");
    assert_eq!(
        exam_stage(server.http_port, "CMT-1"),
        ("images_received".into(), 2)
    );
    server.stop();
    let records = commitment_records(&data);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("1 committed, 1 failed"),
        "{}",
        records[0]
    );
    assert!(
        records[0].contains(" UserID=\"MODALITY\""),
        "{}",
        records[0]
    );
}

#[test]
fn commitment_requestor_gone_before_its_report_gets_it_on_a_new_association() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let modality_port = free_port();
    let cfg = config(tmp.path(), modality_port, true);
    let server = start(&tmp.path().join("data"), &cfg);
    let listener = Listener::start(&python, modality_port, &tmp.path().join("report.json"));
    let files = ct_files(1);
    // The SCP role is proposed, but the requestor releases right after the
    // N-ACTION-RSP: the report follows it to its [[remote_ae]].
    let out = modality(
        &python,
        &commit_args(
            server.dimse_port,
            &files,
            &["--same-association", "--no-wait"],
        ),
    );
    assert_eq!(out["action_status"], 0, "{out}");
    let report = listener.report();
    assert_eq!(
        report["transaction_uid"], out["transaction_uid"],
        "{report}"
    );
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(report["committed"], serde_json::json!([sop_of(&files[0])]));
    let (_, log) = server.stop();
    // Released to the queue when the association ended (or, should the
    // report have reached the requestor first, when it refused it).
    assert!(
        log.contains("association ended before its commitment report was delivered")
            || log.contains("report refused on the same association"),
        "the held-back job was not released when the requestor left: {log}"
    );
}

#[test]
fn commitment_report_waits_for_its_ae_across_a_restart() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let modality_port = free_port();
    let cfg = config(tmp.path(), modality_port, true);
    let server = start(&data, &cfg);
    let files = ct_files(1);
    let out = modality(&python, &commit_args(server.dimse_port, &files, &[]));
    assert_eq!(out["action_status"], 0, "{out}");
    // Nobody listens at the report AE: the job fails and waits.
    let start_wait = Instant::now();
    loop {
        let listed = jobs(&server);
        if listed
            .first()
            .is_some_and(|j| j["attempts"].as_u64() >= Some(1) && !j["last_error"].is_null())
        {
            assert_ne!(listed[0]["state"], "done");
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(60),
            "no failed attempt: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    // The report AE comes up; the server restarts and delivers.
    let listener = Listener::start(&python, modality_port, &tmp.path().join("report.json"));
    let server = start(&data, &cfg);
    let report = listener.report();
    assert_eq!(
        report["transaction_uid"], out["transaction_uid"],
        "{report}"
    );
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(report["committed"], serde_json::json!([sop_of(&files[0])]));
    let start_wait = Instant::now();
    let job = loop {
        let listed = jobs(&server);
        if listed[0]["state"] == "done" {
            break listed[0].clone();
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(60),
            "job not done: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    server.stop();

    // The CLI sees the same queue once the server is stopped.
    let listed = pacs(&data, &["queue", "list", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed[0]["id"], job["id"]);
    assert_eq!(listed[0]["state"], "done");
    let id = job["id"].to_string();
    assert!(pacs(&data, &["queue", "retry", &id]).status.success());
    let again: Vec<Value> =
        serde_json::from_str(&stdout(&pacs(&data, &["queue", "list", "--json"]))).unwrap();
    assert_eq!(again[0]["state"], "queued");
    assert_eq!(again[0]["attempts"], 0);
    assert!(pacs(&data, &["queue", "delete", &id]).status.success());
    assert!(!pacs(&data, &["queue", "delete", &id]).status.success());
    assert!(!pacs(&data, &["queue", "retry", "999999"]).status.success());
}
