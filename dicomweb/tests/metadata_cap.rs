//! STOW-RS of an object whose DICOM JSON exceeds `max_metadata_bytes`:
//! 409 with Failure Reason 0xC000 and nothing stored; one at the limit is
//! stored.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::{Archive, Limits};

fn archive(max_metadata_bytes: u64) -> Archive {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let limits = Limits {
        max_metadata_bytes,
        ..Limits::default()
    };
    Archive::new(Arc::new(blobs), Arc::new(index), limits)
}

async fn stow(archive: &Archive, file: &[u8]) -> Reply {
    let app = app(archive.clone(), DicomWebConfig::default());
    let request = Request::post("/dicom-web/studies")
        .header("host", "pacs.test")
        .header(
            "content-type",
            "multipart/related; type=\"application/dicom\"; boundary=XyZ",
        )
        .body(Body::from(stow_body(
            "XyZ",
            &[("application/dicom", file.to_vec())],
        )))
        .unwrap();
    send(&app, request).await
}

#[tokio::test]
async fn stow_over_the_metadata_limit_is_409_and_nothing_is_stored() {
    let f = &files_of("ct-phantom")[0];
    let file = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
    let header = pacs_core::dicom::parse_part10(&file, true, &Limits::default()).unwrap();
    let json_len = pacs_core::records::InstanceAttributes::from_header(&header)
        .unwrap()
        .metadata
        .len() as u64;

    let over = archive(json_len - 1);
    let r = stow(&over, &file).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let failed = &r.json()["00081198"]["Value"];
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000, "{}", r.text());
    assert_eq!(over.stats().await.unwrap().instances, 0);

    let at = archive(json_len);
    let r = stow(&at, &file).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(at.stats().await.unwrap().instances, 1);
}
