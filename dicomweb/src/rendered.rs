//! Rendered resources (PS3.18 8.3.5, 9.5) and thumbnails (Supplement 203):
//! one frame as `image/jpeg` (default) or `image/png`, rendered by
//! [`imaging::render`] through [`crate::render_service`].
//!
//! What each resource shows:
//! - `…/instances/{i}/frames/{n}/rendered` and `…/thumbnail`: frame `n`
//!   (one frame per request; a list is refused with 400).
//! - `…/instances/{i}/rendered`: the first frame (multi-frame instances are
//!   not returned as video or multipart). `…/instances/{i}/thumbnail`: the
//!   middle frame.
//! - `/studies/{s}/rendered`, `…/series/{se}/rendered` (PS3.18 10.4.3.3:
//!   the Target Resource is every instance): `multipart/related;
//!   type="image/jpeg"` (or png), one part per image instance (its first
//!   frame), series in UID order and instances by Instance Number, each
//!   part with its `Content-Location`. This is the answer to `*/*`, no
//!   Accept, or a multipart Accept. A client that accepts only a bare
//!   `image/jpeg` or `image/png` gets the first of those images alone, with
//!   `Content-Location` naming it.
//! - `/studies/{s}/thumbnail`: the middle instance of the first series;
//!   `…/series/{se}/thumbnail`: the middle instance of the series (middle
//!   frame when multi-frame).
//!
//! Instance and frame resources answer with a single image:
//! `multipart/related; type="image/jpeg"` (or png) is tolerated there and
//! answered with the bare image; a client that accepts neither image type
//! gets 406.
//!
//! Query parameters: `window=center,width[,linear|linear-exact|sigmoid]`,
//! `viewport=vw,vh` (fit inside, aspect kept; thumbnails default to
//! 128,128), `quality=1..100` (JPEG; default 90), `accept=` (overrides the
//! Accept header). `annotation`, `charset` and `iccprofile` are ignored;
//! the `viewport` source rectangle form (`vw,vh,sx,sy,sw,sh`) is refused.

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::{stream, StreamExt};
use imaging::render::{Media, RenderOptions, VoiFunction, Window, MAX_VIEWPORT};
use imaging::service::cache_key;
use pacs_core::records::InstanceRecord;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::metadata::{if_none_match, instance_in};
use crate::multipart::{closing, new_boundary, part_header};
use crate::negotiate::{accept, parse_media_type, MediaRange};
use crate::{parse_uid, AppState, RequestBase, Scoped};

type Params = Query<Vec<(String, String)>>;

/// Default JPEG quality when the request gives none.
pub(crate) const DEFAULT_QUALITY: u8 = 90;
/// Thumbnail viewport when the request gives none.
const THUMBNAIL_SIDE: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rendered,
    Thumbnail,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `window=center,width[,function]` (PS3.18 8.3.5.1.4).
fn parse_window(value: &str) -> ApiResult<Window> {
    let bad = || {
        ApiError::bad_request(format!(
            "window={value:?} is not center,width[,linear|linear-exact|sigmoid]"
        ))
    };
    let mut parts = value.split(',').map(str::trim);
    let center: f64 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let width: f64 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let function = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("linear") => VoiFunction::Linear,
        Some("linear-exact" | "linear_exact") => VoiFunction::LinearExact,
        Some("sigmoid") => VoiFunction::Sigmoid,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    let window = Window {
        center,
        width,
        function,
    };
    if !window.is_valid() {
        return Err(ApiError::bad_request(format!(
            "window width {width} is too small (LINEAR needs at least 1, the others more than 0)"
        )));
    }
    Ok(window)
}

fn parse_side(what: &str, value: &str) -> ApiResult<u32> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|v| (1..=MAX_VIEWPORT).contains(v))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} {value:?} is not an integer in 1..{MAX_VIEWPORT}"
            ))
        })
}

