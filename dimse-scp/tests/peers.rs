//! Interoperability with real third-party peers over TCP on 127.0.0.1:
//! DCMTK (`echoscu`, `storescu`, `dcmconv`, `dcmcjpeg`, `dcmcjpls`) and
//! pynetdicom. Each stored instance is read back through the archive and
//! compared with what was sent.
//!
//! A missing peer fails the test when `PACS_REQUIRE_PEERS` is set, and
//! otherwise prints SKIPPED and passes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dicom_ul::Pdu;
use dimse_scp::Status;
use pacs_core::Archive;

const STORESCU: &str = "/usr/bin/storescu";
const ECHOSCU: &str = "/usr/bin/echoscu";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const RLE: &str = "1.2.840.10008.1.2.5";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

fn ct(n: u32) -> PathBuf {
    sample_dir().join(format!("ct-phantom/1/{n:04}.dcm"))
}

async fn storescu(port: u16, options: &[&str], files: &[&Path]) -> Run {
    let mut args: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    args.extend(["-aet".into(), "STORESCU".into(), "-aec".into(), AE.into()]);
    args.extend(["127.0.0.1".into(), port.to_string()]);
    args.extend(files.iter().map(|f| f.display().to_string()));
    run(STORESCU, &args, Duration::from_secs(300)).await
}

