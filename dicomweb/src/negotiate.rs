//! Content negotiation (PS3.18 8.7): the `Accept` header read as a list of
//! media ranges, tolerant of what viewers actually send (quoted or bare
//! parameters, `*/*`, no header at all).

use axum::http::{header, HeaderMap};

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// `type/subtype`, lower-case.
    pub essence: String,
    /// Parameters other than `q`, names lower-case, values unquoted.
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `*/*`, `multipart/*`, or `multipart/related; type="*/*"` (what
    /// dicomweb-client sends by default).
    pub fn is_wildcard(&self) -> bool {
        self.essence == "*/*"
            || self.essence == "multipart/*"
            || (self.essence == "multipart/related" && self.param("type") == Some("*/*"))
    }

    /// The media type asked for: the `type` parameter of a
    /// `multipart/related` range, or the range itself (tolerated although
    /// PS3.18 wants multipart for these resources).
    pub fn payload_type(&self) -> Option<String> {
        if self.essence == "multipart/related" {
            self.param("type").map(str::to_ascii_lowercase)
        } else {
            Some(self.essence.clone())
        }
    }

    /// The `transfer-syntax` parameter; `None` when absent or `*`.
    pub fn transfer_syntax(&self) -> Option<&str> {
        self.param("transfer-syntax")
            .filter(|ts| *ts != "*" && !ts.is_empty())
    }

    /// Whether the range says nothing of the transfer syntax (no
    /// `transfer-syntax` parameter, or an empty one): the media type's
    /// default applies (PS3.18 8.7.8.2), unlike `*` (as stored).
    pub fn default_syntax(&self) -> bool {
        self.param("transfer-syntax").is_none_or(str::is_empty)
    }
}

/// Explicit VR Little Endian, the Default Transfer Syntax of DICOMweb.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// What an object stored in `stored` is sent as when the client did not
/// name a syntax (PS3.18 8.7.3.4): Explicit VR Little Endian, unless the
/// pixel data is held only in lossy form (JPEG Baseline/Extended, lossy
/// JPEG-LS and JPEG 2000, video) or in a form the archive cannot decode;
/// those go as stored (`None`), as the standard permits.
pub fn default_target(stored: &str) -> Option<&'static str> {
    const CONVERTED: [&str; 7] = [
        "1.2.840.10008.1.2",      // Implicit VR LE
        "1.2.840.10008.1.2.1.99", // Deflated Explicit VR LE
        "1.2.840.10008.1.2.2",    // Explicit VR BE
        "1.2.840.10008.1.2.5",    // RLE Lossless
        "1.2.840.10008.1.2.4.57", // JPEG Lossless
        "1.2.840.10008.1.2.4.70", // JPEG Lossless SV1
        "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    ];
    (CONVERTED.contains(&stored) && imaging::transcode::can_transcode(stored, EXPLICIT_VR_LE))
        .then_some(EXPLICIT_VR_LE)
}

/// Splits `s` on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses one media type with parameters (also used for `Content-Type`).
pub fn parse_media_type(s: &str) -> Option<MediaRange> {
    let mut pieces = split_unquoted(s, ';').into_iter();
    let essence = pieces.next()?.trim().to_ascii_lowercase();
    if essence.is_empty() {
        return None;
    }
    let mut range = MediaRange {
        essence,
        params: Vec::new(),
        q: 1.0,
    };
    for p in pieces {
        let Some((name, value)) = p.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_owned();
        if name == "q" {
            range.q = value.parse::<f32>().unwrap_or(1.0);
        } else {
            range.params.push((name, value));
        }
    }
    Some(range)
}

/// Every media range of the request's `Accept` headers with `q > 0`,
/// highest `q` first (stable). An absent or empty header gives `*/*`; a
/// header whose every range has `q=0` gives none (nothing is acceptable).
pub fn accept(headers: &HeaderMap) -> Vec<MediaRange> {
    let parsed: Vec<MediaRange> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| split_unquoted(v, ','))
        .filter_map(parse_media_type)
        .collect();
    if parsed.is_empty() {
        return vec![MediaRange {
            essence: "*/*".into(),
            params: Vec::new(),
            q: 1.0,
        }];
    }
    let mut ranges: Vec<MediaRange> = parsed.into_iter().filter(|r| r.q > 0.0).collect();
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

