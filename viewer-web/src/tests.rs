#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use pacs_core::{Archive, Limits};
use tower::ServiceExt;

use super::*;

async fn archive() -> Archive {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    let studies = [
        (
            "1.2.826.0.1.3680043.10.99.1",
            "PAT-1",
            "20240105",
            "ACC-OLD",
        ),
        (
            "1.2.826.0.1.3680043.10.99.2",
            "PAT-1",
            "20260310",
            "ACC-NEW",
        ),
        (
            "1.2.826.0.1.3680043.10.99.3",
            "PAT-1",
            "20251120",
            "ACC-MID",
        ),
        ("1.2.826.0.1.3680043.10.99.4", "PAT-2", "20250101", "ACC-2"),
    ];
    for (study, patient, date, acc) in studies {
        let series = format!("{study}.1");
        let sop = format!("{study}.1.1");
        let bytes = sample_data::synthetic::object(&sample_data::synthetic::Spec {
            study,
            series: &series,
            sop: &sop,
            patient_name: "NGUYEN^VAN AN",
            patient_id: patient,
            study_date: date,
            modality: "CT",
            accession: acc,
            pixel_bytes: 64,
        });
        archive.store(bytes.as_slice()).await.unwrap();
    }
    archive
}

async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn body(r: Response) -> Vec<u8> {
    axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

fn header_of(r: &Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn location(r: &Response) -> &str {
    header_of(r, header::LOCATION)
}

#[tokio::test]
async fn index_and_spa_fallback() {
    let app = router(archive().await);
    let index = assets::find("/index.html").unwrap();
    let reader = assets::find("/viewer.html").unwrap();
    for (uri, page) in [
        ("/", index),
        ("/viewer", reader),
        ("/viewer?StudyInstanceUIDs=not-a-uid", reader),
        ("/viewer/anything", reader),
    ] {
        let r = get(&app, uri, &[("accept", "text/html")]).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
        assert!(header_of(&r, header::CONTENT_TYPE).starts_with("text/html"));
        assert_eq!(body(r).await, page.body, "{uri}");
    }
    // A deep link typed into the browser gets the app; a script's request does not.
    let r = get(
        &app,
        "/studies/anything",
        &[("accept", "text/html,application/xhtml+xml")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await, index.body);
    let r = get(&app, "/studies/anything", &[("accept", "application/json")]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // API paths never get the page.
    for uri in [
        "/dicom-web/nothing",
        "/api/nothing",
        "/wado/x",
        "/assets/missing.js",
    ] {
        let r = get(&app, uri, &[("accept", "text/html")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
    }
    // Revalidation of the page.
    let r = get(&app, "/", &[("if-none-match", index.etag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

/// The reader's page preloads the reading view's code (cold start: it
/// downloads while the entry script does) as plain script preloads, which the
/// browser does not compile before the reader imports them, and its CSS as a
/// style preload, which does not hold back the entry script; the list's page
/// preloads none of it.
#[tokio::test]
async fn reader_page_preloads_the_reader_chunk() {
    let page = |p: &str| String::from_utf8(assets::find(p).unwrap().body.to_vec()).unwrap();
    let (list, reader) = (page("/index.html"), page("/viewer.html"));
    let preloads: Vec<&str> = reader
        .split("<link rel=\"preload\" as=\"script\" fetchpriority=\"low\" crossorigin href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(!preloads.is_empty(), "{reader}");
    for p in &preloads {
        assert!(assets::find(p).is_some(), "{p} is not served");
        assert!(!list.contains(p), "the list page names {p}");
    }
    assert!(
        preloads.iter().any(|p| p.starts_with("/assets/reader-")),
        "{preloads:?}"
    );
    assert!(!list.contains("preload"), "{list}");
    assert!(!reader.contains("modulepreload"), "{reader}");
    let styles: Vec<&str> = reader
        .split("<link rel=\"preload\" as=\"style\" href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(
        styles.iter().any(|p| p.starts_with("/assets/reader-")),
        "{reader}"
    );
    for p in &styles {
        assert!(assets::find(p).is_some(), "{p} is not served");
        assert!(
            !reader.contains(&format!("<link rel=\"stylesheet\" href=\"{p}\"")),
            "{p} is applied with the page"
        );
    }
    // The tools' chunks are named for after the first image (the reader
    // preloads them then), not preloaded with the page.
    let later: Vec<&str> = reader
        .split("<meta name=\"sen-preload-later\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        later.iter().any(|p| p.starts_with("/assets/tools-")),
        "{reader}"
    );
    for p in &later {
        assert!(assets::find(p).is_some(), "{p} is not served");
        assert!(!preloads.contains(p), "{p} is preloaded with the page");
    }
}

#[tokio::test]
async fn assets_are_immutable_typed_and_gzipped() {
    let app = router(archive().await);
    let js = ASSETS
        .iter()
        .find(|a| a.path.starts_with("/assets/") && a.path.ends_with(".js"))
        .expect("the build has a script");
    let r = get(&app, js.path, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header_of(&r, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert!(header_of(&r, header::CONTENT_TYPE).starts_with("text/javascript"));
    assert_eq!(header_of(&r, header::CONTENT_ENCODING), "gzip");
    let gz = body(r).await;
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut plain)
        .unwrap();
    assert_eq!(plain, js.body);
    // Without Accept-Encoding: the plain bytes.
    let r = get(&app, js.path, &[]).await;
    assert_eq!(header_of(&r, header::CONTENT_ENCODING), "");
    assert_eq!(body(r).await, js.body);
    // A client refusing gzip.
    let r = get(&app, js.path, &[("accept-encoding", "gzip;q=0, identity")]).await;
    assert_eq!(header_of(&r, header::CONTENT_ENCODING), "");

    let wasm: Vec<_> = ASSETS
        .iter()
        .filter(|a| a.path.ends_with(".wasm"))
        .collect();
    assert!(!wasm.is_empty(), "the codecs' WebAssembly is embedded");
    for a in wasm {
        let r = get(&app, a.path, &[]).await;
        assert_eq!(header_of(&r, header::CONTENT_TYPE), "application/wasm");
    }
    let r = get(&app, "/favicon.svg", &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header_of(&r, header::CONTENT_TYPE), "image/svg+xml");
}

/// The reading view's page names the study's first two requests as
/// preloads, for a valid UID only, and is otherwise the plain page.
#[tokio::test]
async fn the_reader_page_preloads_the_study_requests() {
    let app = router(archive().await);
    let plain = assets::find("/viewer.html").unwrap();
    let series = "<link rel=\"preload\" as=\"fetch\" crossorigin href=\"/dicom-web/studies/1.2.3/series\" />";
    let qido = "href=\"/dicom-web/studies?StudyInstanceUID=1.2.3&amp;includefield=00081030&amp;includefield=00080061\"";
    for uri in [
        "/viewer?StudyInstanceUIDs=1.2.3",
        "/viewer?StudyInstanceUIDs=1.2.3,1.2.4",
        "/viewer?StudyInstanceUIDs=1.2.3%2C1.2.4&SeriesInstanceUID=9.9",
        "/viewer?x=1&StudyInstanceUIDs=1.2.3&StudyInstanceUIDs=1.2.4",
        "/viewer/anything?StudyInstanceUIDs=1.2.3",
    ] {
        let r = get(&app, uri, &[("accept", "text/html")]).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
        assert!(header_of(&r, header::CONTENT_TYPE).starts_with("text/html"));
        let page = String::from_utf8(body(r).await).unwrap();
        assert!(page.contains(series), "{uri}: {page}");
        assert!(page.contains(qido), "{uri}: {page}");
        assert!(!page.contains("1.2.4"), "{uri}: only the first study");
        // Around the two links, the built page (the reader's modulepreloads).
        let plain_text = std::str::from_utf8(plain.body).unwrap();
        let at = plain_text.find("</title>").unwrap() + "</title>".len();
        assert!(page.starts_with(&plain_text[..at]), "{uri}");
        assert!(page.ends_with(&plain_text[at..]), "{uri}");
    }
    // Not a UID: no study in the page, whatever the address holds.
    for uri in [
        "/viewer?StudyInstanceUIDs=1.2.3%22%3E%3Cscript%3E",
        "/viewer?StudyInstanceUIDs=..%2F..%2Fx",
        "/viewer?StudyInstanceUIDs=1..2",
        "/viewer?StudyInstanceUIDs=",
        "/viewer?StudyInstanceUIDs=1.2.3333333333333333333333333333333333333333333333333333333333333333333",
    ] {
        let r = get(&app, uri, &[("accept", "text/html")]).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(body(r).await, plain.body, "{uri}");
    }
}

#[tokio::test]
async fn iid_study_links_redirect_into_the_viewer() {
    let app = router(archive().await);
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.826.0.1.3680043.10.99.4",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.4"
    );
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.826.0.1.3680043.10.99.2,1.2.826.0.1.3680043.10.99.1",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.2&StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.1"
    );
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=STUDY&accessionNumber=ACC-MID",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.3"
    );
}

#[tokio::test]
async fn iid_patient_links_open_every_study_newest_first() {
    let app = router(archive().await);
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=PATIENT&patientID=PAT-1",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.2\
&StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.3&StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.1"
    );
    // CX with an issuer, most recent N, and a date range.
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=PATIENT&patientID=PAT-1%5E%5E%5E%261.2.3%26ISO&mostRecentResults=1",
        &[],
    )
    .await;
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.2"
    );
    let r = get(
        &app,
        "/IHEInvokeImageDisplay?requestType=PATIENT&patientID=PAT-1&upperDateTime=2025-12-31T23:59:59",
        &[],
    )
    .await;
    assert_eq!(
        location(&r),
        "/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.3&StudyInstanceUIDs=1.2.826.0.1.3680043.10.99.1"
    );
}

#[tokio::test]
async fn iid_refusals_say_why() {
    let app = router(archive().await);
    let cases = [
        (
            "requestType=STUDY&studyUID=1.2.826.0.1.3680043.10.99.77",
            StatusCode::NOT_FOUND,
            "1.2.826.0.1.3680043.10.99.77",
        ),
        (
            "requestType=PATIENT&patientID=NOBODY",
            StatusCode::NOT_FOUND,
            "NOBODY",
        ),
        (
            "requestType=STUDY&accessionNumber=NOPE",
            StatusCode::NOT_FOUND,
            "NOPE",
        ),
        (
            "requestType=STUDY&studyUID=1.2.abc",
            StatusCode::BAD_REQUEST,
            "not a valid UID",
        ),
        (
            "requestType=STUDY&studyUID=..%2F..%2Fetc",
            StatusCode::BAD_REQUEST,
            "not a valid UID",
        ),
        (
            "requestType=PATIENT&patientID=PAT*",
            StatusCode::BAD_REQUEST,
            "may not contain",
        ),
        (
            "requestType=SERIES&studyUID=1.2.3",
            StatusCode::BAD_REQUEST,
            "not supported",
        ),
        ("studyUID=1.2.3", StatusCode::BAD_REQUEST, "no requestType"),
        (
            "requestType=STUDY",
            StatusCode::BAD_REQUEST,
            "needs studyUID",
        ),
        (
            "requestType=PATIENT&patientID=PAT-1&lowerDateTime=yesterday",
            StatusCode::BAD_REQUEST,
            "ISO 8601",
        ),
        (
            "requestType=PATIENT&patientID=PAT-1&lowerDateTime=2027-01-01",
            StatusCode::NOT_FOUND,
            "no study matching",
        ),
        (
            "requestType=PATIENT&patientID=%3Cscript%3E",
            StatusCode::NOT_FOUND,
            "&lt;script&gt;",
        ),
    ];
    for (query, status, says) in cases {
        let r = get(&app, &format!("/IHEInvokeImageDisplay?{query}"), &[]).await;
        assert_eq!(r.status(), status, "{query}");
        assert!(header_of(&r, header::CONTENT_TYPE).starts_with("text/html"));
        let text = String::from_utf8(body(r).await).unwrap();
        assert!(text.contains(says), "{query}: {text}");
        assert!(
            !text.contains("<script>"),
            "{query}: the page escapes input"
        );
    }
}
