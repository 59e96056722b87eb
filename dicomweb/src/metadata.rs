//! WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON stored at ingest,
//! assembled into an array without re-parsing, with the relative
//! `bulkdata/GGGGEEEE` URIs rewritten into absolute paths under the
//! instance's resource; or, when the client asks for
//! `multipart/related; type="application/dicom+xml"`, that JSON converted
//! to one Native DICOM Model document per instance (`xml.rs`). Strong ETag (SHA-256 of the body) with
//! `If-None-Match` → 304, gzip when the client accepts it, and
//! `Cache-Control: no-cache` (an instance can be replaced by a re-store).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use pacs_core::records::InstanceRecord;
use pacs_core::Uid;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::multipart::{self, new_boundary};
use crate::negotiate::{accept, accepts_gzip, data_set_form, DataSetForm};
use crate::xml::{self, DICOM_XML};
use crate::{parse_uid, AppState, RequestBase, Scoped};

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
    respond(headers, DICOM_JSON, body, tag)
}

/// DICOM JSON (one data set or an array of them) converted to Native DICOM
/// Model documents, off the async threads.
pub async fn to_xml(jsons: Vec<Vec<u8>>) -> ApiResult<Vec<Vec<u8>>> {
    tokio::task::spawn_blocking(move || {
        let mut docs = Vec::with_capacity(jsons.len());
        for json in &jsons {
            docs.extend(xml::documents(json)?);
        }
        Ok::<_, xml::XmlError>(docs)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// `204 (No Content)`: a search with zero results (PS3.18 Table 10.6.3-1).
pub fn no_content() -> ApiResult<Response> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "Accept, Accept-Encoding")
        .body(Body::empty())
        .map_err(ApiError::internal)
}

/// A `multipart/related; type="application/dicom+xml"` response, one part
/// per document; `204` when there is none (a multipart body needs at least
/// one part, RFC 2046 5.1.1). With `etag`, the boundary is derived from
/// the documents, so the body and its strong ETag are stable.
pub fn xml_response(headers: &HeaderMap, docs: Vec<Vec<u8>>, etag: bool) -> ApiResult<Response> {
    if docs.is_empty() {
        return no_content();
    }
    let tag = etag.then(|| {
        let mut h = Sha256::new();
        h.update(b"application/dicom+xml");
        for d in &docs {
            h.update((d.len() as u64).to_le_bytes());
            h.update(d);
        }
        hex::encode(&h.finalize()[..16])
    });
    let boundary = match &tag {
        Some(t) => format!("senpacs-{t}"),
        None => new_boundary(),
    };
    let parts: Vec<(String, Bytes)> = docs
        .into_iter()
        .map(|d| (DICOM_XML.to_owned(), Bytes::from(d)))
        .collect();
    let body = multipart::body(&boundary, &parts);
    let content_type = format!("multipart/related; type=\"{DICOM_XML}\"; boundary={boundary}");
    respond(headers, &content_type, body, tag)
}

/// The common end of metadata and search responses: `Cache-Control`,
/// `Vary`, the ETag (304 on a match) and gzip when accepted.
fn respond(
    headers: &HeaderMap,
    content_type: &str,
    body: Vec<u8>,
    tag: Option<String>,
) -> ApiResult<Response> {
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
    builder = builder.header(header::CONTENT_TYPE, content_type);
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

fn check_accept(headers: &HeaderMap) -> ApiResult<DataSetForm> {
    data_set_form(&accept(headers)).ok_or_else(|| {
        ApiError::not_acceptable(
            "metadata is available as application/dicom+json or as \
             multipart/related; type=\"application/dicom+xml\" only",
        )
    })
}

/// The metadata of a resource being assembled: one JSON array, or the
/// JSON of each instance for conversion to XML.
enum Assembly {
    Json(Vec<u8>),
    Xml(Vec<Vec<u8>>),
}

impl Assembly {
    fn new(form: DataSetForm, instances: usize) -> Assembly {
        match form {
            DataSetForm::Json => {
                let mut out = Vec::with_capacity(instances * 4096);
                out.push(b'[');
                Assembly::Json(out)
            }
            DataSetForm::Xml => Assembly::Xml(Vec::with_capacity(instances)),
        }
    }

    /// Adds the stored JSON of one instance, its bulk data URIs made
    /// absolute under `instance_path`.
    fn add(&mut self, json: &[u8], instance_path: &str) {
        match self {
            Assembly::Json(out) => {
                if out.len() > 1 {
                    out.push(b',');
                }
                rewrite_bulkdata(json, instance_path, out);
            }
            Assembly::Xml(parts) => {
                let mut one = Vec::with_capacity(json.len() + 256);
                rewrite_bulkdata(json, instance_path, &mut one);
                parts.push(one);
            }
        }
    }

    async fn respond(self, headers: &HeaderMap) -> ApiResult<Response> {
        match self {
            Assembly::Json(mut out) => {
                out.push(b']');
                json_response(headers, out, true)
            }
            Assembly::Xml(parts) => xml_response(headers, to_xml(parts).await?, true),
        }
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

/// Adds the metadata of one series (its instances in `records`) to what is
/// being assembled.
async fn append_series(
    st: &AppState,
    base: &RequestBase,
    study: &Uid,
    series: &Uid,
    records: &[&InstanceRecord],
    out: &mut Assembly,
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
        out.add(&json, &format!("{series_path}/{sop}"));
    }
    Ok(())
}

pub async fn study(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let form = check_accept(&headers)?;
    let study = parse_uid("StudyInstanceUID", &study)?;
    let instances = st.archive.instances_of_study(&study).await?;
    if instances.is_empty() {
        return Err(ApiError::not_found(format!("study {study} not found")));
    }
    let mut by_series: BTreeMap<&Uid, Vec<&InstanceRecord>> = BTreeMap::new();
    for i in &instances {
        by_series.entry(&i.series_instance_uid).or_default().push(i);
    }
    let mut out = Assembly::new(form, instances.len());
    for (series, records) in by_series {
        append_series(&st, &base, &study, series, &records, &mut out).await?;
    }
    out.respond(&headers).await
}

pub async fn series(
    Scoped(st): Scoped,
    Path((study, series)): Path<(String, String)>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let form = check_accept(&headers)?;
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
    let mut out = Assembly::new(form, records.len());
    append_series(&st, &base, &study, &series, &records, &mut out).await?;
    out.respond(&headers).await
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
    Scoped(st): Scoped,
    Path((study, series, instance)): Path<(String, String, String)>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let form = check_accept(&headers)?;
    let record = instance_in(&st, &study, &series, &instance).await?;
    let json = st
        .archive
        .instance_metadata(&record.sop_instance_uid)
        .await?;
    let path = format!(
        "{}/studies/{}/series/{}/instances/{}",
        base.prefix, record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid
    );
    let mut out = Assembly::new(form, 1);
    out.add(&json, &path);
    out.respond(&headers).await
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
