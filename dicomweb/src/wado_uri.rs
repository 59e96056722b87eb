//! WADO-URI (PS3.18 9): `GET /wado?requestType=WADO&studyUID=..&seriesUID=..
//! &objectUID=..&contentType=..`. `application/dicom` is the stored object,
//! as stored; `image/jpeg` (the default) and `image/png` are one rendered
//! frame (`frameNumber`, default 1) with `windowCenter`/`windowWidth`,
//! `rows`/`columns` (fit inside, aspect kept) and `imageQuality` mapped to
//! the options of the rendered resources. `region`, `presentationUID` and
//! the other rendered types (GIF, MPEG...) are refused; `annotation` and
//! `charset` are ignored. `contentType` is a list in order of preference.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures::TryStreamExt;
use imaging::render::{Media, RenderOptions, VoiFunction, Window, MAX_VIEWPORT};

use crate::error::{ApiError, ApiResult};
use crate::metadata::instance_in;
use crate::AppState;

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
    State(st): State<AppState>,
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
    if let Some(ts) = get("transferSyntax") {
        if ts != "*" && ts != record.transfer_syntax_uid {
            return Err(ApiError::not_acceptable(format!(
                "transcoding is not supported: the object is stored as {}",
                record.transfer_syntax_uid
            )));
        }
    }
    let (record, blob) = st.archive.retrieve(&record.sop_instance_uid).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/dicom")
        .header(header::CONTENT_LENGTH, record.size)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.dcm\"", record.sop_instance_uid),
        )
        .body(Body::from_stream(blob.map_err(std::io::Error::other)))
        .map_err(ApiError::internal)
}
