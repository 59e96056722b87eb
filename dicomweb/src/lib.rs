//! DICOMweb (PS3.18) origin server of Sen PACS, as axum routers.
//!
//! It serves QIDO-RS (search), WADO-RS (metadata, instances, frames, bulk
//! data), STOW-RS (store) and WADO-URI, over [`pacs_core::Archive`]:
//! DICOM JSON assembled from the metadata built at ingest (BulkDataURIs
//! rewritten to absolute paths), `multipart/related` read (with `multer`)
//! and written as streams, content negotiation that accepts what viewers
//! send.
//!
//! Rendered and thumbnail resources (and WADO-URI `image/jpeg`) and
//! conversions between transfer syntaxes run in the server's one
//! pixel-work service, [`imaging::service::PixelService`] (bounded in
//! concurrency and memory together with DIMSE's conversions, renders
//! cached), given in [`DicomWebConfig::pixel`].
//!
//! Non-goals: it reaches data only through [`pacs_core::Archive`] and knows
//! nothing of PDUs. An explicit request for another transfer syntax than
//! the stored one is converted by `imaging::transcode` when it can be
//! (uncompressed, RLE Lossless, JPEG Lossless, JPEG Baseline for 8-bit
//! data; instances and frames), and answered 406 otherwise (see
//! CONFORMANCE.md).

#![forbid(unsafe_code)]

mod error;
mod metadata;
mod multipart;
mod negotiate;
mod pixel;
mod qido;
mod render_service;
mod rendered;
mod retrieve;
mod stow;
mod stow_budget;
mod stow_meta;
mod wado_uri;
mod xml;
mod zip;

use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use imaging::service::PixelService;
use pacs_core::access::StudyScope;
use pacs_core::{Archive, Principal, Uid};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

/// Settings of the DICOMweb service.
#[derive(Debug, Clone)]
pub struct DicomWebConfig {
    /// Most results one QIDO-RS response returns (the client's `limit` is
    /// capped to it; a `Warning` header says when results were cut).
    pub max_qido_limit: usize,
    /// Largest STOW-RS request body; `None` = the archive's
    /// `Limits::max_http_body`.
    pub max_stow_body: Option<u64>,
    /// Origins allowed by CORS; empty = CORS off (no headers sent). `"*"`
    /// allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// `max-age` of instance content (instances, frames, bulk data).
    /// Content can change when an instance is stored again with the same
    /// SOP Instance UID, so it is never `immutable`; the ETag (the
    /// object's SHA-256) lets caches revalidate.
    pub content_max_age_secs: u64,
    /// The server's pixel-work service (renders and conversions, shared
    /// with DIMSE and between [`router`] and [`wado_uri_router`]: pass the
    /// same one to both). `None`: the router builds one of its own from
    /// the archive's limits, with a render cache of `render_cache_bytes`.
    pub pixel: Option<Arc<PixelService>>,
    /// Size cap of the in-memory cache of rendered images of a service
    /// built by the router (see `pixel`).
    pub render_cache_bytes: usize,
    /// Largest stored instance that is rendered (406 beyond).
    pub max_render_object_bytes: u64,
}

impl Default for DicomWebConfig {
    fn default() -> Self {
        DicomWebConfig {
            max_qido_limit: 1000,
            max_stow_body: None,
            cors_allowed_origins: Vec::new(),
            content_max_age_secs: 3600,
            pixel: None,
            render_cache_bytes: 64 * 1024 * 1024,
            max_render_object_bytes: 512 * 1024 * 1024,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub archive: Archive,
    pub config: Arc<DicomWebConfig>,
    pub renderer: Arc<render_service::RenderService>,
    /// Bytes of STOW-RS parts in memory, across requests.
    pub stow_budget: stow_budget::StowBudget,
}

impl AppState {
    fn new(archive: Archive, config: DicomWebConfig) -> AppState {
        let pixel = config.pixel.clone().unwrap_or_else(|| {
            Arc::new(PixelService::new(
                archive.limits(),
                config.render_cache_bytes,
            ))
        });
        let renderer = Arc::new(render_service::RenderService::new(
            pixel,
            config.max_render_object_bytes,
        ));
        let stow_budget = stow_budget::StowBudget::new(archive.limits().stow_bytes_in_flight);
        AppState {
            archive,
            config: Arc::new(config),
            renderer,
            stow_budget,
        }
    }

    pub fn max_stow_body(&self) -> u64 {
        self.config
            .max_stow_body
            .unwrap_or(self.archive.limits().max_http_body)
    }
}

/// The shared state, with the archive confined to the study scope of the
/// request's principal (a share link, a partner hospital): every read
/// handler takes it, so a study outside the scope is not found by any of
/// them (design piece 4). Without a principal (no access layer in front)
/// the archive is not confined.
pub(crate) struct Scoped(pub AppState);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut st = state.clone();
        if let Some(p) = parts.extensions.get::<Principal>() {
            if p.scope != StudyScope::All {
                st.archive = st.archive.scoped(p.scope.clone());
            }
        }
        Ok(Scoped(st))
    }
}

