//! The PostgreSQL index through the real binary, on a throwaway cluster:
//! `pacs serve` with `index_url` takes C-STORE (DCMTK storescu) and STOW,
//! answers QIDO, C-FIND and WADO-RS metadata, keeps it all across a
//! restart, and `pacs delete` removes a study from it; `pacs migrate --to`
//! copies a sled index and checks the counts; a node's sled jobs are
//! copied into the shared queue once; with `sslmode=require` the
//! connections are TLS, the server's certificate checked.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use pacs_testkit::postgres::TestPostgres;
use pacs_testkit::samples::{self, files_under};
use serde_json::Value;

const CT_STUDY: &str = "2.25.10580310851379504485814918705078594299";
const CT_SERIES: &str = "2.25.11316836547687373264678019185324002696";

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A config naming the PostgreSQL index and the storescu/findscu AE.
fn config(dir: &Path, url: &str) -> String {
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "index_url = \"{url}\"\n\n[[remote_ae]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = 1\n"
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn qido(port: u16, path: &str) -> Vec<Value> {
    let (status, body) = http_get(port, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn study_uids(rows: &[Value]) -> Vec<String> {
    let mut uids: Vec<String> = rows
        .iter()
        .map(|r| r["0020000D"]["Value"][0].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

/// What the archive answers, checked the same way before and after the
/// restart.
fn check_answers(server: &Server, findscu: &Path, cr_study: &str, ct_count: usize) {
    let port = server.http_port;
    assert_eq!(
        study_uids(&qido(port, "/dicom-web/studies?PatientID=VN-0001")),
        vec![CT_STUDY.to_owned()]
    );
    let mut all = vec![CT_STUDY.to_owned(), cr_study.to_owned()];
    all.sort();
    assert_eq!(study_uids(&qido(port, "/dicom-web/studies")), all);
    let ct = qido(
        port,
        &format!("/dicom-web/studies?StudyInstanceUID={CT_STUDY}"),
    );
    assert_eq!(
        ct[0]["00201208"]["Value"][0].as_u64(),
        Some(ct_count as u64)
    );
    let series = qido(port, &format!("/dicom-web/studies/{CT_STUDY}/series"));
    let per_series: u64 = series
        .iter()
        .map(|s| s["00201209"]["Value"][0].as_u64().unwrap())
        .sum();
    assert_eq!(per_series, ct_count as u64);
    let metadata = qido(
        port,
        &format!("/dicom-web/studies/{CT_STUDY}/series/{CT_SERIES}/metadata"),
    );
    let in_series = series
        .iter()
        .find(|s| s["0020000E"]["Value"][0] == CT_SERIES)
        .unwrap()["00201209"]["Value"][0]
        .as_u64()
        .unwrap();
    assert_eq!(metadata.len() as u64, in_series);
    assert!(metadata
        .iter()
        .all(|m| m["0020000D"]["Value"][0] == CT_STUDY));
    // C-FIND by Patient Name prefix, case- and accent-insensitively stored
    // name "Nguyễn^Văn An".
    let o = Command::new(findscu)
        .args(["-aet", "MODALITY", "-aec", "PACS", "-S"])
        .args([
            "-k",
            "0008,0052=STUDY",
            "-k",
            "0010,0020=VN-0001",
            "-k",
            "0020,000D",
        ])
        .args(["-k", "0020,1208"])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "findscu: {}", both(&o));
    assert!(both(&o).contains(CT_STUDY), "findscu: {}", both(&o));
}

#[test]
fn serve_on_postgres_takes_stores_answers_queries_and_survives_a_restart() {
    let (Some(storescu), Some(findscu)) = (dcmtk("storescu"), dcmtk("findscu")) else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("serve");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &url);
    let server = Server::start(&data, &["--config", &cfg]);

    let ct = sample_dir().join("ct-phantom");
    let o = Command::new(&storescu)
        .args(["-aec", "PACS", "-aet", "MODALITY", "+sd", "+r"])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .arg(&ct)
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}", both(&o));
    let ct_count = tree(&ct).iter().filter(|p| p.ends_with(".dcm")).count();

    let cr = files_under(&sample_dir().join("cr-chest"));
    let (status, body) = stow(server.http_port, &std::fs::read(&cr[0]).unwrap());
    assert_eq!(status, 200, "{body}");
    let cr_study = samples::files_of("cr-chest")[0]["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_owned();

    check_answers(&server, &findscu, &cr_study, ct_count);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    // The sled directory holds no index entry any more: what the restarted
    // server answers can only come from PostgreSQL.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let _ = std::fs::remove_file(data.join("index.wal"));
    let _ = std::fs::remove_file(data.join("index.format"));
    let server = Server::start(&data, &["--config", &cfg]);
    check_answers(&server, &findscu, &cr_study, ct_count);
    let (_, body) = http_get(server.http_port, "/healthz").unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["instances"], ct_count as u64 + 1, "{body}");
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    // `pacs delete` removes the CT study from PostgreSQL: neither QIDO nor
    // C-FIND finds it afterwards, and the CR study is still there.
    let o = pacs(&data, &["--config", &cfg, "delete", "--study", CT_STUDY]);
    assert!(o.status.success(), "{}", both(&o));
    assert!(
        stdout(&o).contains(&format!("deleted {ct_count} instances")),
        "{}",
        both(&o)
    );
    let server = Server::start(&data, &["--config", &cfg]);
    let port = server.http_port;
    assert_eq!(
        study_uids(&qido(port, "/dicom-web/studies")),
        vec![cr_study.clone()]
    );
    // No match: 204 No Content.
    let (status, body) = http_get(port, "/dicom-web/studies?PatientID=VN-0001").unwrap();
    assert_eq!(status, 204, "{body}");
    let o = Command::new(&findscu)
        .args(["-aet", "MODALITY", "-aec", "PACS", "-S"])
        .args([
            "-k",
            "0008,0052=STUDY",
            "-k",
            "0010,0020",
            "-k",
            "0020,000D",
        ])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "findscu: {}", both(&o));
    assert!(!both(&o).contains(CT_STUDY), "findscu: {}", both(&o));
    assert!(both(&o).contains(&cr_study), "findscu: {}", both(&o));
    let (_, body) = http_get(port, "/healthz").unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["instances"], 1, "{body}");
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
    // Deleting it again finds nothing.
    let o = pacs(&data, &["--config", &cfg, "delete", "--study", CT_STUDY]);
    assert_eq!(o.status.code(), Some(4), "{}", both(&o));
}

