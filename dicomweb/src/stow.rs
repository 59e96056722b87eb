//! STOW-RS (PS3.18 10.5): `multipart/related; type="application/dicom"`
//! read as a stream with `multer`, each part streamed into
//! [`pacs_core::Archive::store`] (which answers only once the instance is
//! durable). A broken part fails alone; the others are kept.
//! `type="application/dicom+json"` (metadata and bulk data) is read whole
//! (within the body limit) and each data set built into a Part 10 object
//! by `stow_meta`, then stored the same way.
//!
//! Response: `application/dicom+json` with Referenced SOP Sequence
//! (0008,1199) and Failed SOP Sequence (0008,1198); 200 when every part was
//! stored, 202 when some failed, 409 when all failed (PS3.18 10.5.3).
//! Failure Reason codes (PS3.4 Annex B / PS3.18 Table 10.5.3-4): 0xA700 out
//! of resources (too large), 0xA900 data set does not match SOP class,
//! 0xC000 cannot understand, 0x0110 processing failure (storage), 0xC122
//! the instance belongs to another study than the one in the URL. A SOP
//! Instance UID already stored with other content that the duplicate
//! policy refuses (another patient or study, or `on_duplicate = reject`)
//! is 0xC000. Below the free-space watermark a request is refused with 507
//! Insufficient Storage before its body is read (RFC 4918 11.5), and a
//! part refused for space mid-request is 0xA700 (507 when every part was).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use pacs_core::dicom::{parse_part10, tags, Header, ParseError};
use pacs_core::{StoreError, Uid};
use serde_json::{json, Map, Value};
use tokio_util::io::StreamReader;

use crate::error::{ApiError, ApiResult};
use crate::metadata::DICOM_JSON;
use crate::negotiate::parse_media_type;
use crate::stow_meta::{BulkPart, BulkParts};
use crate::{parse_uid, AppState, RequestBase};

const OUT_OF_RESOURCES: u16 = 0xA700;
const SOP_CLASS_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
const PROCESSING_FAILURE: u16 = 0x0110;
const WRONG_STUDY: u16 = 0xC122;

pub async fn store(
    State(st): State<AppState>,
    base: RequestBase,
    request: Request,
) -> ApiResult<Response> {
    run(&st, &base, None, request).await
}

pub async fn store_in_study(
    State(st): State<AppState>,
    Path(study): Path<String>,
    base: RequestBase,
    request: Request,
) -> ApiResult<Response> {
    let study = parse_uid("StudyInstanceUID", &study)?;
    run(&st, &base, Some(study), request).await
}

/// What a STOW-RS request's parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Part 10 objects.
    Dicom,
    /// DICOM JSON metadata and bulk data.
    Metadata,
}

/// The multipart boundary and form of a STOW-RS request, or why it is
/// refused.
fn boundary_of(headers: &HeaderMap) -> ApiResult<(String, Form)> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type is missing; send multipart/related; type=\"application/dicom\"; boundary=...",
            )
        })?;
    let media =
        parse_media_type(value).ok_or_else(|| ApiError::bad_request("unreadable Content-Type"))?;
    if media.essence != "multipart/related" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {} is not supported; send multipart/related; type=\"application/dicom\"",
                media.essence
            ),
        ));
    }
    let form = match media.param("type").map(str::to_ascii_lowercase).as_deref() {
        None | Some("application/dicom") => Form::Dicom,
        Some("application/dicom+json") => Form::Metadata,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "multipart/related parts of type {other} are not supported; send \
                     type=\"application/dicom\" (Part 10 objects) or \
                     type=\"application/dicom+json\" (metadata and bulk data)"
                ),
            ))
        }
    };
    let boundary = media
        .param("boundary")
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| {
            ApiError::bad_request("the multipart Content-Type has no (valid) boundary")
        })?;
    Ok((boundary.to_owned(), form))
}

/// One part's outcome.
enum Outcome {
    Stored {
        class: String,
        sop: Uid,
        series: Uid,
        study: Uid,
    },
    Failed {
        class: Option<String>,
        sop: Option<String>,
        reason: u16,
        why: String,
    },
}