/// `viewport=vw,vh` (PS3.18 8.3.5.1.3); the source-rectangle form is not
/// supported.
fn parse_viewport(value: &str) -> ApiResult<(u32, u32)> {
    let parts: Vec<&str> = value.split(',').collect();
    match parts.as_slice() {
        [w, h] => Ok((parse_side("viewport width", w)?, parse_side("viewport height", h)?)),
        [_, _, _, _, _, _] => Err(ApiError::bad_request(
            "viewport with a source rectangle (vw,vh,sx,sy,sw,sh) is not supported; use viewport=vw,vh",
        )),
        _ => Err(ApiError::bad_request(format!(
            "viewport={value:?} is not vw,vh"
        ))),
    }
}

pub(crate) fn parse_quality(value: &str) -> ApiResult<u8> {
    value
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|q| (1..=100).contains(q))
        .ok_or_else(|| ApiError::bad_request(format!("quality {value:?} is not in 1..100")))
}

/// Whether the accepted media range allows a multipart payload (several
/// images: study and series rendered) or names a bare image type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `multipart/related; type="image/…"` or `*/*`.
    Multipart,
    /// `image/jpeg`, `image/png`, `image/*`: one image.
    Single,
}

/// The image type asked for by the `accept` query parameter or the Accept
/// header, in the client's order of preference.
fn negotiate(ranges: &[MediaRange], quality: u8) -> ApiResult<(Media, Form)> {
    let mut multipart = false;
    for r in ranges {
        let (asked, form) = if r.essence == "multipart/related" {
            multipart = true;
            // A multipart of one image is answered with the image itself.
            (
                r.param("type").map(str::to_ascii_lowercase),
                Form::Multipart,
            )
        } else if r.essence == "*/*" {
            (Some(r.essence.clone()), Form::Multipart)
        } else {
            (Some(r.essence.clone()), Form::Single)
        };
        match asked.as_deref() {
            Some("image/jpeg" | "image/*" | "*/*") => return Ok((Media::Jpeg { quality }, form)),
            Some("image/png") => return Ok((Media::Png, form)),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(if multipart {
        "rendered images are sent as a single image/jpeg or image/png, not as multipart \
         of other types"
    } else {
        "rendered images are available as image/jpeg (the default) or image/png"
    }))
}

/// Reads the request's options; thumbnails default to a 128×128 viewport.
fn options(
    params: &[(String, String)],
    headers: &HeaderMap,
    kind: Kind,
) -> ApiResult<(RenderOptions, Form)> {
    let quality = param(params, "quality")
        .map(parse_quality)
        .transpose()?
        .unwrap_or(DEFAULT_QUALITY);
    let ranges = match param(params, "accept") {
        Some(v) => {
            let ranges: Vec<MediaRange> = v.split(',').filter_map(parse_media_type).collect();
            if ranges.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "accept={v:?} is not a media type"
                )));
            }
            ranges
        }
        None => accept(headers),
    };
    let (media, form) = negotiate(&ranges, quality)?;
    let window = param(params, "window").map(parse_window).transpose()?;
    let viewport = param(params, "viewport").map(parse_viewport).transpose()?;
    let viewport = match (viewport, kind) {
        (None, Kind::Thumbnail) => Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)),
        (v, _) => v,
    };
    Ok((
        RenderOptions {
            media,
            window,
            viewport,
        },
        form,
    ))
}

fn parse_frame_number(value: &str) -> ApiResult<u32> {
    if value.contains(',') {
        return Err(ApiError::bad_request(
            "rendered and thumbnail resources take one frame number, not a list",
        ));
    }
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request(format!("frame number {value:?} is not 1 or more")))
}

fn frames_of(record: &InstanceRecord) -> u32 {
    record.number_of_frames.unwrap_or(1).max(1)
}

fn middle_frame(record: &InstanceRecord) -> u32 {
    frames_of(record) / 2 + 1
}

/// Image instances (those with Rows), by series UID then Instance Number.
fn image_instances(mut records: Vec<InstanceRecord>) -> Vec<InstanceRecord> {
    records.retain(|r| r.rows.is_some() && r.columns.is_some());
    let num = |s: &str| s.trim().parse::<i64>().unwrap_or(i64::MAX);
    records.sort_by(|a, b| {
        (
            a.series_instance_uid.as_str(),
            num(&a.instance_number),
            a.sop_instance_uid.as_str(),
        )
            .cmp(&(
                b.series_instance_uid.as_str(),
                num(&b.instance_number),
                b.sop_instance_uid.as_str(),
            ))
    });
    records
}

