//! The middleware in front of every route (see the crate documentation),
//! and the guard behind the router that refuses routes the policy does
//! not list.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use pacs_core::access::{PrincipalKind, StudyScope};
use pacs_core::audit::{
    event_type, AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::credentials::GrantRecord;
use pacs_core::{Principal, Role, Uid};

use crate::policy::{self, AuditAs, Need, Route};
use crate::sessions::Session;
use crate::throttle::Lock;
use crate::{secrets, Access, AccessError, Presented, Refusal, Resolution, TokenCheck};

/// The realm named in `WWW-Authenticate` (RFC 7617, RFC 6750).
pub const REALM: &str = "Sen PACS";

/// The session cookie's name (with the `__Host-` prefix under HTTPS, which
/// browsers honour only for Secure, host-only, `Path=/` cookies).
pub(crate) fn cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-senpacs_session"
    } else {
        "senpacs_session"
    }
}

/// The Content-Security-Policy of every answer. The viewer needs
/// WebAssembly (codecs) and workers from blobs; styles may be inline.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    worker-src 'self' blob:; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
    font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'none'";

/// Wraps the server's router: adds the sign-in and admin routes, checks
/// that the policy lists every route, and puts the access middleware in
/// front and the policy guard behind.
pub fn protect(app: Router, access: Access) -> Result<Router, AccessError> {
    let app = app
        .merge(crate::pages::router(access.clone()))
        .merge(crate::shares::router(access.clone()))
        .merge(crate::grants::router(access.clone()));
    let paths = router_paths(&app);
    if paths.is_empty() {
        tracing::warn!("cannot list the router's routes; relying on the per-request guard");
    }
    let missing = policy::unlisted(paths.iter().map(String::as_str));
    if !missing.is_empty() {
        return Err(AccessError::Setup(format!(
            "routes without an access policy: {}; add them to ROUTES in access/src/policy.rs",
            missing.join(", ")
        )));
    }
    Ok(app
        .route_layer(axum::middleware::from_fn(guard))
        .layer(axum::middleware::from_fn_with_state(access, middleware)))
}

/// The route templates of a router, read from its `Debug` form (axum has
/// no other way to list them). Fallback-only paths are skipped.
pub fn router_paths(app: &Router) -> Vec<String> {
    let text = format!("{app:?}");
    let text = text.split("fallback_router").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let Some(close) = rest.find("): \"") else {
            continue;
        };
        if !rest[..close].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let after = &rest[close + 4..];
        let Some(end) = after.find('"') else { break };
        let path = &after[..end];
        if !path.contains("__private__axum") && !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
        rest = &after[end..];
    }
    out.sort();
    out
}

