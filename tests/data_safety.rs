//! Never destroy silently, never fill the disk: the duplicate policy
//! (`on_duplicate`) and the free-space watermark (`min_free_space`),
//! through the real binary with DCMTK's storescu and HTTP STOW-RS.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use sample_data::synthetic::{object, Spec};

const STUDY: &str = "1.2.826.0.1.3680043.10.1.1";
const SERIES: &str = "1.2.826.0.1.3680043.10.1.1.1";
const SOP: &str = "1.2.826.0.1.3680043.10.1.1.1.1";

fn ct(study: &str, patient_id: &str, accession: &str) -> Vec<u8> {
    object(&Spec {
        study,
        series: if study == STUDY {
            SERIES
        } else {
            "1.2.826.0.1.3680043.10.1.2.1"
        },
        sop: SOP,
        patient_id,
        accession,
        ..Spec::default()
    })
}

/// Sends one file with storescu; returns what DCMTK says of the response
/// (e.g. "Success", "Error: CannotUnderstand", "Refused: OutOfResources").
fn storescu(storescu: &Path, port: u16, file: &Path) -> String {
    let o = Command::new(storescu)
        .args(["-v", "-aec", "PACS", "127.0.0.1", &port.to_string()])
        .arg(file)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&o), stderr(&o));
    text.lines()
        .find_map(|l| {
            l.split_once("Received Store Response (")
                .map(|(_, r)| r.trim_end_matches(')').to_owned())
        })
        .unwrap_or_else(|| panic!("no store response from storescu: {text}"))
}