/// The middle image instance of the first series in `records`.
fn representative(records: Vec<InstanceRecord>) -> Option<InstanceRecord> {
    let records = image_instances(records);
    let first_series = records.first()?.series_instance_uid.clone();
    let series: Vec<InstanceRecord> = records
        .into_iter()
        .filter(|r| r.series_instance_uid == first_series)
        .collect();
    series.get(series.len() / 2).cloned()
}

fn no_images(what: String) -> ApiError {
    ApiError::not_found(format!("{what} has no image instances to render"))
}

/// Renders `frame` of `record` and builds the response (ETag from the
/// object's hash and the options; 304 on a matching If-None-Match).
pub(crate) async fn respond(
    st: &AppState,
    headers: &HeaderMap,
    record: &InstanceRecord,
    frame: u32,
    opts: RenderOptions,
    location: Option<String>,
) -> ApiResult<Response> {
    let etag = hex::encode(&Sha256::digest(cache_key(record, frame, &opts).as_bytes())[..16]);
    let cache = format!("private, max-age={}", st.config.content_max_age_secs);
    if if_none_match(headers, &etag) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, format!("\"{etag}\""))
            .header(header::CACHE_CONTROL, cache)
            .header(header::VARY, "Accept")
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let rendered = st.renderer.render(&st.archive, record, frame, opts).await?;
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, rendered.media_type)
        .header(header::ETAG, format!("\"{etag}\""))
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "Accept");
    if let Some(location) = location {
        builder = builder.header(header::CONTENT_LOCATION, location);
    }
    builder
        .body(Body::from(rendered.bytes.clone()))
        .map_err(ApiError::internal)
}

/// Renders of a study or series (PS3.18 10.4.3.3): a
/// `multipart/related` body with one part per image instance (its first
/// frame, as the instance's rendered resource shows), in series then
/// Instance Number order, each with its `Content-Location`. The first image
/// is rendered before answering, so a refusal is a proper status; later
/// instances that cannot be rendered (406 reasons) are left out and logged,
/// and any other failure ends the stream.
async fn respond_multipart(
    st: &AppState,
    base: &RequestBase,
    images: Vec<InstanceRecord>,
    opts: RenderOptions,
) -> ApiResult<Response> {
    let boundary = new_boundary();
    let media_type = opts.media.media_type();
    let first = st.renderer.render(&st.archive, &images[0], 1, opts).await?;
    let location = |r: &InstanceRecord| frame_location(base, r, 1, Kind::Rendered);
    let first_part = (location(&images[0]), first);
    let rest: Vec<(InstanceRecord, String)> = images
        .into_iter()
        .skip(1)
        .map(|r| {
            let l = location(&r);
            (r, l)
        })
        .collect();
    let st2 = st.clone();
    let later = stream::iter(rest)
        .map(move |(record, location)| {
            let st = st2.clone();
            async move {
                match st.renderer.render(&st.archive, &record, 1, opts).await {
                    Ok(r) => Ok(Some((location, r))),
                    Err(e) if e.status == StatusCode::NOT_ACCEPTABLE => {
                        tracing::info!(sop = %record.sop_instance_uid, reason = %e.message, "instance left out of a rendered study/series");
                        Ok(None)
                    }
                    Err(e) => {
                        tracing::warn!(sop = %record.sop_instance_uid, status = %e.status, reason = %e.message, "rendering failed mid-response");
                        Err(std::io::Error::other("an instance could not be rendered"))
                    }
                }
            }
        })
        .buffered(2);
    let close = closing(&boundary, true);
    let bound = boundary.clone();
    let body = stream::iter([Ok::<_, std::io::Error>(Some(first_part))])
        .chain(later)
        .enumerate()
        .flat_map(move |(i, part)| {
            let chunks: Vec<Result<Bytes, std::io::Error>> = match part {
                Ok(Some((location, rendered))) => vec![
                    Ok(part_header(&bound, i == 0, media_type, Some(&location))),
                    Ok(Bytes::copy_from_slice(&rendered.bytes)),
                ],
                Ok(None) => Vec::new(),
                Err(e) => vec![Err(e)],
            };
            stream::iter(chunks)
        })
        .chain(stream::once(async move { Ok(close) }));
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media_type}\"; boundary={boundary}"),
        )
        .header(
            header::CACHE_CONTROL,
            format!("private, max-age={}", st.config.content_max_age_secs),
        )
        .header(header::VARY, "Accept")
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

