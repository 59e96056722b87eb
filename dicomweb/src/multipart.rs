//! Writing `multipart/related` bodies (RFC 2387, PS3.18 8.6.1.2).

use bytes::Bytes;

/// A fresh random boundary.
pub fn new_boundary() -> String {
    format!("senpacs-{}", uuid::Uuid::new_v4().simple())
}

/// The delimiter and headers that open a part. Every part after the first
/// starts with the CRLF that ends the previous part's content.
pub fn part_header(
    boundary: &str,
    first: bool,
    content_type: &str,
    location: Option<&str>,
) -> Bytes {
    let mut s = String::with_capacity(128);
    if !first {
        s.push_str("\r\n");
    }
    s.push_str("--");
    s.push_str(boundary);
    s.push_str("\r\nContent-Type: ");
    s.push_str(content_type);
    if let Some(loc) = location {
        s.push_str("\r\nContent-Location: ");
        s.push_str(loc);
    }
    s.push_str("\r\n\r\n");
    Bytes::from(s)
}

/// The close delimiter.
pub fn closing(boundary: &str, any_part: bool) -> Bytes {
    let lead = if any_part { "\r\n" } else { "" };
    Bytes::from(format!("{lead}--{boundary}--\r\n"))
}

/// A whole multipart body from parts held in memory.
pub fn body(boundary: &str, parts: &[(String, Bytes)]) -> Vec<u8> {
    let size: usize = parts.iter().map(|(_, b)| b.len() + 128).sum();
    let mut out = Vec::with_capacity(size + 64);
    for (i, (content_type, bytes)) in parts.iter().enumerate() {
        out.extend_from_slice(&part_header(boundary, i == 0, content_type, None));
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&closing(boundary, !parts.is_empty()));
    out
}
