//! The browser viewer of Sen PACS and the small service that serves it.
//!
//! The viewer is a TypeScript app on Cornerstone3D (`app/`), built with Vite
//! by `build.rs` and embedded in the binary ([`assets`]). [`router`] serves
//! it with an SPA fallback, and answers the launch links of EMRs: the
//! OHIF-compatible `/viewer?StudyInstanceUIDs=...` (a page of the app) and
//! IHE Invoke Image Display (`/IHEInvokeImageDisplay`, RAD-106), which looks
//! the studies up in the archive and redirects into the viewer ([`iid`]).

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pacs_core::{Archive, Uid};

pub mod assets;
pub mod hanging;
pub mod iid;

pub use assets::{Asset, ASSETS, BUNDLE_BYTES, BUNDLE_GZIP_BYTES};

/// Paths owned by the API: never answered with the app's page.
const API_PREFIXES: &[&str] = &[
    "/dicom-web",
    "/wado",
    "/api",
    "/healthz",
    "/IHEInvokeImageDisplay",
];

/// The router of the viewer: `/`, `/viewer`, `/assets/*`, the app's other
/// static files, `/IHEInvokeImageDisplay`, and a fallback that answers
/// browser navigations (GET accepting `text/html`) with the app's page.
pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/viewer", get(reader_page))
        .route("/IHEInvokeImageDisplay", get(iid::invoke_image_display))
        .with_state(archive)
        .fallback(fallback)
}

async fn index(headers: HeaderMap) -> Response {
    match assets::find("/index.html") {
        Some(a) => serve(a, &headers),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the viewer build has no index.html",
        )
            .into_response(),
    }
}

/// The reading view's page: the app's page plus preload links for the
/// reader's code (`viewer.html`, written by `app/vite-viewer-page.ts`), so a
/// cold browser fetches it in parallel with the entry script; see
/// [`with_study_preloads`] for the study's own first requests.
async fn reader_page(uri: Uri, headers: HeaderMap) -> Response {
    let Some(a) = assets::find("/viewer.html") else {
        return index(headers).await;
    };
    match first_study(uri.query()).and_then(|uid| with_study_preloads(a.body, &uid)) {
        Some(page) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            (h, page).into_response()
        }
        None => serve(a, &headers),
    }
}

/// The first study of the page's `StudyInstanceUIDs` (repeated, or
/// comma-separated), when it is a valid UID. Anything else (percent-escapes
/// other than the comma's included) gives `None`: the page then goes out
/// without the study's preloads.
fn first_study(query: Option<&str>) -> Option<Uid> {
    let value = query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "StudyInstanceUIDs")?
        .1
        .replace("%2C", ",")
        .replace("%2c", ",");
    let first = value.split(',').map(str::trim).find(|u| !u.is_empty())?;
    Uid::parse(first).ok()
}

/// `page` with `<link rel="preload" as="fetch">` for the two QIDO-RS
/// requests the boot code (`app/src/boot.ts`) makes first for `study`: the
/// browser starts them while it parses the page instead of once the entry
/// script runs. Only a validated UID goes into the page (digits and dots,
/// nothing to escape); the requests go through the access policy like the
/// script's own, and the page carries no data of the study.
fn with_study_preloads(page: &[u8], study: &Uid) -> Option<String> {
    let page = std::str::from_utf8(page).ok()?;
    let at = page.find("</title>")? + "</title>".len();
    let links = format!(
        "\n    <link rel=\"preload\" as=\"fetch\" crossorigin href=\"/dicom-web/studies/{study}/series\" />\
         \n    <link rel=\"preload\" as=\"fetch\" crossorigin \
         href=\"/dicom-web/studies?StudyInstanceUID={study}&amp;includefield=00081030&amp;includefield=00080061\" />"
    );
    Some(format!("{}{links}{}", &page[..at], &page[at..]))
}

async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    let headers = req.headers();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return not_found();
    }
    if let Some(a) = assets::find(path) {
        return serve(a, headers);
    }
    let api = API_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if api || path.starts_with("/assets/") || !accepts_html(headers) {
        return not_found();
    }
    if path.starts_with("/viewer/") {
        return reader_page(req.uri().clone(), headers.clone()).await;
    }
    index(headers.clone()).await
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().starts_with("text/html"))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// One embedded file: long-lived immutable caching for the content-hashed
/// `/assets/*`, revalidation (`no-cache` + ETag) for the page and the
/// other files, gzip when the client takes it.
fn serve(a: &Asset, headers: &HeaderMap) -> Response {
    let cache = if a.path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == a.etag || t.trim() == "*");
    if fresh {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    match a.gzip {
        Some(gz) if accepts_gzip(headers) => {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (h, gz).into_response()
        }
        _ => (h, a.body).into_response(),
    }
}

#[cfg(test)]
mod tests;
