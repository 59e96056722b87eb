//! The browser viewer of Sen PACS and the small service that serves it.
//!
//! This crate will embed the built viewer assets (TypeScript, Cornerstone3D,
//! built with Vite) and serve them with an SPA fallback. The viewer talks only
//! to the DICOMweb API and the project's own small JSON endpoints.
//!
//! Status: not built yet. `/` serves a plain page saying so and pointing at
//! the health and stats endpoints.

use axum::{response::Html, routing::get, Router};

/// The router for `/`: a placeholder page until the viewer exists.
pub fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sen PACS</title></head>\
<body><h1>Sen PACS</h1><p>The archive is running. The browser viewer is not built yet.</p>\
<p><a href=\"/healthz\">/healthz</a> &middot; <a href=\"/api/stats\">/api/stats</a></p></body></html>",
    )
}
