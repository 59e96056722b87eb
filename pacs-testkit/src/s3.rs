//! A throwaway S3-compatible server for the tests: moto's server (PyPI
//! `moto[server]`, pinned in tests/requirements.txt) on a free loopback
//! port, stopped by its PID when dropped, with a raw HTTP client for what
//! the tests check in the bucket (moto does not check signatures: a
//! request needs an `Authorization` header, not a valid one).
//!
//! moto keeps everything in memory: it proves API conformance (requests,
//! conditional writes, multipart), not the disk durability of the store.

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

impl Drop for Moto {
    fn drop(&mut self) {
        // Stopped by its own PID (the child handle), never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
