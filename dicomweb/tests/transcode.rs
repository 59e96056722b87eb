//! WADO-RS retrieve with an explicit transfer syntax: converted when the
//! stored syntax can be converted to it (uncompressed, RLE, JPEG Lossless,
//! JPEG Baseline for 8-bit data), 406 with a reason otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::dicom::parse_part10;
use pacs_core::Limits;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const JPEG_SV1: &str = "1.2.840.10008.1.2.4.70";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const RLE: &str = "1.2.840.10008.1.2.5";

#[tokio::test]
async fn retrieve_converts_to_uncompressed_syntaxes_or_refuses() {
    let app = app(loaded_archive().await, DicomWebConfig::default());
    // An RLE MR instance asked for as Explicit VR Little Endian.
    let mr = &files_of("mr-head")[0];
    let uri = instance_path(mr);
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

    // As stored still works; JPEG Baseline of 16-bit data is refused with
    // what to ask for instead.
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
    assert!(r.text().contains("JPEG Lossless"), "{}", r.text());
    // Not a UID at all: 400 (PS3.18 8.7.3.5).
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=jpeg",
        )],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A syntax the archive does not write at all.
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.90",
        )],
    )
    .await;
    assert_eq!(r.status, 406);
    assert!(r.text().contains("JPEG Lossless"), "{}", r.text());
}

