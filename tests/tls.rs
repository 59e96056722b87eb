//! TLS through the real `pacs` binary: DICOM TLS with DCMTK (`echoscu` /
//! `storescu` `+tls` and `+tla`), client certificates required with
//! `tls_client_ca_file` and bound to remote AEs with `tls_subject`, plain
//! DIMSE on the TLS port, TLS versions (`openssl s_client`), HTTPS with
//! curl, certificate reload on SIGHUP, and `trusted_proxies`.
//!
//! A throwaway CA and certificates (SAN IP 127.0.0.1) are made with the
//! openssl CLI in each test's temporary directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, pacs_bin, sample_files, terminate};
#[path = "common/pki.rs"]
mod pki;
use pki::{ok, run, Pki};

fn tool(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("PACS_REQUIRE_PEERS").is_none(),
        "{name} is missing and PACS_REQUIRE_PEERS is set"
    );
    eprintln!("skipped: {name} is not installed");
    None
}

/// A running `pacs serve` with a config file; killed on drop.
struct Tls {
    child: Child,
    http: u16,
    dimse: u16,
    dimse_tls: u16,
    log: PathBuf,
}

impl Tls {
    /// Starts the server with `extra` TOML lines after the TLS keys.
    fn start(dir: &Path, pki: &Pki, extra: &str) -> Tls {
        let http = free_port();
        let dimse = free_port();
        let dimse_tls = free_port();
        let config = dir.join("pacs.toml");
        std::fs::write(
            &config,
            format!(
                "dimse_tls_listen = \"127.0.0.1:{dimse_tls}\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
                 artim_timeout = 2\nstrict_ae = false\n{extra}",
                pki.path("server.pem"),
                pki.path("server.key"),
            ),
        )
        .unwrap();
        let log = dir.join("server.log");
        let child = Command::new(pacs_bin())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--dimse-listen")
            .arg(format!("127.0.0.1:{dimse}"))
            .env("RUST_LOG", "info,pacs=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut server = Tls {
            child,
            http,
            dimse,
            dimse_tls,
            log,
        };
        let start = Instant::now();
        while !server.log().contains("listening; open") {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited with {status}: {}", server.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's log, without terminal colour codes.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// `echoscu` over TLS; `auth` is `None` for `+tla`, else a certificate name.
fn echo_tls(pki: &Pki, port: u16, calling: &str, auth: Option<&str>) -> Output {
    let mut cmd = Command::new("/usr/bin/echoscu");
    match auth {
        Some(name) => cmd
            .arg("+tls")
            .arg(pki.path(&format!("{name}.key")))
            .arg(pki.path(&format!("{name}.pem"))),
        None => cmd.arg("+tla"),
    };
    cmd.arg("+cf")
        .arg(pki.path("ca.pem"))
        .args(["-to", "10", "-ta", "10", "-td", "10"])
        .args([
            "-aet",
            calling,
            "-aec",
            "PACS",
            "127.0.0.1",
            &port.to_string(),
        ]);
    run(&mut cmd)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dicom_tls_with_and_without_client_certificates() {
    let (Some(_), Some(storescu)) = (tool("echoscu"), tool("storescu")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("ca", "server", 1, "IP:127.0.0.1");
    pki.leaf("ca", "client", 2, "DNS:modality.test");
    let server = Tls::start(dir.path(), &pki, "");

    // With a client certificate (not asked for, so not sent) and without.
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", Some("client"));
    assert!(o.status.success(), "echoscu +tls: {}", text(&o));
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", None);
    assert!(o.status.success(), "echoscu +tla: {}", text(&o));

    let file = &sample_files()[0];
    let o = run(Command::new(&storescu)
        .arg("+tla")
        .arg("+cf")
        .arg(pki.path("ca.pem"))
        .args(["-aet", "MODALITY", "-aec", "PACS", "127.0.0.1"])
        .arg(server.dimse_tls.to_string())
        .arg(file));
    assert!(o.status.success(), "storescu +tla: {}", text(&o));
    assert!(
        server.log().contains("association accepted"),
        "{}",
        server.log()
    );

    // Plain DIMSE on the TLS port fails, and the port keeps serving TLS.
    let o = run(Command::new("/usr/bin/echoscu")
        .args([
            "-to",
            "10",
            "-ta",
            "10",
            "-td",
            "10",
            "-aec",
            "PACS",
            "127.0.0.1",
        ])
        .arg(server.dimse_tls.to_string()));
    assert!(
        !o.status.success(),
        "plain DIMSE on the TLS port: {}",
        text(&o)
    );
    // The server logs the failed handshake once it has closed the
    // connection, which may be just after the client gave up: wait for it
    // (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log().contains("TLS handshake failed") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        server.log().contains("TLS handshake failed"),
        "{}",
        server.log()
    );
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", None);
    assert!(o.status.success(), "echoscu +tla after plain: {}", text(&o));
    // The plain port is still plain.
    let o = run(Command::new("/usr/bin/echoscu")
        .args(["-aec", "PACS", "127.0.0.1"])
        .arg(server.dimse.to_string()));
    assert!(o.status.success(), "plain echoscu: {}", text(&o));

    // TLS 1.1 refused, 1.2 and 1.3 spoken.
    let s_client = |version: &str| {
        run(Command::new("openssl")
            .args(["s_client", version, "-connect"])
            .arg(format!("127.0.0.1:{}", server.dimse_tls))
            .arg("-CAfile")
            .arg(pki.path("ca.pem")))
    };
    let o = s_client("-tls1_1");
    assert!(text(&o).contains("Cipher is (NONE)"), "{}", text(&o));
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let o = s_client(flag);
        assert!(text(&o).contains(name), "{flag}: {}", text(&o));
        assert!(
            text(&o).contains("Verify return code: 0 (ok)"),
            "{flag}: {}",
            text(&o)
        );
    }
}

#[test]
fn client_ca_requires_a_certificate_and_binds_it_to_the_remote_ae() {
    if tool("echoscu").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("ca", "server", 1, "IP:127.0.0.1");
    pki.leaf("ca", "ct1", 2, "DNS:ct1.modality.test");
    pki.leaf("ca", "other", 3, "DNS:other.modality.test");
    pki.ca("rogue");
    pki.leaf("rogue", "stranger", 4, "DNS:ct1.modality.test");
    let server = Tls::start(
        dir.path(),
        &pki,
        &format!(
            "tls_client_ca_file = {:?}\n\n[[remote_ae]]\nae_title = \"CT1\"\nhost = \"127.0.0.1\"\n\
             port = 104\ntls_subject = \"ct1.modality.test\"\n",
            pki.path("ca.pem")
        ),
    );

    // No certificate: refused during the handshake.
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", None);
    assert!(!o.status.success(), "+tla accepted: {}", text(&o));
    // A certificate from another CA: refused.
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", Some("stranger"));
    assert!(!o.status.success(), "rogue CA accepted: {}", text(&o));
    // A certificate of our CA: accepted, for any AE without tls_subject.
    let o = echo_tls(&pki, server.dimse_tls, "ECHO", Some("other"));
    assert!(o.status.success(), "{}", text(&o));
    // CT1 is bound to its certificate: the right one passes, another of the
    // same CA is refused, and so is CT1 on the plain port.
    let o = echo_tls(&pki, server.dimse_tls, "CT1", Some("ct1"));
    assert!(o.status.success(), "CT1 with its certificate: {}", text(&o));
    let o = echo_tls(&pki, server.dimse_tls, "CT1", Some("other"));
    assert!(
        !o.status.success(),
        "CT1 with another certificate: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("Calling AE Title Not Recognized") || text(&o).contains("Rejected"),
        "{}",
        text(&o)
    );
    let o = run(Command::new("/usr/bin/echoscu")
        .args(["-aet", "CT1", "-aec", "PACS", "127.0.0.1"])
        .arg(server.dimse.to_string()));
    assert!(!o.status.success(), "CT1 without TLS: {}", text(&o));
    assert!(
        server.log().contains("certificate is not valid for")
            && server
                .log()
                .contains("bound to a TLS certificate but associated without TLS"),
        "{}",
        server.log()
    );
}

#[test]
fn a_peer_that_never_completes_the_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("ca", "server", 1, "IP:127.0.0.1");
    let server = Tls::start(dir.path(), &pki, "");
    let mut s = TcpStream::connect(("127.0.0.1", server.dimse_tls)).unwrap();
    // Far beyond the 2 s ARTIM of this server: a close arrives well before.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "silent TLS peer not closed: {r:?}"
    );
    // The close comes first, the log line right after it.
    let start = Instant::now();
    while !server
        .log()
        .contains("no TLS handshake within the ARTIM time-out")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl(pki: &Pki, port: u16, path: &str, extra: &[&str]) -> Output {
    run(Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "--cacert"])
        .arg(pki.path("ca.pem"))
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}")))
}

