//! OpenID Connect bearer tokens through the real `pacs` binary, against a
//! real provider on 127.0.0.1 (npm `oidc-provider`, tests/oidc/op.mjs):
//! its client-credentials tokens are accepted with the role of their
//! claim, key rotation is followed, and expired, not-yet-valid, wrong
//! issuer or audience, `alg: none`, HS256 MACed with the public key, and
//! tampered tokens are refused (401) and audited as Security Alerts.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

/// One HTTP/1.1 request; returns the status and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(s).unwrap()
}

/// The provider, started with `node tests/oidc/op.mjs PORT`; stopped on
/// drop (also when an assertion fails).
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

fn start_provider(port: u16) -> Provider {
    let dir = repo_root().join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "run `npm ci` in tests/oidc (tests/run.sh does)"
    );
    let mut child = Command::new("node")
        .arg(dir.join("op.mjs"))
        .arg(port.to_string())
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok((200, _)) = http_get(port, "/jwks") {
            return Provider(child);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut child);
    panic!("the OIDC provider did not start");
}

fn client_token(op: u16, client: &str) -> String {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{client}-secret"))
    );
    let (status, body) = request(
        op,
        "POST",
        "/token",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials&scope=dicom.read",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

fn minted(op: u16, kind: &str) -> String {
    let (status, body) = request(op, "GET", &format!("/test/mint?kind={kind}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    body.trim().to_owned()
}

fn qido(server: u16, token: &str) -> (u16, String) {
    request(
        server,
        "GET",
        "/dicom-web/studies",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "application/dicom+json"),
        ],
        b"",
    )
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn audit_text(data: &Path) -> String {
    let mut all = String::new();
    if let Ok(rd) = std::fs::read_dir(data.join("audit")) {
        for e in rd.flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

#[test]
fn oidc_provider_tokens_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let op_port = free_port();
    let op = start_provider(op_port);
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\noidc_issuer = \"http://127.0.0.1:{op_port}\"\noidc_audience = \"urn:sen-pacs\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.http_port;

    // A configured issuer turns authentication on.
    let (status, _) = request(port, "GET", "/dicom-web/studies", &[], b"");
    assert_eq!(status, 401);

    // A real token from the provider, role from its `roles` claim.
    let good = client_token(op_port, "pacs-ci");
    // (An empty archive answers QIDO with 204 No Content.)
    let (status, body) = qido(port, &good);
    assert!(matches!(status, 200 | 204), "{status} {body}");

    // Authenticated, but no role we know: 403.
    let norole = client_token(op_port, "pacs-norole");
    assert_eq!(qido(port, &norole).0, 403);

    // Refused, each signed with the provider's own key unless noted.
    for kind in [
        "expired",
        "not-yet",
        "wrong-aud",
        "wrong-iss",
        "hs256-pubkey",
    ] {
        let (status, body) = qido(port, &minted(op_port, kind));
        assert_eq!(status, 401, "{kind}: {body}");
    }
    // The mint endpoint's good token is accepted, so the refusals above
    // come from the claim, not the minting.
    assert!(matches!(qido(port, &minted(op_port, "good")).0, 200 | 204));

    let parts: Vec<&str> = good.split('.').collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    // alg: none, no signature.
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
    assert_eq!(qido(port, &none).0, 401);
    // Tampered payload (a role raised), original signature.
    claims["roles"] = serde_json::json!(["admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(qido(port, &tampered).0, 401);

    // Bad tokens are Security Alerts in the audit trail.
    let audit = audit_text(&data);
    assert!(
        audit.contains("token refused"),
        "no Security Alert for a bad token"
    );

    // Key rotation: the provider restarts with a new key; after the
    // refetch interval (30 s) a token naming the new kid is accepted.
    drop(op);
    let op = start_provider(op_port);
    let rotated = client_token(op_port, "pacs-ci");
    assert_ne!(
        rotated.split('.').next(),
        good.split('.').next(),
        "same kid after restart"
    );
    std::thread::sleep(Duration::from_secs(31));
    let (status, body) = qido(port, &rotated);
    assert!(
        matches!(status, 200 | 204),
        "rotated key not followed: {status} {body}"
    );

    drop(op);
    server.stop();
}
