//! Share links: read access to one study, or to one patient's studies, for
//! whoever holds the link (a patient on a phone, a partner hospital).
//!
//! - `POST /api/v1/shares` makes a link; `GET /api/v1/shares` lists them
//!   (never their tokens), by id, a page at a time (`limit`, `after`,
//!   `Link: rel="next"`); `DELETE /api/v1/shares/{id}` revokes one.
//! - `GET /s/{token}` is the patient's page (vi/en, phone first). It asks
//!   for the PIN when the link has one, then swaps the link for a short
//!   share cookie and shows the study with the read-only viewer and a ZIP
//!   download.
//! - Scripts and partner systems present the token as `Authorization:
//!   Bearer shr_…` (links without a PIN only; a token is never taken from
//!   the query string, where logs and Referer headers would keep it).
//!
//! The token carries 256 random bits and is stored only as its SHA-256.
//! Every request checks the record, so revocation and expiry take effect
//! at once. A share resolves to a [`Principal`] of kind `Share` whose
//! scope lists its studies; the route policy and the archive's reads
//! apply that scope (QIDO is confined to it by rewriting the study key).
//! Creation, every use, revocation and PIN lock-outs are audited.
//!
//! - `GET /s/{token}/qr.svg` is the link as a QR code for the result sheet.
//!
//! - `POST /api/v1/shares` with a `"partner"` makes a partner-hospital
//!   grant instead of a link (see [`crate::grants`]).
//!
//! - The patient page offers a JPEG of each key image (the instances the
//!   study's Key Object Selection documents reference), rendered by WADO-RS
//!   under the link's scope; without one, the viewer's JPEG button saves
//!   the image on screen.
//!
//! Non-goals: a share button in the viewer (the viewer's own code).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Form, Json, Router};
use base64::Engine as _;
use pacs_core::access::{Permission, PrincipalKind, StudyScope};
use pacs_core::audit::{
    AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::credentials::{Credentials, ShareChange, ShareRecord};
use pacs_core::query::{Level, Query as StudyQuery};
use pacs_core::sessions::FlowKind;
use pacs_core::{Archive, Principal, Uid};
use serde::Deserialize;
use serde_json::json;

use crate::layer::{client_address, cookie};
use crate::pages::{esc, lang_of, page, set_cookie, t, Lang};
use crate::secrets;
use crate::{Access, Presented, Refusal, Resolution, Resolver};

/// Prefix of share tokens (recognisable in a leaked log or by a scanner).
pub const SHARE_PREFIX: &str = "shr_";
/// The cookie the share page sets once the link (and its PIN) is accepted.
pub const SHARE_COOKIE: &str = "sen_share";

/// Share-link settings (`[auth] share_*`).
#[derive(Debug, Clone, Copy)]
pub struct ShareConfig {
    /// Validity when the request names none.
    pub default_days: u64,
    /// The longest validity a link may be given.
    pub max_days: u64,
    /// Wrong PINs in a row before PIN entry is locked.
    pub pin_attempts: u32,
    /// How long PIN entry stays locked.
    pub pin_lock: Duration,
    /// How long the share cookie lasts (never past the link's expiry).
    pub session: Duration,
    /// Share cookies live at once (of every node sharing the session
    /// store); past it the link page answers 503 until some expire.
    pub max_sessions: usize,
}

impl Default for ShareConfig {
    fn default() -> ShareConfig {
        ShareConfig {
            default_days: 30,
            max_days: 90,
            pin_attempts: 5,
            pin_lock: Duration::from_secs(15 * 60),
            session: Duration::from_secs(4 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// Version byte of a share cookie's record (then the link's token's
/// SHA-256).
const SHARE_COOKIE_RECORD: u8 = 1;

/// Share cookies, kept in the session store ([`FlowKind::ShareCookie`]) so
/// that every node sharing it accepts them: SHA-256 of the cookie → its
/// link's token's SHA-256, until the cookie ends.
impl Access {
    /// A new share cookie for the link whose token has SHA-256 `secret`;
    /// `None` when the store is full or cannot answer.
    async fn start_share_cookie(&self, secret: [u8; 32], lasts: Duration) -> Option<String> {
        let cookie = secrets::random_secret().ok()?;
        let mut record = Vec::with_capacity(33);
        record.push(SHARE_COOKIE_RECORD);
        record.extend_from_slice(&secret);
        let max = self.inner.config.shares.max_sessions;
        let key = secrets::sha256(cookie.as_bytes());
        match self
            .inner
            .sessions
            .store()
            .put_flow(FlowKind::ShareCookie, key, &record, lasts, max)
            .await
        {
            Ok(true) => Some(cookie),
            Ok(false) => {
                tracing::warn!(max, "share cookies: the table is full");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable: share cookie not kept");
                None
            }
        }
    }

    /// The link (its token's SHA-256) of a live share cookie.
    async fn share_cookie(&self, cookie: &str) -> Option<[u8; 32]> {
        let key = secrets::sha256(cookie.as_bytes());
        let record = match self
            .inner
            .sessions
            .store()
            .flow(FlowKind::ShareCookie, &key)
            .await
        {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable: share cookie refused");
                return None;
            }
        };
        match record.split_first() {
            Some((&SHARE_COOKIE_RECORD, secret)) => secret.try_into().ok(),
            _ => {
                tracing::warn!("share cookie: record of an unknown version");
                None
            }
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a presented share token turned out to be.
enum Check {
    Valid(Box<ShareRecord>),
    Unknown,
    /// Revoked or expired: the link is no longer valid.
    Gone,
}

async fn check(store: &dyn Credentials, token: &str) -> Result<Check, Response> {
    if !token.starts_with(SHARE_PREFIX) || token.len() > 200 {
        return Ok(Check::Unknown);
    }
    let found = store
        .share_by_secret(&secrets::sha256(token.as_bytes()))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "share store unavailable");
            unavailable()
        })?;
    Ok(match found {
        None => Check::Unknown,
        Some(s) if s.revoked.is_some() || s.expires <= now_secs() => Check::Gone,
        Some(s) => Check::Valid(Box::new(s)),
    })
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the share store is unavailable\n",
    )
        .into_response()
}

fn principal_of(share: &ShareRecord, address: Option<IpAddr>) -> Principal {
    Principal {
        kind: PrincipalKind::Share,
        name: format!("share:{}", share.id),
        role: None,
        address,
        scope: StudyScope::Studies(
            share
                .studies
                .iter()
                .filter_map(|s| Uid::parse(s).ok())
                .collect(),
        ),
    }
}

fn share_actor(share: &ShareRecord, address: Option<IpAddr>) -> AuditActor {
    AuditActor {
        user_id: format!("share:{}", share.id),
        alt_user_id: None,
        role: None,
        address: address.map(|a| a.to_string()),
        requestor: true,
    }
}

pub(crate) fn user_actor(p: &Principal) -> AuditActor {
    AuditActor {
        user_id: p.name.clone(),
        alt_user_id: None,
        role: p.role.map(|r| r.as_str().to_owned()),
        address: p.address.map(|a| a.to_string()),
        requestor: true,
    }
}

/// The audit event of a share (created, used, revoked, PIN lock-out).
fn share_event(
    id: AuditEventId,
    action: AuditAction,
    outcome: AuditOutcome,
    (code, meaning): (&str, &str),
    share: &ShareRecord,
    who: AuditActor,
) -> AuditEvent {
    // Local codes (99SENPACS): PS3.16 has no share-link event types.
    let mut e = AuditEvent::new(id, action, outcome)
        .event_type(code, meaning)
        .actor(who)
        .object(AuditObject::Other {
            kind: "share".into(),
            id: share.id.clone(),
        });
    if let Some(p) = &share.patient {
        e = e.object(AuditObject::Patient {
            id: p.clone(),
            name: None,
        });
    }
    for s in &share.studies {
        e = e.object(AuditObject::Study { uid: s.clone() });
    }
    e
}

const CREATED: (&str, &str) = ("SEN-SHARE-CREATED", "Share link created");
const USED: (&str, &str) = ("SEN-SHARE-USED", "Share link used");
const REVOKED: (&str, &str) = ("SEN-SHARE-REVOKED", "Share link revoked");
const PIN_LOCKED: (&str, &str) = ("SEN-SHARE-PIN-LOCKOUT", "Share link PIN locked");

async fn record(archive: &Archive, e: AuditEvent) -> bool {
    match archive.audit().record(e).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "audit record not written");
            false
        }
    }
}

