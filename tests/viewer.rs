//! The browser viewer end to end: the real `pacs serve` with the demo studies
//! and a 400-slice CT, and every `tests/browser/*.spec.mjs` run in Debian's
//! Chromium through `tests/browser/run.mjs` (playwright-core). Screenshots
//! and measurements go to `target/browser-artifacts/<spec>/`.
//!
//! Needs `node` and Chromium (`/usr/bin/chromium`, or `PACS_CHROMIUM`).
//! Without them the test is skipped, unless `PACS_REQUIRE_PEERS` is set
//! (tests/run.sh sets it), in which case it fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Slices of the large CT (the "first image of a 400-slice CT" target).
const BIG_CT_SLICES: u32 = 400;
/// The whole browser run is bounded (the machine may be slow and busy).
const BROWSER_LIMIT: Duration = Duration::from_secs(20 * 60);

fn chromium() -> PathBuf {
    std::env::var_os("PACS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why the browser tests cannot run here, if they cannot.
fn missing_peer() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed (Node.js 20+)".into());
    }
    if !chromium().is_file() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    let playwright = repo_root().join("viewer-web/app/node_modules/playwright-core");
    if !playwright.is_dir() {
        return Some(format!(
            "{} is missing (npm ci in viewer-web/app)",
            playwright.display()
        ));
    }
    None
}

/// `gen-sample-data`, built beside `pacs` with the same profile (always
/// through cargo, a no-op when it is up to date: a binary left from an
/// older tree would lack the generators the specs ask for).
fn gen_sample_data() -> PathBuf {
    let pacs = PathBuf::from(pacs_bin());
    let dir = pacs.parent().unwrap().to_path_buf();
    let bin = dir.join(format!("gen-sample-data{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "--locked",
        "-p",
        "sample-data",
        "--bin",
        "gen-sample-data",
    ]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => {}
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building gen-sample-data failed");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

fn specs() -> Vec<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/browser"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".spec.mjs"))
        })
        .collect();
    specs.sort();
    specs
}