/// The DICOMweb router, to be nested (the binary mounts it at
/// `/dicom-web`). URIs it writes (RetrieveURL, BulkDataURI) follow the
/// prefix it is mounted under.
pub fn router(archive: pacs_core::Archive, config: DicomWebConfig) -> Router {
    let cors = cors_layer(&config.cors_allowed_origins);
    let state = AppState::new(archive, config);
    let instance = "/studies/{study}/series/{series}/instances/{instance}";
    let router = Router::new()
        .route("/studies", get(qido::studies).post(stow::store))
        .route("/series", get(qido::series))
        .route("/instances", get(qido::instances))
        .route(
            "/studies/{study}",
            get(retrieve::study).post(stow::store_in_study),
        )
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route("/studies/{study}/metadata", get(metadata::study))
        .route("/studies/{study}/series/{series}", get(retrieve::series))
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(metadata::series),
        )
        .route(instance, get(retrieve::instance))
        .route(&format!("{instance}/metadata"), get(metadata::instance))
        .route(
            &format!("{instance}/frames/{{frames}}"),
            get(retrieve::frames),
        )
        .route(
            &format!("{instance}/bulkdata/{{tag}}"),
            get(retrieve::bulkdata),
        )
        .route("/studies/{study}/rendered", get(rendered::study_rendered))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route(
            "/studies/{study}/series/{series}/rendered",
            get(rendered::series_rendered),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        )
        .route(
            &format!("{instance}/rendered"),
            get(rendered::instance_rendered),
        )
        .route(
            &format!("{instance}/thumbnail"),
            get(rendered::instance_thumbnail),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/rendered"),
            get(rendered::frame_rendered),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/thumbnail"),
            get(rendered::frame_thumbnail),
        )
        .fallback(unknown_resource)
        .with_state(state)
        // STOW-RS bodies are streamed and limited by the handler itself.
        .layer(axum::extract::DefaultBodyLimit::disable());
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The WADO-URI router (PS3.18 9), to be merged at the root: it answers
/// `GET /wado`. Give it the same [`DicomWebConfig::pixel`] as [`router`],
/// so that both share one bound on pixel work.
pub fn wado_uri_router(archive: pacs_core::Archive, config: DicomWebConfig) -> Router {
    Router::new()
        .route("/wado", get(wado_uri::wado))
        .with_state(AppState::new(archive, config))
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::ACCEPT,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                header::RANGE,
                header::AUTHORIZATION,
            ])
            .expose_headers([
                header::ETAG,
                header::WARNING,
                header::CONTENT_LOCATION,
                header::CONTENT_RANGE,
                header::CONTENT_DISPOSITION,
            ]),
    )
}

async fn unknown_resource() -> impl IntoResponse {
    ApiError::not_found("no such DICOMweb resource (see CONFORMANCE.md for the supported ones)")
}

/// Validates a UID from the request path or query.
pub(crate) fn parse_uid(what: &str, value: &str) -> Result<Uid, ApiError> {
    Uid::parse(value)
        .map_err(|e| ApiError::bad_request(format!("{what} {value:?} is not a valid UID: {e}")))
}

/// Where the request came in: the path prefix the router is mounted under
/// and the origin (`http://host`) for absolute URLs.
#[derive(Debug, Clone)]
pub(crate) struct RequestBase {
    /// Path prefix, e.g. `/dicom-web` (empty when not nested).
    pub prefix: String,
    /// `scheme://host` from the Host header, or empty when absent or odd.
    pub origin: String,
}

impl RequestBase {
    /// The service root, e.g. `http://host/dicom-web`.
    pub fn root(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path().to_owned();
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.path().to_owned())
            .unwrap_or_else(|| inner.clone());
        let prefix = original
            .strip_suffix(inner.as_str())
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
            });
        let scheme = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http");
        let origin = host.map(|h| format!("{scheme}://{h}")).unwrap_or_default();
        Ok(RequestBase { prefix, origin })
    }
}
