//! The DICOMweb face of [`imaging::service::PixelService`], the server's
//! one pixel-work service: renders (rendered, thumbnail, WADO-URI images)
//! and conversions between transfer syntaxes (WADO-RS, WADO-URI) run there,
//! bounded together with DIMSE's conversions; this module maps its
//! refusals to HTTP statuses (busy: 503; cannot or will not: 406).

use std::sync::Arc;

use imaging::render::{RenderError, RenderOptions, Rendered};
use imaging::service::{PixelError, PixelService};
use pacs_core::records::InstanceRecord;

use crate::error::{ApiError, ApiResult};

pub(crate) struct RenderService {
    pixel: Arc<PixelService>,
    max_object_bytes: u64,
}

impl RenderService {
    pub fn new(pixel: Arc<PixelService>, max_object_bytes: u64) -> RenderService {
        RenderService {
            pixel,
            max_object_bytes,
        }
    }

    /// Renders `frame` of `record`, from the cache when possible.
    pub async fn render(
        &self,
        archive: &pacs_core::Archive,
        record: &InstanceRecord,
        frame: u32,
        opts: RenderOptions,
    ) -> ApiResult<Arc<Rendered>> {
        if record.size > self.max_object_bytes {
            return Err(ApiError::not_acceptable(format!(
                "the instance is too large to render ({} bytes; the limit is {})",
                record.size, self.max_object_bytes
            )));
        }
        self.pixel
            .render(archive, record, frame, opts)
            .await
            .map_err(|e| pixel_error(e, &record.sop_instance_uid, "render"))
    }

    /// `record` as a Part 10 file in transfer syntax `ts`, under the same
    /// bound as renders. A refusal is a 406 with the reason.
    pub async fn transcode(
        &self,
        archive: &pacs_core::Archive,
        record: &InstanceRecord,
        ts: &str,
    ) -> ApiResult<Vec<u8>> {
        if record.size > self.max_object_bytes {
            return Err(ApiError::not_acceptable(format!(
                "the instance is too large to convert ({} bytes; the limit is {}); ask for \
                 transfer-syntax=* to get it as stored",
                record.size, self.max_object_bytes
            )));
        }
        self.pixel
            .convert_part10(archive, record, ts)
            .await
            .map_err(|e| pixel_error(e, &record.sop_instance_uid, "convert"))
    }
}

/// The one mapping of pixel-work failures to HTTP statuses.
fn pixel_error(e: PixelError, sop: &pacs_core::Uid, what: &str) -> ApiError {
    match e {
        PixelError::Busy => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy with image work; try again later",
        ),
        PixelError::TooLarge(reason) => {
            ApiError::not_acceptable(format!("cannot {what} this instance: {reason}"))
        }
        PixelError::Archive(e) => e.into(),
        PixelError::Transcode(e) => {
            tracing::debug!(%sop, error = %e, "instance not converted");
            ApiError::not_acceptable(format!("cannot convert this instance: {e}"))
        }
        PixelError::Render(e) => match e {
            RenderError::Unsupported { .. }
            | RenderError::NoPixelData
            | RenderError::Malformed { .. } => {
                tracing::debug!(%sop, error = %e, "instance not rendered");
                ApiError::not_acceptable(format!(
                    "{e}; retrieve the instance or its frames instead"
                ))
            }
            RenderError::FrameOutOfRange { .. } => ApiError::not_found(e.to_string()),
            RenderError::InvalidOptions { .. } => ApiError::bad_request(e.to_string()),
            RenderError::Encode { .. } => ApiError::internal(e),
        },
    }
}
