//! AI results and saved work in the viewer, end to end: a SEG and a TID 1500
//! SR made with highdicom (`tests/derived/make_objects.py`) over the sample
//! CT are imported into the real `pacs serve`, displayed and hit-tested in
//! Debian's Chromium (`tests/browser/derived/derived.spec.mjs`); the
//! measurements and key image the browser saves through STOW-RS are then
//! read back as another DICOM tool would (dicomweb-client and highdicom,
//! `tests/derived/read_saved.py`) and validated with `dciodvfy`.
//!
//! Needs node, Chromium and playwright-core (as tests/viewer.rs), a Python
//! with highdicom and dicomweb-client (`PACS_PYTHON`, tests/run.sh's .venv)
//! and dicom3tools' `dciodvfy`; without them the tests are skipped, unless
//! `PACS_REQUIRE_PEERS` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pacs_testkit::peers::{missing, python, python_has};

const DCIODVFY: &str = "/usr/bin/dciodvfy";

/// The sample CT the objects are made over (eight 256 x 256 slices).
fn source_series() -> PathBuf {
    sample_dir().join("ct-phantom-prior/1")
}

/// Makes the SEG and SR into `out`; the generator's JSON description.
fn make_objects(out: &Path) -> Option<serde_json::Value> {
    if !python_has("highdicom") || !python_has("dicomweb_client") {
        return missing(&format!(
            "highdicom or dicomweb-client is not importable by {}",
            python()
        ));
    }
    let o = Command::new(python())
        .arg(repo_root().join("tests/derived/make_objects.py"))
        .arg(source_series())
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "make_objects.py: {}", stderr(&o));
    Some(serde_json::from_str(stdout(&o).trim()).unwrap())
}

/// An archive with the sample CT and the derived objects.
fn archive(tmp: &Path) -> Option<(PathBuf, serde_json::Value)> {
    let objects = tmp.join("objects");
    let fixture = make_objects(&objects)?;
    let data = tmp.join("data");
    let import = pacs(
        &data,
        &[
            "import",
            source_series().to_str().unwrap(),
            objects.to_str().unwrap(),
        ],
    );
    assert!(import.status.success(), "import: {}", stderr(&import));
    Some((data, fixture))
}

/// `dciodvfy` on `file`: its error lines (warnings are advice).
fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let o = Command::new(DCIODVFY).arg(file).output().unwrap();
    let text = format!("{}{}", stdout(&o), stderr(&o));
    println!("dciodvfy {}:\n{text}", file.display());
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_owned)
        .collect()
}

/// The viewer's saved SR and KO read back over DICOMweb by highdicom.
fn read_saved(port: u16, study: &str, out: &Path, auth: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/derived/read_saved.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(study)
        .arg(out);
    if let Some(a) = auth {
        cmd.arg(a);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "read_saved.py: {}", stderr(&o));
    serde_json::from_str(stdout(&o).trim().lines().last().unwrap()).unwrap()
}

fn check_saved(saved: &serde_json::Value, fixture: &serde_json::Value, out: &Path) {
    let ms = saved["measurements"].as_array().unwrap();
    let length = ms
        .iter()
        .find(|m| m["name"] == "Length")
        .unwrap_or_else(|| panic!("no Length in the saved SR: {saved}"));
    let value = length["value"].as_f64().unwrap();
    assert!((value - 60.0).abs() < 0.5, "saved length {value} mm");
    assert_eq!(length["unit"], "mm");
    assert_eq!(length["graphicType"], "POLYLINE");
    assert!(
        ms.iter().any(|m| m["name"] == "Area"),
        "the rectangle's area is saved: {saved}"
    );
    assert_eq!(saved["keyImages"].as_array().unwrap().len(), 1, "{saved}");
    assert_ne!(fixture["srSop"], serde_json::Value::Null);
    if !pacs_testkit::peers::tool_available(DCIODVFY, "dciodvfy") {
        return;
    }
    for f in ["sr.dcm", "ko.dcm"] {
        let errors = dciodvfy_errors(&out.join(f));
        assert!(errors.is_empty(), "dciodvfy {f}: {errors:?}");
    }
}

fn run_spec(port: u16, fixture: &serde_json::Value, env: &[(&str, &str)]) -> Option<String> {
    let json = fixture.to_string();
    let mut all = vec![("PACS_TEST_DERIVED", json.as_str())];
    all.extend_from_slice(env);
    let (passed, output) = browser_spec(port, "tests/browser/derived/derived.spec.mjs", &all)?;
    println!("{output}");
    assert!(passed, "browser spec failed");
    Some(output)
}

/// Sign-in off (loopback): the SEG overlay and the SR measurement are
/// displayed and hit-tested; saved measurements and a key image survive a
/// reload, validate with dciodvfy and are read by highdicom.
#[test]
fn seg_and_sr_displayed_and_work_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((data, fixture)) = archive(tmp.path()) else {
        return;
    };
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    if run_spec(port, &fixture, &[]).is_some() {
        let out = tmp.path().join("saved");
        let saved = read_saved(port, fixture["study"].as_str().unwrap(), &out, None);
        check_saved(&saved, &fixture, &out);
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// Sign-in on: a radiologist saves through the session cookie, another
/// radiologist sees the work, a referrer (no store permission) is told
/// why the save failed and nothing of theirs is stored.
#[test]
fn saved_work_under_access_control() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((data, fixture)) = archive(tmp.path()) else {
        return;
    };
    add_user(&data, "bs.an", "radiologist");
    add_user(&data, "bs.binh", "radiologist");
    add_user(&data, "bs.chi", "referrer");
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let ran = run_spec(
        port,
        &fixture,
        &[
            ("PACS_TEST_USERS", "bs.an,bs.binh,bs.chi"),
            ("PACS_TEST_PASSWORD", TEST_PASSWORD),
        ],
    );
    if ran.is_some() {
        let out = tmp.path().join("saved");
        let auth = basic("bs.binh", TEST_PASSWORD);
        let saved = read_saved(port, fixture["study"].as_str().unwrap(), &out, Some(&auth));
        // Only the radiologist's save is stored: one length, one area.
        let lengths = saved["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == "Length")
            .count();
        assert_eq!(lengths, 1, "{saved}");
        check_saved(&saved, &fixture, &out);
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
