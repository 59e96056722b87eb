//! Several `pacs serve` nodes sharing one object store (a real S3 server on
//! 127.0.0.1, s3s-fs: every request's signature checked, each object a
//! file) and one index (a throwaway PostgreSQL), each with its
//! own data dir: a study stored through two nodes at once is counted right
//! and found on the third, every instance is retrieved byte-identical from
//! every node, a study deleted on one node is gone from all (index and
//! bucket), a series deleted on another likewise, an ingest process
//! killed mid-stream loses nothing it acknowledged, as seen from another
//! node, patient merges and updates made on one node are applied by
//! the other, and the job queue is one: a job enqueued on one node is
//! retried and deleted through the other, and a job whose node is killed
//! mid-run is taken over by the other once its lease runs out.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use pacs_testkit::postgres::TestPostgres;
use pacs_testkit::s3::{S3sFs, S3S_ACCESS_KEY, S3S_SECRET_KEY};
use pacs_testkit::samples::{files_of, s};
use serde_json::Value;

/// The config every node shares: the bucket, the index, the query AE.
fn shared_config(dir: &Path, s3: &S3sFs, index_url: &str) -> PathBuf {
    let cfg = dir.join("shared.toml");
    std::fs::write(
        &cfg,
        format!(
            "strict_ae = false\nstorage_url = \"s3://nodes/archive\"\nindex_url = \"{index_url}\"\n\n\
             [s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\nallow_http = true\n\
             access_key_id = \"{S3S_ACCESS_KEY}\"\nsecret_access_key = \"{S3S_SECRET_KEY}\"\n\n\
             [[remote_ae]]\nae_title = \"WS\"\nhost = \"127.0.0.1\"\nport = 11113\n",
            s3.endpoint()
        ),
    )
    .unwrap();
    cfg
}

