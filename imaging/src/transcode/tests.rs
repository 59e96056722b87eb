//! Transcoding the committed sample studies and hand-built broken objects.
#![allow(clippy::unwrap_used)]

use super::*;
use pacs_core::dicom::{parse_dataset, DataSet, FileMeta, TransferSyntax};
use std::path::{Path, PathBuf};

fn studies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-data/studies")
}

fn sample(rel: &str) -> Vec<u8> {
    std::fs::read(studies().join(rel)).unwrap()
}

fn files(study: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![studies().join(study)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "dcm") {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// A bare data set in `ts` read back with the archive's own parser, and
/// its native pixel data bytes (little endian).
fn read_back(dataset: &[u8], ts: &str) -> (DataSet, Vec<u8>) {
    let syntax = TransferSyntax::from_uid(ts).unwrap();
    let header = parse_dataset(dataset, &syntax, true, &Limits::default()).unwrap();
    let pd = header.pixel_data.expect("no pixel data");
    let start = pd.value_offset as usize;
    let len = pd.length.expect("pixel data not native") as usize;
    let mut pixels = if syntax.deflated() {
        inflate(dataset)[start..start + len].to_vec()
    } else {
        dataset[start..start + len].to_vec()
    };
    if syntax.big_endian() && header.dataset.u16(0x0028_0100) == Some(16) {
        for w in pixels.chunks_exact_mut(2) {
            w.swap(0, 1);
        }
    }
    (header.dataset, pixels)
}

fn inflate(raw: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A 192×192 16-bit RLE frame decoded by the archive's own RLE codec,
/// which shares no code with the `dicom-pixeldata` decoder under test.
fn mr_rle_decode(fragment: &[u8]) -> Vec<u8> {
    let layout = crate::codec::FrameLayout {
        rows: 192,
        columns: 192,
        samples_per_pixel: 1,
        bytes_per_sample: 2,
    };
    crate::codec::rle::decode_frame(fragment, layout).unwrap()
}

/// The native pixel bytes of an uncompressed Part 10 file.
fn native_pixels(part10: &[u8]) -> Vec<u8> {
    let header = parse_part10(part10, true, &Limits::default()).unwrap();
    let pd = header.pixel_data.unwrap();
    let start = pd.value_offset as usize;
    part10[start..start + pd.length.unwrap() as usize].to_vec()
}

/// The fragments of the encapsulated Pixel Data of a Part 10 file (PS3.5
/// A.4), Basic Offset Table item excluded.
fn fragments(part10: &[u8]) -> Vec<Vec<u8>> {
    let header = parse_part10(part10, true, &Limits::default()).unwrap();
    let mut at = header.pixel_data.unwrap().value_offset as usize;
    let mut out = Vec::new();
    loop {
        let tag = (
            u16::from_le_bytes([part10[at], part10[at + 1]]),
            u16::from_le_bytes([part10[at + 2], part10[at + 3]]),
        );
        let len = u32::from_le_bytes(part10[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8;
        if tag == (0xFFFE, 0xE0DD) {
            break;
        }
        out.push(part10[at..at + len].to_vec());
        at += len;
    }
    out.remove(0);
    out
}

#[test]
fn rle_mr_to_explicit_and_implicit_le_is_exact() {
    let mr = files("mr-head");
    assert_eq!(mr.len(), 16);
    for file in &mr {
        let frags = fragments(file);
        assert_eq!(frags.len(), 1);
        let expected = mr_rle_decode(&frags[0]);
        for ts in [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN] {
            let out = transcode(file, ts).unwrap();
            let (ds, pixels) = read_back(&out, ts);
            assert!(pixels == expected, "MR pixels differ in {ts}");
            assert_eq!(ds.string(0x0028_0004).as_deref(), Some("MONOCHROME2"));
            assert_eq!(ds.u16(0x0028_0100), Some(16));
            assert_eq!(ds.u16(0x0028_0101), Some(12));
            assert_eq!(ds.string(0x0028_2110).as_deref(), Some("00"));
            assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Trần^Thị Bích"));
        }
    }
}

#[test]
fn jpeg_us_to_explicit_le_is_rgb_interleaved() {
    let us = files("us-cine");
    assert_eq!(us.len(), 1);
    let frags = fragments(&us[0]);
    let out = transcode(&us[0], EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
    let (ds, pixels) = read_back(&out, EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(ds.string(0x0028_0004).as_deref(), Some("RGB"));
    assert_eq!(ds.u16(0x0028_0006), Some(0));
    assert_eq!(ds.u16(0x0028_0002), Some(3));
    assert_eq!(ds.string(0x0028_2110).as_deref(), Some("01"));
    assert_eq!(ds.string(0x0028_0008).as_deref(), Some("24"));
    let frame_len = 240 * 320 * 3;
    assert_eq!(pixels.len(), 24 * frame_len);
    // Each frame against another JPEG decoder (the `image` crate's); IDCT
    // rounding may differ by a level or two.
    assert_eq!(frags.len(), 24);
    for (i, frag) in frags.iter().enumerate() {
        let reference = image::load_from_memory_with_format(frag, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8()
            .into_raw();
        let ours = &pixels[i * frame_len..(i + 1) * frame_len];
        let worst = reference
            .iter()
            .zip(ours)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 3, "frame {i} differs by up to {worst}");
    }
}

#[test]
fn uncompressed_syntaxes_round_trip() {
    let ct = files("ct-phantom").remove(0);
    let original = native_pixels(&ct);
    let mut via = Vec::new();
    for ts in [
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ] {
        let out = transcode(&ct, ts).unwrap();
        let (ds, pixels) = read_back(&out, ts);
        assert!(pixels == original, "pixels differ in {ts}");
        assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Nguyễn^Văn An"));
        // And back to Explicit VR LE through a Part 10 file in `ts`.
        let file = transcode_part10(&ct, ts).unwrap();
        let header = parse_part10(&file, true, &Limits::default()).unwrap();
        assert_eq!(header.meta.transfer_syntax_uid, ts);
        assert_eq!(
            header.meta.implementation_class_uid,
            pacs_core::archive::IMPLEMENTATION_CLASS_UID
        );
        let back = transcode_part10(&file, EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        assert!(native_pixels(&back) == original, "{ts} round trip");
        via.push(transcode(&back, EXPLICIT_VR_LITTLE_ENDIAN).unwrap());
    }
    // Every route gives the same Explicit VR LE data set.
    assert!(via.windows(2).all(|w| w[0] == w[1]));
    // Same syntax: the stored bytes, untouched.
    let header = parse_part10(&ct, true, &Limits::default()).unwrap();
    assert!(
        transcode(&ct, EXPLICIT_VR_LITTLE_ENDIAN).unwrap() == ct[header.dataset_offset as usize..]
    );
    assert!(transcode_part10(&ct, EXPLICIT_VR_LITTLE_ENDIAN).unwrap() == ct);
}

#[test]
fn unsupported_compressed_targets_are_refused() {
    let ct = sample("ct-phantom/1/0001.dcm");
    for ts in [
        JPEG_EXTENDED,
        JPEG_2000_LOSSLESS,
        JPEG_LS_LOSSLESS,
        "1.2.3.4",
    ] {
        match transcode(&ct, ts) {
            Err(TranscodeError::Unsupported { reason }) => {
                assert!(reason.contains("cannot encode"), "{reason}")
            }
            other => panic!("{ts}: {other:?}"),
        }
    }
    // 16-bit signed CT to 8-bit JPEG would change what the image means.
    match transcode(&ct, JPEG_BASELINE) {
        Err(TranscodeError::Unsupported { reason }) => {
            assert!(reason.contains("JPEG Lossless"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(can_transcode(RLE_LOSSLESS, IMPLICIT_VR_LITTLE_ENDIAN));
    assert!(can_transcode(JPEG_BASELINE, EXPLICIT_VR_LITTLE_ENDIAN));
    assert!(can_transcode(RLE_LOSSLESS, RLE_LOSSLESS));
    assert!(can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS));
    assert!(can_transcode(RLE_LOSSLESS, JPEG_LOSSLESS_SV1));
    assert!(!can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, JPEG_2000));
    assert!(!can_transcode(JPEG_LS_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN));
    assert!(is_lossy_target(JPEG_BASELINE) && !is_lossy_target(JPEG_LOSSLESS_SV1));
}

/// Native pixel bytes of `part10` (any syntax) as Explicit VR LE.
fn decoded(part10: &[u8]) -> Vec<u8> {
    native_pixels(&transcode_part10(part10, EXPLICIT_VR_LITTLE_ENDIAN).unwrap())
}

#[test]
fn lossless_targets_round_trip_every_sample_exactly() {
    // CT: 16-bit signed; CR: 12 of 16 bits; MR: stored as RLE; US: 24
    // RGB frames decoded from JPEG Baseline.
    for rel in [
        "ct-phantom/1/0003.dcm",
        "cr-chest/1/0001.dcm",
        "mr-head/1/0003.dcm",
        "us-cine/1/0001.dcm",
    ] {
        let original = sample(rel);
        let reference = decoded(&original);
        for ts in [RLE_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LOSSLESS] {
            let compressed = transcode_part10(&original, ts).unwrap();
            let header = parse_part10(&compressed, true, &Limits::default()).unwrap();
            assert_eq!(header.meta.transfer_syntax_uid, ts);
            let frames = fragments(&compressed);
            let expected_frames = if rel.starts_with("us-") { 24 } else { 1 };
            assert_eq!(
                frames.len(),
                expected_frames,
                "{rel} {ts}: one fragment per frame"
            );
            assert!(frames.iter().all(|f| f.len() % 2 == 0));
            if ts != RLE_LOSSLESS {
                assert_eq!(&frames[0][..4], &[0xFF, 0xD8, 0xFF, 0xC3], "{rel}: SOF3");
            }
            let total: usize = frames.iter().map(Vec::len).sum();
            assert!(
                total < reference.len(),
                "{rel} {ts}: {total} >= {}",
                reference.len()
            );
            assert_eq!(decoded(&compressed), reference, "{rel} through {ts}");
            // Not lossy: no flag added where there was none.
            if !rel.starts_with("us-") {
                let flag = header.dataset.string(0x0028_2110);
                assert_ne!(flag.as_deref(), Some("01"), "{rel} {ts}");
            }
        }
    }
}

#[test]
fn jpeg_baseline_of_rgb_is_close_and_flagged_lossy() {
    let original = sample("us-cine/1/0001.dcm");
    let rgb = transcode_part10(&original, EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
    let reference = native_pixels(&rgb);
    let jpeg = transcode_part10(&rgb, JPEG_BASELINE).unwrap();
    let header = parse_part10(&jpeg, true, &Limits::default()).unwrap();
    let ds = &header.dataset;
    assert_eq!(ds.string(0x0028_0004).as_deref(), Some("YBR_FULL_422"));
    assert_eq!(ds.string(0x0028_2110).as_deref(), Some("01"));
    let methods = ds.string(0x0028_2114).unwrap_or_default();
    assert!(methods.ends_with("ISO_10918_1"), "{methods}");
    assert_eq!(fragments(&jpeg).len(), 24);
    let back = decoded(&jpeg);
    assert_eq!(back.len(), reference.len());
    let error: u64 = back
        .iter()
        .zip(&reference)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = error as f64 / reference.len() as f64;
    assert!(mean < 4.0, "mean absolute error {mean}");
}

/// A small Part 10 image in `ts` with encapsulated `fragments` (explicit
/// VR little endian data set, empty Basic Offset Table).
pub(crate) fn encapsulated(ts: &str, bits: (u16, u16), spp: u16, fragments: &[&[u8]]) -> Vec<u8> {
    fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == b"UI" { 0 } else { b' ' });
        }
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(&v);
    }
    let meta = FileMeta {
        transfer_syntax_uid: ts.into(),
        media_storage_sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
        media_storage_sop_instance_uid: "2.25.4242".into(),
        implementation_class_uid: "2.25.1".into(),
        implementation_version_name: None,
        source_ae_title: None,
    };
    let mut out = encode_file_meta(&meta);
    el(&mut out, 0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7");
    el(&mut out, 0x0008_0018, b"UI", b"2.25.4242");
    el(&mut out, 0x0028_0002, b"US", &spp.to_le_bytes());
    let pmi: &[u8] = if spp == 3 {
        b"YBR_FULL_422"
    } else {
        b"MONOCHROME2"
    };
    el(&mut out, 0x0028_0004, b"CS", pmi);
    el(&mut out, 0x0028_0010, b"US", &8u16.to_le_bytes());
    el(&mut out, 0x0028_0011, b"US", &8u16.to_le_bytes());
    el(&mut out, 0x0028_0100, b"US", &bits.0.to_le_bytes());
    el(&mut out, 0x0028_0101, b"US", &bits.1.to_le_bytes());
    el(&mut out, 0x0028_0102, b"US", &(bits.1 - 1).to_le_bytes());
    el(&mut out, 0x0028_0103, b"US", &0u16.to_le_bytes());
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    for f in fragments {
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

#[test]
fn twelve_bit_jpeg_extended_is_refused_with_a_reason() {
    let garbage: &[u8] = &[0xFF, 0xD8, 0xFF, 0xC1, 1, 2, 3, 4, 5, 6];
    let file = encapsulated(JPEG_EXTENDED, (16, 12), 1, &[garbage]);
    match transcode(&file, EXPLICIT_VR_LITTLE_ENDIAN) {
        Err(TranscodeError::Unsupported { reason }) => {
            assert!(reason.contains("12-bit"), "{reason}");
            assert!(reason.contains("JPEG Extended"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_refusals_say_why() {
    let file = encapsulated(JPEG_LS_LOSSLESS, (16, 16), 1, &[&[0xFF, 0xD8]]);
    let e = transcode(&file, EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
    assert!(e.to_string().contains("JPEG-LS"), "{e}");
    let file = encapsulated(RLE_LOSSLESS, (32, 32), 1, &[&[0; 64]]);
    let e = transcode(&file, EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
    assert!(e.to_string().contains("32 bits allocated"), "{e}");
    let file = encapsulated("1.2.840.10008.1.2.4.100", (8, 8), 1, &[&[0; 64]]);
    let e = transcode(&file, EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
    assert!(matches!(e, TranscodeError::Unsupported { .. }), "{e}");
    let e = transcode(b"not dicom at all", EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
    assert!(matches!(e, TranscodeError::Invalid { .. }), "{e}");
}

#[test]
fn garbage_pixel_data_is_an_error_not_a_panic() {
    let jpeg_header_only: &[u8] = &[0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0];
    let cases: Vec<(&str, u16, Vec<&[u8]>)> = vec![
        (JPEG_BASELINE, 1, vec![&[0xFF, 0xD8, 1, 2, 3, 4]]),
        (JPEG_BASELINE, 3, vec![jpeg_header_only]),
        (JPEG_BASELINE, 1, vec![]),
        (JPEG_LOSSLESS_SV1, 1, vec![&[0xFF, 0xD8, 0xFF, 0xC3, 0, 0]]),
        (RLE_LOSSLESS, 1, vec![&[1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]]),
        (RLE_LOSSLESS, 1, vec![&[9; 64]]),
        (
            JPEG_2000_LOSSLESS,
            1,
            vec![&[0xFF, 0x4F, 0xFF, 0x51, 0, 1, 2]],
        ),
    ];
    for (ts, spp, frags) in cases {
        let file = encapsulated(ts, (8, 8), spp, &frags);
        let r = transcode(&file, EXPLICIT_VR_LITTLE_ENDIAN);
        assert!(
            r.is_err(),
            "{ts}: garbage decoded to {:?}",
            r.map(|v| v.len())
        );
    }
}

#[test]
fn truncated_and_corrupted_samples_never_panic() {
    for rel in ["mr-head/1/0001.dcm", "us-cine/1/0001.dcm"] {
        let file = sample(rel);
        let header = parse_part10(&file, true, &Limits::default()).unwrap();
        let pd = header.pixel_data.unwrap().value_offset as usize;
        for cut in [pd + 4, pd + 20, pd + 200, file.len() - 100, file.len() - 9] {
            let _ = transcode(&file[..cut], EXPLICIT_VR_LITTLE_ENDIAN);
        }
        for (i, at) in (pd + 16..file.len()).step_by(997).enumerate() {
            let mut bad = file.clone();
            bad[at] ^= 0x5A_u8.wrapping_add(i as u8) | 1;
            let _ = transcode(&bad, EXPLICIT_VR_LITTLE_ENDIAN);
        }
    }
}
