//! WADO-RS retrieval (PS3.18 10.4): studies, series and instances as
//! `multipart/related; type="application/dicom"` streamed from the blobs
//! (a few instances read ahead, at most one chunk of each in memory),
//! frames and bulk data cut from the stored objects without decoding
//! (except frames asked for in another syntax).
//!
//! Transfer syntaxes: `transfer-syntax=*` means "as stored"; no
//! `transfer-syntax` means the Default Transfer Syntax (Explicit VR LE,
//! except lossy or undecodable pixel data, sent as stored: PS3.18
//! 8.7.3.4); an explicit syntax other than the stored one is converted
//! when `imaging::transcode` can produce it from the stored one, and
//! refused with 406 otherwise.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::{header, Extensions, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use pacs_core::dicom::{tags, Header};
use pacs_core::records::InstanceRecord;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::metadata::{if_none_match, instance_in};
use crate::multipart::{closing, new_boundary, part_header};
use crate::negotiate::{accept, compressed_media_type, default_target, MediaRange};
use crate::pixel::{frames_of, parse_frame_list, scan_fragments, BlobReader, FrameGeometry};
use crate::{parse_uid, AppState, RequestBase, Scoped};
use imaging::transcode::TranscodeError;

const OCTET: &str = "application/octet-stream";

/// The syntax each instance of a retrieve is sent in.
#[derive(Debug, Clone, PartialEq)]
enum Conversion {
    /// `transfer-syntax=*`, or the client named the stored syntax.
    AsStored,
    /// The client named this syntax.
    To(String),
    /// The client named none: the Default Transfer Syntax rule
    /// ([`default_target`]); an instance that fails to convert goes as
    /// stored.
    Default,
}

impl Conversion {
    /// The syntax to convert `stored` to, `None` to send it as stored.
    fn target_for(&self, stored: &str) -> Option<String> {
        match self {
            Conversion::AsStored => None,
            Conversion::To(ts) => (ts != stored).then(|| ts.clone()),
            Conversion::Default => default_target(stored).map(str::to_owned),
        }
    }

    /// The syntax every part is in, when one is (for the Content-Type).
    fn single_syntax(&self) -> Option<&str> {
        match self {
            Conversion::To(ts) => Some(ts),
            _ => None,
        }
    }
}

/// Checks the client accepts `application/dicom` parts and chooses the
/// [`Conversion`]: a named syntax is used when every instance can be
/// converted to it. `stored` gives each instance's syntax and Bits
/// Allocated.
fn negotiate_dicom(headers: &HeaderMap, stored: &[(&str, Option<u16>)]) -> ApiResult<Conversion> {
    let mut refusal: Option<String> = None;
    for r in accept(headers) {
        let wants_dicom = r.is_wildcard()
            || (r.essence == "multipart/related"
                && matches!(
                    r.payload_type().as_deref(),
                    None | Some("application/dicom")
                ))
            || r.essence == "application/dicom";
        if !wants_dicom {
            continue;
        }
        if r.default_syntax() {
            return Ok(Conversion::Default);
        }
        let Some(ts) = r.transfer_syntax() else {
            return Ok(Conversion::AsStored);
        };
        // PS3.18 8.7.3.5: a value that is not a UID is a bad request.
        parse_uid("transfer-syntax", ts)?;
        if stored.iter().all(|(s, _)| *s == ts) {
            return Ok(Conversion::AsStored);
        }
        let check = stored.iter().try_for_each(|(s, bits)| {
            if *s == ts {
                return Ok(());
            }
            if !imaging::transcode::can_transcode(s, ts) {
                return Err(format!(
                    "cannot convert to transfer syntax {ts}: an instance is stored as {s}, \
                     and the server converts to uncompressed syntaxes, RLE Lossless, JPEG \
                     Lossless and (8-bit data only) JPEG Baseline"
                ));
            }
            imaging::transcode::precheck(ts, *bits).map_err(|e| match e {
                TranscodeError::Unsupported { reason } | TranscodeError::Invalid { reason } => {
                    format!("cannot convert to transfer syntax {ts}: {reason}")
                }
            })
        });
        match check {
            Ok(()) => return Ok(Conversion::To(ts.to_owned())),
            Err(why) => refusal = Some(why),
        }
    }
    Err(ApiError::not_acceptable(match refusal {
        Some(why) => format!("{why}; ask for transfer-syntax=* to get the instances as stored"),
        None => "instances are available as multipart/related; type=\"application/dicom\" only"
            .to_owned(),
    }))
}