/// The route the access middleware classified a request as.
#[derive(Clone, Copy)]
struct Classified(Option<&'static Route>);

/// Behind the router: the route that answers must be listed by the policy,
/// under the template the middleware classified the request with.
async fn guard(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let template = matched.as_ref().map(MatchedPath::as_str).unwrap_or("");
    let classified = req.extensions().get::<Classified>().and_then(|c| c.0);
    let agrees = method == Method::OPTIONS || classified.is_some_and(|r| r.path == template);
    if policy::lists(&method, template) && agrees {
        return next.run(req).await;
    }
    tracing::error!(%method, route = template, "route has no access policy: refused");
    (
        StatusCode::FORBIDDEN,
        "this route has no access policy and is refused\n",
    )
        .into_response()
}

/// How the principal of a request was established.
enum Via {
    Nothing,
    Header,
    Cookie(Session),
}

pub(crate) fn client_address(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The Host the request names (HTTP/1.1 Host, or the HTTP/2 authority).
fn request_host(req: &Request) -> Option<String> {
    header_str(req.headers(), &header::HOST)
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// `host[:port]` without the port (`[v6]` kept in brackets).
fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser navigation to a page (not a program calling the API).
fn wants_page(req: &Request) -> bool {
    let path = req.uri().path();
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && !policy::API_PREFIXES
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

impl Access {
    /// The viewer's static files: public, and cached as they say.
    fn is_static(&self, method: &Method, path: &str) -> bool {
        is_safe(method)
            && (path.starts_with("/assets/")
                || path == "/favicon.ico"
                || self.inner.config.static_files.iter().any(|f| f == path))
    }

    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(str::to_ascii_lowercase) else {
            return false;
        };
        let bare = host_only(&host);
        self.inner
            .allowed_hosts
            .iter()
            .any(|a| a == "*" || *a == host || *a == bare)
    }

    /// Same-origin check for a state-changing request (CSRF). Fetch
    /// metadata and Origin cannot be set by a page's script; without
    /// either, a cookie session must echo its CSRF token in a header.
    fn same_origin(&self, req: &Request, session: Option<&Session>) -> bool {
        let h = req.headers();
        if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            return site == "same-origin";
        }
        if let Some(origin) = header_str(h, &header::ORIGIN) {
            let host = request_host(req).unwrap_or_default().to_ascii_lowercase();
            let o = origin.to_ascii_lowercase();
            let o = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            return !o.is_empty() && o == host;
        }
        match session {
            Some(s) => h
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t == s.csrf),
            None => true,
        }
    }

    /// The principal of a live session cookie, if its user is still
    /// enabled (their current role applies).
    async fn session_principal(
        &self,
        headers: &HeaderMap,
        address: Option<IpAddr>,
    ) -> Option<(Session, Principal)> {
        let id = cookie(headers, cookie_name(self.inner.config.https))?;
        let session = self.inner.sessions.get(id).await?;
        if let Some(role) = session.federated {
            // Signed in through the identity provider: the role mapped
            // then holds until the session ends.
            let principal = Principal {
                kind: PrincipalKind::Oidc,
                name: session.user.clone(),
                role: Some(role),
                address,
                scope: scope_of(role),
            };
            return Some((session, principal));
        }
        let user = self.accounts()?.user(&session.user).await.ok()??;
        if user.disabled {
            let _ = self.inner.sessions.end(id).await;
            return None;
        }
        let principal = Principal {
            kind: PrincipalKind::User,
            name: user.name,
            role: Some(user.role),
            address,
            scope: scope_of(user.role),
        };
        Some((session, principal))
    }

    /// Checks a user's password with throttling, audit of failures and
    /// lock-outs, and (for Basic) a short cache of verified passwords.
    pub(crate) async fn check_password(
        &self,
        name: &str,
        password: &str,
        address: Option<IpAddr>,
        cache: bool,
    ) -> Result<Principal, Refusal> {
        let refusal = |why: &str, retry_after| Refusal {
            claimed: name.to_owned(),
            why: why.to_owned(),
            retry_after,
            alert: false,
        };
        if let Some(wait) = self.inner.throttle.locked_here(name, address) {
            return Err(refusal("too many failed sign-ins", Some(wait)));
        }
        let Some(accounts) = self.accounts() else {
            return Err(refusal("no local users", None));
        };
        let principal = |u: &pacs_core::credentials::UserRecord| Principal {
            kind: PrincipalKind::User,
            name: u.name.clone(),
            role: Some(u.role),
            address,
            scope: scope_of(u.role),
        };
        let user = accounts.user(name).await.ok().flatten();
        if cache {
            if let Some(u) = user.as_ref().filter(|u| !u.disabled) {
                let key = basic_key(name, password, &u.password_hash);
                let hit = self
                    .inner
                    .basic_cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < crate::BASIC_CACHE_TTL);
                if hit {
                    return Ok(principal(u));
                }
            }
        }
        // A password to verify: a lock set through another node counts too.
        if let Some(wait) = self.inner.throttle.locked(name, address).await {
            return Err(refusal("too many failed sign-ins", Some(wait)));
        }
        match accounts.verify_password(name, password).await {
            Ok(Some(u)) => {
                self.inner.throttle.succeed(name).await;
                if cache {
                    let mut c = self
                        .inner
                        .basic_cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if c.len() >= crate::BASIC_CACHE_MAX {
                        c.retain(|_, t| t.elapsed() < crate::BASIC_CACHE_TTL);
                        if c.len() >= crate::BASIC_CACHE_MAX {
                            c.clear();
                        }
                    }
                    c.insert(basic_key(name, password, &u.password_hash), Instant::now());
                }
                Ok(principal(&u))
            }
            Ok(None) | Err(_) => {
                let locks = self.inner.throttle.fail(name, address).await;
                self.audit_login(name, address, false, Some("bad user name or password"))
                    .await;
                for lock in &locks {
                    self.audit_lockout(name, address, *lock).await;
                }
                let wait = locks.iter().map(|l| match l {
                    Lock::Account(d) | Lock::Address(d) => *d,
                });
                Err(refusal("bad user name or password", wait.max()))
            }
        }
    }

    /// Resolves an `Authorization` header.
    async fn resolve_header(
        &self,
        value: &str,
        address: Option<IpAddr>,
    ) -> Result<Principal, Refusal> {
        let bad = |why: &str| Refusal {
            claimed: "unknown".into(),
            why: why.to_owned(),
            retry_after: None,
            alert: true,
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            let presented = Presented::Basic { user, password };
            if let Some(p) = self.plugged(&presented, address).await? {
                return Ok(p);
            }
            return self.check_password(user, password, address, true).await;
        }
        if !scheme.eq_ignore_ascii_case("bearer") || rest.is_empty() {
            return Err(bad("unsupported authorization scheme"));
        }
        if rest.starts_with(secrets::TOKEN_PREFIX) {
            let Some(accounts) = self.accounts() else {
                return Err(bad("unknown token"));
            };
            let check = accounts
                .check_token(rest)
                .await
                .map_err(|_| bad("token store unavailable"))?;
            let refused = |t: &pacs_core::credentials::TokenRecord, why: &str| Refusal {
                claimed: format!("token {}", t.id),
                why: why.to_owned(),
                retry_after: None,
                alert: true,
            };
            return match check {
                TokenCheck::Valid(t) => Ok(Principal {
                    kind: PrincipalKind::Token,
                    name: t.name,
                    role: Some(t.role),
                    address,
                    scope: scope_of(t.role),
                }),
                TokenCheck::Unknown => Err(bad("unknown token")),
                TokenCheck::Expired(t) => Err(refused(&t, "expired token")),
                TokenCheck::Revoked(t) => Err(refused(&t, "revoked token")),
            };
        }
        match self.plugged(&Presented::Bearer(rest), address).await? {
            Some(p) => Ok(p),
            None => Err(bad("unknown bearer token")),
        }
    }

    /// Asks the plugged-in resolvers, in order.
    async fn plugged(
        &self,
        presented: &Presented<'_>,
        address: Option<IpAddr>,
    ) -> Result<Option<Principal>, Refusal> {
        let resolvers = self
            .inner
            .resolvers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for r in resolvers {
            match r.resolve(presented, address).await {
                Resolution::NotMine => continue,
                Resolution::Principal(p) => return Ok(Some(p)),
                Resolution::Refused(why) => return Err(why),
            }
        }
        Ok(None)
    }

    /// Records an event; `false` if it could not be written.
    pub(crate) async fn record(&self, event: AuditEvent) -> bool {
        match self.inner.archive.audit().record(event).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit record not written");
                false
            }
        }
    }

    /// User Authentication (PS3.15 A.5.3.12): login (110122) or its
    /// failure.
    pub(crate) async fn audit_login(
        &self,
        name: &str,
        address: Option<IpAddr>,
        success: bool,
        why: Option<&str>,
    ) {
        let outcome = if success {
            AuditOutcome::Success
        } else {
            AuditOutcome::MinorFailure
        };
        let mut e = AuditEvent::new(
            AuditEventId::UserAuthentication,
            AuditAction::Execute,
            outcome,
        )
        .with_type(event_type::LOGIN)
        .actor(actor_named(name, None, address));
        if let Some(why) = why {
            e = e.describe(why);
        }
        self.record(e).await;
    }

    pub(crate) async fn audit_logout(&self, name: &str, address: Option<IpAddr>) {
        let e = AuditEvent::new(
            AuditEventId::UserAuthentication,
            AuditAction::Execute,
            AuditOutcome::Success,
        )
        .with_type(event_type::LOGOUT)
        .actor(actor_named(name, None, address));
        self.record(e).await;
    }

    /// Security Alert (PS3.15 A.5.3.11) for a lock-out: the account's (or
    /// address's) security state changed (DCM 110137).
    async fn audit_lockout(&self, name: &str, address: Option<IpAddr>, lock: Lock) {
        let (what, d) = match lock {
            Lock::Account(d) => (format!("account {name} locked"), d),
            Lock::Address(d) => ("client address locked".to_owned(), d),
        };
        tracing::warn!(
            account = name,
            address = ?address,
            seconds = d.as_secs(),
            "sign-in lock-out after repeated failures"
        );
        let e = AuditEvent::new(
            AuditEventId::SecurityAlert,
            AuditAction::Execute,
            AuditOutcome::MinorFailure,
        )
        .with_type(event_type::USER_SECURITY_ATTRIBUTES_CHANGED)
        .describe(format!(
            "{what} for {} s after repeated sign-in failures",
            d.as_secs()
        ))
        .actor(actor_named(name, None, address));
        self.record(e).await;
    }

    /// Security Alert for refused credentials that are not a password
    /// (unknown, expired or revoked token): Node Authentication (110126).
    async fn audit_bad_credentials(&self, refusal: &Refusal, address: Option<IpAddr>) {
        let e = AuditEvent::new(
            AuditEventId::SecurityAlert,
            AuditAction::Execute,
            AuditOutcome::MinorFailure,
        )
        .with_type(event_type::NODE_AUTHENTICATION)
        .describe(refusal.why.clone())
        .actor(actor_named(&refusal.claimed, None, address));
        self.record(e).await;
    }

    /// Security Alert for a change of users or tokens by an administrator
    /// (DCM 110137 User Security Attributes Changed).
    pub(crate) async fn audit_admin(&self, by: &Principal, what: String) -> bool {
        let e = AuditEvent::new(
            AuditEventId::SecurityAlert,
            AuditAction::Execute,
            AuditOutcome::Success,
        )
        .with_type(event_type::USER_SECURITY_ATTRIBUTES_CHANGED)
        .describe(what)
        .actor(actor(by));
        self.record(e).await
    }
}