/// Counts a use of `share` and audits it; `false` if the audit record
/// could not be written (the use is then refused).
async fn used(
    archive: &Archive,
    store: &dyn Credentials,
    share: &ShareRecord,
    address: Option<IpAddr>,
    how: &str,
) -> bool {
    let e = share_event(
        AuditEventId::Export,
        AuditAction::Read,
        AuditOutcome::Success,
        USED,
        share,
        share_actor(share, address),
    )
    .describe(how.to_owned());
    if !record(archive, e).await {
        return false;
    }
    if let Err(e) = store.change_share(&share.id, ShareChange::Used).await {
        tracing::warn!(error = %e, "share use not counted");
    }
    true
}

/// Resolves `Authorization: Bearer shr_…` for links without a PIN.
pub(crate) struct TokenResolver {
    pub(crate) archive: Archive,
}

#[async_trait]
impl Resolver for TokenResolver {
    async fn resolve(&self, presented: &Presented<'_>, address: Option<IpAddr>) -> Resolution {
        let Presented::Bearer(token) = presented else {
            return Resolution::NotMine;
        };
        if !token.starts_with(SHARE_PREFIX) {
            return Resolution::NotMine;
        }
        match resolve_token(&self.archive, token, address).await {
            Ok(p) => Resolution::Principal(p),
            Err(why) => Resolution::Refused(Refusal {
                claimed: "share link".into(),
                why: why.to_owned(),
                retry_after: None,
                alert: true,
            }),
        }
    }
}

