//! WADO-RS retrieve with an explicit transfer syntax: converted when the
//! stored syntax can be converted to it, 406 with a reason otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::dicom::parse_part10;
use pacs_core::Limits;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

#[tokio::test]
async fn retrieve_converts_to_uncompressed_syntaxes_or_refuses() {
    let app = app(loaded_archive().await, DicomWebConfig::default());
    // An RLE MR instance asked for as Explicit VR Little Endian.
    let mr = &files_of("mr-head")[0];
    let uri = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        s(&mr["study_instance_uid"]),
        s(&mr["series_instance_uid"]),
        s(&mr["sop_instance_uid"])
    );
    let accept =
        format!("multipart/related; type=\"application/dicom\"; transfer-syntax={EXPLICIT_LE}");
    let r = get(&app, &uri, &[("accept", &accept)]).await;
    assert_eq!(r.status, 200, "{uri}: {}", r.text());
    let ct = r.header("content-type").unwrap();
    assert!(ct.contains(EXPLICIT_LE), "{ct}");
    let parts = parse_multipart(&ct, &r.body);
    assert_eq!(parts.len(), 1);
    let header = parse_part10(&parts[0].body, true, &Limits::default()).unwrap();
    assert_eq!(header.meta.transfer_syntax_uid, EXPLICIT_LE);
    let pixels = header.pixel_data.unwrap();
    assert_eq!(
        pixels.length,
        Some(192 * 192 * 2),
        "native 16-bit pixel data"
    );
    assert_eq!(
        header.dataset.uid(0x0008_0018).unwrap(),
        s(&mr["sop_instance_uid"])
    );

    // A whole series converted to Implicit VR LE.
    let uri = format!(
        "/dicom-web/studies/{}/series/{}",
        s(&mr["study_instance_uid"]),
        s(&mr["series_instance_uid"])
    );
    let accept =
        format!("multipart/related; type=\"application/dicom\"; transfer-syntax={IMPLICIT_LE}");
    let r = get(&app, &uri, &[("accept", &accept)]).await;
    assert_eq!(r.status, 200);
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), files_of("mr-head").len());
    for p in &parts {
        let h = parse_part10(&p.body, true, &Limits::default()).unwrap();
        assert_eq!(h.meta.transfer_syntax_uid, IMPLICIT_LE);
    }

    // As stored still works, and a compressed target is refused with a reason.
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )],
    )
    .await;
    assert_eq!(r.status, 406);
    assert!(r.text().contains("uncompressed"), "{}", r.text());
}