/// The studies a local user or token of `role` may see: all of them,
/// except for partners, who see only what is granted to them (filled in
/// from their grants once the request's route needs it).
fn scope_of(role: Role) -> StudyScope {
    match role {
        Role::Partner => StudyScope::Studies(Default::default()),
        _ => StudyScope::All,
    }
}

fn basic_key(name: &str, password: &str, phc: &str) -> [u8; 32] {
    let mut b = Vec::with_capacity(name.len() + password.len() + phc.len() + 2);
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(password.as_bytes());
    b.push(0);
    b.extend_from_slice(phc.as_bytes());
    secrets::sha256(&b)
}

fn actor_named(name: &str, role: Option<String>, address: Option<IpAddr>) -> AuditActor {
    AuditActor {
        user_id: name.to_owned(),
        alt_user_id: None,
        role,
        address: address.map(|a| a.to_string()),
        requestor: true,
    }
}

fn actor(p: &Principal) -> AuditActor {
    actor_named(&p.name, p.role.map(|r| r.as_str().to_owned()), p.address)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// 401 with the challenges (RFC 9110 11.6.1). Browser scripts get only
/// the Bearer challenge, so that no password dialog pops up over the
/// viewer.
fn challenge(req: &Request, text: &str) -> Response {
    let mut res = plain(StatusCode::UNAUTHORIZED, text);
    let from_script = req
        .headers()
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m != "navigate");
    let h = res.headers_mut();
    if !from_script {
        if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""))
        {
            h.append(header::WWW_AUTHENTICATE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer realm=\"{REALM}\"")) {
        h.append(header::WWW_AUTHENTICATE, v);
    }
    res
}