fn json_of(port: u16, path: &str) -> Value {
    let r = request(port, "GET", path, &[], None);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// The data set of a Part 10 file: what follows the file meta group.
fn dataset_of(part10: &[u8]) -> &[u8] {
    assert_eq!(&part10[128..132], b"DICM");
    let group_len = u32::from_le_bytes(part10[140..144].try_into().unwrap()) as usize;
    &part10[144 + group_len..]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// WADO-RS of one instance on `port`: the status and the body.
fn wado(port: u16, study: &str, series: &str, sop: &str) -> (u16, Vec<u8>) {
    let r = request(
        port,
        "GET",
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}"),
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        None,
    );
    (r.status, r.body)
}

fn count_instances(port: u16, study: &str) -> usize {
    json_of(port, &format!("/dicom-web/studies/{study}/instances"))
        .as_array()
        .unwrap()
        .len()
}

/// Three nodes on one bucket and one PostgreSQL database.
#[test]
fn three_nodes_share_one_archive() {
    let Some(storescu) = dcmtk("storescu") else {
        return;
    };
    let Some(findscu) = dcmtk("findscu") else {
        return;
    };
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("nodes");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = shared_config(tmp.path(), &s3, &url);
    let cfg = cfg.to_str().unwrap();
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| Server::start(&tmp.path().join(n), &["--config", cfg]))
        .collect();
    for n in &nodes {
        let h = json_of(n.http_port, "/healthz");
        assert_eq!(h["dependencies"]["storage"]["kind"], "s3", "{h}");
        assert_eq!(h["dependencies"]["storage"]["status"], "ok", "{h}");
        assert_eq!(h["dependencies"]["index"]["status"], "ok", "{h}");
    }

    // The CT's 24 slices: odd ones through node A, even ones through node
    // B, at the same time, into the same study and series.
    let ct = files_of("ct-phantom");
    let study = s(&ct[0]["study_instance_uid"]);
    let series = s(&ct[0]["series_instance_uid"]);
    let path_of = |f: &Value| sample_dir().join(s(&f["path"]));
    let halves: Vec<Vec<PathBuf>> = (0..2)
        .map(|h| ct.iter().skip(h).step_by(2).map(path_of).collect())
        .collect();
    let senders: Vec<_> = halves
        .iter()
        .zip(&nodes)
        .map(|(files, node)| {
            Command::new(&storescu)
                .args(["-aec", "PACS", "-aet", "MODALITY", "127.0.0.1"])
                .arg(node.dimse_port.to_string())
                .args(files)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in senders {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "storescu: {}{}", stdout(&o), stderr(&o));
    }

    // Node C, which took nothing, finds the whole study with the right
    // counts (QIDO and C-FIND).
    let c = &nodes[2];
    let rows = json_of(
        c.http_port,
        &format!("/dicom-web/studies?StudyInstanceUID={study}&includefield=00201208&includefield=00201206"),
    );
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["00201208"]["Value"][0], 24, "{rows}");
    assert_eq!(rows[0]["00201206"]["Value"][0], 1, "{rows}");
    assert_eq!(count_instances(c.http_port, &study), 24);
    let o = Command::new(&findscu)
        .args(["-aet", "WS", "-aec", "PACS", "-S", "-k", "0008,0052=STUDY"])
        .args(["-k", "0020,1208", "-k"])
        .arg(format!("0020,000D={study}"))
        .args(["127.0.0.1", &c.dimse_port.to_string()])
        .output()
        .unwrap();
    let found = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "findscu: {found}");
    assert!(found.contains(&study), "C-FIND on node C: {found}");
    assert!(
        found.contains("(0020,1208) IS [24]"),
        "C-FIND on node C: {found}"
    );

    // Every instance, whichever node took it, comes back byte-identical
    // from every node.
    for f in &ct {
        let sent = std::fs::read(path_of(f)).unwrap();
        for node in &nodes {
            let (status, body) = wado(node.http_port, &study, &series, &s(&f["sop_instance_uid"]));
            assert_eq!(status, 200);
            assert!(
                contains(&body, dataset_of(&sent)),
                "{} from node on port {} differs from what was sent",
                s(&f["sop_instance_uid"]),
                node.http_port
            );
        }
    }

    // A second study (the CR) through node B; then one series of the CT
    // deleted on node A and the CR study deleted on node B: both are gone
    // from every node and from the bucket.
    let cr = files_of("cr-chest");
    let cr_study = s(&cr[0]["study_instance_uid"]);
    let o = Command::new(&storescu)
        .args(["-aec", "PACS", "127.0.0.1"])
        .arg(nodes[1].dimse_port.to_string())
        .args(cr.iter().map(path_of))
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}{}", stdout(&o), stderr(&o));
    assert_eq!(count_instances(c.http_port, &cr_study), cr.len());

    // A bad UID and another study's series are refused.
    let r = request(
        nodes[0].http_port,
        "DELETE",
        "/api/v1/studies/not-a-uid",
        &[],
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        nodes[0].http_port,
        "DELETE",
        &format!("/api/v1/studies/{cr_study}/series/{series}"),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(count_instances(c.http_port, &study), 24);

    let r = request(
        nodes[0].http_port,
        "DELETE",
        &format!("/api/v1/studies/{study}/series/{series}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 24, "{}", r.text());
    let r = request(
        nodes[1].http_port,
        "DELETE",
        &format!("/api/v1/studies/{cr_study}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], cr.len(), "{}", r.text());
    let r = request(
        nodes[2].http_port,
        "DELETE",
        &format!("/api/v1/studies/{cr_study}"),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "deleted twice: {}", r.text());
    for node in &nodes {
        for st in [&study, &cr_study] {
            // No match: 204 with no body (PS3.18 8.3.4.2 allows 200 with []).
            let r = request(
                node.http_port,
                "GET",
                &format!("/dicom-web/studies?StudyInstanceUID={st}"),
                &[],
                None,
            );
            assert!(
                r.status == 204 || (r.status == 200 && r.json() == Value::Array(vec![])),
                "{st} still listed on {}: {} {}",
                node.http_port,
                r.status,
                r.text()
            );
        }
        let (status, _) = wado(
            node.http_port,
            &study,
            &series,
            &s(&ct[0]["sop_instance_uid"]),
        );
        assert_eq!(status, 404);
    }
    let keys = s3.keys("nodes");
    for f in ct.iter().chain(&cr) {
        let sop = s(&f["sop_instance_uid"]);
        assert!(
            !keys.iter().any(|k| k.ends_with(&format!("/{sop}.dcm"))),
            "{sop} left in the bucket"
        );
    }
    // Each deletion is in the audit trail of the node that did it.
    let audit = json_of(
        nodes[1].http_port,
        &format!("/api/v1/audit?study={cr_study}"),
    );
    let text = audit.to_string();
    assert!(
        audit.as_array().is_some_and(|a| !a.is_empty()) && text.contains("deleted"),
        "no deletion audited on node B: {text}"
    );

    for n in nodes {
        let (status, log) = n.stop();
        assert!(status.success(), "{log}");
    }
}

/// An ingest process on the shared archive is killed (SIGKILL) after a
/// random number of acknowledged stores, six times; after each, a serving
/// node returns every acknowledged instance byte-identical.
#[test]
fn a_node_killed_mid_store_loses_nothing_acknowledged() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("killed");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = shared_config(tmp.path(), &s3, &url);
    let cfg = cfg.to_str().unwrap().to_owned();
    let reader_node = Server::start(&tmp.path().join("reader"), &["--config", &cfg]);
    // SOP Instance UID → the file acknowledged.
    let mut acked: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut rng = Rng::new(0x4e_0de5);
    let mut mid_stream = 0;
    for round in 0..6 {
        let mut import = Command::new(pacs_bin());
        import
            .arg("--data-dir")
            .arg(tmp.path().join(format!("writer-{round}")))
            .args(["--config", &cfg, "import", "--print-stored", "--jobs", "4"])
            .arg(sample_dir())
            .env("RUST_LOG", "error");
        let killed = import_then_kill(import, KillAt::Acks(1 + rng.below(20) as usize));
        if killed.mid_stream {
            mid_stream += 1;
        }
        for (sop, _, path) in killed.stored {
            acked.insert(sop, PathBuf::from(path));
        }
        let by_sop: BTreeMap<String, Value> = pacs_testkit::samples::manifest()["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (s(&f["sop_instance_uid"]), f.clone()))
            .collect();
        for (sop, path) in &acked {
            let f = &by_sop[sop];
            let (status, body) = wado(
                reader_node.http_port,
                &s(&f["study_instance_uid"]),
                &s(&f["series_instance_uid"]),
                sop,
            );
            assert_eq!(status, 200, "round {round}: acknowledged {sop} lost");
            let sent = std::fs::read(path).unwrap();
            assert!(
                contains(&body, &sent),
                "round {round}: acknowledged {sop} changed"
            );
        }
    }
    assert!(mid_stream >= 2, "only {mid_stream} kills landed mid-stream");
    let (status, log) = reader_node.stop();
    assert!(status.success(), "{log}");
}

/// `request` with HTTP Basic or a bearer token (none when empty) and an
/// optional JSON body.
fn call(port: u16, method: &str, path: &str, auth: &str, body: Option<&Value>) -> Resp {
    let mut headers = Vec::new();
    if !auth.is_empty() {
        headers.push(("Authorization", auth));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    request(port, method, path, &headers, body)
}

/// Users, tokens, orders and MPPS live in the shared PostgreSQL database:
/// an admin made with `pacs user add` on the shared config (no node
/// running) administers both nodes; a user created through node A's API
/// signs in on node B; a token revoked on A is refused by B once B's cache
/// entry expires; an order created on A is in the Modality Worklist of B,
/// which takes the MPPS N-CREATE (the order moves to in progress, as seen
/// on A), and A takes the N-SET COMPLETED of that MPPS (the order is
/// completed, as seen on B).
#[test]
fn two_nodes_share_users_tokens_orders_and_mpps() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("shared");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = shared_config(tmp.path(), &s3, &url);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[[remote_ae]]\nae_title = \"CT1\"\nhost = \"127.0.0.1\"\nport = 1\n");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();

    // The admin, through the CLI on a data dir of its own: written to
    // PostgreSQL, not to that data dir.
    add_user_with(&tmp.path().join("cli"), &["--config", cfg], "root", "admin");
    assert_eq!(pg.psql("shared", "SELECT count(*) FROM users"), "1");

    // Node B ran on its own sled index before, with a user of its own:
    // its first start on PostgreSQL copies that user there, once.
    add_user(&tmp.path().join("b"), "legacy", "radiologist");
    let a = Server::start(&tmp.path().join("a"), &["--config", cfg]);
    let b = Server::start(&tmp.path().join("b"), &["--config", cfg]);
    let root = basic("root", TEST_PASSWORD);
    let qido = |port: u16, auth: &str| call(port, "GET", "/dicom-web/studies", auth, None).status;
    for node in [&a, &b] {
        assert_eq!(qido(node.http_port, ""), 401, "sign-in is required");
        assert_eq!(qido(node.http_port, &root), 204, "the CLI's admin");
    }

    let legacy = basic("legacy", TEST_PASSWORD);
    assert_eq!(qido(a.http_port, &legacy), 204, "B's own user, copied");
    assert!(tmp
        .path()
        .join("b")
        .join("records-copied-to-postgres")
        .exists());
    let r = call(a.http_port, "DELETE", "/api/v1/users/legacy", &root, None);
    assert_eq!(r.status, 204, "{}", r.text());
    let (status, log) = b.stop();
    assert!(status.success(), "{log}");
    let b = Server::start(&tmp.path().join("b"), &["--config", cfg]);
    assert_eq!(
        qido(b.http_port, &legacy),
        401,
        "the user removed on A came back from B's sled"
    );

    // A user made on A signs in on B.
    let binh = basic("binh", TEST_PASSWORD);
    assert_eq!(qido(b.http_port, &binh), 401);
    let r = call(
        a.http_port,
        "POST",
        "/api/v1/users",
        &root,
        Some(&serde_json::json!({
            "name": "binh", "role": "technologist", "password": TEST_PASSWORD
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // B cached no answer for an unknown user, so it sees binh at once.
    assert_eq!(qido(b.http_port, &binh), 204);

    // A token made on A works on B; revoked on A, B refuses it once its
    // cache entry (access::accounts::CACHE_TTL, 5 s) is old.
    let r = call(
        a.http_port,
        "POST",
        "/api/v1/tokens",
        &root,
        Some(&serde_json::json!({"name": "emr", "role": "referrer"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let bearer = format!("Bearer {}", s(&created["token"]));
    assert_eq!(qido(b.http_port, &bearer), 204);
    let r = call(
        a.http_port,
        "DELETE",
        &format!("/api/v1/tokens/{}", s(&created["id"])),
        &root,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(qido(a.http_port, &bearer), 401, "A refuses it at once");
    let mut refused = false;
    for _ in 0..120 {
        if qido(b.http_port, &bearer) == 401 {
            refused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(refused, "node B still accepts the token revoked on node A");

    // An order made on A, in B's worklist; MPPS N-CREATE on B, N-SET on A.
    let order = serde_json::json!({
        "patient_id": "079123456789",
        "patient_name": "Nguyễn^Thị Hồng",
        "patient_birth_date": "19800215",
        "patient_sex": "F",
        "accession_number": "NODES-1",
        "modality": "CT",
        "station_ae_title": "CT1",
        "start_date": "20261206",
        "start_time": "0930",
    });
    let r = call(a.http_port, "POST", "/api/v1/orders", &binh, Some(&order));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = s(&r.json()["id"]);
    let status_on = |node: &Server| {
        let r = call(
            node.http_port,
            "GET",
            &format!("/api/v1/orders/{id}"),
            &binh,
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["status"].clone()
    };
    assert_eq!(status_on(&b), "scheduled");
    let state = tmp.path().join("day.json");
    let script = pacs_testkit::samples::repo_root().join("tests/peers/workflow_modality.py");
    let day = |node: &Server, args: &[&str]| {
        let o = Command::new(&python)
            .arg(&script)
            .arg("day")
            .arg(node.dimse_port.to_string())
            .args(["CT1", "20261206", state.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        serde_json::from_str::<Value>(stdout(&o).trim()).unwrap()
    };
    let morning = day(&b, &["start"]);
    assert_eq!(
        morning["by_station"],
        serde_json::json!(["NODES-1"]),
        "{morning}"
    );
    assert_eq!(morning["create"], serde_json::json!([0]), "{morning}");
    assert_eq!(status_on(&a), "in_progress");
    let files = ct_files(1);
    let mut args = vec!["finish", "--files"];
    args.extend(files.iter().map(String::as_str));
    let exams = day(&a, &args);
    assert_eq!(exams["store"], serde_json::json!([0]), "{exams}");
    assert_eq!(
        exams["set_completed"],
        serde_json::json!([0]),
        "N-SET on A of the MPPS B created: {exams}"
    );
    assert_eq!(status_on(&b), "completed");
    assert_eq!(pg.psql("shared", "SELECT count(*) FROM mpps"), "1");

    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
    }
}

/// A synthetic object (explicit VR little endian) of one patient.
fn patient_object(study: &str, sop: &str, name: &str, id: &str) -> Vec<u8> {
    sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study,
        series: &format!("{study}.1"),
        sop,
        patient_name: name,
        patient_id: id,
        pixel_bytes: 64,
        ..Default::default()
    })
}

/// Patient ID (0010,0020) LO in explicit VR little endian, for an ID of
/// even length (no padding).
fn patient_id_element(id: &str) -> Vec<u8> {
    assert_eq!(id.len() % 2, 0);
    let mut e = vec![0x10, 0x00, 0x20, 0x00, b'L', b'O', id.len() as u8, 0];
    e.extend_from_slice(id.as_bytes());
    e
}

/// The patient's history as a node answers it.
fn patient_history(port: u16, id: &str) -> Value {
    json_of(port, &format!("/api/v1/patients/{id}/history"))
}

fn study_uids(port: u16, query: &str) -> Vec<String> {
    let r = request(
        port,
        "GET",
        &format!("/dicom-web/studies?{query}"),
        &[],
        None,
    );
    if r.status == 204 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    let mut v: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|row| s(&row["0020000D"]["Value"][0]))
        .collect();
    v.sort();
    v
}

/// Waits (bounded) until node `port` sends `sop` with `id` as its Patient
/// ID; whether it did.
fn retrieved_with_patient(port: u16, study: &str, sop: &str, id: &str) -> bool {
    let wanted = patient_id_element(id);
    for _ in 0..60 {
        let (status, body) = wado(port, study, &format!("{study}.1"), sop);
        assert_eq!(status, 200);
        if contains(&body, &wanted) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// Patient changes live in the shared PostgreSQL database: node B's own
/// change from before (sled) is copied there on its first start; a merge
/// made through node A is applied by node B within a few seconds (the
/// objects B sends carry the survivor's ID, an object B takes afterwards
/// is filed under the survivor); an update made through B likewise on A;
/// both nodes answer the same history.
#[test]
fn two_nodes_share_patient_updates_and_merges() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("patients");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = shared_config(tmp.path(), &s3, &url);
    let cfg = cfg.to_str().unwrap();
    const S0: &str = "1.2.826.0.1.3680043.10.78.0";
    const S1: &str = "1.2.826.0.1.3680043.10.78.1";
    const S2: &str = "1.2.826.0.1.3680043.10.78.2";
    const S3: &str = "1.2.826.0.1.3680043.10.78.3";
    let sop = |study: &str| format!("{study}.1.1");

    // Node B on its own (sled index, local blobs) corrects a patient.
    let b_dir = tmp.path().join("b");
    let own = Server::start(&b_dir, &[]);
    let (status, body) = stow(
        own.http_port,
        &patient_object(S0, &sop(S0), "SOLO^OLD", "PS00"),
    );
    assert_eq!(status, 200, "{body}");
    let r = request(
        own.http_port,
        "PATCH",
        "/api/v1/patients/PS00",
        &[("Content-Type", "application/json")],
        Some(&serde_json::json!({"patient_name": "SOLO^NEW"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, log) = own.stop();
    assert!(status.success(), "{log}");

    let a = Server::start(&tmp.path().join("a"), &["--config", cfg]);
    let b = Server::start(&b_dir, &["--config", cfg]);
    assert!(b_dir.join("patient-changes-copied-to-postgres").exists());
    let solo = patient_history(a.http_port, "PS00");
    assert_eq!(
        solo.as_array().unwrap().len(),
        1,
        "B's own change, copied: {solo}"
    );
    assert_eq!(solo[0]["after"]["patient_name"], "SOLO^NEW", "{solo}");

    // Two patients, stored through A.
    for (study, name, id) in [(S1, "NGUYEN^AN", "PA01"), (S2, "TRAN^BINH", "PB02")] {
        let (status, body) = stow(a.http_port, &patient_object(study, &sop(study), name, id));
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        retrieved_with_patient(b.http_port, S1, &sop(S1), "PA01"),
        "the stored object before any change"
    );

    // PA01 merged into PB02 through A.
    let r = request(
        a.http_port,
        "POST",
        "/api/v1/patients/merge",
        &[("Content-Type", "application/json")],
        Some(&serde_json::json!({
            "surviving": {"patient_id": "PB02"},
            "merged": {"patient_id": "PA01"}
        })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        retrieved_with_patient(b.http_port, S1, &sop(S1), "PB02"),
        "node B still sends the merged patient's object as stored"
    );
    // An object of the merged patient taken by B now is filed under the
    // survivor, as seen from both nodes.
    let (status, body) = stow(
        b.http_port,
        &patient_object(S3, &sop(S3), "NGUYEN^AN", "PA01"),
    );
    assert_eq!(status, 200, "{body}");
    for node in [&a, &b] {
        assert_eq!(study_uids(node.http_port, "PatientID=PB02"), [S1, S2, S3]);
        assert!(study_uids(node.http_port, "PatientID=PA01").is_empty());
    }

    // PB02's name corrected through B, applied by A.
    let r = request(
        b.http_port,
        "PATCH",
        "/api/v1/patients/PB02",
        &[("Content-Type", "application/json")],
        Some(&serde_json::json!({"patient_name": "TRAN^BINH^THI"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["studies"], 3, "{}", r.text());
    let mut renamed = false;
    for _ in 0..60 {
        let (status, body) = wado(a.http_port, S3, &format!("{S3}.1"), &sop(S3));
        assert_eq!(status, 200);
        if contains(&body, b"TRAN^BINH^THI") {
            renamed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(renamed, "node A still sends the old name");
    for node in [&a, &b] {
        assert_eq!(
            study_uids(node.http_port, "PatientName=TRAN^BINH^THI"),
            [S1, S2, S3]
        );
    }

    // The same history on both nodes: the merge, then the update.
    for id in ["PB02", "PA01"] {
        let (on_a, on_b) = (
            patient_history(a.http_port, id),
            patient_history(b.http_port, id),
        );
        assert_eq!(on_a, on_b, "{id}");
        let kinds: Vec<&str> = on_a
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if id == "PB02" {
            &["merge", "update"]
        } else {
            &["merge"]
        };
        assert_eq!(kinds, expected, "{id}: {on_a}");
    }
    assert_eq!(
        pg.psql("patients", "SELECT count(*) FROM patient_changes"),
        "3"
    );

    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
    }
}

/// One HTTP/1.1 request with a raw body; the status, the response head
/// (lower-cased names) and the body.
fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    raw_to(
        port,
        &format!("127.0.0.1:{port}"),
        method,
        path,
        headers,
        body,
    )
}

/// [`raw`] with another `Host` (the name a load balancer forwards to
/// every node).
fn raw_to(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (
        status,
        head,
        String::from_utf8_lossy(&buf[split + 4..]).into_owned(),
    )
}

/// Signs `user` in through node `port`'s login form; the session cookie
/// (`name=value`).
fn sign_in(port: u16, user: &str) -> String {
    let origin = format!("http://127.0.0.1:{port}");
    let body = format!("username={user}&password={TEST_PASSWORD}&next=%2Fviewer");
    let (status, head, text) = raw(
        port,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 303, "{text}");
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or("").to_owned())
        })
        .unwrap()
}

/// Browser sessions live in the shared PostgreSQL database: a cookie from
/// node A's login page is accepted by node B, whose admin form takes the
/// session's CSRF token as read on A; a user disabled on B is signed out
/// on A too; a sign-out on B ends the session on A; `pacs user passwd`
/// ends the user's sessions on both; and the database holds only the
/// SHA-256 of each cookie.
#[test]
fn two_nodes_share_browser_sessions() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("sessions");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = shared_config(tmp.path(), &s3, &url);
    let cfg = cfg.to_str().unwrap();
    add_user_with(&tmp.path().join("cli"), &["--config", cfg], "root", "admin");
    add_user_with(
        &tmp.path().join("cli"),
        &["--config", cfg],
        "an",
        "radiologist",
    );
    let a = Server::start(&tmp.path().join("a"), &["--config", cfg]);
    let b = Server::start(&tmp.path().join("b"), &["--config", cfg]);
    let (pa, pb) = (a.http_port, b.http_port);
    let with = |port: u16, cookie: &str, method: &str, path: &str| {
        raw(port, method, path, &[("Cookie", cookie)], b"").0
    };

    let an = sign_in(pa, "an");
    let root = sign_in(pa, "root");
    for port in [pa, pb] {
        assert_eq!(with(port, &an, "GET", "/dicom-web/studies"), 204);
        assert_eq!(
            with(port, "senpacs_session=forged", "GET", "/dicom-web/studies"),
            401
        );
    }
    // The cookie's value is not in the database, its SHA-256 is.
    let value = an.split_once('=').unwrap().1;
    let hashes = pg.psql(
        "sessions",
        "SELECT encode(key, 'hex') FROM browser_sessions",
    );
    assert_eq!(hashes.lines().count(), 2, "{hashes}");
    assert!(!hashes.contains(value));

    // The CSRF token read on A is the session's on B.
    let (status, _, me) = raw(pa, "GET", "/api/v1/session", &[("Cookie", &root)], b"");
    assert_eq!(status, 200, "{me}");
    let me: Value = serde_json::from_str(&me).unwrap();
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let origin_b = format!("http://127.0.0.1:{pb}");
    let admin_post = |form: String| {
        raw(
            pb,
            "POST",
            "/admin/users/an/disable",
            &[
                ("Cookie", &root),
                ("Origin", &origin_b),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        )
        .0
    };
    assert_eq!(admin_post("csrf=wrong".into()), 403);
    assert_eq!(with(pa, &an, "GET", "/dicom-web/studies"), 204);
    assert_eq!(admin_post(format!("csrf={csrf}")), 200);
    // Disabled on B: an's session is over on both nodes.
    for port in [pa, pb] {
        assert_eq!(with(port, &an, "GET", "/dicom-web/studies"), 401);
    }

    // A sign-out on B ends the session on A.
    assert_eq!(with(pa, &root, "GET", "/dicom-web/studies"), 204);
    let (status, _, _) = raw(
        pb,
        "POST",
        "/logout",
        &[("Cookie", &root), ("Origin", &origin_b)],
        b"",
    );
    assert_eq!(status, 303);
    for port in [pa, pb] {
        assert_eq!(with(port, &root, "GET", "/dicom-web/studies"), 401);
    }
    assert_eq!(
        pg.psql("sessions", "SELECT count(*) FROM browser_sessions"),
        "0"
    );

    // `pacs user passwd` on the shared config, while the nodes run, signs
    // the user out of every node.
    let root = sign_in(pb, "root");
    assert_eq!(with(pa, &root, "GET", "/dicom-web/studies"), 204);
    let mut passwd = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(tmp.path().join("cli"))
        .args([
            "--config",
            cfg,
            "user",
            "passwd",
            "root",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = passwd.stdin.take().unwrap();
        stdin
            .write_all(format!("{TEST_PASSWORD}\n").as_bytes())
            .unwrap();
    }
    let out = passwd.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for port in [pa, pb] {
        assert_eq!(with(port, &root, "GET", "/dicom-web/studies"), 401);
    }
    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
    }
}

fn job_of<'a>(jobs: &'a [Value], kind: &str) -> Option<&'a Value> {
    jobs.iter().find(|j| j["kind"] == kind)
}

/// One job queue for two nodes on one PostgreSQL: a study stored through
/// node A queues a study-stable check there, which queues an IAN (to a
/// peer that refuses connections: dead-lettered after two attempts) and
/// an "images available" message to the HIS. Node B lists them all; the
/// dead IAN is retried through B (it runs again, on either node, and is
/// dead-lettered again, as A sees) and deleted through B (gone from A).
/// The HIS leaves the first message unanswered: its node holds the job,
/// renewing its 2 s lease, and the other node does not take it over
/// while that node lives; once it is killed (SIGKILL), the other node
/// takes the job over after the lease, the HIS acknowledges it, and the
/// job is done after two attempts, never sent again.
#[test]
fn two_nodes_share_one_job_queue() {
    use std::time::{Duration, Instant};
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    s3.create_bucket("nodes");
    let url = pg.create_database("jobs");
    let tmp = tempfile::tempdir().unwrap();
    // The HIS leaves the first message unanswered, acknowledges the rest.
    let (his_port, messages) = his(&["HOLD", "AA"]);
    let shared = std::fs::read_to_string(shared_config(tmp.path(), &s3, &url)).unwrap();
    let cfg = tmp.path().join("jobs.toml");
    std::fs::write(
        &cfg,
        format!(
            "job_lease_secs = 2\njob_retry_base = 1\njob_retry_max = 1\njob_max_attempts = 2\n\
             ian_destinations = [\"RIS\"]\nian_stable_after_secs = 1\n{shared}\n\
             [[remote_ae]]\nae_title = \"RIS\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
             [hl7_out]\naddress = \"127.0.0.1:{his_port}\"\nviewer_url = \"https://pacs.bv.vn/\"\n\
             ack_timeout_secs = 120\n",
            free_port()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut nodes: Vec<Option<Server>> = ["a", "b"]
        .iter()
        .map(|n| Some(Server::start(&tmp.path().join(n), &["--config", cfg])))
        .collect();
    let port = |i: usize, nodes: &[Option<Server>]| nodes[i].as_ref().unwrap().http_port;
    let (pa, pb) = (port(0, &nodes), port(1, &nodes));

    let file = &ct_files(1)[0];
    let (status, body) = stow(pa, &std::fs::read(file).unwrap());
    assert_eq!(status, 200, "{body}");

    // Node B sees the jobs node A's store started.
    let listed = wait_jobs(pb, "IAN dead and HIS message running", |j| {
        job_of(j, "ian").is_some_and(|i| i["state"] == "dead")
            && job_of(j, "hl7-images-available")
                .is_some_and(|h| h["state"] == "running" && h["owner"].is_string())
    });
    let stable = job_of(&listed, "study-stable").unwrap();
    assert_eq!(stable["state"], "done", "{listed:#?}");
    let ian = job_of(&listed, "ian").unwrap().clone();
    assert_eq!(ian["attempts"], 2, "{listed:#?}");
    assert!(ian["owner"].is_null(), "{ian}");
    let ian_id = ian["id"].as_u64().unwrap();

    // The listing pages newest first, a page chained to the next by its
    // Link header, on either node; filters by state and kind; bad queries
    // are refused with a message.
    let all = queue_jobs(pb);
    assert!(all.len() >= 3, "{all:#?}");
    assert!(
        all.windows(2)
            .all(|w| w[0]["id"].as_u64() > w[1]["id"].as_u64()),
        "newest first: {all:#?}"
    );
    let paged = follow_next("/api/v1/queue?limit=1", all.len() + 1, |path| {
        let r = call(pa, "GET", path, "", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
        (
            vec![page[0]["id"].clone()],
            r.header("link").map(str::to_owned),
        )
    });
    let ids: Vec<Value> = all.iter().map(|j| j["id"].clone()).collect();
    assert_eq!(paged, ids, "pages of one cover the listing once, in order");
    let dead = call(pa, "GET", "/api/v1/queue?state=dead&kind=ian", "", None).json();
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    assert_eq!(dead[0]["id"], ian_id);
    let none = call(pa, "GET", "/api/v1/queue?kind=ian&state=queued", "", None).json();
    assert_eq!(none, serde_json::json!([]));
    for bad in [
        "state=stuck",
        "limit=0",
        "limit=1001",
        "limit=x",
        "before=-1",
        "kind=a%20b",
        "sort=id",
    ] {
        let r = call(pa, "GET", &format!("/api/v1/queue?{bad}"), "", None);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{bad}: {}", r.text());
    }

    // Retried through B: it runs again and is dead-lettered again, as A
    // sees; then deleted through B, gone from A.
    let r = call(
        pb,
        "POST",
        &format!("/api/v1/queue/{ian_id}/retry"),
        "",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after = wait_jobs(pa, "IAN retried and dead again", |j| {
        j.iter().any(|i| {
            i["id"] == ian_id
                && i["state"] == "dead"
                && i["attempts"] == 2
                && i["updated_ms"].as_u64() > ian["updated_ms"].as_u64()
        })
    });
    assert_eq!(after.iter().filter(|j| j["kind"] == "ian").count(), 1);
    let r = call(pb, "DELETE", &format!("/api/v1/queue/{ian_id}"), "", None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(queue_jobs(pa).iter().all(|j| j["id"] != ian_id));

    // The HIS message: held by one node, which renews its lease.
    let hl7 = job_of(&queue_jobs(pa), "hl7-images-available")
        .unwrap()
        .clone();
    assert_eq!(hl7["state"], "running", "{hl7}");
    let hl7_id = hl7["id"].as_u64().unwrap();
    let owner = hl7["owner"].as_str().unwrap().to_owned();
    let pid: u32 = owner.rsplit(':').nth(1).unwrap().parse().unwrap();
    let holder = nodes
        .iter()
        .position(|n| n.as_ref().unwrap().child.id() == pid)
        .unwrap_or_else(|| panic!("owner {owner} is neither node"));
    let survivor = 1 - holder;
    // A running job is not retried.
    let r = call(
        pb,
        "POST",
        &format!("/api/v1/queue/{hl7_id}/retry"),
        "",
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let first = messages.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("ORU^R01"), "{first}");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        let jobs = queue_jobs(port(survivor, &nodes));
        let h = job_of(&jobs, "hl7-images-available").unwrap();
        assert_eq!(h["state"], "running", "{h}");
        assert_eq!(h["owner"], owner.as_str(), "taken from a live node: {h}");
        assert_eq!(h["attempts"], 1, "{h}");
        assert!(messages.try_recv().is_err(), "sent again while held");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Its node killed mid-run: the other takes the job over after the
    // lease and finishes it, once.
    let mut killed = nodes[holder].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let second = messages.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(second.contains("ORU^R01"), "{second}");
    let sp = port(survivor, &nodes);
    let done = wait_jobs(sp, "HIS message done", |j| {
        job_of(j, "hl7-images-available").is_some_and(|h| h["state"] == "done")
    });
    let h = job_of(&done, "hl7-images-available").unwrap();
    assert_eq!(h["attempts"], 2, "{h}");
    assert!(h["owner"].is_null(), "{h}");
    assert!(h["last_error"].is_null(), "{h}");
    // Nothing sends it again (two more leases).
    std::thread::sleep(Duration::from_secs(4));
    assert!(messages.try_recv().is_err(), "sent a third time");
    let h = queue_jobs(sp)
        .into_iter()
        .find(|j| j["id"] == hl7_id)
        .unwrap();
    assert_eq!(
        (h["state"].clone(), h["attempts"].clone()),
        ("done".into(), 2.into()),
        "{h}"
    );
    let (status, log) = nodes[survivor].take().unwrap().stop();
    assert!(status.success(), "{log}");
}

/// The value of the cookie `name` an answer's head sets (`name=value`).
fn set_cookie_of(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim().split(';').next().unwrap_or("").to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The `Location` of an answer's head.
fn location_of(head: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_owned())
}

/// Until sign-in is on at `port` (a user made on the shared store turns it
/// on within 5 s): anonymous reads refused.
fn wait_sign_in_required(port: u16) {
    for _ in 0..150 {
        if request(port, "GET", "/dicom-web/studies", &[], None).status == 401 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("sign-in not required on {port}");
}

/// Nodes A and B on the bucket `nodes` and the database `db`, with the
/// shared config and `extra` (TOML) after it; and the config's path.
fn two_nodes(
    dir: &Path,
    s3: &S3sFs,
    pg: &TestPostgres,
    db: &str,
    extra: &str,
) -> (Server, Server, PathBuf) {
    s3.create_bucket("nodes");
    let cfg = shared_config(dir, s3, &pg.create_database(db));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push('\n');
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    let arg = cfg.to_str().unwrap();
    let a = Server::start(&dir.join("a"), &["--config", arg]);
    let b = Server::start(&dir.join("b"), &["--config", arg]);
    (a, b, cfg)
}

/// A share link's patient cookie and its PIN lock-out are kept in the
/// shared PostgreSQL database: a link made on node A, its PIN entered on
/// node B, and the `sen_share` cookie reads the study on A and on B;
/// revoked on A, it is refused on both. Wrong PINs alternating between the
/// nodes lock the link after the same count as on one node, and a burst of
/// wrong PINs sent to both nodes at once gets no more PIN checks than
/// that count.
#[test]
fn two_nodes_share_share_links_and_their_pin_lockout() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, cfg) = two_nodes(tmp.path(), &s3, &pg, "shares", "");
    let cfg = cfg.to_str().unwrap();
    let (pa, pb) = (a.http_port, b.http_port);
    const STUDY: &str = "1.2.826.0.1.3680043.10.79.1";
    let sop = format!("{STUDY}.1.1");
    let (status, body) = stow(pa, &patient_object(STUDY, &sop, "LE^CHI", "PL01"));
    assert_eq!(status, 200, "{body}");
    add_user_with(
        &tmp.path().join("cli"),
        &["--config", cfg],
        "bs.an",
        "radiologist",
    );
    wait_sign_in_required(pa);
    wait_sign_in_required(pb);
    let auth = basic("bs.an", TEST_PASSWORD);
    let create = |port: u16| {
        let r = call(
            port,
            "POST",
            "/api/v1/shares",
            &auth,
            Some(&serde_json::json!({"study": STUDY, "pin": true})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        let field = |k: &str| v[k].as_str().unwrap().to_owned();
        (field("id"), field("token"), field("pin"))
    };
    let pin_form = |port: u16, token: &str, pin: &str| {
        raw(
            port,
            "POST",
            &format!("/s/{token}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("pin={pin}").as_bytes(),
        )
    };
    let metadata = format!("/dicom-web/studies/{STUDY}/metadata");
    let read = |port: u16, cookie: &str| raw(port, "GET", &metadata, &[("Cookie", cookie)], b"").0;

    // Made on A, opened on B: the cookie works on both.
    let (id, token, pin) = create(pa);
    let (status, head, page) = pin_form(pb, &token, &pin);
    assert_eq!(status, 200, "{page}");
    let cookie = set_cookie_of(&head, "sen_share").unwrap();
    for port in [pa, pb] {
        assert_eq!(read(port, &cookie), 200, "the share cookie on {port}");
        assert_eq!(read(port, "sen_share=forged"), 401);
    }
    // The database holds the cookie's SHA-256, never the cookie.
    let value = cookie.split_once('=').unwrap().1;
    let keys = pg.psql(
        "shares",
        "SELECT encode(key, 'hex') FROM browser_flows WHERE kind = 1",
    );
    assert_eq!(keys, sha256_hex(value), "one cookie, kept by its SHA-256");
    // Revoked on A: refused on B (and A) at once.
    let r = call(pa, "DELETE", &format!("/api/v1/shares/{id}"), &auth, None);
    assert_eq!(r.status, 204, "{}", r.text());
    for port in [pb, pa] {
        assert_eq!(read(port, &cookie), 410, "revoked, on {port}");
    }

    // Wrong PINs alternating between the nodes: locked at the fifth, as
    // on one node; then the right PIN is refused on both.
    let (_, token, pin) = create(pb);
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for i in 1..=5 {
        let port = if i % 2 == 1 { pa } else { pb };
        let want = if i < 5 { 401 } else { 429 };
        assert_eq!(pin_form(port, &token, wrong).0, want, "attempt {i}");
    }
    for port in [pa, pb] {
        let (status, head, _) = pin_form(port, &token, &pin);
        assert_eq!(status, 429, "locked on {port}");
        assert!(set_cookie_of(&head, "sen_share").is_none());
    }

    // Twelve wrong PINs at once, six to each node: four checked and
    // wrong (401), the fifth locks (429), the rest refused unchecked.
    let (_, token, pin) = create(pa);
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let token = token.clone();
                let port = if i % 2 == 0 { pa } else { pb };
                scope.spawn(move || pin_form(port, &token, wrong).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    assert_eq!((count(401), count(429)), (4, 8), "{statuses:?}");
    assert_eq!(pin_form(pb, &token, &pin).0, 429, "locked");

    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
        assert!(!log.contains(value), "the share cookie is never logged");
    }
}

/// Failed sign-ins are counted in the shared database: a guesser
/// alternating between two nodes is locked after the same number of
/// failures as on one, and then the right password is refused on both,
/// with Retry-After. The database holds the keys' hashes, never the name.
#[test]
fn two_nodes_share_sign_in_lockouts() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, cfg) = two_nodes(
        tmp.path(),
        &s3,
        &pg,
        "lockouts",
        "[auth]\nlockout_threshold = 3\nlockout_seconds = 600\n",
    );
    let (pa, pb) = (a.http_port, b.http_port);
    for user in ["bs.an", "bs.binh"] {
        add_user_with(
            &tmp.path().join("cli"),
            &["--config", cfg.to_str().unwrap()],
            user,
            "radiologist",
        );
    }
    wait_sign_in_required(pa);
    wait_sign_in_required(pb);
    let qido = |port: u16, user: &str, password: &str| {
        let auth = basic(user, password);
        let (status, head, _) = raw(
            port,
            "GET",
            "/dicom-web/studies",
            &[("Authorization", &auth)],
            b"",
        );
        (
            status,
            head.to_ascii_lowercase().contains("\r\nretry-after:"),
        )
    };
    assert_eq!(qido(pa, "bs.an", "guess-1").0, 401);
    assert_eq!(qido(pb, "bs.an", "guess-2").0, 401);
    assert_eq!(
        qido(pa, "bs.an", "guess-3"),
        (429, true),
        "the third failure, on either node, locks"
    );
    for port in [pb, pa] {
        assert_eq!(
            qido(port, "bs.an", TEST_PASSWORD),
            (429, true),
            "the right password refused on {port}"
        );
    }
    assert_eq!(
        qido(pb, "bs.binh", TEST_PASSWORD).0,
        204,
        "other accounts are free"
    );
    let rows = pg.psql(
        "lockouts",
        "SELECT count(*), max(failures) FROM sign_in_failures",
    );
    assert_eq!(rows.trim(), "2|3", "the account and the address: {rows}");
    let names = pg.psql(
        "lockouts",
        "SELECT count(*) FROM sign_in_failures WHERE position('bs.an'::bytea in key) > 0",
    );
    assert_eq!(names.trim(), "0");
    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Signs `login` in at the test provider's development pages (login, then
/// consent) with curl and a cookie jar, starting from the authorization
/// URL; the URL the provider sends the browser back to.
fn through_provider(authorize: &str, login: &str, jar: &Path) -> String {
    let issuer = authorize.split("/auth?").next().unwrap().to_owned();
    let absolute = |l: String| {
        if l.starts_with('/') {
            format!("{issuer}{l}")
        } else {
            l
        }
    };
    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-D", "-", "-c"])
            .arg(jar)
            .arg("-b")
            .arg(jar)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_owned(), body.to_owned())
    };
    let mut url = authorize.to_owned();
    for _ in 0..10 {
        let (head, _) = curl(&[&url]);
        let next = absolute(location_of(&head).unwrap_or_else(|| panic!("{url}: {head}")));
        if next.contains("/login/oidc/callback") {
            return next;
        }
        if !next.contains("/interaction/") {
            url = next;
            continue;
        }
        let (_, page) = curl(&[&next]);
        let form = if page.contains("name=\"login\"") {
            format!("prompt=login&login={login}&password=any")
        } else {
            "prompt=consent".to_owned()
        };
        let (head, _) = curl(&["--data", &form, &next]);
        url = absolute(location_of(&head).unwrap_or_else(|| panic!("{next}: {head}")));
    }
    panic!("the provider did not send the browser back");
}

/// A sign-in through the identity provider begun on node A may end on node
/// B (the provider's callback lands on another node behind the load
/// balancer): the pending sign-in is in the shared PostgreSQL database,
/// the session started on B works on A and on B, and the callback replayed
/// on either node is refused. Nonce and state are never logged.
#[test]
fn two_nodes_share_pending_oidc_sign_ins() {
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(s3_dir.path()) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let op_port = free_port();
    let auth = format!(
        "[auth]\noidc_issuer = \"http://127.0.0.1:{op_port}\"\n\
         oidc_audience = \"urn:sen-pacs\"\noidc_client_id = \"pacs-web\"\n\
         oidc_client_secret = \"pacs-web-secret\"\n"
    );
    let (a, b, _) = two_nodes(tmp.path(), &s3, &pg, "oidc", &auth);
    let (pa, pb) = (a.http_port, b.http_port);
    // Both nodes answer to one name (here B's address); the provider sends
    // the browser back to it.
    let host = format!("127.0.0.1:{pb}");
    let _op = start_provider_with(
        op_port,
        &["--redirect", &format!("http://{host}/login/oidc/callback")],
    );

    // Begun on A.
    let (status, head, body) = raw_to(pa, &host, "GET", "/login/oidc?next=/", &[], b"");
    assert_eq!(status, 303, "{body}");
    let flow = set_cookie_of(&head, "senpacs_oidc").unwrap();
    let authorize = location_of(&head).unwrap();
    let param = |url: &str, name: &str| {
        url.split(['?', '&'])
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (state, nonce) = (param(&authorize, "state"), param(&authorize, "nonce"));
    // Kept by the SHA-256 of its state.
    assert_eq!(
        pg.psql(
            "oidc",
            "SELECT encode(key, 'hex') FROM browser_flows WHERE kind = 2"
        ),
        sha256_hex(&state)
    );
    let callback = through_provider(&authorize, "dr.an", &tmp.path().join("jar"));
    assert_eq!(param(&callback, "state"), state);
    let path = &callback[callback.find("/login/oidc/callback").unwrap()..];

    // Ended on B: a session that A accepts too.
    let (status, head, body) = raw_to(pb, &host, "GET", path, &[("Cookie", &flow)], b"");
    assert_eq!(status, 303, "{body}");
    let session = set_cookie_of(&head, "senpacs_session").unwrap();
    for port in [pa, pb] {
        let (status, _, body) = raw(
            port,
            "GET",
            "/dicom-web/studies",
            &[("Cookie", &session)],
            b"",
        );
        assert_eq!(status, 204, "signed in on {port}: {body}");
        let (status, _, me) = raw(port, "GET", "/api/v1/session", &[("Cookie", &session)], b"");
        assert_eq!(status, 200, "{me}");
        assert!(me.contains("dr.an") && me.contains("radiologist"), "{me}");
    }
    // Taken once: the callback replayed on either node is refused.
    for port in [pa, pb] {
        let headers = [("Cookie", flow.as_str()), ("Accept-Language", "en")];
        let (status, _, body) = raw_to(port, &host, "GET", path, &headers, b"");
        assert_eq!(status, 400, "replayed on {port}: {body}");
        assert!(body.contains("already used"), "{body}");
    }
    assert_eq!(
        pg.psql("oidc", "SELECT count(*) FROM browser_flows WHERE kind = 2"),
        "0"
    );
    for node in [a, b] {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
        assert!(!log.contains(&nonce) && !log.contains(&state), "{log}");
    }
}
