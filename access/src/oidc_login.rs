//! The viewer's sign-in through the identity provider: OAuth 2.0
//! authorization code (RFC 6749 §4.1) with PKCE S256 (RFC 7636), run by the
//! server (a "backend for frontend"). Tokens never reach the browser: the
//! server exchanges the code, checks the ID token (OpenID Connect Core
//! §3.1.3.7, with [`crate::Oidc`]) and starts our ordinary session cookie,
//! so CSRF, time-outs and logout are those of a local sign-in.
//!
//! - `GET /login/oidc?next=…` makes a `state`, a `nonce` and a PKCE code
//!   verifier, keeps them server-side for [`FLOW_TTL`] bound to a random
//!   value in a short-lived HttpOnly cookie, and redirects to the
//!   provider's authorization endpoint.
//! - `GET /login/oidc/callback?code=…&state=…` takes the pending sign-in
//!   of `state` (once: a replayed or forged state finds nothing), checks
//!   that the browser holds its cookie (a sign-in begun elsewhere is
//!   refused), exchanges the code with the verifier, checks the ID token
//!   and its nonce, maps the role (from the ID token, else from the access
//!   token) and starts the session. Errors of the provider
//!   (`error=access_denied`, ...) are shown as a page.
//!
//! Login, failures and (through `/logout`) logout are audited as User
//! Authentication events. Non-goals: the provider's own session is not
//! ended at logout (no RP-initiated logout), and tokens are not refreshed:
//! the session's idle and absolute time-outs bound it.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::Method;
use pacs_core::sessions::FlowKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layer::{client_address, cookie};
use crate::pages::{
    esc, lang_of, page, safe_next, see_other, session_started, set_cookie, t, url_encode, Lang,
};
use crate::{secrets, Access, AccessError};

/// Where the sign-in starts.
pub const START_PATH: &str = "/login/oidc";
/// The redirect URI's path, registered at the provider.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";
/// How long a begun sign-in may take at the provider.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// The cookie binding a sign-in to the browser that began it.
fn flow_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-senpacs_oidc"
    } else {
        "senpacs_oidc"
    }
}

/// A begun sign-in, kept in the session store under the SHA-256 of its
/// `state` ([`FlowKind::PendingSignIn`]), so that the provider's callback
/// may land on any node sharing the store. The nonce and the verifier are
/// secrets: they live only in that record (and in memory while a request
/// uses them), never in a log.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// SHA-256 of the flow cookie's value, hex.
    binding: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    next: String,
    /// `vi` or `en`.
    lang: String,
}

/// Version byte of a pending sign-in's record (then its JSON).
const PENDING_RECORD: u8 = 1;

impl Pending {
    fn encode(&self) -> Option<Vec<u8>> {
        let mut out = vec![PENDING_RECORD];
        serde_json::to_writer(&mut out, self).ok()?;
        Some(out)
    }

    fn decode(raw: &[u8]) -> Option<Pending> {
        match raw.split_first() {
            Some((&PENDING_RECORD, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }

    fn lang(&self) -> Lang {
        if self.lang == "vi" {
            Lang::Vi
        } else {
            Lang::En
        }
    }
}

/// Keeps a begun sign-in (at most as many as sessions, each for
/// [`FLOW_TTL`]); `false` when too many are open or the store cannot
/// answer.
async fn keep(access: &Access, state: &str, pending: &Pending) -> bool {
    let Some(record) = pending.encode() else {
        return false;
    };
    let max = access.inner.config.sessions.max_sessions;
    match access
        .inner
        .sessions
        .store()
        .put_flow(
            FlowKind::PendingSignIn,
            secrets::sha256(state.as_bytes()),
            &record,
            FLOW_TTL,
            max,
        )
        .await
    {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable: sign-in not begun");
            false
        }
    }
}

/// Takes the sign-in of `state` (single use, on every node), if it has not
/// expired.
async fn take(access: &Access, state: &str) -> Option<Pending> {
    let key = secrets::sha256(state.as_bytes());
    match access
        .inner
        .sessions
        .store()
        .take_flow(FlowKind::PendingSignIn, &key)
        .await
    {
        Ok(raw) => Pending::decode(&raw?),
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable: sign-in refused");
            None
        }
    }
}

pub(crate) fn router(access: Access) -> Router {
    Router::new()
        .route(START_PATH, get(start))
        .route(CALLBACK_PATH, get(callback))
        .with_state(access)
}

/// PKCE S256 (RFC 7636 §4.2): BASE64URL(SHA256(ASCII(verifier))).
fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secrets::sha256(verifier.as_bytes()))
}