fn content_cache(st: &AppState) -> String {
    format!("private, max-age={}", st.config.content_max_age_secs)
}

/// Instances opened (and their first chunk read) ahead of the one being
/// sent: bounds a response's memory to this many chunks of at most 4 MiB.
const READ_AHEAD: usize = 3;

/// Streams `records` as one multipart body.
fn stream_instances(
    st: &AppState,
    base: &RequestBase,
    records: Vec<InstanceRecord>,
    boundary: String,
    conversion: Conversion,
) -> Body {
    let st = st.clone();
    let prefix = base.prefix.clone();
    let close = closing(&boundary, !records.is_empty());
    let parts = stream::iter(records.into_iter().enumerate())
        .map(move |(i, rec)| {
            let st = st.clone();
            let location = format!(
                "{prefix}/studies/{}/series/{}/instances/{}",
                rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
            );
            let target = conversion.target_for(&rec.transfer_syntax_uid);
            let fallback = conversion == Conversion::Default;
            let part_type = |ts: &str| format!("application/dicom; transfer-syntax={ts}");
            let stored_type = part_type(&rec.transfer_syntax_uid);
            let boundary = boundary.clone();
            let first = i == 0;
            async move {
                if let Some(ts) = target {
                    match converted(&st, &rec, &ts).await {
                        Ok(bytes) => {
                            let head = part_header(&boundary, first, &part_type(&ts), Some(&location));
                            return stream::iter([Ok(head), Ok(Bytes::from(bytes))]).boxed();
                        }
                        Err(e) if fallback => {
                            tracing::info!(sop = %rec.sop_instance_uid, error = %e.message, "sent as stored: not convertible to the default syntax");
                        }
                        Err(e) => {
                            tracing::warn!(sop = %rec.sop_instance_uid, error = %e.message, "conversion failed mid-response");
                            return stream::once(async move {
                                Err(std::io::Error::other("instance could not be converted"))
                            })
                            .boxed();
                        }
                    }
                }
                let head = part_header(&boundary, first, &stored_type, Some(&location));
                match st.archive.retrieve(&rec.sop_instance_uid).await {
                    Ok((_, mut blob)) => {
                        // Read ahead: the first chunk (a whole instance of
                        // up to 4 MiB) is read while earlier parts are
                        // still being sent.
                        let first = blob.next().await;
                        stream::iter([Ok(head)])
                            .chain(stream::iter(first).chain(blob).map_err(std::io::Error::other))
                            .boxed()
                    }
                    Err(e) => {
                        tracing::warn!(sop = %rec.sop_instance_uid, error = %e, "retrieve failed mid-response");
                        stream::once(async move {
                            Err(std::io::Error::other("instance could not be read"))
                        })
                        .boxed()
                    }
                }
            }
        })
        .buffered(READ_AHEAD)
        .flatten()
        .chain(stream::once(async move { Ok::<Bytes, std::io::Error>(close) }));
    Body::from_stream(parts)
}

/// The instance as a Part 10 file in `ts`, converted off the async runtime
/// within the bound on pixel work.
pub(crate) async fn converted(st: &AppState, rec: &InstanceRecord, ts: &str) -> ApiResult<Vec<u8>> {
    st.renderer.transcode(&st.archive, rec, ts).await
}

