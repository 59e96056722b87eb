//! `pacs bench-index` through the real binary: it fills an empty sled or
//! PostgreSQL index with seeded synthetic studies, reports for each
//! benchmark query as many matches as the generator's distribution gives,
//! and `pacs serve` on the same index answers QIDO with those same totals
//! (the index is really usable by the server). A second run on the filled
//! index is refused. No timing is asserted.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pacs_testkit::postgres::TestPostgres;
use serde_json::Value;

const SIZES: [u64; 2] = [1500, 3000];

/// Runs `pacs --data-dir DIR [--config CFG] bench-index …` and returns its
/// checkpoints (the JSON lines of stdout), asserting success.
fn bench(data: &Path, config: Option<&str>, extra: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(pacs_bin());
    cmd.arg("--data-dir").arg(data);
    if let Some(c) = config {
        cmd.args(["--config", c]);
    }
    let sizes = format!("{},{}", SIZES[0], SIZES[1]);
    let o = cmd
        .args([
            "bench-index",
            "--sizes",
            &sizes,
            "--repeat",
            "3",
            "--seed",
            "5",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("# "), "no human table: {out}");
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks each checkpoint: the index holds the instances and studies the
/// generator made, and every query found what the distribution predicts.
fn check_checkpoints(points: &[Value], engine: &str) {
    assert_eq!(points.len(), SIZES.len());
    for (p, &size) in points.iter().zip(&SIZES) {
        assert_eq!(p["engine"], engine);
        assert_eq!(p["instances"].as_u64(), Some(size));
        assert_eq!(p["studies"], p["expected_studies"]);
        assert!(p["bytes_per_instance"].as_f64().unwrap() > 0.0);
        // The per-instance DICOM JSON is that of a real header (kilobytes).
        assert!(p["metadata_bytes_per_instance"].as_f64().unwrap() > 1000.0);
        let queries = p["queries"].as_array().unwrap();
        assert_eq!(queries.len(), 6);
        for q in queries {
            assert_eq!(q["found"], q["expected"], "{q}");
            assert!(q["expected"].as_u64().unwrap() > 0, "{q}");
        }
        let all = queries.iter().find(|q| q["name"] == "all_studies").unwrap();
        assert_eq!(all["expected"], p["studies"]);
        // Lookups by SOP Instance UID: every held one found, no absent one.
        let lookups = p["lookups"].as_array().unwrap();
        let names: Vec<&str> = lookups
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["instance_by_uid", "instance_absent"]);
        assert!(lookups[0]["expected"].as_u64().unwrap() > 0);
        assert_eq!(lookups[1]["expected"], 0);
        for l in lookups {
            assert_eq!(l["found"], l["expected"], "{l}");
        }
    }
    // More instances, more studies: the second checkpoint really filled on.
    assert!(points[1]["studies"].as_u64() > points[0]["studies"].as_u64());
}

/// `GET /dicom-web/studies?…&limit=1`: the status and X-Total-Count.
fn qido_total(port: u16, params: &str) -> (u16, Option<u64>) {
    let sep = if params.is_empty() { "" } else { "&" };
    let path = format!("/dicom-web/studies?{params}{sep}limit=1");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/dicom+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let total = head
        .lines()
        .find_map(|l| l.strip_prefix("x-total-count:"))
        .map(|v| v.trim().parse().unwrap());
    (status, total)
}

/// QIDO on a server over the same index gives every query's expected total.
fn check_over_qido(data: &Path, extra: &[&str], last: &Value) {
    let server = Server::start(data, extra);
    for q in last["queries"].as_array().unwrap() {
        let (status, total) = qido_total(server.http_port, q["qido"].as_str().unwrap());
        assert_eq!(status, 200, "{q}");
        assert_eq!(total, q["expected"].as_u64(), "{q}");
    }
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn bench_index_fills_sled_with_predictable_studies_that_qido_finds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Put as the server's stores do (landing marks, cleared per batch).
    let points = bench(&data, None, &["--landing"]);
    assert!(points.iter().all(|p| p["landing"] == true));
    check_checkpoints(&points, "sled");
    check_over_qido(&data, &[], &points[1]);
    // The index now holds data: a second run refuses to touch it.
    let o = pacs(&data, &["bench-index", "--instances", "10"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    // --resume goes on from where it stopped, with the same data: every
    // count and query still matches the generator (else exit status 1).
    let last = |o: &std::process::Output| -> Value {
        assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
        serde_json::from_str(stdout(o).lines().last().unwrap()).unwrap()
    };
    let o = pacs(
        &data,
        &[
            "bench-index",
            "--resume",
            "--sizes",
            "4500",
            "--seed",
            "5",
            "--repeat",
            "3",
        ],
    );
    let p = last(&o);
    assert_eq!(p["instances"], 4500);
    assert!(stderr(&o).contains("resuming at 3000"), "{}", stderr(&o));
    // --measure-existing measures it as it is.
    let o = pacs(
        &data,
        &[
            "bench-index",
            "--measure-existing",
            "--seed",
            "5",
            "--repeat",
            "3",
        ],
    );
    let m = last(&o);
    assert_eq!(m["instances"], 4500);
    assert_eq!(m["studies"], p["studies"]);
    for q in m["queries"].as_array().unwrap() {
        assert_eq!(q["found"], q["expected"], "{q}");
    }
}

#[test]
fn bench_index_fills_postgres_with_predictable_studies_that_qido_finds() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("bench");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let points = bench(&data, None, &["--index-url", &url]);
    assert!(points.iter().all(|p| p["landing"] == false));
    check_checkpoints(&points, "postgres");
    // PostgreSQL also reports the whole database's size.
    assert!(
        points[1]["database_bytes"].as_u64().unwrap() > points[1]["index_bytes"].as_u64().unwrap()
    );
    let cfg = dir.path().join("pacs.toml");
    std::fs::write(&cfg, format!("index_url = \"{url}\"\n")).unwrap();
    let cfg = cfg.display().to_string();
    check_over_qido(&data, &["--config", &cfg], &points[1]);
    // The sled index of the data dir was never filled: the run used PostgreSQL.
    let o = pacs(&data, &["stats", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        stats["index"]["instances"]
            .as_u64()
            .or(stats["instances"].as_u64()),
        Some(0),
        "{stats}"
    );
    let o = pacs(
        &data,
        &["bench-index", "--sizes", "10", "--index-url", &url],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));

    // A database holding anything else is refused before a table is made.
    let other = pg.create_database("other");
    let psql = |sql: &str| {
        let o = Command::new(pacs_testkit::postgres::bindir().unwrap().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port().to_string(),
                "-U",
                "pacs",
            ])
            .args(["-d", "other", "-tAc", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    psql("CREATE TABLE ward_beds (bed integer)");
    let o = pacs(
        &data,
        &["bench-index", "--instances", "10", "--index-url", &other],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not the index's (ward_beds)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        psql("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"),
        "1"
    );
}

/// SIGTERM in the middle of a fill: the batch under way is finished, the
/// index closed cleanly and the run ends with status 2 saying how to go
/// on; `--resume` then completes it with every count and query as the
/// generator predicts.
#[test]
fn a_stopped_fill_closes_cleanly_and_resumes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["bench-index", "--sizes", "5000000", "--seed", "5"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first progress line (every 10 s): some batches are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("/5000000 instances"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no progress in 120 s: {lines:?}");
        if let Ok(l) = rx.recv_timeout(left.min(Duration::from_secs(1))) {
            lines.push(l);
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench-index did not stop within 120 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert_eq!(status.code(), Some(2), "{lines:?}");
    let stopped = lines
        .iter()
        .find_map(|l| l.strip_prefix("bench-index: stopped at "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no stop line: {lines:?}"));
    assert!(stopped > 0 && stopped % 1000 == 0, "stopped at {stopped}");
    // The index was closed cleanly: resume a little further.
    let target = (stopped + 1500).to_string();
    let o = pacs(
        &data,
        &[
            "bench-index",
            "--resume",
            "--sizes",
            &target,
            "--seed",
            "5",
            "--repeat",
            "2",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let p: Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(p["instances"].as_u64(), Some(stopped + 1500));
    assert_eq!(p["studies"], p["expected_studies"]);
}
