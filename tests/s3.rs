//! S3 storage through the real binary against a real S3-compatible server
//! on 127.0.0.1 (moto): DIMSE (DCMTK storescu, getscu) and DICOMweb (STOW,
//! QIDO, WADO-RS), C-FIND and delete on an S3-backed server with the bytes
//! checked in the bucket, a large instance through a multipart upload, a missing bucket at
//! start, and SIGKILL during ingest losing nothing acknowledged. Then the
//! disk-backed durability run on s3s-fs (objects on disk, signatures
//! checked): the S3 server itself killed and started again during and
//! after ingest, and a multipart upload and conditional creates against it;
//! and the same server behind TLS with a certificate of a private CA,
//! trusted through `[s3] ca_file` or `AWS_CA_BUNDLE` and refused without.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/tls_proxy.rs"]
mod tls_proxy;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pacs_testkit::s3::{Moto, S3sFs};
use sample_data::synthetic::{object, Spec};

/// A config file for an S3-backed server: the connection in `[s3]` (no
/// AWS variables needed), any modality may store, `WS` may query and
/// retrieve.
fn s3_config(dir: &Path, moto: &Moto, bucket: &str, extra: &str) -> PathBuf {
    let cfg = dir.join(format!("{bucket}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "strict_ae = false\nstorage_url = \"s3://{bucket}/archive\"\n\n[s3]\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\nallow_http = true\n\
             access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n{extra}\n\
             [[remote_ae]]\nae_title = \"WS\"\nhost = \"127.0.0.1\"\nport = 11113\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    cfg
}

/// A GET whose body is kept as bytes.
fn http_get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, buf[split + 4..].to_vec())
}

