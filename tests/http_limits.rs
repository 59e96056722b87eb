//! The HTTP limits of `pacs serve`, through the real binary over TCP: frame
//! lists, byte ranges, STOW-RS metadata and deflated parts, the listener's
//! header time-out and connection cap. Each server gets small limits from
//! the `[limits]` table of its config file.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Starts `pacs serve --demo` with `limits` as its `[limits]` table.
fn serve_with(tmp: &Path, limits: &str) -> Server {
    let config = tmp.join("pacs.toml");
    std::fs::write(&config, format!("[limits]\n{limits}")).unwrap();
    Server::start(
        &tmp.join("data"),
        &["--demo", "--config", config.to_str().unwrap()],
    )
}

/// A response read whole: status, header block (lower-case), body
/// (de-chunked).
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

/// Sends `method path` with `headers` and `body` on a new connection
/// (`Connection: close`) and reads the whole answer.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = find(&raw, b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Answer { status, head, body }
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(port, "GET", path, headers, &[])
}

/// The parts of a multipart answer (by its boundary).
fn part_count(a: &Answer) -> usize {
    let ct = a.header("content-type").unwrap();
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let delim = format!("--{boundary}\r\n");
    a.body
        .windows(delim.len())
        .filter(|w| *w == delim.as_bytes())
        .count()
}

fn manifest_entry(study: &str) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("sample-data/manifest.json")).unwrap(),
    )
    .unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["study"] == study)
        .unwrap()
        .clone()
}

fn instance_path(f: &serde_json::Value) -> String {
    format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        f["study_instance_uid"].as_str().unwrap(),
        f["series_instance_uid"].as_str().unwrap(),
        f["sop_instance_uid"].as_str().unwrap()
    )
}

