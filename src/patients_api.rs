//! `/api/v1/patients`: demographic corrections and merges by an
//! administrator (design piece 6; the HIS does the same through HL7 ADT).
//!
//! - `PATCH /api/v1/patients/{id}`: body `{"issuer_of_patient_id"?,
//!   "patient_name"?, "patient_birth_date"?, "patient_sex"?}`; the values
//!   given replace the ones every answer shows.
//! - `POST /api/v1/patients/{id}/merge`: body `{"issuer_of_patient_id"?,
//!   "into": {"patient_id", "issuer_of_patient_id"?}, "patient_name"?, ...}`;
//!   the patient's studies and pending orders move to `into` (with the
//!   demographics given, else the survivor's).
//! - `POST /api/v1/patients/merge`: the same, naming both patients in the
//!   body: `{"surviving": {"patient_id", "issuer_of_patient_id"?},
//!   "merged": {"patient_id", "issuer_of_patient_id"?}, "patient_name"?,
//!   ...}`.
//! - `GET /api/v1/patients/{id}/history?issuer=`: the recorded changes.
//!
//! Answers: 200 with the change, 400 for a bad value, 404 when the archive
//! holds nothing of the patient, 503 when the change cannot be recorded or
//! audited. Who may call them is in `access::policy::ROUTES`
//! (administrators); each change is audited by the archive as Patient
//! Record (110110, Update).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use pacs_core::audit::{AuditAction, AuditEvent, AuditEventId, AuditObject, AuditOutcome};
use pacs_core::patients::{ChangeKind, Demographics, PatientChange, PatientError, PatientKey};
use pacs_core::{Archive, PatientChangeOutcome, PatientChangeRequest, Principal};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::orders_api::actor;

pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/api/v1/patients/{id}", patch(update))
        .route("/api/v1/patients/merge", post(merge_named))
        .route("/api/v1/patients/{id}/merge", post(merge))
        .route("/api/v1/patients/{id}/history", get(history))
        .with_state(archive)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    issuer_of_patient_id: String,
    patient_name: Option<String>,
    patient_birth_date: Option<String>,
    patient_sex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    patient_id: String,
    #[serde(default)]
    issuer_of_patient_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    #[serde(default)]
    issuer_of_patient_id: String,
    into: Target,
    patient_name: Option<String>,
    patient_birth_date: Option<String>,
    patient_sex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedMergeBody {
    surviving: Target,
    merged: Target,
    patient_name: Option<String>,
    patient_birth_date: Option<String>,
    patient_sex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    #[serde(default)]
    issuer: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn patient_error(e: PatientError) -> Response {
    match e {
        PatientError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        PatientError::NotFound => error(StatusCode::NOT_FOUND, "no such patient"),
        PatientError::Audit(e) => {
            tracing::error!(error = %e, "patient change: its audit record could not be written");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail cannot be written",
            )
        }
        e @ (PatientError::Unavailable | PatientError::Port(_) | PatientError::Archive(_)) => {
            tracing::warn!(error = %e, "patient change failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn key_json(k: &PatientKey) -> Value {
    json!({ "patient_id": k.patient_id, "issuer_of_patient_id": k.issuer })
}

fn demographics_json(d: &Demographics) -> Value {
    json!({
        "patient_name": d.name,
        "patient_birth_date": d.birth_date,
        "patient_sex": d.sex,
    })
}

fn change_json(c: &PatientChange) -> Value {
    json!({
        "id": c.id,
        "time": c.time,
        "actor": c.actor,
        "source": c.source,
        "kind": c.kind.as_str(),
        "from": key_json(&c.from),
        "into": key_json(&c.into),
        "before": demographics_json(&c.before),
        "after": demographics_json(&c.after),
    })
}

fn outcome_json(o: &PatientChangeOutcome) -> Value {
    json!({
        "change": change_json(&o.change),
        "studies": o.studies,
        "orders": o.orders,
    })
}

async fn update(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    b: Result<Json<UpdateBody>, JsonRejection>,
) -> Response {
    let b = match b {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let key = PatientKey::new(&b.issuer_of_patient_id, &id);
    let d = demographics(b.patient_name, b.patient_birth_date, b.patient_sex);
    apply(&archive, principal, ChangeKind::Update, key.clone(), key, d).await
}

async fn merge(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    b: Result<Json<MergeBody>, JsonRejection>,
) -> Response {
    let b = match b {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let from = PatientKey::new(&b.issuer_of_patient_id, &id);
    let into = PatientKey::new(&b.into.issuer_of_patient_id, &b.into.patient_id);
    let d = demographics(b.patient_name, b.patient_birth_date, b.patient_sex);
    apply(&archive, principal, ChangeKind::Merge, from, into, d).await
}

async fn merge_named(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    b: Result<Json<NamedMergeBody>, JsonRejection>,
) -> Response {
    let b = match b {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let from = PatientKey::new(&b.merged.issuer_of_patient_id, &b.merged.patient_id);
    let into = PatientKey::new(&b.surviving.issuer_of_patient_id, &b.surviving.patient_id);
    let d = demographics(b.patient_name, b.patient_birth_date, b.patient_sex);
    apply(&archive, principal, ChangeKind::Merge, from, into, d).await
}

/// The values a body sets.
fn demographics(
    name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
) -> Demographics {
    Demographics {
        name,
        birth_date,
        sex,
    }
}

/// Applies one change on behalf of the request's principal.
async fn apply(
    archive: &Archive,
    principal: Option<Extension<Principal>>,
    kind: ChangeKind,
    from: PatientKey,
    into: PatientKey,
    demographics: Demographics,
) -> Response {
    let req = PatientChangeRequest {
        kind,
        from,
        into,
        demographics,
        actor: actor(principal),
        source: "rest",
    };
    match archive.change_patient(req).await {
        Ok(o) => Json(outcome_json(&o)).into_response(),
        Err(e) => patient_error(e),
    }
}

async fn history(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let key = PatientKey::new(&params.issuer, &id);
    if let Err(e) = key.validate() {
        return patient_error(e);
    }
    let found = match archive.patient_history(&key).await {
        Ok(f) => f,
        Err(e) => return patient_error(e),
    };
    // Reading the history reads patient data: Patient Record, Read.
    let event = AuditEvent::new(
        AuditEventId::PatientRecord,
        AuditAction::Read,
        AuditOutcome::Success,
    )
    .describe("patient change history read")
    .actor(actor(principal))
    .object(AuditObject::Patient { id, name: None });
    if let Err(e) = archive.audit().record(event).await {
        return patient_error(PatientError::Audit(e.to_string()));
    }
    Json(Value::Array(found.iter().map(change_json).collect())).into_response()
}