/// No staging object (of a multipart create) is left among `keys`.
fn no_staging_key_left(keys: Vec<String>) {
    assert!(!keys.iter().any(|k| k.contains("/staging/")), "{keys:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The object in the bucket whose key ends with `<sop>.dcm`.
fn bucket_object(moto: &Moto, bucket: &str, sop: &str) -> (String, Vec<u8>, String) {
    let key = moto
        .keys(bucket)
        .into_iter()
        .find(|k| k.ends_with(&format!("/{sop}.dcm")))
        .unwrap_or_else(|| panic!("{sop} is not in bucket {bucket}: {:?}", moto.keys(bucket)));
    let (bytes, etag) = moto.object(bucket, &key).unwrap();
    (key, bytes, etag)
}

fn healthz(port: u16) -> serde_json::Value {
    let (status, body) = http_get(port, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// C-STORE (DCMTK) and STOW-RS into an S3-backed server; QIDO and C-FIND
/// find them, WADO-RS and C-GET (DCMTK) return the bytes sent, and the
/// bucket holds exactly those bytes under spread keys; `/healthz` reports
/// the storage; `pacs delete` removes a study's objects from the bucket.
#[test]
fn s3_backed_server_stores_queries_and_retrieves() {
    let (Some(storescu), Some(getscu), Some(findscu)) =
        (dcmtk("storescu"), dcmtk("getscu"), dcmtk("findscu"))
    else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("pacs");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = s3_config(tmp.path(), &moto, "pacs", "");
    let server = Server::start(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );

    let sample = &sample_files()[0];
    let sample_bytes = std::fs::read(sample).unwrap();
    let o = Command::new(&storescu)
        .args(["-aec", "PACS", "127.0.0.1", &server.dimse_port.to_string()])
        .arg(sample)
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}{}", stdout(&o), stderr(&o));
    let sample_sop = dicom_value(sample, "0008,0018");
    let sample_study = dicom_value(sample, "0020,000D");

    let spec = Spec {
        study: "1.2.826.0.1.3680043.10.77.1",
        series: "1.2.826.0.1.3680043.10.77.1.1",
        sop: "1.2.826.0.1.3680043.10.77.1.1.1",
        ..Spec::default()
    };
    let stowed = object(&spec);
    let (status, body) = stow(server.http_port, &stowed);
    assert_eq!(status, 200, "{body}");

    // Both objects are in the bucket under spread keys: the STOW part
    // byte for byte; the C-STORE data set byte for byte after the file
    // meta header the archive wrote for it (PS3.10 7.1).
    let sample_dataset = dataset_of(&sample_bytes);
    for (sop, bytes) in [
        (sample_sop.as_str(), sample_dataset),
        (spec.sop, &stowed[..]),
    ] {
        let (key, in_bucket, _) = bucket_object(&moto, "pacs", sop);
        assert!(
            in_bucket.ends_with(bytes),
            "{key} differs from what was sent"
        );
        if sop == spec.sop {
            assert!(in_bucket == bytes, "{key} differs from what was sent");
        } else {
            assert_eq!(dataset_of(&in_bucket), bytes, "{key}");
        }
        let prefix = key.split('/').nth(1).unwrap();
        assert!(
            prefix.len() == 2 && prefix.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
    }

    // QIDO finds both studies.
    let (status, body) = http_get(server.http_port, "/dicom-web/studies").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&sample_study) && body.contains(spec.study),
        "{body}"
    );

    // WADO-RS returns the stored object.
    let (status, body) = http_get_bytes(
        server.http_port,
        &format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            spec.study, spec.series, spec.sop
        ),
    );
    assert_eq!(status, 200);
    assert!(
        contains(&body, &stowed),
        "WADO-RS body lacks the stored object"
    );

    // C-GET of the sample's study returns the bytes stored.
    let out = tmp.path().join("got");
    std::fs::create_dir_all(&out).unwrap();
    let o = Command::new(&getscu)
        .args([
            "-aet",
            "WS",
            "-aec",
            "PACS",
            "-S",
            "-k",
            "0008,0052=STUDY",
            "-k",
        ])
        .arg(format!("0020,000D={sample_study}"))
        .arg("-od")
        .arg(&out)
        .args(["127.0.0.1", &server.dimse_port.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "getscu: {}{}", stdout(&o), stderr(&o));
    let got: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    // getscu writes the data set under a file meta header of its own.
    let got_bytes = std::fs::read(&got[0]).unwrap();
    assert_eq!(
        dataset_of(&got_bytes),
        sample_dataset,
        "C-GET returned other content"
    );

    // C-FIND (DCMTK) finds the study stored by C-STORE.
    let find = |port: u16, study: &str| {
        let o = Command::new(&findscu)
            .args([
                "-aet",
                "WS",
                "-aec",
                "PACS",
                "-S",
                "-k",
                "0008,0052=STUDY",
                "-k",
            ])
            .arg(format!("0020,000D={study}"))
            .args(["127.0.0.1", &port.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "findscu: {}{}", stdout(&o), stderr(&o));
        format!("{}{}", stdout(&o), stderr(&o))
    };
    let found = find(server.dimse_port, &sample_study);
    assert!(
        found.contains("(0020,000d) UI ["),
        "findscu found nothing: {found}"
    );

    let h = healthz(server.http_port);
    assert_eq!(h["dependencies"]["storage"]["status"], "ok", "{h}");
    assert_eq!(h["dependencies"]["storage"]["kind"], "s3", "{h}");
    assert_eq!(h["dependencies"]["index"]["status"], "ok", "{h}");
    assert_eq!(h["instances"], 2, "{h}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("landing log off"), "{log}");

    // `pacs delete` removes the STOW-RS study: its object leaves the
    // bucket, the other stays; a restarted server no longer finds it.
    let data = tmp.path().join("data");
    let o = pacs(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "delete",
            "--study",
            spec.study,
        ],
    );
    assert!(
        o.status.success(),
        "pacs delete: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("deleted 1 instances"), "{}", stdout(&o));
    let keys = moto.keys("pacs");
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with(&format!("/{}.dcm", spec.sop))),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with(&format!("/{sample_sop}.dcm"))),
        "{keys:?}"
    );
    let o = pacs(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "delete",
            "--study",
            spec.study,
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));

    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (status, body) = http_get(server.http_port, "/dicom-web/studies").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&sample_study) && !body.contains(spec.study),
        "{body}"
    );
    let (status, _) = http_get_bytes(
        server.http_port,
        &format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            spec.study, spec.series, spec.sop
        ),
    );
    assert_eq!(status, 404);
    let found = find(server.dimse_port, &sample_study);
    assert!(found.contains(&sample_study), "{found}");
    let h = healthz(server.http_port);
    assert_eq!(h["instances"], 1, "{h}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// An instance above `[s3] multipart_threshold` goes up as a multipart
/// upload: the counter in `/healthz` says so, the object's ETag is a
/// multipart one (`-<parts>`), and the object is whole. With
/// `server_side_encryption = "aws:kms"` and a key, the store is asked to
/// encrypt every object with that key: the small one (a conditional PUT),
/// the large one (a multipart upload completed by a conditional copy) and
/// the key layout record; the store says so on a HEAD of each.
#[test]
fn s3_large_instance_goes_through_multipart_upload() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("big");
    let tmp = tempfile::tempdir().unwrap();
    let kms_key = "arn:aws:kms:us-east-1:123456789012:key/0d7e1c9a-pacs-test";
    let cfg = s3_config(
        tmp.path(),
        &moto,
        "big",
        &format!(
            "multipart_threshold = 1048576\nserver_side_encryption = \"aws:kms\"\n\
             sse_kms_key_id = \"{kms_key}\"\n"
        ),
    );
    let server = Server::start(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let h = healthz(server.http_port);
    assert_eq!(h["dependencies"]["storage"]["multipart_uploads"], 0, "{h}");

    let spec = Spec {
        study: "1.2.826.0.1.3680043.10.78.1",
        series: "1.2.826.0.1.3680043.10.78.1.1",
        sop: "1.2.826.0.1.3680043.10.78.1.1.1",
        pixel_bytes: 3 << 20,
        ..Spec::default()
    };
    let big = object(&spec);
    let small = object(&Spec {
        sop: "1.2.826.0.1.3680043.10.78.1.1.2",
        pixel_bytes: 64,
        ..spec
    });
    for bytes in [&big, &small] {
        let (status, body) = stow(server.http_port, bytes);
        assert_eq!(status, 200, "{body}");
    }
    let h = healthz(server.http_port);
    assert_eq!(h["dependencies"]["storage"]["multipart_uploads"], 1, "{h}");
    let (_, in_bucket, etag) = bucket_object(&moto, "big", spec.sop);
    assert!(in_bucket == big, "the multipart object is not whole");
    assert!(
        etag.trim_matches('"').contains('-'),
        "not a multipart ETag: {etag}"
    );
    let (_, _, small_etag) = bucket_object(&moto, "big", "1.2.826.0.1.3680043.10.78.1.1.2");
    assert!(!small_etag.contains('-'), "{small_etag}");
    let (big_key, _, _) = bucket_object(&moto, "big", spec.sop);
    let (small_key, _, _) = bucket_object(&moto, "big", "1.2.826.0.1.3680043.10.78.1.1.2");
    for key in [big_key, small_key, "archive/pacs-layout.json".to_owned()] {
        let (status, headers, _) = moto
            .request("HEAD", &format!("/big/{key}"), &[], b"")
            .unwrap();
        assert_eq!(status, 200, "{key}");
        let headers = headers.to_ascii_lowercase();
        assert!(
            headers.contains("x-amz-server-side-encryption: aws:kms")
                && headers.contains(&format!(
                    "x-amz-server-side-encryption-aws-kms-key-id: {}",
                    kms_key.to_ascii_lowercase()
                )),
            "{key} not encrypted with the key: {headers}"
        );
    }
    no_staging_key_left(moto.keys("big"));
    drop(server);
}

/// A bucket that does not exist: `pacs serve` exits non-zero at start
/// with one message naming the bucket and the endpoint; no panic.
#[test]
fn s3_missing_bucket_is_a_clear_error_at_start() {
    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = s3_config(tmp.path(), &moto, "absent-bucket", "max_retries = 0\n");
    let err = serve_fails_at_start(&tmp.path().join("data"), &cfg, None);
    assert!(
        err.contains("\"absent-bucket\"")
            && err.contains(&moto.endpoint())
            && err.contains("does not exist"),
        "{err}"
    );
}

/// SIGKILL `pacs import` (4 workers, S3 via the standard AWS variables and
/// `PACS_STORAGE_URL`) after a random number of acknowledged stores;
/// restart: every acknowledged instance is retrievable byte-identical and
/// `pacs verify` agrees.
#[test]
fn s3_sigkill_during_ingest_loses_nothing_acknowledged() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("crash");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let env: Vec<(&str, String)> = moto
        .aws_env()
        .into_iter()
        .chain([("PACS_STORAGE_URL", "s3://crash/pacs".to_owned())])
        .collect();
    let mut acked: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut rng = Rng::new(0x53_0053);
    let mut mid_stream = 0;
    for round in 0..6 {
        let import = import_command(&dir, &env, &sample_dir());
        let killed = import_then_kill(import, KillAt::Acks(1 + rng.below(20) as usize));
        if killed.mid_stream {
            mid_stream += 1;
        }
        for (sop, sha, path) in killed.stored {
            acked.insert(sop, (sha, path));
        }
        check_acknowledged(
            &dir,
            &env,
            round,
            acked.iter().map(|(sop, (sha, path))| (sop, sha, path)),
        );
        for (sop, (_, path)) in &acked {
            let (_, in_bucket, _) = bucket_object(&moto, "crash", sop);
            assert_eq!(in_bucket, std::fs::read(path).unwrap());
        }
        // Start over now and then so kills land mid-ingest again.
        if round % 3 == 2 {
            std::fs::remove_dir_all(&dir).unwrap();
            for key in moto.keys("crash") {
                moto.request("DELETE", &format!("/crash/{key}"), &[], b"")
                    .unwrap();
            }
            acked.clear();
        }
    }
    assert!(mid_stream >= 2, "only {mid_stream} kills landed mid-stream");
}