#[test]
fn frame_lists_are_deduplicated_and_capped_and_ranges_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    // The cine has 24 JPEG frames of about 15 kB; the CT 128 KiB of
    // native pixel data.
    let server = serve_with(
        tmp.path(),
        "max_frames_per_request = 5\nmax_frames_response_bytes = 100000\nmax_bulk_value_bytes = 100000\n",
    );
    let port = server.http_port;
    let cine = instance_path(&manifest_entry("us-cine"));

    // One frame named 50 times: one part.
    let list = vec!["1"; 50].join(",");
    let a = get(port, &format!("{cine}/frames/{list}"), &[]);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(part_count(&a), 1);
    // Order kept, repeats dropped.
    let a = get(port, &format!("{cine}/frames/3,1,3,1"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(part_count(&a), 2);
    // Six distinct frames: more than a request may name.
    let a = get(port, &format!("{cine}/frames/1,2,3,4,5,6"), &[]);
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body).contains("at most 5"));
    // Five frames of ~15 kB: under the frame cap, over the byte cap
    // only when they add up past it.
    let a = get(port, &format!("{cine}/frames/1,2,3,4,5"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(part_count(&a), 5);
    // Every frame as bulk data: past the byte cap.
    let a = get(port, &format!("{cine}/bulkdata/7FE00010"), &[]);
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("limit"));

    // Ranges of native pixel data (131072 bytes) within the same guard as
    // the whole value.
    let ct = format!(
        "{}/bulkdata/7FE00010",
        instance_path(&manifest_entry("ct-phantom"))
    );
    let octet = ("Accept", "application/octet-stream");
    let a = get(port, &ct, &[octet]);
    assert_eq!(a.status, 413);
    let a = get(port, &ct, &[octet, ("Range", "bytes=0-")]);
    assert_eq!(a.status, 413, "bytes=0- is the whole value");
    assert!(String::from_utf8_lossy(&a.body).contains("range"));
    let a = get(port, &ct, &[octet, ("Range", "bytes=-100001")]);
    assert_eq!(a.status, 413);
    let a = get(port, &ct, &[octet, ("Range", "bytes=0-999")]);
    assert_eq!(a.status, 206);
    assert_eq!(a.body.len(), 1000);
    assert_eq!(
        a.header("content-range").as_deref(),
        Some("bytes 0-999/131072")
    );
    let a = get(port, &ct, &[octet, ("Range", "bytes=200000-")]);
    assert_eq!(a.status, 416);
    assert!(String::from_utf8_lossy(&a.body).contains("131072 bytes"));

    // Still serving.
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

/// A Deflated Explicit VR Little Endian object (PS3.5 A.5) whose data set
/// holds `padding` zero bytes in a private OB element: a few kB on the
/// wire, `padding` bytes once inflated.
fn deflated_object(sop: &str, padding: usize) -> Vec<u8> {
    use flate2::write::DeflateEncoder;
    use sample_data::synthetic::element;
    const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
    let mut ds = Vec::new();
    element(&mut ds, 0x0008_0016, "UI", SC.as_bytes());
    element(&mut ds, 0x0008_0018, "UI", sop.as_bytes());
    element(&mut ds, 0x0008_0060, "CS", b"OT");
    element(&mut ds, 0x0009_0010, "LO", b"BOMB");
    element(&mut ds, 0x0009_1001, "OB", &vec![0u8; padding]);
    element(&mut ds, 0x0010_0020, "LO", b"DEFLATE-1");
    element(&mut ds, 0x0020_000D, "UI", b"2.25.7001");
    element(&mut ds, 0x0020_000E, "UI", b"2.25.7001.1");
    let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&ds).unwrap();
    let deflated = enc.finish().unwrap();
    let mut meta = Vec::new();
    element(&mut meta, 0x0002_0001, "OB", &[0, 1]);
    element(&mut meta, 0x0002_0002, "UI", SC.as_bytes());
    element(&mut meta, 0x0002_0003, "UI", sop.as_bytes());
    element(&mut meta, 0x0002_0010, "UI", b"1.2.840.10008.1.2.1.99");
    element(&mut meta, 0x0002_0012, "UI", b"2.25.1");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0002_0000,
        "UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    out.extend_from_slice(&deflated);
    out
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ct, location, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n").as_bytes());
        if let Some(l) = location {
            body.extend_from_slice(format!("Content-Location: {l}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// `POST /dicom-web/studies` of one Part 10 object.
fn stow(port: u16, object: &[u8]) -> Answer {
    let body = multipart("b0", &[("application/dicom", None, object)]);
    let dicom = "multipart/related; type=\"application/dicom\"; boundary=b0";
    request(
        port,
        "POST",
        "/dicom-web/studies",
        &[("Content-Type", dicom)],
        &body,
    )
}

#[test]
fn stow_deflate_bombs_and_metadata_parts_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(
        tmp.path(),
        "max_inflated_header_bytes = 1048576\nmax_stow_metadata_bytes = 4096\n\
         stow_bytes_in_flight = 33554432\n",
    );
    let port = server.http_port;
    // 8 MiB once inflated, about 8 kB sent: refused with 0xA700.
    let bomb = deflated_object("2.25.7001.1.1", 8 * 1024 * 1024);
    assert!(bomb.len() < 64 * 1024);
    let a = stow(port, &bomb);
    assert_eq!(a.status, 409, "{}", String::from_utf8_lossy(&a.body));
    let json: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(json["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA700);
    // A deflated object within the cap is stored.
    let small = deflated_object("2.25.7001.1.2", 1024);
    let a = stow(port, &small);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));

    // A metadata part over max_stow_metadata_bytes: 413 before it is
    // parsed.
    let item = r#"{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.7"]},"00080018":{"vr":"UI","Value":["2.25.7002.1"]},"00100020":{"vr":"LO","Value":["PADDING-PADDING-PADDING"]}}"#;
    let json = format!("[{}]", vec![item; 40].join(","));
    assert!(json.len() > 4096);
    let meta_type = "multipart/related; type=\"application/dicom+json\"; boundary=b1";
    let body = multipart("b1", &[("application/dicom+json", None, json.as_bytes())]);
    let a = request(
        port,
        "POST",
        "/dicom-web/studies",
        &[("Content-Type", meta_type)],
        &body,
    );
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("max_stow_metadata_bytes"));
    // One data set (under the cap) with its bulk data named by a relative
    // Content-Location: stored.
    let one = r#"[{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.7"]},"00080018":{"vr":"UI","Value":["2.25.7002.2"]},"0020000D":{"vr":"UI","Value":["2.25.7002"]},"0020000E":{"vr":"UI","Value":["2.25.7002.9"]},"00091001":{"vr":"OB","BulkDataURI":"http://127.0.0.1/bulk/1"},"00090010":{"vr":"LO","Value":["X"]}}]"#;
    let body = multipart(
        "b1",
        &[
            ("application/dicom+json", None, one.as_bytes()),
            ("application/octet-stream", Some("/bulk/2"), b"zz"),
            ("application/octet-stream", Some("bulk/1"), b"abcd"),
        ],
    );
    let a = request(
        port,
        "POST",
        "/dicom-web/studies",
        &[("Content-Type", meta_type)],
        &body,
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));

    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

/// Writes `GET /healthz` and then header lines forever, one byte every
/// `pace`, until the server closes the connection; returns whether it did
/// within `budget`.
fn slow_client(port: u16, pace: Duration, budget: Duration) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    text.extend(std::iter::repeat_n(*b"X-Slow: 1\r\n", 10_000).flatten());
    let start = Instant::now();
    for b in text {
        if start.elapsed() > budget {
            return false;
        }
        if s.write_all(&[b]).is_err() {
            return true;
        }
        std::thread::sleep(pace);
        // Closed by the server: the next read sees the end (or a 408).
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let closed = match s.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        s.set_nonblocking(false).unwrap();
        if closed {
            return true;
        }
    }
    false
}

#[test]
fn slow_headers_are_cut_off_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(tmp.path(), "http_header_timeout_secs = 2\n");
    let port = server.http_port;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                slow_client(port, Duration::from_millis(250), Duration::from_secs(60))
            })
        })
        .collect();
    // While they trickle, ordinary requests are answered.
    for _ in 0..5 {
        assert_eq!(get(port, "/healthz", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    for t in slow {
        assert!(
            t.join().unwrap(),
            "a client sending its headers a byte at a time was not disconnected"
        );
    }
    // A connection that sends nothing is closed too.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn connections_past_the_cap_get_503_and_the_server_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(
        tmp.path(),
        "max_http_connections = 3\nhttp_header_timeout_secs = 120\n",
    );
    let port = server.http_port;
    // Three idle connections fill the cap. One may be refused while a
    // connection of the start's health checks still holds its slot: a
    // refused one has a 503 to read at once, a held one nothing; it is
    // replaced until three are held.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..200 {
        if idle.len() == 3 {
            break;
        }
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut first = [0u8; 1];
        match (&c).read(&mut first) {
            // Nothing within the time: the server holds it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                idle.push(c)
            }
            // A refusal (or a close): try another.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert_eq!(
        idle.len(),
        3,
        "the server did not hold three idle connections"
    );
    // The next one is refused with 503 and Retry-After (once the server
    // has seen the three; the health checks of the start may still hold a
    // slot for a moment).
    let mut refused = None;
    for _ in 0..600 {
        let a = get(port, "/healthz", &[]);
        if a.status == 503 {
            refused = Some(a);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = refused.expect("no 503 past the connection cap");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    // Closing them frees the slots.
    drop(idle);
    let mut ok = false;
    for _ in 0..600 {
        if get(port, "/healthz", &[]).status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "the server did not recover once the connections closed");
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn in_flight_request_finishes_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(tmp.path(), "http_header_timeout_secs = 30\n");
    let port = server.http_port;
    // A request whose body is still being sent when SIGTERM arrives: it
    // is answered, then the server exits 0.
    let obj = small_object("2.25.7100", "2.25.7100.1", "2.25.7100.1.1");
    let body = multipart("b0", &[("application/dicom", None, &obj)]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary=b0\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // `100 Continue` comes once the handler reads the body (RFC 9110
    // 10.1.1): the request is in flight.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
    s.write_all(&body[..body.len() / 2]).unwrap();
    let pid = server.child.id();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body[body.len() / 2..]).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn a_stalled_request_body_fails_the_request() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(tmp.path(), "http_body_idle_timeout_secs = 1\n");
    let port = server.http_port;
    // A STOW-RS request announcing 100000 bytes that sends a few, then
    // nothing: answered with an error instead of holding the request.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(
        b"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
          Content-Type: multipart/related; type=\"application/dicom\"; boundary=b0\r\n\
          Content-Length: 100000\r\n\r\n--b0\r\nContent-Type: application/dicom\r\n\r\nDICM",
    )
    .unwrap();
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    assert!(read.is_ok(), "no answer to a stalled body: {read:?}");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!((400..500).contains(&status), "{text}");
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn a_client_that_stops_reading_loses_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(tmp.path(), "http_send_idle_timeout_secs = 1\n");
    let port = server.http_port;
    // An object larger than the socket buffers on both sides can hold.
    let (study, series, sop) = ("2.25.7200", "2.25.7200.1", "2.25.7200.1.1");
    let big = sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study,
        series,
        sop,
        pixel_bytes: 32 * 1024 * 1024,
        ..Default::default()
    });
    let a = stow(port, &big);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // Ask for it, read nothing.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /dicom-web/studies/{study}/series/{series}/instances/{sop} HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAccept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n\r\n"
    )
    .unwrap();
    let start = Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(120) {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if log.contains("stopped reading its answer") {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        cut,
        "the server kept waiting for a client that does not read"
    );
    // What was already in the buffers arrives, then the end: not the
    // whole object.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < big.len(), "{got} bytes read of {}", big.len());
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn a_stuck_handler_gets_503_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(
        tmp.path(),
        "http_handler_timeout_secs = 2\nhttp_body_idle_timeout_secs = 30\n",
    );
    let port = server.http_port;
    let (study, series, sop) = ("2.25.7101", "2.25.7101.1", "2.25.7101.1.1");
    let object = small_object(study, series, sop);

    // An upload still arriving is not cut by the handler time-out: the
    // body comes in pieces over more than twice the time-out, each within
    // it.
    let body = multipart("b0", &[("application/dicom", None, &object)]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(
        format!(
            "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: multipart/related; type=\"application/dicom\"; boundary=b0\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    for piece in body.chunks(body.len().div_ceil(5)) {
        std::thread::sleep(Duration::from_secs(1));
        s.write_all(piece).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // Storage that hangs: the stored file becomes a FIFO nobody writes, so
    // reading it blocks in open(2), as a stuck network file system would.
    let blob = tmp
        .path()
        .join("data/objects")
        .join(study)
        .join(series)
        .join(format!("{sop}.dcm"));
    let start = Instant::now();
    while !blob.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the object never left the landing log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(&blob).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&blob).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    // A rendered image is made (the object read whole) before its answer's
    // head: the handler itself is stuck.
    let path = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered");
    let stuck = get(port, &path, &[("Accept", "image/jpeg")]);
    assert_eq!(
        stuck.status,
        503,
        "{}",
        String::from_utf8_lossy(&stuck.body)
    );
    assert!(
        String::from_utf8_lossy(&stuck.body).contains("http_handler_timeout_secs"),
        "{}",
        String::from_utf8_lossy(&stuck.body)
    );
    // The server keeps serving, the stuck read notwithstanding.
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    let found = get(
        port,
        &format!("/dicom-web/studies?StudyInstanceUID={study}"),
        &[],
    );
    assert_eq!(found.status, 200);
    // Release the blocked open(2) so the server stops cleanly.
    drop(std::fs::OpenOptions::new().write(true).open(&blob).unwrap());
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

#[test]
fn a_body_whose_storage_stalls_after_the_head_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve_with(
        tmp.path(),
        "http_handler_timeout_secs = 2\nhttp_send_idle_timeout_secs = 120\n",
    );
    let port = server.http_port;
    let (study, series) = ("2.25.7102", "2.25.7102.1");
    let sops = ["2.25.7102.1.1", "2.25.7102.1.2"];
    for sop in sops {
        assert_eq!(stow(port, &small_object(study, series, sop)).status, 200);
    }
    // The second object's storage hangs (a FIFO nobody writes): the answer's
    // head and first part go out, then its producer stalls.
    let objects = tmp.path().join("data/objects").join(study).join(series);
    let start = Instant::now();
    while !sops
        .iter()
        .all(|s| objects.join(format!("{s}.dcm")).exists())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the objects never left the landing log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let blob = objects.join(format!("{}.dcm", sops[1]));
    std::fs::remove_file(&blob).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&blob).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Far past the 2 s time-out: only a server that never ends the answer
    // reaches it.
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    s.write_all(
        format!(
            "GET /dicom-web/studies/{study}/series/{series} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true, // reset: cut off as well
        }
    };
    assert!(ended, "the answer never ended while storage hung");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Cut off, not completed: the chunked body has no last chunk.
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "a stalled answer looked complete"
    );
    // The server keeps serving.
    assert_eq!(get(port, "/healthz", &[]).status, 200);
    drop(std::fs::OpenOptions::new().write(true).open(&blob).unwrap());
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}
