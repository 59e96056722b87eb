//! Versioned on-disk formats through the `pacs` binary: a data dir written
//! by a newer build is refused with both versions named and left as it
//! was; an index written before versioning (format 0) is migrated on open,
//! with progress on the log, and every instance is still there.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

fn import(dir: &Path) -> usize {
    let o = pacs(dir, &["import", sample_dir().to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    sample_files().len()
}

fn stats(dir: &Path) -> serde_json::Value {
    let o = pacs(dir, &["stats", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every file under `dir` with the SHA-256 of its bytes.
fn contents(dir: &Path) -> BTreeMap<String, String> {
    tree(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .map(|p| {
            let sha = sha256_file(&dir.join(&p));
            (p, sha)
        })
        .collect()
}

#[test]
fn a_data_dir_of_a_newer_format_is_refused_and_left_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let n = import(&dir);
    assert_eq!(stats(&dir)["instances"], n as u64);
    let format = dir.join("index.format");
    let current = std::fs::read_to_string(&format).unwrap();
    let version: u32 = current.trim().rsplit(' ').next().unwrap().parse().unwrap();
    // What a newer build leaves behind.
    std::fs::write(&format, format!("sen-pacs index format {}\n", version + 1)).unwrap();
    let before = contents(&dir);
    for args in [&["stats"][..], &["verify"][..]] {
        let o = pacs(&dir, args);
        assert!(!o.status.success(), "{args:?} ran on a newer data dir");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("format version {}", version + 1))
                && err.contains(&format!("reads format version {version} at most"))
                && err.contains("upgrade the pacs binary"),
            "{err}"
        );
    }
    assert!(before == contents(&dir), "the newer data dir was modified");
    // Back to the current version, everything is there.
    std::fs::write(&format, current).unwrap();
    assert_eq!(stats(&dir)["instances"], n as u64);
}

/// `pacs stats --json` with the info log on stderr.
fn stats_with_info_log(dir: &Path) -> std::process::Output {
    Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["stats", "--json"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

#[test]
fn an_index_of_format_0_is_migrated_with_progress_and_keeps_every_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let n = import(&dir);
    let before = stats(&dir);
    assert_eq!(before["instances"], n as u64);
    // Rewrite the index as the unversioned build wrote it: the instances
    // keyed by SOP Instance UID, every value bare (without its version
    // byte), no format key, no format file.
    {
        let db = storage::index::open_raw(&dir.join("index")).unwrap();
        assert_eq!(
            pacs_testkit::old_index::instances_to_layout_3(&db, None) as u64,
            n as u64
        );
        for name in db.tree_names() {
            if name.as_ref() == b"__sled__default" {
                continue;
            }
            let tree = db.open_tree(&name).unwrap();
            for kv in tree.iter() {
                let (k, v) = kv.unwrap();
                if k.as_ref() == b"format/version" {
                    tree.remove(k).unwrap();
                } else {
                    assert_eq!(v.first(), Some(&1u8));
                    tree.insert(k, &v[1..]).unwrap();
                }
            }
        }
        db.flush().unwrap();
    }
    std::fs::remove_file(dir.join("index.format")).unwrap();

    let o = stats_with_info_log(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("migrating the index") && log.contains("index migrated"),
        "{log}"
    );
    let after: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(after, before);
    // Every object reads back by its UID, and the index verifies.
    let o = pacs(&dir, &["verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Migrated once: the next open says nothing about it.
    let o = stats_with_info_log(&dir);
    assert!(!stderr(&o).contains("migrat"), "{}", stderr(&o));
}

/// `max_metadata_bytes` (here from `PACS_MAX_METADATA_BYTES`) caps the
/// DICOM JSON of what the binary ingests: over it, every object is refused
/// with the reason, and nothing is stored.
#[test]
fn the_metadata_limit_is_configurable_and_refuses_at_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let report = tmp.path().join("report.json");
    let o = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["import", sample_dir().to_str().unwrap(), "--report"])
        .arg(&report)
        .env("RUST_LOG", "warn")
        .env("PACS_MAX_METADATA_BYTES", "100")
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(r["imported"], 0, "{r}");
    let rejected = r["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), sample_files().len());
    assert!(rejected[0].to_string().contains("100-byte limit"), "{r}");
    assert_eq!(stats(&dir)["instances"], 0);
}