/// A part's header (File Meta Information and data set up to Pixel Data),
/// read from its prefix (`None` when unreadable; `store` then says why).
fn identify(
    prefix: &[u8],
    complete: bool,
    limits: &pacs_core::Limits,
) -> Result<Option<Header>, Identify> {
    match parse_part10(prefix, complete, limits) {
        Ok(h) => Ok(Some(h)),
        Err(ParseError::Incomplete) if !complete => Err(Identify::NeedMore),
        Err(ParseError::HeaderTooLarge { limit }) => Err(Identify::TooLarge(limit)),
        Err(_) => Ok(None),
    }
}

/// Why [`identify`] gave no answer yet.
enum Identify {
    NeedMore,
    TooLarge(u64),
}

/// Whether a part's File Meta Information names a deflated transfer
/// syntax (PS3.5 A.5); `None` until the prefix holds the whole group.
fn deflated(prefix: &[u8]) -> Option<bool> {
    let meta = dicom_object::meta::FileMetaTable::from_reader(prefix.get(128..)?).ok()?;
    let uid = meta.transfer_syntax.trim_end_matches(['\0', ' ']);
    Some(pacs_core::dicom::TransferSyntax::from_uid(uid).is_some_and(|ts| ts.deflated()))
}

async fn store_part<S>(st: &AppState, expected_study: Option<&Uid>, mut field: S) -> Outcome
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send,
{
    // Read the header prefix to learn the UIDs before storing.
    let mut prefix: Vec<u8> = Vec::new();
    let mut next_attempt = 16 * 1024;
    let mut eof = false;
    // A deflated data set is inflated to be read: within its own cap
    // (a deflate bomb is refused here, before the archive inflates it
    // again) and within the STOW-RS memory budget.
    let mut limits = st.archive.limits().clone();
    let mut inflating: Option<crate::stow_budget::Reservation> = None;
    let header = loop {
        while prefix.len() < next_attempt && !eof {
            match field.next().await {
                Some(Ok(chunk)) => prefix.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Outcome::Failed {
                        class: None,
                        sop: None,
                        reason: PROCESSING_FAILURE,
                        why: format!("reading the part failed: {e}"),
                    }
                }
                None => eof = true,
            }
        }
        if inflating.is_none() && deflated(&prefix) == Some(true) {
            limits.max_header_bytes = limits
                .max_header_bytes
                .min(limits.max_inflated_header_bytes);
            let bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
            match st.stow_budget.reserve(bytes).await {
                Ok(r) => inflating = Some(r),
                Err(e) => {
                    return Outcome::Failed {
                        class: None,
                        sop: None,
                        reason: OUT_OF_RESOURCES,
                        why: e.message,
                    }
                }
            }
        }
        match identify(&prefix, eof, &limits) {
            Ok(header) => break header,
            Err(Identify::TooLarge(limit)) if inflating.is_some() => {
                return Outcome::Failed {
                    class: None,
                    sop: None,
                    reason: OUT_OF_RESOURCES,
                    why: format!(
                        "the deflated data set inflates to more than {limit} bytes before \
                         Pixel Data (max_inflated_header_bytes)"
                    ),
                };
            }
            Err(_) => {
                if prefix.len() as u64 > limits.max_header_bytes {
                    break None;
                }
                next_attempt = prefix.len().saturating_mul(2);
            }
        }
    };
    let uid = |tag| header.as_ref().and_then(|h| h.dataset.uid(tag));
    let (class, sop, study) = (
        uid(tags::SOP_CLASS_UID),
        uid(tags::SOP_INSTANCE_UID),
        uid(tags::STUDY_INSTANCE_UID),
    );
    if let (Some(expected), Some(study)) = (expected_study, &study) {
        if expected.as_str() != study.as_str() {
            return Outcome::Failed {
                class,
                sop,
                reason: WRONG_STUDY,
                why: format!("the instance belongs to study {study}, not {expected}"),
            };
        }
    }
    // The header parsed here is handed on, so a deflated data set is
    // inflated and parsed once (within the limits above, no looser than
    // the archive's); an unreadable part goes whole to `store`, which says
    // why.
    let stored = match header {
        Some(header) => {
            st.archive
                .store_parsed(prefix, header, StreamReader::new(field))
                .await
        }
        None => {
            let body =
                stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(prefix))]).chain(field);
            st.archive.store(StreamReader::new(body)).await
        }
    };
    match stored {
        Ok(outcome) => Outcome::Stored {
            class: outcome.record.sop_class_uid.to_string(),
            sop: outcome.record.sop_instance_uid.clone(),
            series: outcome.record.series_instance_uid.clone(),
            study: outcome.record.study_instance_uid.clone(),
        },
        Err(e) => {
            let reason = match &e {
                StoreError::TooLarge { .. } => OUT_OF_RESOURCES,
                StoreError::Mismatch(_) => SOP_CLASS_MISMATCH,
                StoreError::Parse(_) | StoreError::Extract(_) => CANNOT_UNDERSTAND,
                StoreError::SeriesInOtherStudy { .. } => CANNOT_UNDERSTAND,
                StoreError::Duplicate { .. } => CANNOT_UNDERSTAND,
                StoreError::InsufficientStorage { .. } => OUT_OF_RESOURCES,
                StoreError::Io(_) | StoreError::Storage(_) => PROCESSING_FAILURE,
            };
            Outcome::Failed {
                class,
                sop,
                reason,
                why: e.to_string(),
            }
        }
    }
}

