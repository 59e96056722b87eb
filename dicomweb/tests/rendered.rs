//! Rendered and thumbnail resources (PS3.18 8.3.5, 9.5; Supplement 203) and
//! WADO-URI images, over the sample studies (geometry of the CT phantom in
//! sample-data/README.md).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dicomweb::DicomWebConfig;
use sample_data::synthetic::part10;

async fn loaded_app() -> axum::Router {
    app(loaded_archive().await, DicomWebConfig::default())
}

fn ct_instance(n: usize) -> String {
    let files = files_of("ct-phantom");
    let f = files
        .iter()
        .find(|f| f["instance_number"] == n)
        .unwrap()
        .clone();
    instance_path(&f)
}

fn decode(r: &Reply) -> image::DynamicImage {
    assert_eq!(r.status, 200, "{}", r.text());
    image::load_from_memory(&r.body).unwrap()
}

/// Mean grey value over columns `c0..c1`, rows `r0..r1` (exclusive).
fn mean(img: &image::GrayImage, (c0, c1): (u32, u32), (r0, r1): (u32, u32)) -> f64 {
    let mut sum = 0.0;
    let mut n = 0.0;
    for r in r0..r1 {
        for c in c0..c1 {
            sum += f64::from(img.get_pixel(c, r).0[0]);
            n += 1.0;
        }
    }
    sum / n
}

// Patches wholly inside one region of the phantom, away from edges.
const AIR: ((u32, u32), (u32, u32)) = ((4, 16), (4, 16));
const WATER: ((u32, u32), (u32, u32)) = ((60, 70), (160, 170));
const BONE: ((u32, u32), (u32, u32)) = ((118, 138), (68, 88));

fn regions(img: &image::GrayImage) -> (f64, f64, f64) {
    (
        mean(img, AIR.0, AIR.1),
        mean(img, WATER.0, WATER.1),
        mean(img, BONE.0, BONE.1),
    )
}

#[tokio::test]
async fn ct_frame_rendered_as_jpeg_with_windows() {
    let app = loaded_app().await;
    let base = ct_instance(1);
    let r = get(&app, &format!("{base}/frames/1/rendered"), &[]).await;
    assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
    let img = decode(&r);
    assert_eq!((img.width(), img.height()), (256, 256));

    let url = |w: &str| format!("{base}/frames/1/rendered?window={w}");
    let (air, water, bone) = regions(&decode(&get(&app, &url("0,2000"), &[]).await).to_luma8());
    assert!(
        bone > water + 100.0 && water > air + 100.0,
        "{air} {water} {bone}"
    );

    // Lung window (−1349.5…149.5 for LINEAR): air inside it, dark grey
    // (≈60), water bright (≈230), bone above it, white.
    let (air, water, bone) = regions(&decode(&get(&app, &url("-600,1500"), &[]).await).to_luma8());
    assert!(
        (50.0..70.0).contains(&air) && (220.0..240.0).contains(&water) && bone > 250.0,
        "{air} {water} {bone}"
    );
    // Narrow window at 1000: water and air black, bone mid-grey (≈129).
    let (air, water, bone) = regions(&decode(&get(&app, &url("1000,100"), &[]).await).to_luma8());
    assert!(
        air < 5.0 && water < 5.0 && (115.0..145.0).contains(&bone),
        "{air} {water} {bone}"
    );
}

