//! QIDO-RS (PS3.18 10.6): search for studies, series and instances.
//!
//! Query parameters name attributes by keyword (`PatientName`) or tag
//! (`00100010`); values follow PS3.4 C.2.2.2 matching through
//! [`pacs_core::query::Query::add_key`]. Results are DICOM JSON built from
//! the index records: the level's default return attributes (PS3.18
//! Tables 10.6.3-3/4/5, plus the parent UIDs and StudyDescription), the
//! matching keys and the `includefield`s. No match (or a page past the
//! last result) is `204 (No Content)`, the status PS3.18 Table 10.6.3-1
//! gives a search with zero results; `X-Total-Count` still says how many
//! matched.
//!
//! `multipart/related; type="application/dicom+xml"` answers the same
//! rows as one Native DICOM Model document per part.

use axum::extract::{Path, Query as QueryParams};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use pacs_core::json::{number_or_string, person_name};
use pacs_core::query::{
    attribute_by_keyword, attribute_by_tag, row_values, Attribute, Level, Match, Query, ATTRIBUTES,
};

use crate::error::{ApiError, ApiResult};
use crate::metadata::{json_response, no_content, to_xml, xml_response};
use crate::negotiate::{accept, data_set_form, DataSetForm};
use crate::{parse_uid, AppState, RequestBase, Scoped};

const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
const INSTANCE_AVAILABILITY: u32 = 0x0008_0056;
const RETRIEVE_URL: u32 = 0x0008_1190;

/// PS3.18 Table 10.6.3-3, plus StudyDescription (viewers list it).
const STUDY_RETURN: &[u32] = &[
    SPECIFIC_CHARACTER_SET,
    0x0008_0020,
    0x0008_0030,
    0x0008_0050,
    INSTANCE_AVAILABILITY,
    0x0008_0061,
    0x0008_0090,
    0x0008_0201,
    0x0008_1030,
    RETRIEVE_URL,
    0x0010_0010,
    0x0010_0020,
    0x0010_0030,
    0x0010_0040,
    0x0020_000D,
    0x0020_0010,
    0x0020_1206,
    0x0020_1208,
];

/// PS3.18 Table 10.6.3-4, plus StudyInstanceUID.
const SERIES_RETURN: &[u32] = &[
    SPECIFIC_CHARACTER_SET,
    0x0008_0060,
    0x0008_103E,
    RETRIEVE_URL,
    0x0020_000D,
    0x0020_000E,
    0x0020_0011,
    0x0020_1209,
    0x0040_0244,
    0x0040_0245,
];

/// PS3.18 Table 10.6.3-5, plus the parent UIDs.
const INSTANCE_RETURN: &[u32] = &[
    SPECIFIC_CHARACTER_SET,
    0x0008_0016,
    0x0008_0018,
    INSTANCE_AVAILABILITY,
    RETRIEVE_URL,
    0x0020_000D,
    0x0020_000E,
    0x0020_0013,
    0x0028_0008,
    0x0028_0010,
    0x0028_0011,
    0x0028_0100,
];

type Params = QueryParams<Vec<(String, String)>>;

pub async fn studies(
    Scoped(st): Scoped,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(&st, &base, &headers, params, Level::Study, None, None).await
}

pub async fn series(
    Scoped(st): Scoped,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(&st, &base, &headers, params, Level::Series, None, None).await
}

pub async fn instances(
    Scoped(st): Scoped,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(&st, &base, &headers, params, Level::Instance, None, None).await
}

pub async fn study_series(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(
        &st,
        &base,
        &headers,
        params,
        Level::Series,
        Some(&study),
        None,
    )
    .await
}

pub async fn study_instances(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(
        &st,
        &base,
        &headers,
        params,
        Level::Instance,
        Some(&study),
        None,
    )
    .await
}