fn too_many(wait: Duration) -> Response {
    let mut res = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed sign-ins: try again later",
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Where to send an anonymous browser: the login page, then back here.
fn to_login(req: &Request) -> Response {
    let back = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("/login?next={}", crate::pages::url_encode(back));
    let mut res = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn security_headers(res: &mut Response, https: bool, no_store: bool) {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, name: HeaderName, v: &'static str| {
        h.insert(name, HeaderValue::from_static(v));
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(h, header::CONTENT_SECURITY_POLICY, CSP);
    }
    if https {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    if no_store {
        set(h, header::CACHE_CONTROL, "no-store");
        h.remove(header::EXPIRES);
    }
}

/// The study a request is about: the `{study}` of its route, or the
/// `studyUID` of a WADO-URI request.
fn study_of(route: &Route, req: &Request) -> Option<Uid> {
    if let Some(s) = policy::param(route.path, req.uri().path(), "study") {
        return Uid::parse(s).ok();
    }
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "studyUID")
        .and_then(|(_, v)| Uid::parse(v).ok())
}

/// The audit event of a patient-data request.
fn phi_event(
    route: &Route,
    req_query: Option<&str>,
    study: Option<&Uid>,
    principal: &Principal,
    grants: &[GrantRecord],
    outcome: AuditOutcome,
) -> Option<AuditEvent> {
    let (id, action) = match route.audit {
        AuditAs::None => return None,
        AuditAs::Query => (AuditEventId::Query, AuditAction::Execute),
        AuditAs::Read => (AuditEventId::InstancesAccessed, AuditAction::Read),
        AuditAs::Create => (AuditEventId::InstancesAccessed, AuditAction::Create),
        AuditAs::Delete => (AuditEventId::StudyDeleted, AuditAction::Delete),
    };
    let mut e = AuditEvent::new(id, action, outcome).actor(actor(principal));
    if route.audit == AuditAs::Query {
        e = e.object(AuditObject::Query {
            text: req_query.unwrap_or("").to_owned(),
        });
    }
    if let Some(s) = study {
        e = e.object(AuditObject::Study {
            uid: s.as_str().to_owned(),
        });
    }
    for g in grants {
        e = e.object(AuditObject::Other {
            kind: "grant".into(),
            id: g.id.clone(),
        });
    }
    Some(e)
}

fn outcome_of(status: StatusCode) -> AuditOutcome {
    if status.is_success() || status.is_redirection() {
        AuditOutcome::Success
    } else if status.is_client_error() {
        AuditOutcome::MinorFailure
    } else {
        AuditOutcome::SeriousFailure
    }
}

fn audit_unavailable() -> Response {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit record of this request could not be written, so it is refused",
    )
}