fn stats_json(data: &Path, env: &[(&str, &str)]) -> Value {
    let o = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["stats", "--json"])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", both(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn migrate_copies_a_sled_index_to_postgres_and_checks_the_counts() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("migrated");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = pacs(&data, &["import", sample_dir().to_str().unwrap()]);
    assert!(o.status.success(), "{}", both(&o));
    let sled_stats = stats_json(&data, &[]);
    assert_eq!(sled_stats["instances"], samples::manifest()["file_count"]);
    // Served once from sled long enough for the series' DICOM JSON to move
    // into metadata blobs: the copy reads it from there.
    let cfg = tmp.path().join("compact.toml");
    std::fs::write(&cfg, "metadata_compact_after_secs = 1\n").unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let series = sled_stats["series"].as_u64().unwrap();
    let start = std::time::Instant::now();
    let blobs = || {
        samples::tree(&data.join("objects"))
            .iter()
            .filter(|p| p.starts_with("metadata/") && p.ends_with(".gz"))
            .count() as u64
    };
    while blobs() < series && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(blobs(), series);
    let from_sled = all_study_metadata(server.http_port);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    let o = pacs(&data, &["migrate", "--to", &url]);
    assert!(o.status.success(), "{}", both(&o));
    let n = sled_stats["instances"].as_u64().unwrap();
    assert!(
        stderr(&o).contains(&format!("migrated {n}/{n} instances")),
        "{}",
        both(&o)
    );
    assert!(stdout(&o).contains("migrated and verified"), "{}", both(&o));
    // The same counts, read from PostgreSQL by the offline commands.
    let pg_stats = stats_json(&data, &[("PACS_INDEX_URL", &url)]);
    assert_eq!(pg_stats, sled_stats);
    // The same answers: a PatientID search, served from PostgreSQL.
    let server = Server::start(&data, &["--config", &config(tmp.path(), &url)]);
    assert_eq!(
        study_uids(&qido(
            server.http_port,
            "/dicom-web/studies?PatientID=EN-0004"
        )),
        vec!["2.25.214304406083104917419717072791061317625".to_owned()]
    );
    assert_eq!(all_study_metadata(server.http_port), from_sled);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    // A second copy into the same database is refused loudly.
    let o = pacs(&data, &["migrate", "--to", &url]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not empty"), "{}", both(&o));
}

