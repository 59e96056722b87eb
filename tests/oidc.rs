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
use std::process::{Command, Stdio};
use std::time::Duration;

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

fn start_provider(port: u16) -> Provider {
    start_provider_with(port, &[])
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

/// Runs openssl, failing the test on error.
fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`op.pem`, `op.key`): the provider's HTTPS identity, as a hospital's
/// private CA would issue it.
fn private_ca(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Sen PACS test hospital CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    std::fs::write(
        dir.join("op.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=idp", "-keyout", "op.key",
            "-out", "op.csr",
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-set_serial",
            "7",
            "-in",
            "op.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-extfile",
            "op.ext",
            "-out",
            "op.pem",
        ],
        dir,
    );
}

/// GETs `url` from the HTTPS provider, trusting `ca`.
fn https_get(url: &str, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
        .arg(ca)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A provider served over HTTPS by a private CA: its discovery document and
/// keys are fetched over TLS when `oidc_ca_file` names the CA, and its
/// tokens are accepted; without the CA the provider is not trusted and its
/// tokens are refused.
#[test]
fn https_provider_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    private_ca(tmp.path());
    let op_port = free_port();
    let op = start_provider_with(
        op_port,
        &[
            "--tls",
            tmp.path().join("op.pem").to_str().unwrap(),
            tmp.path().join("op.key").to_str().unwrap(),
        ],
    );
    let ca = tmp.path().join("ca.pem");
    let issuer = format!("https://127.0.0.1:{op_port}");
    let token = https_get(&format!("{issuer}/test/mint?kind=good"), &ca);

    for (name, ca_line) in [
        ("trusted", format!("oidc_ca_file = {ca:?}\n")),
        ("untrusted", String::new()),
    ] {
        let data = tmp.path().join(format!("data-{name}"));
        let cfg = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[auth]\noidc_issuer = \"{issuer}\"\noidc_audience = \"urn:sen-pacs\"\n{ca_line}"
            ),
        )
        .unwrap();
        let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
        let (status, body) = qido(server.http_port, &token);
        if name == "trusted" {
            assert!(matches!(status, 200 | 204), "{name}: {status} {body}");
        } else {
            assert_eq!(status, 401, "{name}: {body}");
            assert!(body.contains("certificate"), "{name}: {body}");
        }
        server.stop();
    }
    drop(op);
}