fn served_serial(pki: &Pki, port: u16) -> String {
    let o = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{port} -CAfile {} </dev/null 2>/dev/null \
         | openssl x509 -noout -serial",
        pki.path("ca.pem").display()
    )));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn https_with_hsts_and_certificate_reload_on_sighup() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("ca", "server", 0x51, "IP:127.0.0.1");
    let server = Tls::start(dir.path(), &pki, "http_tls = true\n");

    let o = curl(&pki, server.http, "/healthz", &[]);
    let answer = text(&o);
    assert!(o.status.success(), "{answer}");
    assert!(answer.starts_with("HTTP/"), "{answer}");
    assert!(answer.contains(" 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{answer}"
    );
    // TLS 1.1 is refused here too.
    let o = curl(
        &pki,
        server.http,
        "/healthz",
        &["--tls-max", "1.1", "--tlsv1.1"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    // Plain HTTP on the HTTPS port gets no answer.
    assert!(!matches!(
        common::http_get(server.http, "/healthz"),
        Ok((200, _))
    ));
    assert_eq!(served_serial(&pki, server.http), "serial=51");

    // New files, SIGHUP: new handshakes get the new certificate.
    pki.leaf("ca", "server", 0x52, "IP:127.0.0.1");
    ok(Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string()));
    let start = Instant::now();
    while served_serial(&pki, server.http) != "serial=52" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "certificate not reloaded: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // DICOM TLS uses the same certificate.
    assert_eq!(served_serial(&pki, server.dimse_tls), "serial=52");
    assert!(server.log().contains("TLS certificate reloaded"));
    // A broken file on SIGHUP keeps the certificate in use.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    ok(Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string()));
    let start = Instant::now();
    while !server.log().contains("TLS certificate not reloaded") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = curl(&pki, server.http, "/healthz", &[]);
    assert!(text(&o).contains(" 200"), "{}", text(&o));
}

/// The client of the last logged `/healthz` request (its `http` span).
fn logged_client(server: &Tls) -> Option<String> {
    server
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("path=/healthz") && l.contains("client="))
        .and_then(|l| l.split("client=").nth(1))
        .and_then(|rest| rest.split(['}', ' ']).next())
        .map(str::to_owned)
}

