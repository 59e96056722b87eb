//! The durability invariant: SIGKILL the real binary at random moments while
//! it stores a stream of objects, restart on the same data dir, and check that
//! every acknowledged instance is retrievable byte-identical and that the
//! index agrees with the blobs (`pacs verify`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;

const KILLS: usize = 20;

#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = sample_files();
    let by_path: BTreeMap<String, std::path::PathBuf> = files
        .iter()
        .map(|p| (p.display().to_string(), p.clone()))
        .collect();
    // SOP Instance UID -> SHA-256 for every acknowledged store.
    let mut acked: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut rng = Rng::new(0x5EED_CAFE);
    let mut kills_mid_stream = 0;
    let mut log_replays = 0;
    let mut landing_replays = 0;

    for round in 0..KILLS {
        // Even rounds kill after a random number of acknowledgements (so
        // the kill lands mid-stream whatever the machine's speed); odd
        // rounds kill after a random delay (start-up and recovery included).
        // Half the rounds land objects first, as the server does; the
        // others write blobs and index entries directly.
        let landing = round % 4 < 2;
        let mut import = Command::new(pacs_bin());
        import
            .arg("--data-dir")
            .arg(&dir)
            .args(["import", "--print-stored", "--jobs", "4"])
            .args(landing.then_some("--landing"))
            .arg(sample_dir())
            .env("RUST_LOG", "error");
        let at = if round % 2 == 0 {
            KillAt::Acks(1 + rng.below(30) as usize)
        } else {
            KillAt::Delay(Duration::from_millis(10 + rng.below(250)))
        };
        let killed = import_then_kill(import, at);
        if killed.mid_stream {
            kills_mid_stream += 1;
        }
        for (sop, sha, path) in killed.stored {
            acked.insert(sop, (sha, path));
        }

        // Restart on the same data dir: recovery runs, the index must agree
        // with the blobs, and every acknowledged instance must be there.
        let o = Command::new(pacs_bin())
            .arg("--data-dir")
            .arg(&dir)
            .arg("verify")
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "round {round}: verify after SIGKILL failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        if stderr(&o).contains("index log replayed") {
            log_replays += 1;
        }
        if stderr(&o).contains("the landing log holds objects from the last run") {
            landing_replays += 1;
        }
        if round % 5 == 4 || round == KILLS - 1 {
            check_acked(&dir, &acked, &by_path, tmp.path());
        }
        // Every few rounds, empty the archive so the kills land mid-ingest again.
        if round % 4 == 3 {
            std::fs::remove_dir_all(&dir).unwrap();
            acked.clear();
        }
    }
    // Acknowledged index entries were recovered from the index's log, not
    // only re-adopted from their blobs.
    assert!(
        log_replays >= 3,
        "the index log was replayed only {log_replays} times"
    );
    // Acknowledged objects still in the landing log were replayed from it.
    assert!(
        landing_replays >= 3,
        "the landing log was replayed only {landing_replays} times"
    );
    assert!(
        kills_mid_stream >= 3,
        "only {kills_mid_stream} of {KILLS} kills landed mid-stream; the test proves nothing"
    );
}

fn check_acked(
    dir: &std::path::Path,
    acked: &BTreeMap<String, (String, String)>,
    by_path: &BTreeMap<String, std::path::PathBuf>,
    tmp: &std::path::Path,
) {
    for (sop, (sha, path)) in acked {
        let out = tmp.join("check.dcm");
        let o = pacs(dir, &["get", sop, "-o", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "acknowledged {sop} lost: {}",
            stderr(&o)
        );
        assert_eq!(&sha256_file(&out), sha, "acknowledged {sop} changed");
        let src = &by_path[path];
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(src).unwrap());
    }
}