async fn resolve_token(
    archive: &Archive,
    token: &str,
    address: Option<IpAddr>,
) -> Result<Principal, &'static str> {
    let Some(store) = archive.credentials() else {
        return Err("unknown share link");
    };
    match check(store.as_ref(), token).await {
        Ok(Check::Valid(s)) if s.pin_sha256.is_some() => {
            Err("this share link has a PIN: open it in a browser")
        }
        Ok(Check::Valid(s)) => {
            let p = principal_of(&s, address);
            if used(archive, store.as_ref(), &s, address, "token").await {
                Ok(p)
            } else {
                Err("the audit record of this use could not be written")
            }
        }
        Ok(Check::Unknown) => Err("unknown share link"),
        Ok(Check::Gone) => Err("this share link is no longer valid"),
        Err(_) => Err("share store unavailable"),
    }
}

impl Access {
    /// The share principal of a request without `Authorization`: its
    /// share cookie. `Ok(None)` when it has none (or an unknown one);
    /// `Err` with the answer when its link is no longer valid.
    pub(crate) async fn share_principal(
        &self,
        headers: &HeaderMap,
        address: Option<IpAddr>,
    ) -> Result<Option<Principal>, Response> {
        let Some(store) = self.inner.archive.credentials() else {
            return Ok(None);
        };
        if let Some(c) = cookie(headers, SHARE_COOKIE) {
            if let Some(secret) = self.share_cookie(c).await {
                if let Ok(Some(s)) = store.share_by_secret(&secret).await {
                    if s.revoked.is_none() && s.expires > now_secs() {
                        return Ok(Some(principal_of(&s, address)));
                    }
                    return Err(gone_answer(headers));
                }
            }
        }
        Ok(None)
    }
}

/// Routes with no study in their path that a share principal may still
/// use: the viewer's page, and QIDO searches, which are confined to the
/// share's studies by rewriting their `StudyInstanceUID` key (a UID list,
/// PS3.4 C.2.2.2.2). Returns whether the request may go on.
pub(crate) fn confine(req: &mut Request, path_template: &str, scope: &StudyScope) -> bool {
    let StudyScope::Studies(allowed) = scope else {
        return true;
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return false;
    }
    match path_template {
        "/viewer" => !allowed.is_empty(),
        "/dicom-web/studies" | "/dicom-web/series" | "/dicom-web/instances" => {
            let query = req.uri().query().unwrap_or("").to_owned();
            let mut asked: Option<BTreeSet<String>> = None;
            let mut kept = Vec::new();
            for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k == "StudyInstanceUID" || k.eq_ignore_ascii_case("0020000D") {
                    let v = v
                        .replace("%5C", "\\")
                        .replace("%5c", "\\")
                        .replace("%2C", ",");
                    let set = asked.get_or_insert_with(BTreeSet::new);
                    set.extend(
                        v.split(['\\', ','])
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                } else {
                    kept.push(kv.to_owned());
                }
            }
            let uids: Vec<&str> = allowed
                .iter()
                .map(Uid::as_str)
                .filter(|u| asked.as_ref().is_none_or(|a| a.contains(*u)))
                .collect();
            if uids.is_empty() {
                return false;
            }
            kept.push(format!("StudyInstanceUID={}", uids.join(",")));
            let pq = format!("{}?{}", req.uri().path(), kept.join("&"));
            let mut parts = req.uri().clone().into_parts();
            match pq.parse() {
                Ok(pq) => parts.path_and_query = Some(pq),
                Err(_) => return false,
            }
            match Uri::from_parts(parts) {
                Ok(u) => {
                    *req.uri_mut() = u;
                    true
                }
                Err(_) => false,
            }
        }
        _ => false,
    }
}