fn multipart_type(payload: &str, boundary: &str, ts: Option<&str>) -> String {
    match ts {
        Some(ts) => {
            format!(
                "multipart/related; type=\"{payload}\"; boundary={boundary}; transfer-syntax={ts}"
            )
        }
        None => format!("multipart/related; type=\"{payload}\"; boundary={boundary}"),
    }
}

async fn retrieve_many(
    st: &AppState,
    base: &RequestBase,
    headers: &HeaderMap,
    records: Vec<InstanceRecord>,
    what: &str,
) -> ApiResult<Response> {
    if records.is_empty() {
        return Err(ApiError::not_found(format!("{what} not found")));
    }
    let stored: Vec<(&str, Option<u16>)> = records
        .iter()
        .map(|r| (r.transfer_syntax_uid.as_str(), r.bits_allocated))
        .collect();
    let conversion = negotiate_dicom(headers, &stored)?;
    let boundary = new_boundary();
    let content_type = multipart_type("application/dicom", &boundary, conversion.single_syntax());
    let body = stream_instances(st, base, records, boundary, conversion);
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, content_cache(st))
        .body(body)
        .map_err(ApiError::internal)
}

pub async fn study(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    method: Method,
    extensions: Extensions,
) -> ApiResult<Response> {
    let study = parse_uid("StudyInstanceUID", &study)?;
    if crate::zip::requested(&headers, query.as_deref()) {
        let head = method == Method::HEAD;
        return crate::zip::study(&st, &extensions, study, head).await;
    }
    let mut records = st.archive.instances_of_study(&study).await?;
    sort_records(&mut records);
    retrieve_many(&st, &base, &headers, records, &format!("study {study}")).await
}

pub async fn series(
    Scoped(st): Scoped,
    Path((study, series)): Path<(String, String)>,
    base: RequestBase,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    method: Method,
    extensions: Extensions,
) -> ApiResult<Response> {
    let study = parse_uid("StudyInstanceUID", &study)?;
    let series = parse_uid("SeriesInstanceUID", &series)?;
    if crate::zip::requested(&headers, query.as_deref()) {
        let head = method == Method::HEAD;
        return crate::zip::series(&st, &extensions, study, series, head).await;
    }
    let mut records: Vec<InstanceRecord> = st
        .archive
        .instances_of_series(&series)
        .await?
        .into_iter()
        .filter(|r| r.study_instance_uid == study)
        .collect();
    sort_records(&mut records);
    let what = format!("series {series} in study {study}");
    retrieve_many(&st, &base, &headers, records, &what).await
}

fn sort_records(records: &mut [InstanceRecord]) {
    let num = |s: &str| s.trim().parse::<i64>().unwrap_or(i64::MAX);
    records.sort_by(|a, b| {
        (a.series_instance_uid.as_str(), num(&a.instance_number))
            .cmp(&(b.series_instance_uid.as_str(), num(&b.instance_number)))
    });
}

pub async fn instance(
    Scoped(st): Scoped,
    Path((study, series, instance)): Path<(String, String, String)>,
    base: RequestBase,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let record = instance_in(&st, &study, &series, &instance).await?;
    let conversion = negotiate_dicom(
        &headers,
        &[(record.transfer_syntax_uid.as_str(), record.bits_allocated)],
    )?;
    if let Some(ts) = conversion.target_for(&record.transfer_syntax_uid) {
        // One instance: convert before answering, so a failure is a 406
        // (or, for the default syntax, the instance goes as stored).
        match converted(&st, &record, &ts).await {
            Ok(bytes) => {
                let boundary = new_boundary();
                let part_type = format!("application/dicom; transfer-syntax={ts}");
                let mut body = part_header(&boundary, true, &part_type, None).to_vec();
                body.extend_from_slice(&bytes);
                body.extend_from_slice(&closing(&boundary, true));
                return Response::builder()
                    .header(
                        header::CONTENT_TYPE,
                        multipart_type("application/dicom", &boundary, Some(&ts)),
                    )
                    .header(header::CACHE_CONTROL, content_cache(&st))
                    .body(Body::from(body))
                    .map_err(ApiError::internal);
            }
            Err(e) if conversion == Conversion::Default => {
                tracing::info!(sop = %record.sop_instance_uid, error = %e.message, "sent as stored: not convertible to the default syntax");
            }
            Err(e) => return Err(e),
        }
    }
    // A boundary derived from the content keeps the body, and so the
    // strong ETag, stable.
    let etag = record.sha256.get(..32).unwrap_or(&record.sha256).to_owned();
    if !etag.is_empty() && if_none_match(&headers, &etag) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, format!("\"{etag}\""))
            .header(header::CACHE_CONTROL, content_cache(&st))
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let boundary = format!("senpacs-{etag}");
    let content_type = multipart_type("application/dicom", &boundary, None);
    let body = stream_instances(&st, &base, vec![record], boundary, Conversion::AsStored);
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, format!("\"{etag}\""))
        .header(header::CACHE_CONTROL, content_cache(&st))
        .body(body)
        .map_err(ApiError::internal)
}