/// `pacs --data-dir DIR ARGS` with the variables `env`, to completion.
fn pacs_env(dir: &Path, env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// After a kill: `pacs verify` passes, and `pacs get` returns each
/// acknowledged (SOP Instance UID, SHA-256, source file) byte-identical.
fn check_acknowledged<'a>(
    dir: &Path,
    env: &[(&str, String)],
    round: usize,
    acked: impl Iterator<Item = (&'a String, &'a String, &'a String)>,
) {
    let o = pacs_env(dir, env, &["verify"]);
    assert!(
        o.status.success(),
        "round {round}: verify: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let file = dir.with_extension("check.dcm");
    for (sop, sha, path) in acked {
        let o = pacs_env(dir, env, &["get", sop, "-o", file.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "round {round}: acknowledged {sop} lost: {}",
            stderr(&o)
        );
        assert_eq!(&sha256_file(&file), sha, "acknowledged {sop} changed");
        assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(path).unwrap());
    }
}

/// `pacs import --print-stored --jobs 4 SRC` with the variables `env`,
/// for [`import_then_kill`].
fn import_command(dir: &Path, env: &[(&str, String)], src: &Path) -> Command {
    let mut import = Command::new(pacs_bin());
    import
        .arg("--data-dir")
        .arg(dir)
        .args(["import", "--print-stored", "--jobs", "4"])
        .arg(src)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "error");
    import
}

/// The data set of a Part 10 file: what follows the file meta group,
/// whose length (0002,0000) is the first element after the preamble.
fn dataset_of(part10: &[u8]) -> &[u8] {
    assert_eq!(&part10[128..132], b"DICM");
    let group_len = u32::from_le_bytes(part10[140..144].try_into().unwrap()) as usize;
    &part10[144 + group_len..]
}

/// A tag's value in a Part 10 file, read with DCMTK's dcmdump.
fn dicom_value(file: &Path, tag: &str) -> String {
    let dump = dcmtk("dcmdump").unwrap();
    let o = Command::new(dump)
        .args(["+P", tag, "-s"])
        .arg(file)
        .output()
        .unwrap();
    let text = stdout(&o);
    let line = text.lines().next().unwrap_or_default();
    line.split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(v, _)| v.trim_end_matches('\0').to_owned())
        .unwrap_or_else(|| panic!("no {tag} in {}: {text}", file.display()))
}