async fn run(
    st: &AppState,
    base: &RequestBase,
    expected_study: Option<Uid>,
    request: Request,
) -> ApiResult<Response> {
    let (boundary, form) = boundary_of(request.headers())?;
    if st.archive.space_low().is_some() {
        return Err(insufficient_storage());
    }
    let limit = st.max_stow_body();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Count the body as it streams; past the limit the stream fails and
    // the flag turns the answer into 413.
    let over = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let counted = {
        let over = over.clone();
        request.into_body().into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let total = seen.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            if total > limit {
                over.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("request body exceeds the limit"));
            }
            Ok(chunk)
        })
    };
    let mut multipart = multer::Multipart::new(counted, boundary);
    if form == Form::Metadata {
        let outcomes = match store_metadata(st, expected_study.as_ref(), &mut multipart).await {
            _ if over.load(Ordering::Relaxed) => return Err(too_large(limit)),
            Ok(outcomes) => outcomes,
            Err(e) => return Err(e),
        };
        return Ok(respond(base, expected_study.as_ref(), outcomes));
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut in_flight: tokio::task::JoinSet<(usize, usize, Outcome)> = tokio::task::JoinSet::new();
    let mut bytes_in_flight = 0usize;
    let mut framing_error: Option<String> = None;
    let mut busy: Option<ApiError> = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let part_type = field
                    .content_type()
                    .map(|m| m.essence_str().to_ascii_lowercase());
                if let Some(t) = part_type
                    .filter(|t| t != "application/dicom" && t != "application/octet-stream")
                {
                    outcomes.push(Outcome::Failed {
                        class: None,
                        sop: None,
                        reason: CANNOT_UNDERSTAND,
                        why: format!("part of type {t} is not application/dicom"),
                    });
                    continue;
                }
                let mut field = field.map_err(std::io::Error::other);
                // Small parts are read whole and stored concurrently (up to
                // STORE_CONCURRENCY at once), so their durability syncs are
                // group-committed; a large part streams in place. The
                // buffer is reserved from the budget shared by all requests
                // before it is filled.
                let part_buffer = PART_BUFFER.min(st.stow_budget.total());
                let mut reservation = match st.stow_budget.reserve(part_buffer).await {
                    Ok(r) => r,
                    Err(e) => {
                        busy = Some(e);
                        break;
                    }
                };
                let mut chunks: Vec<Bytes> = Vec::new();
                let mut size = 0usize;
                let mut read_error = None;
                while size <= part_buffer {
                    match field.next().await {
                        Some(Ok(c)) => {
                            size += c.len();
                            chunks.push(c);
                        }
                        Some(Err(e)) => {
                            read_error = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
                let index = outcomes.len();
                outcomes.push(Outcome::Failed {
                    class: None,
                    sop: None,
                    reason: PROCESSING_FAILURE,
                    why: "not stored".into(),
                });
                let buffered = stream::iter(chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
                if let Some(e) = read_error {
                    let failing = buffered.chain(stream::iter([Err(e)]));
                    outcomes[index] = store_part(st, expected_study.as_ref(), failing).await;
                } else if size > part_buffer {
                    outcomes[index] =
                        store_part(st, expected_study.as_ref(), buffered.chain(field)).await;
                    drop(reservation);
                } else {
                    reservation.shrink_to(size);
                    while in_flight.len() >= STORE_CONCURRENCY
                        || (bytes_in_flight > 0 && bytes_in_flight + size > BYTES_IN_FLIGHT)
                    {
                        match in_flight.join_next().await {
                            Some(done) => bytes_in_flight -= record(&mut outcomes, done),
                            None => {
                                bytes_in_flight = 0;
                                break;
                            }
                        }
                    }
                    bytes_in_flight += size;
                    let st = st.clone();
                    let expected = expected_study.clone();
                    in_flight.spawn(async move {
                        let outcome = store_part(&st, expected.as_ref(), buffered).await;
                        drop(reservation);
                        (index, size, outcome)
                    });
                }
            }
            Ok(None) => break,
            Err(e) => {
                framing_error = Some(e.to_string());
                break;
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut outcomes, done);
    }
    if over.load(Ordering::Relaxed) {
        return Err(too_large(limit));
    }
    if let Some(busy) = busy {
        return Err(busy);
    }
    if outcomes.is_empty() {
        return Err(ApiError::bad_request(format!(
            "no part could be read from the multipart body{}; check the boundary",
            framing_error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    if let Some(e) = &framing_error {
        tracing::debug!(error = %e, "STOW-RS body ended with a framing error");
    }
    if outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Failed { reason, .. } if *reason == OUT_OF_RESOURCES))
        && st.archive.space_low().is_some()
    {
        return Err(insufficient_storage());
    }
    Ok(respond(base, expected_study.as_ref(), outcomes))
}

/// A metadata and bulk data request: every part read, then each data set
/// of the metadata part(s) built and stored in turn.
async fn store_metadata(
    st: &AppState,
    expected_study: Option<&Uid>,
    multipart: &mut multer::Multipart<'_>,
) -> ApiResult<Vec<Outcome>> {
    let mut metadata: Vec<Bytes> = Vec::new();
    let mut bulk = BulkParts::default();
    let limits = st.archive.limits();
    // Every part is held until the data sets are built: the form as a
    // whole is capped, each metadata part more tightly (it becomes a JSON
    // tree), and the bytes come out of the STOW-RS budget.
    let mut form_bytes: u64 = 0;
    let mut held = crate::stow_budget::Reservation::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "the multipart body could not be read: {e}; check the boundary"
                )))
            }
        };
        let media = field
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_media_type);
        let location = field
            .headers()
            .get(header::CONTENT_LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_metadata = media.as_ref().is_some_and(|m| {
            m.essence == "application/dicom+json" || m.essence == "application/json"
        });
        let mut field = field;
        let mut part: Vec<u8> = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| ApiError::bad_request(format!("a part could not be read: {e}")))?
        {
            form_bytes += chunk.len() as u64;
            if form_bytes > limits.max_stow_metadata_form_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the metadata and bulk data parts exceed {} bytes in all \
                         (max_stow_metadata_form_bytes); send large objects as application/dicom",
                        limits.max_stow_metadata_form_bytes
                    ),
                ));
            }
            if is_metadata && (part.len() + chunk.len()) as u64 > limits.max_stow_metadata_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "an application/dicom+json part exceeds {} bytes \
                         (max_stow_metadata_bytes); send fewer data sets per request",
                        limits.max_stow_metadata_bytes
                    ),
                ));
            }
            held.merge(st.stow_budget.reserve(chunk.len()).await?);
            part.extend_from_slice(&chunk);
        }
        let bytes = Bytes::from(part);
        match (is_metadata, location) {
            (true, _) => metadata.push(bytes),
            (false, Some(location)) => bulk.insert(location, BulkPart { media, bytes }),
            (false, None) => {
                return Err(ApiError::bad_request(
                    "a bulk data part has no Content-Location, so no BulkDataURI can name it",
                ))
            }
        }
    }
    if metadata.is_empty() {
        return Err(ApiError::bad_request(
            "no application/dicom+json part: a metadata request needs one",
        ));
    }
    let mut outcomes = Vec::new();
    let bulk = Arc::new(bulk);
    for part in metadata {
        let bulk = bulk.clone();
        let built = tokio::task::spawn_blocking(move || crate::stow_meta::build_all(&part, &bulk))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::bad_request)?;
        for b in built {
            let outcome = match b.part10 {
                Ok(bytes) => {
                    let body = stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(bytes))]);
                    store_part(st, expected_study, body).await
                }
                Err(why) => Outcome::Failed {
                    class: b.class,
                    sop: b.sop,
                    reason: CANNOT_UNDERSTAND,
                    why,
                },
            };
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