pub(crate) fn router(access: Access) -> Router {
    Router::new()
        .route("/api/v1/shares", get(api_list).post(api_create))
        .route("/api/v1/shares/{id}", delete(api_revoke))
        .route("/s/{token}", get(open_page).post(pin_page))
        .route("/s/{token}/qr.svg", get(qr_svg))
        .with_state(access)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewShare {
    study: Option<String>,
    patient: Option<String>,
    expires_in_days: Option<u64>,
    #[serde(default)]
    pin: bool,
    /// Makes a partner-hospital grant instead of a link (see `grants`).
    partner: Option<String>,
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

/// A 6-digit PIN, uniform over 000000..=999999.
fn new_pin() -> Option<String> {
    loop {
        let b = secrets::random_bytes(4).ok()?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        // Rejection sampling: 4_294_000_000 is a multiple of 1_000_000.
        if n < 4_294_000_000 {
            return Some(format!("{:06}", n % 1_000_000));
        }
    }
}

fn pin_hash(salt: &[u8; 16], pin: &str) -> [u8; 32] {
    let mut b = salt.to_vec();
    b.extend_from_slice(pin.as_bytes());
    secrets::sha256(&b)
}

/// Why the studies of a new share or grant could not be looked up.
pub(crate) enum StudiesError {
    Bad(String),
    Unavailable,
}

impl From<StudiesError> for Response {
    fn from(e: StudiesError) -> Response {
        match e {
            StudiesError::Bad(m) => bad(&m),
            StudiesError::Unavailable => unavailable(),
        }
    }
}

/// An exact patient ID: no wildcards, no lists (PS3.4 C.2.2.2).
pub(crate) fn check_patient_id(pid: &str) -> Result<(), String> {
    if pid.is_empty()
        || pid.len() > 64
        || pid
            .chars()
            .any(|c| c.is_control() || matches!(c, '*' | '?' | '\\'))
    {
        return Err("patient must be a patient ID without wildcards".into());
    }
    Ok(())
}

/// The studies matching one key at study level, as far as `who` may see.
pub(crate) async fn studies_where(
    archive: &Archive,
    tag: u32,
    value: &str,
    who: &Principal,
) -> Result<Vec<String>, StudiesError> {
    let mut q = StudyQuery::new(Level::Study);
    q.add_key(tag, value)
        .map_err(|e| StudiesError::Bad(format!("{e}")))?;
    let found = archive.find(&q).await.map_err(|e| {
        tracing::warn!(error = %e, "share: study lookup failed");
        StudiesError::Unavailable
    })?;
    Ok(found
        .matches
        .into_iter()
        .filter_map(|m| m.study)
        .filter(|s| who.may_on_study(Permission::Read, &s.study_instance_uid))
        .map(|s| s.study_instance_uid.as_str().to_owned())
        .collect())
}

async fn api_create(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    headers: HeaderMap,
    Json(n): Json<NewShare>,
) -> Response {
    let who = p
        .map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(None));
    let archive = &access.inner.archive;
    let Some(store) = archive.credentials() else {
        return unavailable();
    };
    let cfg = access.inner.config.shares;
    let days = n.expires_in_days.unwrap_or(cfg.default_days);
    if let Some(partner) = n.partner {
        if n.pin {
            return bad(
                "a partner grant has no PIN: the partner signs in with its own credentials",
            );
        }
        let spec = crate::grants::GrantSpec {
            partner,
            study: n.study,
            patient: n.patient,
            days,
        };
        return match crate::grants::create(archive, &who, spec, cfg.max_days).await {
            Ok(g) => (StatusCode::CREATED, Json(crate::grants::grant_json(&g))).into_response(),
            Err(e) => e.into_response(),
        };
    }
    if days < 1 || days > cfg.max_days {
        return bad(&format!(
            "expires_in_days must be between 1 and {} ([auth] share_max_days)",
            cfg.max_days
        ));
    }
    let (studies, patient) = match (n.study.as_deref(), n.patient.as_deref()) {
        (Some(s), None) => {
            let Ok(uid) = Uid::parse(s) else {
                return bad("study is not a valid UID");
            };
            if !who.may_on_study(Permission::Read, &uid) {
                return (StatusCode::FORBIDDEN, "you may not read this study\n").into_response();
            }
            match studies_where(archive, 0x0020_000D, uid.as_str(), &who).await {
                Ok(v) if !v.is_empty() => (v, None),
                Ok(_) => return (StatusCode::NOT_FOUND, "no such study\n").into_response(),
                Err(r) => return r.into(),
            }
        }
        (None, Some(pid)) => {
            if let Err(m) = check_patient_id(pid) {
                return bad(&m);
            }
            match studies_where(archive, 0x0010_0020, pid, &who).await {
                Ok(v) if !v.is_empty() => (v, Some(pid.to_owned())),
                Ok(_) => {
                    return (StatusCode::NOT_FOUND, "no study of this patient\n").into_response()
                }
                Err(r) => return r.into(),
            }
        }
        _ => return bad("give either \"study\" (a Study Instance UID) or \"patient\" (an ID)"),
    };
    let (Ok(token), Ok(id_bytes), Ok(salt_bytes)) = (
        secrets::random_secret(),
        secrets::random_bytes(9),
        secrets::random_bytes(16),
    ) else {
        return unavailable();
    };
    let token = format!("{SHARE_PREFIX}{token}");
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id_bytes);
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&salt_bytes);
    let pin = if n.pin { new_pin() } else { None };
    if n.pin && pin.is_none() {
        return unavailable();
    }
    let now = now_secs();
    let share = ShareRecord {
        id: id.clone(),
        secret_sha256: secrets::sha256(token.as_bytes()),
        studies,
        patient,
        creator: who.name.clone(),
        created: now,
        expires: now.saturating_add(days.saturating_mul(86_400)),
        revoked: None,
        uses: 0,
        pin_sha256: pin.as_deref().map(|p| pin_hash(&salt, p)),
        pin_salt: pin.as_ref().map(|_| salt),
        failed_pins: 0,
        locked_until: None,
    };
    let e = share_event(
        AuditEventId::Export,
        AuditAction::Create,
        AuditOutcome::Success,
        CREATED,
        &share,
        user_actor(&who),
    );
    if !record(archive, e).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit record could not be written, so no link was made\n",
        )
            .into_response();
    }
    match store.insert_share(share.clone()).await {
        Ok(true) => {}
        Ok(false) => return (StatusCode::CONFLICT, "try again\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "share not stored");
            return unavailable();
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "url": link_url(&access, &headers, &token),
            "token": token,
            "pin": pin,
            "expires": share.expires,
            "studies": share.studies,
            "qr": format!("/s/{token}/qr.svg"),
        })),
    )
        .into_response()
}

