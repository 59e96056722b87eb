//! `pacs serve` per the start contract: `/healthz`, `--demo` loading the
//! sample studies once, refusals for services not built yet, SIGTERM exiting
//! 0 after a clean close.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn serve_demo_health_and_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let n = sample_files().len() as u64;

    let server = Server::start(&dir, &["--demo"]);
    let (status, body) = http_get(server.http_port, "/healthz").unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["instances"], n, "{health}");

    let (status, body) = http_get(server.http_port, "/api/stats").unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["studies"], 5);

    // DIMSE listens too: C-ECHO from DCMTK.
    if let Some(echoscu) = dcmtk("echoscu") {
        let o = std::process::Command::new(echoscu)
            .args(["-aec", "PACS", "127.0.0.1", &server.dimse_port.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "echoscu: {}", stderr(&o));
    }

    // DICOMweb is mounted: QIDO finds the demo studies, a name typed
    // without diacritics finds the Vietnamese patient.
    let (status, body) = http_get(server.http_port, "/dicom-web/studies").unwrap();
    assert_eq!(status, 200, "{body}");
    let studies: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(studies.as_array().map(Vec::len), Some(5), "{body}");
    let (status, body) = http_get(
        server.http_port,
        "/dicom-web/studies?PatientName=nguyen&fuzzymatching=true",
    )
    .unwrap();
    assert_eq!(status, 200);
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(2), "{body}");
    let (status, _) = http_get(server.http_port, "/dicom-web/studies?StudyDate=2026-99").unwrap();
    assert_eq!(status, 400);
    // A study thumbnail renders (a JPEG image).
    let uid = found[0]["0020000D"]["Value"][0].as_str().unwrap();
    let (status, body) = http_get(
        server.http_port,
        &format!("/dicom-web/studies/{uid}/thumbnail"),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (status, _) = http_get(server.http_port, "/").unwrap();
    assert_eq!(status, 200);

    let (exit, log) = server.stop();
    assert!(exit.success(), "SIGTERM must exit 0: {exit:?}\n{log}");
    assert!(log.contains("archive closed cleanly"), "{log}");

    // A second start: clean shutdown recorded, so no recovery scan; the demo
    // is not loaded twice.
    let server = Server::start(&dir, &["--demo"]);
    let (_, body) = http_get(server.http_port, "/healthz").unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["instances"], n);
    let (exit, log) = server.stop();
    assert!(exit.success());
    assert!(
        !log.contains("recovered after an unclean shutdown"),
        "{log}"
    );
    assert!(log.contains("demo studies not loaded again"), "{log}");
}

#[test]
fn refuses_non_loopback_http_without_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["serve", "--http-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no authentication"), "{}", stderr(&o));
}

#[test]
fn bad_config_is_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "http_listen = \"not-an-address\"\n").unwrap();
    let o = std::process::Command::new(pacs_bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a socket address"),
        "{}",
        stderr(&o)
    );
}

/// C-STORE into the real binary with DCMTK's storescu, then the stored
/// instances are counted, verified and read back.
#[test]
fn storescu_into_the_binary_then_verify_and_get() {
    let Some(storescu) = dcmtk("storescu") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = config_with_remote_ae(tmp.path(), "MODALITY");
    let server = Server::start(&dir, &["--config", cfg.to_str().unwrap()]);
    let ct = sample_dir().join("ct-phantom");
    let o = std::process::Command::new(storescu)
        .args(["-aec", "PACS", "-aet", "MODALITY", "+sd", "+r", "-xs"])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .arg(&ct)
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}{}", stdout(&o), stderr(&o));
    let n = tree(&ct).iter().filter(|p| p.ends_with(".dcm")).count() as u64;
    let (_, body) = http_get(server.http_port, "/healthz").unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["instances"], n);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
    let o = pacs(&dir, &["verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    // The data set comes back exactly as sent (storescu kept the syntax).
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("sample-data/manifest.json")).unwrap(),
    )
    .unwrap();
    let first = &manifest["files"][0];
    let sop = first["sop_instance_uid"].as_str().unwrap();
    let out = tmp.path().join("back.dcm");
    assert!(pacs(&dir, &["get", sop, "-o", out.to_str().unwrap()])
        .status
        .success());
    let original = std::fs::read(sample_dir().join(first["path"].as_str().unwrap())).unwrap();
    let back = std::fs::read(&out).unwrap();
    let tail = |b: &[u8]| {
        // The data set starts after the meta group: 132 + 12 + group length.
        let len = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
        b[144 + len..].to_vec()
    };
    assert_eq!(tail(&back), tail(&original));
}

/// One raw HTTP request; returns the response head (status line and headers).
fn http_head_of(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(h, _)| h.to_ascii_lowercase())
        .unwrap_or(text)
}

