//! STOW-RS of metadata and bulk data (PS3.18 10.5.1.2): DICOM JSON with
//! BulkDataURIs, and the bulk data in parts named by Content-Location.
//! The metadata and pixels come from the archive's own WADO-RS answers for
//! a stored CT slice, stored again under a new SOP Instance UID.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::dicom::parse_part10;
use pacs_core::Limits;
use serde_json::{json, Value};

const JSON_TYPE: &str = "multipart/related; type=\"application/dicom+json\"; boundary=meta-b";

/// A multipart body of (Content-Type, Content-Location, bytes) parts.
fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ct, location, bytes) in parts {
        out.extend_from_slice(format!("--meta-b\r\nContent-Type: {ct}\r\n").as_bytes());
        if let Some(l) = location {
            out.extend_from_slice(format!("Content-Location: {l}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--meta-b--\r\n");
    out
}

async fn post(app: &axum::Router, content_type: &str, body: Vec<u8>) -> Reply {
    let req = Request::post("/dicom-web/studies")
        .header("host", "pacs.test")
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

/// Frame 1 of the instance at `base`, asked for with `accept`.
async fn frame_one(app: &axum::Router, base: &str, accept: &str) -> Vec<u8> {
    let r = get(app, &format!("{base}/frames/1"), &[("accept", accept)]).await;
    assert_eq!(r.status, 200, "{accept}");
    parse_multipart(&r.header("content-type").unwrap(), &r.body)[0]
        .body
        .clone()
}

/// The stored object at `url` (as stored).
async fn fetch(app: &axum::Router, url: &str) -> Vec<u8> {
    let path = url.split_once("/dicom-web").unwrap().1;
    let r = get(
        app,
        &format!("/dicom-web{path}"),
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    parse_multipart(&r.header("content-type").unwrap(), &r.body)[0]
        .body
        .clone()
}

#[tokio::test]
async fn metadata_and_bulk_data_are_stored_as_an_instance() {
    let app = app(loaded_archive().await, DicomWebConfig::default());
    let ct = &files_of("ct-phantom")[0];
    let original = std::fs::read(samples_dir().join(s(&ct["path"]))).unwrap();
    let base = instance_path(ct);
    let meta = get(&app, &format!("{base}/metadata"), &[]).await;
    assert_eq!(meta.status, 200);
    let mut datasets: Value = meta.json();
    let bulk_uri = datasets[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .unwrap()
        .to_owned();
    let native = frame_one(
        &app,
        &base,
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
    )
    .await;

    // Native pixels as application/octet-stream.
    datasets[0]["00080018"] = json!({ "vr": "UI", "Value": ["2.25.1001"] });
    let meta_bytes = serde_json::to_vec(&datasets).unwrap();
    let r = post(
        &app,
        JSON_TYPE,
        body(&[
            ("application/dicom+json", None, &meta_bytes),
            ("application/octet-stream", Some(&bulk_uri), &native),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let item = &r.json()["00081199"]["Value"][0];
    assert_eq!(item["00081155"]["Value"][0], "2.25.1001");
    let stored = fetch(&app, item["00081190"]["Value"][0].as_str().unwrap()).await;
    let h = parse_part10(&stored, true, &Limits::default()).unwrap();
    assert_eq!(h.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert_eq!(
        h.dataset.string(0x0010_0010),
        parse_part10(&original, true, &Limits::default())
            .unwrap()
            .dataset
            .string(0x0010_0010)
    );
    assert!(
        native_pixels(&stored) == native_pixels(&original),
        "pixels changed"
    );

    // Compressed pixels: one JPEG Lossless frame, named by a relative
    // Content-Location.
    let jpeg = frame_one(
        &app,
        &base,
        "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.70",
    )
    .await;
    datasets[0]["00080018"] = json!({ "vr": "UI", "Value": ["2.25.1002"] });
    datasets[0]["7FE00010"] = json!({ "vr": "OB", "BulkDataURI": "pixels/1" });
    let meta_bytes = serde_json::to_vec(&datasets).unwrap();
    let r = post(
        &app,
        JSON_TYPE,
        body(&[
            ("application/dicom+json", None, &meta_bytes),
            (
                "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70",
                Some("pixels/1"),
                &jpeg,
            ),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = fetch(&app, &url).await;
    let h = parse_part10(&stored, true, &Limits::default()).unwrap();
    assert_eq!(h.meta.transfer_syntax_uid, "1.2.840.10008.1.2.4.70");
    assert!(
        native_pixels(&stored) == native_pixels(&original),
        "lossless pixels changed"
    );
}

#[tokio::test]
async fn metadata_stow_refusals_say_why() {
    let app = app(empty_archive().await, DicomWebConfig::default());
    let dataset = json!([{
        "00080016": { "vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"] },
        "00080018": { "vr": "UI", "Value": ["2.25.2001"] },
        "0020000D": { "vr": "UI", "Value": ["2.25.2002"] },
        "0020000E": { "vr": "UI", "Value": ["2.25.2003"] },
        "00100020": { "vr": "LO", "Value": ["META-1"] },
        "7FE00010": { "vr": "OB", "BulkDataURI": "missing/part" }
    }]);
    let meta = serde_json::to_vec(&dataset).unwrap();
    // A BulkDataURI no part answers: that data set fails (409), with a
    // Failure Reason.
    let r = post(
        &app,
        JSON_TYPE,
        body(&[("application/dicom+json", None, &meta)]),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let failed = &r.json()["00081198"]["Value"][0];
    assert_eq!(failed["00081155"]["Value"][0], "2.25.2001");
    assert_eq!(failed["00081197"]["Value"][0], 0xC000);

    // Without pixel data the same metadata is a valid instance.
    let mut no_pixels = dataset.clone();
    no_pixels[0].as_object_mut().unwrap().remove("7FE00010");
    let r = post(
        &app,
        JSON_TYPE,
        body(&[(
            "application/dicom+json",
            None,
            &serde_json::to_vec(&no_pixels).unwrap(),
        )]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Not JSON, no metadata part, a bulk part without Content-Location: 400.
    for parts in [
        vec![("application/dicom+json", None, &b"{not json"[..])],
        vec![("application/octet-stream", Some("x"), &b"\0\0"[..])],
        vec![
            ("application/dicom+json", None, &meta[..]),
            ("application/octet-stream", None, &b"\0\0"[..]),
        ],
    ] {
        let r = post(&app, JSON_TYPE, body(&parts)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    // XML metadata is not built: 415 with what to send instead.
    let r = post(
        &app,
        "multipart/related; type=\"application/dicom+xml\"; boundary=meta-b",
        body(&[("application/dicom+xml", None, b"<x/>")]),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.text().contains("application/dicom+json"), "{}", r.text());
    // The archive still serves, and holds only the valid instance.
    let r = get(&app, "/dicom-web/instances", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}
