//! Shared harness of the end-to-end tests: run the real `pacs` binary on a
//! temporary data dir, start and stop servers on free loopback ports, build
//! small Part 10 files for bad-input tests.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use pacs_testkit::net::{free_port, http_get, read_response};
pub use pacs_testkit::peers::{dcmtk, pynetdicom_python};
pub use pacs_testkit::samples::{
    repo_root, sample_dir, sample_files, sha256_file, small_object, tree,
};
pub use pacs_testkit::Rng;
#[allow(unused_imports)]
pub use sample_data::synthetic::part10;

pub mod workflow;
pub use workflow::{field, his, http, mllp, msa, request, Resp};

pub fn pacs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pacs")
}

/// The first `n` slices of the sample CT, as paths.
pub fn ct_files(n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(sample_dir().join("ct-phantom/1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(n)
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Runs `pacs --data-dir DIR ARGS...` to completion.
pub fn pacs(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `pacs serve`; stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub http_port: u16,
    pub dimse_port: u16,
    /// The server's stderr goes to a file beside the data dir: a pipe
    /// nobody reads would fill up and block the server's logging.
    pub log: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let http_port = free_port();
        let dimse_port = free_port();
        let log = data_dir.with_extension("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(pacs_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("serve")
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--dimse-listen")
            .arg(format!("127.0.0.1:{dimse_port}"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            http_port,
            dimse_port,
            log,
        };
        server.wait_healthy(Duration::from_secs(60));
        server
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok((200, _)) = http_get(self.http_port, "/healthz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("server exited early with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become healthy within {limit:?}");
    }

    /// SIGTERM, then wait (bounded); returns the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = terminate(&mut self.child);
        (
            status,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config file in `dir` listing `ae_title` as a remote AE at 127.0.0.1
/// (outside `--demo`, `strict_ae` is on: only listed AEs may associate).
pub fn config_with_remote_ae(dir: &Path, ae_title: &str) -> PathBuf {
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!("[[remote_ae]]\nae_title = \"{ae_title}\"\nhost = \"127.0.0.1\"\nport = 1\n"),
    )
    .unwrap();
    cfg
}

/// The password the HTTP tests give their users.
pub const TEST_PASSWORD: &str = "correct-horse-42";

/// `pacs user add NAME --role ROLE --password-stdin` with [`TEST_PASSWORD`].
pub fn add_user(data: &Path, name: &str, role: &str) {
    add_user_with(data, &[], name, role);
}

/// [`add_user`] with more global arguments (`--config FILE`).
pub fn add_user_with(data: &Path, extra: &[&str], name: &str, role: &str) {
    use std::io::Write;
    let mut child = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .args(["user", "add", name, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{TEST_PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "user add: {}", stderr(&out));
}

/// An HTTP Basic `Authorization` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Runs a Playwright spec of tests/browser against the server on `port`
/// (Chromium, bounded to 10 minutes). `None` when node, Chromium or
/// playwright-core is missing (an error under `PACS_REQUIRE_PEERS`);
/// otherwise whether every check passed, and the runner's output.
pub fn browser_spec(port: u16, spec: &str, env: &[(&str, &str)]) -> Option<(bool, String)> {
    let chromium = std::env::var_os("PACS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let playwright = repo_root().join("viewer-web/app/node_modules/playwright-core");
    if !node_ok || !chromium.is_file() || !playwright.is_dir() {
        return pacs_testkit::peers::missing("node, Chromium or playwright-core is missing");
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("browser.log");
    let mut child = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/browser/run.mjs")
        .arg("--base")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(repo_root().join("target/browser-artifacts"))
        .arg(spec)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(600) {
            terminate(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let passed = status.is_some_and(|s| s.success()) && output.contains(" 0 failed");
    Some((passed, output))
}

/// STOW-RS of one Part 10 object: (HTTP status, body).
pub fn stow(port: u16, part10: &[u8]) -> (u16, String) {
    let boundary = "sen-pacs-test-boundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(part10);
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n\
         Accept: application/dicom+json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    read_response(s).unwrap()
}

/// Runs a peer script of `tests/peers/` with `python` to completion
/// (bounded: 120 s) and parses the one JSON object it prints.
pub fn peer_json(python: &str, script: &str, args: &[String]) -> serde_json::Value {
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/peers").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            terminate(&mut child);
            panic!("{script} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A peer script of `tests/peers/` that listens for what the archive
/// sends: started and waited for until it prints its `listening` line; it
/// writes what it received as JSON to `out` and ends (bounded by the
/// script's own time-out). Stopped by its PID on drop.
pub struct PeerListener {
    child: Child,
    out: PathBuf,
}

impl PeerListener {
    pub fn start(python: &str, script: &str, args: &[String], out: &Path) -> PeerListener {
        use std::io::BufRead;
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/peers").join(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening"), "{script} did not start: {line}");
        PeerListener {
            child,
            out: out.to_owned(),
        }
    }

    /// What it received (waits for the script to end, bounded: 150 s).
    pub fn result(mut self) -> serde_json::Value {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(150) {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&self.out).expect("the listener received nothing");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for PeerListener {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

/// Walks a listing a page at a time from `first`, following each
/// `Link: <path>; rel="next"` header: `get(path)` answers one page's items
/// and its Link header. Fails if a Link is malformed or the walk takes more
/// than `max_pages` pages.
pub fn follow_next<T>(
    first: &str,
    max_pages: usize,
    mut get: impl FnMut(&str) -> (Vec<T>, Option<String>),
) -> Vec<T> {
    let mut items = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..max_pages {
        let (page, link) = get(&path);
        items.extend(page);
        let Some(link) = link else {
            return items;
        };
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("a Link header names the next page: {link}"));
        assert!(target.starts_with('/'), "{link}");
        path = target.to_owned();
    }
    panic!("more than {max_pages} pages from {first}");
}

/// The durable job queue as `/api/v1/queue` lists it.
pub fn queue_jobs(http_port: u16) -> Vec<serde_json::Value> {
    let (status, body) = http_get(http_port, "/api/v1/queue").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded: 90 s) until `pred` holds for the jobs
/// `/api/v1/queue` on `http_port` lists; `what` names the wait in the
/// failure.
pub fn wait_jobs(
    http_port: u16,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let listed = queue_jobs(http_port);
        if pred(&listed) {
            return listed;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{what}: {listed:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// When [`import_then_kill`] kills the import.
pub enum KillAt {
    /// Once this many stores were acknowledged (within 60 s), so the kill
    /// lands mid-stream whatever the machine's speed.
    Acks(usize),
    /// After this delay (start-up and recovery included).
    Delay(Duration),
}

/// What a killed `pacs import --print-stored` acknowledged.
pub struct KilledImport {
    /// (SOP Instance UID, SHA-256, source file) of each acknowledged store.
    pub stored: Vec<(String, String, String)>,
    /// Whether the kill came before the import finished, after at least
    /// one acknowledgement.
    pub mid_stream: bool,
}

/// Runs `import` (a `pacs … import --print-stored …` command), SIGKILLs it
/// (by PID) at `at`, and returns the stores it acknowledged before dying.
pub fn import_then_kill(import: Command, at: KillAt) -> KilledImport {
    import_then_kill_with(import, at, |_| {})
}

/// [`import_then_kill`], calling `on_ack(n)` after the `n`th acknowledged
/// store is read (with [`KillAt::Acks`]), while the import keeps running.
pub fn import_then_kill_with(
    mut import: Command,
    at: KillAt,
    mut on_ack: impl FnMut(usize),
) -> KilledImport {
    let mut child = import
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    match at {
        KillAt::Acks(want) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while lines.len() < want && Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(l) => {
                        lines.push(l);
                        on_ack(lines.len());
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        KillAt::Delay(d) => std::thread::sleep(d),
    }
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let stored = lines
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split('\t').collect();
            assert_eq!(parts.len(), 4, "bad stored line {l:?}");
            assert_eq!(parts[0], "stored", "bad stored line {l:?}");
            (
                parts[1].to_owned(),
                parts[2].to_owned(),
                parts[3].to_owned(),
            )
        })
        .collect::<Vec<_>>();
    KilledImport {
        mid_stream: !finished && !stored.is_empty(),
        stored,
    }
}

/// WADO-RS metadata of every study, with the server's own address
/// replaced (bulk data URIs name it).
pub fn all_study_metadata(port: u16) -> Vec<(String, String)> {
    use crate::common::workflow::request;
    let r = request(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Accept", "application/dicom+json")],
        None,
    );
    assert_eq!(r.status, 200);
    let studies: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
    let mut out = Vec::new();
    for s in studies {
        let uid = s["0020000D"]["Value"][0].as_str().unwrap().to_owned();
        let r = request(
            port,
            "GET",
            &format!("/dicom-web/studies/{uid}/metadata"),
            &[("Accept", "application/dicom+json")],
            None,
        );
        assert_eq!(r.status, 200, "{uid}");
        let text = String::from_utf8(r.body).unwrap();
        out.push((uid, text.replace(&format!("127.0.0.1:{port}"), "HOST")));
    }
    out.sort();
    out
}

/// The OpenID Connect test provider, started with `node tests/oidc/op.mjs
/// PORT`; stopped on drop (also when an assertion fails).
pub struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// The provider with extra arguments (`--tls CERT KEY`, `--redirect URI`);
/// ready once it says so.
pub fn start_provider_with(port: u16, args: &[&str]) -> Provider {
    let dir = repo_root().join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "run `npm ci` in tests/oidc (tests/run.sh does)"
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("node")
        .arg(dir.join("op.mjs"))
        .arg(port.to_string())
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::from(log.reopen().unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if std::fs::read_to_string(log.path())
            .unwrap_or_default()
            .contains("ready ")
        {
            return Provider(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the OIDC provider exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut child);
    panic!("the OIDC provider did not start");
}