/// The media type of frame parts, and the syntax to convert them to
/// (`None`: as stored).
struct FrameMedia {
    payload: String,
    convert_to: Option<String>,
}

fn negotiate_frames(ranges: &[MediaRange], ts: &str, encapsulated: bool) -> ApiResult<FrameMedia> {
    let compressed = if encapsulated {
        match compressed_media_type(ts) {
            Some(m) => m,
            None if ts.starts_with("1.2.840.10008.1.2.4.10") => {
                return Err(ApiError::not_acceptable(
                    "frames of video transfer syntaxes (MPEG) are not supported; retrieve the instance",
                ))
            }
            None => OCTET,
        }
    } else {
        OCTET
    };
    let mut refused_syntax = None;
    for r in ranges {
        let payload = if r.is_wildcard() {
            compressed.to_owned()
        } else {
            match r.payload_type() {
                None => compressed.to_owned(),
                Some(t) if t == OCTET || t == compressed => t,
                // The name RLE frames had before PS3.18 settled on
                // image/dicom-rle.
                Some(t) if t == "image/x-dicom-rle" && compressed == "image/dicom-rle" => {
                    compressed.to_owned()
                }
                Some(t) if t == "image/*" && compressed.starts_with("image/") => {
                    compressed.to_owned()
                }
                Some(_) => continue,
            }
        };
        // No syntax named for native bytes: the default, Explicit VR LE
        // (PS3.18 8.7.3.4), so lossless compressed frames are decoded.
        let default_native = !r.is_wildcard() && payload == OCTET && r.default_syntax();
        match r.transfer_syntax() {
            _ if default_native && encapsulated => {
                return Ok(FrameMedia {
                    payload,
                    convert_to: default_target(ts).map(str::to_owned),
                })
            }
            Some(asked) if asked != ts => refused_syntax = Some(asked.to_owned()),
            _ => {
                return Ok(FrameMedia {
                    payload,
                    convert_to: None,
                })
            }
        }
    }
    Err(ApiError::not_acceptable(match refused_syntax {
        Some(asked) => format!(
            "frames cannot be converted to transfer syntax {asked} with the media type asked \
             for (they are stored as {ts}); frames are converted to Explicit VR Little Endian \
             (application/octet-stream), JPEG Baseline or JPEG Lossless (image/jpeg) and RLE \
             Lossless (image/dicom-rle); or ask for transfer-syntax=* to get them as stored"
        ),
        None => format!(
            "frames of this instance are available as multipart/related; type=\"{compressed}\" \
             (or application/octet-stream) with transfer-syntax={ts}"
        ),
    }))
}

/// Reads the header of a stored instance.
async fn open(st: &AppState, record: &InstanceRecord) -> ApiResult<(Header, BlobReader)> {
    let (_, blob) = st.archive.retrieve(&record.sop_instance_uid).await?;
    let mut reader = BlobReader::new(blob);
    let header = reader.header(st.archive.limits()).await?;
    Ok((header, reader))
}

