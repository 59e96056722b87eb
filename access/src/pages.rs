//! The sign-in and admin pages (server-rendered HTML in Vietnamese and
//! English, usable on a phone), and the JSON API for users and tokens.
//!
//! Routes: `GET/POST /login`, `POST /logout`, `GET /api/v1/session`,
//! `GET /admin` with its forms, `GET/POST /api/v1/users`,
//! `DELETE /api/v1/users/{name}`, `GET/POST /api/v1/tokens`,
//! `DELETE /api/v1/tokens/{id}`. Who may call them is decided by the
//! policy table, before these handlers run.

use std::fmt::Write as _;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Form, Json, Router};
use pacs_core::{Permission, Principal, Role};
use serde::Deserialize;
use serde_json::json;

use crate::layer::{client_address, cookie, cookie_name};
use crate::{Access, AccessError};

/// The CSRF token of the request's cookie session (put there by the
/// middleware); admin forms must send it back.
#[derive(Clone)]
pub struct CsrfToken(pub String);

pub(crate) fn router(access: Access) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/admin", get(admin_page))
        .route("/admin/users", post(admin_add_user))
        .route("/admin/users/{name}/{action}", post(admin_user_action))
        .route("/admin/tokens", post(admin_add_token))
        .route("/admin/tokens/{id}/revoke", post(admin_revoke_token))
        .route("/api/v1/users", get(api_users).post(api_add_user))
        .route("/api/v1/users/{name}", delete(api_remove_user))
        .route("/api/v1/tokens", get(api_tokens).post(api_add_token))
        .route("/api/v1/tokens/{id}", delete(api_revoke_token))
        .with_state(access.clone())
        .merge(crate::oidc_login::router(access))
}

/// Percent-encodes everything but unreserved characters (RFC 3986 2.3).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where to go after signing in: a local path only (no open redirect).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Vi,
    En,
}

