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

    // Not built yet: a proper refusal, not a fake answer.
    let (status, body) = http_get(server.http_port, "/dicom-web/studies").unwrap();
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("not supported"));
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
