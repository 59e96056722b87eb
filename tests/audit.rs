//! The audit trail through the real binary: a DIMSE session (DCMTK storescu,
//! findscu, getscu, echoscu) leaves one record per PHI access in
//! `DATA_DIR/audit/`, a listed AE title calling from an address it is not
//! bound to is refused and audited, `pacs audit verify` holds on the log
//! written and fails once a line is edited, and a query whose record cannot
//! be written is refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const PATIENT: &str = "VN-0001";
const STUDY: &str = "2.25.10580310851379504485814918705078594299";

fn run(tool: &Path, args: &[&str], port: u16) -> Output {
    Command::new(tool)
        .args(args)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .output()
        .unwrap()
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// `pacs audit search ARGS --json`, parsed.
fn search(data: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "search", "--json"];
    all.extend_from_slice(args);
    let o = pacs(data, &all);
    assert!(o.status.success(), "audit search: {}", stderr(&o));
    serde_json::from_str::<Vec<Value>>(&stdout(&o)).unwrap()
}

fn events(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let msg = r["msg"].as_str().unwrap_or("");
            let action = msg
                .split("EventActionCode=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("");
            (r["event"].as_str().unwrap().to_owned(), action.to_owned())
        })
        .collect()
}

#[test]
fn dimse_session_is_audited_and_the_chain_verifies() {
    let (Some(storescu), Some(findscu), Some(getscu), Some(movescu), Some(echoscu)) = (
        dcmtk("storescu"),
        dcmtk("findscu"),
        dcmtk("getscu"),
        dcmtk("movescu"),
        dcmtk("echoscu"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pacs.toml");
    // Held until movescu runs, so the server's own ports cannot take it.
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let move_port = hold.local_addr().unwrap().port();
    // WSDEST is movescu's own storage SCP. WS is bound to this machine; SPOOF only to 127.0.0.2, so SPOOF
    // calling from 127.0.0.1 is someone else using its title.
    std::fs::write(
        &cfg,
        format!(
            "[[remote_ae]]\nae_title = \"WS\"\nhost = \"127.0.0.0/30\"\nport = 1\n\n\
         [[remote_ae]]\nae_title = \"SPOOF\"\nhost = \"127.0.0.2\"\nport = 1\n\n\
         [[remote_ae]]\nae_title = \"WSDEST\"\nhost = \"127.0.0.1\"\nport = {move_port}\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.dimse_port;

    let ct = sample_dir().join("ct-phantom");
    let o = Command::new(&storescu)
        .args(["-aet", "WS", "-aec", "PACS", "+sd", "+r"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(&ct)
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}", both(&o));

    let find_args = [
        "-aet",
        "WS",
        "-aec",
        "PACS",
        "-S",
        "-k",
        "0008,0052=STUDY",
        "-k",
        &format!("0010,0020={PATIENT}"),
        "-k",
        "0020,000D",
    ];
    let o = run(&findscu, &find_args, port);
    assert!(o.status.success(), "findscu: {}", both(&o));
    assert!(
        both(&o).contains(STUDY),
        "findscu found nothing: {}",
        both(&o)
    );

    // The whole study by C-GET, then by C-MOVE to movescu's own SCP.
    let retrieve = |tool: &Path, name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        let study_key = format!("0020,000D={STUDY}");
        let mut args = vec!["-aet", "WS", "-aec", "PACS", "-S", "-k", "0008,0052=STUDY"];
        args.extend_from_slice(&["-k", &study_key, "-od", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = run(tool, &args, port);
        assert!(o.status.success(), "{name}: {}", both(&o));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 24, "{}", both(&o));
    };
    retrieve(&getscu, "got", &[]);
    drop(hold);
    let move_port = move_port.to_string();
    retrieve(&movescu, "moved", &["-aem", "WSDEST", "--port", &move_port]);

    let o = run(&echoscu, &["-aet", "WS", "-aec", "PACS"], port);
    assert!(o.status.success(), "echoscu WS: {}", both(&o));
    // A listed title at the wrong address: association rejected.
    let spoof_find = [
        "-aet",
        "SPOOF",
        "-aec",
        "PACS",
        "-S",
        "-k",
        "0008,0052=STUDY",
        "-k",
        &format!("0010,0020={PATIENT}"),
    ];
    let o = run(&findscu, &spoof_find, port);
    assert!(!o.status.success(), "SPOOF was answered: {}", both(&o));
    assert!(
        both(&o).contains("Calling AE Title Not Recognized"),
        "{}",
        both(&o)
    );
    assert!(!both(&o).contains(STUDY));
    // Outside --demo an unlisted title is refused too (strict_ae default).
    let o = run(&echoscu, &["-aet", "STRANGER", "-aec", "PACS"], port);
    assert!(!o.status.success(), "STRANGER was answered: {}", both(&o));

    // The auditors' search route answers the same records, and is audited.
    let (code, body) = http_get(server.http_port, "/api/v1/audit?user=SPOOF").unwrap();
    assert_eq!(code, 200, "{body}");
    let found: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(events(&found), vec![("110113".to_owned(), "E".to_owned())]);
    let (code, body) = http_get(server.http_port, "/api/v1/audit?from=yesterday").unwrap();
    assert_eq!(code, 400, "{body}");

    let (status, log) = server.stop();
    assert!(status.success(), "server: {log}");
    assert_eq!(
        events(&search(&data, &["--user", "anonymous"])),
        vec![("110101".to_owned(), "R".to_owned())]
    );

    // Every PHI access of the session has its record, naming the peer.
    let by_patient = search(&data, &["--patient", PATIENT]);
    let ev = events(&by_patient);
    for want in [
        ("110104", "C"), // instances received by C-STORE
        ("110112", "E"), // the C-FIND
        ("110102", "E"), // the C-GET begins
        ("110104", "R"), // and ends
    ] {
        assert!(
            ev.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing in {ev:?}"
        );
    }
    for r in &by_patient {
        assert!(
            r["users"].as_array().unwrap().iter().any(|u| u == "WS"),
            "{r}"
        );
        assert!(r["msg"]
            .as_str()
            .unwrap()
            .contains("NetworkAccessPointID=\"127.0.0.1\""));
        assert!(
            r["studies"].as_array().unwrap().iter().any(|s| s == STUDY),
            "{r}"
        );
    }
    // The C-MOVE names its destination too, before and after.
    let to_dest = events(&search(&data, &["--user", "WSDEST"]));
    assert_eq!(
        to_dest,
        vec![
            ("110102".to_owned(), "E".to_owned()),
            ("110104".to_owned(), "R".to_owned())
        ]
    );
    let by_study = search(&data, &["--study", STUDY, "--user", "WS"]);
    assert_eq!(by_study.len(), by_patient.len());
    let store = by_patient
        .iter()
        .find(|r| r["msg"].as_str().unwrap().contains("EventActionCode=\"C\""))
        .unwrap();
    assert!(
        store["msg"]
            .as_str()
            .unwrap()
            .contains("24 instances received"),
        "{store}"
    );

    // The refusals are security alerts with the reason and the address.
    let alerts = search(&data, &["--user", "SPOOF"]);
    assert_eq!(events(&alerts), vec![("110113".to_owned(), "E".to_owned())]);
    let msg = alerts[0]["msg"].as_str().unwrap();
    assert!(msg.contains("bound to other addresses"), "{msg}");
    assert!(msg.contains("NetworkAccessPointID=\"127.0.0.1\""), "{msg}");
    assert_eq!(search(&data, &["--user", "STRANGER"]).len(), 1);

    // Start and stop.
    let all = search(&data, &[]);
    let activity: Vec<&str> = all
        .iter()
        .filter(|r| r["event"] == "110100")
        .map(|r| r["msg"].as_str().unwrap())
        .collect();
    assert_eq!(activity.len(), 2, "{activity:?}");
    assert!(activity[0].contains("110120") && activity[1].contains("110121"));

    // The chain holds; an edited line breaks it there.
    let o = pacs(&data, &["audit", "verify"]);
    assert!(o.status.success(), "verify: {}", both(&o));
    assert!(
        stdout(&o).contains(&format!("{} records", all.len())),
        "{}",
        stdout(&o)
    );
    let files: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let sed = Command::new("sed")
        .args(["-i", &format!("3s/{PATIENT}/VN-0002/")])
        .arg(&files[0])
        .status()
        .unwrap();
    assert!(sed.success());
    let o = pacs(&data, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "verify: {}", both(&o));
    assert!(stdout(&o).contains("line 3:"), "{}", stdout(&o));
}

#[cfg(target_os = "linux")]
#[test]
fn a_query_whose_record_cannot_be_written_is_refused() {
    let (Some(storescu), Some(findscu)) = (dcmtk("storescu"), dcmtk("findscu")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Today's log (and tomorrow's, should the day turn during the test) is
    // /dev/full: every write fails with ENOSPC.
    let audit = data.join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for day in [now / 86_400, now / 86_400 + 1] {
        let o = Command::new("date")
            .args(["-u", "-d", &format!("@{}", day * 86_400), "+%F"])
            .output()
            .unwrap();
        let name = format!("audit-{}.log", stdout(&o).trim());
        std::os::unix::fs::symlink("/dev/full", audit.join(name)).unwrap();
    }
    let cfg = config_with_remote_ae(tmp.path(), "WS");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.dimse_port;
    // Storing is not a read: it still works.
    let o = Command::new(&storescu)
        .args(["-aet", "WS", "-aec", "PACS", "+sd", "+r"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(sample_dir().join("ct-phantom"))
        .output()
        .unwrap();
    assert!(o.status.success(), "storescu: {}", both(&o));
    let o = run(
        &findscu,
        &[
            "-v",
            "-aet",
            "WS",
            "-aec",
            "PACS",
            "-S",
            "-k",
            "0008,0052=STUDY",
            "-k",
            "0020,000D",
        ],
        port,
    );
    let text = both(&o);
    assert!(!text.contains(STUDY), "a match was sent: {text}");
    assert!(text.contains("Refused: OutOfResources"), "{text}");
    let (_, log) = server.stop();
    assert!(log.contains("audit record could not be written"), "{log}");
}

/// `GET` with an `Authorization` header: (status, body).
fn get_as(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_response(s).unwrap()
}

/// The auditors' page: the same search as `pacs audit search`, filtered by
/// user; other roles are refused, the typed values come back escaped.
#[test]
fn auditors_search_the_trail_on_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "audra", "auditor");
    add_user(&data, "rad", "radiologist");
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let rad = basic("rad", TEST_PASSWORD);
    let audra = basic("audra", TEST_PASSWORD);
    let (code, _) = get_as(port, "/dicom-web/studies?PatientID=P-77", Some(&rad));
    assert!(code == 200 || code == 204, "{code}");

    let (code, page) = get_as(port, "/audit?user=rad", Some(&audra));
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<td>110112</td>"),
        "the query is listed: {page}"
    );
    assert!(page.contains("<td>rad</td>"), "{page}");
    assert!(!page.contains("<td>audra</td>"), "filtered by user: {page}");
    let (code, page) = get_as(port, "/audit?user=%3Cscript%3E", Some(&audra));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("value=\"&lt;script&gt;\""), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    let (code, page) = get_as(port, "/audit?from=yesterday", Some(&audra));
    assert_eq!(code, 400, "{page}");
    let (code, _) = get_as(port, "/audit", Some(&rad));
    assert_eq!(code, 403);
    let (code, _) = get_as(port, "/audit", None);
    assert_eq!(code, 401);
    // The searches themselves are in the trail (Audit Log Used, 110101).
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    let used = search(&data, &["--user", "audra"]);
    assert!(events(&used).iter().any(|(e, _)| e == "110101"), "{used:?}");
}
