//! Orders end to end, through the real `pacs` binary over TCP: the REST
//! order API, the Modality Worklist SCP (pynetdicom and DCMTK `findscu -W`),
//! HL7 v2 over MLLP, and the `worklist_dir` folder.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
}

fn http(port: u16, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(payload.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Resp { status, body }
}

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
    // The changes are in the audit trail as Patient Record events.
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
