//! The HTTP route policy: every route of the server, with what it needs and
//! what it audits, in one table ([`ROUTES`]).
//!
//! The access layer classifies each request with [`classify`] before the
//! router sees it. Behind the router, a guard checks that the route that
//! answered is listed here under the same template, and refuses it
//! otherwise (fail closed); at start-up [`unlisted`] names any route of the
//! router that this table does not list, and the server refuses to start.
//! A new route therefore needs a line here.

use axum::http::Method;
use pacs_core::Permission;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone (health, sign-in, static files).
    Public,
    /// Any signed-in principal (who am I).
    SignedIn,
    Permission(Permission),
}

/// The audit event a request of this route records (PS3.15 A.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAs {
    None,
    /// Query (110112), with the query string.
    Query,
    /// DICOM Instances Accessed (110103), Read.
    Read,
    /// DICOM Instances Accessed (110103), Create.
    Create,
    /// DICOM Study Deleted (110105).
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// The router's template (axum syntax: `{param}`, `{*rest}`).
    pub path: &'static str,
    pub need: Need,
    pub audit: AuditAs,
    /// Answers carry patient data or credentials: `Cache-Control: no-store`.
    pub no_store: bool,
}

const fn r(method: &'static str, path: &'static str, need: Need, audit: AuditAs) -> Route {
    Route {
        method,
        path,
        need,
        audit,
        no_store: true,
    }
}

const fn page(path: &'static str, need: Need) -> Route {
    Route {
        method: "GET",
        path,
        need,
        audit: AuditAs::None,
        no_store: false,
    }
}

const READ: Need = Need::Permission(Permission::Read);
const STORE: Need = Need::Permission(Permission::Store);
const ADMIN: Need = Need::Permission(Permission::Administer);
const SHARE: Need = Need::Permission(Permission::Share);
const READ_AUDIT: Need = Need::Permission(Permission::ReadAudit);
const SCHEDULE: Need = Need::Permission(Permission::Schedule);

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    // Health, sign-in and the viewer's pages.
    page("/healthz", Need::Public),
    r("GET", "/login", Need::Public, AuditAs::None),
    r("POST", "/login", Need::Public, AuditAs::None),
    r("POST", "/logout", Need::Public, AuditAs::None),
    // Sign-in through the identity provider (state, nonce and PKCE are the
    // credential checks; the callback audits its outcome).
    r("GET", "/login/oidc", Need::Public, AuditAs::None),
    r("GET", "/login/oidc/callback", Need::Public, AuditAs::None),
    page("/", READ),
    page("/viewer", READ),
    r("GET", "/IHEInvokeImageDisplay", READ, AuditAs::Query),
    r("GET", "/api/stats", READ, AuditAs::None),
    r("GET", "/api/v1/session", Need::SignedIn, AuditAs::None),
    // The viewer's hanging protocols (layout rules, no patient data): for
    // whoever may open the viewer, a share link's holder included.
    r(
        "GET",
        "/api/v1/hanging-protocols",
        Need::SignedIn,
        AuditAs::None,
    ),
    // Administration of users and tokens.
    r("GET", "/admin", ADMIN, AuditAs::None),
    r("POST", "/admin/users", ADMIN, AuditAs::None),
    r("POST", "/admin/users/{name}/{action}", ADMIN, AuditAs::None),
    r("POST", "/admin/tokens", ADMIN, AuditAs::None),
    r("POST", "/admin/tokens/{id}/revoke", ADMIN, AuditAs::None),
    // The audit trail (its own route records Audit Log Used, 110101).
    r("GET", "/api/v1/audit", READ_AUDIT, AuditAs::None),
    r("GET", "/audit", READ_AUDIT, AuditAs::None),
    r("GET", "/api/v1/users", ADMIN, AuditAs::None),
    r("POST", "/api/v1/users", ADMIN, AuditAs::None),
    r("DELETE", "/api/v1/users/{name}", ADMIN, AuditAs::None),
    r("GET", "/api/v1/tokens", ADMIN, AuditAs::None),
    r("POST", "/api/v1/tokens", ADMIN, AuditAs::None),
    r("DELETE", "/api/v1/tokens/{id}", ADMIN, AuditAs::None),
    r("GET", "/api/v1/queue", ADMIN, AuditAs::None),
    r("POST", "/api/v1/queue/{id}/retry", ADMIN, AuditAs::None),
    r("DELETE", "/api/v1/queue/{id}", ADMIN, AuditAs::None),
    // Share links (the page is public: the token in its path is the credential).
    r("GET", "/api/v1/shares", SHARE, AuditAs::None),
    r("POST", "/api/v1/shares", SHARE, AuditAs::None),
    r("DELETE", "/api/v1/shares/{id}", SHARE, AuditAs::None),
    // Partner-hospital grants (made by POST /api/v1/shares with "partner").
    r("GET", "/api/v1/grants", SHARE, AuditAs::None),
    r("DELETE", "/api/v1/grants/{id}", SHARE, AuditAs::None),
    // Orders (worklist steps): read with Read, written with Schedule; the
    // handlers record Order Record (110109) themselves.
    r("GET", "/api/v1/orders", READ, AuditAs::None),
    r("POST", "/api/v1/orders", SCHEDULE, AuditAs::None),
    r("GET", "/api/v1/orders/{id}", READ, AuditAs::None),
    r("PATCH", "/api/v1/orders/{id}", SCHEDULE, AuditAs::None),
    r("DELETE", "/api/v1/orders/{id}", SCHEDULE, AuditAs::None),
    // The technologist's page of the day's exams (it records its own
    // Order Record read).
    r("GET", "/technologist", READ, AuditAs::None),
    // Patient corrections and merges (audited by the archive as Patient
    // Record, 110110, PS3.15 A.5.3).
    r("PATCH", "/api/v1/patients/{id}", ADMIN, AuditAs::None),
    r("POST", "/api/v1/patients/merge", ADMIN, AuditAs::None),
    r("POST", "/api/v1/patients/{id}/merge", ADMIN, AuditAs::None),
    r("GET", "/api/v1/patients/{id}/history", ADMIN, AuditAs::None),
    // Deleting a study or a series (the handler records Instances
    // Accessed, Delete, PS3.15 A.5.3.8).
    r("DELETE", "/api/v1/studies/{study}", ADMIN, AuditAs::None),
    r(
        "DELETE",
        "/api/v1/studies/{study}/series/{series}",
        ADMIN,
        AuditAs::None,
    ),
    r("GET", "/s/{token}", Need::Public, AuditAs::None),
    r("POST", "/s/{token}", Need::Public, AuditAs::None),
    r("GET", "/s/{token}/qr.svg", Need::Public, AuditAs::None),
    // WADO-URI (PS3.18 9).
    r("GET", "/wado", READ, AuditAs::Read),
    // DICOMweb (PS3.18 10): QIDO-RS.
    r("GET", "/dicom-web/studies", READ, AuditAs::Query),
    r("GET", "/dicom-web/series", READ, AuditAs::Query),
    r("GET", "/dicom-web/instances", READ, AuditAs::Query),
    r(
        "GET",
        "/dicom-web/studies/{study}/series",
        READ,
        AuditAs::Query,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/instances",
        READ,
        AuditAs::Query,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances",
        READ,
        AuditAs::Query,
    ),
    // STOW-RS.
    r("POST", "/dicom-web/studies", STORE, AuditAs::Create),
    r("POST", "/dicom-web/studies/{study}", STORE, AuditAs::Create),
    // WADO-RS: retrieve, metadata, frames, bulk data, rendered, thumbnails.
    r("GET", "/dicom-web/studies/{study}", READ, AuditAs::Read),
    r(
        "GET",
        "/dicom-web/studies/{study}/metadata",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/rendered",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/thumbnail",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/metadata",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/rendered",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/thumbnail",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
        READ,
        AuditAs::Read,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
        READ,
        AuditAs::Read,
    ),
];