/// Where the frames are cut from: the stored object, or a converted copy
/// held in memory.
enum FrameSource<'a> {
    Stored(&'a InstanceRecord),
    Memory(&'a Bytes),
}

impl FrameSource<'_> {
    async fn reopen(&self, st: &AppState) -> ApiResult<BlobReader> {
        Ok(match self {
            FrameSource::Stored(record) => {
                let (_, blob) = st.archive.retrieve(&record.sop_instance_uid).await?;
                BlobReader::new(blob)
            }
            FrameSource::Memory(bytes) => {
                BlobReader::new(stream::iter([Ok((*bytes).clone())]).boxed())
            }
        })
    }
}

/// The bytes of each frame in `wanted` (1-based), in the order asked.
async fn read_frames(
    st: &AppState,
    source: FrameSource<'_>,
    header: &Header,
    mut reader: BlobReader,
    geometry: FrameGeometry,
    wanted: &[u32],
) -> ApiResult<Vec<Bytes>> {
    let pixel = header
        .pixel_data
        .ok_or_else(|| ApiError::not_found("the instance has no pixel data"))?;
    if pixel.inflated {
        return Err(ApiError::not_acceptable(
            "frames of deflate-compressed objects cannot be cut without inflating; retrieve the instance",
        ));
    }
    let mut unique: Vec<u32> = wanted.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let cap = st.archive.limits().max_frames_response_bytes;
    let mut got: BTreeMap<u32, Bytes> = BTreeMap::new();
    if !header.syntax.encapsulated() {
        let len = u64::from(pixel.length.unwrap_or(0));
        let total = geometry.frame_len.saturating_mul(unique.len() as u64);
        if total > cap {
            return Err(frames_too_large(unique.len(), total, cap));
        }
        for &n in &unique {
            let start = u64::from(n - 1) * geometry.frame_len;
            if start + geometry.frame_len > len {
                return Err(ApiError::internal(format!(
                    "stored pixel data is shorter than frame {n} needs"
                )));
            }
            let frame_len = usize::try_from(geometry.frame_len).map_err(ApiError::internal)?;
            let bytes = reader.take(pixel.value_offset + start, frame_len).await?;
            got.insert(n, bytes);
        }
    } else {
        let limits = st.archive.limits();
        let (bot, fragments) = scan_fragments(&mut reader, pixel.value_offset, limits).await?;
        let frames = frames_of(&bot, &fragments, geometry.frames)?;
        // Second pass over a fresh stream: only the fragments asked for.
        let mut reader = source.reopen(st).await?;
        let mut needed: Vec<(u64, u32, u32)> = Vec::new();
        for &n in &unique {
            let Some(frags) = frames.get(n as usize - 1) else {
                return Err(ApiError::not_found(format!("frame {n} does not exist")));
            };
            needed.extend(frags.iter().map(|f| (f.offset, f.len, n)));
        }
        let total: u64 = needed.iter().map(|(_, len, _)| u64::from(*len)).sum();
        if total > cap {
            return Err(frames_too_large(unique.len(), total, cap));
        }
        needed.sort_unstable();
        let mut parts: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (offset, len, n) in needed {
            let bytes = reader.take(offset, len as usize).await?;
            parts.entry(n).or_default().extend_from_slice(&bytes);
        }
        got = parts
            .into_iter()
            .map(|(n, v)| (n, Bytes::from(v)))
            .collect();
    }
    wanted
        .iter()
        .map(|n| {
            got.get(n)
                .cloned()
                .ok_or_else(|| ApiError::internal("frame missing after read"))
        })
        .collect()
}

/// The 413 of a frame list whose frames add up to more than `cap` bytes.
fn frames_too_large(count: usize, total: u64, cap: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the {count} frame(s) asked for hold {total} bytes, more than the {cap}-byte limit \
             of one response; ask for fewer frames per request"
        ),
    )
}