/// The link's address as the client reached this server (the Host was
/// checked against `allowed_hosts` before any handler runs).
fn link_url(access: &Access, headers: &HeaderMap, token: &str) -> String {
    let scheme = if access.inner.config.https {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}/s/{token}")
}

fn may_manage(who: &Principal, share: &ShareRecord) -> bool {
    who.may(Permission::Administer) || who.name == share.creator
}

/// Shares one `GET /api/v1/shares` lists unless told otherwise.
const LIST_DEFAULT: usize = 100;
/// The most shares one listing gives.
const LIST_MAX: usize = 1_000;
/// Shares read from the store at a time while filling a page.
const LIST_BATCH: usize = 500;

/// The query of `GET /api/v1/shares`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// The shares the caller may manage (an administrator: all), by id, a
/// page at a time: `?limit=` (default [`LIST_DEFAULT`], at most
/// [`LIST_MAX`]) and `?after=` (the last id of the page before, which the
/// `Link: <…>; rel="next"` header names).
async fn api_list(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad("unknown query key: use limit and after");
    };
    let limit = match q.limit.as_deref() {
        None => LIST_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=LIST_MAX).contains(&n) => n,
            _ => return bad(&format!("limit must be a number from 1 to {LIST_MAX}")),
        },
    };
    let mut after = q.after.filter(|a| !a.is_empty());
    if after.as_ref().is_some_and(|a| {
        a.len() > 64
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return bad("after must be a share id");
    }
    let who = p
        .map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(None));
    let Some(store) = access.inner.archive.credentials() else {
        return unavailable();
    };
    let mut page: Vec<ShareRecord> = Vec::new();
    let mut more = false;
    'walk: loop {
        let batch = match store.shares_after(after.as_deref(), LIST_BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "shares not listed");
                return unavailable();
            }
        };
        let full = batch.len() == LIST_BATCH;
        for s in batch {
            after = Some(s.id.clone());
            if !may_manage(&who, &s) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break 'walk;
            }
            page.push(s);
        }
        if !full {
            break;
        }
    }
    let body = Json(
        page.iter()
            .map(|s| {
                json!({"id": s.id, "studies": s.studies, "patient": s.patient,
                       "creator": s.creator, "created": s.created, "expires": s.expires,
                       "revoked": s.revoked, "uses": s.uses, "pin": s.pin_sha256.is_some(),
                       "locked_until": s.locked_until})
            })
            .collect::<Vec<_>>(),
    );
    match page.last().filter(|_| more) {
        Some(last) => (
            [(
                header::LINK,
                format!(
                    "</api/v1/shares?limit={limit}&after={}>; rel=\"next\"",
                    last.id
                ),
            )],
            body,
        )
            .into_response(),
        None => body.into_response(),
    }
}

async fn api_revoke(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let who = p
        .map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(None));
    let archive = &access.inner.archive;
    let Some(store) = archive.credentials() else {
        return unavailable();
    };
    let found = match store.share(&id).await {
        Ok(found) => found,
        Err(_) => return unavailable(),
    };
    let Some(mut share) = found.filter(|s| may_manage(&who, s)) else {
        return (StatusCode::NOT_FOUND, "no such share\n").into_response();
    };
    if share.revoked.is_none() {
        share.revoked = Some(now_secs());
        let e = share_event(
            AuditEventId::SecurityAlert,
            AuditAction::Update,
            AuditOutcome::Success,
            REVOKED,
            &share,
            user_actor(&who),
        );
        if !record(archive, e).await {
            return unavailable();
        }
        let at = share.revoked.unwrap_or_default();
        if store
            .change_share(&share.id, ShareChange::Revoke { at })
            .await
            .is_err()
        {
            return unavailable();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

#[derive(Deserialize)]
struct PinForm {
    pin: String,
}

fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, Html(body)).into_response();
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    res
}

