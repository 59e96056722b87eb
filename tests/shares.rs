//! Share links through the real `pacs` binary: a radiologist makes a link
//! (with a PIN) to one study; an anonymous holder of the link and PIN
//! reads that study and nothing else; wrong PINs lock the link; revocation
//! stops it at once; every step is in the audit trail.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const STUDY_A: &str = "1.2.826.0.1.3680043.8.498.11";
const STUDY_B: &str = "1.2.826.0.1.3680043.8.498.21";

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    /// The value of the `name` cookie the answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.trim().strip_prefix(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap_or("").to_owned())
            .next()
    }
}

/// One HTTP/1.1 request (`Connection: close`); chunked bodies are left
/// as they are (the assertions look for text in them).
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
        head,
        body: String::from_utf8_lossy(&buf[split + 4..]).into_owned(),
    }
}

/// Two studies of the same patient (ID `BAD-1`).
fn import_two(tmp: &Path, data: &Path) {
    for (i, study) in [STUDY_A, STUDY_B].into_iter().enumerate() {
        let file = tmp.join(format!("{i}.dcm"));
        let series = format!("{study}.1");
        let sop = format!("{study}.1.1");
        std::fs::write(&file, small_object(study, &series, &sop)).unwrap();
        let out = pacs(data, &["import", file.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", stderr(&out));
    }
}

fn create(port: u16, user: &str, body: &str) -> Resp {
    call(
        port,
        "POST",
        "/api/v1/shares",
        &[
            ("Authorization", &basic(user, TEST_PASSWORD)),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn pin_form(port: u16, token: &str, pin: &str) -> Resp {
    call(
        port,
        "POST",
        &format!("/s/{token}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("pin={pin}"),
    )
}

/// `pacs audit search --user USER --json`, as text.
fn audit_of(data: &Path, user: &str) -> String {
    let o = pacs(data, &["audit", "search", "--json", "--user", user]);
    assert!(o.status.success(), "audit search: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn share_link_with_pin_opens_one_study_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_two(tmp.path(), &data);
    add_user(&data, "bs.an", "radiologist");
    add_user(&data, "kiem.toan", "auditor");
    let server = Server::start(&data, &[]);
    let port = server.http_port;

    // Who may share: not an auditor, and not anonymously.
    let body = format!("{{\"study\": \"{STUDY_A}\", \"expires_in_days\": 7, \"pin\": true}}");
    assert_eq!(create(port, "kiem.toan", &body).status, 403);
    let anon = call(
        port,
        "POST",
        "/api/v1/shares",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(anon.status, 401);
    let r = create(port, "bs.an", "{\"study\": \"1.2.3.999\"}");
    assert_eq!(r.status, 404, "{}", r.body);

    let r = create(port, "bs.an", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let made = json(&r);
    let token = made["token"].as_str().unwrap().to_owned();
    let pin = made["pin"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(token.len() >= 4 + 22, "at least 128 bits: {token}");
    assert!(
        pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
        "{pin}"
    );
    assert_eq!(
        made["url"].as_str().unwrap(),
        format!("http://127.0.0.1/s/{token}")
    );

    // Its QR code, for the result sheet: the link's URL.
    let qr = call(port, "GET", made["qr"].as_str().unwrap(), &[], "");
    assert_eq!(qr.status, 200);
    assert!(qr.head.contains("image/svg+xml") && qr.body.contains("<svg"));
    assert_eq!(call(port, "GET", "/s/shr_nope/qr.svg", &[], "").status, 404);

    // The link asks for the PIN first; nothing is readable before.
    let page = call(port, "GET", &format!("/s/{token}"), &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"pin\""), "{}", page.body);
    assert!(page.cookie("sen_share").is_none());
    assert_eq!(call(port, "GET", "/dicom-web/studies", &[], "").status, 401);
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    assert_eq!(pin_form(port, &token, wrong).status, 401);

    let opened = pin_form(port, &token, &pin);
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(opened
        .body
        .contains(&format!("/viewer?StudyInstanceUIDs={STUDY_A}")));
    assert!(opened.body.contains(&format!(
        "/dicom-web/studies/{STUDY_A}?accept=application/zip"
    )));
    let c = format!("sen_share={}", opened.cookie("sen_share").unwrap());
    let with = [("Cookie", c.as_str())];

    // QIDO shows the shared study only; the other study of the same
    // patient is refused however it is asked for.
    let q = call(port, "GET", "/dicom-web/studies", &with, "");
    assert_eq!(q.status, 200, "{}", q.body);
    assert!(
        q.body.contains(STUDY_A) && !q.body.contains(STUDY_B),
        "{}",
        q.body
    );
    let q = call(port, "GET", "/dicom-web/studies?PatientID=BAD-1", &with, "");
    assert!(
        q.body.contains(STUDY_A) && !q.body.contains(STUDY_B),
        "{}",
        q.body
    );
    let path_b = format!("/dicom-web/studies?StudyInstanceUID={STUDY_B}");
    assert_eq!(call(port, "GET", &path_b, &with, "").status, 403);
    let meta = |s: &str| format!("/dicom-web/studies/{s}/metadata");
    assert_eq!(call(port, "GET", &meta(STUDY_A), &with, "").status, 200);
    assert_eq!(call(port, "GET", &meta(STUDY_B), &with, "").status, 403);
    let zip = call(
        port,
        "GET",
        &format!("/dicom-web/studies/{STUDY_A}?accept=application/zip"),
        &with,
        "",
    );
    assert_eq!(zip.status, 200);
    assert!(zip.head.to_ascii_lowercase().contains("application/zip"));
    assert_eq!(call(port, "GET", "/viewer", &with, "").status, 200);

    // Nothing else: not the study list, not STOW, not administration,
    // not making links.
    assert_eq!(call(port, "GET", "/", &with, "").status, 403);
    assert_eq!(
        call(port, "POST", "/dicom-web/studies", &with, "x").status,
        403
    );
    assert_eq!(call(port, "GET", "/api/v1/users", &with, "").status, 403);
    assert_eq!(call(port, "GET", "/api/v1/shares", &with, "").status, 403);

    // The creator's list: uses counted, no token.
    let list = call(
        port,
        "GET",
        "/api/v1/shares",
        &[("Authorization", &basic("bs.an", TEST_PASSWORD))],
        "",
    );
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&token));
    let rows = json(&list);
    assert_eq!(rows[0]["id"].as_str(), Some(id.as_str()));
    assert!(rows[0]["uses"].as_u64().unwrap() >= 1, "{}", list.body);

    // Revocation stops the link and its cookie at once.
    let del = call(
        port,
        "DELETE",
        &format!("/api/v1/shares/{id}"),
        &[("Authorization", &basic("bs.an", TEST_PASSWORD))],
        "",
    );
    assert_eq!(del.status, 204, "{}", del.body);
    let after = call(port, "GET", &meta(STUDY_A), &with, "");
    assert_eq!(after.status, 410);
    let page = call(port, "GET", &format!("/s/{token}?lang=en"), &[], "");
    assert_eq!(page.status, 410);
    assert!(page.body.contains("no longer valid"), "{}", page.body);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains(&token), "the token is never logged");

    let by_creator = audit_of(&data, "bs.an");
    assert!(by_creator.contains("SEN-SHARE-CREATED"), "{by_creator}");
    assert!(by_creator.contains("SEN-SHARE-REVOKED"), "{by_creator}");
    let by_link = audit_of(&data, &format!("share:{id}"));
    assert!(by_link.contains("SEN-SHARE-USED"), "{by_link}");
    assert!(by_link.contains(STUDY_A), "reads of the study are recorded");
}

#[test]
fn patient_links_bearer_use_and_pin_lockout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_two(tmp.path(), &data);
    add_user(&data, "ky.thuat", "technologist");
    add_user(&data, "le.tan", "technologist");
    let server = Server::start(&data, &[]);
    let port = server.http_port;

    for days in [0, 91] {
        let r = create(
            port,
            "ky.thuat",
            &format!("{{\"patient\": \"BAD-1\", \"expires_in_days\": {days}}}"),
        );
        assert_eq!(r.status, 400, "{days} days: {}", r.body);
    }
    assert_eq!(
        create(port, "ky.thuat", "{\"patient\": \"BAD*\"}").status,
        400
    );

    // A link to all of a patient's studies, without a PIN, used by a
    // script as a bearer token.
    let r = create(port, "ky.thuat", "{\"patient\": \"BAD-1\"}");
    assert_eq!(r.status, 201, "{}", r.body);
    let made = json(&r);
    assert!(made["pin"].is_null());
    let bearer = format!("Bearer {}", made["token"].as_str().unwrap());
    let q = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(q.status, 200, "{}", q.body);
    assert!(
        q.body.contains(STUDY_A) && q.body.contains(STUDY_B),
        "{}",
        q.body
    );
    let bad = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[(
            "Authorization",
            "Bearer shr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        "",
    );
    assert_eq!(bad.status, 401);

    // With a PIN: not usable as a bearer token; five wrong PINs lock it,
    // and then even the right PIN is refused.
    let r = create(
        port,
        "ky.thuat",
        &format!("{{\"study\": \"{STUDY_B}\", \"pin\": true}}"),
    );
    let made = json(&r);
    let token = made["token"].as_str().unwrap().to_owned();
    let pin = made["pin"].as_str().unwrap().to_owned();
    let q = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(q.status, 401);
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for i in 1..=5 {
        let r = pin_form(port, &token, wrong);
        let want = if i < 5 { 401 } else { 429 };
        assert_eq!(r.status, want, "attempt {i}");
    }
    let r = pin_form(port, &token, &pin);
    assert_eq!(r.status, 429, "locked even for the right PIN");
    assert!(r.cookie("sen_share").is_none());

    // The listing: by id, a page at a time through the Link header, each
    // user's own links only; bad queries refused.
    let mut mine = vec![made["id"].as_str().unwrap().to_owned()];
    for user in ["ky.thuat", "le.tan", "ky.thuat", "le.tan", "ky.thuat"] {
        let r = create(port, user, &format!("{{\"study\": \"{STUDY_A}\"}}"));
        assert_eq!(r.status, 201, "{}", r.body);
        if user == "ky.thuat" {
            mine.push(json(&r)["id"].as_str().unwrap().to_owned());
        }
    }
    let auth = basic("ky.thuat", TEST_PASSWORD);
    let whole = json(&call(
        port,
        "GET",
        "/api/v1/shares",
        &[("Authorization", &auth)],
        "",
    ));
    let ids: Vec<String> = whole
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    // Two earlier links (the patient's, the locked one) plus three.
    assert_eq!(ids.len(), 5, "{whole}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
    assert!(mine.iter().all(|m| ids.contains(m)), "{ids:?} {mine:?}");
    assert!(whole
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["creator"] == "ky.thuat"));
    let paged = follow_next("/api/v1/shares?limit=2", 10, |path| {
        let r = call(port, "GET", path, &[("Authorization", &auth)], "");
        assert_eq!(r.status, 200, "{}", r.body);
        let page: Vec<String> = json(&r)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        let link = r
            .head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("link"))
            .map(|(_, v)| v.trim().to_owned());
        (page, link)
    });
    assert_eq!(paged, ids, "pages of two cover the listing once, in order");
    for bad in ["limit=0", "limit=1001", "after=a%2Fb", "sort=id"] {
        let r = call(
            port,
            "GET",
            &format!("/api/v1/shares?{bad}"),
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    let alerts = audit_of(&data, &format!("share:{}", made["id"].as_str().unwrap()));
    assert!(alerts.contains("SEN-SHARE-PIN-LOCKOUT"), "{alerts}");
}

/// The sample studies imported and a radiologist `bs.an`, served.
fn samples_with_radiologist() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let import = pacs(&data, &["import", sample_dir().to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    add_user(&data, "bs.an", "radiologist");
    let server = Server::start(&data, &[]);
    (tmp, server)
}

/// The Study Instance UIDs of a QIDO-RS answer (chunked bodies included).
fn study_uids(r: &Resp) -> Vec<String> {
    let start = r.body.find('[').unwrap();
    let end = r.body.rfind(']').unwrap();
    let rows: serde_json::Value = serde_json::from_str(&r.body[start..=end]).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row["0020000D"]["Value"][0].as_str().unwrap().to_owned())
        .collect()
}

/// The patient's view in a real browser at 390×844: PIN, study page, the
/// viewer showing the shared study, another study refused, and the link
/// stopping once revoked (tests/browser/access/share.spec.mjs).
#[test]
fn share_link_in_a_real_browser() {
    let (_tmp, server) = samples_with_radiologist();
    let port = server.http_port;
    let auth = basic("bs.an", TEST_PASSWORD);
    let q = call(
        port,
        "GET",
        "/dicom-web/studies?ModalitiesInStudy=CT",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(q.status, 200, "{}", q.body);
    let all = call(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &auth)],
        "",
    );
    let study = study_uids(&q)[0].clone();
    let other = study_uids(&all).into_iter().find(|u| *u != study).unwrap();
    let r = create(
        port,
        "bs.an",
        &format!("{{\"study\": \"{study}\", \"pin\": true}}"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let made = json(&r);
    let run = browser_spec(
        port,
        "tests/browser/access/share.spec.mjs",
        &[
            ("PACS_SHARE_TOKEN", made["token"].as_str().unwrap()),
            ("PACS_SHARE_PIN", made["pin"].as_str().unwrap()),
            ("PACS_SHARE_STUDY", &study),
            ("PACS_OTHER_STUDY", &other),
            ("PACS_SHARE_REVOKE_AUTH", &auth),
        ],
    );
    let (_, server_log) = server.stop();
    if let Some((passed, output)) = run {
        println!("{output}");
        assert!(passed, "browser spec failed; server log:\n{server_log}");
    }
}

/// Builds a Key Object Selection (PS3.3 A.35.4) in `out` that flags two
/// images of a study (pydicom).
const MAKE_KOS: &str = r#"
import sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
out, study, pid, sop_class, *refs = sys.argv[1:]
ds = Dataset()
ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
ds.SOPInstanceUID = generate_uid()
ds.StudyInstanceUID = study
ds.SeriesInstanceUID = generate_uid()
ds.Modality = "KO"
ds.PatientID = pid
ds.PatientName = "KEY^IMAGES"
ds.SeriesNumber = 99
ds.InstanceNumber = 1
ev = Dataset()
ev.StudyInstanceUID = study
items = []
for pair in refs:
    series, sop = pair.split("/")
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop
    rs = Dataset()
    rs.SeriesInstanceUID = series
    rs.ReferencedSOPSequence = [ref]
    items.append(rs)
ev.ReferencedSeriesSequence = items
ds.CurrentRequestedProcedureEvidenceSequence = [ev]
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = ds.SOPClassUID
meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta = meta
ds.save_as(out, enforce_file_format=True)
"#;

/// The patient page offers a JPEG of each key image of the study (those its
/// Key Object Selection flags), rendered under the link's scope; another
/// study's rendered image is refused.
#[test]
fn share_page_offers_key_images_as_jpeg() {
    let python = std::env::var("PACS_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pydicom = std::process::Command::new(&python)
        .args(["-c", "import pydicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pydicom {
        assert!(
            std::env::var_os("PACS_REQUIRE_PEERS").is_none(),
            "pydicom is not importable by {python}"
        );
        eprintln!("SKIPPED: pydicom is not importable by {python}");
        return;
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("sample-data/manifest.json")).unwrap(),
    )
    .unwrap();
    let files: Vec<&serde_json::Value> = manifest["files"].as_array().unwrap().iter().collect();
    let of = |study: &str| -> Vec<&serde_json::Value> {
        files
            .iter()
            .copied()
            .filter(|f| f["study"] == study)
            .collect()
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    let ct = of("ct-phantom");
    let mr = of("mr-head");
    let study = s(&ct[0]["study_instance_uid"]);
    let keys: Vec<(String, String)> = [3, 7]
        .iter()
        .map(|&i| {
            (
                s(&ct[i]["series_instance_uid"]),
                s(&ct[i]["sop_instance_uid"]),
            )
        })
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let kos = tmp.path().join("kos.dcm");
    let mut args = vec![
        "-c".to_owned(),
        MAKE_KOS.to_owned(),
        kos.to_str().unwrap().to_owned(),
        study.clone(),
        s(&ct[0]["patient_id"]),
        s(&ct[0]["sop_class_uid"]),
    ];
    args.extend(keys.iter().map(|(se, sop)| format!("{se}/{sop}")));
    let o = std::process::Command::new(&python)
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "make KOS: {}", stderr(&o));
    let import = pacs(
        &data,
        &[
            "import",
            sample_dir().to_str().unwrap(),
            kos.to_str().unwrap(),
        ],
    );
    assert!(import.status.success(), "{}", stderr(&import));
    add_user(&data, "bs.an", "radiologist");
    let server = Server::start(&data, &[]);
    let port = server.http_port;

    let r = create(port, "bs.an", &format!("{{\"study\": \"{study}\"}}"));
    assert_eq!(r.status, 201, "{}", r.body);
    let token = json(&r)["token"].as_str().unwrap().to_owned();
    let page = call(port, "GET", &format!("/s/{token}?lang=en"), &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let links: Vec<String> = keys
        .iter()
        .map(|(se, sop)| {
            format!(
                "/dicom-web/studies/{study}/series/{se}/instances/{sop}/rendered?accept=image/jpeg"
            )
        })
        .collect();
    for (n, l) in links.iter().enumerate() {
        assert!(
            page.body.contains(l.as_str()),
            "key image {n}: {}",
            page.body
        );
        assert!(
            page.body
                .contains(&format!("download=\"key-image-{}.jpg\"", n + 1)),
            "{}",
            page.body
        );
    }
    assert!(page.body.contains("Key image (JPEG)"), "{}", page.body);
    let c = format!("sen_share={}", page.cookie("sen_share").unwrap());
    let with = [("Cookie", c.as_str())];
    for l in &links {
        let jpeg = call(port, "GET", l, &with, "");
        assert_eq!(jpeg.status, 200, "{l}: {}", jpeg.body);
        assert!(
            jpeg.head.to_ascii_lowercase().contains("image/jpeg"),
            "{}",
            jpeg.head
        );
    }
    // Without the link, and for another study with it: refused.
    assert_eq!(call(port, "GET", &links[0], &[], "").status, 401);
    let other = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}/rendered?accept=image/jpeg",
        s(&mr[0]["study_instance_uid"]),
        s(&mr[0]["series_instance_uid"]),
        s(&mr[0]["sop_instance_uid"])
    );
    assert_eq!(call(port, "GET", &other, &with, "").status, 403);

    // A study without a Key Object Selection: no key image links, the
    // viewer's JPEG button is named instead.
    let r = create(
        port,
        "bs.an",
        &format!("{{\"study\": \"{}\"}}", s(&mr[0]["study_instance_uid"])),
    );
    let token = json(&r)["token"].as_str().unwrap().to_owned();
    let page = call(port, "GET", &format!("/s/{token}?lang=en"), &[], "");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("key-image-"), "{}", page.body);
    assert!(page.body.contains("JPEG button"), "{}", page.body);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// The reader's Share button in a real browser: a signed-in radiologist
/// makes a link with a PIN from the viewer, sees its URL, PIN and QR code,
/// and the link opens on a phone, whose viewer saves the image on screen
/// as a JPEG (tests/browser/access/share-button.spec.mjs).
#[test]
fn share_button_in_the_viewer() {
    let (_tmp, server) = samples_with_radiologist();
    let port = server.http_port;
    let q = call(
        port,
        "GET",
        "/dicom-web/studies?ModalitiesInStudy=CT",
        &[("Authorization", &basic("bs.an", TEST_PASSWORD))],
        "",
    );
    assert_eq!(q.status, 200, "{}", q.body);
    let study = study_uids(&q)[0].clone();
    let run = browser_spec(
        port,
        "tests/browser/access/share-button.spec.mjs",
        &[
            ("PACS_TEST_USER", "bs.an"),
            ("PACS_TEST_PASSWORD", TEST_PASSWORD),
            ("PACS_SHARE_STUDY", &study),
        ],
    );
    let (_, server_log) = server.stop();
    if let Some((passed, output)) = run {
        println!("{output}");
        assert!(passed, "browser spec failed; server log:\n{server_log}");
    }
}