/// `count` synthetic CT objects of 64 KB of pixel data in one study, as
/// files under `dir`.
fn synthetic_files(dir: &Path, count: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let (study, series) = (
        "1.2.826.0.1.3680043.10.79.1",
        "1.2.826.0.1.3680043.10.79.1.1",
    );
    (1..=count)
        .map(|i| {
            let sop = format!("{series}.{i}");
            let path = dir.join(format!("{i:04}.dcm"));
            let bytes = object(&Spec {
                study,
                series,
                sop: &sop,
                pixel_bytes: 64 << 10,
                ..Spec::default()
            });
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

/// The disk-backed durability run: `pacs import` (4 workers, S3 on s3s-fs
/// through the standard AWS variables) while the S3 server is SIGKILLed and
/// started again from its directory; then the import is SIGKILLed after a
/// random number of acknowledged stores, and the S3 server once more.
/// Every acknowledged instance is on the server's disk byte-identical,
/// `pacs get` returns it, and `pacs verify` agrees.
#[test]
fn s3_on_disk_killed_beside_the_archive_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(&tmp.path().join("s3")) else {
        return;
    };
    let env: Vec<(&str, String)> = s3
        .aws_env()
        .into_iter()
        .chain([("PACS_STORAGE_URL", "s3://disk/pacs".to_owned())])
        .collect();
    let s3 = std::sync::Mutex::new(s3);
    let src = tmp.path().join("src");
    synthetic_files(&src, 400);
    let dir = tmp.path().join("data");
    let mut rng = Rng::new(0x53_3353);
    let mut mid_stream = 0;
    for round in 0..3 {
        // Each round starts empty, so that its kills land mid-ingest.
        let _ = std::fs::remove_dir_all(&dir);
        let bucket = tmp.path().join("s3").join("disk");
        let _ = std::fs::remove_dir_all(&bucket);
        std::fs::create_dir_all(&bucket).unwrap();
        let import = import_command(&dir, &env, &src);
        // The S3 server dies after the 10th acknowledgement and comes back
        // 300 ms later while the import runs: the archive retries with
        // back-off, acknowledges nothing unstored, and goes on.
        let killed =
            import_then_kill_with(import, KillAt::Acks(30 + rng.below(70) as usize), |n| {
                if n == 10 {
                    let mut s = s3.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.kill();
                    std::thread::sleep(Duration::from_millis(300));
                    s.restart();
                }
            });
        assert!(
            killed.stored.len() > 10,
            "round {round}: no store acknowledged after the S3 server came back"
        );
        if killed.mid_stream {
            mid_stream += 1;
        }
        // And once more with the archive dead: what it acknowledged must be
        // on the server's disk, not in a buffer of the server process.
        {
            let mut s = s3.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.kill();
            s.restart();
        }
        assert!(!killed.stored.is_empty(), "round {round}: nothing stored");
        let s = s3.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = s.keys("disk");
        for (sop, _, path) in &killed.stored {
            let source = std::fs::read(path).unwrap();
            let key = keys
                .iter()
                .find(|k| k.ends_with(&format!("/{sop}.dcm")))
                .unwrap_or_else(|| panic!("round {round}: acknowledged {sop} not on disk"));
            assert!(
                s.object("disk", key).as_deref() == Some(source.as_slice()),
                "round {round}: {key} on disk is not the bytes sent"
            );
        }
        drop(s);
        check_acknowledged(
            &dir,
            &env,
            round,
            killed
                .stored
                .iter()
                .map(|(sop, sha, path)| (sop, sha, path)),
        );
    }
    assert!(mid_stream >= 2, "only {mid_stream} kills landed mid-stream");
}

/// A server on s3s-fs, which checks every request's signature: a large
/// instance goes up as a multipart upload completed by a conditional copy,
/// a small one by a conditional PUT; both come back byte-identical by
/// WADO-RS after the S3 server and the archive are both SIGKILLed and
/// started again.
#[test]
fn s3_on_disk_multipart_and_conditional_creates_survive_both_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut s3) = S3sFs::start(&tmp.path().join("s3")) else {
        return;
    };
    s3.create_bucket("disk");
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "strict_ae = false\nstorage_url = \"s3://disk/archive\"\n\n[s3]\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\nallow_http = true\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nmultipart_threshold = 1048576\n",
            s3.endpoint(),
            pacs_testkit::s3::S3S_ACCESS_KEY,
            pacs_testkit::s3::S3S_SECRET_KEY,
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let serve = || Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let spec = Spec {
        study: "1.2.826.0.1.3680043.10.80.1",
        series: "1.2.826.0.1.3680043.10.80.1.1",
        sop: "1.2.826.0.1.3680043.10.80.1.1.1",
        pixel_bytes: 3 << 20,
        ..Spec::default()
    };
    let big = object(&spec);
    let small_sop = "1.2.826.0.1.3680043.10.80.1.1.2";
    let small = object(&Spec {
        sop: small_sop,
        pixel_bytes: 64,
        ..spec
    });
    let mut server = serve();
    for bytes in [&big, &small] {
        let (status, body) = stow(server.http_port, bytes);
        assert_eq!(status, 200, "{body}");
    }
    let h = healthz(server.http_port);
    assert_eq!(h["dependencies"]["storage"]["multipart_uploads"], 1, "{h}");
    assert_eq!(h["dependencies"]["storage"]["status"], "ok", "{h}");
    // Both killed (SIGKILL, by PID), both started again.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    s3.kill();
    s3.restart();
    let server = serve();
    for (sop, sent) in [(spec.sop, &big), (small_sop, &small)] {
        let key = s3
            .keys("disk")
            .into_iter()
            .find(|k| k.ends_with(&format!("/{sop}.dcm")))
            .unwrap_or_else(|| panic!("{sop} not on disk: {:?}", s3.keys("disk")));
        assert!(s3.object("disk", &key).as_ref() == Some(sent), "{key}");
        let r = request(
            server.http_port,
            "GET",
            &format!(
                "/dicom-web/studies/{}/series/{}/instances/{sop}",
                spec.study, spec.series
            ),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{sop}");
        let body = r.body;
        assert!(
            contains(&body, dataset_of(sent)),
            "{sop}: WADO-RS did not return the bytes stored"
        );
    }
    no_staging_key_left(s3.keys("disk"));
    drop(server);
}

/// A config for a server on the s3s-fs server `s3` through `endpoint`
/// (bucket `bucket`, prefix `archive`), with `extra` in its `[s3]` table.
fn s3s_config(dir: &Path, endpoint: &str, bucket: &str, extra: &str) -> PathBuf {
    let cfg = dir.join(format!("{bucket}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "strict_ae = false\nstorage_url = \"s3://{bucket}/archive\"\n\n[s3]\n\
             endpoint = \"{endpoint}\"\nregion = \"us-east-1\"\npath_style = true\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nmax_retries = 0\n{extra}",
            pacs_testkit::s3::S3S_ACCESS_KEY,
            pacs_testkit::s3::S3S_SECRET_KEY,
        ),
    )
    .unwrap();
    cfg
}

/// `pacs serve --config CFG` on `data` with `AWS_CA_BUNDLE` as given (or
/// removed), expected to exit at start (within 120 s), without a panic:
/// its stderr.
fn serve_fails_at_start(data: &Path, cfg: &Path, ca_bundle: Option<&Path>) -> String {
    let mut cmd = Command::new(pacs_bin());
    cmd.arg("--data-dir")
        .arg(data)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--dimse-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(bundle) = ca_bundle {
        cmd.env("AWS_CA_BUNDLE", bundle);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pacs serve kept running with an S3 store it cannot use");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// An S3 store behind TLS with a certificate of the hospital's own CA (a
/// TLS proxy in front of s3s-fs): refused at start without that CA, with
/// a message that says where to give it; refused with a CA file that is
/// not PEM; used through `[s3] ca_file` (STOW, WADO-RS, the object on the
/// store's disk) and through `AWS_CA_BUNDLE` (`pacs get`).
#[test]
fn s3_over_https_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(&tmp.path().join("s3")) else {
        return;
    };
    s3.create_bucket("tls");
    let pki = pki::Pki::new(tmp.path());
    pki.leaf("ca", "store", 2, "DNS:localhost,IP:127.0.0.1");
    let proxy = tls_proxy::TlsProxy::start(&pki.path("store.pem"), &pki.path("store.key"), s3.port);
    let endpoint = format!("https://localhost:{}", proxy.port);
    let data = tmp.path().join("data");

    // The system's roots alone do not trust the store.
    let plain = s3s_config(tmp.path(), &endpoint, "tls", "");
    let err = serve_fails_at_start(&data, &plain, None);
    assert!(
        err.contains(&endpoint)
            && err.contains("UnknownIssuer")
            && err.contains("ca_file")
            && err.contains("AWS_CA_BUNDLE"),
        "{err}"
    );
    assert_eq!(proxy.handshakes(), 0);

    // A CA file that holds no certificate is named.
    let not_pem = tmp.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let err = serve_fails_at_start(&data, &plain, Some(&not_pem));
    assert!(
        err.contains(not_pem.to_str().unwrap()) && err.contains("no PEM certificate"),
        "{err}"
    );

    // [s3] ca_file: stored, read back, on the store's disk.
    let cfg = s3s_config(
        tmp.path(),
        &endpoint,
        "tls",
        &format!("ca_file = \"{}\"\n", pki.path("ca.pem").display()),
    );
    let spec = Spec {
        study: "1.2.826.0.1.3680043.10.81.1",
        series: "1.2.826.0.1.3680043.10.81.1.1",
        sop: "1.2.826.0.1.3680043.10.81.1.1.1",
        pixel_bytes: 4096,
        ..Spec::default()
    };
    let sent = object(&spec);
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (status, body) = stow(server.http_port, &sent);
    assert_eq!(status, 200, "{body}");
    let r = request(
        server.http_port,
        "GET",
        &format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            spec.study, spec.series, spec.sop
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(contains(&r.body, dataset_of(&sent)));
    let key = s3
        .keys("tls")
        .into_iter()
        .find(|k| k.ends_with(&format!("/{}.dcm", spec.sop)))
        .unwrap_or_else(|| panic!("not on the store's disk: {:?}", s3.keys("tls")));
    assert!(s3.object("tls", &key).as_ref() == Some(&sent));
    assert!(proxy.handshakes() > 0);
    drop(server);

    // AWS_CA_BUNDLE, the standard variable, instead of the config.
    let out = tmp.path().join("got.dcm");
    let o = Command::new(pacs_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["get", spec.sop, "-o", out.to_str().unwrap()])
        .env("PACS_CONFIG", &plain)
        .env("AWS_CA_BUNDLE", pki.path("ca.pem"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), sent);
}

/// Credentials the store refuses stop the start with a message that says
/// so, against a store that checks signatures (s3s-fs): a wrong secret
/// key, and an unknown access key (which s3s answers NotSignedUp, AWS
/// InvalidAccessKeyId).
#[test]
fn s3_refused_credentials_are_a_clear_error_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = S3sFs::start(&tmp.path().join("s3")) else {
        return;
    };
    s3.create_bucket("creds");
    let data = tmp.path().join("data");
    for (key, secret, code) in [
        (
            pacs_testkit::s3::S3S_ACCESS_KEY,
            "not-the-secret",
            "SignatureDoesNotMatch",
        ),
        ("nobody", pacs_testkit::s3::S3S_SECRET_KEY, "NotSignedUp"),
    ] {
        let cfg = tmp.path().join("creds.toml");
        std::fs::write(
            &cfg,
            format!(
                "storage_url = \"s3://creds/archive\"\n\n[s3]\nendpoint = \"{}\"\n\
                 region = \"us-east-1\"\npath_style = true\nallow_http = true\n\
                 access_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nmax_retries = 0\n",
                s3.endpoint()
            ),
        )
        .unwrap();
        let err = serve_fails_at_start(&data, &cfg, None);
        assert!(
            err.contains("\"creds\"")
                && err.contains(&s3.endpoint())
                && err.contains(&format!("access denied ({code}): check the credentials")),
            "{err}"
        );
        assert!(!err.contains(secret), "the secret is in the message: {err}");
    }
    assert!(s3.keys("creds").is_empty(), "{:?}", s3.keys("creds"));
}