#[tokio::test]
async fn png_is_exact() {
    let app = loaded_app().await;
    let base = ct_instance(1);
    let png = [("accept", "image/png")];
    // LINEAR (PS3.3 C.11.2.1.2.1), c = 0, w = 2: x <= -1 → 0; x > 0 → 255;
    // x = 0 gives ((0 - (0 - 0.5)) / (2 - 1) + 0.5) × 255 = 255. The
    // half-unit shift of LINEAR puts 0 HU at the top of the ramp.
    let r = get(&app, &format!("{base}/frames/1/rendered?window=0,2"), &png).await;
    assert_eq!(r.header("content-type").unwrap(), "image/png");
    let img = decode(&r).to_luma8();
    assert_eq!(img.get_pixel(5, 5).0[0], 0, "air");
    assert_eq!(img.get_pixel(65, 165).0[0], 255, "water, LINEAR");
    assert_eq!(img.get_pixel(128, 70).0[0], 255, "bone");
    assert_eq!(img.get_pixel(128, 175).0[0], 0, "lung −800");
    // LINEAR_EXACT (C.11.2.1.3.2): water is ((0 − 0) / 2 + 0.5) × 255 =
    // 127.5, rounded to 128; exactly, on every water pixel.
    let r = get(
        &app,
        &format!("{base}/frames/1/rendered?window=0,2,linear-exact"),
        &png,
    )
    .await;
    let img = decode(&r).to_luma8();
    assert_eq!(img.get_pixel(5, 5).0[0], 0, "air");
    for (c, row) in [(65, 165), (128, 128 + 90), (40, 128)] {
        assert_eq!(img.get_pixel(c, row).0[0], 128, "water at {c},{row}");
    }
    // `accept` query parameter instead of the header.
    let r = get(
        &app,
        &format!("{base}/rendered?window=0,2&accept=image/png"),
        &[],
    )
    .await;
    assert_eq!(r.header("content-type").unwrap(), "image/png");
}