/// `name=value&…`, percent-encoded (application/x-www-form-urlencoded).
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A page saying why the sign-in did not happen, with a way back.
fn failure_page(lang: Lang, status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    let title = t(lang, "Đăng nhập", "Sign in");
    let mut body = format!(
        "<h1>Sen PACS · {title}</h1><p class=\"error\" role=\"alert\" id=\"oidc-error\">{}</p>",
        esc(message)
    );
    if let Some(d) = detail {
        let d: String = d.chars().filter(|c| !c.is_control()).take(300).collect();
        let _ = write!(body, "<p><code>{}</code></p>", esc(&d));
    }
    let _ = write!(
        body,
        "<p><a href=\"/login?lang={l}\">{back}</a></p>",
        l = t(lang, "vi", "en"),
        back = t(lang, "Quay lại trang đăng nhập", "Back to the sign-in page"),
    );
    (status, Html(page(lang, title, false, &body))).into_response()
}

#[derive(Deserialize, Default)]
struct StartQuery {
    next: Option<String>,
    lang: Option<String>,
}

/// The redirect URI: configured, or this server's callback on the
/// request's Host (already checked against `allowed_hosts`).
fn redirect_uri(access: &Access, configured: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(r) = configured {
        return Some(r.to_owned());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    if host.is_empty() || host.chars().any(|c| c.is_control() || c == '/' || c == ' ') {
        return None;
    }
    let scheme = if access.inner.config.https {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}{CALLBACK_PATH}"))
}

async fn start(
    State(access): State<Access>,
    Query(q): Query<StartQuery>,
    req: Request,
) -> Response {
    let headers = req.headers();
    let lang = lang_of(q.lang.as_deref(), headers);
    let Some(oidc) = access.oidc_login() else {
        return failure_page(
            lang,
            StatusCode::NOT_FOUND,
            t(
                lang,
                "Máy chủ này không cấu hình đăng nhập qua nhà cung cấp định danh.",
                "This server has no identity provider sign-in configured.",
            ),
            None,
        );
    };
    let Some(client) = oidc.config().client.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let unreachable = |detail: &str| {
        tracing::warn!(error = detail, "OpenID Connect sign-in could not start");
        failure_page(
            lang,
            StatusCode::BAD_GATEWAY,
            t(
                lang,
                "Không liên lạc được với nhà cung cấp định danh. Vui lòng thử lại sau.",
                "The identity provider cannot be reached. Please try again later.",
            ),
            None,
        )
    };
    let endpoints = match oidc.endpoints().await {
        Ok(e) => e,
        Err(e) => return unreachable(&e),
    };
    let Some(authorize) = endpoints.authorization_endpoint else {
        return unreachable("the discovery document has no authorization_endpoint");
    };
    let Some(redirect) = redirect_uri(&access, client.redirect_url.as_deref(), headers) else {
        return (StatusCode::BAD_REQUEST, "no usable Host header\n").into_response();
    };
    let secrets = (|| -> Result<_, AccessError> {
        Ok((
            secrets::random_secret()?,
            secrets::random_secret()?,
            secrets::random_secret()?,
            secrets::random_secret()?,
        ))
    })();
    let Ok((state, nonce, verifier, binding)) = secrets else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(client.scopes.iter().filter(|s| *s != "openid").cloned());
    let query = form(&[
        ("response_type", "code"),
        ("client_id", &client.client_id),
        ("redirect_uri", &redirect),
        ("scope", &scopes.join(" ")),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &code_challenge(&verifier)),
        ("code_challenge_method", "S256"),
    ]);
    let pending = Pending {
        binding: hex::encode(secrets::sha256(binding.as_bytes())),
        nonce,
        verifier,
        redirect_uri: redirect,
        next: safe_next(q.next.as_deref()),
        lang: t(lang, "vi", "en").to_owned(),
    };
    if !keep(&access, &state, &pending).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins in progress; try again later\n",
        )
            .into_response();
    }
    let sep = if authorize.contains('?') { '&' } else { '?' };
    let mut res = see_other(&format!("{authorize}{sep}{query}"));
    let https = access.inner.config.https;
    set_cookie(
        &mut res,
        &format!(
            "{}={binding}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            flow_cookie_name(https),
            FLOW_TTL.as_secs(),
            if https { "; Secure" } else { "" }
        ),
    );
    res
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer of the answer, against mix-up attacks.
    iss: Option<String>,
}