fn frame_location(base: &RequestBase, r: &InstanceRecord, frame: u32, kind: Kind) -> String {
    let leaf = match kind {
        Kind::Rendered => "rendered",
        Kind::Thumbnail => "thumbnail",
    };
    format!(
        "{}/studies/{}/series/{}/instances/{}/frames/{frame}/{leaf}",
        base.prefix, r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid
    )
}

async fn study_level(
    st: AppState,
    study: String,
    base: RequestBase,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    kind: Kind,
) -> ApiResult<Response> {
    let (opts, form) = options(&params, &headers, kind)?;
    let study = parse_uid("StudyInstanceUID", &study)?;
    let records = st.archive.instances_of_study(&study).await?;
    if records.is_empty() {
        return Err(ApiError::not_found(format!("study {study} not found")));
    }
    let (record, frame) = match kind {
        Kind::Rendered if form == Form::Multipart => {
            let images = image_instances(records);
            if images.is_empty() {
                return Err(no_images(format!("study {study}")));
            }
            return respond_multipart(&st, &base, images, opts).await;
        }
        Kind::Rendered => {
            let r = image_instances(records).into_iter().next();
            (r.ok_or_else(|| no_images(format!("study {study}")))?, 1)
        }
        Kind::Thumbnail => {
            let r = representative(records).ok_or_else(|| no_images(format!("study {study}")))?;
            let f = middle_frame(&r);
            (r, f)
        }
    };
    let location = frame_location(&base, &record, frame, kind);
    respond(&st, &headers, &record, frame, opts, Some(location)).await
}

async fn series_level(
    st: AppState,
    (study, series): (String, String),
    base: RequestBase,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    kind: Kind,
) -> ApiResult<Response> {
    let (opts, form) = options(&params, &headers, kind)?;
    let study = parse_uid("StudyInstanceUID", &study)?;
    let series = parse_uid("SeriesInstanceUID", &series)?;
    let records: Vec<InstanceRecord> = st
        .archive
        .instances_of_series(&series)
        .await?
        .into_iter()
        .filter(|r| r.study_instance_uid == study)
        .collect();
    let what = format!("series {series} in study {study}");
    if records.is_empty() {
        return Err(ApiError::not_found(format!("{what} not found")));
    }
    let (record, frame) = match kind {
        Kind::Rendered if form == Form::Multipart => {
            let images = image_instances(records);
            if images.is_empty() {
                return Err(no_images(what));
            }
            return respond_multipart(&st, &base, images, opts).await;
        }
        Kind::Rendered => {
            let r = image_instances(records).into_iter().next();
            (r.ok_or_else(|| no_images(what))?, 1)
        }
        Kind::Thumbnail => {
            let r = representative(records).ok_or_else(|| no_images(what))?;
            let f = middle_frame(&r);
            (r, f)
        }
    };
    let location = frame_location(&base, &record, frame, kind);
    respond(&st, &headers, &record, frame, opts, Some(location)).await
}

async fn instance_level(
    st: AppState,
    (study, series, instance): (String, String, String),
    frame: Option<String>,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    kind: Kind,
) -> ApiResult<Response> {
    let (opts, _) = options(&params, &headers, kind)?;
    let frame = frame.as_deref().map(parse_frame_number).transpose()?;
    let record = instance_in(&st, &study, &series, &instance).await?;
    let frame = match (frame, kind) {
        (Some(n), _) => {
            if n > frames_of(&record) {
                return Err(ApiError::not_found(format!(
                    "frame {n} does not exist (the instance has {} frame(s))",
                    frames_of(&record)
                )));
            }
            n
        }
        (None, Kind::Rendered) => 1,
        (None, Kind::Thumbnail) => middle_frame(&record),
    };
    respond(&st, &headers, &record, frame, opts, None).await
}