/// A page with a heading and one sentence, each as (Vietnamese, English).
fn notice_html(
    lang: Lang,
    title: (&'static str, &'static str),
    text: (&'static str, &'static str),
) -> String {
    let title = t(lang, title.0, title.1);
    page(
        lang,
        title,
        false,
        &format!("<h1>{title}</h1><p>{}</p>", t(lang, text.0, text.1)),
    )
}

fn gone_html(lang: Lang) -> String {
    notice_html(
        lang,
        (
            "Liên kết không còn hiệu lực",
            "This link is no longer valid",
        ),
        (
            "Liên kết đã hết hạn hoặc đã bị thu hồi. Xin liên hệ bệnh viện để nhận liên kết mới.",
            "It has expired or was revoked. Ask the hospital for a new link.",
        ),
    )
}

fn gone_answer(headers: &HeaderMap) -> Response {
    html(StatusCode::GONE, gone_html(lang_of(None, headers)))
}

fn not_found_html(lang: Lang) -> String {
    notice_html(
        lang,
        ("Không tìm thấy liên kết", "Link not found"),
        (
            "Hãy kiểm tra lại đường dẫn, hoặc liên hệ bệnh viện.",
            "Check the address, or ask the hospital.",
        ),
    )
}

fn lang_links(token: &str) -> String {
    format!(
        "<p class=\"langs\"><a href=\"/s/{0}?lang=vi\">Tiếng Việt</a><a href=\"/s/{0}?lang=en\">English</a></p>",
        esc(token)
    )
}

fn pin_html(lang: Lang, token: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        lang,
        t(lang, "Nhập mã PIN", "Enter the PIN"),
        false,
        &format!(
            "{}<h1>{}</h1><p>{}</p>{err}<form class=\"stack\" method=\"post\" action=\"/s/{}?lang={}\">\
             <label for=\"pin\">{}</label><input id=\"pin\" name=\"pin\" inputmode=\"numeric\" \
             autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" required autofocus>\
             <button type=\"submit\">{}</button></form>",
            lang_links(token),
            t(lang, "Kết quả chẩn đoán hình ảnh", "Your imaging results"),
            t(
                lang,
                "Nhập mã PIN 6 số in trên phiếu kết quả.",
                "Enter the 6-digit PIN printed on your result sheet."
            ),
            esc(token),
            t(lang, "vi", "en"),
            t(lang, "Mã PIN", "PIN"),
            t(lang, "Xem kết quả", "View results"),
        ),
    )
}

/// An image a Key Object Selection of a study flags (PS3.3 A.35.4): study,
/// series and SOP Instance UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyImage {
    study: String,
    series: String,
    sop: String,
}

