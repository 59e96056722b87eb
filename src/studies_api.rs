//! `/api/v1/studies`: deleting a study or one of its series while the
//! server runs (the same removal as the offline `pacs delete`).
//!
//! - `DELETE /api/v1/studies/{study}`: every instance of the study.
//! - `DELETE /api/v1/studies/{study}/series/{series}`: every instance of
//!   one series of the study.
//!
//! Answers: 200 `{"deleted": N, "study": …, "series"?: …}` once the index
//! entries and the objects are gone (on several nodes sharing one index and
//! one object store, from every node at once); 400 for a value that is not
//! a UID; 404 when the archive holds nothing of it; 503 when the index or
//! the storage cannot be reached, or the audit record cannot be written
//! after the deletion (the body says so). Who may call them is in
//! `access::policy::ROUTES` (administrators); each deletion is audited as
//! Instances Accessed (110103) with action Delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use axum::{Extension, Json, Router};
use pacs_core::audit::{
    AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::{Archive, Principal, Uid};
use serde_json::json;
use tracing::{info, warn};

use crate::orders_api::actor;

pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/api/v1/studies/{study}", delete(delete_study))
        .route(
            "/api/v1/studies/{study}/series/{series}",
            delete(delete_series),
        )
        .with_state(archive)
}

/// The audit record of a deletion of `n` instances of a study, a series or
/// an instance (`what`), by `actor`. Shared with `pacs delete`.
pub(crate) fn deletion_event(what: &str, uid: &Uid, n: u64, actor: AuditActor) -> AuditEvent {
    let object = match what {
        "study" => AuditObject::Study {
            uid: uid.to_string(),
        },
        _ => AuditObject::Other {
            kind: if what == "series" {
                "Series".to_owned()
            } else {
                "SOP Instance".to_owned()
            },
            id: uid.to_string(),
        },
    };
    AuditEvent::new(
        AuditEventId::InstancesAccessed,
        AuditAction::Delete,
        AuditOutcome::Success,
    )
    .describe(format!("deleted {n} instances of {what} {uid}"))
    .actor(actor)
    .object(object)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The UID of a path segment, or the message of a 400 answer.
fn parse_uid(raw: &str, what: &str) -> Result<Uid, String> {
    Uid::parse(raw).map_err(|_| format!("the {what} in the path is not a DICOM UID"))
}

async fn delete_study(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(study): Path<String>,
) -> Response {
    let study = match parse_uid(&study, "Study Instance UID") {
        Ok(u) => u,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let n = match archive.delete_study(&study).await {
        Ok(n) => n,
        Err(e) => {
            warn!(study = %study, error = %e, "study deletion failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the study could not be deleted: {e}"),
            );
        }
    };
    if n == 0 {
        return error(StatusCode::NOT_FOUND, "the archive holds no such study");
    }
    finish(
        &archive,
        principal,
        "study",
        &study,
        n,
        json!({ "study": study.to_string() }),
    )
    .await
}

async fn delete_series(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let study = match parse_uid(&study, "Study Instance UID") {
        Ok(u) => u,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let series = match parse_uid(&series, "Series Instance UID") {
        Ok(u) => u,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    // The series must be one of the study's: a path naming another
    // study's series deletes nothing.
    match archive.instances_of_series(&series).await {
        Ok(found) if found.iter().any(|r| r.study_instance_uid == study) => {}
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "the archive holds no such series in this study",
            )
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the index cannot be read: {e}"),
            )
        }
    }
    let n = match archive.delete_series(&series).await {
        Ok(n) => n,
        Err(e) => {
            warn!(series = %series, error = %e, "series deletion failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the series could not be deleted: {e}"),
            );
        }
    };
    if n == 0 {
        return error(
            StatusCode::NOT_FOUND,
            "the archive holds no such series in this study",
        );
    }
    let body = json!({ "study": study.to_string(), "series": series.to_string() });
    finish(&archive, principal, "series", &series, n, body).await
}

async fn finish(
    archive: &Archive,
    principal: Option<Extension<Principal>>,
    what: &str,
    uid: &Uid,
    n: u64,
    mut body: serde_json::Value,
) -> Response {
    let who = actor(principal);
    info!(what, uid = %uid, instances = n, user = %who.user_id, "deleted");
    if let Err(e) = archive
        .audit()
        .record(deletion_event(what, uid, n, who))
        .await
    {
        warn!(error = %e, "the audit record of a deletion could not be written");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{n} instances were deleted, but the audit record could not be written: {e}"),
        );
    }
    body["deleted"] = json!(n);
    Json(body).into_response()
}