pub(crate) fn lang_of(asked: Option<&str>, headers: &HeaderMap) -> Lang {
    match asked {
        Some("vi") => return Lang::Vi,
        Some("en") => return Lang::En,
        _ => {}
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = accept.split(',').next().unwrap_or("").trim();
    if first.starts_with("en") {
        Lang::En
    } else {
        Lang::Vi
    }
}

pub(crate) fn t(lang: Lang, vi: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Vi => vi,
        Lang::En => en,
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1c2430}\
main{max-width:24rem;margin:0 auto;padding:2rem 1rem}\
main.wide{max-width:60rem}\
h1{font-size:1.4rem;margin:0 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
label{display:block;margin:.75rem 0 .25rem;font-weight:500}\
input,select,button{font:inherit;box-sizing:border-box;min-height:44px;padding:.7rem;border:1px solid #b8c2cc;border-radius:.4rem}\
form.stack input,form.stack select{width:100%}\
button{background:#1f6feb;color:#fff;border:0;margin-top:1rem;cursor:pointer}\
form.stack button{width:100%}\
.inline{display:inline}.inline button{margin:0 .25rem;padding:.35rem .6rem;min-height:0}\
.error{background:#fde8e8;color:#8a1c1c;padding:.7rem;border-radius:.4rem}\
.secret{background:#fff8db;padding:.7rem;border-radius:.4rem;word-break:break-all}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.4rem;border-bottom:1px solid #dde3e8;text-align:left}\
.langs{float:right}.langs a{margin-left:.5rem}\
a.button{display:block;box-sizing:border-box;min-height:44px;padding:.7rem;margin-top:1rem;border-radius:.4rem;\
background:#0d5c3f;color:#fff;text-align:center;text-decoration:none}\
.or{text-align:center;color:#5b6773;margin:1rem 0 0}";

pub(crate) fn page(lang: Lang, title: &str, wide: bool, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sen PACS</title><link rel=\"icon\" href=\"/favicon.svg\"><style>{STYLE}</style></head>\
         <body><main{}>{body}</main></body></html>",
        t(lang, "vi", "en"),
        esc(title),
        if wide { " class=\"wide\"" } else { "" },
    )
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
    lang: Option<String>,
}

/// The sign-in page; `provider` names the identity provider when the
/// viewer may sign in through it.
fn login_html(lang: Lang, next: &str, error: Option<&str>, provider: Option<&str>) -> String {
    let title = t(lang, "Đăng nhập", "Sign in");
    let mut body = format!(
        "<nav class=\"langs\"><a href=\"/login?lang=vi&amp;next={n}\" lang=\"vi\">Tiếng Việt</a>\
         <a href=\"/login?lang=en&amp;next={n}\" lang=\"en\">English</a></nav>\
         <h1>Sen PACS · {title}</h1>",
        n = esc(&url_encode(next)),
    );
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    if let Some(name) = provider {
        let _ = write!(
            body,
            "<a class=\"button\" id=\"oidc-signin\" href=\"{start}?lang={l}&amp;next={n}\">{label} {name}</a>\
             <p class=\"or\">{or}</p>",
            start = crate::oidc_login::START_PATH,
            l = t(lang, "vi", "en"),
            n = esc(&url_encode(next)),
            label = t(lang, "Đăng nhập bằng", "Sign in with"),
            name = esc(name),
            or = t(lang, "hoặc bằng tài khoản của hệ thống", "or with an account of this archive"),
        );
    }
    let _ = write!(
        body,
        "<form class=\"stack\" method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <input type=\"hidden\" name=\"lang\" value=\"{l}\">\
         <label for=\"username\">{user}</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required>\
         <label for=\"password\">{pass}</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">{title}</button></form>",
        next = esc(next),
        l = t(lang, "vi", "en"),
        user = t(lang, "Tên đăng nhập", "User name"),
        pass = t(lang, "Mật khẩu", "Password"),
    );
    page(lang, title, false, &body)
}

/// The identity provider's name on the sign-in button, when configured.
fn provider_name(access: &Access) -> Option<String> {
    access
        .oidc_login()
        .and_then(|o| o.config().client.as_ref().map(|c| c.display_name.clone()))
}

async fn login_page(
    State(access): State<Access>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(q.lang.as_deref(), &headers);
    let provider = provider_name(&access);
    Html(login_html(
        lang,
        &safe_next(q.next.as_deref()),
        None,
        provider.as_deref(),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
    lang: Option<String>,
}

pub(crate) fn set_cookie(res: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub(crate) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

async fn login(State(access): State<Access>, req: Request) -> Response {
    let address = client_address(&req);
    let headers = req.headers().clone();
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &()).await else {
        return (StatusCode::BAD_REQUEST, "expected a login form\n").into_response();
    };
    let lang = lang_of(form.lang.as_deref(), &headers);
    let next = safe_next(form.next.as_deref());
    let name = form.username.trim();
    match access
        .check_password(name, &form.password, address, false)
        .await
    {
        Ok(p) => {
            let started = access.inner.sessions.start(&p.name).await;
            if matches!(started, Ok(Some(_))) {
                access.audit_login(&p.name, address, true, None).await;
            }
            session_started(&access, started, &next)
        }
        Err(refusal) => {
            let (status, msg) = match refusal.retry_after {
                Some(_) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    t(
                        lang,
                        "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau.",
                        "Too many failed sign-ins. Please try again later.",
                    ),
                ),
                None => (
                    StatusCode::UNAUTHORIZED,
                    t(
                        lang,
                        "Sai tên đăng nhập hoặc mật khẩu.",
                        "Wrong user name or password.",
                    ),
                ),
            };
            let provider = provider_name(&access);
            let mut res = (
                status,
                Html(login_html(lang, &next, Some(msg), provider.as_deref())),
            )
                .into_response();
            if let Some(wait) = refusal.retry_after {
                if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            res
        }
    }
}

/// The answer to a sign-in: the new session's cookie and a redirect to
/// `next`; 503 when the session table is full.
pub(crate) fn session_started(
    access: &Access,
    started: Result<Option<String>, AccessError>,
    next: &str,
) -> Response {
    let id = match started {
        Ok(Some(id)) => id,
        Ok(None) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open sessions; try again later\n",
            )
                .into_response()
        }
        Err(e) => return error_response(&e),
    };
    let mut res = see_other(next);
    let https = access.inner.config.https;
    set_cookie(
        &mut res,
        &format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Lax{}",
            cookie_name(https),
            if https { "; Secure" } else { "" }
        ),
    );
    res
}

async fn logout(State(access): State<Access>, req: Request) -> Response {
    let https = access.inner.config.https;
    if let Some(id) = cookie(req.headers(), cookie_name(https)) {
        if let Ok(Some(s)) = access.inner.sessions.end(id).await {
            access.audit_logout(&s.user, client_address(&req)).await;
        }
    }
    let mut res = see_other("/login");
    let secure = if https { "; Secure" } else { "" };
    set_cookie(
        &mut res,
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
            cookie_name(https)
        ),
    );
    res
}

async fn session(
    principal: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
) -> Response {
    match principal {
        Some(Extension(p)) => Json(json!({
            "name": p.name,
            "role": p.role.map(|r| r.as_str()),
            "session": csrf.is_some(),
            "csrf": csrf.map(|Extension(c)| c.0),
            // The viewer saves measurements through STOW-RS only when it may.
            "may_store": p.may(Permission::Store),
        }))
        .into_response(),
        None => (StatusCode::UNAUTHORIZED, "not signed in\n").into_response(),
    }
}

fn error_response(e: &AccessError) -> Response {
    let status = match e {
        AccessError::Exists(_) => StatusCode::CONFLICT,
        AccessError::NotFound(_) => StatusCode::NOT_FOUND,
        AccessError::BadName(_) | AccessError::WeakPassword(_) | AccessError::BadRequest(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(error = %e, "user administration failed");
    }
    (status, format!("{e}\n")).into_response()
}

fn no_store() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this server has no credential store\n",
    )
        .into_response()
}

fn parse_role(s: &str) -> Result<Role, AccessError> {
    Role::parse(s).ok_or_else(|| {
        AccessError::BadRequest(format!(
            "unknown role {:?}; roles: admin, radiologist, technologist, referrer, auditor, partner",
            s.chars().take(40).collect::<String>()
        ))
    })
}

/// The administrator acting (the middleware put them there).
fn actor(p: Option<Extension<Principal>>, address: Option<std::net::IpAddr>) -> Principal {
    p.map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(address))
}

/// What the admin actions do, shared by the JSON API and the forms.
enum AdminAction {
    AddUser {
        name: String,
        role: String,
        password: String,
    },
    SetDisabled(String, bool),
    RemoveUser(String),
    AddToken {
        name: String,
        role: String,
        expires_days: Option<u32>,
    },
    RevokeToken(String),
}

enum AdminDone {
    Done,
    Token(pacs_core::credentials::TokenRecord, String),
}

async fn admin_do(
    access: &Access,
    by: &Principal,
    action: AdminAction,
) -> Result<AdminDone, AccessError> {
    let accounts = access
        .accounts()
        .ok_or_else(|| AccessError::Setup("no credential store".into()))?;
    let (what, done) = match action {
        AdminAction::AddUser {
            name,
            role,
            password,
        } => {
            let role = parse_role(&role)?;
            accounts.add_user(&name, role, &password).await?;
            (format!("user {name} added as {role}"), AdminDone::Done)
        }
        AdminAction::SetDisabled(name, disabled) => {
            accounts.set_disabled(&name, disabled).await?;
            if disabled {
                access.inner.sessions.end_user(&name).await?;
            }
            let verb = if disabled { "disabled" } else { "enabled" };
            (format!("user {name} {verb}"), AdminDone::Done)
        }
        AdminAction::RemoveUser(name) => {
            accounts.remove_user(&name).await?;
            access.inner.sessions.end_user(&name).await?;
            (format!("user {name} removed"), AdminDone::Done)
        }
        AdminAction::AddToken {
            name,
            role,
            expires_days,
        } => {
            let role = parse_role(&role)?;
            let (record, secret) = accounts.create_token(&name, role, expires_days).await?;
            (
                format!("token {} ({name}) created as {role}", record.id),
                AdminDone::Token(record, secret),
            )
        }
        AdminAction::RevokeToken(id) => {
            accounts.revoke_token(&id).await?;
            (format!("token {id} revoked"), AdminDone::Done)
        }
    };
    access.audit_admin(by, what).await;
    access.refresh_enabled().await?;
    Ok(done)
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: String,
    expires_days: Option<u32>,
}

/// A JSON array of `items`, or the error.
fn json_list<T>(
    items: Result<Vec<T>, AccessError>,
    row: impl Fn(&T) -> serde_json::Value,
) -> Response {
    match items {
        Ok(items) => Json(items.iter().map(row).collect::<Vec<_>>()).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn api_users(State(access): State<Access>) -> Response {
    let Some(accounts) = access.accounts() else {
        return no_store();
    };
    json_list(accounts.users().await, |u| {
        json!({"name": u.name, "role": u.role.as_str(), "disabled": u.disabled,
               "created": u.created, "updated": u.updated})
    })
}

async fn api_add_user(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Json(u): Json<NewUser>,
) -> Response {
    let by = actor(p, None);
    let action = AdminAction::AddUser {
        name: u.name.clone(),
        role: u.role,
        password: u.password,
    };
    match admin_do(&access, &by, action).await {
        Ok(_) => (StatusCode::CREATED, Json(json!({"name": u.name}))).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn api_remove_user(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Path(name): Path<String>,
) -> Response {
    no_content(admin_do(&access, &actor(p, None), AdminAction::RemoveUser(name)).await)
}

fn no_content(done: Result<AdminDone, AccessError>) -> Response {
    match done {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn api_tokens(State(access): State<Access>) -> Response {
    let Some(accounts) = access.accounts() else {
        return no_store();
    };
    json_list(accounts.tokens().await, |t| {
        json!({"id": t.id, "name": t.name, "role": t.role.as_str(), "created": t.created,
               "expires": t.expires, "revoked": t.revoked})
    })
}

async fn api_add_token(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Json(n): Json<NewToken>,
) -> Response {
    let action = AdminAction::AddToken {
        name: n.name,
        role: n.role,
        expires_days: n.expires_days,
    };
    match admin_do(&access, &actor(p, None), action).await {
        Ok(AdminDone::Token(t, secret)) => (
            StatusCode::CREATED,
            Json(json!({"id": t.id, "name": t.name, "role": t.role.as_str(),
                        "expires": t.expires, "token": secret})),
        )
            .into_response(),
        Ok(AdminDone::Done) => StatusCode::CREATED.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn api_revoke_token(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    no_content(admin_do(&access, &actor(p, None), AdminAction::RevokeToken(id)).await)
}

fn fmt_time(secs: Option<u64>) -> String {
    match secs {
        None => "–".to_owned(),
        Some(s) => {
            // Civil date from days since the epoch (proleptic Gregorian).
            let days = (s / 86_400) as i64;
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

#[derive(Deserialize, Default)]
struct AdminQuery {
    lang: Option<String>,
}

/// The storage state `/healthz` reports, for the administrator: below the
/// free-space watermark (stores refused) or unreachable, as an alert;
/// otherwise one line.
async fn storage_state(access: &Access, lang: Lang) -> String {
    let archive = &access.inner.archive;
    match (archive.health().await, archive.space_low()) {
        (Err(e), _) => {
            tracing::warn!(error = %e, "admin page: storage health check failed");
            format!(
                "<p class=\"error\" role=\"alert\" id=\"storage-state\" data-state=\"unavailable\">{}</p>",
                t(
                    lang,
                    "Lưu trữ không truy cập được: máy chủ đang suy giảm (xem /healthz).",
                    "Storage unreachable: the server is degraded (see /healthz)."
                )
            )
        }
        (Ok(_), Some(low)) => format!(
            "<p class=\"error\" role=\"alert\" id=\"storage-state\" data-state=\"degraded\">{} ({} / {} MiB)</p>",
            t(
                lang,
                "Ổ lưu trữ sắp đầy: ảnh gửi đến đang bị từ chối cho đến khi giải phóng được dung lượng. Còn trống / mức tối thiểu",
                "Storage almost full: incoming images are refused until space is freed. Free / required"
            ),
            low.available >> 20,
            low.required >> 20
        ),
        (Ok(stats), None) => format!(
            "<p id=\"storage-state\" data-state=\"ok\">{} ({} {}, {} {})</p>",
            t(lang, "Lưu trữ: bình thường", "Storage: ok"),
            stats.studies,
            t(lang, "ca chụp", "studies"),
            stats.instances,
            t(lang, "ảnh", "instances")
        ),
    }
}

async fn admin_render(
    access: &Access,
    lang: Lang,
    csrf: &str,
    notice: Option<(bool, String)>,
) -> Response {
    let Some(accounts) = access.accounts() else {
        return no_store();
    };
    let (users, tokens) = match (accounts.users().await, accounts.tokens().await) {
        (Ok(u), Ok(t)) => (u, t),
        (Err(e), _) | (_, Err(e)) => return error_response(&e),
    };
    let csrf_field = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    );
    let roles: String = Role::ALL
        .iter()
        .map(|r| format!("<option>{}</option>", r.as_str()))
        .collect();
    let mut b = format!(
        "<nav class=\"langs\"><a href=\"/admin?lang=vi\">Tiếng Việt</a><a href=\"/admin?lang=en\">English</a>\
         <a href=\"/\">{}</a><a href=\"/audit\">{}</a></nav><h1>{}</h1>",
        t(lang, "Danh sách ca chụp", "Studies"),
        t(lang, "Nhật ký truy cập", "Audit trail"),
        t(lang, "Quản trị người dùng", "Users and tokens")
    );
    b.push_str(&storage_state(access, lang).await);
    if let Some((ok, text)) = notice {
        let class = if ok { "secret" } else { "error" };
        let _ = write!(b, "<p class=\"{class}\" role=\"status\">{}</p>", esc(&text));
    }
    let _ = write!(
        b,
        "<h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>{}</th><th></th></tr>",
        t(lang, "Người dùng", "Users"),
        t(lang, "Tên", "Name"),
        t(lang, "Vai trò", "Role"),
        t(lang, "Trạng thái", "State"),
    );
    for u in &users {
        let n = esc(&url_encode(&u.name));
        let (state, toggle, toggle_label) = if u.disabled {
            (
                t(lang, "đã khóa", "disabled"),
                "enable",
                t(lang, "Mở khóa", "Enable"),
            )
        } else {
            (
                t(lang, "hoạt động", "active"),
                "disable",
                t(lang, "Khóa", "Disable"),
            )
        };
        let _ = write!(
            b,
            "<tr><td>{name}</td><td>{role}</td><td>{state}</td><td>\
             <form class=\"inline\" method=\"post\" action=\"/admin/users/{n}/{toggle}\">{csrf_field}<button>{toggle_label}</button></form>\
             <form class=\"inline\" method=\"post\" action=\"/admin/users/{n}/remove\">{csrf_field}<button>{remove}</button></form>\
             </td></tr>",
            name = esc(&u.name),
            role = u.role.as_str(),
            remove = t(lang, "Xóa", "Remove"),
        );
    }
    let _ = write!(
        b,
        "</table><form class=\"stack\" method=\"post\" action=\"/admin/users\">{csrf_field}\
         <label for=\"nu\">{name}</label><input id=\"nu\" name=\"name\" required>\
         <label for=\"nr\">{role}</label><select id=\"nr\" name=\"role\">{roles}</select>\
         <label for=\"np\">{pass}</label><input id=\"np\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <button>{add}</button></form>",
        name = t(lang, "Tên đăng nhập", "User name"),
        role = t(lang, "Vai trò", "Role"),
        pass = t(lang, "Mật khẩu", "Password"),
        add = t(lang, "Thêm người dùng", "Add user"),
    );
    let _ = write!(
        b,
        "<h2>{}</h2><table><tr><th>ID</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>",
        t(lang, "Mã truy cập cho máy", "Machine tokens"),
        t(lang, "Tên", "Name"),
        t(lang, "Vai trò", "Role"),
        t(lang, "Hết hạn", "Expires"),
        t(lang, "Thu hồi", "Revoked"),
    );
    for tk in &tokens {
        let revoke = if tk.revoked.is_none() {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/tokens/{}/revoke\">{csrf_field}<button>{}</button></form>",
                esc(&url_encode(&tk.id)),
                t(lang, "Thu hồi", "Revoke")
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>",
            esc(&tk.id),
            esc(&tk.name),
            tk.role.as_str(),
            fmt_time(tk.expires),
            fmt_time(tk.revoked),
        );
    }
    let _ = write!(
        b,
        "</table><form class=\"stack\" method=\"post\" action=\"/admin/tokens\">{csrf_field}\
         <label for=\"tn\">{name}</label><input id=\"tn\" name=\"name\" required>\
         <label for=\"tr\">{role}</label><select id=\"tr\" name=\"role\">{roles}</select>\
         <label for=\"te\">{days}</label><input id=\"te\" name=\"expires_days\" type=\"number\" min=\"1\" max=\"3650\">\
         <button>{add}</button></form>\
         <form method=\"post\" action=\"/logout\"><button>{out}</button></form>",
        name = t(lang, "Tên (ví dụ emr)", "Name (e.g. emr)"),
        role = t(lang, "Vai trò", "Role"),
        days = t(lang, "Hết hạn sau (ngày)", "Expires after (days)"),
        add = t(lang, "Tạo mã truy cập", "Create token"),
        out = t(lang, "Đăng xuất", "Sign out"),
    );
    let title = t(lang, "Quản trị", "Administration");
    Html(page(lang, title, true, &b)).into_response()
}

async fn admin_page(
    State(access): State<Access>,
    Query(q): Query<AdminQuery>,
    headers: HeaderMap,
    csrf: Option<Extension<CsrfToken>>,
) -> Response {
    let lang = lang_of(q.lang.as_deref(), &headers);
    let csrf = csrf.map(|Extension(c)| c.0).unwrap_or_default();
    admin_render(&access, lang, &csrf, None).await
}

#[derive(Deserialize)]
struct AdminForm {
    csrf: Option<String>,
    name: Option<String>,
    role: Option<String>,
    password: Option<String>,
    expires_days: Option<String>,
}

/// Runs an admin form: its CSRF field must match the session's (when the
/// request came with a cookie session), then the page is shown again.
async fn admin_form(
    access: &Access,
    headers: &HeaderMap,
    p: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
    form: &AdminForm,
    action: Result<AdminAction, AccessError>,
) -> Response {
    let lang = lang_of(None, headers);
    let session_csrf = csrf.map(|Extension(c)| c.0);
    if let Some(expected) = &session_csrf {
        if form.csrf.as_deref() != Some(expected.as_str()) {
            return (StatusCode::FORBIDDEN, "the form's CSRF token is wrong\n").into_response();
        }
    }
    let by = actor(p, None);
    let result = match action {
        Ok(a) => admin_do(access, &by, a).await,
        Err(e) => Err(e),
    };
    let notice = match result {
        Ok(AdminDone::Token(t, secret)) => (
            true,
            format!(
                "{} {}: {secret}",
                t.name,
                match lang {
                    Lang::Vi => "— mã chỉ hiện một lần, hãy lưu lại",
                    Lang::En => "— shown once, keep it now",
                }
            ),
        ),
        Ok(AdminDone::Done) => (true, t(lang, "Đã lưu.", "Saved.").to_owned()),
        Err(e) => (false, e.to_string()),
    };
    admin_render(
        access,
        lang,
        session_csrf.as_deref().unwrap_or(""),
        Some(notice),
    )
    .await
}

async fn admin_add_user(
    State(access): State<Access>,
    headers: HeaderMap,
    p: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
    Form(form): Form<AdminForm>,
) -> Response {
    let action = Ok(AdminAction::AddUser {
        name: form.name.clone().unwrap_or_default(),
        role: form.role.clone().unwrap_or_default(),
        password: form.password.clone().unwrap_or_default(),
    });
    admin_form(&access, &headers, p, csrf, &form, action).await
}

async fn admin_user_action(
    State(access): State<Access>,
    headers: HeaderMap,
    p: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
    Path((name, verb)): Path<(String, String)>,
    Form(form): Form<AdminForm>,
) -> Response {
    let action = match verb.as_str() {
        "disable" => Ok(AdminAction::SetDisabled(name, true)),
        "enable" => Ok(AdminAction::SetDisabled(name, false)),
        "remove" => Ok(AdminAction::RemoveUser(name)),
        _ => Err(AccessError::BadRequest("unknown action".into())),
    };
    admin_form(&access, &headers, p, csrf, &form, action).await
}

async fn admin_add_token(
    State(access): State<Access>,
    headers: HeaderMap,
    p: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
    Form(form): Form<AdminForm>,
) -> Response {
    let days = match form.expires_days.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) => d
            .parse::<u32>()
            .map(Some)
            .map_err(|_| AccessError::BadRequest("expires must be a number of days".into())),
    };
    let action = days.map(|expires_days| AdminAction::AddToken {
        name: form.name.clone().unwrap_or_default(),
        role: form.role.clone().unwrap_or_default(),
        expires_days,
    });
    admin_form(&access, &headers, p, csrf, &form, action).await
}

async fn admin_revoke_token(
    State(access): State<Access>,
    headers: HeaderMap,
    p: Option<Extension<Principal>>,
    csrf: Option<Extension<CsrfToken>>,
    Path(id): Path<String>,
    Form(form): Form<AdminForm>,
) -> Response {
    let action = Ok(AdminAction::RevokeToken(id));
    admin_form(&access, &headers, p, csrf, &form, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/viewer?x=1")), "/viewer?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn dates() {
        assert_eq!(fmt_time(Some(0)), "1970-01-01");
        assert_eq!(fmt_time(Some(1_767_225_600)), "2026-01-01");
    }
}