async fn callback(
    State(access): State<Access>,
    Query(q): Query<CallbackQuery>,
    req: Request,
) -> Response {
    let address = client_address(&req);
    let headers = req.headers();
    let https = access.inner.config.https;
    let mut res = finish(&access, q, headers, address).await;
    // The flow cookie has done its work, whatever the outcome.
    set_cookie(
        &mut res,
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            flow_cookie_name(https),
            if https { "; Secure" } else { "" }
        ),
    );
    res
}

async fn finish(
    access: &Access,
    q: CallbackQuery,
    headers: &HeaderMap,
    address: Option<std::net::IpAddr>,
) -> Response {
    let https = access.inner.config.https;
    let guess = lang_of(None, headers);
    let Some(oidc) = access.oidc_login() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(client) = oidc.config().client.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refuse = |lang: Lang, status: StatusCode, why: String| async move {
        access
            .audit_login(
                "oidc",
                address,
                false,
                Some(&format!("OpenID Connect: {why}")),
            )
            .await;
        let message = match status {
            StatusCode::BAD_GATEWAY => t(
                lang,
                "Không hoàn tất được đăng nhập với nhà cung cấp định danh. Vui lòng thử lại.",
                "The sign-in could not be completed with the identity provider. Please try again.",
            ),
            _ => t(
                lang,
                "Lượt đăng nhập này không hợp lệ, đã hết hạn hoặc đã được dùng. Vui lòng đăng nhập lại.",
                "This sign-in is not valid, has expired or was already used. Please sign in again.",
            ),
        };
        failure_page(lang, status, message, None)
    };
    let Some(state) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return refuse(guess, StatusCode::BAD_REQUEST, "no state".into()).await;
    };
    let Some(pending) = take(access, state).await else {
        return refuse(
            guess,
            StatusCode::BAD_REQUEST,
            "unknown, expired or replayed state".into(),
        )
        .await;
    };
    let lang = pending.lang();
    let bound = cookie(headers, flow_cookie_name(https))
        .is_some_and(|v| hex::encode(secrets::sha256(v.as_bytes())) == pending.binding);
    if !bound {
        return refuse(
            lang,
            StatusCode::BAD_REQUEST,
            "the sign-in was begun in another browser (no matching cookie)".into(),
        )
        .await;
    }
    // RFC 9207 §2.4: an answer naming another issuer is not ours.
    if q.iss
        .as_deref()
        .is_some_and(|iss| iss != oidc.config().issuer)
    {
        return refuse(
            lang,
            StatusCode::BAD_REQUEST,
            "the answer names another issuer (RFC 9207)".into(),
        )
        .await;
    }
    // RFC 6749 §4.1.2.1: the provider's error answer.
    if let Some(error) = q.error.as_deref() {
        let detail = match q.error_description.as_deref() {
            Some(d) => format!("{error}: {d}"),
            None => error.to_owned(),
        };
        let lang_msg = t(
            lang,
            "Nhà cung cấp định danh đã từ chối đăng nhập.",
            "The identity provider refused the sign-in.",
        );
        access
            .audit_login(
                "oidc",
                address,
                false,
                Some(&format!(
                    "OpenID Connect: the provider answered {}",
                    error.chars().take(100).collect::<String>()
                )),
            )
            .await;
        return failure_page(lang, StatusCode::UNAUTHORIZED, lang_msg, Some(&detail));
    }
    let Some(code) = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return refuse(lang, StatusCode::BAD_REQUEST, "no code".into()).await;
    };
    let tokens = match exchange_code(access, &client, code, &pending).await {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(error = %why, "OpenID Connect code exchange failed");
            return refuse(lang, StatusCode::BAD_GATEWAY, why).await;
        }
    };
    let Some(id_token) = tokens.get("id_token").and_then(Value::as_str) else {
        return refuse(
            lang,
            StatusCode::BAD_GATEWAY,
            "the token answer has no id_token".into(),
        )
        .await;
    };
    let claims = match oidc
        .verify_id_token(id_token, &client.client_id, &pending.nonce)
        .await
    {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(error = %why, "OpenID Connect ID token refused");
            return refuse(lang, StatusCode::BAD_GATEWAY, why).await;
        }
    };
    let mut role = oidc.role_of(&claims);
    if role.is_none() {
        if let Some(at) = tokens.get("access_token").and_then(Value::as_str) {
            role = oidc.access_token_role(at).await;
        }
    }
    let principal = match oidc.principal_of(&claims, role, address) {
        Ok(p) => p,
        Err(why) => return refuse(lang, StatusCode::BAD_GATEWAY, why).await,
    };
    let Some(role) = principal.role else {
        access
            .audit_login(
                &principal.name,
                address,
                false,
                Some("OpenID Connect: no role of this archive in the provider's claims"),
            )
            .await;
        return failure_page(
            lang,
            StatusCode::FORBIDDEN,
            t(
                lang,
                "Tài khoản của bạn chưa được cấp quyền truy cập hệ thống này. Hãy liên hệ quản trị viên.",
                "Your account has no role in this archive. Please contact the administrator.",
            ),
            None,
        );
    };
    let started = access
        .inner
        .sessions
        .start_federated(&principal.name, role)
        .await;
    if matches!(started, Ok(Some(_))) {
        access
            .audit_login(
                &principal.name,
                address,
                true,
                Some(&format!("OpenID Connect sign-in as {role}")),
            )
            .await;
    }
    session_started(access, started, &pending.next)
}

