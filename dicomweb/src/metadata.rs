//! WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON stored at ingest,
//! assembled into an array without re-parsing, with the relative
//! `bulkdata/GGGGEEEE` URIs rewritten into absolute paths under the
//! instance's resource. Strong ETag (SHA-256 of the body) with
//! `If-None-Match` → 304, gzip when the client accepts it, and
//! `Cache-Control: no-cache` (an instance can be replaced by a re-store).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use flate2::write::GzEncoder;
use flate2::Compression;
use pacs_core::records::InstanceRecord;
use pacs_core::Uid;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::negotiate::{accept, accepts_gzip};
use crate::{parse_uid, AppState, RequestBase};

pub const DICOM_JSON: &str = "application/dicom+json";

/// Whether an `If-None-Match` header matches `etag` (an opaque tag without
/// quotes); weak comparison, as RFC 9110 13.1.2 asks for GET.
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag || t.strip_suffix("-gzip") == Some(etag))
}

/// A DICOM JSON response: optionally with a strong ETag (and 304 on a
/// matching `If-None-Match`), gzip-encoded when accepted.
pub fn json_response(headers: &HeaderMap, body: Vec<u8>, etag: bool) -> ApiResult<Response> {
    let tag = etag.then(|| hex::encode(&Sha256::digest(&body)[..16]));
    let gzip = accepts_gzip(headers);
    let tag_value = tag
        .as_ref()
        .map(|t| format!("\"{t}{}\"", if gzip { "-gzip" } else { "" }));
    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "Accept, Accept-Encoding");
    if let Some(v) = &tag_value {
        builder = builder.header(header::ETAG, v);
    }
    if let Some(t) = &tag {
        if if_none_match(headers, t) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(ApiError::internal);
        }
    }
    builder = builder.header(header::CONTENT_TYPE, DICOM_JSON);
    let body = if gzip && body.len() > 256 {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
        enc.write_all(&body).map_err(ApiError::internal)?;
        enc.finish().map_err(ApiError::internal)?
    } else {
        body
    };
    builder.body(Body::from(body)).map_err(ApiError::internal)
}

fn check_accept(headers: &HeaderMap) -> ApiResult<()> {
    let ok = accept(headers).iter().any(|r| {
        r.is_wildcard()
            || matches!(
                r.essence.as_str(),
                "application/dicom+json" | "application/json" | "application/*"
            )
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(
            "metadata is available as application/dicom+json only",
        ))
    }
}

const BULK_KEY: &[u8] = b"\"BulkDataURI\":\"bulkdata/";

