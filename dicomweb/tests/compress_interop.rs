//! Compression on request, checked by a third-party decoder: every
//! uncompressed image of pydicom's real-world corpus goes in by STOW-RS,
//! comes back by WADO-RS as JPEG Lossless SV1 and as RLE Lossless, and
//! DCMTK (`dcmdjpeg`, `dcmdrle`) must decode each to the original samples;
//! 8-bit images also as JPEG Baseline, decoded close to the original.
//!
//! Needs `PACS_PYDICOM_DATA` (set by tests/run.sh) and DCMTK; without them
//! it prints SKIPPED, or fails when `PACS_REQUIRE_PEERS` is set.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::dicom::parse_part10;
use pacs_core::Limits;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const NATIVE: [&str; 3] = ["1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2"];

/// Samples of a Part 10 image (converted to Explicit VR LE first), each
/// masked to Bits Stored, colour-by-pixel: what a lossless codec must give
/// back (Planar Configuration may differ).
fn samples(part10: &[u8]) -> Vec<u32> {
    let le = imaging::transcode::transcode_part10(part10, EXPLICIT_LE).unwrap();
    let h = parse_part10(&le, true, &Limits::default()).unwrap();
    let bits = h.dataset.u16(0x0028_0100).unwrap();
    let stored = h.dataset.u16(0x0028_0101).unwrap_or(bits);
    let mask = if stored >= 32 {
        u32::MAX
    } else {
        (1u32 << stored) - 1
    };
    let pd = h.pixel_data.unwrap();
    let at = pd.value_offset as usize;
    let raw = &le[at..at + pd.length.unwrap() as usize];
    let values: Vec<u32> = match bits {
        8 => raw.iter().map(|b| u32::from(*b) & mask).collect(),
        16 => raw
            .chunks_exact(2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])) & mask)
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & mask)
            .collect(),
    };
    let spp = usize::from(h.dataset.u16(0x0028_0002).unwrap_or(1));
    let plane = usize::from(h.dataset.u16(0x0028_0010).unwrap())
        * usize::from(h.dataset.u16(0x0028_0011).unwrap());
    let frames: usize = h
        .dataset
        .string(0x0028_0008)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    // Padding past the last frame is not part of the image.
    let mut values = values;
    values.truncate(plane * spp * frames);
    if spp == 1 || h.dataset.u16(0x0028_0006) != Some(1) {
        return values;
    }
    let mut out = Vec::with_capacity(values.len());
    for frame in values.chunks(plane * spp) {
        for px in 0..plane {
            out.extend((0..spp).map(|s| frame[s * plane + px]));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_decodes_what_the_archive_compresses() {
    let Some(data) = std::env::var_os("PACS_PYDICOM_DATA") else {
        return skip_or_fail("PACS_PYDICOM_DATA is not set (tests/run.sh sets it)");
    };
    for tool in ["dcmdjpeg", "dcmdrle"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            return skip_or_fail(&format!("{tool} (DCMTK) is not installed"));
        }
    }
    let files = corpus_test_files(&data);
    let app = app(empty_archive().await, DicomWebConfig::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut decoded = [0usize; 3];
    let mut refused: Vec<String> = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let Ok(h) = parse_part10(&bytes, true, &Limits::default()) else {
            continue;
        };
        if !NATIVE.contains(&h.meta.transfer_syntax_uid.as_str()) || h.pixel_data.is_none() {
            continue;
        }
        let r = stow_one(&app, bytes.clone()).await;
        if r.status != 200 {
            continue; // refused at STOW (tested elsewhere)
        }
        let url = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let path = url.split_once("/dicom-web").unwrap().1.to_owned();
        let expected = samples(&bytes);
        for (k, (ts, tool)) in [
            ("1.2.840.10008.1.2.4.70", "dcmdjpeg"),
            ("1.2.840.10008.1.2.5", "dcmdrle"),
            ("1.2.840.10008.1.2.4.50", "dcmdjpeg"),
        ]
        .into_iter()
        .enumerate()
        {
            let accept =
                format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}");
            let back = get(&app, &format!("/dicom-web{path}"), &[("accept", &accept)]).await;
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if back.status == 406 {
                refused.push(format!("{name} as {ts}: {}", back.text()));
                continue;
            }
            assert_eq!(back.status, 200, "{name} as {ts}: {}", back.text());
            let parts = parse_multipart(&back.header("content-type").unwrap(), &back.body);
            let compressed = tmp.path().join(format!("{name}.{ts}.dcm"));
            let out = tmp.path().join(format!("{name}.{ts}.native.dcm"));
            std::fs::write(&compressed, &parts[0].body).unwrap();
            let run = std::process::Command::new(tool)
                .arg(&compressed)
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{tool} failed on {name} as {ts}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let got = samples(&std::fs::read(&out).unwrap());
            if ts.ends_with(".50") {
                // Lossy: close, not equal.
                assert_eq!(got.len(), expected.len(), "{name} as JPEG Baseline");
                let error: u64 = got
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                let mean = error as f64 / expected.len() as f64;
                assert!(mean < 6.0, "{name} as JPEG Baseline: mean error {mean}");
            } else {
                assert!(got == expected, "{name}: {tool} decodes other samples");
            }
            decoded[k] += 1;
        }
    }
    eprintln!(
        "DCMTK decoded {} JPEG Lossless and {} RLE objects identically, {} JPEG Baseline \
         closely; refused: {refused:#?}",
        decoded[0], decoded[1], decoded[2]
    );
    // Pinned pydicom 3.0.1: 8-, 16- and 32-bit, mono and RGB, planar, big
    // endian and padded images. The refusals are 1-bit and YBR_FULL_422
    // data, 32 bits for JPEG, palette and over 8 bits for JPEG Baseline.
    assert_eq!(decoded, [13, 18, 5], "refused: {refused:#?}");
}