/// The token request (RFC 6749 §4.1.3, RFC 7636 §4.5); returns the JSON
/// answer.
async fn exchange_code(
    access: &Access,
    client: &crate::oidc::OidcClient,
    code: &str,
    pending: &Pending,
) -> Result<Value, String> {
    let oidc = access.oidc_login().ok_or("no identity provider")?;
    let endpoint = oidc
        .endpoints()
        .await?
        .token_endpoint
        .ok_or("the discovery document has no token_endpoint")?;
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", pending.redirect_uri.as_str()),
        ("code_verifier", pending.verifier.as_str()),
    ];
    let mut headers = vec![
        (CONTENT_TYPE, "application/x-www-form-urlencoded".to_owned()),
        (ACCEPT, "application/json".to_owned()),
    ];
    match &client.client_secret {
        // client_secret_basic: each part form-encoded, then Basic (RFC
        // 6749 §2.3.1).
        Some(secret) => headers.push((
            AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    url_encode(&client.client_id),
                    url_encode(secret)
                ))
            ),
        )),
        // A public client names itself (RFC 6749 §4.1.3).
        None => pairs.push(("client_id", client.client_id.as_str())),
    }
    let answer = oidc
        .http()
        .request(
            Method::POST,
            &endpoint,
            &headers,
            Some(form(&pairs).into_bytes()),
        )
        .await?;
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if !answer.status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!(
            "the token endpoint answered HTTP {} {}",
            answer.status,
            error.chars().take(100).collect::<String>()
        ));
    }
    if !body.is_object() {
        return Err("the token answer is not a JSON object".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pending_sign_ins_are_versioned() {
        let p = Pending {
            binding: "ab".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            redirect_uri: "https://pacs/cb".into(),
            next: "/".into(),
            lang: "vi".into(),
        };
        let raw = p.encode().unwrap_or_default();
        let back = Pending::decode(&raw);
        assert!(back.is_some_and(|b| b.verifier == "v" && b.lang() == Lang::Vi));
        let mut other = raw.clone();
        other[0] = 2;
        assert!(Pending::decode(&other).is_none(), "unknown version");
    }
}