/// Path prefixes whose answers are for programs, never pages: an anonymous
/// request there gets 401, not a redirect to the login page.
pub const API_PREFIXES: &[&str] = &["/dicom-web", "/wado", "/api"];

/// Whether `path` matches the template (`{x}` one non-empty segment,
/// `{*x}` the rest).
pub fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                if ts.starts_with("{*") {
                    return !ps.is_empty();
                }
                let param = ts.starts_with('{') && ts.ends_with('}');
                if (param && ps.is_empty()) || (!param && ts != ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The value of `{name}` in `path` under `template`.
pub fn param<'p>(template: &str, path: &'p str, name: &str) -> Option<&'p str> {
    let want = format!("{{{name}}}");
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == want)
        .map(|(_, p)| p)
}

/// The method a route is listed under: HEAD is answered by GET routes.
fn listed_method(method: &Method) -> &str {
    if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    }
}

/// The route a request is for, if the table lists one.
pub fn classify(method: &Method, path: &str) -> Option<&'static Route> {
    let m = listed_method(method);
    ROUTES
        .iter()
        .find(|r| r.method == m && matches(r.path, path))
}

/// Whether the table lists the router's `template` for `method` (the guard
/// behind the router). CORS preflights (OPTIONS) are answered by the CORS
/// layer of a listed path and run no handler.
pub fn lists(method: &Method, template: &str) -> bool {
    let m = listed_method(method);
    ROUTES
        .iter()
        .any(|r| r.path == template && (r.method == m || method == Method::OPTIONS))
}

/// Route templates of `paths` (the router's) that the table does not list.
pub fn unlisted<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    paths
        .into_iter()
        .filter(|p| !ROUTES.iter().any(|r| r.path == *p))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_like_the_router() {
        assert!(matches(
            "/dicom-web/studies/{study}",
            "/dicom-web/studies/1.2"
        ));
        assert!(!matches(
            "/dicom-web/studies/{study}",
            "/dicom-web/studies/"
        ));
        assert!(!matches("/dicom-web/studies/{study}", "/dicom-web/studies"));
        assert!(!matches("/healthz", "/healthz/"));
        assert!(!matches("/healthz", "//healthz"));
        assert!(matches("/assets/{*p}", "/assets/a/b.js"));
        assert_eq!(
            param(
                "/dicom-web/studies/{study}/series/{series}",
                "/dicom-web/studies/1.2/series/3.4",
                "study"
            ),
            Some("1.2")
        );
    }

    #[test]
    fn every_template_is_listed_once_per_method() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} listed twice",
                    a.method,
                    a.path
                );
            }
        }
    }

    #[test]
    fn classification() {
        let c = |m: Method, p: &str| classify(&m, p).map(|r| r.need);
        assert_eq!(c(Method::GET, "/healthz"), Some(Need::Public));
        assert_eq!(c(Method::HEAD, "/dicom-web/studies"), Some(READ));
        assert_eq!(c(Method::POST, "/dicom-web/studies"), Some(STORE));
        assert_eq!(c(Method::PUT, "/dicom-web/studies"), None);
        assert_eq!(c(Method::GET, "/nowhere"), None);
    }
}