/// The frame list of a request with repeated numbers removed (the first
/// occurrence keeps its place), within `Limits::max_frames_per_request`.
fn unique_frames(list: &str, frames: u32, limits: &pacs_core::Limits) -> ApiResult<Vec<u32>> {
    let wanted = parse_frame_list(list, frames)?;
    let mut seen = std::collections::HashSet::with_capacity(wanted.len());
    let unique: Vec<u32> = wanted.into_iter().filter(|n| seen.insert(*n)).collect();
    if unique.len() > limits.max_frames_per_request {
        return Err(ApiError::bad_request(format!(
            "{} frames asked for; at most {} per request",
            unique.len(),
            limits.max_frames_per_request
        )));
    }
    Ok(unique)
}

pub async fn frames(
    Scoped(st): Scoped,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let record = instance_in(&st, &study, &series, &instance).await?;
    let (header, reader) = open(&st, &record).await?;
    if header.pixel_data.is_none() {
        return Err(ApiError::not_found("the instance has no pixel data"));
    }
    let geometry = FrameGeometry::of(&header)?;
    let wanted = unique_frames(&list, geometry.frames, st.archive.limits())?;
    let ts = header
        .meta
        .transfer_syntax_uid
        .trim_end_matches(['\0', ' ']);
    let ranges = accept(&headers);
    let media = match negotiate_frames(&ranges, ts, header.syntax.encapsulated()) {
        Ok(FrameMedia {
            payload,
            convert_to: Some(target),
        }) => return converted_frames(&st, &record, &list, &target, &payload).await,
        Ok(media) => media,
        Err(refusal) => {
            // PS3.18 8.7.3: frames asked for in another syntax (native
            // bytes, JPEG, RLE) are converted when the archive can.
            return match converted_frames_asked(&ranges, ts) {
                Some((target, payload)) => {
                    converted_frames(&st, &record, &list, &target, &payload).await
                }
                None => Err(refusal),
            };
        }
    };
    let etag = {
        let mut h = Sha256::new();
        h.update(record.sha256.as_bytes());
        h.update(list.as_bytes());
        h.update(media.payload.as_bytes());
        hex::encode(&h.finalize()[..16])
    };
    if if_none_match(&headers, &etag) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, format!("\"{etag}\""))
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let frames = read_frames(
        &st,
        FrameSource::Stored(&record),
        &header,
        reader,
        geometry,
        &wanted,
    )
    .await?;
    frames_response(&st, frames, &media.payload, ts, Some(&etag))
}

