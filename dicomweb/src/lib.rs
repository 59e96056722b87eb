//! DICOMweb (PS3.18) origin server of Sen PACS, as an axum router.
//!
//! This crate will own QIDO-RS, WADO-RS (metadata, frames, bulkdata, rendered,
//! thumbnail), STOW-RS and WADO-URI: DICOM JSON with BulkDataURI,
//! multipart/related reading and writing, content negotiation.
//!
//! Non-goals: it reaches data only through [`pacs_core::Archive`] and knows
//! nothing of PDUs.
//!
//! Status: not built yet. Every route under `/dicom-web` answers
//! `501 Not Implemented`; CONFORMANCE.md lists DICOMweb as not supported.

use axum::{http::StatusCode, response::IntoResponse, Router};

/// The `/dicom-web` router. Until the DICOMweb services exist it refuses every
/// request with 501, so a client learns at once that the service is missing.
pub fn router() -> Router {
    Router::new().fallback(not_implemented)
}

async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        "DICOMweb is not supported yet by this server (see CONFORMANCE.md)\n",
    )
}
