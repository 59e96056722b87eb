//! Shared harness of the end-to-end tests: run the real `pacs` binary on a
//! temporary data dir, start and stop servers on free loopback ports, build
//! small Part 10 files for bad-input tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn pacs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pacs")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample_dir() -> PathBuf {
    repo_root().join("sample-data/studies")
}

/// Number of files in the committed sample data.
pub fn sample_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![sample_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal blocking HTTP/1.1 GET over TCP: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    read_response(s)
}

/// Reads a whole `Connection: close` HTTP/1.1 response: (status, body).
pub fn read_response(mut s: TcpStream) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
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

#[allow(unused_imports)]
pub use sample_data::synthetic::part10;

/// A small valid CT-like object with the given UIDs.
pub fn small_object(study: &str, series: &str, sop: &str) -> Vec<u8> {
    sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study,
        series,
        sop,
        patient_name: "TEST^BAD^INPUT",
        patient_id: "BAD-1",
        ..Default::default()
    })
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// A tiny deterministic PRNG (xorshift64*) for kill timings.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A DCMTK tool by absolute path (a Python venv's `storescu` may shadow
/// the real one on PATH), or `None` (then the test fails when
/// `PACS_REQUIRE_PEERS` is set, else it is skipped with a message).
pub fn dcmtk(tool: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(tool);
    if p.exists() {
        return Some(p);
    }
    peer_missing(&format!("{tool} (DCMTK) is not installed"))
}

/// The Python that has pynetdicom (`PACS_PYTHON`, else `python3`), or
/// `None` when it is missing (a failure under `PACS_REQUIRE_PEERS`).
pub fn pynetdicom_python() -> Option<String> {
    let python = std::env::var("PACS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import pynetdicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    peer_missing(&format!("pynetdicom is not importable by {python}"))
}

/// A peer tool is missing: fails under `PACS_REQUIRE_PEERS`, else the test
/// is skipped with a message.
fn peer_missing<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var_os("PACS_REQUIRE_PEERS").is_none(),
        "{why}: run tests/run.sh"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
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
    use std::io::Write;
    let mut child = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(data)
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
        assert!(
            std::env::var_os("PACS_REQUIRE_PEERS").is_none(),
            "browser test cannot run: node, Chromium or playwright-core missing"
        );
        eprintln!("SKIPPED: node, Chromium or playwright-core missing");
        return None;
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