/// Frames as `multipart/related; type=PAYLOAD`, one part each labelled with
/// `ts`. With `etag`, the boundary is derived from it (so the body, and the
/// strong ETag, are stable) and the ETag is sent.
fn frames_response(
    st: &AppState,
    frames: Vec<Bytes>,
    payload: &str,
    ts: &str,
    etag: Option<&str>,
) -> ApiResult<Response> {
    let boundary = etag.map_or_else(new_boundary, |e| format!("senpacs-{e}"));
    let part_type = format!("{payload}; transfer-syntax={ts}");
    // Streamed part by part: the frames are never copied into one buffer.
    let close = closing(&boundary, !frames.is_empty());
    let parts = {
        let boundary = boundary.clone();
        frames
            .into_iter()
            .enumerate()
            .flat_map(move |(i, frame)| [part_header(&boundary, i == 0, &part_type, None), frame])
    };
    let body = stream::iter(parts.chain([close]).map(Ok::<Bytes, std::io::Error>));
    let mut builder = Response::builder()
        .header(
            header::CONTENT_TYPE,
            multipart_type(payload, &boundary, Some(ts)),
        )
        .header(header::CACHE_CONTROL, content_cache(st));
    if let Some(etag) = etag {
        builder = builder.header(header::ETAG, format!("\"{etag}\""));
    }
    builder
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

/// The syntax a client asks frames to be converted to, with the media type
/// of the parts, when the stored syntax is not what it named: Explicit VR
/// Little Endian as `application/octet-stream` (PS3.18 8.7.3: compressed
/// frames decoded), JPEG Baseline and JPEG Lossless as `image/jpeg`, RLE
/// Lossless as `image/dicom-rle` (or `image/x-dicom-rle`,
/// `application/octet-stream`). Only what [`imaging::transcode`] can
/// produce from the stored syntax.
fn converted_frames_asked(ranges: &[MediaRange], stored: &str) -> Option<(String, String)> {
    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const RLE: &str = "1.2.840.10008.1.2.5";
    ranges.iter().find_map(|r| {
        let ts = r.transfer_syntax()?;
        if ts == stored || !imaging::transcode::can_transcode(stored, ts) {
            return None;
        }
        let payload = r.payload_type()?;
        let fits = match ts {
            EXPLICIT_LE => payload == OCTET,
            RLE => matches!(
                payload.as_str(),
                "image/dicom-rle" | "image/x-dicom-rle" | OCTET
            ),
            other => compressed_media_type(other) == Some(payload.as_str()),
        };
        fits.then(|| (ts.to_owned(), payload))
    })
}

/// Frames of an instance converted to `target` (decoded, or encoded to a
/// compressed syntax): the instance is converted off the async runtime,
/// then the frames are cut from the converted copy.
async fn converted_frames(
    st: &AppState,
    record: &InstanceRecord,
    list: &str,
    target: &str,
    payload: &str,
) -> ApiResult<Response> {
    let bytes = Bytes::from(converted(st, record, target).await?);
    let mut reader = BlobReader::new(stream::iter([Ok(bytes.clone())]).boxed());
    let header = reader.header(st.archive.limits()).await?;
    let geometry = FrameGeometry::of(&header)?;
    let wanted = unique_frames(list, geometry.frames, st.archive.limits())?;
    let source = FrameSource::Memory(&bytes);
    let frames = read_frames(st, source, &header, reader, geometry, &wanted).await?;
    frames_response(st, frames, payload, target, None)
}

/// A single `bytes=a-b` range (RFC 9110 14.1.2) resolved against `len`.
/// `Ok(None)`: no usable Range header (serve the whole value).
fn parse_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole value
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if range.0 >= len || range.0 > range.1 {
        return Err(());
    }
    Ok(Some(range))
}

/// `len` bytes at `start` of a value held in memory or in the blob.
async fn read_value(
    reader: &mut BlobReader,
    inline: Option<&Bytes>,
    blob_start: u64,
    start: u64,
    len: u64,
) -> ApiResult<Bytes> {
    let start_usize = usize::try_from(start).map_err(ApiError::internal)?;
    let len_usize = usize::try_from(len).map_err(ApiError::internal)?;
    match inline {
        Some(b) => b
            .get(start_usize..start_usize.saturating_add(len_usize))
            .map(|s| b.slice_ref(s))
            .ok_or_else(|| ApiError::internal("range outside the value")),
        None => reader.take(blob_start + start, len_usize).await,
    }
}

