//! Partner-hospital grants through the real `pacs` binary: a radiologist
//! grants a partner one study; the partner's machine token (and its user)
//! pulls it with dicomweb-client, sees nothing else at any DICOMweb route,
//! and loses it on revocation; `pacs grant` makes grants from the console;
//! creation, use and revocation are in the audit trail.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use access::policy::ROUTES;
use common::*;

const STUDY_A: &str = "1.2.826.0.1.3680043.8.498.31";
const STUDY_B: &str = "1.2.826.0.1.3680043.8.498.41";
const STUDY_C: &str = "1.2.826.0.1.3680043.8.498.51";

struct Resp {
    status: u16,
    body: String,
}

fn call(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    Resp {
        status,
        body: String::from_utf8_lossy(&buf[split + 4..]).into_owned(),
    }
}

fn series_of(study: &str) -> String {
    format!("{study}.1")
}

fn sop_of(study: &str) -> String {
    format!("{study}.1.1")
}

/// Three studies of the same patient (ID `BAD-1`).
fn import_three(tmp: &Path, data: &Path) {
    for (i, study) in [STUDY_A, STUDY_B, STUDY_C].into_iter().enumerate() {
        let file = tmp.join(format!("{i}.dcm"));
        std::fs::write(
            &file,
            small_object(study, &series_of(study), &sop_of(study)),
        )
        .unwrap();
        let out = pacs(data, &["import", file.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", stderr(&out));
    }
}

fn token(data: &Path, name: &str, role: &str) -> String {
    let o = pacs(data, &["token", "create", "--name", name, "--role", role]);
    assert!(o.status.success(), "token create: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// Every GET route of DICOMweb and WADO-URI in the policy table, for
/// `study` (its series and instance).
fn read_paths(study: &str) -> Vec<String> {
    let (series, sop) = (series_of(study), sop_of(study));
    ROUTES
        .iter()
        .filter(|r| r.method == "GET")
        .filter(|r| r.path.starts_with("/dicom-web") || r.path == "/wado")
        .map(|r| match r.path {
            "/wado" => format!(
                "/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
            ),
            "/dicom-web/studies" => format!("/dicom-web/studies?StudyInstanceUID={study}"),
            "/dicom-web/series" => format!("/dicom-web/series?StudyInstanceUID={study}"),
            "/dicom-web/instances" => format!("/dicom-web/instances?SOPInstanceUID={sop}"),
            p => p
                .replace("{study}", study)
                .replace("{series}", &series)
                .replace("{instance}", &sop)
                .replace("{frames}", "1")
                .replace("{tag}", "7FE00010"),
        })
        .collect()
}

/// Asserts `auth` is refused on every read route of `study`, without a
/// word of it in the answer.
fn refused_everywhere(port: u16, auth: &str, study: &str) {
    let mut paths = read_paths(study);
    paths.push(format!("/dicom-web/studies/{study}?accept=application/zip"));
    for path in paths {
        let r = call(port, "GET", &path, &[("Authorization", auth)], "");
        // A search by another key than the study finds nothing; anything
        // about the study is refused.
        let search = path.starts_with("/dicom-web/instances?");
        assert!(
            [403, 404].contains(&r.status) || (search && [200, 204].contains(&r.status)),
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains(&sop_of(study)), "{path}: {}", r.body);
    }
}

/// A Python with dicomweb-client (`PACS_PYTHON`, else python3), or `None`
/// (a failure under `PACS_REQUIRE_PEERS`).
fn dicomweb_python() -> Option<String> {
    let python = std::env::var("PACS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import dicomweb_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("PACS_REQUIRE_PEERS").is_none(),
        "dicomweb-client is not importable by {python}: run tests/run.sh"
    );
    eprintln!("SKIPPED: dicomweb-client is not importable by {python}");
    None
}

/// What a partner's DICOMweb client does with its token: search, then
/// retrieve every study it found and its metadata, then ask for another
/// study by UID. Prints one JSON line.
const PULL: &str = r#"
import json, sys
from dicomweb_client.api import DICOMwebClient
from requests.exceptions import HTTPError
base, token, other = sys.argv[1], sys.argv[2], sys.argv[3]
c = DICOMwebClient(url=base, headers={"Authorization": "Bearer " + token})
found = [s["0020000D"]["Value"][0] for s in c.search_for_studies()]
got = {}
for uid in found:
    series = [s["0020000E"]["Value"][0] for s in c.search_for_series(study_instance_uid=uid)]
    instances = c.retrieve_study(uid)
    meta = c.retrieve_study_metadata(uid)
    got[uid] = {"series": series, "instances": [str(i.SOPInstanceUID) for i in instances],
                "metadata": len(meta)}
try:
    c.retrieve_study(other)
    other_status = 200
except HTTPError as e:
    other_status = e.response.status_code
print(json.dumps({"found": found, "got": got, "other": other_status}))
"#;

fn pull(python: &str, port: u16, token: &str, other: &str) -> serde_json::Value {
    let o = Command::new(python)
        .args([
            "-c",
            PULL,
            &format!("http://127.0.0.1:{port}/dicom-web"),
            token,
            other,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "dicomweb-client: {}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

fn audit_json(data: &Path, user: &str) -> String {
    let o = pacs(data, &["audit", "search", "--json", "--user", user]);
    assert!(o.status.success(), "audit search: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn partner_pulls_only_granted_studies_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_three(tmp.path(), &data);
    add_user(&data, "bs.an", "radiologist");
    add_user(&data, "bv-cho-ray", "partner");
    let partner = token(&data, "bv-cho-ray", "partner");
    let other_partner = token(&data, "bv-hue", "partner");

    // From the console: bv-hue gets study C.
    let o = pacs(
        &data,
        &["grant", "add", "--partner", "bv-hue", "--study", STUDY_C],
    );
    assert!(o.status.success(), "grant add: {}", stderr(&o));
    let o = pacs(&data, &["grant", "list"]);
    assert!(stdout(&o).contains("bv-hue"), "{}", stdout(&o));
    let o = pacs(
        &data,
        &[
            "grant",
            "add",
            "--partner",
            "bv-hue",
            "--study",
            "1.2.3.999",
        ],
    );
    assert!(!o.status.success(), "an unknown study is refused");

    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let bearer = format!("Bearer {partner}");
    let radiologist = basic("bs.an", TEST_PASSWORD);

    // Nothing granted yet: nothing to see.
    let q = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &bearer)],
        "",
    );
    assert!(
        [403, 404].contains(&q.status) || q.status == 204,
        "{}",
        q.body
    );
    assert!(!q.body.contains(STUDY_A), "{}", q.body);
    refused_everywhere(port, &bearer, STUDY_A);

    // The grant: only those who may share make it; the partner cannot.
    let body = format!(
        "{{\"study\": \"{STUDY_A}\", \"partner\": \"bv-cho-ray\", \"expires_in_days\": 7}}"
    );
    let json_ct = ("Content-Type", "application/json");
    let r = call(
        port,
        "POST",
        "/api/v1/shares",
        &[("Authorization", &bearer), json_ct],
        &body,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let bad = body.replace("bv-cho-ray", "bv cho ray");
    let r = call(
        port,
        "POST",
        "/api/v1/shares",
        &[("Authorization", &radiologist), json_ct],
        &bad,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        port,
        "POST",
        "/api/v1/shares",
        &[("Authorization", &radiologist), json_ct],
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let made: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["partner"], "bv-cho-ray");
    assert!(
        made.get("token").is_none(),
        "a grant has no link: {}",
        r.body
    );

    // The partner's PACS pulls it with dicomweb-client, and finds nothing
    // else; bv-hue finds only its own study.
    if let Some(python) = dicomweb_python() {
        let got = pull(&python, port, &partner, STUDY_B);
        assert_eq!(got["found"], serde_json::json!([STUDY_A]), "{got}");
        assert_eq!(
            got["got"][STUDY_A]["instances"],
            serde_json::json!([sop_of(STUDY_A)]),
            "{got}"
        );
        assert_eq!(got["got"][STUDY_A]["metadata"], 1, "{got}");
        assert!(
            [403, 404].contains(&got["other"].as_u64().unwrap()),
            "{got}"
        );
        let hue = pull(&python, port, &other_partner, STUDY_A);
        assert_eq!(hue["found"], serde_json::json!([STUDY_C]), "{hue}");
    }
    // The same through raw requests, for the partner's token and its user.
    let user = basic("bv-cho-ray", TEST_PASSWORD);
    for auth in [&bearer, &user] {
        for path in [
            "/dicom-web/studies".to_owned(),
            "/dicom-web/studies?PatientID=BAD-1".to_owned(),
            "/dicom-web/series".to_owned(),
            "/dicom-web/instances".to_owned(),
        ] {
            let r = call(port, "GET", &path, &[("Authorization", auth)], "");
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert!(r.body.contains(STUDY_A), "{path}: {}", r.body);
            assert!(
                !r.body.contains(STUDY_B) && !r.body.contains(STUDY_C),
                "{path}: {}",
                r.body
            );
        }
        let zip = call(
            port,
            "GET",
            &format!("/dicom-web/studies/{STUDY_A}?accept=application/zip"),
            &[("Authorization", auth)],
            "",
        );
        assert_eq!(zip.status, 200);
        let meta = call(
            port,
            "GET",
            &format!("/dicom-web/studies/{STUDY_A}/metadata"),
            &[("Authorization", auth)],
            "",
        );
        assert_eq!(meta.status, 200, "{}", meta.body);
        refused_everywhere(port, auth, STUDY_B);
        refused_everywhere(port, auth, STUDY_C);
        refused_everywhere(port, auth, "1.2.3.999");
    }
    // Not a partner's business: making links, listing grants, storing.
    for (m, p) in [
        ("GET", "/api/v1/grants"),
        ("GET", "/api/v1/shares"),
        ("POST", "/dicom-web/studies"),
        ("GET", "/"),
    ] {
        let r = call(port, m, p, &[("Authorization", &bearer)], "");
        assert_eq!(r.status, 403, "{m} {p}: {}", r.body);
    }

    // The creator's list counts the uses.
    let list = call(
        port,
        "GET",
        "/api/v1/grants",
        &[("Authorization", &radiologist)],
        "",
    );
    assert_eq!(list.status, 200);
    let rows: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert!(row["uses"].as_u64().unwrap() >= 2, "{}", list.body);
    assert_eq!(rows.as_array().unwrap().len(), 1, "not the console's grant");

    // Revocation holds from the next request.
    let del = call(
        port,
        "DELETE",
        &format!("/api/v1/grants/{id}"),
        &[("Authorization", &radiologist)],
        "",
    );
    assert_eq!(del.status, 204, "{}", del.body);
    refused_everywhere(port, &bearer, STUDY_A);
    let q = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &bearer)],
        "",
    );
    assert!(!q.body.contains(STUDY_A), "{}", q.body);

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains(&partner), "the token is never logged");

    // From the console: revoke bv-hue's grant.
    let o = pacs(&data, &["grant", "list"]);
    let hue_id = stdout(&o)
        .lines()
        .find(|l| l.contains("bv-hue"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let o = pacs(&data, &["grant", "revoke", &hue_id]);
    assert!(o.status.success(), "grant revoke: {}", stderr(&o));

    let by_creator = audit_json(&data, "bs.an");
    assert!(by_creator.contains("SEN-GRANT-CREATED"), "{by_creator}");
    assert!(by_creator.contains("SEN-GRANT-REVOKED"), "{by_creator}");
    let by_partner = audit_json(&data, "bv-cho-ray");
    assert!(by_partner.contains(STUDY_A), "{by_partner}");
    assert!(
        by_partner.contains(&id),
        "uses name the grant: {by_partner}"
    );
    assert!(by_partner.contains(STUDY_B), "refusals are recorded too");
    let console = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let by_console = audit_json(&data, &format!("console:{console}"));
    assert!(by_console.contains("SEN-GRANT-CREATED"), "{by_console}");
    assert!(by_console.contains("SEN-GRANT-REVOKED"), "{by_console}");
}
