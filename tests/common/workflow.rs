//! HTTP-with-JSON and MLLP clients shared by the workflow tests (orders,
//! patient changes).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Resp {
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
}

pub fn http(port: u16, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    request(port, method, path, &headers, body)
}

/// One HTTP/1.1 request with these headers (and a JSON body).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(payload.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Resp { status, head, body }
}

/// An MLLP client: sends `message` (bytes) framed, returns the ACK.
pub fn mllp(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0x0B];
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[0x1C, 0x0D]);
    stream.write_all(&framed).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(&[0x1C, 0x0D]) {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "connection closed before the ACK: {}",
            String::from_utf8_lossy(&reply)
        );
        reply.push(byte[0]);
    }
    reply[1..reply.len() - 2].to_vec()
}

/// MSA-1 and MSA-2 of an ACK (read as Latin-1: both are ASCII).
pub fn msa(ack: &[u8]) -> (String, String) {
    let text: String = ack.iter().map(|&b| char::from(b)).collect();
    let line = text
        .split('\r')
        .find(|l| l.starts_with("MSA|"))
        .unwrap_or("")
        .to_owned();
    let f: Vec<&str> = line.split('|').collect();
    (
        f.get(1).unwrap_or(&"").to_string(),
        f.get(2).unwrap_or(&"").to_string(),
    )
}

/// A field of an ER7 message: segment, field, component (1-based; MSH-1
/// is the field separator itself).
pub fn field(message: &str, segment: &str, n: usize, component: usize) -> String {
    let index = if segment == "MSH" { n - 1 } else { n };
    message
        .split('\r')
        .find(|l| l.starts_with(&format!("{segment}|")))
        .and_then(|l| l.split('|').nth(index))
        .and_then(|f| f.split('^').nth(component - 1))
        .unwrap_or("")
        .to_owned()
}

/// The HIS: accepts MLLP connections, answers each message with the next
/// code of `codes` (the last one repeated; `HOLD`: no answer, the
/// connection kept open, so its sender waits for an ACK), sends every
/// message it got on the channel. Ends after `codes.len() + 4` messages
/// or 180 s.
pub fn his(codes: &'static [&'static str]) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut answered = 0;
        let mut held = Vec::new();
        while answered < codes.len() + 4 && start.elapsed() < Duration::from_secs(180) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(&[0x1C, 0x0D]) && buf.len() < 1 << 20 {
                match s.read(&mut byte) {
                    Ok(1) => buf.push(byte[0]),
                    _ => break,
                }
            }
            if !buf.ends_with(&[0x1C, 0x0D]) || buf.first() != Some(&0x0B) {
                continue;
            }
            let text = String::from_utf8(buf[1..buf.len() - 2].to_vec()).unwrap();
            let control = field(&text, "MSH", 10, 1);
            let code = codes[answered.min(codes.len() - 1)];
            answered += 1;
            if code == "HOLD" {
                held.push(s);
                let _ = tx.send(text);
                continue;
            }
            let ack = format!(
                "MSH|^~\\&|HIS|BV|SENPACS|BV|20261206100000||ACK^R01^ACK|H{answered}|P|2.5.1\rMSA|{code}|{control}\r"
            );
            let mut framed = vec![0x0B];
            framed.extend_from_slice(ack.as_bytes());
            framed.extend_from_slice(&[0x1C, 0x0D]);
            let _ = s.write_all(&framed);
            let _ = tx.send(text);
        }
    });
    (port, rx)
}
