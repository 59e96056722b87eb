//! The real-world corpus that pydicom's wheel ships (`data/test_files` and
//! `data/charset_files`), imported through `pacs import`: every file is
//! imported or rejected with a reason, nothing panics, the counts are what we
//! expect, and every imported file comes back byte-identical.
//!
//! The corpus location comes from `PACS_PYDICOM_DATA` (set by tests/run.sh).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("PACS_PYDICOM_DATA") {
        Some(p) => Some(PathBuf::from(p)),
        None => pacs_testkit::peers::missing("PACS_PYDICOM_DATA is not set"),
    }
}

fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .map(|p| dir.join(p))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn pydicom_corpus_imports_or_rejects_every_file() {
    let Some(data) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let report_path = tmp.path().join("report.json");
    let mut total_files = 0;
    let mut totals = (0u64, 0u64, 0usize);
    for sub in ["test_files", "charset_files"] {
        let src = data.join(sub);
        let files = files_under(&src);
        assert!(
            files.len() > 10,
            "{} has only {} files",
            src.display(),
            files.len()
        );
        total_files += files.len();
        let o = pacs(
            &dir,
            &[
                "import",
                src.to_str().unwrap(),
                "--report",
                report_path.to_str().unwrap(),
            ],
        );
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "a panic during import: {err}");
        assert!(
            matches!(o.status.code(), Some(0) | Some(3)),
            "import failed: {err}"
        );
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        let imported = r["imported"].as_u64().unwrap();
        let present = r["already_present"].as_u64().unwrap() + r["replaced"].as_u64().unwrap();
        let rejected = r["rejected"].as_array().unwrap();
        assert_eq!(
            imported as usize + present as usize + rejected.len(),
            files.len(),
            "every file of {sub} is accounted for"
        );
        for x in rejected {
            let reason = x["reason"].as_str().unwrap();
            assert!(reason.len() > 10, "{}: vague reason {reason:?}", x["path"]);
        }
        if sub == "charset_files" {
            // Every character-set sample goes in, except the two sequence
            // samples that carry no Study Instance UID (not archivable).
            let charset_rejects: Vec<_> = rejected
                .iter()
                .filter(|x| x["path"].as_str().unwrap().ends_with(".dcm"))
                .filter(|x| {
                    !x["reason"]
                        .as_str()
                        .unwrap()
                        .contains("StudyInstanceUID is missing")
                })
                .collect();
            assert!(
                charset_rejects.is_empty(),
                "charset files rejected: {charset_rejects:#?}"
            );
        }
        totals.0 += imported;
        totals.1 += present;
        totals.2 += rejected.len();
        eprintln!(
            "{sub}: {} files, {imported} imported, {present} present, {} rejected",
            files.len(),
            rejected.len()
        );
        for x in rejected {
            eprintln!("  rejected {}: {}", x["path"], x["reason"]);
        }
    }
    eprintln!("corpus: {total_files} files, totals {totals:?}");
    // Pinned pydicom 3.0.1 (tests/requirements.txt): these numbers change only
    // when the parser's acceptance changes, which must be a deliberate act.
    let expected = expected_counts();
    assert_eq!(
        (totals.0, totals.2),
        expected,
        "imported / rejected counts changed"
    );

    let o = pacs(&dir, &["verify"]);
    assert!(
        o.status.success(),
        "verify after the corpus: {}",
        stdout(&o)
    );
    // The rebuilt index holds the same data.
    let before = stdout(&pacs(&dir, &["stats", "--json"]));
    assert!(pacs(&dir, &["reindex"]).status.success());
    assert_eq!(stdout(&pacs(&dir, &["stats", "--json"])), before);
}

fn expected_counts() -> (u64, usize) {
    (129, 36)
}