pub async fn series_instances(
    Scoped(st): Scoped,
    Path((study, series)): Path<(String, String)>,
    base: RequestBase,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> ApiResult<Response> {
    search(
        &st,
        &base,
        &headers,
        params,
        Level::Instance,
        Some(&study),
        Some(&series),
    )
    .await
}

/// An attribute named in a query: by keyword or by `GGGGEEEE` tag.
enum Named {
    Supported(&'static Attribute),
    /// A real DICOM attribute the index does not keep.
    Unsupported(String),
}

fn lookup(name: &str) -> Result<Named, ApiError> {
    let tag = if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        u32::from_str_radix(name, 16).ok()
    } else {
        None
    };
    if let Some(tag) = tag {
        return Ok(match attribute_by_tag(tag) {
            Some(a) => Named::Supported(a),
            None => Named::Unsupported(format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)),
        });
    }
    if let Some(a) = attribute_by_keyword(name) {
        return Ok(Named::Supported(a));
    }
    if name.contains('.') {
        return Err(ApiError::bad_request(format!(
            "{name}: sequence matching is not supported"
        )));
    }
    use dicom_core::dictionary::DataDictionary;
    if dicom_dictionary_std::StandardDataDictionary
        .by_name(name)
        .is_some()
    {
        return Ok(Named::Unsupported(name.to_owned()));
    }
    Err(ApiError::bad_request(format!(
        "unknown query parameter or attribute {name:?}: use a DICOM keyword (PatientName), \
         a tag (00100010), limit, offset, fuzzymatching or includefield"
    )))
}

fn default_return(level: Level, study_scoped: bool, series_scoped: bool) -> Vec<u32> {
    let mut tags: Vec<u32> = Vec::new();
    match level {
        Level::Patient | Level::Study => tags.extend_from_slice(STUDY_RETURN),
        Level::Series => {
            if !study_scoped {
                tags.extend_from_slice(STUDY_RETURN);
            }
            tags.extend_from_slice(SERIES_RETURN);
        }
        Level::Instance => {
            if !study_scoped {
                tags.extend_from_slice(STUDY_RETURN);
            }
            if !series_scoped {
                tags.extend_from_slice(SERIES_RETURN);
            }
            tags.extend_from_slice(INSTANCE_RETURN);
        }
    }
    tags
}

#[allow(clippy::too_many_arguments)]
async fn search(
    st: &AppState,
    base: &RequestBase,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
    level: Level,
    study: Option<&str>,
    series: Option<&str>,
) -> ApiResult<Response> {
    let form = data_set_form(&accept(headers)).ok_or_else(|| {
        ApiError::not_acceptable(
            "search results are available as application/dicom+json or as \
             multipart/related; type=\"application/dicom+xml\" only",
        )
    })?;
    let mut query = Query::new(level);
    if let Some(s) = study {
        let uid = parse_uid("StudyInstanceUID", s)?;
        add_key(&mut query, attribute_by_tag(0x0020_000D), uid.as_str())?;
    }
    if let Some(s) = series {
        let uid = parse_uid("SeriesInstanceUID", s)?;
        add_key(&mut query, attribute_by_tag(0x0020_000E), uid.as_str())?;
    }
    let mut returned = default_return(level, study.is_some(), series.is_some());
    let mut warnings: Vec<String> = Vec::new();
    let mut limit: Option<usize> = None;
    for (name, value) in params {
        match name.to_ascii_lowercase().as_str() {
            "limit" => {
                let n = value.trim().parse::<usize>().ok().filter(|n| *n > 0);
                limit = Some(n.ok_or_else(|| {
                    ApiError::bad_request(format!("limit {value:?} is not a positive integer"))
                })?);
            }
            "offset" => {
                query.offset = value.trim().parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("offset {value:?} is not a non-negative integer"))
                })?;
            }
            "fuzzymatching" => {
                query.fuzzy = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "fuzzymatching {value:?} must be true or false"
                        )))
                    }
                };
            }
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field.eq_ignore_ascii_case("all") {
                        returned.extend(
                            ATTRIBUTES
                                .iter()
                                .filter(|a| a.level <= level || level == Level::Patient)
                                .map(|a| a.tag),
                        );
                        continue;
                    }
                    match lookup(field)? {
                        Named::Supported(a) if a.level <= level => returned.push(a.tag),
                        Named::Supported(a) => warnings.push(format!(
                            "includefield {} is below the query level and was ignored",
                            a.keyword
                        )),
                        Named::Unsupported(n) => warnings.push(format!(
                            "includefield {n} is not kept in the index and was ignored"
                        )),
                    }
                }
            }
            _ => match lookup(&name)? {
                Named::Supported(a) => {
                    add_key(&mut query, Some(a), &value)?;
                    returned.push(a.tag);
                }
                Named::Unsupported(n) => {
                    return Err(ApiError::bad_request(format!(
                        "{n} is not supported as a matching key by this server"
                    )))
                }
            },
        }
    }
    let max = st.config.max_qido_limit.max(1);
    let capped = limit.is_none_or(|l| l > max);
    query.limit = Some(limit.unwrap_or(max).min(max));
    returned.sort_unstable();
    returned.dedup();

    let result = st.archive.find(&query).await?;
    let truncated = result.truncated(query.offset);
    let root = base.root();
    let mut response = if result.matches.is_empty() {
        no_content()?
    } else {
        let body = rows_json(&result.matches, level, &returned, &root)?;
        match form {
            DataSetForm::Json => json_response(headers, body, false)?,
            DataSetForm::Xml => xml_response(headers, to_xml(vec![body]).await?, false)?,
        }
    };
    if truncated && capped {
        warnings.push(format!(
            "The number of results exceeded the maximum supported by the server ({max}). \
             Additional results can be requested with offset={}",
            query.offset + result.matches.len()
        ));
    }
    let agent = base
        .origin
        .split("://")
        .nth(1)
        .filter(|h| !h.is_empty())
        .unwrap_or("-")
        .to_owned();
    for w in warnings {
        let text = format!("299 {agent} \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&result.total.to_string()) {
        response.headers_mut().insert("x-total-count", v);
    }
    Ok(response.into_response())
}

