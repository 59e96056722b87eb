//! Patient updates and merges end to end, through the real `pacs` binary:
//! HL7 ADT over MLLP and the REST API change what QIDO-RS, C-FIND
//! (pynetdicom), WADO-RS metadata and retrieved objects (WADO-RS, C-GET,
//! read by pydicom) answer, while the stored blobs keep their bytes; a
//! merge moves studies and pending orders; `pacs reindex` keeps it all.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const S1: &str = "1.2.826.0.1.3680043.10.77.1";
const SE1: &str = "1.2.826.0.1.3680043.10.77.1.1";
const I1: &str = "1.2.826.0.1.3680043.10.77.1.1.1";
const I2: &str = "1.2.826.0.1.3680043.10.77.1.1.2";
const S2: &str = "1.2.826.0.1.3680043.10.77.2";
const SE2: &str = "1.2.826.0.1.3680043.10.77.2.1";
const I3: &str = "1.2.826.0.1.3680043.10.77.2.1.1";
const S3: &str = "1.2.826.0.1.3680043.10.77.3";
const SE3: &str = "1.2.826.0.1.3680043.10.77.3.1";
const I4: &str = "1.2.826.0.1.3680043.10.77.3.1.1";
const S4: &str = "1.2.826.0.1.3680043.10.77.4";
const SE4: &str = "1.2.826.0.1.3680043.10.77.4.1";
const I5: &str = "1.2.826.0.1.3680043.10.77.4.1.1";

fn object(study: &str, series: &str, sop: &str, name: &str, id: &str) -> Vec<u8> {
    sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study,
        series,
        sop,
        patient_name: name,
        patient_id: id,
        pixel_bytes: 512,
        ..Default::default()
    })
}

fn config(dir: &Path, hl7_port: u16) -> PathBuf {
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "hl7_listen = \"127.0.0.1:{hl7_port}\"\nhl7_issuer = \"BV\"\n\
             [[remote_ae]]\nae_title = \"FINDSCU\"\nhost = \"127.0.0.1\"\nport = 1\n"
        ),
    )
    .unwrap();
    cfg
}

/// The stored blob of `sop` (its `<sop>.dcm` outside history).
fn blob_of(data: &Path, sop: &str) -> Vec<u8> {
    fn walk(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "history") {
                    continue;
                }
                if let Some(f) = walk(&p, name) {
                    return Some(f);
                }
            } else if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
        }
        None
    }
    std::fs::read(walk(data, &format!("{sop}.dcm")).expect("blob on disk")).unwrap()
}

fn qr(python: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/peers/patient_qr.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patient_qr.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find(python: &str, port: u16, level: &str, keys: &[&str]) -> Vec<Value> {
    let port = port.to_string();
    let mut args = vec!["find", level, "127.0.0.1", &port, "PACS"];
    args.extend_from_slice(keys);
    qr(python, &args).as_array().unwrap().clone()
}

fn qido(port: u16, auth: &str, query: &str) -> Vec<Value> {
    let r = http(
        port,
        "GET",
        &format!("/dicom-web/studies?{query}"),
        Some(auth),
        None,
    );
    if r.status == 204 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().unwrap().clone()
}

fn attr(v: &Value, tag: &str) -> String {
    let x = &v[tag]["Value"][0];
    match x.get("Alphabetic") {
        Some(a) => a.as_str().unwrap_or("").to_owned(),
        None => x.as_str().unwrap_or("").to_owned(),
    }
}

fn uids(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| attr(r, "0020000D")).collect();
    v.sort();
    v
}