/// `cors_allowed_origins` lets a viewer of another origin (OHIF deployed on
/// its own host) call DICOMweb: the configured origin gets the CORS headers,
/// on preflight and on the real request; any other origin gets none.
#[test]
fn cors_origins_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "cors_allowed_origins = [\"http://viewer.example:3000\"]\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap(), "--demo"]);
    let get = |origin: &str| {
        http_head_of(
            server.http_port,
            &format!(
                "GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\
                 Accept: application/dicom+json\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let allowed = get("http://viewer.example:3000");
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: http://viewer.example:3000"),
        "{allowed}"
    );
    let other = get("http://evil.example");
    assert!(other.starts_with("http/1.1 200"), "{other}");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    let preflight = http_head_of(
        server.http_port,
        "OPTIONS /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://viewer.example:3000\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: accept\r\nConnection: close\r\n\r\n",
    );
    assert!(
        preflight.contains("access-control-allow-origin: http://viewer.example:3000"),
        "{preflight}"
    );
    assert!(
        preflight.contains("access-control-allow-methods"),
        "{preflight}"
    );
    let (status, _) = server.stop();
    assert!(status.success());

    // An entry that is not an origin is refused at start with what to write.
    std::fs::write(&cfg, "cors_allowed_origins = [\"viewer.example/ohif/\"]\n").unwrap();
    let o = std::process::Command::new(pacs_bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not an origin"), "{}", stderr(&o));
}

/// A modality cut off in the middle of a large C-STORE (the server lands
/// objects first): nothing of it becomes visible, the server keeps
/// serving, the next store lands and is moved, and the archive verifies.
#[test]
fn storescu_cut_off_mid_store_leaves_nothing_behind() {
    let Some(storescu) = dcmtk("storescu") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let big = tmp.path().join("big.dcm");
    std::fs::write(
        &big,
        sample_data::synthetic::object(&sample_data::synthetic::Spec {
            study: "1.2.826.0.1.7",
            series: "1.2.826.0.1.7.1",
            sop: "1.2.826.0.1.7.1.1",
            pixel_bytes: 200 << 20,
            ..Default::default()
        }),
    )
    .unwrap();
    let cfg = config_with_remote_ae(tmp.path(), "MODALITY");
    let server = Server::start(&dir, &["--config", cfg.to_str().unwrap()]);
    let mut child = std::process::Command::new(&storescu)
        .args(["-aec", "PACS", "-aet", "MODALITY"])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .arg(&big)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !finished,
        "storescu sent 200 MB before it could be cut off: the test proves nothing"
    );
    let health = |port| -> serde_json::Value {
        serde_json::from_str(&http_get(port, "/healthz").unwrap().1).unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(health(server.http_port)["instances"], 0);

    let one = sample_dir().join("ct-phantom");
    let first = tree(&one)
        .into_iter()
        .find(|p| p.ends_with(".dcm"))
        .unwrap();
    let o = std::process::Command::new(&storescu)
        .args(["-aec", "PACS", "-aet", "MODALITY"])
        .arg("127.0.0.1")
        .arg(server.dimse_port.to_string())
        .arg(one.join(first))
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}{}", stdout(&o), stderr(&o));
    assert_eq!(health(server.http_port)["instances"], 1);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
    let blobs: Vec<String> = tree(&dir.join("objects"))
        .into_iter()
        .filter(|p| p.ends_with(".dcm"))
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let o = pacs(&dir, &["verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// With `metadata_compact_after_secs = 1` the server moves the DICOM JSON
/// of the demo's series into metadata blobs (one per series, in the blob
/// store); WADO-RS metadata then answers exactly what a server that has
/// not compacted answers, and `pacs verify` finds nothing wrong.
#[test]
fn compacted_series_metadata_answers_like_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(&cfg, "metadata_compact_after_secs = 1\n").unwrap();
    let compacting = tmp.path().join("a");
    let a = Server::start(&compacting, &["--demo", "--config", cfg.to_str().unwrap()]);
    let plain = tmp.path().join("b");
    let b = Server::start(&plain, &["--demo"]);
    let (_, body) = http_get(a.http_port, "/api/stats").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let series = stats["series"].as_u64().unwrap();
    // Bounded wait for the background compaction of every series.
    let blobs = |dir: &std::path::Path| {
        tree(&dir.join("objects"))
            .into_iter()
            .filter(|p| p.starts_with("metadata/") && p.ends_with(".gz"))
            .count() as u64
    };
    let start = std::time::Instant::now();
    while blobs(&compacting) < series && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(blobs(&compacting), series, "one blob per series");
    assert_eq!(blobs(&plain), 0, "the default waits 30 s");
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("series metadata compacted"), "{log}");
    let (x, y) = (
        all_study_metadata(a.http_port),
        all_study_metadata(b.http_port),
    );
    assert_eq!(x.len(), 5);
    assert_eq!(x, y);
    let (exit, log) = a.stop();
    assert!(exit.success(), "{log}");
    b.stop();
    let o = pacs(&compacting, &["verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