/// Appends `json` to `out` with every `"BulkDataURI":"bulkdata/...` made
/// absolute under `instance_path`.
fn rewrite_bulkdata(json: &[u8], instance_path: &str, out: &mut Vec<u8>) {
    let mut rest = json;
    while let Some(i) = find(rest, BULK_KEY) {
        let split = i + BULK_KEY.len() - b"bulkdata/".len();
        out.extend_from_slice(&rest[..split]);
        out.extend_from_slice(instance_path.as_bytes());
        out.push(b'/');
        rest = &rest[split..];
    }
    out.extend_from_slice(rest);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The SOP Instance UID of a stored instance JSON, among `candidates`:
/// found by a byte search for `"00080018":{"Value":["...`, or by parsing
/// when the layout differs.
fn sop_of(json: &[u8], candidates: &HashSet<&str>) -> Option<String> {
    let key = b"\"00080018\":{";
    let mut rest = json;
    while let Some(i) = find(rest, key) {
        rest = &rest[i + key.len()..];
        let window = &rest[..rest.len().min(200)];
        if let Some(v) = find(window, b"\"Value\":[\"") {
            let start = v + b"\"Value\":[\"".len();
            if let Some(len) = window[start..].iter().position(|&b| b == b'"') {
                if let Ok(uid) = std::str::from_utf8(&window[start..start + len]) {
                    if candidates.contains(uid) {
                        return Some(uid.to_owned());
                    }
                }
            }
        }
    }
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let uid = value["00080018"]["Value"][0].as_str()?;
    candidates.contains(uid).then(|| uid.to_owned())
}

/// Appends the metadata of one series (its instances in `records`) to the
/// array being built.
async fn append_series(
    st: &AppState,
    base: &RequestBase,
    study: &Uid,
    series: &Uid,
    records: &[&InstanceRecord],
    out: &mut Vec<u8>,
) -> ApiResult<()> {
    let candidates: HashSet<&str> = records
        .iter()
        .map(|r| r.sop_instance_uid.as_str())
        .collect();
    let series_path = format!("{}/studies/{study}/series/{series}/instances", base.prefix);
    for json in st.archive.series_metadata(series).await? {
        let Some(sop) = sop_of(&json, &candidates) else {
            continue;
        };
        if out.len() > 1 {
            out.push(b',');
        }
        rewrite_bulkdata(&json, &format!("{series_path}/{sop}"), out);
    }
    Ok(())
}

pub async fn study(
    State(st): State<AppState>,
    Path(study): Path<String>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_accept(&headers)?;
    let study = parse_uid("StudyInstanceUID", &study)?;
    let instances = st.archive.instances_of_study(&study).await?;
    if instances.is_empty() {
        return Err(ApiError::not_found(format!("study {study} not found")));
    }
    let mut by_series: BTreeMap<&Uid, Vec<&InstanceRecord>> = BTreeMap::new();
    for i in &instances {
        by_series.entry(&i.series_instance_uid).or_default().push(i);
    }
    let mut out = Vec::with_capacity(instances.len() * 4096);
    out.push(b'[');
    for (series, records) in by_series {
        append_series(&st, &base, &study, series, &records, &mut out).await?;
    }
    out.push(b']');
    json_response(&headers, out, true)
}

pub async fn series(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_accept(&headers)?;
    let study = parse_uid("StudyInstanceUID", &study)?;
    let series = parse_uid("SeriesInstanceUID", &series)?;
    let instances = st.archive.instances_of_series(&series).await?;
    let records: Vec<&InstanceRecord> = instances
        .iter()
        .filter(|i| i.study_instance_uid == study)
        .collect();
    if records.is_empty() {
        return Err(ApiError::not_found(format!(
            "series {series} not found in study {study}"
        )));
    }
    let mut out = Vec::with_capacity(records.len() * 4096);
    out.push(b'[');
    append_series(&st, &base, &study, &series, &records, &mut out).await?;
    out.push(b']');
    json_response(&headers, out, true)
}

/// Looks an instance up and checks it belongs to the study and series of
/// the URL.
pub async fn instance_in(
    st: &AppState,
    study: &str,
    series: &str,
    instance: &str,
) -> ApiResult<InstanceRecord> {
    let study = parse_uid("StudyInstanceUID", study)?;
    let series = parse_uid("SeriesInstanceUID", series)?;
    let sop = parse_uid("SOPInstanceUID", instance)?;
    let record = st.archive.instance(&sop).await?;
    if record.series_instance_uid != series || record.study_instance_uid != study {
        return Err(ApiError::not_found(format!(
            "instance {sop} not found in series {series} of study {study}"
        )));
    }
    Ok(record)
}

pub async fn instance(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_accept(&headers)?;
    let record = instance_in(&st, &study, &series, &instance).await?;
    let json = st
        .archive
        .instance_metadata(&record.sop_instance_uid)
        .await?;
    let path = format!(
        "{}/studies/{}/series/{}/instances/{}",
        base.prefix, record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid
    );
    let mut out = Vec::with_capacity(json.len() + 256);
    out.push(b'[');
    rewrite_bulkdata(&json, &path, &mut out);
    out.push(b']');
    json_response(&headers, out, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rewrites_every_bulkdata_uri() {
        let json = br#"{"00291010":{"BulkDataURI":"bulkdata/00291010","vr":"OB"},"7FE00010":{"BulkDataURI":"bulkdata/7FE00010","vr":"OW"}}"#;
        let mut out = Vec::new();
        rewrite_bulkdata(json, "/dw/studies/1/series/2/instances/3", &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["7FE00010"]["BulkDataURI"],
            "/dw/studies/1/series/2/instances/3/bulkdata/7FE00010"
        );
        assert_eq!(
            v["00291010"]["BulkDataURI"],
            "/dw/studies/1/series/2/instances/3/bulkdata/00291010"
        );
    }

    #[test]
    fn finds_the_sop_instance_uid() {
        let c: HashSet<&str> = ["1.2.3"].into_iter().collect();
        let json = br#"{"00080016":{"Value":["1.2.840"],"vr":"UI"},"00080018":{"Value":["1.2.3"],"vr":"UI"}}"#;
        assert_eq!(sop_of(json, &c).as_deref(), Some("1.2.3"));
        let json = br#"{"00080018":{"vr":"UI","Value":["1.2.3"]}}"#;
        assert_eq!(sop_of(json, &c).as_deref(), Some("1.2.3"));
        assert_eq!(
            sop_of(br#"{"00080018":{"vr":"UI","Value":["9"]}}"#, &c),
            None
        );
    }
}
