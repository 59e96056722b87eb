//! `/api/v1/orders`: the order (worklist step) API for EMRs that do not
//! speak HL7. JSON in and out; every field is checked against its DICOM
//! grammar (`OrderRecord::validate`) before anything is written.
//!
//! - `POST /api/v1/orders`: create (201 with the order; 409 when the
//!   accession number and SPS ID are taken).
//! - `GET /api/v1/orders?status=&modality=&station_ae_title=&accession_number=&patient_id=&date_from=&date_to=&source=&limit=`
//!   (`accession_number` may list several, comma-separated)
//! - `GET /api/v1/orders/{id}`, `PATCH /api/v1/orders/{id}` (the fields
//!   given replace the stored ones), `DELETE /api/v1/orders/{id}`.
//!
//! Who may call what is in `access::policy::ROUTES`; each call is audited
//! here as Order Record (110109) with the principal, and refused with 503
//! when that record cannot be written.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pacs_core::audit::{AuditAction, AuditActor};
use pacs_core::orders::{
    order_event, record, OrderError, OrderFilter, OrderRecord, OrderSource, OrderStatus,
    OtherPatientId,
};
use pacs_core::{Archive, Principal};
use serde::Deserialize;
use serde_json::{json, Value};

/// The most orders one listing returns.
const MAX_LIST: usize = 10_000;
/// The most accession numbers one listing filters on (`a,b,c`: the study
/// list asks for the orders of the page it shows).
const MAX_ACCESSIONS: usize = 500;

pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/api/v1/orders", get(list).post(create))
        .route("/api/v1/orders/{id}", get(read).patch(patch).delete(remove))
        .with_state(archive)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtherIdBody {
    id: String,
    #[serde(default)]
    issuer: String,
}

/// The fields a client may send; absent ones stay as they are (PATCH) or
/// empty (POST).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    patient_id: Option<String>,
    issuer_of_patient_id: Option<String>,
    other_patient_ids: Option<Vec<OtherIdBody>>,
    patient_name: Option<String>,
    patient_birth_date: Option<String>,
    patient_sex: Option<String>,
    accession_number: Option<String>,
    referring_physician_name: Option<String>,
    requested_procedure_id: Option<String>,
    requested_procedure_description: Option<String>,
    study_instance_uid: Option<String>,
    placer_order_number: Option<String>,
    filler_order_number: Option<String>,
    sps_id: Option<String>,
    sps_description: Option<String>,
    modality: Option<String>,
    station_ae_title: Option<String>,
    station_name: Option<String>,
    location: Option<String>,
    start_date: Option<String>,
    start_time: Option<String>,
    performing_physician_name: Option<String>,
    status: Option<String>,
}

impl OrderBody {
    fn apply(self, o: &mut OrderRecord) -> Result<(), String> {
        let set = |dst: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *dst = v.trim().to_owned();
            }
        };
        set(&mut o.patient_id, self.patient_id);
        set(&mut o.issuer_of_patient_id, self.issuer_of_patient_id);
        if let Some(ids) = self.other_patient_ids {
            o.other_patient_ids = ids
                .into_iter()
                .map(|i| OtherPatientId {
                    id: i.id.trim().to_owned(),
                    issuer: i.issuer.trim().to_owned(),
                })
                .collect();
        }
        set(&mut o.patient_name, self.patient_name);
        set(&mut o.patient_birth_date, self.patient_birth_date);
        set(&mut o.patient_sex, self.patient_sex);
        set(&mut o.accession_number, self.accession_number);
        set(
            &mut o.referring_physician_name,
            self.referring_physician_name,
        );
        set(&mut o.requested_procedure_id, self.requested_procedure_id);
        set(
            &mut o.requested_procedure_description,
            self.requested_procedure_description,
        );
        set(&mut o.study_instance_uid, self.study_instance_uid);
        set(&mut o.placer_order_number, self.placer_order_number);
        set(&mut o.filler_order_number, self.filler_order_number);
        set(&mut o.sps_id, self.sps_id);
        set(&mut o.sps_description, self.sps_description);
        set(&mut o.modality, self.modality);
        set(&mut o.station_ae_title, self.station_ae_title);
        set(&mut o.station_name, self.station_name);
        set(&mut o.location, self.location);
        set(&mut o.start_date, self.start_date);
        set(&mut o.start_time, self.start_time);
        set(
            &mut o.performing_physician_name,
            self.performing_physician_name,
        );
        if let Some(s) = self.status {
            o.status = OrderStatus::parse(&s).ok_or_else(|| {
                format!(
                    "status {s:?} is not one of scheduled, in_progress, completed, discontinued, cancelled"
                )
            })?;
        }
        Ok(())
    }
}

