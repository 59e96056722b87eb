//! Orders end to end, through the real `pacs` binary over TCP: the REST
//! order API, the Modality Worklist SCP (pynetdicom and DCMTK `findscu -W`),
//! HL7 v2 over MLLP, and the `worklist_dir` folder.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn ct_order(accession: &str) -> Value {
    json!({
        "patient_id": "079123456789",
        "issuer_of_patient_id": "CCCD",
        "other_patient_ids": [{"id": "MRN-77", "issuer": "BV-CHO-RAY"}],
        "patient_name": "Nguyễn^Thị Hồng",
        "patient_birth_date": "19800215",
        "patient_sex": "F",
        "accession_number": accession,
        "requested_procedure_description": "CT ngực",
        "modality": "CT",
        "station_ae_title": "CT1",
        "station_name": "CT-ROOM-1",
        "start_date": "20261206",
        "start_time": "0930",
    })
}

#[test]
fn rest_order_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "tech", "technologist");
    add_user(&data, "rad", "radiologist");
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let tech = basic("tech", TEST_PASSWORD);
    let rad = basic("rad", TEST_PASSWORD);

    let r = http(
        port,
        "POST",
        "/api/v1/orders",
        Some(&tech),
        Some(&ct_order("ACC-1")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["source"], "rest");
    assert_eq!(created["sps_id"], "ACC-1");
    assert!(created["study_instance_uid"]
        .as_str()
        .unwrap()
        .starts_with("2.25."));
    assert_eq!(created["other_patient_ids"][0]["id"], "MRN-77");

    // The same accession and SPS ID again: 409.
    let r = http(
        port,
        "POST",
        "/api/v1/orders",
        Some(&tech),
        Some(&ct_order("ACC-1")),
    );
    assert_eq!(r.status, 409, "{}", r.text());

    // Bad input: 400 with a message naming the field.
    for (field, value, needle) in [
        ("start_date", json!("2026-12-06"), "start_date"),
        (
            "patient_birth_date",
            json!("19801345"),
            "patient_birth_date",
        ),
        ("study_instance_uid", json!("1.2.x"), "study_instance_uid"),
        ("modality", json!(""), "modality"),
        ("status", json!("done"), "status"),
        ("colour", json!("red"), "colour"),
    ] {
        let mut body = ct_order("ACC-BAD");
        body[field] = value;
        let r = http(port, "POST", "/api/v1/orders", Some(&tech), Some(&body));
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        assert!(r.text().contains(needle), "{field}: {}", r.text());
    }
    let r = http(port, "POST", "/api/v1/orders", Some(&tech), None);
    assert_eq!(r.status, 400, "{}", r.text());

    // A radiologist reads but does not schedule.
    let r = http(
        port,
        "POST",
        "/api/v1/orders",
        Some(&rad),
        Some(&ct_order("ACC-2")),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        port,
        "GET",
        &format!("/api/v1/orders/{id}"),
        Some(&rad),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["patient_name"], "Nguyễn^Thị Hồng");
    let r = http(
        port,
        "GET",
        "/api/v1/orders/ffffffffffffffff",
        Some(&rad),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Listing with filters.
    let r = http(
        port,
        "POST",
        "/api/v1/orders",
        Some(&tech),
        Some(&json!({
            "patient_id": "P2", "patient_name": "Tran^Van Binh", "accession_number": "ACC-3",
            "modality": "MR", "station_ae_title": "MR1", "start_date": "20261207"
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(port, "GET", "/api/v1/orders?modality=MR", Some(&rad), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["accession_number"], "ACC-3");
    // Several accession numbers at once (the study list's request).
    let r = http(
        port,
        "GET",
        "/api/v1/orders?accession_number=ACC-1,ACC-3,NONE",
        Some(&rad),
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 2, "{}", r.text());
    let r = http(
        port,
        "GET",
        "/api/v1/orders?date_from=20261207",
        Some(&rad),
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = http(
        port,
        "GET",
        "/api/v1/orders?date_from=2026",
        Some(&rad),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(port, "GET", "/api/v1/orders?nonsense=1", Some(&rad), None);
    assert_eq!(r.status, 400, "{}", r.text());

    // PATCH: change the room and the status; bad values refused.
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        Some(&json!({"station_ae_title": "CT2", "status": "in_progress"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["station_ae_title"], "CT2");
    assert_eq!(r.json()["status"], "in_progress");
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        Some(&json!({"start_time": "2561"})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        Some(&json!({"accession_number": "ACC-3", "sps_id": "ACC-3"})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        Some(&json!({"status": "completed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A completed step does not change again.
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        Some(&json!({"status": "scheduled"})),
    );
    assert_eq!(r.status, 409, "{}", r.text());

    // DELETE.
    let r = http(
        port,
        "DELETE",
        &format!("/api/v1/orders/{id}"),
        Some(&rad),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        port,
        "DELETE",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = http(
        port,
        "GET",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = http(
        port,
        "DELETE",
        &format!("/api/v1/orders/{id}"),
        Some(&tech),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    // No patient names or IDs in the log above debug.
    assert!(
        !log.contains("079123456789") && !log.contains("Nguyễn"),
        "{log}"
    );
    // The changes are in the audit trail as Order Record events.
    let audit: String = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        audit.contains("status in_progress -&gt; completed")
            || audit.contains("status in_progress -> completed"),
        "{audit}"
    );
    assert!(audit.contains("order removed"), "{audit}");
}

/// A config listing the modalities allowed to query (C-FIND needs a
/// `[[remote_ae]]` entry), plus `extra` lines.
fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for ae in ["CT1", "MR1", "FINDSCU"] {
        text.push_str(&format!(
            "[[remote_ae]]\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = 1\n"
        ));
    }
    let cfg = dir.join("pacs.toml");
    std::fs::write(&cfg, format!("{extra}\n{text}")).unwrap();
    cfg
}

/// Runs tests/peers/mwl_find.py: (statuses, items).
fn mwl(python: &str, port: u16, calling: &str, query: Value) -> (Vec<String>, Vec<Value>) {
    let script = repo_root().join("tests/peers/mwl_find.py");
    let o = std::process::Command::new(python)
        .arg(script)
        .args(["127.0.0.1", &port.to_string(), "PACS", calling])
        .arg(query.to_string())
        .output()
        .unwrap();
    let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap_or(Value::Null);
    if out["error"] == "association rejected" {
        return (vec!["rejected".into()], Vec::new());
    }
    assert!(o.status.success(), "mwl_find: {}{}", stdout(&o), stderr(&o));
    let statuses = out["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    (statuses, out["items"].as_array().unwrap().clone())
}

fn accessions(items: &[Value]) -> Vec<String> {
    let mut a: Vec<String> = items
        .iter()
        .map(|i| i["AccessionNumber"].as_str().unwrap_or("").to_owned())
        .collect();
    a.sort();
    a
}

fn post(port: u16, body: Value) -> Value {
    let r = http(port, "POST", "/api/v1/orders", None, Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// A modality (pynetdicom) asks the worklist by station AE, by date range,
/// by an unaccented name, by status; DCMTK `findscu -W` asks it too.
#[test]
fn modality_worklist_find() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), "");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.http_port;
    post(port, ct_order("ACC-1"));
    post(
        port,
        json!({
            "patient_id": "P2", "patient_name": "Trần^Văn Bình", "accession_number": "ACC-2",
            "modality": "CT", "station_ae_title": "CT1", "start_date": "20261207", "start_time": "1400",
            "performing_physician_name": "Lê^Minh"
        }),
    );
    post(
        port,
        json!({
            "patient_id": "P3", "patient_name": "Smith^John", "accession_number": "ACC-3",
            "modality": "MR", "station_ae_title": "MR1", "start_date": "20261206", "start_time": "1100"
        }),
    );
    let done = post(
        port,
        json!({
            "patient_id": "P4", "patient_name": "Phạm^Thu", "accession_number": "ACC-4",
            "modality": "CT", "station_ae_title": "CT1", "start_date": "20261206"
        }),
    );
    let r = http(
        port,
        "PATCH",
        &format!("/api/v1/orders/{}", done["id"].as_str().unwrap()),
        None,
        Some(&json!({"status": "completed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let dimse = server.dimse_port;

    // By station AE: only scheduled steps (ACC-4 is completed).
    let (st, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledStationAETitle": "CT1"}}),
    );
    assert_eq!(st.last().unwrap(), "0x0000", "{st:?}");
    assert!(st[..st.len() - 1].iter().all(|s| s == "0xFF00"), "{st:?}");
    assert_eq!(accessions(&items), ["ACC-1", "ACC-2"]);
    // Type 1/2 keys present, values in UTF-8.
    let one = items
        .iter()
        .find(|i| i["AccessionNumber"] == "ACC-1")
        .unwrap();
    assert_eq!(one["PatientName"], "Nguyễn^Thị Hồng");
    assert_eq!(one["PatientID"], "079123456789");
    assert_eq!(one["IssuerOfPatientID"], "CCCD");
    assert_eq!(one["SpecificCharacterSet"], "ISO_IR 192");
    assert_eq!(one["step"]["Modality"], "CT");
    assert_eq!(one["step"]["ScheduledProcedureStepStartDate"], "20261206");
    assert_eq!(one["step"]["ScheduledProcedureStepID"], "ACC-1");
    assert_eq!(one["step"]["ScheduledProcedureStepStatus"], "SCHEDULED");
    assert!(one["StudyInstanceUID"]
        .as_str()
        .unwrap()
        .starts_with("2.25."));
    for kw in [
        "ReferringPhysicianName",
        "RequestedProcedureID",
        "AdmissionID",
        "ReferencedStudySequence",
        "PatientBirthDate",
        "PatientSex",
    ] {
        assert!(
            one["_has"].as_array().unwrap().iter().any(|k| k == kw),
            "{kw} missing: {one}"
        );
    }
    assert!(
        one["_has"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k != "QueryRetrieveLevel"),
        "{one}"
    );

    // By date range, and by a combined date and time range.
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledProcedureStepStartDate": "20261206-20261206"}}),
    );
    assert_eq!(accessions(&items), ["ACC-1", "ACC-3"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {
        "ScheduledProcedureStepStartDate": "20261206-20261207",
        "ScheduledProcedureStepStartTime": "1000-1300"}}),
    );
    // One range from 2026-12-06 10:00 to 2026-12-07 13:00 (ACC-1 starts
    // at 09:30, ACC-2 at 14:00 the next day).
    assert_eq!(accessions(&items), ["ACC-3"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledProcedureStepStartDate": "20261207-"}}),
    );
    assert_eq!(accessions(&items), ["ACC-2"]);

    // By a name without accents, and a wild card.
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"top": {"PatientName": "nguyen^thi hong"}}),
    );
    assert_eq!(accessions(&items), ["ACC-1"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"top": {"PatientName": "TRAN*"}}),
    );
    assert_eq!(accessions(&items), ["ACC-2"]);
    // Modality, performing physician, patient ID (also an other ID), accession.
    let (_, items) = mwl(&python, dimse, "MR1", json!({"step": {"Modality": "MR"}}));
    assert_eq!(accessions(&items), ["ACC-3"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledPerformingPhysicianName": "le^minh"}}),
    );
    assert_eq!(accessions(&items), ["ACC-2"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"top": {"PatientID": "MRN-77"}}),
    );
    assert_eq!(accessions(&items), ["ACC-1"]);
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"top": {"AccessionNumber": "ACC-3"}}),
    );
    assert_eq!(accessions(&items), ["ACC-3"]);
    // Completed steps when asked for.
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledProcedureStepStatus": "COMPLETED"}}),
    );
    assert_eq!(accessions(&items), ["ACC-4"]);
    // A bad key: a failure status, and the association keeps serving.
    let (st, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledProcedureStepStartDate": "2026-13-45"}}),
    );
    assert!(items.is_empty());
    assert_eq!(st, ["0xC000"]);
    // An AE that is not configured is refused (strict_ae: at association).
    let (st, _) = mwl(&python, dimse, "STRANGER", json!({}));
    assert_eq!(st, ["rejected"], "{st:?}");

    // DCMTK findscu -W.
    if let Some(findscu) = dcmtk("findscu") {
        let out_dir = tmp.path().join("findscu");
        std::fs::create_dir_all(&out_dir).unwrap();
        let o = std::process::Command::new(findscu)
            .args(["-W", "-aet", "FINDSCU", "-aec", "PACS", "-X", "-od"])
            .arg(&out_dir)
            .args([
                "-k",
                "ScheduledProcedureStepSequence[0].Modality=CT",
                "-k",
                "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=",
                "-k",
                "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261206",
                "-k",
                "PatientName=",
                "-k",
                "AccessionNumber=",
                "-k",
                "PatientID=",
            ])
            .arg("127.0.0.1")
            .arg(dimse.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "findscu: {}{}", stdout(&o), stderr(&o));
        let files: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert_eq!(files.len(), 1, "{}", stderr(&o));
        let dump = std::process::Command::new("/usr/bin/dcmdump")
            .arg(files[0].as_ref().unwrap().path())
            .output()
            .unwrap();
        let text = stdout(&dump);
        assert!(text.contains("ACC-1"), "{text}");
        assert!(text.contains("CT1"), "{text}");
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

const WL_DUMP: &str = "(0008,0005) CS [ISO_IR 192]
(0008,0050) SH [WL-1]
(0010,0010) PN [Lê^Thị Mai]
(0010,0020) LO [WLP1]
(0040,0100) SQ (Sequence with undefined length)
  (fffe,e000) na (Item with undefined length)
    (0008,0060) CS [US]
    (0040,0001) AE [US1]
    (0040,0002) DA [20261206]
    (0040,0003) TM [1000]
    (0040,0009) SH [SPS-WL-1]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
";

/// Asks the worklist (as CT1, every status) until `want` is the set of
/// accession numbers, or gives up after a bounded number of tries.
fn wait_for_worklist(python: &str, port: u16, want: &[&str]) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..120 {
        let (_, items) = mwl(python, port, "CT1", json!({}));
        got = accessions(&items);
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    got
}

/// An Orthanc-style folder of `.wl` files: a Part 10 file and a bare data
/// set appear in the worklist; a removed file leaves it; a broken file is
/// skipped.
#[test]
fn worklist_folder() {
    let (Some(python), Some(dump2dcm)) = (pynetdicom_python(), dcmtk("dump2dcm")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let wl = tmp.path().join("worklists");
    std::fs::create_dir_all(&wl).unwrap();
    let cfg = config(
        tmp.path(),
        &format!(
            "worklist_dir = \"{}\"\nworklist_poll_seconds = 1",
            wl.display()
        ),
    );
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    std::fs::write(wl.join("broken.wl"), b"not dicom at all").unwrap();
    // A Part 10 file, written beside and renamed in.
    let dump = tmp.path().join("a.dump");
    std::fs::write(&dump, WL_DUMP).unwrap();
    let made = tmp.path().join("a.tmp");
    let o = Command::new(&dump2dcm)
        .arg(&dump)
        .arg(&made)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(&made, wl.join("a.wl")).unwrap();
    assert_eq!(
        wait_for_worklist(&python, server.dimse_port, &["WL-1"]),
        ["WL-1"]
    );
    let (_, items) = mwl(
        &python,
        server.dimse_port,
        "CT1",
        json!({"top": {"PatientName": "le^thi"}}),
    );
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["PatientName"], "Lê^Thị Mai");
    assert_eq!(items[0]["step"]["ScheduledStationAETitle"], "US1");
    assert_eq!(items[0]["step"]["ScheduledProcedureStepID"], "SPS-WL-1");
    // A bare data set (no meta header).
    std::fs::write(
        &dump,
        WL_DUMP
            .replace("WL-1", "WL-2")
            .replace("SPS-WL-1", "SPS-WL-2"),
    )
    .unwrap();
    let o = Command::new(&dump2dcm)
        .arg("-F")
        .arg(&dump)
        .arg(&made)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(&made, wl.join("b.WL")).unwrap();
    assert_eq!(
        wait_for_worklist(&python, server.dimse_port, &["WL-1", "WL-2"]),
        ["WL-1", "WL-2"]
    );
    // The REST API lists them, with their source.
    let r = http(
        server.http_port,
        "GET",
        "/api/v1/orders?source=worklist_dir",
        None,
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 2, "{}", r.text());
    // A removed file leaves the worklist.
    std::fs::remove_file(wl.join("a.wl")).unwrap();
    assert_eq!(
        wait_for_worklist(&python, server.dimse_port, &["WL-2"]),
        ["WL-2"]
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("broken.wl"), "{log}");
}

fn orm(control: &str, id: &str, name: &str, acc: &str, ae: &str) -> String {
    let mut obr = vec![""; 28];
    obr[0] = "OBR";
    obr[1] = "1";
    obr[4] = "CT01^CT ngực";
    obr[18] = acc;
    obr[21] = ae;
    obr[24] = "CT";
    obr[27] = "^^^20261206093000";
    format!(
        "MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||ORM^O01|{id}|P|2.3.1||||||UNICODE UTF-8\r\
PID|1||MRN-{acc}^^^BV~0791{acc}^^^CCCD||{name}||19800215|F\r\
ORC|{control}|PL-{acc}\r{}\r",
        obr.join("|")
    )
}

/// HL7 v2 over MLLP: ORM (UTF-8) and OMI (8859/1) orders appear in the
/// worklist; XO changes, DC discontinues, CA removes; duplicates, ADT^A01 and
/// malformed input are answered AE / AR and the listener keeps serving.
#[test]
fn hl7_orders_reach_the_worklist() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hl7_port = free_port();
    let cfg = config(
        tmp.path(),
        &format!(
            "hl7_listen = \"127.0.0.1:{hl7_port}\"\nhl7_issuer = \"CCCD\"\nhl7_max_message_bytes = 4096\n\
             [hl7_station_aes]\nMR = \"MR1\"\n"
        ),
    );
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let dimse = server.dimse_port;
    let mut his = TcpStream::connect(("127.0.0.1", hl7_port)).unwrap();
    his.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    // ORM^O01 NW in UTF-8.
    let ack = mllp(
        &mut his,
        orm("NW", "C1", "Nguyễn^Thị^Lan", "HL7-1", "CT1").as_bytes(),
    );
    assert_eq!(
        msa(&ack),
        ("AA".into(), "C1".into()),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    // OMI^O23 NW in ISO 8859-1, station from the modality map.
    let omi = "MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||OMI^O23^OMI_O23|C2|P|2.5.1||||||8859/1\r\
PID|1||4455^^^BV||M\u{fc}ller^Jos\u{e9}||19700101|M\r\
ORC|NW|PL-2\r\
TQ1|1||||||20261206110000\r\
OBR|1|PL-2||MR01^MR s\u{f3}\r\
IPC|HL7-2|RP-2||SPS-2|MR|^MR brain\r";
    let latin1: Vec<u8> = omi.chars().map(|c| c as u32 as u8).collect();
    let ack = mllp(&mut his, &latin1);
    assert_eq!(
        msa(&ack),
        ("AA".into(), "C2".into()),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    // Both in the worklist.
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"top": {"PatientName": "nguyen lan"}}),
    );
    assert_eq!(accessions(&items), ["HL7-1"]);
    assert_eq!(items[0]["PatientName"], "Nguyễn^Thị^Lan");
    assert_eq!(items[0]["PatientID"], "0791HL7-1");
    assert_eq!(items[0]["IssuerOfPatientID"], "CCCD");
    assert_eq!(items[0]["step"]["ScheduledStationAETitle"], "CT1");
    assert_eq!(
        items[0]["step"]["ScheduledProcedureStepStartTime"],
        "093000"
    );
    let (_, items) = mwl(
        &python,
        dimse,
        "MR1",
        json!({"step": {"ScheduledStationAETitle": "MR1"}}),
    );
    assert_eq!(accessions(&items), ["HL7-2"]);
    assert_eq!(items[0]["PatientName"], "Müller^José");
    assert_eq!(items[0]["step"]["ScheduledProcedureStepID"], "SPS-2");
    // The same order again: AE (duplicate key, ERR-3 205).
    let ack = mllp(
        &mut his,
        orm("NW", "C3", "Nguyễn^Thị^Lan", "HL7-1", "CT1").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AE");
    assert!(
        String::from_utf8_lossy(&ack).contains("|205^"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    // Malformed input: AR, and the same connection keeps serving.
    let ack = mllp(&mut his, b"this is not HL7");
    assert_eq!(msa(&ack).0, "AR");
    let bad_utf8 = orm("NW", "C4", "Nguy\u{e9}n", "HL7-9", "CT1").replace('\u{e9}', "\u{1}");
    let mut bad_utf8 = bad_utf8.into_bytes();
    let at = bad_utf8.iter().position(|&b| b == 1).unwrap();
    bad_utf8[at] = 0xE9;
    let ack = mllp(&mut his, &bad_utf8);
    assert_eq!(msa(&ack).0, "AR");
    // An ADT event other than A08, A31 and A40: AR.
    let adt = "MSH|^~\\&|HIS|BV|PACS|BV|2026||ADT^A01|C5|P|2.5.1\rPID|1||X\r";
    assert_eq!(
        msa(&mllp(&mut his, adt.as_bytes())),
        ("AR".into(), "C5".into())
    );
    // XO: the order moves to another room.
    let ack = mllp(
        &mut his,
        orm("XO", "C6", "Nguyễn^Thị^Lan", "HL7-1", "CT2").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AA", "{}", String::from_utf8_lossy(&ack));
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledStationAETitle": "CT2"}}),
    );
    assert_eq!(accessions(&items), ["HL7-1"]);
    // CA removes the step.
    let ack = mllp(
        &mut his,
        orm("CA", "C7", "Nguyễn^Thị^Lan", "HL7-1", "CT2").as_bytes(),
    );
    assert_eq!(msa(&ack), ("AA".into(), "C7".into()));
    let (_, items) = mwl(
        &python,
        dimse,
        "CT1",
        json!({"step": {"ScheduledProcedureStepStatus": "*"}}),
    );
    assert_eq!(accessions(&items), ["HL7-2"]);
    // CA of an unknown order: AE (unknown key).
    let ack = mllp(&mut his, orm("CA", "C8", "X", "HL7-1", "CT2").as_bytes());
    assert_eq!(msa(&ack).0, "AE");
    // DC discontinues the OMI step: it leaves the default worklist.
    let dc = omi.replace("ORC|NW", "ORC|DC").replace("|C2|", "|C9|");
    let latin1: Vec<u8> = dc.chars().map(|c| c as u32 as u8).collect();
    assert_eq!(msa(&mllp(&mut his, &latin1)).0, "AA");
    let (_, items) = mwl(&python, dimse, "MR1", json!({}));
    assert!(items.is_empty());
    let (_, items) = mwl(
        &python,
        dimse,
        "MR1",
        json!({"step": {"ScheduledProcedureStepStatus": "DISCONTINUED"}}),
    );
    assert_eq!(accessions(&items), ["HL7-2"]);
    // A message over hl7_max_message_bytes: AR, connection closed; a new
    // connection is served.
    let huge = orm("NW", "C10", &"A".repeat(5000), "HL7-3", "CT1");
    let mut framed = vec![0x0B];
    framed.extend_from_slice(huge.as_bytes());
    framed.extend_from_slice(&[0x1C, 0x0D]);
    his.write_all(&framed).unwrap();
    let mut rest = Vec::new();
    let _ = his.read_to_end(&mut rest);
    assert_eq!(
        msa(&rest[1..]).0,
        "AR",
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let mut his = TcpStream::connect(("127.0.0.1", hl7_port)).unwrap();
    his.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let ack = mllp(
        &mut his,
        orm("NW", "C11", "Hoàng^Nam", "HL7-4", "CT1").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AA");
    drop(his);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("Nguyễn") && !log.contains("0791HL7"), "{log}");
}

/// `hl7_idle_timeout` closes a silent MLLP connection; past
/// `hl7_max_connections` a new connection is closed while the open one is
/// still served.
#[test]
fn hl7_connection_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hl7_port = free_port();
    let cfg = config(
        tmp.path(),
        &format!(
            "hl7_listen = \"127.0.0.1:{hl7_port}\"\nhl7_idle_timeout = 1\nhl7_max_connections = 1"
        ),
    );
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", hl7_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let mut first = connect();
    let ack = mllp(
        &mut first,
        orm("NW", "L1", "A^B", "LIM-1", "CT1").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AA");
    // The only slot is taken: the second connection is closed unanswered.
    let mut second = connect();
    let mut buf = Vec::new();
    assert_eq!(second.read_to_end(&mut buf).unwrap(), 0);
    // The first one is still served, then closed once idle.
    let ack = mllp(
        &mut first,
        orm("NW", "L2", "A^B", "LIM-2", "CT1").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AA");
    assert_eq!(
        first.read_to_end(&mut buf).unwrap(),
        0,
        "closed by the server, not timed out"
    );
    // With the slot free again, a new connection is served.
    let mut third = connect();
    assert_eq!(
        msa(&mllp(
            &mut third,
            orm("NW", "L3", "A^B", "LIM-3", "CT1").as_bytes()
        ))
        .0,
        "AA"
    );
    drop(third);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// MPPS moves the order step it names (PS3.4 F.7): a modality reports IN
/// PROGRESS and then COMPLETED for accession ACC-001 / SPS-001
/// (tests/peers/workflow_modality.py), and the order made by REST follows;
/// a step that no order holds changes nothing.
#[test]
fn mpps_moves_its_order_step() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let extra = format!(
        "[[remote_ae]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = 1\n{}",
        std::fs::read_to_string(&cfg).unwrap()
    );
    std::fs::write(&cfg, extra).unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let port = server.http_port;
    let mut order = ct_order("ACC-001");
    order["sps_id"] = json!("SPS-001");
    let id = post(port, order)["id"].as_str().unwrap().to_owned();
    let other = post(port, ct_order("ACC-002"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |id: &str| {
        let r = http(port, "GET", &format!("/api/v1/orders/{id}"), None, None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(status(&id), "scheduled");
    let o = std::process::Command::new(&python)
        .arg(repo_root().join("tests/peers/workflow_modality.py"))
        .args(["mpps", &server.dimse_port.to_string()])
        .output()
        .unwrap();
    let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap_or(Value::Null);
    assert_eq!(out["create"], 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(out["set_completed"], 0, "{out}");
    assert_eq!(status(&id), "completed");
    assert_eq!(status(&other), "scheduled");
    let (code, log) = server.stop();
    assert!(code.success(), "{log}");
}

/// The exams on the technologist's page for 2026-12-06: (accession, stage,
/// images).
fn technologist_page(port: u16) -> Vec<(String, String, String)> {
    let r = http(port, "GET", "/technologist?date=20261206", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let mut exams = Vec::new();
    for row in page.split("<tr class=\"exam\"").skip(1) {
        let attr = |name: &str| {
            let start = row.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            row[start..start + row[start..].find('"').unwrap()].to_owned()
        };
        let images = row.split("<td class=\"images\">").nth(1).unwrap();
        let images = images[..images.find('<').unwrap()].to_owned();
        exams.push((attr("data-accession"), attr("data-stage"), images));
    }
    exams.sort();
    exams
}

/// A modality's full day (issue 11, "Done when"): an order from HL7 and one
/// from REST reach its worklist (by station, by date range, by a name
/// without accents); it runs MPPS, stores the exams and gets the commitment
/// on the same association; the HIS hears that the images are available;
/// the orders and the technologist's page follow every step.
#[test]
fn a_modality_runs_a_full_day() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hl7_port = free_port();
    // The HIS hears "images available" (ORU^R01) for each completed exam.
    let (his_port, his_messages) = his(&["AA"]);
    let cfg = config(
        tmp.path(),
        &format!(
            "hl7_listen = \"127.0.0.1:{hl7_port}\"\nhl7_issuer = \"CCCD\"\n\
             [hl7_out]\naddress = \"127.0.0.1:{his_port}\"\nviewer_url = \"https://pacs.bv.vn\"\n"
        ),
    );
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.http_port;

    // The HIS orders one exam over HL7, the EMR one over REST; another
    // station's exam stays out of this modality's day.
    let mut his = TcpStream::connect(("127.0.0.1", hl7_port)).unwrap();
    his.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let ack = mllp(
        &mut his,
        orm("NW", "D1", "Nguyễn^Văn^An", "DAY-HL7", "CT1").as_bytes(),
    );
    assert_eq!(msa(&ack).0, "AA", "{}", String::from_utf8_lossy(&ack));
    let rest = post(port, ct_order("DAY-REST"));
    let mut other = ct_order("DAY-MR");
    other["modality"] = json!("MR");
    other["station_ae_title"] = json!("MR1");
    other["patient_name"] = json!("Trần^Bình");
    post(port, other);
    assert_eq!(
        technologist_page(port),
        [
            ("DAY-HL7".into(), "scheduled".into(), "0".into()),
            ("DAY-MR".into(), "scheduled".into(), "0".into()),
            ("DAY-REST".into(), "scheduled".into(), "0".into()),
        ]
    );

    let state = tmp.path().join("day.json");
    let script = repo_root().join("tests/peers/workflow_modality.py");
    let run = |args: &[&str]| {
        let o = Command::new(&python)
            .arg(&script)
            .arg("day")
            .arg(server.dimse_port.to_string())
            .args(["CT1", "20261206", state.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap_or(Value::Null);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        out
    };
    let morning = run(&["start"]);
    assert_eq!(
        morning["by_station"],
        json!(["DAY-HL7", "DAY-REST"]),
        "{morning}"
    );
    assert_eq!(
        morning["by_range"],
        json!(["DAY-HL7", "DAY-MR", "DAY-REST"]),
        "{morning}"
    );
    // "nguyen*" finds both Nguyễn, not Trần.
    assert_eq!(
        morning["by_name"],
        json!(["DAY-HL7", "DAY-REST"]),
        "{morning}"
    );
    assert_eq!(morning["create"], json!([0, 0]), "{morning}");
    let rest_status = || {
        let id = rest["id"].as_str().unwrap();
        http(port, "GET", &format!("/api/v1/orders/{id}"), None, None).json()["status"].clone()
    };
    assert_eq!(rest_status(), "in_progress");
    assert_eq!(
        technologist_page(port),
        [
            ("DAY-HL7".into(), "in_progress".into(), "0".into()),
            ("DAY-MR".into(), "scheduled".into(), "0".into()),
            ("DAY-REST".into(), "in_progress".into(), "0".into()),
        ]
    );

    let files = ct_files(2);
    let mut args = vec!["finish", "--files"];
    args.extend(files.iter().map(String::as_str));
    let exams = run(&args);
    assert_eq!(exams["store"], json!([0, 0, 0, 0]), "{exams}");
    assert_eq!(exams["set_completed"], json!([0, 0]), "{exams}");
    assert_eq!(exams["action_status"], 0, "{exams}");
    // Event Type 1: every instance committed, on the same association.
    assert_eq!(exams["report"]["event_type"], 1, "{exams}");
    assert_eq!(exams["report"]["committed"].as_array().unwrap().len(), 4);
    assert_eq!(rest_status(), "completed");
    // The report was sent on the association, so its job is done at once;
    // the page reads the queue as it is.
    let mut page = technologist_page(port);
    for _ in 0..100 {
        if page.iter().filter(|e| e.1 == "committed").count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        page = technologist_page(port);
    }
    assert_eq!(
        page,
        [
            ("DAY-HL7".into(), "committed".into(), "2".into()),
            ("DAY-MR".into(), "scheduled".into(), "0".into()),
            ("DAY-REST".into(), "committed".into(), "2".into()),
        ]
    );
    // The HIS heard that the images of both exams are available, each
    // message with its accession and the viewer link of its study.
    let mut heard = Vec::new();
    for _ in 0..2 {
        let m = his_messages
            .recv_timeout(Duration::from_secs(90))
            .expect("the HIS did not hear that images are available");
        assert_eq!(field(&m, "MSH", 9, 1), "ORU", "{m}");
        assert!(
            m.contains("https://pacs.bv.vn/viewer?StudyInstanceUIDs="),
            "{m}"
        );
        heard.push(field(&m, "OBR", 18, 1));
    }
    heard.sort();
    assert_eq!(heard, ["DAY-HL7", "DAY-REST"]);
    // The study list's search finds the exam under the ordered identity
    // (hl7_issuer = CCCD: the citizen ID is the Patient ID).
    let found = http(
        port,
        "GET",
        "/dicom-web/studies?AccessionNumber=DAY-HL7&includefield=00100020",
        None,
        None,
    );
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()[0]["00100020"]["Value"][0], "0791DAY-HL7");
    let (code, log) = server.stop();
    assert!(code.success(), "{log}");
}