fn add_key(query: &mut Query, attribute: Option<&Attribute>, value: &str) -> ApiResult<()> {
    let Some(a) = attribute else {
        return Err(ApiError::internal("attribute table lacks a UID key"));
    };
    // PS3.18 8.3.4.1: UID lists are comma-separated in URLs; PS3.4 uses `\`.
    let value = if a.vr == "UI" {
        value.replace(',', "\\")
    } else {
        value.to_owned()
    };
    query
        .add_key(a.tag, &value)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn uid_of(row: &Match, tag: u32) -> String {
    row_values(row, tag)
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default()
}

/// What one returned attribute of a result is made of.
enum Column {
    CharacterSet,
    Availability,
    RetrieveUrl,
    Attribute(&'static Attribute),
}

/// The results as a DICOM JSON array, written straight into the body: the
/// object keys (`"GGGGEEEE":`) are formatted once per request, not per row,
/// and only the values go through serde_json (for the escaping).
fn rows_json(rows: &[Match], level: Level, returned: &[u32], root: &str) -> ApiResult<Vec<u8>> {
    let columns: Vec<(String, Column)> = returned
        .iter()
        .filter_map(|&tag| {
            let column = match tag {
                SPECIFIC_CHARACTER_SET => Column::CharacterSet,
                INSTANCE_AVAILABILITY => Column::Availability,
                RETRIEVE_URL => Column::RetrieveUrl,
                _ => Column::Attribute(attribute_by_tag(tag)?),
            };
            Some((format!("\"{tag:08X}\":"), column))
        })
        .collect();
    let mut out: Vec<u8> = Vec::with_capacity(64 + rows.len() * 96 * columns.len().max(1));
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (j, (key, column)) in columns.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            match column {
                Column::CharacterSet => {
                    out.extend_from_slice(br#"{"vr":"CS","Value":["ISO_IR 192"]}"#)
                }
                Column::Availability => out.extend_from_slice(br#"{"vr":"CS","Value":["ONLINE"]}"#),
                Column::RetrieveUrl => {
                    let mut url = format!("{root}/studies/{}", uid_of(row, 0x0020_000D));
                    if level >= Level::Series {
                        url.push_str("/series/");
                        url.push_str(&uid_of(row, 0x0020_000E));
                    }
                    if level >= Level::Instance {
                        url.push_str("/instances/");
                        url.push_str(&uid_of(row, 0x0008_0018));
                    }
                    out.extend_from_slice(br#"{"vr":"UR","Value":["#);
                    serde_json::to_writer(&mut out, &url).map_err(ApiError::internal)?;
                    out.extend_from_slice(b"]}");
                }
                Column::Attribute(a) => {
                    let values = row_values(row, a.tag).unwrap_or_default();
                    out.extend_from_slice(b"{\"vr\":\"");
                    out.extend_from_slice(a.vr.as_bytes());
                    out.push(b'"');
                    if !values.is_empty() {
                        out.extend_from_slice(b",\"Value\":[");
                        for (k, v) in values.iter().enumerate() {
                            if k > 0 {
                                out.push(b',');
                            }
                            let value = match a.vr {
                                "PN" => person_name(v),
                                "IS" | "DS" | "US" | "UL" | "SS" | "SL" => number_or_string(v),
                                _ => {
                                    serde_json::to_writer(&mut out, v)
                                        .map_err(ApiError::internal)?;
                                    continue;
                                }
                            };
                            serde_json::to_writer(&mut out, &value).map_err(ApiError::internal)?;
                        }
                        out.push(b']');
                    }
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}
