//! Partner-hospital grants: DICOMweb read access (QIDO-RS, WADO-RS, the
//! study ZIP) to some studies for a partner principal, i.e. a local user,
//! machine token or OpenID Connect client of role `partner` with the
//! grant's partner name.
//!
//! - `POST /api/v1/shares` with `{"study": UID, "partner": NAME,
//!   "expires_in_days": N}` (or `"patient"` instead of `"study"`) makes a
//!   grant; `GET /api/v1/grants` lists them, `DELETE /api/v1/grants/{id}`
//!   revokes one. `pacs grant add|list|revoke` does the same on a stopped
//!   server's data dir.
//! - A partner principal's scope is the union of its live grants, read on
//!   every request, so revocation and expiry take effect at once. The
//!   archive handle of the request is confined to that scope (see
//!   `pacs_core::Archive::scoped`), and the route policy refuses a study
//!   outside it before any handler runs.
//! - Creation and revocation are audited (`SEN-GRANT-CREATED`,
//!   `SEN-GRANT-REVOKED`); every use is the request's own audit record
//!   (query or instances accessed), which names the partner and the grants
//!   that allowed it, and counts in the grants' `uses`.
//!
//! Non-goals: DIMSE access for partners (their PACS pulls over DICOMweb);
//! grants to principals of another role (they see every study anyway).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use pacs_core::access::{Permission, PrincipalKind, Role, StudyScope};
use pacs_core::audit::{
    AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::credentials::GrantRecord;
use pacs_core::{Archive, Principal, Uid};
use serde_json::json;

use crate::shares::{now_secs, studies_where, user_actor, StudiesError};
use crate::{secrets, Access};

const CREATED: (&str, &str) = ("SEN-GRANT-CREATED", "Partner grant created");
const REVOKED: (&str, &str) = ("SEN-GRANT-REVOKED", "Partner grant revoked");

/// Why a grant was not made or revoked (mapped to HTTP by the routes and
/// to messages by the CLI).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for GrantError {
    fn into_response(self) -> Response {
        let status = match &self {
            GrantError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GrantError::Forbidden(_) => StatusCode::FORBIDDEN,
            GrantError::NotFound(_) => StatusCode::NOT_FOUND,
            GrantError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// What a new grant covers.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    pub partner: String,
    /// A Study Instance UID, or `None` with `patient` set.
    pub study: Option<String>,
    pub patient: Option<String>,
    pub days: u64,
}

fn grant_event(
    action: AuditAction,
    (code, meaning): (&str, &str),
    g: &GrantRecord,
    who: &Principal,
) -> AuditEvent {
    let mut e = AuditEvent::new(AuditEventId::Export, action, AuditOutcome::Success)
        .event_type(code, meaning)
        .actor(user_actor(who))
        .actor(AuditActor {
            user_id: g.partner.clone(),
            alt_user_id: None,
            role: Some(Role::Partner.as_str().to_owned()),
            address: None,
            requestor: false,
        })
        .object(AuditObject::Other {
            kind: "grant".into(),
            id: g.id.clone(),
        });
    if let Some(p) = &g.patient {
        e = e.object(AuditObject::Patient {
            id: p.clone(),
            name: None,
        });
    }
    for s in &g.studies {
        e = e.object(AuditObject::Study { uid: s.clone() });
    }
    e
}

fn store_error(e: impl std::fmt::Display) -> GrantError {
    tracing::warn!(error = %e, "grant store unavailable");
    GrantError::Unavailable("the grant store is unavailable".into())
}

/// Makes a grant for `spec` on behalf of `who` (who must be able to read
/// the studies), audits it, and stores it. `max_days` bounds its validity.
pub async fn create(
    archive: &Archive,
    who: &Principal,
    spec: GrantSpec,
    max_days: u64,
) -> Result<GrantRecord, GrantError> {
    let store = archive
        .credentials()
        .ok_or_else(|| GrantError::Unavailable("no credential store".into()))?;
    if spec.days < 1 || spec.days > max_days {
        return Err(GrantError::BadRequest(format!(
            "expires_in_days must be between 1 and {max_days} ([auth] share_max_days)"
        )));
    }
    crate::accounts::check_name(&spec.partner)
        .map_err(|e| GrantError::BadRequest(format!("partner: {e}")))?;
    let (studies, patient) = match (spec.study.as_deref(), spec.patient.as_deref()) {
        (Some(s), None) => {
            let uid = Uid::parse(s)
                .map_err(|_| GrantError::BadRequest("study is not a valid UID".into()))?;
            if !who.may_on_study(Permission::Read, &uid) {
                return Err(GrantError::Forbidden("you may not read this study".into()));
            }
            match studies_where(archive, 0x0020_000D, uid.as_str(), who).await {
                Ok(v) if !v.is_empty() => (v, None),
                Ok(_) => return Err(GrantError::NotFound("no such study".into())),
                Err(e) => return Err(from_studies(e)),
            }
        }
        (None, Some(pid)) => {
            crate::shares::check_patient_id(pid).map_err(GrantError::BadRequest)?;
            match studies_where(archive, 0x0010_0020, pid, who).await {
                Ok(v) if !v.is_empty() => (v, Some(pid.to_owned())),
                Ok(_) => return Err(GrantError::NotFound("no study of this patient".into())),
                Err(e) => return Err(from_studies(e)),
            }
        }
        _ => {
            return Err(GrantError::BadRequest(
                "give either \"study\" (a Study Instance UID) or \"patient\" (an ID)".into(),
            ))
        }
    };
    let id_bytes = secrets::random_bytes(9)
        .map_err(|_| GrantError::Unavailable("the random source failed".into()))?;
    let now = now_secs();
    let grant = GrantRecord {
        id: format!(
            "g{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id_bytes)
        ),
        partner: spec.partner,
        studies,
        patient,
        creator: who.name.clone(),
        created: now,
        expires: now.saturating_add(spec.days.saturating_mul(86_400)),
        revoked: None,
        uses: 0,
    };
    archive
        .audit()
        .record(grant_event(AuditAction::Create, CREATED, &grant, who))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit record not written");
            GrantError::Unavailable(
                "the audit record could not be written, so no grant was made".into(),
            )
        })?;
    match store.insert_grant(grant.clone()).await {
        Ok(true) => Ok(grant),
        Ok(false) => Err(GrantError::Unavailable("try again".into())),
        Err(e) => Err(store_error(e)),
    }
}