/// One request with a cookie; returns status, the `Set-Cookie` value of
/// `senpacs_oidc` and `Location`, and the body.
fn get_with_cookie(port: u16, path: &str, cookie: Option<&str>) -> (u16, String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nConnection: close\r\nHost: 127.0.0.1:{port}\r\nAccept-Language: en\r\n"
    );
    if let Some(c) = cookie {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = headers
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let header = |name: &str| {
        headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .find(|v| name != "set-cookie" || v.starts_with("senpacs_oidc="))
            .unwrap_or_default()
    };
    let cookie = header("set-cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    (status, cookie, header("location"), body.to_owned())
}

/// The `state` parameter of an authorization redirect.
fn state_of(location: &str) -> String {
    location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_owned()
}

/// The viewer's sign-in through the provider (authorization code + PKCE,
/// server-side), the provider over HTTPS with a private CA: the redirect
/// carries S256, state and nonce; forged, replayed and foreign-browser
/// states and the provider's errors are refused with a page; and, in
/// Chromium, a user signs in through the provider's pages, reads a study
/// and signs out, while a user whose role claim maps to no role is refused
/// (tests/browser/access/oidc-login.spec.mjs). Login, failures and logout
/// are in the audit trail.
#[test]
fn viewer_signs_in_through_the_provider() {
    let tmp = tempfile::tempdir().unwrap();
    private_ca(tmp.path());
    let data = tmp.path().join("data");
    let import = pacs(&data, &["import", sample_dir().to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    let op_port = free_port();
    let issuer = format!("https://127.0.0.1:{op_port}");
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\noidc_issuer = \"{issuer}\"\noidc_audience = \"urn:sen-pacs\"\n\
             oidc_ca_file = {:?}\noidc_client_id = \"pacs-web\"\n\
             oidc_client_secret = \"pacs-web-secret\"\noidc_display_name = \"Hospital IdP\"\n",
            tmp.path().join("ca.pem")
        ),
    )
    .unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let port = server.http_port;
    let op = start_provider_with(
        op_port,
        &[
            "--tls",
            tmp.path().join("op.pem").to_str().unwrap(),
            tmp.path().join("op.key").to_str().unwrap(),
            "--redirect",
            &format!("http://127.0.0.1:{port}/login/oidc/callback"),
        ],
    );

    // The login page offers the provider.
    let (status, _, _, body) = get_with_cookie(port, "/login", None);
    assert_eq!(status, 200);
    assert!(body.contains("Sign in with Hospital IdP"), "{body}");

    // The redirect: code flow with S256, state, nonce; a cookie binds it.
    let (status, cookie, location, _) = get_with_cookie(port, "/login/oidc?next=/", None);
    assert_eq!(status, 303);
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    for part in [
        "response_type=code",
        "client_id=pacs-web",
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "scope=openid",
    ] {
        assert!(location.contains(part), "{part} missing: {location}");
    }
    assert!(cookie.starts_with("senpacs_oidc="), "{cookie}");
    let state = state_of(&location);

    // A forged state: refused.
    let (status, _, _, body) = get_with_cookie(
        port,
        "/login/oidc/callback?code=x&state=forged",
        Some(&cookie),
    );
    assert_eq!(status, 400, "{body}");
    // The real state from a browser without the cookie (a sign-in begun
    // elsewhere, pushed to a victim): refused, and the state is spent.
    let cb = format!("/login/oidc/callback?code=x&state={state}");
    let (status, _, _, body) = get_with_cookie(port, &cb, None);
    assert_eq!(status, 400, "{body}");
    let (status, _, _, body) = get_with_cookie(port, &cb, Some(&cookie));
    assert_eq!(status, 400, "spent state: {body}");
    assert!(body.contains("already used"), "{body}");

    // The provider's error answer is shown as a page.
    let (_, cookie2, location2, _) = get_with_cookie(port, "/login/oidc", None);
    let (status, set, _, body) = get_with_cookie(
        port,
        &format!(
            "/login/oidc/callback?error=access_denied&error_description=End-User+aborted&state={}",
            state_of(&location2)
        ),
        Some(&cookie2),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("refused the sign-in") && body.contains("access_denied"),
        "{body}"
    );
    assert_eq!(set, "senpacs_oidc=", "the flow cookie is cleared");

    // The browser: sign in, read, sign out; a user with no role refused.
    let run = browser_spec(
        port,
        "tests/browser/access/oidc-login.spec.mjs",
        &[
            ("PACS_OIDC_USER", "dr.an"),
            ("PACS_OIDC_NOROLE", "visitor"),
            ("PACS_OIDC_PROVIDER_NAME", "Hospital IdP"),
        ],
    );
    drop(op);
    let (_, server_log) = server.stop();
    let audit = audit_text(&data);
    if let Some((passed, output)) = run {
        println!("{output}");
        assert!(passed, "browser spec failed; server log:\n{server_log}");
        // One line per record: the login, the logout (DCM 110123) of the
        // provider's user, and the refusal of the user without a role.
        let has = |all: &[&str]| audit.lines().any(|l| all.iter().all(|n| l.contains(n)));
        assert!(has(&["dr.an", "OpenID Connect sign-in as radiologist"]));
        assert!(has(&["dr.an", "110123"]), "no logout record");
        assert!(has(&["visitor", "no role of this archive"]));
        assert!(
            has(&["dr.an", "/studies/"]) || has(&["dr.an", "110103"]),
            "no study read record"
        );
    }
    for needle in [
        "unknown, expired or replayed state",
        "begun in another browser",
        "the provider answered access_denied",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}");
    }
}