/// The two forms of DICOM data sets a search or metadata response can
/// take (PS3.18 8.7.3.1 / 8.7.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSetForm {
    /// `application/dicom+json`: one JSON array.
    Json,
    /// `multipart/related; type="application/dicom+xml"`: one Native DICOM
    /// Model document per data set.
    Xml,
}

/// The form of DICOM data sets the client prefers: JSON for wildcards,
/// `application/dicom+json` and `application/json`, XML for
/// `application/dicom+xml` (as the multipart type or bare). The higher
/// `q` wins, JSON on a tie; `None` when neither is acceptable.
pub fn data_set_form(ranges: &[MediaRange]) -> Option<DataSetForm> {
    let best = |is: &dyn Fn(&MediaRange) -> bool| {
        ranges
            .iter()
            .filter(|r| is(r))
            .map(|r| r.q)
            .fold(None, |acc: Option<f32>, q| {
                Some(acc.map_or(q, |a| a.max(q)))
            })
    };
    let json = best(&|r| {
        r.is_wildcard()
            || matches!(
                r.essence.as_str(),
                "application/dicom+json" | "application/json" | "application/*"
            )
    });
    let xml = best(&|r| r.payload_type().as_deref() == Some("application/dicom+xml"));
    match (json, xml) {
        (Some(j), Some(x)) if x > j => Some(DataSetForm::Xml),
        (None, Some(_)) => Some(DataSetForm::Xml),
        (Some(_), _) => Some(DataSetForm::Json),
        (None, None) => None,
    }
}

/// Whether the client accepts a gzip-encoded response.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((name, q))
        })
        .any(|(name, q)| (name == "gzip" || name == "x-gzip") && q > 0.0)
}

/// The media type PS3.18 Table 8.7.3-2 gives the frames of a compressed
/// transfer syntax; `None` for native (uncompressed) syntaxes and video.
pub fn compressed_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        // PS3.18 Table 8.7.3-5; `application/octet-stream` is accepted too.
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn ranges(v: &str) -> Vec<MediaRange> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        accept(&h)
    }

    #[test]
    fn reads_what_viewers_send() {
        let r = ranges(r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].payload_type().as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(r[0].transfer_syntax(), None);
        let r = ranges(
            r#"multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1, */*;q=0.1"#,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].transfer_syntax(), Some("1.2.840.10008.1.2.1"));
        assert!(r[1].is_wildcard());
        assert!(accept(&HeaderMap::new())[0].is_wildcard());
        assert!(ranges(r#"multipart/related; type="*/*""#)[0].is_wildcard());
        let r = ranges("application/json;q=0, application/dicom+json");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].essence, "application/dicom+json");
    }

    #[test]
    fn json_or_xml_by_q_with_ties_to_json() {
        use DataSetForm::*;
        let form = |v: &str| data_set_form(&ranges(v));
        assert_eq!(form("*/*"), Some(Json));
        assert_eq!(data_set_form(&accept(&HeaderMap::new())), Some(Json));
        assert_eq!(form("application/dicom+json"), Some(Json));
        assert_eq!(form("application/json"), Some(Json));
        assert_eq!(
            form(r#"multipart/related; type="application/dicom+xml""#),
            Some(Xml)
        );
        assert_eq!(
            form("multipart/related; type=application/dicom+xml"),
            Some(Xml)
        );
        assert_eq!(form("application/dicom+xml"), Some(Xml));
        assert_eq!(
            form(r#"multipart/related; type="application/dicom+xml", */*;q=0.1"#),
            Some(Xml)
        );
        assert_eq!(
            form(
                r#"multipart/related; type="application/dicom+xml";q=0.5, application/dicom+json"#
            ),
            Some(Json)
        );
        assert_eq!(
            form(r#"application/dicom+json, multipart/related; type="application/dicom+xml""#),
            Some(Json),
            "a tie goes to JSON"
        );
        assert_eq!(
            form(r#"application/dicom+json;q=0, multipart/related; type="application/dicom+xml""#),
            Some(Xml)
        );
        assert_eq!(
            form(
                r#"application/dicom+json;q=0, multipart/related; type="application/dicom+xml";q=0"#
            ),
            None,
            "q=0 everywhere: nothing is acceptable"
        );
        assert_eq!(form("text/html"), None);
        assert_eq!(form("multipart/related; type=application/dicom"), None);
    }

    #[test]
    fn gzip_acceptance() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.5"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }
}