/// The JSON form of an order.
pub fn order_json(o: &OrderRecord) -> Value {
    json!({
        "id": o.id,
        "patient_id": o.patient_id,
        "issuer_of_patient_id": o.issuer_of_patient_id,
        "other_patient_ids": o.other_patient_ids.iter()
            .map(|p| json!({"id": p.id, "issuer": p.issuer})).collect::<Vec<_>>(),
        "patient_name": o.patient_name,
        "patient_birth_date": o.patient_birth_date,
        "patient_sex": o.patient_sex,
        "accession_number": o.accession_number,
        "referring_physician_name": o.referring_physician_name,
        "requested_procedure_id": o.requested_procedure_id,
        "requested_procedure_description": o.requested_procedure_description,
        "study_instance_uid": o.study_instance_uid,
        "placer_order_number": o.placer_order_number,
        "filler_order_number": o.filler_order_number,
        "sps_id": o.sps_id,
        "sps_description": o.sps_description,
        "modality": o.modality,
        "station_ae_title": o.station_ae_title,
        "station_name": o.station_name,
        "location": o.location,
        "start_date": o.start_date,
        "start_time": o.start_time,
        "performing_physician_name": o.performing_physician_name,
        "status": o.status.as_str(),
        "source": o.source.as_str(),
        "created": o.created,
        "updated": o.updated,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn order_error(e: OrderError) -> Response {
    match e {
        OrderError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        e @ OrderError::Duplicate { .. } => error(StatusCode::CONFLICT, e.to_string()),
        e @ OrderError::Final(_) => error(StatusCode::CONFLICT, e.to_string()),
        OrderError::NotFound => error(StatusCode::NOT_FOUND, "no such order"),
        e @ OrderError::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        OrderError::Audit(e) => {
            tracing::error!(error = %e, "order request refused: its audit record could not be written");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail cannot be written",
            )
        }
        OrderError::Port(e) => {
            tracing::warn!(error = %e, "order store failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order store is unavailable",
            )
        }
    }
}

pub(crate) fn actor(p: Option<Extension<Principal>>) -> AuditActor {
    let who = p
        .map(|Extension(p)| p)
        .unwrap_or_else(|| Principal::unauthenticated(None));
    AuditActor {
        user_id: who.name.clone(),
        role: who.role.map(|r| r.as_str().to_owned()),
        address: who.address.map(|a| a.to_string()),
        requestor: true,
        ..AuditActor::default()
    }
}

fn body(b: Result<Json<OrderBody>, JsonRejection>) -> Result<OrderBody, String> {
    b.map(|Json(b)| b).map_err(|e| e.body_text())
}

async fn create(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    b: Result<Json<OrderBody>, JsonRejection>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let mut order = OrderRecord {
        source: OrderSource::Rest,
        ..OrderRecord::default()
    };
    if let Err(m) = b.apply(&mut order) {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let result = async {
        order.validate()?;
        let store = archive.orders().ok_or(OrderError::Unavailable)?;
        let created = store.insert(order).await?;
        record(
            &archive,
            order_event(
                AuditAction::Create,
                &created,
                actor(principal),
                "order created",
            ),
        )
        .await?;
        Ok::<_, OrderError>(created)
    }
    .await;
    match result {
        Ok(o) => (StatusCode::CREATED, Json(order_json(&o))).into_response(),
        Err(e) => order_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    modality: Option<String>,
    station_ae_title: Option<String>,
    accession_number: Option<String>,
    patient_id: Option<String>,
    date_from: Option<String>,
    date_to: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
}

fn filter(p: ListParams) -> Result<OrderFilter, String> {
    let date = |name: &str, v: Option<String>| match v {
        Some(d) if !pacs_core::orders::is_valid_date(&d) => {
            Err(format!("{name} {d:?} is not a date YYYYMMDD"))
        }
        other => Ok(other),
    };
    Ok(OrderFilter {
        status: p
            .status
            .map(|s| OrderStatus::parse(&s).ok_or_else(|| format!("unknown status {s:?}")))
            .transpose()?,
        modality: p.modality,
        station_ae_title: p.station_ae_title,
        accession_numbers: p
            .accession_number
            .map(|a| {
                a.split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .take(MAX_ACCESSIONS)
                    .collect()
            })
            .unwrap_or_default(),
        patient_id: p.patient_id,
        date_from: date("date_from", p.date_from)?,
        date_to: date("date_to", p.date_to)?,
        source: p
            .source
            .map(|s| OrderSource::parse(&s).ok_or_else(|| format!("unknown source {s:?}")))
            .transpose()?,
        limit: Some(p.limit.unwrap_or(MAX_LIST).min(MAX_LIST)),
    })
}

async fn list(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let filter = match filter(params) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let result = async {
        let store = archive.orders().ok_or(OrderError::Unavailable)?;
        let found = store.list(&filter).await?;
        // One Order Record read per listing, naming every patient shown.
        let mut event = pacs_core::AuditEvent::new(
            pacs_core::audit::AuditEventId::OrderRecord,
            AuditAction::Read,
            pacs_core::audit::AuditOutcome::Success,
        )
        .describe("orders listed")
        .actor(actor(principal));
        let patients: std::collections::BTreeSet<&str> =
            found.iter().map(|o| o.patient_id.as_str()).collect();
        for p in patients {
            event = event.object(pacs_core::audit::AuditObject::Patient {
                id: p.to_owned(),
                name: None,
            });
        }
        record(&archive, event).await?;
        Ok::<_, OrderError>(found)
    }
    .await;
    match result {
        Ok(found) => Json(Value::Array(found.iter().map(order_json).collect())).into_response(),
        Err(e) => order_error(e),
    }
}

async fn read(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let store = archive.orders().ok_or(OrderError::Unavailable)?;
        let order = store.get(&id).await?.ok_or(OrderError::NotFound)?;
        record(
            &archive,
            order_event(AuditAction::Read, &order, actor(principal), "order read"),
        )
        .await?;
        Ok::<_, OrderError>(order)
    }
    .await;
    match result {
        Ok(o) => Json(order_json(&o)).into_response(),
        Err(e) => order_error(e),
    }
}

async fn patch(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    b: Result<Json<OrderBody>, JsonRejection>,
) -> Response {
    let b = match body(b) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let result = async {
        let store = archive.orders().ok_or(OrderError::Unavailable)?;
        let old = store.get(&id).await?.ok_or(OrderError::NotFound)?;
        let mut new = old.clone();
        b.apply(&mut new).map_err(OrderError::Invalid)?;
        new.validate()?;
        // A completed, discontinued or cancelled step does not change.
        if old.status.is_final() && new != old {
            return Err(OrderError::Final(old.status.as_str()));
        }
        let saved = store.replace(new).await?;
        let what = if saved.status != old.status {
            format!(
                "order changed; status {} -> {}",
                old.status.as_str(),
                saved.status.as_str()
            )
        } else {
            "order changed".to_owned()
        };
        record(
            &archive,
            order_event(AuditAction::Update, &saved, actor(principal), &what),
        )
        .await?;
        Ok::<_, OrderError>(saved)
    }
    .await;
    match result {
        Ok(o) => Json(order_json(&o)).into_response(),
        Err(e) => order_error(e),
    }
}

async fn remove(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let store = archive.orders().ok_or(OrderError::Unavailable)?;
        let gone = store.remove(&id).await?.ok_or(OrderError::NotFound)?;
        record(
            &archive,
            order_event(
                AuditAction::Delete,
                &gone,
                actor(principal),
                "order removed",
            ),
        )
        .await?;
        Ok::<_, OrderError>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => order_error(e),
    }
}
