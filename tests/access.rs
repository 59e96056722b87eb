//! Access control through the real `pacs` binary: users and tokens from the
//! CLI, HTTP Basic, bearer tokens, the login page and its session cookie,
//! CSRF, throttling, the Host allow-list, the security headers, and every
//! route of the policy table against every role.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use access::policy::{Need, ROUTES};
use common::*;
use pacs_core::access::role_allows;
use pacs_core::Role;

const PASSWORD: &str = TEST_PASSWORD;

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap().trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// One HTTP/1.1 request over TCP (Host 127.0.0.1 unless given).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Imports one small study; returns its (study, series, sop) UIDs.
fn import_one(tmp: &Path, data: &Path) -> (String, String, String) {
    let (study, series, sop) = (
        "1.2.826.0.1.3680043.8.498.1",
        "1.2.826.0.1.3680043.8.498.2",
        "1.2.826.0.1.3680043.8.498.3",
    );
    let file = tmp.join("one.dcm");
    std::fs::write(&file, small_object(study, series, sop)).unwrap();
    let out = pacs(data, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    (study.into(), series.into(), sop.into())
}

fn config(tmp: &Path, text: &str) -> String {
    let f = tmp.join("pacs.toml");
    std::fs::write(&f, text).unwrap();
    f.to_str().unwrap().to_owned()
}

/// The interface operators script against: with a user present, anonymous
/// QIDO gets 401 with WWW-Authenticate, and the user's Basic credentials
/// get 200. Health stays public; bad passwords are refused.
#[test]
fn basic_auth_once_a_user_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    import_one(tmp.path(), &data);
    add_user(&data, "an", "radiologist");
    let list = pacs(&data, &["user", "list"]);
    assert!(stdout(&list).contains("an") && stdout(&list).contains("radiologist"));
    let server = Server::start(&data, &[]);
    let port = server.http_port;

    let r = request(port, "GET", "/dicom-web/studies", &[], b"");
    assert_eq!(r.status, 401);
    let challenges = r.all("www-authenticate").join(" | ");
    assert!(challenges.contains("Basic realm="), "{challenges}");
    assert!(challenges.contains("Bearer realm="), "{challenges}");

    let r = request(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &basic("an", PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("1.2.826.0.1.3680043.8.498.1"));

    let r = request(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &basic("an", "wrong-password"))],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(request(port, "GET", "/healthz", &[], b"").status, 200);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// Machine tokens: created by the CLI (shown once, listed without the
/// secret), accepted as bearer tokens, refused once revoked (by the API
/// while serving, and by the CLI while stopped).
#[test]
fn machine_tokens_are_accepted_and_revocable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let create = |name: &str| {
        let out = pacs(
            &data,
            &[
                "token",
                "create",
                "--name",
                name,
                "--role",
                "referrer",
                "--expires",
                "30",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    let emr = create("emr");
    let script = create("script");
    assert!(emr.starts_with("senpacs_") && emr.len() >= 8 + 43, "{emr}");
    let list = stdout(&pacs(&data, &["token", "list"]));
    assert!(list.contains("emr") && !list.contains(&emr), "{list}");
    add_user(&data, "admin", "admin");

    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let bearer = |t: &str| format!("Bearer {t}");
    let qido = |auth: &str| {
        request(
            port,
            "GET",
            "/dicom-web/studies",
            &[("Authorization", auth)],
            b"",
        )
        .status
    };
    assert_eq!(qido(&bearer(&emr)), 204, "an empty archive, but allowed");
    assert_eq!(qido(&bearer("senpacs_forged")), 401);
    assert_eq!(qido(&bearer("not-ours")), 401);
    // A referrer token may read, not administer.
    let r = request(
        port,
        "GET",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&emr))],
        b"",
    );
    assert_eq!(r.status, 403);

    let admin = basic("admin", PASSWORD);
    let r = request(
        port,
        "GET",
        "/api/v1/tokens",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 200);
    let tokens: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id_of = |name: &str| {
        tokens
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(!r.text().contains(&emr), "secrets are never listed");
    let r = request(
        port,
        "DELETE",
        &format!("/api/v1/tokens/{}", id_of("emr")),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(qido(&bearer(&emr)), 401, "revoked through the API");
    assert_eq!(qido(&bearer(&script)), 204);

    // Tokens made through the API work too.
    let r = request(
        port,
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        br#"{"name":"pacs-partner","role":"radiologist","expires_days":7}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let made: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(qido(&bearer(made["token"].as_str().unwrap())), 204);
    server.stop();

    let out = pacs(&data, &["token", "revoke", &id_of("script")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let r = request(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &bearer(&script))],
        b"",
    );
    assert_eq!(r.status, 401, "revoked by the CLI");
    server.stop();
}

/// A concrete request path for a route template.
fn instantiate(template: &str, study: &str, series: &str, sop: &str) -> String {
    template
        .replace("{study}", study)
        .replace("{series}", series)
        .replace("{instance}", sop)
        .replace("{frames}", "1")
        .replace("{tag}", "7FE00010")
        .replace("{name}", "nobody")
        .replace("{action}", "disable")
        .replace("{id}", "000000000000")
        .replace("{token}", "shr_unknown")
}

/// Every route of the policy table × every role and anonymous, against the
/// real server: anonymous gets 401 (or the public answer), a role without
/// the permission 403, a role with it the route's own answer. The server
/// itself refuses to start when its router has a route the table does not
/// list, so this walk covers every route.
#[test]
fn every_route_for_every_role() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (study, series, sop) = import_one(tmp.path(), &data);
    for r in Role::ALL {
        add_user(&data, r.as_str(), r.as_str());
    }
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let mut checked = 0;
    for route in ROUTES {
        let path = instantiate(route.path, &study, &series, &sop);
        let path = if route.path == "/wado" {
            format!("/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}")
        } else if route.method == "DELETE" && route.path.starts_with("/api/v1/studies") {
            // Deleting the imported study would leave the routes after it
            // nothing to answer: an unknown study (404 where allowed).
            instantiate(
                route.path,
                "1.2.826.0.1.3680043.10.404",
                "1.2.826.0.1.3680043.10.404.1",
                &sop,
            )
        } else {
            path
        };
        let mut callers: Vec<Option<Role>> = vec![None];
        callers.extend(Role::ALL.iter().copied().map(Some));
        for caller in callers {
            let auth = caller.map(|r| basic(r.as_str(), PASSWORD));
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            let r = request(port, route.method, &path, &headers, b"{}");
            let expected_denial = match (route.need, caller) {
                (Need::Public, _) => None,
                (_, None) => Some(401),
                (Need::SignedIn, Some(_)) => None,
                // Partners read only the studies shared with them: none here.
                (Need::Permission(p), Some(role)) => {
                    (!role_allows(role, p) || role == Role::Partner).then_some(403)
                }
            };
            let who = caller.map(Role::as_str).unwrap_or("anonymous");
            match expected_denial {
                Some(code) => assert_eq!(
                    r.status,
                    code,
                    "{} {path} as {who}: {}",
                    route.method,
                    r.text()
                ),
                None => {
                    assert!(
                        ![401, 403, 421, 503].contains(&r.status),
                        "{} {path} as {who} must be allowed, got {}: {}",
                        route.method,
                        r.status,
                        r.text()
                    );
                    // Queries and retrievals of the imported study answer it
                    // (it has no pixel data to render).
                    let pixels = ["rendered", "thumbnail", "frames", "bulkdata"]
                        .iter()
                        .any(|p| route.path.contains(p));
                    if route.method == "GET" && path.starts_with("/dicom-web/") && !pixels {
                        assert_eq!(r.status, 200, "{path} as {who}: {}", r.text());
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 7);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// Failed sign-ins lock the account (Basic and the login form alike),
/// with Retry-After; other accounts still sign in.
#[test]
fn failed_logins_lock_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "an", "radiologist");
    add_user(&data, "binh", "radiologist");
    let cfg = config(
        tmp.path(),
        "[auth]\nlockout_threshold = 3\nlockout_seconds = 600\n",
    );
    let server = Server::start(&data, &["--config", &cfg]);
    let port = server.http_port;
    let qido = |user: &str, pw: &str| {
        request(
            port,
            "GET",
            "/dicom-web/studies",
            &[("Authorization", &basic(user, pw))],
            b"",
        )
    };
    assert_eq!(qido("an", "guess-1").status, 401);
    assert_eq!(qido("an", "guess-2").status, 401);
    let locked = qido("an", "guess-3");
    assert_eq!(locked.status, 429, "the third failure locks");
    assert!(locked.header("retry-after").is_some());
    // Even the right password is refused while locked.
    assert_eq!(qido("an", PASSWORD).status, 429);
    let form = format!("username=an&password={PASSWORD}");
    let r = request(
        port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 429);
    assert!(r.header("set-cookie").is_none());
    assert_eq!(
        qido("binh", PASSWORD).status,
        204,
        "other accounts are free"
    );
    let (_, log) = server.stop();
    assert!(log.contains("lock-out"), "the lock-out is logged: {log}");
}

/// Security headers on every answer, `no-store` on patient data, the Host
/// allow-list (loopback names by default, more by configuration).
#[test]
fn headers_and_host_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(
        tmp.path(),
        "allowed_hosts = [\"pacs.benhvien.vn\", \"127.0.0.1\"]\n",
    );
    let server = Server::start(&data, &["--demo"]);
    let port = server.http_port;
    let r = request(port, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(
        r.header("strict-transport-security").is_none(),
        "not over plain HTTP"
    );
    let r = request(port, "GET", "/dicom-web/studies", &[], b"");
    assert_eq!(r.status, 200, "--demo on loopback needs no login");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for host in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]"] {
        assert_eq!(
            request(port, "GET", "/healthz", &[("Host", host)], b"").status,
            200,
            "{host}"
        );
    }
    for host in ["rebind.attacker.example", "pacs.benhvien.vn", ""] {
        assert_eq!(
            request(port, "GET", "/healthz", &[("Host", host)], b"").status,
            421,
            "{host}"
        );
    }
    server.stop();

    let server = Server::start(&data, &["--config", &cfg]);
    let port = server.http_port;
    let ok = request(
        port,
        "GET",
        "/healthz",
        &[("Host", "pacs.benhvien.vn")],
        b"",
    );
    assert_eq!(ok.status, 200);
    let bad = request(port, "GET", "/healthz", &[("Host", "localhost")], b"");
    assert_eq!(bad.status, 421, "the configured list replaces the default");
    server.stop();
}

/// Start-up refusals: CORS `*` with sign-in on, and a non-loopback
/// listener with nobody to sign in.
#[test]
fn unsafe_configurations_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |args: &[&str]| {
        Command::new(pacs_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    let port = free_port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let dimse = format!("127.0.0.1:{}", free_port());
    let out = run(&["serve", "--http-listen", &listen, "--dimse-listen", &dimse]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nobody can sign in"),
        "{}",
        stderr(&out)
    );

    add_user(&data, "an", "admin");
    let cfg = config(tmp.path(), "cors_allowed_origins = [\"*\"]\n");
    let listen = format!("127.0.0.1:{port}");
    let out = run(&[
        "--config",
        &cfg,
        "serve",
        "--http-listen",
        &listen,
        "--dimse-listen",
        &dimse,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cors_allowed_origins"),
        "{}",
        stderr(&out)
    );
}

fn session_cookie(r: &Resp) -> String {
    let c = r.header("set-cookie").unwrap_or_default();
    c.split(';').next().unwrap().to_owned()
}

/// The login page, its session cookie (HttpOnly, SameSite=Lax), CSRF
/// refusals, logout, and the idle time-out.
#[test]
fn cookie_sessions_csrf_logout_and_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "an", "radiologist");
    let cfg = config(tmp.path(), "[auth]\nsession_idle_seconds = 2\n");
    let server = Server::start(&data, &["--config", &cfg]);
    let port = server.http_port;
    let origin = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");

    // A browser sent to a page goes to the login page, and comes back.
    let r = request(
        port,
        "GET",
        "/viewer?StudyInstanceUIDs=1.2.3",
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/login?next=/viewer%3FStudyInstanceUIDs%3D1.2.3")
    );
    let page = request(port, "GET", "/login?lang=en", &[], b"");
    assert!(page.text().contains("Sign in") && page.text().contains("Tiếng Việt"));
    let page = request(
        port,
        "GET",
        "/login",
        &[("Accept-Language", "vi-VN,vi")],
        b"",
    );
    assert!(page.text().contains("Đăng nhập"));

    let login = |extra: &[(&str, &str)]| {
        let mut h = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", host.as_str()),
        ];
        h.extend_from_slice(extra);
        let body = format!("username=an&password={PASSWORD}&next=%2Fviewer");
        request(port, "POST", "/login", &h, body.as_bytes())
    };
    // Login CSRF: a form posted from another site is refused.
    assert_eq!(login(&[("Origin", "http://evil.example")]).status, 403);
    let r = login(&[("Origin", &origin)]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/viewer"));
    let set = r.header("set-cookie").unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "not over plain HTTP");
    let cookie = session_cookie(&r);
    let with = |extra: &[(&str, &str)], method: &str, path: &str| {
        let mut h = vec![("Cookie", cookie.as_str()), ("Host", host.as_str())];
        h.extend_from_slice(extra);
        request(port, method, path, &h, b"")
    };
    assert_eq!(with(&[], "GET", "/dicom-web/studies").status, 204);
    // State-changing requests on the cookie must come from our pages.
    let stow = |extra: &[(&str, &str)]| with(extra, "POST", "/dicom-web/studies").status;
    assert_eq!(stow(&[("Origin", "http://evil.example")]), 403);
    assert_eq!(stow(&[("Sec-Fetch-Site", "cross-site")]), 403);
    assert_eq!(
        stow(&[]),
        403,
        "no Origin, no fetch metadata, no CSRF header"
    );
    let me = with(&[], "GET", "/api/v1/session");
    let me: serde_json::Value = serde_json::from_slice(&me.body).unwrap();
    assert_eq!(me["name"], "an");
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    for ok in [
        stow(&[("Origin", &origin)]),
        stow(&[("Sec-Fetch-Site", "same-origin")]),
        stow(&[("X-CSRF-Token", &csrf)]),
    ] {
        assert!(
            ![401, 403].contains(&ok),
            "same-origin STOW passes the access layer ({ok})"
        );
    }
    // Logout ends the session (and is itself CSRF-checked).
    assert_eq!(
        with(&[("Origin", "http://evil.example")], "POST", "/logout").status,
        403
    );
    let out = with(&[("Origin", &origin)], "POST", "/logout");
    assert_eq!(out.status, 303);
    assert!(out
        .header("set-cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(with(&[], "GET", "/dicom-web/studies").status, 401);

    // A session idle past the configured time-out is over.
    let r = login(&[("Origin", &origin)]);
    let cookie2 = session_cookie(&r);
    let get = |c: &str| {
        request(
            port,
            "GET",
            "/dicom-web/studies",
            &[("Cookie", c), ("Host", host.as_str())],
            b"",
        )
        .status
    };
    assert_eq!(get(&cookie2), 204);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(&cookie2), 401, "idle past session_idle_seconds = 2");
    server.stop();
}

/// The admin page lists users and tokens for admins only, and its forms
/// check their CSRF token.
#[test]
fn admin_page_and_its_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "root", "admin");
    add_user(&data, "an", "radiologist");
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    let body = format!("username=root&password={PASSWORD}");
    let r = request(
        port,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
            ("Host", &host),
        ],
        body.as_bytes(),
    );
    let cookie = session_cookie(&r);
    let page = request(
        port,
        "GET",
        "/admin?lang=en",
        &[("Cookie", &cookie), ("Host", &host)],
        b"",
    );
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains(">an<") && html.contains("radiologist"),
        "{html}"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let post = |path: &str, form: String| {
        request(
            port,
            "POST",
            path,
            &[
                ("Cookie", cookie.as_str()),
                ("Host", host.as_str()),
                ("Origin", origin.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        )
    };
    assert_eq!(
        post("/admin/users/an/disable", "csrf=wrong".into()).status,
        403
    );
    let r = post("/admin/users/an/disable", format!("csrf={csrf}"));
    assert_eq!(r.status, 200);
    let qido = request(
        port,
        "GET",
        "/dicom-web/studies",
        &[("Authorization", &basic("an", PASSWORD))],
        b"",
    );
    assert_eq!(qido.status, 401, "a disabled user cannot sign in");
    let r = post(
        "/admin/tokens",
        format!("csrf={csrf}&name=emr&role=referrer&expires_days=1"),
    );
    assert!(r.text().contains("senpacs_"), "the new token is shown once");
    // Non-admins do not see the page.
    add_user_via_api(port, "binh");
    let r = request(
        port,
        "GET",
        "/admin",
        &[("Authorization", &basic("binh", PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 403);
    server.stop();
}

fn add_user_via_api(port: u16, name: &str) {
    let admin = basic("root", PASSWORD);
    let body = format!(r#"{{"name":"{name}","role":"technologist","password":"{PASSWORD}"}}"#);
    let r = request(
        port,
        "POST",
        "/api/v1/users",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Login → study list → logout, and session expiry, in Debian's Chromium
/// at 390×844 (`tests/browser/access/login.spec.mjs`). Skipped without
/// node and Chromium unless `PACS_REQUIRE_PEERS` is set.
#[test]
fn login_and_logout_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let import = pacs(&data, &["import", sample_dir().to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    add_user(&data, "bs.an", "radiologist");
    let idle = 15;
    let cfg = config(
        tmp.path(),
        &format!("[auth]\nsession_idle_seconds = {idle}\n"),
    );
    let server = Server::start(&data, &["--config", &cfg]);
    let idle = idle.to_string();
    let run = browser_spec(
        server.http_port,
        "tests/browser/access/login.spec.mjs",
        &[
            ("PACS_TEST_USER", "bs.an"),
            ("PACS_TEST_PASSWORD", PASSWORD),
            ("PACS_TEST_IDLE_SECONDS", &idle),
        ],
    );
    let (_, server_log) = server.stop();
    if let Some((passed, output)) = run {
        println!("{output}");
        assert!(passed, "browser spec failed; server log:\n{server_log}");
    }
}

/// The admin page shows what `/healthz` reports about storage: below the
/// free-space watermark (here 100 %: never met) stores are refused, and
/// the administrator sees it, in both languages.
#[test]
fn admin_page_shows_storage_below_the_watermark() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "root", "admin");
    let cfg = config(tmp.path(), "min_free_space = \"100%\"\n");
    let server = Server::start(&data, &["--config", &cfg]);
    let port = server.http_port;
    let health = request(port, "GET", "/healthz", &[], b"");
    assert!(health.text().contains("\"degraded\""), "{}", health.text());
    let admin = basic("root", PASSWORD);
    for (lang, words) in [("en", "Storage almost full"), ("vi", "Ổ lưu trữ sắp đầy")] {
        let page = request(
            port,
            "GET",
            &format!("/admin?lang={lang}"),
            &[("Authorization", &admin)],
            b"",
        );
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(
            html.contains("data-state=\"degraded\"") && html.contains(words),
            "{html}"
        );
    }
    server.stop();
}