/// The instances referenced by the Current Requested Procedure Evidence
/// Sequence (0040,A375) of a Key Object Selection's DICOM JSON (PS3.3
/// C.17.2.1: items of Referenced Series (0008,1115), each with Referenced
/// SOP (0008,1199)), within `study`.
fn kos_references(json: &[u8], study: &str) -> Vec<KeyImage> {
    let Ok(ds) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let items = |v: &serde_json::Value, tag: &str| -> Vec<serde_json::Value> {
        v.get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let first = |v: &serde_json::Value, tag: &str| -> Option<String> {
        v.get(tag)?
            .get("Value")?
            .get(0)?
            .as_str()
            .map(str::to_owned)
    };
    let mut out = Vec::new();
    for ev in items(&ds, "0040A375") {
        if first(&ev, "0020000D").as_deref() != Some(study) {
            continue;
        }
        for se in items(&ev, "00081115") {
            let Some(series) = first(&se, "0020000E") else {
                continue;
            };
            for sop in items(&se, "00081199") {
                if let Some(uid) = first(&sop, "00081155") {
                    let k = KeyImage {
                        study: study.to_owned(),
                        series: series.clone(),
                        sop: uid,
                    };
                    if Uid::parse(&k.series).is_ok()
                        && Uid::parse(&k.sop).is_ok()
                        && !out.contains(&k)
                    {
                        out.push(k);
                    }
                }
            }
        }
    }
    out
}

/// The key images of `study`: every image its Key Object Selection
/// documents (modality KO) reference, in order.
async fn key_images(archive: &Archive, study: &str) -> Vec<KeyImage> {
    let mut q = StudyQuery::new(Level::Series);
    if q.add_key(0x0020_000D, study).is_err() || q.add_key(0x0008_0060, "KO").is_err() {
        return Vec::new();
    }
    let Ok(found) = archive.find(&q).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for series in found.matches.into_iter().filter_map(|m| m.series) {
        let Ok(objects) = archive
            .instances_of_series(&series.series_instance_uid)
            .await
        else {
            continue;
        };
        for o in objects {
            if let Ok(json) = archive.instance_metadata(&o.sop_instance_uid).await {
                for k in kos_references(&json, study) {
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
            }
        }
    }
    out
}

/// The WADO-RS rendered JPEG of an instance (PS3.18 10.4.1.1.3), as a
/// download link.
fn jpeg_link(k: &KeyImage, n: usize, label: &str) -> String {
    format!(
        "<a class=\"btn key\" href=\"/dicom-web/studies/{}/series/{}/instances/{}/rendered?accept=image/jpeg\" \
         download=\"key-image-{n}.jpg\">{} {n}</a>",
        esc(&k.study),
        esc(&k.series),
        esc(&k.sop),
        esc(label),
    )
}

fn study_html(lang: Lang, token: &str, share: &ShareRecord, keys: &[Vec<KeyImage>]) -> String {
    let mut items = String::new();
    for (i, s) in share.studies.iter().enumerate() {
        let u = esc(s);
        let key_links: String = keys
            .get(i)
            .map(|ks| {
                ks.iter()
                    .enumerate()
                    .map(|(n, k)| {
                        jpeg_link(k, n + 1, t(lang, "Ảnh chính (JPEG)", "Key image (JPEG)"))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let key_block = if key_links.is_empty() {
            format!(
                "<p class=\"hint\">{}</p>",
                t(
                    lang,
                    "Trong trình xem, nút JPEG lưu ảnh đang xem.",
                    "In the viewer, the JPEG button saves the image on screen."
                )
            )
        } else {
            format!("<p class=\"keys\">{key_links}</p>")
        };
        items.push_str(&format!(
            "<li><p>{} {}</p><p><a class=\"btn\" href=\"/viewer?StudyInstanceUIDs={u}\">{}</a> \
             <a class=\"btn\" href=\"/dicom-web/studies/{u}?accept=application/zip\" download>{}</a></p>{key_block}</li>",
            t(lang, "Ca chụp", "Study"),
            i + 1,
            t(lang, "Xem ảnh", "View images"),
            t(lang, "Tải về (ZIP)", "Download (ZIP)"),
        ));
    }
    page(
        lang,
        t(lang, "Kết quả chẩn đoán hình ảnh", "Your imaging results"),
        false,
        &format!(
            "<style>.btn{{display:inline-block;min-height:44px;padding:.7rem 1rem;background:#1f6feb;\
             color:#fff;border-radius:.4rem;text-decoration:none;margin:.25rem 0}}ul{{padding:0;list-style:none}}</style>\
             {}<h1>{}</h1><p>{}</p><ul>{items}</ul>",
            lang_links(token),
            t(lang, "Kết quả chẩn đoán hình ảnh", "Your imaging results"),
            t(
                lang,
                "Ảnh DICOM có thể tải về để mang đến bệnh viện khác.",
                "Download the DICOM images to take them to another hospital."
            ),
        ),
    )
}

/// Swaps the link for a share cookie and shows the study page.
async fn admit(
    access: &Access,
    share: ShareRecord,
    token: &str,
    lang: Lang,
    address: Option<IpAddr>,
) -> Response {
    let archive = &access.inner.archive;
    let Some(store) = archive.credentials() else {
        return unavailable();
    };
    let cfg = access.inner.config.shares;
    let left = Duration::from_secs(share.expires.saturating_sub(now_secs()));
    let lasts = cfg.session.min(left);
    let Some(c) = access.start_share_cookie(share.secret_sha256, lasts).await else {
        return unavailable();
    };
    let mut keys = Vec::with_capacity(share.studies.len());
    for s in &share.studies {
        keys.push(key_images(archive, s).await);
    }
    let body = study_html(lang, token, &share, &keys);
    if !used(archive, store.as_ref(), &share, address, "page").await {
        return unavailable();
    }
    let mut res = html(StatusCode::OK, body);
    let secure = if access.inner.config.https {
        "; Secure"
    } else {
        ""
    };
    set_cookie(
        &mut res,
        &format!(
            "{SHARE_COOKIE}={c}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            lasts.as_secs()
        ),
    );
    res
}

async fn lookup(access: &Access, token: &str, lang: Lang) -> Result<ShareRecord, Response> {
    let Some(store) = access.inner.archive.credentials() else {
        return Err(html(StatusCode::NOT_FOUND, not_found_html(lang)));
    };
    match check(store.as_ref(), token).await? {
        Check::Valid(s) => Ok(*s),
        Check::Unknown => Err(html(StatusCode::NOT_FOUND, not_found_html(lang))),
        Check::Gone => Err(html(StatusCode::GONE, gone_html(lang))),
    }
}

async fn open_page(
    State(access): State<Access>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    req: Request,
) -> Response {
    let lang = lang_of(q.lang.as_deref(), req.headers());
    let share = match lookup(&access, &token, lang).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if share.pin_sha256.is_some() {
        return html(StatusCode::OK, pin_html(lang, &token, None));
    }
    admit(&access, share, &token, lang, client_address(&req)).await
}

async fn pin_page(
    State(access): State<Access>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    req: Request,
) -> Response {
    let lang = lang_of(q.lang.as_deref(), req.headers());
    let address = PeerAddress(client_address(&req));
    let Ok(Form(f)) = Form::<PinForm>::from_request(req, &()).await else {
        return html(StatusCode::BAD_REQUEST, pin_html(lang, &token, None));
    };
    let share = match lookup(&access, &token, lang).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(want), Some(salt)) = (share.pin_sha256, share.pin_salt) else {
        return admit(&access, share, &token, lang, address.0).await;
    };
    let archive = &access.inner.archive;
    let Some(store) = archive.credentials() else {
        return unavailable();
    };
    let too_many = || {
        html(
            StatusCode::TOO_MANY_REQUESTS,
            pin_html(
                lang,
                &token,
                Some(t(
                    lang,
                    "Nhập sai quá nhiều lần. Hãy thử lại sau.",
                    "Too many wrong PINs. Try again later.",
                )),
            ),
        )
    };
    // The attempt is counted (atomically, for every node) before the PIN
    // is checked, so attempts sent at once, to one node or several, get
    // no more checks than `pin_attempts` in a row.
    let cfg = access.inner.config.shares;
    let now = now_secs();
    let lock_until = now.saturating_add(cfg.pin_lock.as_secs());
    let attempt = ShareChange::PinAttempt {
        now,
        attempts: cfg.pin_attempts,
        lock_until,
    };
    let share = match store.change_share(&share.id, attempt).await {
        Ok(Some((s, true))) => s,
        Ok(Some((_, false))) => return too_many(),
        Ok(None) => return html(StatusCode::NOT_FOUND, not_found_html(lang)),
        Err(e) => {
            tracing::warn!(error = %e, "share store unavailable");
            return unavailable();
        }
    };
    let pin = f.pin.trim();
    if pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()) && pin_hash(&salt, pin) == want {
        if store
            .change_share(&share.id, ShareChange::PinRight)
            .await
            .is_err()
        {
            return unavailable();
        }
        return admit(&access, share, &token, lang, address.0).await;
    }
    // This attempt was the last one allowed: it locked PIN entry.
    if share.locked_until == Some(lock_until) {
        let e = share_event(
            AuditEventId::SecurityAlert,
            AuditAction::Execute,
            AuditOutcome::MinorFailure,
            PIN_LOCKED,
            &share,
            share_actor(&share, address.0),
        )
        .describe(format!("{} wrong PINs", cfg.pin_attempts));
        record(archive, e).await;
        return too_many();
    }
    html(
        StatusCode::UNAUTHORIZED,
        pin_html(
            lang,
            &token,
            Some(t(lang, "Mã PIN không đúng.", "Wrong PIN.")),
        ),
    )
}

/// The client's address, kept before the body is consumed.
#[derive(Clone, Copy)]
struct PeerAddress(Option<IpAddr>);

pub(crate) fn registered(access: &Access) -> Arc<dyn Resolver> {
    Arc::new(TokenResolver {
        archive: access.inner.archive.clone(),
    })
}

/// The QR code of a valid link, as SVG, to print on the result sheet (only
/// the token's holder can ask for it: the token is not stored).
async fn qr_svg(
    State(access): State<Access>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(None, &headers);
    if let Err(r) = lookup(&access, &token, lang).await {
        return r;
    }
    let url = link_url(&access, &headers, &token);
    match qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(256, 256)
                .build();
            ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the link\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_object_references_are_read_from_the_evidence_sequence() {
        let json = br#"{"0040A375": {"vr": "SQ", "Value": [
            {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
             "00081115": {"vr": "SQ", "Value": [
                {"0020000E": {"vr": "UI", "Value": ["1.2.3.1"]},
                 "00081199": {"vr": "SQ", "Value": [
                    {"00081155": {"vr": "UI", "Value": ["1.2.3.1.7"]}},
                    {"00081155": {"vr": "UI", "Value": ["../etc"]}}]}}]}},
            {"0020000D": {"vr": "UI", "Value": ["9.9"]},
             "00081115": {"vr": "SQ", "Value": [
                {"0020000E": {"vr": "UI", "Value": ["9.9.1"]},
                 "00081199": {"vr": "SQ", "Value": [
                    {"00081155": {"vr": "UI", "Value": ["9.9.1.1"]}}]}}]}}]}}"#;
        assert_eq!(
            kos_references(json, "1.2.3"),
            vec![KeyImage {
                study: "1.2.3".into(),
                series: "1.2.3.1".into(),
                sop: "1.2.3.1.7".into(),
            }],
            "another study's references and non-UIDs are left out"
        );
        assert!(kos_references(b"not json", "1.2.3").is_empty());
    }
}