/// Parts up to this size are buffered and stored concurrently.
const PART_BUFFER: usize = 16 * 1024 * 1024;
/// Parts of one request stored at once: their blob and index syncs run
/// side by side and the index syncs are group-committed, so a request of
/// ten parts costs about one sync, not ten.
const STORE_CONCURRENCY: usize = 16;
/// Bytes of buffered parts being stored at once (one part larger than
/// this is still stored, alone).
const BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// Puts a finished store's outcome in its slot; returns the part's size.
fn record(
    outcomes: &mut [Outcome],
    done: Result<(usize, usize, Outcome), tokio::task::JoinError>,
) -> usize {
    match done {
        Ok((index, size, outcome)) => {
            if let Some(slot) = outcomes.get_mut(index) {
                *slot = outcome;
            }
            size
        }
        Err(e) => {
            tracing::warn!(error = %e, "a STOW-RS part's store task failed");
            0
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body exceeds the {limit}-byte limit"),
    )
}

/// 507: the archive is below its free-space watermark (no path or volume
/// name in the body).
fn insufficient_storage() -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "the archive's storage is below its free-space watermark; nothing was stored, try again later",
    )
}

fn ui(v: &str) -> Value {
    json!({ "vr": "UI", "Value": [v] })
}

fn respond(base: &RequestBase, study: Option<&Uid>, outcomes: Vec<Outcome>) -> Response {
    let root = base.root();
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Stored {
                class,
                sop,
                series,
                study,
            } => {
                referenced.push(json!({
                    "00081150": ui(&class),
                    "00081155": ui(sop.as_str()),
                    "00081190": { "vr": "UR", "Value": [
                        format!("{root}/studies/{study}/series/{series}/instances/{sop}")
                    ]},
                }));
            }
            Outcome::Failed {
                class,
                sop,
                reason,
                why,
            } => {
                tracing::info!(sop = sop.as_deref().unwrap_or("?"), reason = format!("{reason:04X}"), why = %why, "STOW-RS part refused");
                let mut item = Map::new();
                item.insert(
                    "00081150".into(),
                    class.map(|c| ui(&c)).unwrap_or(json!({ "vr": "UI" })),
                );
                item.insert(
                    "00081155".into(),
                    sop.map(|s| ui(&s)).unwrap_or(json!({ "vr": "UI" })),
                );
                item.insert("00081197".into(), json!({ "vr": "US", "Value": [reason] }));
                failed.push(Value::Object(item));
            }
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        _ => StatusCode::CONFLICT,
    };
    let mut body = Map::new();
    if let Some(study) = study {
        body.insert(
            "00081190".into(),
            json!({ "vr": "UR", "Value": [format!("{root}/studies/{study}")] }),
        );
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Body::from(bytes),
    )
        .into_response()
}
