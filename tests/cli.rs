//! The `pacs` CLI end to end: import, idempotent re-import, get, verify,
//! stats, reindex, compact-index, and the re-store policy.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn stats_json(dir: &std::path::Path) -> serde_json::Value {
    let o = pacs(dir, &["stats", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn import_get_verify_reindex_sample_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = sample_files();
    assert!(files.len() >= 40, "sample data has {} files", files.len());
    let report = tmp.path().join("report.json");

    let o = pacs(
        &dir,
        &[
            "import",
            sample_dir().to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "import failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["imported"], files.len() as u64);
    assert_eq!(r["rejected"].as_array().unwrap().len(), 0);

    let s = stats_json(&dir);
    assert_eq!(s["instances"], files.len() as u64);
    assert_eq!(s["patients"], 4, "{s}");
    assert_eq!(s["studies"], 5, "{s}");
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(s["total_bytes"], total);

    // Importing again changes nothing.
    let o = pacs(
        &dir,
        &[
            "import",
            sample_dir().to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["imported"], 0);
    assert_eq!(r["already_present"], files.len() as u64);
    assert_eq!(stats_json(&dir), s);

    // Every file comes back byte-identical, found by the SOP Instance UID the
    // manifest records.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("sample-data/manifest.json")).unwrap(),
    )
    .unwrap();
    let entries = manifest["files"].as_array().expect("manifest lists files");
    assert_eq!(entries.len(), files.len());
    for e in entries {
        let sop = e["sop_instance_uid"].as_str().unwrap();
        let path = sample_dir().join(e["path"].as_str().unwrap());
        let out = tmp.path().join("out.dcm");
        let o = pacs(&dir, &["get", sop, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "get {sop}: {}", stderr(&o));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&path).unwrap(),
            "{sop}"
        );
    }
    let o = pacs(&dir, &["get", "1.2.3.4.5.6.7"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "unknown instance must be reported"
    );
    let o = pacs(&dir, &["get", "../../etc/passwd"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a SOP Instance UID"),
        "{}",
        stderr(&o)
    );

    let o = pacs(&dir, &["verify"]);
    assert!(o.status.success(), "verify: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("checked {} instances", files.len())));

    // Reindex rebuilds the same index.
    let o = pacs(&dir, &["reindex"]);
    assert!(o.status.success(), "reindex: {}{}", stdout(&o), stderr(&o));
    assert_eq!(stats_json(&dir), s);
    assert!(pacs(&dir, &["verify"]).status.success());

    // The index rewritten to its live data answers the same.
    let o = pacs(&dir, &["compact-index"]);
    assert!(
        o.status.success(),
        "compact-index: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("index compacted"), "{}", stdout(&o));
    assert_eq!(stats_json(&dir), s);
    assert!(pacs(&dir, &["verify"]).status.success());
    let o = pacs(&tmp.path().join("nothing"), &["compact-index"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to compact"), "{}", stderr(&o));

    // Damage is detected: flip a byte of one blob.
    let objects = dir.join("objects");
    let victim = tree(&objects)
        .into_iter()
        .find(|p| p.ends_with(".dcm"))
        .unwrap();
    let vp = objects.join(&victim);
    let mut bytes = std::fs::read(&vp).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&vp, &bytes).unwrap();
    let o = pacs(&dir, &["verify"]);
    assert_eq!(o.status.code(), Some(1), "verify must fail on damage");
    assert!(stdout(&o).contains("SHA-256"), "{}", stdout(&o));
}

#[test]
fn restore_policy_identical_is_noop_different_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let a = tmp.path().join("a.dcm");
    std::fs::write(&a, small_object("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1")).unwrap();
    assert!(pacs(&dir, &["import", a.to_str().unwrap()])
        .status
        .success());
    let o = pacs(&dir, &["import", a.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("0 new, 1 already present"),
        "{}",
        stdout(&o)
    );

    // Same SOP Instance UID, different content, moved to another study:
    // refused by the default duplicate policy, nothing changes...
    let b = tmp.path().join("b.dcm");
    std::fs::write(&b, small_object("1.2.3.2", "1.2.3.2.1", "1.2.3.1.1.1")).unwrap();
    let o = pacs(&dir, &["import", b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("already stored for another patient or study"),
        "{}",
        stderr(&o)
    );
    let s = stats_json(&dir);
    assert_eq!(s["studies"], 1, "{s}");
    // ...and replaces the object under `on_duplicate = overwrite`.
    let o = std::process::Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["import", b.to_str().unwrap()])
        .env("PACS_ON_DUPLICATE", "overwrite")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 replaced"), "{}", stdout(&o));
    let out = tmp.path().join("out.dcm");
    assert!(
        pacs(&dir, &["get", "1.2.3.1.1.1", "-o", out.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&b).unwrap());
    let s = stats_json(&dir);
    assert_eq!(s["instances"], 1);
    assert_eq!(s["studies"], 1, "the emptied study is gone: {s}");
    assert!(pacs(&dir, &["verify"]).status.success());
    // Only the new blob remains.
    let blobs: Vec<String> = tree(&dir.join("objects"))
        .into_iter()
        .filter(|p| p.ends_with(".dcm"))
        .collect();
    assert_eq!(blobs, vec!["1.2.3.2/1.2.3.2.1/1.2.3.1.1.1.dcm".to_string()]);
}