pub async fn bulkdata(
    Scoped(st): Scoped,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let tag_value = (tag.len() == 8)
        .then(|| u32::from_str_radix(&tag, 16).ok())
        .flatten()
        .ok_or_else(|| ApiError::bad_request(format!("bulk data tag {tag:?} is not GGGGEEEE")))?;
    let record = instance_in(&st, &study, &series, &instance).await?;
    let (header, mut reader) = open(&st, &record).await?;
    let is_pixel = matches!(
        tag_value,
        tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
    );
    let cache = content_cache(&st);
    // Encapsulated pixel data: one part per frame, as stored.
    if is_pixel && header.syntax.encapsulated() && header.pixel_data.is_some() {
        let geometry = FrameGeometry::of(&header)?;
        let all: Vec<u32> = (1..=geometry.frames).collect();
        let ts = header
            .meta
            .transfer_syntax_uid
            .trim_end_matches(['\0', ' ']);
        let media = negotiate_frames(&accept(&headers), ts, true)?;
        if let Some(target) = &media.convert_to {
            let list: Vec<String> = all.iter().map(u32::to_string).collect();
            return converted_frames(&st, &record, &list.join(","), target, &media.payload).await;
        }
        let frames = read_frames(
            &st,
            FrameSource::Stored(&record),
            &header,
            reader,
            geometry,
            &all,
        )
        .await?;
        return frames_response(&st, frames, &media.payload, ts, None);
    }
    // The value's location: native pixel data in the blob, or an element
    // of the header held in memory.
    let (inline, blob_range): (Option<Bytes>, Option<(u64, u64)>) = if is_pixel {
        let pixel = header
            .pixel_data
            .filter(|p| !p.inflated)
            .ok_or_else(|| ApiError::not_found("the instance has no readable pixel data"))?;
        let len = pixel
            .length
            .ok_or_else(|| ApiError::internal("native pixel data of undefined length"))?;
        (None, Some((pixel.value_offset, u64::from(len))))
    } else {
        let bytes = header
            .dataset
            .get(tag_value)
            .and_then(|el| el.bytes())
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "the instance has no top-level binary element {tag}"
                ))
            })?;
        (Some(Bytes::copy_from_slice(bytes)), None)
    };
    let total = inline
        .as_ref()
        .map(|b| b.len() as u64)
        .or(blob_range.map(|r| r.1))
        .unwrap_or(0);
    let blob_start = blob_range.map(|r| r.0).unwrap_or(0);
    // One guard for whole values and ranges alike (`bytes=0-` is the whole
    // value): what one response holds in memory.
    let cap = st.archive.limits().max_bulk_value_bytes;
    match parse_range(&headers, total) {
        Err(()) => Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{total}"))
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(format!(
                "the Range asked for is not satisfiable: the value has {total} bytes; \
                 send one range bytes=first-last within it"
            )))
            .map_err(ApiError::internal),
        Ok(Some((start, end))) if end - start + 1 > cap => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the range asked for holds {} bytes, more than the {cap}-byte limit of one \
                 response; ask for smaller ranges",
                end - start + 1
            ),
        )),
        Ok(Some((start, end))) => {
            let bytes = read_value(
                &mut reader,
                inline.as_ref(),
                blob_start,
                start,
                end - start + 1,
            )
            .await?;
            Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, OCTET)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                )
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::CACHE_CONTROL, cache)
                .body(Body::from(bytes))
                .map_err(ApiError::internal)
        }
        Ok(None) => {
            if total > cap {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the bulk data value holds {total} bytes, more than the {cap}-byte \
                         limit of one response; ask for byte ranges (Range: bytes=0-{})",
                        cap.saturating_sub(1)
                    ),
                ));
            }
            let bytes = read_value(&mut reader, inline.as_ref(), blob_start, 0, total).await?;
            let single = accept(&headers).first().is_some_and(|r| r.essence == OCTET);
            if single {
                return Response::builder()
                    .header(header::CONTENT_TYPE, OCTET)
                    .header(header::ACCEPT_RANGES, "bytes")
                    .header(header::CACHE_CONTROL, cache)
                    .body(Body::from(bytes))
                    .map_err(ApiError::internal);
            }
            let boundary = new_boundary();
            let body = crate::multipart::body(&boundary, &[(OCTET.to_owned(), bytes)]);
            Response::builder()
                .header(header::CONTENT_TYPE, multipart_type(OCTET, &boundary, None))
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::CACHE_CONTROL, cache)
                .body(Body::from(body))
                .map_err(ApiError::internal)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn with_range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(parse_range(&with_range("bytes=2-5"), 10), Ok(Some((2, 5))));
        assert_eq!(parse_range(&with_range("bytes=2-"), 10), Ok(Some((2, 9))));
        assert_eq!(parse_range(&with_range("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(
            parse_range(&with_range("bytes=8-100"), 10),
            Ok(Some((8, 9)))
        );
        assert_eq!(parse_range(&with_range("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(&with_range("bytes=a-"), 10), Err(()));
    }
}