/// PS3.18 8.7.3.4: no syntax named means Explicit VR Little Endian, except
/// lossy pixel data (sent as stored); `*` means as stored.
#[tokio::test]
async fn default_syntax_is_explicit_le_except_lossy() {
    let app = app(loaded_archive().await, DicomWebConfig::default());
    let syntaxes = |r: &Reply| -> Vec<String> {
        parse_multipart(&r.header("content-type").unwrap(), &r.body)
            .iter()
            .map(|p| {
                let h = parse_part10(&p.body, true, &Limits::default()).unwrap();
                assert_eq!(
                    p.content_type(),
                    format!(
                        "application/dicom; transfer-syntax={}",
                        h.meta.transfer_syntax_uid
                    )
                );
                h.meta.transfer_syntax_uid
            })
            .collect()
    };
    let mr = &files_of("mr-head")[0];
    let us = &files_of("us-cine")[0];
    for (accept, mr_ts, us_ts) in [
        (None, EXPLICIT_LE, JPEG_BASELINE),
        (
            Some(r#"multipart/related; type="application/dicom""#),
            EXPLICIT_LE,
            JPEG_BASELINE,
        ),
        (Some("*/*"), EXPLICIT_LE, JPEG_BASELINE),
        (
            Some(r#"multipart/related; type="application/dicom"; transfer-syntax=*"#),
            RLE,
            JPEG_BASELINE,
        ),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let r = get(&app, &instance_path(mr), &headers).await;
        assert_eq!(r.status, 200, "{accept:?}");
        assert_eq!(syntaxes(&r), vec![mr_ts.to_owned()], "MR, {accept:?}");
        let r = get(&app, &instance_path(us), &headers).await;
        assert_eq!(syntaxes(&r), vec![us_ts.to_owned()], "US, {accept:?}");
    }
    // A whole study of mixed syntaxes: each part in its own.
    let r = get(
        &app,
        &format!("/dicom-web/studies/{}", s(&mr["study_instance_uid"])),
        &[("accept", r#"multipart/related; type="application/dicom""#)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r
        .header("content-type")
        .unwrap()
        .contains("transfer-syntax"));
    let got = syntaxes(&r);
    assert_eq!(got.len(), files_of("mr-head").len());
    assert!(got.iter().all(|ts| ts == EXPLICIT_LE), "{got:?}");

    // Frames asked for as bytes with no syntax: decoded native bytes.
    let frame_uri = format!("{}/frames/1", instance_path(mr));
    for (accept, len) in [
        (
            r#"multipart/related; type="application/octet-stream""#,
            Some(192 * 192 * 2),
        ),
        (
            r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#,
            None,
        ),
    ] {
        let r = get(&app, &frame_uri, &[("accept", accept)]).await;
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
        match len {
            Some(n) => assert_eq!(parts[0].body.len(), n, "{accept}"),
            // As stored: an RLE fragment (header of one segment pair).
            None => assert!(
                parts[0].body.starts_with(&[2, 0, 0, 0, 64, 0, 0, 0]),
                "{accept}"
            ),
        }
    }
}

#[tokio::test]
async fn retrieve_compresses_losslessly_on_request() {
    let archive = loaded_archive().await;
    let app = app(archive.clone(), DicomWebConfig::default());
    // Native 16-bit signed CT series as JPEG Lossless SV1, and an RLE MR
    // series as RLE again (as stored) or JPEG Lossless.
    for (study, ts) in [
        ("ct-phantom", JPEG_SV1),
        ("cr-chest", RLE),
        ("mr-head", JPEG_SV1),
    ] {
        let files = files_of(study);
        let f = &files[0];
        let uri = format!(
            "/dicom-web/studies/{}/series/{}",
            s(&f["study_instance_uid"]),
            s(&f["series_instance_uid"])
        );
        let accept = format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}");
        let r = get(&app, &uri, &[("accept", &accept)]).await;
        assert_eq!(r.status, 200, "{study}: {}", r.text());
        let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
        assert!(!parts.is_empty());
        for p in &parts {
            let h = parse_part10(&p.body, true, &Limits::default()).unwrap();
            assert_eq!(h.meta.transfer_syntax_uid, ts, "{study}");
            assert!(h.syntax.encapsulated());
            let sop = h.dataset.uid(0x0008_0018).unwrap();
            let stored = archive.retrieve_bytes(&sop.parse().unwrap()).await.unwrap();
            assert_eq!(
                native_pixels(&p.body),
                native_pixels(&stored),
                "{study} {sop}: not lossless"
            );
            assert!(
                p.body.len() < stored.len() || study == "mr-head",
                "{study}: not smaller"
            );
        }
    }
}

#[tokio::test]
async fn frames_are_converted_to_the_syntax_asked_for() {
    let app = app(loaded_archive().await, DicomWebConfig::default());
    let ct = &files_of("ct-phantom")[0];
    let uri = format!("{}/frames/1", instance_path(ct));
    let cases = [
        (
            format!("multipart/related; type=\"image/jpeg\"; transfer-syntax={JPEG_SV1}"),
            "image/jpeg",
            &[0xFF, 0xD8, 0xFF, 0xC3][..],
        ),
        (
            format!("multipart/related; type=\"image/dicom-rle\"; transfer-syntax={RLE}"),
            "image/dicom-rle",
            &[2, 0, 0, 0, 64, 0, 0, 0][..], // two byte planes, first at 64
        ),
    ];
    for (accept, media, magic) in cases {
        let r = get(&app, &uri, &[("accept", &accept)]).await;
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        let ct_header = r.header("content-type").unwrap();
        assert!(ct_header.contains(media), "{ct_header}");
        let parts = parse_multipart(&ct_header, &r.body);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].body.starts_with(magic), "{accept}");
    }
    // The media type must suit the syntax: RLE is not image/jpeg.
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            &format!("multipart/related; type=\"image/jpeg\"; transfer-syntax={RLE}"),
        )],
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text());
    // 16-bit frames as JPEG Baseline: refused with the reason.
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )],
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("8-bit"), "{}", r.text());
}

/// Conversions share the bound on pixel work: an instance over
/// `max_render_object_bytes` is refused with the reason, not loaded.
#[tokio::test]
async fn conversion_of_an_oversized_instance_is_refused() {
    let config = DicomWebConfig {
        max_render_object_bytes: 1024,
        ..DicomWebConfig::default()
    };
    let app = app(loaded_archive().await, config);
    let ct = &files_of("ct-phantom")[0];
    let uri = instance_path(ct);
    let accept =
        format!("multipart/related; type=\"application/dicom\"; transfer-syntax={JPEG_SV1}");
    let r = get(&app, &uri, &[("accept", &accept)]).await;
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("too large to convert"), "{}", r.text());
    // As stored is not pixel work: still served.
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
}
