//! WADO-URI (PS3.18 9): `GET /wado?requestType=WADO&studyUID=..&seriesUID=..
//! &objectUID=..&contentType=application/dicom`. Only `application/dicom`
//! is served (the stored object, as stored); the default `image/jpeg` and
//! other rendered types answer 406 until rendering exists.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use futures::TryStreamExt;

use crate::error::{ApiError, ApiResult};
use crate::metadata::instance_in;
use crate::AppState;

pub async fn wado(
    State(st): State<AppState>,
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
    let wants_dicom = content_type
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("application/dicom"));
    if !wants_dicom {
        return Err(ApiError::not_acceptable(format!(
            "contentType {content_type} is not supported: rendered images are not built yet; \
             ask contentType=application/dicom"
        )));
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