fn from_studies(e: StudiesError) -> GrantError {
    match e {
        StudiesError::Bad(m) => GrantError::BadRequest(m),
        StudiesError::Unavailable => GrantError::Unavailable("the archive is unavailable".into()),
    }
}

/// Whether `who` may see and revoke `g`.
fn may_manage(who: &Principal, g: &GrantRecord) -> bool {
    who.may(Permission::Administer) || who.name == g.creator
}

/// Every grant `who` may manage.
pub async fn list(archive: &Archive, who: &Principal) -> Result<Vec<GrantRecord>, GrantError> {
    let store = archive
        .credentials()
        .ok_or_else(|| GrantError::Unavailable("no credential store".into()))?;
    let all = store.grants().await.map_err(store_error)?;
    Ok(all.into_iter().filter(|g| may_manage(who, g)).collect())
}

/// Revokes grant `id` (audited); `NotFound` when `who` may not manage it.
pub async fn revoke(archive: &Archive, who: &Principal, id: &str) -> Result<(), GrantError> {
    let store = archive
        .credentials()
        .ok_or_else(|| GrantError::Unavailable("no credential store".into()))?;
    let all = store.grants().await.map_err(store_error)?;
    let Some(mut g) = all
        .into_iter()
        .find(|g| g.id == id)
        .filter(|g| may_manage(who, g))
    else {
        return Err(GrantError::NotFound("no such grant".into()));
    };
    if g.revoked.is_some() {
        return Ok(());
    }
    g.revoked = Some(now_secs());
    archive
        .audit()
        .record(grant_event(AuditAction::Update, REVOKED, &g, who))
        .await
        .map_err(|_| GrantError::Unavailable("the audit record could not be written".into()))?;
    store.update_grant(g).await.map_err(store_error)?;
    Ok(())
}

/// The JSON of a grant in answers and listings.
pub(crate) fn grant_json(g: &GrantRecord) -> serde_json::Value {
    json!({"id": g.id, "partner": g.partner, "studies": g.studies, "patient": g.patient,
           "creator": g.creator, "created": g.created, "expires": g.expires,
           "revoked": g.revoked, "uses": g.uses})
}

/// Whether `p` is a partner whose scope comes from grants.
pub(crate) fn is_partner(p: &Principal) -> bool {
    p.role == Some(Role::Partner)
        && matches!(
            p.kind,
            PrincipalKind::User | PrincipalKind::Token | PrincipalKind::Oidc
        )
}

impl Access {
    /// The live grants of partner `name` and the scope they make.
    pub(crate) async fn partner_scope(
        &self,
        name: &str,
    ) -> Result<(StudyScope, Vec<GrantRecord>), Response> {
        let Some(store) = self.inner.archive.credentials() else {
            return Ok((StudyScope::Studies(BTreeSet::new()), Vec::new()));
        };
        let now = now_secs();
        let live: Vec<GrantRecord> = store
            .grants()
            .await
            .map_err(|e| store_error(e).into_response())?
            .into_iter()
            .filter(|g| g.partner == name && g.revoked.is_none() && g.expires > now)
            .collect();
        let studies = live
            .iter()
            .flat_map(|g| g.studies.iter())
            .filter_map(|s| Uid::parse(s).ok())
            .collect();
        Ok((StudyScope::Studies(studies), live))
    }

    /// Counts a use of each grant in `used` (best effort: the request's
    /// audit record is the account of the use).
    pub(crate) async fn count_grant_uses(&self, used: Vec<GrantRecord>) {
        let Some(store) = self.inner.archive.credentials() else {
            return;
        };
        for mut g in used {
            g.uses = g.uses.saturating_add(1);
            if let Err(e) = store.update_grant(g).await {
                tracing::warn!(error = %e, "grant use not counted");
            }
        }
    }
}

pub(crate) fn router(access: Access) -> Router {
    Router::new()
        .route("/api/v1/grants", get(api_list))
        .route("/api/v1/grants/{id}", delete(api_revoke))
        .with_state(access)
}

fn principal(p: Option<Extension<Principal>>) -> Principal {
    p.map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(None))
}

async fn api_list(State(access): State<Access>, p: Option<Extension<Principal>>) -> Response {
    match list(&access.inner.archive, &principal(p)).await {
        Ok(all) => Json(all.iter().map(grant_json).collect::<Vec<_>>()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_revoke(
    State(access): State<Access>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    match revoke(&access.inner.archive, &principal(p), &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