fn get_bytes(dir: &Path, out: &Path) -> Vec<u8> {
    let o = pacs(dir, &["get", SOP, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(out).unwrap()
}

fn history_json(dir: &Path) -> serde_json::Value {
    let o = pacs(dir, &["history", SOP, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The default policy: an identical re-send is a no-op; a corrected
/// re-send for the same patient and study replaces the object and keeps
/// the earlier one as history; an object that would move the instance to
/// another study or patient is refused by C-STORE (0xC000) and STOW-RS
/// (409, FailureReason 0xC000) and changes nothing; `pacs history` lists
/// the versions and `pacs history restore` brings one back, keeping the
/// content it replaces.
#[test]
fn same_sop_instance_uid_keeps_history_refuses_moves_and_restores() {
    let Some(scu) = dcmtk("storescu") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let original = write("original.dcm", &ct(STUDY, "P-1", "ACC1"));
    let corrected = write("corrected.dcm", &ct(STUDY, "P-1", "ACC1-CORRECTED"));
    let other_study = ct("1.2.826.0.1.3680043.10.1.2", "P-1", "ACC2");
    let other_study_file = write("other-study.dcm", &other_study);
    let other_patient = write("other-patient.dcm", &ct(STUDY, "P-2", "ACC1"));

    // Any modality may store here (these tests are about data, not access).
    let open_config = write("open.toml", b"strict_ae = false\n");
    let server = Server::start(&dir, &["--config", open_config.to_str().unwrap()]);
    assert_eq!(
        storescu(&scu, server.dimse_port, &original),
        "Success",
        "first store"
    );
    assert_eq!(
        storescu(&scu, server.dimse_port, &original),
        "Success",
        "identical re-send"
    );
    assert_eq!(
        storescu(&scu, server.dimse_port, &corrected),
        "Success",
        "corrected re-send"
    );
    let moved = storescu(&scu, server.dimse_port, &other_study_file);
    assert!(moved.starts_with("Error: CannotUnderstand"), "{moved}");
    let moved = storescu(&scu, server.dimse_port, &other_patient);
    assert!(moved.starts_with("Error: CannotUnderstand"), "{moved}");
    let (status, body) = stow(server.http_port, &other_study);
    assert_eq!(status, 409, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000,
        "{body}"
    );
    let (status, body) = http_get(server.http_port, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    // The corrected object is current (as storescu sent it: its data set
    // after our meta header); the original is version 1, and the refused
    // objects left nothing behind.
    let out = tmp.path().join("out.dcm");
    let current = get_bytes(&dir, &out);
    let h = history_json(&dir);
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{h}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["study_instance_uid"], STUDY);
    assert_eq!(versions[0]["patient_id"], "P-1");
    assert_eq!(h["current"]["sha256"], sha256(&current), "{h}");
    assert_ne!(versions[0]["sha256"], h["current"]["sha256"]);
    let s: serde_json::Value =
        serde_json::from_slice(&pacs(&dir, &["stats", "--json"]).stdout).unwrap();
    assert_eq!(
        (s["studies"].as_u64(), s["instances"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let text = stdout(&pacs(&dir, &["history", SOP]));
    assert!(text.contains("current") && text.contains(STUDY), "{text}");
    assert!(pacs(&dir, &["verify"]).status.success());

    // Restore version 1: the corrected content becomes version 2.
    let o = pacs(&dir, &["history", "restore", SOP, "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = get_bytes(&dir, &out);
    let h2 = history_json(&dir);
    assert_eq!(sha256(&restored), versions[0]["sha256"].as_str().unwrap());
    let v2 = h2["versions"].as_array().unwrap();
    assert_eq!(v2.len(), 2, "{h2}");
    assert_eq!(v2[1]["sha256"], sha256(&current));
    assert!(pacs(&dir, &["verify"]).status.success());
    // A reindex rebuilds the index from the current objects only.
    assert!(pacs(&dir, &["reindex"]).status.success());
    let s: serde_json::Value =
        serde_json::from_slice(&pacs(&dir, &["stats", "--json"]).stdout).unwrap();
    assert_eq!(s["instances"].as_u64(), Some(1), "{s}");
    assert_eq!(sha256(&get_bytes(&dir, &out)), sha256(&restored));
    let o = pacs(&dir, &["history", "restore", SOP, "9"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

/// `on_duplicate = reject` refuses any different content (the stored
/// object stays); `overwrite` is the old behaviour and keeps no history.
#[test]
fn on_duplicate_reject_and_overwrite() {
    let Some(scu) = dcmtk("storescu") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original.dcm");
    std::fs::write(&original, ct(STUDY, "P-1", "ACC1")).unwrap();
    let corrected = tmp.path().join("corrected.dcm");
    std::fs::write(&corrected, ct(STUDY, "P-1", "ACC1-CORRECTED")).unwrap();
    let out = tmp.path().join("out.dcm");

    for (policy, expect) in [
        ("reject", "Error: CannotUnderstand"),
        ("overwrite", "Success"),
    ] {
        let dir = tmp.path().join(policy);
        let config = tmp.path().join(format!("{policy}.toml"));
        std::fs::write(
            &config,
            format!("strict_ae = false\non_duplicate = \"{policy}\"\n"),
        )
        .unwrap();
        let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
        assert_eq!(storescu(&scu, server.dimse_port, &original), "Success");
        let first = {
            let (status, log) = server.stop();
            assert!(status.success(), "{log}");
            get_bytes(&dir, &out)
        };
        let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
        let got = storescu(&scu, server.dimse_port, &corrected);
        assert!(got.starts_with(expect), "{policy}: {got}");
        let (status, log) = server.stop();
        assert!(status.success(), "{log}");
        let now = get_bytes(&dir, &out);
        assert_eq!(now == first, policy == "reject", "{policy}");
        let h = history_json(&dir);
        assert_eq!(h["versions"].as_array().unwrap().len(), 0, "{policy}: {h}");
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        o.status.success().then(|| Tmpfs(dir.to_owned()))
    }

    fn available(&self) -> u64 {
        let o = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        stdout(&o).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn stores_until(scu: &Path, port: u16, file: &Path, want: &str) -> String {
    // The free-space measure is cached for about a second: ask a bounded
    // number of times.
    let mut last = String::new();
    for _ in 0..40 {
        last = storescu(scu, port, file);
        if last.starts_with(want) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last
}

/// A server on a 64 MiB tmpfs with `min_free_space` set, one object
/// stored, two more ready to send. `None` (skipped) without DCMTK or root.
struct TmpfsArchive {
    // Fields drop in this order: the server, then the mount, then the files.
    server: Server,
    fs: Tmpfs,
    scu: PathBuf,
    dir: PathBuf,
    during: PathBuf,
    after: PathBuf,
    uid_part: String,
    tmp: tempfile::TempDir,
}

impl TmpfsArchive {
    fn start(min_free_space: &str, uid_part: &str) -> Option<TmpfsArchive> {
        let scu = dcmtk("storescu")?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let Some(fs) = Tmpfs::mount(&dir, "64m") else {
            return pacs_testkit::peers::missing("cannot mount a tmpfs (not root?)");
        };
        let config = tmp.path().join("pacs.toml");
        std::fs::write(
            &config,
            format!("strict_ae = false\nmin_free_space = {min_free_space}\n"),
        )
        .unwrap();
        let file = |name: &str, n: u32| {
            let p = tmp.path().join(name);
            let sop = format!("1.2.826.0.1.3680043.10.{uid_part}.{n}");
            std::fs::write(&p, small_object(STUDY, SERIES, &sop)).unwrap();
            p
        };
        let first = file("first.dcm", 1);
        let during = file("during.dcm", 2);
        let after = file("after.dcm", 3);
        let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
        assert_eq!(storescu(&scu, server.dimse_port, &first), "Success");
        Some(TmpfsArchive {
            server,
            fs,
            scu,
            dir,
            during,
            after,
            uid_part: uid_part.to_owned(),
            tmp,
        })
    }
}

impl TmpfsArchive {
    /// Stops the server; then each of the three objects must be stored
    /// (none acknowledged and lost), and verify must find no damage.
    fn stop_and_check_all_three(self) {
        // Bound in this order, dropped in the reverse: the mount goes
        // before the temporary directory.
        let TmpfsArchive {
            tmp,
            dir,
            fs,
            server,
            uid_part,
            ..
        } = self;
        let (status, log) = server.stop();
        assert!(status.success(), "{log}");
        let out = tmp.path().join("x.dcm");
        let missing: Vec<String> = (1..=3)
            .map(|n| format!("1.2.826.0.1.3680043.10.{uid_part}.{n}"))
            .filter(|sop| {
                !pacs(&dir, &["get", sop, "-o", out.to_str().unwrap()])
                    .status
                    .success()
            })
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged and lost: {missing:?}\n{log}"
        );
        let s: serde_json::Value =
            serde_json::from_slice(&pacs(&dir, &["stats", "--json"]).stdout).unwrap();
        assert_eq!(s["instances"].as_u64(), Some(3), "{s}");
        let o = pacs(&dir, &["verify"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        drop(fs);
    }
}

/// Below the free-space watermark a C-STORE is refused with 0xA700 and a
/// STOW-RS with 507 before anything is written, and /healthz says
/// degraded; once space is freed, stores succeed again without a restart.
/// Runs on a 64 MiB tmpfs (needs root; skipped otherwise).
#[test]
fn free_space_watermark_refuses_then_resumes_without_restart() {
    let Some(t) = TmpfsArchive::start("\"16MiB\"", "2") else {
        return;
    };

    // Leave about 8 MiB: below the 16 MiB watermark, room for the objects.
    let ballast = t.dir.join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0x5Au8; 1 << 20];
        while t.fs.available() > 8 << 20 {
            f.write_all(&chunk).unwrap();
            f.flush().unwrap();
        }
        f.sync_all().unwrap();
    }
    let got = stores_until(
        &t.scu,
        t.server.dimse_port,
        &t.during,
        "Refused: OutOfResources",
    );
    assert!(got.starts_with("Refused: OutOfResources"), "{got}");
    let (status, body) = stow(t.server.http_port, &std::fs::read(&t.during).unwrap());
    assert_eq!(status, 507, "{body}");
    let (status, body) = http_get(t.server.http_port, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    assert_eq!(health["stores_refused"], true, "{body}");

    std::fs::remove_file(&ballast).unwrap();
    let got = stores_until(&t.scu, t.server.dimse_port, &t.after, "Success");
    assert_eq!(got, "Success", "stores did not resume once space returned");
    let (status, body) = stow(t.server.http_port, &std::fs::read(&t.during).unwrap());
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(t.server.http_port, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");
    t.stop_and_check_all_three();
}

/// With the watermark off (`min_free_space = 0`) the disk can fill up
/// completely: stores fail with 0xA700 while it is full, and once space is
/// freed they succeed again without a restart, even though the index's
/// database met the full disk (sled keeps such an error for good: the
/// index is reopened from disk and its log). Needs root (tmpfs).
#[test]
fn a_completely_full_disk_does_not_leave_ingest_broken() {
    let Some(t) = TmpfsArchive::start("0", "3") else {
        return;
    };
    let ballast = t.dir.join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0x5Au8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    assert!(t.fs.available() < 64 << 10, "{}", t.fs.available());
    let got = storescu(&t.scu, t.server.dimse_port, &t.during);
    assert!(got.starts_with("Refused: OutOfResources"), "{got}");
    // Wait (bounded) until the index's own checkpoint has met the full
    // disk: that is what used to break ingest until a restart.
    let mut met = false;
    for _ in 0..100 {
        let log = std::fs::read_to_string(&t.server.log).unwrap_or_default();
        if log.contains("index checkpoint failed") {
            met = true;
            break;
        }
        let _ = storescu(&t.scu, t.server.dimse_port, &t.during);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        met,
        "the index never met the full disk: the test proves nothing"
    );

    std::fs::remove_file(&ballast).unwrap();
    let got = stores_until(&t.scu, t.server.dimse_port, &t.after, "Success");
    assert_eq!(got, "Success", "stores did not resume once space returned");
    assert_eq!(storescu(&t.scu, t.server.dimse_port, &t.during), "Success");
    t.stop_and_check_all_three();
}

/// The server's own log on the disk that fills up (a common layout: stderr
/// to a file under the data directory). Writing a log line then fails, and
/// a thread that panics on that failure (tracing's fallback `eprintln!`)
/// would die for good: the audit writer's death refused every PHI read,
/// with 503, until a restart. Once space returns, reads must come back.
#[test]
fn reads_come_back_after_the_disk_holding_the_log_was_full() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("fs");
    let Some(fs) = Tmpfs::mount(&mount, "32m") else {
        pacs_testkit::peers::skip_or_fail("cannot mount a tmpfs (not root?)");
        return;
    };
    // `Server` writes its stderr beside the data dir: inside the mount.
    let dir = mount.join("data");
    let server = Server::start(&dir, &["--demo"]);
    let port = server.http_port;
    // 200, or 204 while the archive is empty.
    let qido = || match http_get(port, "/dicom-web/studies?limit=5").map(|(s, _)| s) {
        Ok(204) => 200,
        Ok(s) => s,
        Err(_) => 0,
    };
    assert_eq!(qido(), 200);
    let ballast = mount.join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        for size in [64 << 10, 4 << 10, 1] {
            let chunk = vec![0x5Au8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
    }
    assert!(fs.available() < 64 << 10, "{}", fs.available());
    // Full: once the audit file's last page is used up, a read's audit
    // record cannot be written and the read is refused (no unaudited PHI
    // access). Then several more, so that every thread that logs has met
    // the full disk.
    let refused = (0..200).any(|_| qido() == 503);
    assert!(refused, "reads were never refused: the disk never filled");
    for _ in 0..20 {
        assert_eq!(qido(), 503, "a read whose audit record cannot be written");
    }
    std::fs::remove_file(&ballast).unwrap();
    let mut last = 0;
    for _ in 0..40 {
        last = qido();
        if last == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(last, 200, "reads did not come back once space returned");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    drop(fs);
}