/// The StudyInstanceUID of the study with this accession number, by QIDO.
fn study_by_accession(port: u16, accession: &str) -> String {
    let (status, body) = http_get(
        port,
        &format!("/dicom-web/studies?AccessionNumber={accession}&includefield=0020000D"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    rows[0]["0020000D"]["Value"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no study with accession {accession}: {body}"))
        .to_owned()
}

fn run_browser(
    base: &str,
    out: &Path,
    big_ct: &str,
    config_dir: &Path,
    log: &Path,
) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.current_dir(repo_root())
        .arg("tests/browser/run.mjs")
        .arg("--base")
        .arg(base)
        .arg("--out")
        .arg(out)
        .args(specs())
        .env("PACS_TEST_BIGCT_STUDY", big_ct)
        .env("PACS_TEST_CONFIG_DIR", config_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(log).unwrap(),
        ));
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > BROWSER_LIMIT {
            terminate(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(s) => (s.success(), output),
        None => (
            false,
            format!("{output}\nthe browser run did not finish within {BROWSER_LIMIT:?}"),
        ),
    }
}

#[test]
fn viewer_in_a_real_browser() {
    if let Some(why) = missing_peer() {
        pacs_testkit::peers::skip_or_fail(&format!("browser tests cannot run: {why}"));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let generate = |args: &[&str], dir: &str| {
        let out = tmp.path().join(dir);
        let gen = Command::new(gen_sample_data())
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(gen.status.success(), "gen-sample-data: {}", stderr(&gen));
        out
    };
    let big_ct_dir = generate(
        &["bench-ct", "--count", &BIG_CT_SLICES.to_string()],
        "big-ct",
    );
    // The MPR phantoms (regular, gantry-tilted, irregular): reader-mpr.spec.mjs.
    let mpr_dir = generate(&["mpr-ct"], "mpr-ct");
    // Studies for the hanging protocols: reader-hanging.spec.mjs.
    let hanging_dir = generate(&["hanging"], "hanging");

    let data = tmp.path().join("data");
    let sample = sample_dir();
    let import = pacs(
        &data,
        &[
            "import",
            sample.to_str().unwrap(),
            big_ct_dir.to_str().unwrap(),
            mpr_dir.to_str().unwrap(),
            hanging_dir.to_str().unwrap(),
        ],
    );
    assert!(import.status.success(), "import: {}", stderr(&import));

    // A config file alone in its folder: reader-hanging.spec.mjs writes
    // hanging_protocols.json beside it to edit the protocols.
    let config_dir = tmp.path().join("etc");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("pacs.toml");
    std::fs::write(&config, "# the browser test's configuration\n").unwrap();
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let big_ct = study_by_accession(server.http_port, "ACC-BENCH-0001");
    let base = format!("http://127.0.0.1:{}", server.http_port);
    let out = repo_root().join("target/browser-artifacts");
    std::fs::create_dir_all(&out).unwrap();
    let started = Instant::now();
    let (ok, output) = run_browser(
        &base,
        &out,
        &big_ct,
        &config_dir,
        &tmp.path().join("browser.log"),
    );
    println!("{output}");
    println!(
        "browser specs took {:.1} s; artefacts in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    let (status, log) = server.stop();
    assert!(ok, "browser specs failed (see above); server log:\n{log}");
    assert!(status.success(), "server exit: {status}\n{log}");
    assert!(
        output.contains("browser specs:") && output.contains(" 0 failed"),
        "unexpected runner output"
    );
}

/// A raw HTTP/1.1 GET over TCP: (status line, headers lower-cased, body).
fn raw_get(port: u16, path: &str, headers: &str) -> (String, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let (status, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_owned(),
        rest.to_lowercase(),
        buf[split + 4..].to_vec(),
    )
}

/// `pacs serve --demo` serves the embedded viewer, its assets and the launch
/// links over TCP (no browser needed).
#[test]
fn serve_demo_serves_the_viewer() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--demo"]);
    let port = server.http_port;

    let (status, headers, body) = raw_get(port, "/", "");
    assert!(status.contains(" 200 "), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(headers.contains("cache-control: no-cache"), "{headers}");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("<div id=\"app\">"), "{page}");

    // Every script and style the page names is served, immutable and gzipped.
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(!assets.is_empty(), "{page}");
    for a in assets {
        let (status, headers, body) = raw_get(port, a, "Accept-Encoding: gzip\r\n");
        assert!(status.contains(" 200 "), "{a}: {status}");
        assert!(
            headers.contains("cache-control: public, max-age=31536000, immutable"),
            "{a}: {headers}"
        );
        assert!(headers.contains("content-encoding: gzip"), "{a}: {headers}");
        assert_eq!(&body[..2], &[0x1f, 0x8b], "{a} is gzip");
    }
    let (status, _, _) = raw_get(port, "/assets/nothing-here.js", "");
    assert!(status.contains(" 404 "), "{status}");

    // A deep link into the app, and the API left alone.
    let (status, _, body) = raw_get(port, "/viewer?StudyInstanceUIDs=1.2.3", "");
    assert!(status.contains(" 200 ") && body.starts_with(b"<!doctype html>"));
    let (status, _, _) = raw_get(port, "/dicom-web/nothing", "Accept: text/html\r\n");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _, _) = raw_get(port, "/healthz", "Accept: text/html\r\n");
    assert!(status.contains(" 200 "), "{status}");

    // IHE IID: the demo patient's studies, newest first.
    let ct = study_by_accession(port, "ACC-CT-0001");
    let prior = study_by_accession(port, "ACC-CT-0000");
    let (status, headers, _) = raw_get(
        port,
        "/IHEInvokeImageDisplay?requestType=PATIENT&patientID=VN-0001",
        "",
    );
    assert!(status.contains(" 302 "), "{status}");
    assert!(
        headers.contains(&format!(
            "location: /viewer?studyinstanceuids={ct}&studyinstanceuids={prior}"
        )),
        "{headers}"
    );
    let (status, _, body) = raw_get(
        port,
        "/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.999",
        "",
    );
    assert!(status.contains(" 404 "), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("1.2.999"));
    let (status, _) = server.stop();
    assert!(status.success());
}

/// The viewer's pure TypeScript modules under Node's test runner
/// (`viewer-web/app/test/*.test.mjs`, e.g. which series form an MPR volume).
#[test]
fn viewer_unit_tests_under_node() {
    if let Some(why) = missing_peer() {
        pacs_testkit::peers::skip_or_fail(&format!("viewer unit tests cannot run: {why}"));
        return;
    }
    let out = Command::new("node")
        .current_dir(repo_root().join("viewer-web/app"))
        .args(["--test", "test/"])
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("{text}");
    assert!(out.status.success(), "node --test failed:\n{text}");
    assert!(text.contains("# fail 0"), "unexpected output:\n{text}");
}

/// `GET /api/v1/hanging-protocols`: the built-in protocols, or the file named
/// by `hanging_protocols` (relative to the config file's folder), read again
/// on every request; an invalid file is answered 500 with the file, line and
/// reason, and stops the server from starting, as does a missing named file.
/// (`hanging_protocols.json` found beside the config file: the browser test.)
#[test]
fn hanging_protocols_from_the_config_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data0"), &[]);
    let (status, body) = http_get(server.http_port, "/api/v1/hanging-protocols").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"ct-chest\"") && body.contains("\"mr-brain\""),
        "{body}"
    );
    server.stop();

    let conf_dir = tmp.path().join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let protocols = conf_dir.join("hanging.json");
    let mine = r#"{"version":1,"protocols":[{"id":"cr-chest","modality":"CR","viewports":[{"study":"current"},{"study":"prior"}]}]}"#;
    std::fs::write(&protocols, mine).unwrap();
    let cfg = conf_dir.join("pacs.toml");
    std::fs::write(&cfg, "hanging_protocols = \"hanging.json\"\n").unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (status, body) = http_get(server.http_port, "/api/v1/hanging-protocols").unwrap();
    assert_eq!((status, body.as_str()), (200, mine));
    // Edited while the server runs: the next read sees it; broken: 500 with the reason.
    std::fs::write(&protocols, r#"{"version":1,"protocols":[{"id":"x"}]}"#).unwrap();
    let (status, body) = http_get(server.http_port, "/api/v1/hanging-protocols").unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("hanging.json are not valid")
            && body.contains("missing field `modality` at line 1"),
        "{body}"
    );
    server.stop();

    let out = pacs(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--dimse-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hanging protocols")
            && stderr(&out).contains("hanging.json")
            && stderr(&out).contains("line 1"),
        "{}",
        stderr(&out)
    );

    // A named file that is missing: refused too.
    std::fs::remove_file(&protocols).unwrap();
    let out = pacs(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--dimse-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read hanging protocols"),
        "{}",
        stderr(&out)
    );
}