#[tokio::test]
async fn viewport_quality_and_refusals() {
    let app = loaded_app().await;
    let base = ct_instance(2);
    let img = decode(&get(&app, &format!("{base}/rendered?viewport=64,64"), &[]).await);
    assert_eq!((img.width(), img.height()), (64, 64));
    let img = decode(&get(&app, &format!("{base}/rendered?viewport=100,50"), &[]).await);
    assert_eq!((img.width(), img.height()), (50, 50));
    let low = get(&app, &format!("{base}/rendered?quality=10"), &[]).await;
    let high = get(&app, &format!("{base}/rendered?quality=100"), &[]).await;
    assert!(low.body.len() < high.body.len());

    for bad in [
        "window=40",
        "window=40,0",
        "window=a,b",
        "window=40,400,cubic",
        "viewport=0,10",
        "viewport=64",
        "viewport=64,64,0,0,10,10",
        "quality=0",
        "quality=101",
    ] {
        let r = get(&app, &format!("{base}/rendered?{bad}"), &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = get(&app, &format!("{base}/frames/1,2/rendered"), &[]).await;
    assert_eq!(r.status, 400);
    let r = get(&app, &format!("{base}/frames/2/rendered"), &[]).await;
    assert_eq!(r.status, 404);
    let r = get(
        &app,
        &format!("{base}/rendered"),
        &[("accept", "image/gif")],
    )
    .await;
    assert_eq!(r.status, 406);
    assert!(r.text().contains("image/png"), "{}", r.text());
    let r = get(
        &app,
        &format!("{base}/rendered"),
        &[("accept", "application/dicom")],
    )
    .await;
    assert_eq!(r.status, 406);

    // ETag and If-None-Match.
    let r = get(&app, &format!("{base}/rendered"), &[]).await;
    let etag = r.header("etag").unwrap();
    let r = get(
        &app,
        &format!("{base}/rendered"),
        &[("if-none-match", etag.as_str())],
    )
    .await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn mr_rle_us_jpeg_and_cr_render() {
    let app = loaded_app().await;
    let mr = files_of("mr-head");
    let r = get(&app, &format!("{}/rendered", instance_path(&mr[7])), &[]).await;
    let img = decode(&r);
    assert_eq!((img.width(), img.height()), (192, 192));

    let us = &files_of("us-cine")[0];
    let base = instance_path(us);
    let img = decode(&get(&app, &format!("{base}/rendered"), &[]).await);
    assert_eq!((img.width(), img.height()), (320, 240));
    let f13 = decode(
        &get(
            &app,
            &format!("{base}/frames/13/rendered"),
            &[("accept", "image/png")],
        )
        .await,
    );
    assert!(matches!(f13, image::DynamicImage::ImageRgb8(_)));
    let r = get(&app, &format!("{base}/frames/25/rendered"), &[]).await;
    assert_eq!(r.status, 404);

    let cr = &files_of("cr-chest")[0];
    let img = decode(&get(&app, &format!("{}/rendered", instance_path(cr)), &[]).await);
    assert_eq!((img.width(), img.height()), (512, 512));
}

#[tokio::test]
async fn study_and_series_rendered_are_multipart_of_every_image() {
    let app = loaded_app().await;
    let mut ct = files_of("ct-phantom");
    ct.sort_by_key(|f| f["instance_number"].as_i64());
    let study = s(&ct[0]["study_instance_uid"]);
    let series = s(&ct[0]["series_instance_uid"]);
    assert!(ct.iter().all(|f| s(&f["series_instance_uid"]) == series));
    assert!(ct.len() > 1);
    let expected: Vec<String> = ct
        .iter()
        .map(|f| format!("{}/frames/1/rendered", instance_path(f)))
        .collect();
    for url in [
        format!("/dicom-web/studies/{study}/rendered"),
        format!("/dicom-web/studies/{study}/series/{series}/rendered"),
    ] {
        // No Accept (and */*, and a multipart Accept): every image instance,
        // one part each, in Instance Number order.
        for accept in [
            None,
            Some("*/*"),
            Some("multipart/related; type=\"image/jpeg\""),
        ] {
            let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
            let r = get(&app, &url, &headers).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let ct_header = r.header("content-type").unwrap();
            assert!(
                ct_header.starts_with("multipart/related; type=\"image/jpeg\"; boundary="),
                "{ct_header}"
            );
            let parts = parse_multipart(&ct_header, &r.body);
            let locations: Vec<String> = parts
                .iter()
                .map(|p| {
                    p.headers
                        .iter()
                        .find(|(k, _)| k == "content-location")
                        .map(|(_, v)| v.clone())
                        .unwrap()
                })
                .collect();
            assert_eq!(locations, expected, "{url} {accept:?}");
            for p in &parts {
                assert_eq!(p.content_type(), "image/jpeg");
                let img = image::load_from_memory(&p.body).unwrap();
                assert_eq!((img.width(), img.height()), (256, 256));
            }
        }
        // PNG parts on request, and the same pixels as the instance's own
        // rendered resource.
        let r = get(
            &app,
            &url,
            &[("accept", "multipart/related; type=\"image/png\"")],
        )
        .await;
        let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
        assert_eq!(parts.len(), ct.len());
        let last = get(
            &app,
            &format!("{}/rendered", instance_path(&ct[ct.len() - 1])),
            &[("accept", "image/png")],
        )
        .await;
        assert_eq!(parts[ct.len() - 1].body, last.body);

        // A bare image type: the first image alone, named.
        let r = get(&app, &url, &[("accept", "image/jpeg")]).await;
        assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
        let img = decode(&r);
        assert_eq!((img.width(), img.height()), (256, 256));
        assert_eq!(r.header("content-location").unwrap(), expected[0]);

        // Neither an image nor a multipart of images.
        let r = get(&app, &url, &[("accept", "application/dicom")]).await;
        assert_eq!(r.status, 406);
    }
    let r = get(&app, "/dicom-web/studies/1.2.3.999/rendered", &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn thumbnails_fit_in_128() {
    let app = loaded_app().await;
    for study in [
        "ct-phantom",
        "ct-phantom-prior",
        "mr-head",
        "us-cine",
        "cr-chest",
    ] {
        let files = files_of(study);
        let f = &files[0];
        let study_uid = s(&f["study_instance_uid"]);
        let series_uid = s(&f["series_instance_uid"]);
        for url in [
            format!("/dicom-web/studies/{study_uid}/thumbnail"),
            format!("/dicom-web/studies/{study_uid}/series/{series_uid}/thumbnail"),
            format!("{}/thumbnail", instance_path(f)),
            format!("{}/frames/1/thumbnail", instance_path(f)),
        ] {
            let r = get(&app, &url, &[]).await;
            assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
            let img = decode(&r);
            assert!(
                img.width() <= 128 && img.height() <= 128,
                "{study} {url}: {}x{}",
                img.width(),
                img.height()
            );
            assert!(
                img.width() == 128 || img.height() == 128,
                "{study}: fills the box"
            );
        }
    }
    // The CT study thumbnail is the middle instance (13 of 24).
    let ct = files_of("ct-phantom");
    let r = get(
        &app,
        &format!(
            "/dicom-web/studies/{}/thumbnail",
            s(&ct[0]["study_instance_uid"])
        ),
        &[],
    )
    .await;
    assert_eq!(
        r.header("content-location").unwrap(),
        format!("{}/frames/1/thumbnail", ct_instance(13))
    );
    // A viewport overrides the default box.
    let img = decode(
        &get(
            &app,
            &format!("{}/thumbnail?viewport=32,32", ct_instance(1)),
            &[],
        )
        .await,
    );
    assert_eq!((img.width(), img.height()), (32, 32));
    let us = &files_of("us-cine")[0];
    let img = decode(&get(&app, &format!("{}/thumbnail", instance_path(us)), &[]).await);
    assert_eq!((img.width(), img.height()), (128, 96));
}

fn us16(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A small image object with the given photometric interpretation and
/// bits allocated, stored as explicit VR little endian.
fn odd_image(sop: &str, photometric: &str, bits: u16) -> Vec<u8> {
    let bytes_per_sample = usize::from(bits / 8);
    part10(&[
        (0x0008_0016, "UI", b"1.2.840.10008.5.1.4.1.1.7".to_vec()),
        (0x0008_0018, "UI", sop.as_bytes().to_vec()),
        (0x0008_0060, "CS", b"OT".to_vec()),
        (0x0010_0010, "PN", b"ODD^IMAGE".to_vec()),
        (0x0010_0020, "LO", b"ODD-1".to_vec()),
        (0x0020_000D, "UI", b"1.2.826.0.1.99.1".to_vec()),
        (0x0020_000E, "UI", b"1.2.826.0.1.99.1.1".to_vec()),
        (0x0020_0013, "IS", b"1".to_vec()),
        (0x0028_0002, "US", us16(1)),
        (0x0028_0004, "CS", photometric.as_bytes().to_vec()),
        (0x0028_0010, "US", us16(4)),
        (0x0028_0011, "US", us16(4)),
        (0x0028_0100, "US", us16(bits)),
        (0x0028_0101, "US", us16(bits)),
        (0x0028_0102, "US", us16(bits - 1)),
        (0x0028_0103, "US", us16(0)),
        (0x7FE0_0010, "OB", vec![7u8; 16 * bytes_per_sample]),
    ])
}

#[tokio::test]
async fn undecodable_is_406_and_the_server_keeps_serving() {
    let archive = loaded_archive().await;
    for (sop, pi, bits) in [
        ("1.2.826.0.1.99.1.1.1", "PALETTE COLOR", 8),
        ("1.2.826.0.1.99.1.1.2", "MONOCHROME2", 32),
    ] {
        let obj = odd_image(sop, pi, bits);
        archive.store(std::io::Cursor::new(obj)).await.unwrap();
    }
    let app = app(archive, DicomWebConfig::default());
    let base = "/dicom-web/studies/1.2.826.0.1.99.1/series/1.2.826.0.1.99.1.1/instances";
    let r = get(&app, &format!("{base}/1.2.826.0.1.99.1.1.1/rendered"), &[]).await;
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("PALETTE COLOR"), "{}", r.text());
    let r = get(&app, &format!("{base}/1.2.826.0.1.99.1.1.2/thumbnail"), &[]).await;
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("Bits Allocated 32"), "{}", r.text());
    let r = get(&app, "/dicom-web/studies/1.2.826.0.1.99.1/thumbnail", &[]).await;
    assert_eq!(r.status, 406);
    // Still serving.
    let img = decode(&get(&app, &format!("{}/rendered", ct_instance(3)), &[]).await);
    assert_eq!(img.width(), 256);
}

#[tokio::test]
async fn many_renders_at_once() {
    let app = app(
        loaded_archive().await,
        DicomWebConfig {
            pixel: Some(std::sync::Arc::new(imaging::service::PixelService::new(
                &pacs_core::Limits {
                    render_concurrency: 2,
                    ..pacs_core::Limits::default()
                },
                1 << 20,
            ))),
            ..DicomWebConfig::default()
        },
    );
    let mut tasks = Vec::new();
    for n in 1..=24 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = get(
                &app,
                &format!("{}/rendered?viewport=32,32", ct_instance(n)),
                &[],
            )
            .await;
            decode(&r).width()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 32);
    }
}

#[tokio::test]
async fn wado_uri_images() {
    let app = loaded_app().await;
    let f = files_of("ct-phantom")
        .into_iter()
        .find(|f| f["instance_number"] == 1)
        .unwrap();
    let q = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}",
        s(&f["study_instance_uid"]),
        s(&f["series_instance_uid"]),
        s(&f["sop_instance_uid"])
    );
    let r = get(&app, &q, &[]).await;
    assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
    assert_eq!(decode(&r).width(), 256);
    let r = get(
        &app,
        &format!("{q}&contentType=image/png&windowCenter=0&windowWidth=2"),
        &[],
    )
    .await;
    assert_eq!(r.header("content-type").unwrap(), "image/png");
    let img = decode(&r).to_luma8();
    assert_eq!(img.get_pixel(5, 5).0[0], 0);
    assert_eq!(img.get_pixel(65, 165).0[0], 255);
    let r = get(
        &app,
        &format!("{q}&contentType=image/jpeg&rows=64&columns=64&imageQuality=50"),
        &[],
    )
    .await;
    let img = decode(&r);
    assert_eq!((img.width(), img.height()), (64, 64));
    let img = decode(&get(&app, &format!("{q}&rows=100"), &[]).await);
    assert_eq!((img.width(), img.height()), (100, 100));
    let r = get(&app, &format!("{q}&contentType=image/gif,image/jpeg"), &[]).await;
    assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
    for bad in [
        "windowCenter=40",
        "imageQuality=0",
        "rows=0",
        "frameNumber=0",
        "region=0,0,1,1",
    ] {
        let r = get(&app, &format!("{q}&{bad}"), &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = get(&app, &format!("{q}&contentType=image/gif"), &[]).await;
    assert_eq!(r.status, 406);
    let r = get(&app, &format!("{q}&frameNumber=2"), &[]).await;
    assert_eq!(r.status, 404);

    let us = &files_of("us-cine")[0];
    let q = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&frameNumber=24",
        s(&us["study_instance_uid"]),
        s(&us["series_instance_uid"]),
        s(&us["sop_instance_uid"])
    );
    assert_eq!(decode(&get(&app, &q, &[]).await).width(), 320);
}

/// `/wado` and `/dicom-web` share the server's one pixel-work service (no
/// second pool): with its only slot taken, both answer 503; once it is
/// free, both render. (A node's bound: one node in the engines pass.)
#[tokio::test]
async fn wado_uri_and_rendered_share_one_pixel_work_bound() {
    let pixel = std::sync::Arc::new(imaging::service::PixelService::new(
        &pacs_core::Limits {
            render_concurrency: 1,
            pixel_queue_wait: std::time::Duration::ZERO,
            ..pacs_core::Limits::default()
        },
        1 << 20,
    ));
    let app = app_one_node(
        loaded_archive().await,
        DicomWebConfig {
            pixel: Some(pixel.clone()),
            ..DicomWebConfig::default()
        },
    );
    let f = files_of("ct-phantom")
        .into_iter()
        .find(|f| f["instance_number"] == 2)
        .unwrap();
    let wado = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}",
        s(&f["study_instance_uid"]),
        s(&f["series_instance_uid"]),
        s(&f["sop_instance_uid"])
    );
    let rendered = format!("{}/rendered", ct_instance(2));
    let held = pixel.reserve(1).await.unwrap();
    assert_eq!(get(&app, &wado, &[]).await.status, 503);
    assert_eq!(get(&app, &rendered, &[]).await.status, 503);
    drop(held);
    assert_eq!(decode(&get(&app, &wado, &[]).await).width(), 256);
    assert_eq!(decode(&get(&app, &rendered, &[]).await).width(), 256);
}
