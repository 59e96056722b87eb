//! `render_frame` over the committed sample studies (see
//! sample-data/README.md for their exact content).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, VR};
use dicom_object::OpenFileOptions;
use imaging::render::{render_frame, Media, RenderError, RenderOptions, VoiFunction, Window};

fn sample(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sample-data/studies")
        .join(path);
    std::fs::read(p).unwrap()
}

fn png(window: Option<Window>) -> RenderOptions {
    RenderOptions {
        media: Media::Png,
        window,
        viewport: None,
    }
}

fn gray(bytes: &[u8]) -> image::GrayImage {
    image::load_from_memory(bytes).unwrap().to_luma8()
}

fn win(center: f64, width: f64, function: VoiFunction) -> Option<Window> {
    Some(Window {
        center,
        width,
        function,
    })
}

#[test]
fn ct_png_is_the_exact_window() {
    let ct = sample("ct-phantom/1/0001.dcm");
    // LINEAR (C.11.2.1.2.1), c = 0, w = 2: x <= -1 → 0; x > 0 → 255; x = 0
    // is the top of the ramp → 255.
    let r = render_frame(&ct, 1, &png(win(0.0, 2.0, VoiFunction::Linear))).unwrap();
    assert_eq!(r.media_type, "image/png");
    let img = gray(&r.bytes);
    assert_eq!(img.dimensions(), (256, 256));
    assert_eq!(img.get_pixel(2, 2).0[0], 0, "air");
    assert_eq!(img.get_pixel(128, 128).0[0], 255, "water, LINEAR");
    // LINEAR_EXACT: water is exactly mid-range, 127.5 rounded to 128.
    let r = render_frame(&ct, 1, &png(win(0.0, 2.0, VoiFunction::LinearExact))).unwrap();
    let img = gray(&r.bytes);
    assert_eq!(img.get_pixel(2, 2).0[0], 0, "air");
    assert_eq!(img.get_pixel(128, 128).0[0], 128, "water, LINEAR_EXACT");
    assert_eq!(img.get_pixel(128, 70).0[0], 255, "bone");
    // The file's own window (40/400, LINEAR): water → round(0.3985 * 255).
    let r = render_frame(&ct, 1, &png(None)).unwrap();
    let img = gray(&r.bytes);
    let expect = (((0.0 - 39.5) / 399.0 + 0.5) * 255.0_f64).round() as u8;
    assert_eq!(img.get_pixel(128, 128).0[0], expect);
    assert_eq!(img.get_pixel(128, 70).0[0], 255);
    assert_eq!(img.get_pixel(2, 2).0[0], 0);
}

#[test]
fn ct_jpeg_and_viewport() {
    let ct = sample("ct-phantom/1/0005.dcm");
    let start = Instant::now();
    let r = render_frame(&ct, 1, &RenderOptions::default()).unwrap();
    eprintln!("CT 256x256 frame rendered to JPEG in {:?}", start.elapsed());
    let start = Instant::now();
    for _ in 0..20 {
        render_frame(&ct, 1, &png(None)).unwrap();
    }
    eprintln!("CT 256x256 frame to PNG: {:?} each", start.elapsed() / 20);
    let us = sample("us-cine/1/0001.dcm");
    let start = Instant::now();
    render_frame(&us, 13, &RenderOptions::default()).unwrap();
    eprintln!("US 320x240 JPEG frame 13 to JPEG: {:?}", start.elapsed());
    assert_eq!(r.media_type, "image/jpeg");
    assert_eq!(&r.bytes[..2], &[0xFF, 0xD8]);
    assert_eq!(gray(&r.bytes).dimensions(), (256, 256));
    let r = render_frame(
        &ct,
        1,
        &RenderOptions {
            viewport: Some((64, 64)),
            ..RenderOptions::default()
        },
    )
    .unwrap();
    assert_eq!((r.width, r.height), (64, 64));
    assert_eq!(gray(&r.bytes).dimensions(), (64, 64));
    assert!(matches!(
        render_frame(&ct, 2, &RenderOptions::default()),
        Err(RenderError::FrameOutOfRange {
            frame: 2,
            frames: 1
        })
    ));
}

#[test]
fn mr_rle_cr_and_us_jpeg_render() {
    let mr = render_frame(&sample("mr-head/1/0008.dcm"), 1, &png(None)).unwrap();
    let img = gray(&mr.bytes);
    assert_eq!(img.dimensions(), (192, 192));
    assert_eq!(img.get_pixel(0, 0).0[0], 0, "background");
    assert!(img.get_pixel(96, 96).0[0] > 0, "head");

    let cr = render_frame(&sample("cr-chest/1/0001.dcm"), 1, &png(None)).unwrap();
    assert_eq!(gray(&cr.bytes).dimensions(), (512, 512));

    let us = sample("us-cine/1/0001.dcm");
    for frame in [1, 13, 24] {
        let r = render_frame(&us, frame, &png(None)).unwrap();
        let img = image::load_from_memory(&r.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        assert!(matches!(img, image::DynamicImage::ImageRgb8(_)));
    }
    assert!(matches!(
        render_frame(&us, 25, &png(None)),
        Err(RenderError::FrameOutOfRange { frames: 24, .. })
    ));
}

#[test]
fn jpeg_ls_without_charls_is_unsupported() {
    let ct = sample("ct-phantom/1/0001.dcm");
    let mut obj = OpenFileOptions::new()
        .from_reader(std::io::Cursor::new(&ct))
        .unwrap();
    obj.update_meta(|m| m.transfer_syntax = "1.2.840.10008.1.2.4.80\0".to_owned());
    obj.put(DataElement::new(
        dicom_dictionary_std::tags::PIXEL_DATA,
        VR::OB,
        // A JPEG-LS frame header (SOF55, ISO/IEC 14495-1 C.2.2) that agrees
        // with the image (16 bits, 256 x 256, one component), so the
        // refusal is about the syntax, not a malformed stream.
        PixelFragmentSequence::new(
            vec![],
            vec![vec![
                0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 0x10, 0x01, 0x00, 0x01, 0x00, 0x01, 0x01, 0x11,
                0x00, 0xFF, 0xD9,
            ]],
        ),
    ));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    match render_frame(&bytes, 1, &RenderOptions::default()) {
        Err(RenderError::Unsupported { reason }) => {
            assert!(reason.contains("1.2.840.10008.1.2.4.80"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