fn get_forwarded(port: u16) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Starts a server trusting `proxies`, sends a forwarded request from
/// 127.0.0.1: the answer, the logged client and the whole log.
fn forwarded_through(dir: &Path, pki: &Pki, proxies: &str) -> (String, String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let server = Tls::start(dir, pki, &format!("trusted_proxies = [{proxies}]\n"));
    let answer = get_forwarded(server.http);
    assert!(answer.contains(" 200"), "{answer}");
    let start = Instant::now();
    loop {
        if let Some(client) = logged_client(&server) {
            return (answer.to_ascii_lowercase(), client, server.log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.leaf("ca", "server", 1, "IP:127.0.0.1");

    // 127.0.0.1 not trusted: the headers are ignored.
    let (answer, client, log) =
        forwarded_through(&dir.path().join("untrusted"), &pki, "\"10.0.0.0/8\"");
    assert!(!answer.contains("strict-transport-security"), "{answer}");
    assert_eq!(client, "127.0.0.1");
    assert!(!log.contains("203.0.113.9"), "{log}");

    // 127.0.0.1 trusted: the rightmost untrusted hop is the client, and the
    // proxy's HTTPS earns HSTS.
    let (answer, client, _) = forwarded_through(&dir.path().join("trusted"), &pki, "\"127.0.0.1\"");
    assert!(answer.contains("strict-transport-security"), "{answer}");
    assert_eq!(client, "203.0.113.9");
}