/// The access middleware.
async fn middleware(State(access): State<Access>, mut req: Request, next: Next) -> Response {
    let https = access.inner.config.https;
    let host = request_host(&req);
    if !access.host_allowed(host.as_deref()) {
        let mut res = plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this server does not answer to that Host (see allowed_hosts)",
        );
        security_headers(&mut res, https, true);
        return res;
    }
    let route = policy::classify(req.method(), req.uri().path());
    req.extensions_mut().insert(Classified(route));
    // The viewer's static files keep their own caching; everything else
    // unlisted (error answers, the app's page for client routes) is not kept.
    let no_store = match route {
        Some(r) => r.no_store,
        None => !access.is_static(req.method(), req.uri().path()),
    };
    let mut res = decide(&access, route, req, next).await;
    let failed = !res.status().is_success();
    security_headers(&mut res, https, no_store || failed);
    res
}

async fn decide(
    access: &Access,
    route: Option<&'static Route>,
    mut req: Request,
    next: Next,
) -> Response {
    let address = client_address(&req);
    let path = req.uri().path().to_owned();
    let is_static = access.is_static(req.method(), &path);
    // A CORS preflight carries no credentials (Fetch standard, CORS-
    // preflight request); the CORS layer answers it and no handler runs.
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let public = is_static || preflight || route.is_some_and(|r| r.need == Need::Public);

    let mut via = Via::Nothing;
    let principal = if !access.enabled() {
        Some(Principal::unauthenticated(address))
    } else if let Some(value) = header_str(req.headers(), &header::AUTHORIZATION) {
        match access.resolve_header(value, address).await {
            Ok(p) => {
                via = Via::Header;
                Some(p)
            }
            Err(refusal) => {
                if refusal.alert {
                    access.audit_bad_credentials(&refusal, address).await;
                }
                return match refusal.retry_after {
                    Some(wait) => too_many(wait),
                    None => challenge(&req, &format!("not signed in: {}", refusal.why)),
                };
            }
        }
    } else {
        match access.session_principal(req.headers(), address).await {
            Some((session, p)) => {
                via = Via::Cookie(session);
                Some(p)
            }
            None => match access.share_principal(req.headers(), address).await {
                Ok(p) => p,
                // A link no longer valid: said on what it guarded; public
                // pages (sign-in, static files) still open.
                Err(refused) if !public => return refused,
                Err(_) => None,
            },
        }
    };

    // CSRF: state-changing requests carried by a cookie session (and the
    // login form) must come from our own pages. Header credentials are
    // not sent by browsers on their own, so they are exempt.
    let session = match &via {
        Via::Cookie(s) => Some(s),
        _ => None,
    };
    let form_route = matches!(path.as_str(), "/login" | "/logout");
    if !is_safe(req.method())
        && !matches!(via, Via::Header)
        && (session.is_some() || form_route)
        && !access.same_origin(&req, session)
    {
        return plain(
            StatusCode::FORBIDDEN,
            "cross-site request refused (the Origin is not this server)",
        );
    }
    if let Some(s) = session {
        req.extensions_mut()
            .insert(crate::pages::CsrfToken(s.csrf.clone()));
    }
    if public {
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        return next.run(req).await;
    }
    let Some(mut principal) = principal else {
        return if wants_page(&req) {
            to_login(&req)
        } else {
            challenge(&req, "sign in to use this server")
        };
    };
    // A partner sees the studies of its live grants, read now, so that a
    // revocation or an expiry holds from the next request.
    let mut grants = Vec::new();
    if crate::grants::is_partner(&principal) {
        match access.partner_scope(&principal.name).await {
            Ok((scope, live)) => {
                principal.scope = scope;
                grants = live;
            }
            Err(r) => return r,
        }
    }
    let Some(route) = route else {
        // Not a route of the table: only fallbacks answer here (404, 405,
        // the viewer's page); a real route without policy meets the guard.
        req.extensions_mut().insert(principal);
        return next.run(req).await;
    };
    let study = study_of(route, &req);
    // The grants that open this request's study (named in its record).
    let used: Vec<GrantRecord> = match &study {
        Some(s) => grants
            .into_iter()
            .filter(|g| g.studies.iter().any(|u| u == s.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let allowed = match route.need {
        Need::Public | Need::SignedIn => true,
        Need::Permission(p) => {
            principal.may(p)
                && match &principal.scope {
                    StudyScope::All => true,
                    scope => match study.as_ref() {
                        Some(s) => scope.allows(s),
                        None => crate::shares::confine(&mut req, route.path, scope),
                    },
                }
        }
    };
    let query = req.uri().query().map(str::to_owned);
    if !allowed {
        if let Some(e) = phi_event(
            route,
            query.as_deref(),
            study.as_ref(),
            &principal,
            &used,
            AuditOutcome::MinorFailure,
        ) {
            access.record(e.describe("refused: not permitted")).await;
        }
        return plain(
            StatusCode::FORBIDDEN,
            &format!("{} may not do this", principal.name),
        );
    }
    req.extensions_mut().insert(principal.clone());
    let writes = matches!(route.audit, AuditAs::Create | AuditAs::Delete);
    if writes {
        // Recorded before: a write cannot be undone if its record fails.
        if let Some(e) = phi_event(
            route,
            query.as_deref(),
            study.as_ref(),
            &principal,
            &used,
            AuditOutcome::Success,
        ) {
            if !access.record(e).await {
                return audit_unavailable();
            }
        }
        return next.run(req).await;
    }
    let res = next.run(req).await;
    // Reads are recorded once answered (the body has not been sent yet),
    // with their outcome; no record, no answer (issue 13, PS3.15 A.5).
    if let Some(e) = phi_event(
        route,
        query.as_deref(),
        study.as_ref(),
        &principal,
        &used,
        outcome_of(res.status()),
    ) {
        if !access.record(e).await {
            return audit_unavailable();
        }
    }
    if res.status().is_success() && !used.is_empty() {
        access.count_grant_uses(used).await;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[test]
    fn lists_the_routes_of_a_router() {
        let inner = Router::new()
            .route("/studies", get(|| async { "" }))
            .route("/studies/{study}", get(|| async { "" }))
            .fallback(|| async { "" });
        let app: Router = Router::new()
            .route("/healthz", get(|| async { "" }))
            .nest("/dicom-web", inner)
            .fallback(|| async { "" });
        assert_eq!(
            router_paths(&app),
            vec![
                "/dicom-web/studies".to_owned(),
                "/dicom-web/studies/{study}".to_owned(),
                "/healthz".to_owned(),
            ]
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(host_only("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(host_only("[::1]"), "[::1]");
        assert_eq!(host_only("pacs.bv.vn"), "pacs.bv.vn");
    }
}
