//! A throwaway S3-compatible server for the tests: moto's server (PyPI
//! `moto[server]`, pinned in tests/requirements.txt) on a free loopback
//! port, stopped by its PID when dropped, with a raw HTTP client for what
//! the tests check in the bucket (moto does not check signatures: a
//! request needs an `Authorization` header, not a valid one).
//!
//! moto keeps everything in memory: it proves API conformance (requests,
//! conditional writes, multipart), not the disk durability of the store.
//! [`S3sFs`] is the disk-backed one: s3s-fs (crates.io, installed by
//! tests/run.sh), which checks request signatures and keeps each object
//! as a file (written to a temporary file, then renamed), so it can be
//! killed and started again on the same directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::peers::{missing, python, python_has};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port, or `None` after [`missing`] when the
    /// Python of the tests cannot import it.
    pub fn start() -> Option<Moto> {
        if !python_has("moto.server") {
            return missing(&format!(
                "moto[server] is not importable by {} (tests/run.sh installs it)",
                python()
            ));
        }
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning moto");
        let mut moto = Moto { child, port };
        let start = Instant::now();
        loop {
            if let Ok((200, _, _)) = moto.request("GET", "/", &[], b"") {
                return Some(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited at start with {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS variables pointing at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Creates a bucket (path-style PUT).
    pub fn create_bucket(&self, bucket: &str) {
        create_bucket_on(self.port, bucket);
    }

    /// Every key in `bucket` (up to 1000, one ListObjectsV2 page).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        keys_on(self.port, bucket)
    }

    /// An object's bytes and ETag, or `None` when it does not exist.
    pub fn object(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let (status, headers, body) = self
            .request("GET", &format!("/{bucket}/{key}"), &[], b"")
            .unwrap();
        match status {
            200 => {
                let etag = headers
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("etag").then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                Some((body, etag))
            }
            404 => None,
            s => panic!("GET {bucket}/{key}: {s}"),
        }
    }

    /// Puts an object (unconditionally).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, _, _) = self
            .request("PUT", &format!("/{bucket}/{key}"), &[], body)
            .unwrap();
        assert_eq!(status, 200, "PUT {bucket}/{key}");
    }

    /// One HTTP/1.1 request with `Connection: close`: (status, headers, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, String, Vec<u8>)> {
        request_on(self.port, method, path, headers, body)
    }
}

/// Creates a bucket (path-style PUT) on the S3 server at 127.0.0.1:`port`.
pub fn create_bucket_on(port: u16, bucket: &str) {
    let (status, _, body) = request_on(port, "PUT", &format!("/{bucket}"), &[], b"").unwrap();
    assert_eq!(
        status,
        200,
        "creating bucket {bucket}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// Every key in `bucket` on the S3 server at 127.0.0.1:`port` (up to
/// 1000, one ListObjectsV2 page).
pub fn keys_on(port: u16, bucket: &str) -> Vec<String> {
    let (status, _, body) =
        request_on(port, "GET", &format!("/{bucket}?list-type=2"), &[], b"").unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "listing {bucket}: {text}");
    text.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect()
}

/// One HTTP/1.1 request with `Connection: close` to the S3 server at
/// 127.0.0.1:`port`: (status, headers, body).
pub fn request_on(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0\r\n",
            port,
            body.len()
        );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, head, body))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// A running s3s-fs server (disk-backed, signatures checked) on a free
/// loopback port, serving the buckets under its root directory.
///
/// It keeps each object's metadata in a file named from the base64 of the
/// bucket and the key, so a CopyObject to a key longer than about 180
/// bytes (three 64-character UIDs) fails with "File name too long": the
/// tests that store such UIDs (pydicom's corpus) run on [`Moto`].
pub struct S3sFs {
    child: Option<Child>,
    bin: String,
    root: std::path::PathBuf,
    pub port: u16,
}

/// The access key the tests give s3s-fs (and sign with).
pub const S3S_ACCESS_KEY: &str = "senpacs";
/// The secret key the tests give s3s-fs.
pub const S3S_SECRET_KEY: &str = "senpacs-secret";

impl S3sFs {
    /// Starts s3s-fs (`PACS_S3S_FS`, else `s3s-fs` on PATH) serving `root`,
    /// or `None` after [`missing`] when it is not installed.
    pub fn start(root: &std::path::Path) -> Option<S3sFs> {
        let bin = std::env::var("PACS_S3S_FS").unwrap_or_else(|_| "s3s-fs".to_owned());
        let found = Command::new(&bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return missing(&format!(
                "s3s-fs ({bin}) is not installed (tests/run.sh installs it: \
                 cargo install --locked s3s-fs@0.14.1 --features binary)"
            ));
        }
        std::fs::create_dir_all(root).expect("s3s-fs root");
        let mut server = S3sFs {
            child: None,
            bin,
            root: root.to_owned(),
            port: free_port(),
        };
        server.restart();
        Some(server)
    }

    /// Starts the server again on the same port and directory (after
    /// [`Self::kill`]), and waits (bounded) until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                S3S_ACCESS_KEY,
                "--secret-key",
                S3S_SECRET_KEY,
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning s3s-fs");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("s3s-fs exited at start with {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3s-fs did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the server (by its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS variables pointing at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3S_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3S_SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Creates a bucket: s3s-fs serves each directory under its root as one.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.join(bucket)).expect("bucket directory");
    }

    /// Every object key in `bucket`, read from the server's directory
    /// (its temporary and internal files left out).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let base = self.root.join(bucket);
        let mut out: Vec<String> = crate::samples::files_under(&base)
            .into_iter()
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                !name.starts_with(".tmp.") && !name.ends_with(".internal.part")
            })
            .filter_map(|path| {
                let rel = path.strip_prefix(&base).ok()?;
                Some(rel.to_string_lossy().into_owned())
            })
            .collect();
        out.sort();
        out
    }

    /// An object's bytes as the server keeps them on disk.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(bucket).join(key)).ok()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Stopped by its own PID (the child handle), never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
