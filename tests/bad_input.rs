//! Bad input through `pacs import`: every bad file is rejected with a reason,
//! nothing is written outside the data dir, and good files in the same run
//! are kept.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn bad_files_are_rejected_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(input.join(name), bytes).unwrap();

    let good = small_object("1.2.826.1", "1.2.826.1.1", "1.2.826.1.1.1");
    write("00-good.dcm", &good);
    write("01-empty.dcm", b"");
    write("02-text.dcm", b"hello, this is not DICOM at all");
    write("03-truncated-header.dcm", &good[..200]);
    // Cut inside Pixel Data: the declared length runs past the end.
    write("04-truncated-pixels.dcm", &good[..good.len() - 10]);
    write(
        "05-traversal-study.dcm",
        &small_object("../../x", "1.2.826.2.1", "1.2.826.2.1.1"),
    );
    let long = format!("1.{}", "2".repeat(198));
    write(
        "06-long-uid.dcm",
        &small_object("1.2.826.3", &long, "1.2.826.3.1.1"),
    );
    write(
        "07-traversal-sop.dcm",
        &small_object("1.2.826.4", "1.2.826.4.1", "/etc/passwd"),
    );
    // An element declaring 0xFFFFFFF0 bytes.
    let mut absurd = good.clone();
    let pos = absurd
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    absurd.truncate(pos);
    absurd.extend_from_slice(&[
        0x10, 0x00, 0x10, 0x00, b'U', b'N', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ]);
    write("08-absurd-length.dcm", &absurd);
    write(
        "09-missing-uids.dcm",
        &part10(&[
            (0x0008_0016, "UI", b"1.2.840.10008.5.1.4.1.1.2".to_vec()),
            (0x0008_0018, "UI", b"1.2.826.5.1.1".to_vec()),
            (0x0010_0010, "PN", b"NO^STUDY".to_vec()),
        ]),
    );
    let mut zeros = vec![0u8; 132];
    zeros[128..132].copy_from_slice(b"DICX");
    write("10-bad-magic.dcm", &zeros);

    let dir = tmp.path().join("data");
    let before_outside = tree(tmp.path());
    let report = tmp.path().join("report.json");
    let o = pacs(
        &dir,
        &[
            "import",
            input.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "rejections give exit code 3: {}",
        stderr(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["imported"], 1, "{r:#}");
    let rejected = r["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 10, "{r:#}");
    let reason = |name: &str| -> String {
        rejected
            .iter()
            .find(|x| x["path"].as_str().unwrap().ends_with(name))
            .map(|x| x["reason"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{name} not rejected: {r:#}"))
    };
    for (name, words) in [
        ("01-empty.dcm", "DICM"),
        ("02-text.dcm", "DICM"),
        ("03-truncated-header.dcm", "not a valid DICOM object"),
        ("04-truncated-pixels.dcm", "not a valid DICOM object"),
        ("05-traversal-study.dcm", "StudyInstanceUID"),
        ("06-long-uid.dcm", "SeriesInstanceUID"),
        ("07-traversal-sop.dcm", "SOPInstanceUID"),
        ("08-absurd-length.dcm", "limit"),
        ("09-missing-uids.dcm", "StudyInstanceUID is missing"),
        ("10-bad-magic.dcm", "DICM"),
    ] {
        let why = reason(name);
        assert!(
            why.contains(words),
            "{name}: reason {why:?} should mention {words:?}"
        );
    }

    // Nothing was written outside the data dir, and inside it only the good
    // object's blob exists.
    let mut after_outside = tree(tmp.path());
    after_outside.retain(|p| !p.starts_with("data") && p != "report.json");
    assert_eq!(after_outside, before_outside);
    let blobs: Vec<String> = tree(&dir.join("objects"))
        .into_iter()
        .filter(|p| p.ends_with(".dcm"))
        .collect();
    assert_eq!(
        blobs,
        vec!["1.2.826.1/1.2.826.1.1/1.2.826.1.1.1.dcm".to_string()]
    );
    assert!(pacs(&dir, &["verify"]).status.success());
}
