//! The committed sample studies, and small objects generated for a test.

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `sample-data/studies`.
pub fn sample_dir() -> PathBuf {
    repo_root().join("sample-data/studies")
}

/// Every file of the sample studies, sorted.
pub fn sample_files() -> Vec<PathBuf> {
    files_under(&sample_dir())
}

/// `sample-data/manifest.json`.
pub fn manifest() -> serde_json::Value {
    let path = repo_root().join("sample-data/manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The manifest entries of one sample study (`ct-phantom`, `us-cine`...).
pub fn files_of(study: &str) -> Vec<serde_json::Value> {
    manifest()["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["study"] == study)
        .cloned()
        .collect()
}

/// A JSON string value as a `String` (panics when it is not one).
pub fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// Every file under `dir` (not directories), sorted; empty when `dir` does
/// not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file and directory under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// A small valid CT-like object with the given UIDs.
pub fn small_object(study: &str, series: &str, sop: &str) -> Vec<u8> {
    sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study,
        series,
        sop,
        patient_name: "TEST^BAD^INPUT",
        patient_id: "BAD-1",
        ..Default::default()
    })
}

/// A synthetic CT object (explicit VR LE Part 10) with `pixel_bytes` of
/// pixel data.
pub fn synthetic_ct(sop: &str, pixel_bytes: usize) -> Vec<u8> {
    sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study: "1.2.826.0.1.3680043.10.1",
        series: "1.2.826.0.1.3680043.10.1.1",
        sop,
        pixel_bytes,
        ..Default::default()
    })
}
