//! WADO-URI (PS3.18 9): `GET /wado?requestType=WADO&studyUID=..&seriesUID=..
//! &objectUID=..&contentType=..`. `application/dicom` is the stored object
//! in the syntax `transferSyntax` names when it can be converted, else in
//! Explicit VR Little Endian (PS3.18 8.2.11), except pixel data held only
//! in lossy or undecodable form, sent as stored; `image/jpeg` (the default) and `image/png` are one rendered
//! frame (`frameNumber`, default 1) with `windowCenter`/`windowWidth`,
//! `rows`/`columns` (fit inside, aspect kept) and `imageQuality` mapped to
//! the options of the rendered resources. `region`, `presentationUID` and
//! the other rendered types (GIF, MPEG...) are refused; `annotation` and
//! `charset` are ignored. `contentType` is a list in order of preference.

use axum::body::Body;
use axum::extract::Query;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures::TryStreamExt;
use imaging::render::{Media, RenderOptions, VoiFunction, Window, MAX_VIEWPORT};

use crate::error::{ApiError, ApiResult};
use crate::metadata::instance_in;
use crate::negotiate::default_target;
use crate::retrieve::converted;
use crate::Scoped;

enum Chosen {
    Dicom,
    /// A rendered image; `true` for PNG.
    Image(bool),
}

/// Rendering options from the WADO-URI parameters (PS3.18 9.1.x).
fn image_options<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    png: bool,
) -> ApiResult<RenderOptions> {
    for refused in ["region", "presentationUID", "presentationSeriesUID"] {
        if get(refused).is_some() {
            return Err(ApiError::bad_request(format!(
                "{refused} is not supported for rendered images"
            )));
        }
    }
    let quality = get("imageQuality")
        .map(crate::rendered::parse_quality)
        .transpose()?
        .unwrap_or(crate::rendered::DEFAULT_QUALITY);
    let number = |name: &str| -> ApiResult<Option<f64>> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| ApiError::bad_request(format!("{name} {v:?} is not a number")))
            })
            .transpose()
    };
    let window = match (number("windowCenter")?, number("windowWidth")?) {
        (Some(center), Some(width)) => {
            let w = Window {
                center,
                width,
                function: VoiFunction::Linear,
            };
            if !w.is_valid() {
                return Err(ApiError::bad_request("windowWidth must be at least 1"));
            }
            Some(w)
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "windowCenter and windowWidth go together",
            ))
        }
    };
    let side = |name: &str| -> ApiResult<Option<u32>> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_VIEWPORT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{name} {v:?} is not in 1..{MAX_VIEWPORT}"))
                    })
            })
            .transpose()
    };
    // Only one of rows / columns: the other side is free (aspect kept).
    let viewport = match (side("columns")?, side("rows")?) {
        (None, None) => None,
        (w, h) => Some((w.unwrap_or(MAX_VIEWPORT), h.unwrap_or(MAX_VIEWPORT))),
    };
    Ok(RenderOptions {
        media: if png {
            Media::Png
        } else {
            Media::Jpeg { quality }
        },
        window,
        viewport,
    })
}

pub async fn wado(
    Scoped(st): Scoped,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("requestType") != Some("WADO") {
        return Err(ApiError::bad_request("requestType=WADO is required"));
    }
    let (Some(study), Some(series), Some(object)) =
        (get("studyUID"), get("seriesUID"), get("objectUID"))
    else {
        return Err(ApiError::bad_request(
            "studyUID, seriesUID and objectUID are required",
        ));
    };
    let content_type = get("contentType").unwrap_or("image/jpeg");
    let chosen = content_type.split(',').find_map(|t| {
        let t = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match t.as_str() {
            "application/dicom" => Some(Chosen::Dicom),
            "image/jpeg" | "image/*" | "*/*" => Some(Chosen::Image(false)),
            "image/png" => Some(Chosen::Image(true)),
            _ => None,
        }
    });
    let Some(chosen) = chosen else {
        return Err(ApiError::not_acceptable(format!(
            "contentType {content_type} is not supported: ask application/dicom, \
             image/jpeg or image/png"
        )));
    };
    if let Chosen::Image(png) = chosen {
        let opts = image_options(&get, png)?;
        let frame = match get("frameNumber") {
            Some(f) => f
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("frameNumber {f:?} is not 1 or more"))
                })?,
            None => 1,
        };
        let record = instance_in(&st, study, series, object).await?;
        let frames = record.number_of_frames.unwrap_or(1).max(1);
        if frame > frames {
            return Err(ApiError::not_found(format!(
                "frame {frame} does not exist (the instance has {frames} frame(s))"
            )));
        }
        return crate::rendered::respond(&st, &headers, &record, frame, opts, None).await;
    }
    let record = instance_in(&st, study, series, object).await?;
    let stored = record.transfer_syntax_uid.as_str();
    let asked = get("transferSyntax");
    if let Some(ts) = asked.filter(|ts| *ts != "*") {
        // PS3.18 9.4.2.4: not a UID is 400 (a UID the archive cannot
        // produce falls back to Explicit VR LE below).
        crate::parse_uid("transferSyntax", ts)?;
    }
    // `*` (a common extension) or the stored syntax: as stored.
    if !asked.is_some_and(|ts| ts == "*" || ts == stored) {
        let targets = asked
            .filter(|ts| imaging::transcode::can_transcode(stored, ts))
            .into_iter()
            .chain(default_target(stored).filter(|d| asked != Some(*d)));
        for ts in targets {
            match converted(&st, &record, ts).await {
                Ok(bytes) => return dicom_file(&record.sop_instance_uid, Body::from(bytes), None),
                Err(e) => {
                    tracing::info!(sop = %record.sop_instance_uid, syntax = ts, error = %e.message, "WADO-URI: not converted")
                }
            }
        }
    }
    let (record, blob) = st.archive.retrieve(&record.sop_instance_uid).await?;
    dicom_file(
        &record.sop_instance_uid,
        Body::from_stream(blob.map_err(std::io::Error::other)),
        Some(record.size),
    )
}

/// A Part 10 file as the WADO-URI answer.
fn dicom_file(sop: &pacs_core::Uid, body: Body, len: Option<u64>) -> ApiResult<Response> {
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "application/dicom");
    if let Some(len) = len {
        builder = builder.header(header::CONTENT_LENGTH, len);
    }
    builder
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{sop}.dcm\""),
        )
        .body(body)
        .map_err(ApiError::internal)
}