/// Reads the instance of `original` back from the archive: stored in
/// `expect_ts`, with the calling AE recorded, and byte-identical data set
/// when the syntax did not change on the way.
async fn check_stored(archive: &Archive, original: &Path, expect_ts: &str) {
    let original_bytes = std::fs::read(original).unwrap();
    let sop = sop_instance_of(&original_bytes);
    let stored = archive
        .retrieve_bytes(&sop)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", original.display()));
    let header =
        pacs_core::dicom::parse_part10(&stored, true, &pacs_core::Limits::default()).unwrap();
    assert_eq!(
        header.meta.transfer_syntax_uid,
        expect_ts,
        "{}",
        original.display()
    );
    assert_eq!(header.meta.media_storage_sop_instance_uid, sop.as_str());
    assert_eq!(header.meta.source_ae_title.as_deref(), Some("STORESCU"));
    if transfer_syntax_of(&original_bytes) == expect_ts {
        assert!(
            dataset_of(&stored) == dataset_of(&original_bytes),
            "{}: stored data set differs from the file's",
            original.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_verification() {
    if !peer_available(ECHOSCU, "echoscu_verification") {
        return;
    }
    let server = start(|_| {}).await;
    let ok = echoscu(server.port(), AE).await;
    assert!(ok.success, "{}", ok.output);
    let wrong = echoscu(server.port(), "NOT-PACS").await;
    assert!(!wrong.success);
    assert!(
        wrong
            .output
            .to_lowercase()
            .contains("called ae title not recognized"),
        "{}",
        wrong.output
    );
    assert!(echoscu(server.port(), AE).await.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_each_proposal() {
    if !peer_available(STORESCU, "storescu_each_proposal") {
        return;
    }
    let server = start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    // Lossless compressed copies made by DCMTK itself (JPEG lossless SV1,
    // JPEG-LS lossless) of two CT slices.
    let sv1 = tmp.path().join("sv1.dcm");
    let jls = tmp.path().join("jls.dcm");
    let have_codecs = peer_available("/usr/bin/dcmcjpeg", "storescu_each_proposal (JPEG)")
        && peer_available("/usr/bin/dcmcjpls", "storescu_each_proposal (JPEG-LS)");
    if have_codecs {
        let r = run(
            "/usr/bin/dcmcjpeg",
            &[ct(10).display().to_string(), sv1.display().to_string()],
            Duration::from_secs(60),
        )
        .await;
        assert!(r.success, "{}", r.output);
        let r = run(
            "/usr/bin/dcmcjpls",
            &[ct(11).display().to_string(), jls.display().to_string()],
            Duration::from_secs(60),
        )
        .await;
        assert!(r.success, "{}", r.output);
    }
    let mr = sample_dir().join("mr-head/1/0001.dcm");
    let us = sample_dir().join("us-cine/1/0001.dcm");
    let mut cases: Vec<(&str, PathBuf, &str)> = vec![
        // Uncompressed files: an encapsulated syntax in a context of its
        // own is accepted, but storescu then uses the uncompressed context
        // it also proposed, so nothing is recompressed.
        ("-xs", ct(1), EXPLICIT_LE),
        ("-xv", ct(2), EXPLICIT_LE),
        ("-xe", ct(3), EXPLICIT_LE),
        // Big endian is offered with little endian in one context: ours is
        // little endian first.
        ("-xb", ct(4), EXPLICIT_LE),
        ("-xi", ct(5), IMPLICIT_LE),
        // Deflate is proposed alone in a context and accepted.
        ("-xd", ct(6), DEFLATED),
        // Compressed files stay as they were sent.
        ("-xr", mr, RLE),
        ("-xy", us, JPEG_BASELINE),
    ];
    if have_codecs {
        cases.push(("-xs", sv1, JPEG_LOSSLESS_SV1));
        cases.push(("-xt", jls, JPEG_LS_LOSSLESS));
    }
    for (flag, file, expect_ts) in &cases {
        let r = storescu(server.port(), &[flag], &[file]).await;
        assert!(
            r.success,
            "storescu {flag} {}: {}",
            file.display(),
            r.output
        );
        check_stored(&server.archive, file, expect_ts).await;
    }
    assert_eq!(
        server.archive.stats().await.unwrap().instances,
        cases.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_endian_data_set_is_stored_as_sent() {
    if !peer_available("/usr/bin/dcmconv", "big_endian_data_set_is_stored_as_sent") {
        return;
    }
    let server = start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let be = tmp.path().join("be.dcm");
    let r = run(
        "/usr/bin/dcmconv",
        &[
            "+tb".into(),
            ct(7).display().to_string(),
            be.display().to_string(),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(r.success, "{}", r.output);
    let file = std::fs::read(&be).unwrap();
    assert_eq!(transfer_syntax_of(&file), BIG_ENDIAN);
    let sop = sop_instance_of(&file);
    // Only big endian is offered: the last resort of our preference list.
    let mut scu = Scu::connect(server.addr).await;
    let answer = scu
        .request(association_rq(
            "BESCU",
            AE,
            vec![pc(1, CT_STORAGE, &[BIG_ENDIAN])],
        ))
        .await;
    let Pdu::AssociationAC(ac) = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(ac.presentation_contexts[0].transfer_syntax, BIG_ENDIAN);
    let dataset = dataset_of(&file);
    let rsp = scu.store(1, 1, CT_STORAGE, sop.as_str(), &dataset).await;
    assert_eq!(rsp.status, Status::SUCCESS);
    scu.release().await;
    let stored = server.archive.retrieve_bytes(&sop).await.unwrap();
    assert_eq!(transfer_syntax_of(&stored), BIG_ENDIAN);
    assert!(dataset_of(&stored) == dataset);
}

/// A Part 10 multi-frame object above 5 MB (12 frames of 512 x 512 x 16
/// bits), built byte by byte.
fn large_multiframe(sop: &str) -> Vec<u8> {
    let frames = 12usize;
    let pixels: Vec<u8> = (0..frames * 512 * 512 * 2)
        .map(|i| (i % 251) as u8)
        .collect();
    sample_data::synthetic::part10(&[
        (0x0008_0016, "UI", b"1.2.840.10008.5.1.4.1.1.2.1".to_vec()),
        (0x0008_0018, "UI", sop.as_bytes().to_vec()),
        (0x0008_0060, "CS", b"CT".to_vec()),
        (0x0010_0010, "PN", b"LARGE^OBJECT".to_vec()),
        (0x0010_0020, "LO", b"LARGE-1".to_vec()),
        (0x0020_000D, "UI", b"1.2.826.0.1.3680043.10.2".to_vec()),
        (0x0020_000E, "UI", b"1.2.826.0.1.3680043.10.2.1".to_vec()),
        (0x0028_0002, "US", 1u16.to_le_bytes().to_vec()),
        (0x0028_0004, "CS", b"MONOCHROME2".to_vec()),
        (0x0028_0008, "IS", frames.to_string().into_bytes()),
        (0x0028_0010, "US", 512u16.to_le_bytes().to_vec()),
        (0x0028_0011, "US", 512u16.to_le_bytes().to_vec()),
        (0x0028_0100, "US", 16u16.to_le_bytes().to_vec()),
        (0x0028_0101, "US", 16u16.to_le_bytes().to_vec()),
        (0x0028_0102, "US", 15u16.to_le_bytes().to_vec()),
        (0x0028_0103, "US", 0u16.to_le_bytes().to_vec()),
        (0x7FE0_0010, "OW", pixels),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_large_multiframe() {
    if !peer_available(STORESCU, "storescu_large_multiframe") {
        return;
    }
    let server = start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("large.dcm");
    std::fs::write(&path, large_multiframe("1.2.826.0.1.3680043.10.2.1.1")).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 6 * 1024 * 1024);
    let t0 = Instant::now();
    let r = storescu(server.port(), &["-xe"], &[&path]).await;
    assert!(r.success, "{}", r.output);
    println!(
        "storescu of a {} byte object: {:?}",
        std::fs::metadata(&path).unwrap().len(),
        t0.elapsed()
    );
    check_stored(&server.archive, &path, EXPLICIT_LE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_many_files_one_association() {
    if !peer_available(STORESCU, "storescu_many_files_one_association") {
        return;
    }
    let server = start(|_| {}).await;
    let dirs = ["ct-phantom", "ct-phantom-prior", "cr-chest"].map(|d| sample_dir().join(d));
    let files: Vec<PathBuf> = dirs.iter().flat_map(|d| files_under(d)).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let t0 = Instant::now();
    let r = storescu(server.port(), &["-v"], &refs).await;
    assert!(r.success, "{}", r.output);
    assert_eq!(
        r.output.matches("Requesting Association").count(),
        1,
        "{}",
        r.output
    );
    println!(
        "storescu of {} files over one association: {:?}",
        files.len(),
        t0.elapsed()
    );
    for f in &files {
        check_stored(&server.archive, f, EXPLICIT_LE).await;
    }
    assert_eq!(
        server.archive.stats().await.unwrap().instances,
        files.len() as u64
    );
    // Sent again: already present, still success.
    let r = storescu(server.port(), &[], &refs[..3]).await;
    assert!(r.success, "{}", r.output);
    assert_eq!(
        server.archive.stats().await.unwrap().instances,
        files.len() as u64
    );
}

/// 200 synthetic 512 x 512 CT slices over one association, timed. Run with
/// `cargo test -p dimse-scp --release --test peers -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_storescu_200_ct() {
    if !peer_available(STORESCU, "bench_storescu_200_ct") {
        return;
    }
    let server = start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..200 {
        let sop = format!("1.2.826.0.1.3680043.10.3.1.{}", i + 1);
        let bytes = sample_data::synthetic::object(&sample_data::synthetic::Spec {
            study: "1.2.826.0.1.3680043.10.3",
            series: "1.2.826.0.1.3680043.10.3.1",
            sop: &sop,
            pixel_bytes: 512 * 512 * 2,
            ..Default::default()
        });
        let path = tmp.path().join(format!("{i:04}.dcm"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let t0 = Instant::now();
    let r = storescu(server.port(), &[], &refs).await;
    let took = t0.elapsed();
    assert!(r.success, "{}", r.output);
    let stats = server.archive.stats().await.unwrap();
    assert_eq!(stats.instances, 200);
    println!(
        "BENCH storescu 200 CT ({} MB) over one association: {:.2} s ({:.1} instances/s)",
        stats.total_bytes / 1_000_000,
        took.as_secs_f64(),
        200.0 / took.as_secs_f64()
    );
}

const PYNETDICOM_SCRIPT: &str = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification, CTImageStorage
port, path = int(sys.argv[1]), sys.argv[2]
ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(Verification)
ae.add_requested_context(CTImageStorage)
assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
assert assoc.is_established, "association not established"
status = assoc.send_c_echo()
print("ECHO 0x{0:04X}".format(status.Status))
status = assoc.send_c_store(dcmread(path))
print("STORE 0x{0:04X}".format(status.Status))
assoc.release()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_echo_and_store() {
    if !pynetdicom_available("pynetdicom_echo_and_store") {
        return;
    }
    let server = start(|_| {}).await;
    let file = ct(12);
    let args = vec![
        "-c".to_string(),
        PYNETDICOM_SCRIPT.into(),
        server.port().to_string(),
        file.display().to_string(),
    ];
    let r = run(&python(), &args, Duration::from_secs(120)).await;
    assert!(r.success, "{}", r.output);
    assert!(r.output.contains("ECHO 0x0000"), "{}", r.output);
    assert!(r.output.contains("STORE 0x0000"), "{}", r.output);
    let original = std::fs::read(&file).unwrap();
    let sop = sop_instance_of(&original);
    let stored = server.archive.retrieve_bytes(&sop).await.unwrap();
    let header =
        pacs_core::dicom::parse_part10(&stored, true, &pacs_core::Limits::default()).unwrap();
    assert_eq!(header.meta.source_ae_title.as_deref(), Some("PYNETDICOM"));
    // pydicom re-encodes what it read; the syntax it negotiated is the
    // first of its default proposals we prefer (explicit VR little endian).
    assert_eq!(header.meta.transfer_syntax_uid, EXPLICIT_LE);
    assert!(dataset_of(&stored) == dataset_of(&original));
}