pub async fn study_rendered(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    study_level(st, study, base, params, headers, Kind::Rendered).await
}

pub async fn study_thumbnail(
    Scoped(st): Scoped,
    Path(study): Path<String>,
    base: RequestBase,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    study_level(st, study, base, params, headers, Kind::Thumbnail).await
}

pub async fn series_rendered(
    Scoped(st): Scoped,
    Path(path): Path<(String, String)>,
    base: RequestBase,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    series_level(st, path, base, params, headers, Kind::Rendered).await
}

pub async fn series_thumbnail(
    Scoped(st): Scoped,
    Path(path): Path<(String, String)>,
    base: RequestBase,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    series_level(st, path, base, params, headers, Kind::Thumbnail).await
}

pub async fn instance_rendered(
    Scoped(st): Scoped,
    Path(path): Path<(String, String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    instance_level(st, path, None, params, headers, Kind::Rendered).await
}

pub async fn instance_thumbnail(
    Scoped(st): Scoped,
    Path(path): Path<(String, String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    instance_level(st, path, None, params, headers, Kind::Thumbnail).await
}

pub async fn frame_rendered(
    Scoped(st): Scoped,
    Path((s, se, i, f)): Path<(String, String, String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    instance_level(st, (s, se, i), Some(f), params, headers, Kind::Rendered).await
}

pub async fn frame_thumbnail(
    Scoped(st): Scoped,
    Path((s, se, i, f)): Path<(String, String, String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    instance_level(st, (s, se, i), Some(f), params, headers, Kind::Thumbnail).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ranges(v: &str) -> Vec<MediaRange> {
        v.split(',').filter_map(parse_media_type).collect()
    }

    #[test]
    fn parameters() {
        let w = parse_window("40,400").unwrap();
        assert_eq!(
            (w.center, w.width, w.function),
            (40.0, 400.0, VoiFunction::Linear)
        );
        let w = parse_window("-600, 1500, SIGMOID").unwrap();
        assert_eq!(w.function, VoiFunction::Sigmoid);
        assert_eq!(
            parse_window("0,2,linear-exact").unwrap().function,
            VoiFunction::LinearExact
        );
        for bad in [
            "",
            "40",
            "a,b",
            "40,0",
            "40,0.5",
            "40,400,cubic",
            "1,2,linear,4",
            "NaN,4",
        ] {
            assert_eq!(parse_window(bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(parse_viewport("64,32").unwrap(), (64, 32));
        for bad in ["64", "0,64", "64,x", "99999,1", "1,2,3"] {
            assert_eq!(parse_viewport(bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(parse_viewport("64,64,0,0,10,10").unwrap_err().status, 400);
        assert_eq!(parse_quality("75").unwrap(), 75);
        for bad in ["0", "101", "x", "-1"] {
            assert!(parse_quality(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_frame_number("3").unwrap(), 3);
        assert!(parse_frame_number("0").is_err());
        assert!(parse_frame_number("1,2").is_err());
    }

    #[test]
    fn media_negotiation() {
        let jpeg = Media::Jpeg { quality: 80 };
        assert_eq!(
            negotiate(&ranges("*/*"), 80).unwrap(),
            (jpeg, Form::Multipart)
        );
        assert_eq!(
            negotiate(&ranges("image/png"), 80).unwrap(),
            (Media::Png, Form::Single)
        );
        assert_eq!(
            negotiate(&ranges("image/gif, image/png"), 80).unwrap(),
            (Media::Png, Form::Single)
        );
        assert_eq!(
            negotiate(&ranges("image/*"), 80).unwrap(),
            (jpeg, Form::Single)
        );
        assert_eq!(
            negotiate(&ranges("multipart/related; type=\"image/png\""), 80).unwrap(),
            (Media::Png, Form::Multipart)
        );
        assert_eq!(negotiate(&ranges("image/gif"), 80).unwrap_err().status, 406);
        assert_eq!(
            negotiate(&ranges("application/dicom"), 80)
                .unwrap_err()
                .status,
            406
        );
    }
}
