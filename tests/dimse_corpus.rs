//! pydicom's real-world corpus in by C-STORE and back by C-GET, and by
//! C-MOVE to a pynetdicom storage SCP, through the real binary, driven by
//! pynetdicom (tests/peers/corpus_retrieve.py): what comes back has the
//! stored transfer syntax and exactly the stored data set bytes (Pixel Data
//! included).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sha2::Digest;

#[test]
fn corpus_by_c_store_back_by_c_get_unchanged() {
    corpus_round_trip(Retrieve::Get);
}

#[test]
fn corpus_by_c_store_back_by_c_move_unchanged() {
    corpus_round_trip(Retrieve::Move);
}

enum Retrieve {
    Get,
    Move,
}

fn corpus_round_trip(how: Retrieve) {
    let (Some(data), Some(python)) = (
        std::env::var_os("PACS_PYDICOM_DATA"),
        std::env::var_os("PACS_PYTHON"),
    ) else {
        pacs_testkit::peers::skip_or_fail("PACS_PYDICOM_DATA / PACS_PYTHON is not set");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pacs.toml");
    // The move destination is the script's own storage SCP.
    let dest_port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "[[remote_ae]]\nae_title = \"CORPUS\"\nhost = \"127.0.0.1\"\nport = 1\n\n\
             [[remote_ae]]\nae_title = \"CORPUSDEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n"
        ),
    )
    .unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &["--config", cfg.to_str().unwrap()]);
    let mut cmd = std::process::Command::new(python);
    cmd.arg(repo_root().join("tests/peers/corpus_retrieve.py"))
        .arg(match how {
            Retrieve::Get => "get",
            Retrieve::Move => "move",
        })
        .args(["127.0.0.1", &server.dimse_port.to_string(), "PACS"])
        .arg(std::path::PathBuf::from(data).join("test_files"));
    if let Retrieve::Move = how {
        cmd.args(["CORPUSDEST", &dest_port.to_string()]);
    }
    let o = cmd.output().unwrap();
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let instances = report["instances"].as_object().unwrap();
    assert!(
        instances.len() >= 30,
        "only {} instances stored",
        instances.len()
    );
    let mut same_as_file = 0;
    for (sop, got) in instances {
        let out = tmp.path().join("stored.dcm");
        let g = pacs(&dir, &["get", sop, "-o", out.to_str().unwrap()]);
        assert!(g.status.success(), "{sop}: {}", stderr(&g));
        let bytes = std::fs::read(&out).unwrap();
        let glen = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
        let meta = String::from_utf8_lossy(&bytes[144..144 + glen]).into_owned();
        let ts = got["ts"]
            .as_str()
            .unwrap_or_else(|| panic!("{sop}: nothing came back"));
        assert!(
            meta.contains(ts),
            "{sop}: came back as {ts}, not the stored syntax"
        );
        assert_eq!(
            got["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes[144 + glen..])),
            "{sop}: the retrieve did not return the stored data set bytes"
        );
        same_as_file += usize::from(got["same_as_file"].as_bool().unwrap());
    }
    // Most files come back identical to the file itself; the rest differ
    // only because pynetdicom's send-from-file does not send the file's
    // data set byte for byte (checked by hand: the archive stored what it
    // received).
    assert!(
        same_as_file >= 25,
        "{same_as_file} identical to their files"
    );
    eprintln!(
        "{} stored, {} refused, {same_as_file} byte-identical to their files",
        instances.len(),
        report["refused"]
    );
}
