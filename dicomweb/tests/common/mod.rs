//! Shared test support: an in-memory archive loaded with the sample
//! studies, requests through `oneshot`, a small multipart reader.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use pacs_core::{Archive, Limits};
use tower::ServiceExt;

pub use pacs_testkit::fixtures::{empty_archive, loaded_archive};
pub use pacs_testkit::peers::{python, skip_or_fail};
pub use pacs_testkit::samples::{files_of, manifest, s, sample_dir as samples_dir};

/// Both routers over one pixel-work service, as the server mounts them.
/// In the engines pass with `PACS_TEST_NODES=N`, N such nodes, each with
/// its own view of the archive's database and bucket (its own pool,
/// client, caches and pixel-work service), and each request goes to the
/// next node in turn.
pub fn app(archive: Archive, config: dicomweb::DicomWebConfig) -> Router {
    let nodes = pacs_testkit::engines::nodes();
    if nodes == 1 {
        return node(archive, config);
    }
    round_robin(archive, config, nodes)
}

/// [`app`], always one node: for the tests of limits that hold per node.
pub fn app_one_node(archive: Archive, config: dicomweb::DicomWebConfig) -> Router {
    node(archive, config)
}

struct Nodes {
    first: Router,
    archive: Archive,
    config: dicomweb::DicomWebConfig,
    count: usize,
    /// The other nodes, opened at the first request that needs one.
    others: tokio::sync::OnceCell<Vec<Router>>,
    next: std::sync::atomic::AtomicUsize,
}

fn round_robin(archive: Archive, config: dicomweb::DicomWebConfig, count: usize) -> Router {
    let nodes = Arc::new(Nodes {
        first: node(archive.clone(), config.clone()),
        archive,
        config,
        count,
        others: tokio::sync::OnceCell::new(),
        next: std::sync::atomic::AtomicUsize::new(0),
    });
    Router::new().fallback_service(tower::service_fn(move |request: Request<Body>| {
        let nodes = nodes.clone();
        async move {
            let turn = nodes
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % nodes.count;
            let router = if turn == 0 {
                nodes.first.clone()
            } else {
                let others = nodes
                    .others
                    .get_or_init(|| async {
                        let mut others = Vec::new();
                        for _ in 1..nodes.count {
                            let sibling = pacs_testkit::engines::sibling_of(&nodes.archive).await;
                            // Each node its own pixel-work service.
                            let config = dicomweb::DicomWebConfig {
                                pixel: None,
                                ..nodes.config.clone()
                            };
                            others.push(node(sibling, config));
                        }
                        others
                    })
                    .await;
                others[turn - 1].clone()
            };
            router.oneshot(request).await
        }
    }))
}

fn node(archive: Archive, mut config: dicomweb::DicomWebConfig) -> Router {
    if config.pixel.is_none() {
        config.pixel = Some(Arc::new(imaging::service::PixelService::new(
            archive.limits(),
            config.render_cache_bytes,
        )));
    }
    Router::new()
        .nest(
            "/dicom-web",
            dicomweb::router(archive.clone(), config.clone()),
        )
        .merge(dicomweb::wado_uri_router(archive, config))
}

pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(uri).header("host", "pacs.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(app, b.body(Body::empty()).unwrap()).await
}

/// One part of a multipart body: its headers (lower-case names) and content.
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn content_type(&self) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    h.get(from..)?
        .windows(n.len())
        .position(|w| w == n)
        .map(|p| p + from)
}

/// Splits a multipart body (RFC 2046) using the boundary of `content_type`.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0).unwrap() + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break;
        }
        pos += 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", pos).unwrap();
        let headers = String::from_utf8_lossy(&body[pos..head_end])
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let content_start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), content_start).unwrap();
        parts.push(Part {
            headers,
            body: body[content_start..next].to_vec(),
        });
        pos = next + 2 + delim.len();
    }
    parts
}

/// The native Pixel Data bytes of a Part 10 object in any syntax
/// (converted to Explicit VR Little Endian first).
pub fn native_pixels(part10: &[u8]) -> Vec<u8> {
    let native = imaging::transcode::transcode_part10(part10, "1.2.840.10008.1.2.1").unwrap();
    let pd = pacs_core::dicom::parse_part10(&native, true, &Limits::default())
        .unwrap()
        .pixel_data
        .unwrap();
    let at = pd.value_offset as usize;
    native[at..at + pd.length.unwrap() as usize].to_vec()
}

/// The WADO-RS path of a manifest entry's instance.
pub fn instance_path(f: &serde_json::Value) -> String {
    format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        s(&f["study_instance_uid"]),
        s(&f["series_instance_uid"]),
        s(&f["sop_instance_uid"])
    )
}

/// The `.dcm` files of pydicom's `test_files` under `data` (the value of
/// `PACS_PYDICOM_DATA`), sorted.
pub fn corpus_test_files(data: &std::ffi::OsStr) -> Vec<PathBuf> {
    let dir = PathBuf::from(data).join("test_files");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// One Part 10 file stored by `POST /dicom-web/studies`.
pub async fn stow_one(app: &Router, part10: Vec<u8>) -> Reply {
    let body = stow_body("one-boundary", &[("application/dicom", part10)]);
    let req = Request::post("/dicom-web/studies")
        .header("host", "pacs.test")
        .header(
            "content-type",
            "multipart/related; type=\"application/dicom\"; boundary=one-boundary",
        )
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

/// A multipart/related body of DICOM parts.
pub fn stow_body(boundary: &str, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ct, bytes) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