/// A node that ran on sled and moves to PostgreSQL copies its dead job
/// (an IAN to a peer that refuses connections) into the shared queue at
/// its first start there, not the done ones; `pacs queue` sees the shared
/// queue while the server runs; a job deleted there does not come back
/// at the next start.
#[test]
fn a_nodes_sled_jobs_are_copied_to_the_shared_queue_once() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("jobs");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = "job_retry_base = 1\njob_max_attempts = 1\nian_destinations = [\"RIS\"]\n\
         ian_stable_after_secs = 1\n";
    let ris = format!(
        "[[remote_ae]]\nae_title = \"RIS\"\nhost = \"127.0.0.1\"\nport = {}\n",
        free_port()
    );
    let on_sled = tmp.path().join("sled.toml");
    std::fs::write(&on_sled, format!("{keys}\n{ris}")).unwrap();
    let on_pg = tmp.path().join("pg.toml");
    std::fs::write(&on_pg, format!("{keys}index_url = \"{url}\"\n\n{ris}")).unwrap();
    let kinds = |jobs: &[Value]| -> Vec<(String, String)> {
        jobs.iter()
            .map(|j| {
                (
                    j["kind"].as_str().unwrap().to_owned(),
                    j["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let server = Server::start(&data, &["--config", on_sled.to_str().unwrap()]);
    let file = &ct_files(1)[0];
    let (status, body) = stow(server.http_port, &std::fs::read(file).unwrap());
    assert_eq!(status, 200, "{body}");
    let on_sled_jobs = wait_jobs(server.http_port, "IAN dead on sled", |j| {
        j.iter().any(|j| j["kind"] == "ian" && j["state"] == "dead")
    });
    let ian = on_sled_jobs
        .iter()
        .find(|j| j["kind"] == "ian")
        .unwrap()
        .clone();
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    let server = Server::start(&data, &["--config", on_pg.to_str().unwrap()]);
    let jobs = queue_jobs(server.http_port);
    assert_eq!(
        kinds(&jobs),
        [("ian".to_owned(), "dead".to_owned())],
        "{jobs:#?}"
    );
    for key in [
        "attempts",
        "last_error",
        "destination",
        "payload_version",
        "created_ms",
    ] {
        assert_eq!(jobs[0][key], ian[key], "{key}");
    }
    assert!(data.join("jobs-copied-to-postgres").exists());
    let o = pacs(
        &data,
        &[
            "--config",
            on_pg.to_str().unwrap(),
            "queue",
            "list",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", both(&o));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], jobs[0]["id"]);
    let id = jobs[0]["id"].as_u64().unwrap();
    let o = pacs(
        &data,
        &[
            "--config",
            on_pg.to_str().unwrap(),
            "queue",
            "delete",
            &id.to_string(),
        ],
    );
    assert!(o.status.success(), "{}", both(&o));
    assert!(queue_jobs(server.http_port).is_empty());
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");

    let server = Server::start(&data, &["--config", on_pg.to_str().unwrap()]);
    assert!(queue_jobs(server.http_port).is_empty());
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

/// `sslmode=require` with `sslrootcert`: every connection of the index is
/// TLS (PostgreSQL's own `pg_stat_ssl` says so) and the archive works over
/// it; a server certificate from another CA stops the start with a clear
/// error, and `sslrootcert` without `sslmode=require` is refused.
#[test]
fn the_index_talks_tls_to_postgres_and_checks_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(tmp.path());
    pki.leaf("ca", "db", 2, "IP:127.0.0.1,DNS:localhost");
    pki.ca("other");
    let Some(pg) = TestPostgres::start_tls(&pki.path("db.pem"), &pki.path("db.key")) else {
        return;
    };
    let plain = pg.create_database("tls");
    let ca = pki.path("ca.pem").display().to_string();
    let url = format!("{plain}?sslmode=require&sslrootcert={ca}");
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &url);
    let server = Server::start(&data, &["--config", &cfg]);
    let cr = files_under(&sample_dir().join("cr-chest"));
    let (status, body) = stow(server.http_port, &std::fs::read(&cr[0]).unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(qido(server.http_port, "/dicom-web/studies").len(), 1);
    let sessions = pg.psql(
        "tls",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'sen-pacs'",
    );
    let (tls, all) = sessions.split_once('|').unwrap();
    assert!(
        all.parse::<u32>().unwrap() > 0,
        "no index connection: {sessions}"
    );
    assert_eq!(tls, all, "index connections without TLS: {sessions}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    // The server's certificate is not from the CA named: no start.
    let other = pki.path("other.pem").display().to_string();
    let bad = format!("{plain}?sslmode=require&sslrootcert={other}");
    let cfg = config(tmp.path(), &bad);
    let o = pacs(&tmp.path().join("data2"), &["--config", &cfg, "stats"]);
    assert!(!o.status.success(), "{}", both(&o));
    assert!(
        both(&o).contains("cannot connect to the PostgreSQL index"),
        "{}",
        both(&o)
    );
    // sslrootcert means nothing without sslmode=require.
    let cfg = config(tmp.path(), &format!("{plain}?sslrootcert={ca}"));
    let o = pacs(&tmp.path().join("data3"), &["--config", &cfg, "stats"]);
    assert!(!o.status.success(), "{}", both(&o));
    assert!(
        both(&o).contains("sslrootcert is only used with sslmode=require"),
        "{}",
        both(&o)
    );
}