/// The Part 10 object of a single-part WADO-RS instance answer.
fn wado_instance(port: u16, auth: &str, study: &str, series: &str, sop: &str) -> Vec<u8> {
    let r = request(
        port,
        "GET",
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}"),
        &[
            ("Authorization", auth),
            (
                "Accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            ),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let dicm = r.body.windows(4).position(|w| w == b"DICM").unwrap();
    let start = dicm - 128;
    let end = r.body.windows(4).rposition(|w| w == b"\r\n--").unwrap();
    r.body[start..end].to_vec()
}

fn send(his: &mut TcpStream, message: &str) -> (String, String) {
    send_bytes(his, message.as_bytes())
}

fn send_bytes(his: &mut TcpStream, message: &[u8]) -> (String, String) {
    let ack = mllp(his, message);
    msa(&ack)
}

/// `text` in ISO 8859-1 (every character of it is in that set).
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The WADO-RS metadata of a study, one JSON object per instance.
fn metadata(port: u16, auth: &str, study: &str) -> Vec<Value> {
    let meta = http(
        port,
        "GET",
        &format!("/dicom-web/studies/{study}/metadata"),
        Some(auth),
        None,
    );
    assert_eq!(meta.status, 200, "{}", meta.text());
    meta.json().as_array().unwrap().clone()
}

/// The audit records naming `patient`, as (event ID, action code).
fn audit_of(port: u16, auth: &str, patient: &str) -> Vec<(String, String, String)> {
    let r = http(
        port,
        "GET",
        &format!("/api/v1/audit?patient={patient}"),
        Some(auth),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|rec| {
            let msg = rec["msg"].as_str().unwrap_or("").to_owned();
            let action = msg
                .split("EventActionCode=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("")
                .to_owned();
            (rec["event"].as_str().unwrap().to_owned(), action, msg)
        })
        .collect()
}

#[test]
fn adt_and_rest_patient_changes_are_applied_on_read() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let incoming = tmp.path().join("in");
    std::fs::create_dir_all(&incoming).unwrap();
    let originals = [
        (S1, SE1, I1, "OLD^NAME", "P1"),
        (S1, SE1, I2, "OLD^NAME", "P1"),
        (S2, SE2, I3, "OTHER^PERSON", "P2"),
        (S3, SE3, I4, "LATIN^ONE", "P4"),
        (S4, SE4, I5, "LATIN^TWO", "P5"),
    ]
    .map(|(st, se, sop, name, id)| {
        let bytes = object(st, se, sop, name, id);
        std::fs::write(incoming.join(format!("{sop}.dcm")), &bytes).unwrap();
        (sop, bytes)
    });
    let out = pacs(&data, &["import", incoming.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    add_user(&data, "admin", "admin");
    add_user(&data, "reader", "radiologist");
    let admin = basic("admin", TEST_PASSWORD);
    let reader = basic("reader", TEST_PASSWORD);
    let hl7_port = free_port();
    let cfg = config(tmp.path(), hl7_port);
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (web, dimse) = (server.http_port, server.dimse_port);
    let mut his = TcpStream::connect(("127.0.0.1", hl7_port)).unwrap();
    his.set_read_timeout(Some(Duration::from_secs(60))).unwrap();

    // A pending order of P1 (it must follow the merge).
    let order = http(
        web,
        "POST",
        "/api/v1/orders",
        Some(&admin),
        Some(&json!({
            "patient_id": "P1", "issuer_of_patient_id": "BV",
            "patient_name": "OLD^NAME", "accession_number": "ACC-P1",
            "modality": "CT", "station_ae_title": "CT1", "start_date": "20261206"
        })),
    );
    assert_eq!(order.status, 201, "{}", order.text());

    // ADT^A08: P1's name and birth date corrected (UTF-8).
    let a08 =
        "MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||ADT^A08^ADT_A01|A1|P|2.5.1||||||UNICODE UTF-8\r\
EVN|A08|20261206080000\r\
PID|1||P1^^^BV||Nguyễn^Văn An||19800102|M\r";
    assert_eq!(send(&mut his, a08), ("AA".into(), "A1".into()));

    // QIDO-RS: found by the corrected name (diacritic-insensitive with
    // fuzzy matching), no longer by the old one.
    let rows = qido(
        web,
        &admin,
        "PatientName=nguyen&fuzzymatching=true&includefield=00100021",
    );
    assert_eq!(uids(&rows), [S1]);
    assert_eq!(attr(&rows[0], "00100010"), "Nguyễn^Văn An");
    assert_eq!(attr(&rows[0], "00100021"), "BV");
    assert!(qido(web, &admin, "PatientName=OLD*").is_empty());
    // C-FIND at patient and study level.
    let found = find(&python, dimse, "PATIENT", &["PatientID=P1"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["PatientName"], "Nguyễn^Văn An");
    let found = find(&python, dimse, "STUDY", &["PatientName=Nguy*"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["StudyInstanceUID"], S1);
    // WADO-RS metadata.
    let meta = http(
        web,
        "GET",
        &format!("/dicom-web/studies/{S1}/metadata"),
        Some(&admin),
        None,
    );
    assert_eq!(meta.status, 200, "{}", meta.text());
    for inst in meta.json().as_array().unwrap() {
        assert_eq!(attr(inst, "00100010"), "Nguyễn^Văn An");
        assert_eq!(attr(inst, "00100030"), "19800102");
    }
    // Retrieved objects: WADO-RS (read by pydicom) and C-GET.
    let part = wado_instance(web, &admin, S1, SE1, I1);
    let file = tmp.path().join("wado.dcm");
    std::fs::write(&file, &part).unwrap();
    let read = qr(&python, &["read", file.to_str().unwrap()]);
    assert_eq!(read["PatientName"], "Nguyễn^Văn An");
    assert_eq!(read["PatientBirthDate"], "19800102");
    assert_eq!(read["IssuerOfPatientID"], "BV", "{read}");
    assert_eq!(read["PixelBytes"], 512);
    let got = qr(
        &python,
        &["get", S1, "127.0.0.1", &dimse.to_string(), "PACS"],
    );
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    for g in got {
        assert_eq!(g["PatientName"], "Nguyễn^Văn An");
        assert_eq!(g["PatientID"], "P1");
        assert_eq!(g["IssuerOfPatientID"], "BV", "{got:?}");
        assert_eq!(g["PixelBytes"], 512);
    }
    // The blobs are the bytes received.
    for (sop, bytes) in &originals {
        assert!(blob_of(&data, sop) == *bytes, "blob of {sop} changed");
    }

    // Malformed ADT: AE / AR, and the listener keeps serving.
    let no_mrg = "MSH|^~\\&|HIS|BV|PACS|BV|2026||ADT^A40|B1|P|2.5.1\rPID|1||P2^^^BV\r";
    assert_eq!(send(&mut his, no_mrg).0, "AE");
    let bad_date =
        "MSH|^~\\&|HIS|BV|PACS|BV|2026||ADT^A08|B2|P|2.5.1\rPID|1||P1^^^BV||X^Y||1980-01-02\r";
    assert_eq!(send(&mut his, bad_date).0, "AE");
    assert_eq!(send(&mut his, "MSH|^~\\&|garbage").0, "AR");
    // Said to be UTF-8, but ISO 8859-1 bytes: refused, nothing applied.
    let mut liar =
        b"MSH|^~\\&|HIS|BV|PACS|BV|2026||ADT^A08|B3|P|2.5.1||||||UNICODE UTF-8\r".to_vec();
    liar.extend_from_slice(&latin1("PID|1||P1^^^BV||M\u{fc}ller^J\u{fc}rgen\r"));
    assert_eq!(send_bytes(&mut his, &liar).0, "AR");
    let unsupported = "MSH|^~\\&|HIS|BV|PACS|BV|2026||ADT^A01|B4|P|2.5.1\rPID|1||P1^^^BV||X^Y\r";
    assert_eq!(send(&mut his, unsupported).0, "AR");
    let found = find(&python, dimse, "PATIENT", &["PatientID=P1"]);
    assert_eq!(found[0]["PatientName"], "Nguyễn^Văn An", "{found:?}");

    // ADT^A40: P1 merged into P2.
    let a40 =
        "MSH|^~\\&|HIS|BV|PACS|BV|20261206090000||ADT^A40^ADT_A39|A2|P|2.5.1||||||UNICODE UTF-8\r\
EVN|A40|20261206090000\r\
PID|1||P2^^^BV||Trần^Thị Bình||19750505|F\r\
MRG|P1^^^BV\r";
    assert_eq!(send(&mut his, a40), ("AA".into(), "A2".into()));
    assert!(find(&python, dimse, "PATIENT", &["PatientID=P1"]).is_empty());
    let found = find(&python, dimse, "STUDY", &["PatientID=P2"]);
    let mut studies: Vec<&str> = found
        .iter()
        .map(|f| f["StudyInstanceUID"].as_str().unwrap())
        .collect();
    studies.sort();
    assert_eq!(studies, [S1, S2]);
    assert!(found.iter().all(|f| f["PatientName"] == "Trần^Thị Bình"));
    assert!(qido(web, &admin, "PatientID=P1").is_empty());
    assert_eq!(uids(&qido(web, &admin, "PatientID=P2")), [S1, S2]);
    let got = qr(
        &python,
        &["get", S1, "127.0.0.1", &dimse.to_string(), "PACS"],
    );
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got
        .iter()
        .all(|g| g["PatientID"] == "P2" && g["PatientName"] == "Trần^Thị Bình"));
    // Every instance of both studies, under the survivor: QIDO-RS at
    // instance level, WADO-RS metadata and the retrieved objects.
    let r = http(
        web,
        "GET",
        "/dicom-web/instances?PatientID=P2",
        Some(&admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut sops: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| attr(i, "00080018"))
        .collect();
    sops.sort();
    assert_eq!(sops, [I1, I2, I3]);
    for study in [S1, S2] {
        for inst in metadata(web, &admin, study) {
            assert_eq!(attr(&inst, "00100020"), "P2");
            assert_eq!(attr(&inst, "00100010"), "Trần^Thị Bình");
            assert_eq!(attr(&inst, "00100030"), "19750505");
            assert_eq!(attr(&inst, "00100040"), "F");
        }
    }
    for (study, series, sop) in [(S1, SE1, I1), (S2, SE2, I3)] {
        let part = wado_instance(web, &admin, study, series, sop);
        std::fs::write(&file, &part).unwrap();
        let read = qr(&python, &["read", file.to_str().unwrap()]);
        assert_eq!(read["PatientID"], "P2", "{read}");
        assert_eq!(read["PatientName"], "Trần^Thị Bình", "{read}");
        assert_eq!(read["SOPInstanceUID"], sop, "{read}");
        assert_eq!(read["PixelBytes"], 512);
    }
    for (sop, bytes) in &originals {
        assert!(blob_of(&data, sop) == *bytes, "blob of {sop} changed");
    }

    // The same two messages in ISO 8859-1 (MSH-18 8859/1): P4 corrected,
    // then P5 merged into P4.
    let t0 = now_secs();
    let mut a08 =
        b"MSH|^~\\&|HIS|BV|PACS|BV|20261206100000||ADT^A08^ADT_A01|L1|P|2.5.1||||||8859/1\r"
            .to_vec();
    a08.extend_from_slice(&latin1(
        "EVN|A08|20261206100000\rPID|1||P4^^^BV||M\u{fc}ller^J\u{fc}rgen||19600229|M\r",
    ));
    assert_eq!(send_bytes(&mut his, &a08), ("AA".into(), "L1".into()));
    let found = find(&python, dimse, "STUDY", &["PatientID=P4"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["PatientName"], "Müller^Jürgen");
    let mut a40 =
        b"MSH|^~\\&|HIS|BV|PACS|BV|20261206110000||ADT^A40^ADT_A39|L2|P|2.5.1||||||8859/1\r"
            .to_vec();
    a40.extend_from_slice(&latin1(
        "EVN|A40|20261206110000\rPID|1||P4^^^BV||M\u{fc}ller^Zo\u{e9}||19600229|M\rMRG|P5^^^BV\r",
    ));
    assert_eq!(send_bytes(&mut his, &a40), ("AA".into(), "L2".into()));
    let t1 = now_secs();
    assert!(find(&python, dimse, "PATIENT", &["PatientID=P5"]).is_empty());
    let found = find(&python, dimse, "STUDY", &["PatientID=P4"]);
    let mut studies: Vec<&str> = found
        .iter()
        .map(|f| f["StudyInstanceUID"].as_str().unwrap())
        .collect();
    studies.sort();
    assert_eq!(studies, [S3, S4]);
    assert!(
        found.iter().all(|f| f["PatientName"] == "Müller^Zoé"),
        "{found:?}"
    );
    let rows = qido(web, &admin, "PatientName=muller&fuzzymatching=true");
    assert_eq!(uids(&rows), [S3, S4]);
    assert!(rows.iter().all(|r| attr(r, "00100020") == "P4"));
    assert!(qido(web, &admin, "PatientID=P5").is_empty());
    for inst in metadata(web, &admin, S4) {
        assert_eq!(attr(&inst, "00100020"), "P4");
        assert_eq!(attr(&inst, "00100010"), "Müller^Zoé");
    }
    let part = wado_instance(web, &admin, S4, SE4, I5);
    std::fs::write(&file, &part).unwrap();
    let read = qr(&python, &["read", file.to_str().unwrap()]);
    assert_eq!(read["PatientID"], "P4", "{read}");
    assert_eq!(read["PatientName"], "Müller^Zoé", "{read}");
    assert_eq!(read["PatientBirthDate"], "19600229", "{read}");
    assert!(blob_of(&data, I5) == originals[4].1, "blob of {I5} changed");
    // The history: who (the sending application), when, old and new.
    let h = http(
        web,
        "GET",
        "/api/v1/patients/P4/history?issuer=BV",
        Some(&admin),
        None,
    );
    assert_eq!(h.status, 200, "{}", h.text());
    let h = h.json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["kind"], "update");
    assert_eq!(h[0]["actor"], "hl7:HIS");
    assert_eq!(h[0]["source"], "hl7");
    assert_eq!(h[0]["before"]["patient_name"], "LATIN^ONE");
    assert_eq!(h[0]["after"]["patient_name"], "Müller^Jürgen");
    assert_eq!(h[0]["after"]["patient_birth_date"], "19600229");
    assert_eq!(h[1]["kind"], "merge");
    assert_eq!(h[1]["from"]["patient_id"], "P5");
    assert_eq!(h[1]["into"]["patient_id"], "P4");
    assert_eq!(h[1]["before"]["patient_name"], "LATIN^TWO");
    assert_eq!(h[1]["after"]["patient_name"], "Müller^Zoé");
    for c in h {
        let t = c["time"].as_u64().unwrap();
        assert!(t0 <= t && t <= t1, "{c}");
    }
    // Each change is a Patient Record (110110) Update in the audit trail,
    // naming its history entry; the history read is a Patient Record Read.
    let trail = audit_of(web, &admin, "P4");
    let updates: Vec<&String> = trail
        .iter()
        .filter(|(e, a, _)| e == "110110" && a == "U")
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(updates.len(), 2, "{trail:?}");
    assert!(updates.iter().all(|m| m.contains("UserID=\"hl7:HIS\"")));
    for c in h {
        let names_entry = format!("ParticipantObjectID=\"{}\"", c["id"]);
        let m = updates
            .iter()
            .find(|m| m.contains(&names_entry))
            .unwrap_or_else(|| panic!("no audit record of change {c}: {trail:?}"));
        assert_eq!(
            m.contains("ParticipantObjectID=\"P5\""),
            c["kind"] == "merge",
            "{m}"
        );
    }
    assert!(
        trail.iter().any(|(e, a, _)| e == "110110" && a == "R"),
        "{trail:?}"
    );
    // The pending order followed.
    let orders = http(
        web,
        "GET",
        "/api/v1/orders?patient_id=P2",
        Some(&admin),
        None,
    );
    assert_eq!(orders.status, 200);
    let orders = orders.json();
    assert_eq!(orders.as_array().unwrap().len(), 1, "{orders}");
    assert_eq!(orders[0]["accession_number"], "ACC-P1");
    assert_eq!(orders[0]["patient_name"], "Trần^Thị Bình");

    // REST: an administrator corrects the name; anyone else is refused.
    let body = json!({"issuer_of_patient_id": "BV", "patient_name": "TRAN^THI BINH"});
    let r = http(
        web,
        "PATCH",
        "/api/v1/patients/P2",
        Some(&reader),
        Some(&body),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        web,
        "PATCH",
        "/api/v1/patients/P2",
        Some(&admin),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["studies"], 2);
    let bad = json!({"issuer_of_patient_id": "BV", "patient_sex": "X"});
    let r = http(
        web,
        "PATCH",
        "/api/v1/patients/P2",
        Some(&admin),
        Some(&bad),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(
        web,
        "PATCH",
        "/api/v1/patients/NOBODY",
        Some(&admin),
        Some(&body),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(uids(&qido(web, &admin, "PatientName=TRAN*")), [S1, S2]);
    // The history keeps who, when, before and after.
    let h = http(
        web,
        "GET",
        "/api/v1/patients/P2/history?issuer=BV",
        Some(&admin),
        None,
    );
    assert_eq!(h.status, 200, "{}", h.text());
    let h = h.json();
    let kinds: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["merge", "update"]);
    assert_eq!(h[1]["actor"], "admin");
    assert_eq!(h[1]["before"]["patient_name"], "Trần^Thị Bình");
    assert_eq!(h[1]["after"]["patient_name"], "TRAN^THI BINH");

    // A merge by REST: P2 into P3 (a patient with no studies yet).
    let merge = json!({
        "surviving": {"patient_id": "P3", "issuer_of_patient_id": "BV"},
        "merged": {"patient_id": "P2", "issuer_of_patient_id": "BV"}
    });
    let r = http(
        web,
        "POST",
        "/api/v1/patients/merge",
        Some(&reader),
        Some(&merge),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        web,
        "POST",
        "/api/v1/patients/merge",
        Some(&admin),
        Some(&json!({"surviving": {"patient_id": "P3"}})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(
        web,
        "POST",
        "/api/v1/patients/merge",
        Some(&admin),
        Some(&merge),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["change"]["actor"], "admin");
    assert_eq!(r.json()["change"]["kind"], "merge");
    // The path form names the merged patient in the path.
    let r = http(
        web,
        "POST",
        "/api/v1/patients/P3/merge",
        Some(&admin),
        Some(
            &json!({"issuer_of_patient_id": "BV", "into": {"patient_id": "P3", "issuer_of_patient_id": "BV"}}),
        ),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(uids(&qido(web, &admin, "PatientID=P3")), [S1, S2]);
    assert!(qido(web, &admin, "PatientID=P2").is_empty());

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("Nguyễn") && !log.contains("Müller"),
        "patient names in the log"
    );

    // A reindex from the blobs keeps every change.
    let out = pacs(&data, &["reindex"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let web = server.http_port;
    assert_eq!(uids(&qido(web, &admin, "PatientID=P3")), [S1, S2]);
    assert!(qido(web, &admin, "PatientID=P1").is_empty());
    assert_eq!(uids(&qido(web, &admin, "PatientID=P4")), [S3, S4]);
    let rows = qido(web, &admin, "PatientName=TRAN*");
    assert_eq!(uids(&rows), [S1, S2]);
    assert!(rows.iter().all(|r| attr(r, "00100010") == "TRAN^THI BINH"));
    for (sop, bytes) in &originals {
        assert!(blob_of(&data, sop) == *bytes, "blob of {sop} changed");
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
