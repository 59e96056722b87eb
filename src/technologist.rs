//! `GET /technologist`: the technologist's page. One day's worklist, grouped
//! by modality and room, each exam with how far it has gone: scheduled, in
//! progress (MPPS), completed, images received (the index holds instances
//! of its study) and committed (Storage Commitment reports delivered to
//! the modality said every one of those instances was committed).
//! Vietnamese and English labels, a layout for tablets, and a refresh
//! every 30 seconds.
//!
//! - `?date=YYYYMMDD` (default: today on the server's clock, local time),
//!   `?modality=CT` to keep one modality.
//!
//! The page lists patients, so it needs the Read permission and is audited
//! as an Order Record read naming them (as `GET /api/v1/orders` is).
//!
//! Where the images of an exam are found: its order's Study Instance UID
//! (the one the worklist gave the modality), and the series an MPPS linked
//! to the step (a modality that made up its own study UID).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use pacs_core::audit::{AuditAction, AuditEventId, AuditObject, AuditOutcome};
use pacs_core::jobs::{JobPageQuery, JobState};
use pacs_core::orders::{record, OrderFilter, OrderRecord, OrderStatus};
use pacs_core::{Archive, Principal, Uid};
use serde::Deserialize;

/// The most exams one page shows.
const MAX_EXAMS: usize = 2_000;

pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/technologist", get(page))
        .with_state(archive)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    date: Option<String>,
    modality: Option<String>,
}

/// How far an exam has gone, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Cancelled,
    Discontinued,
    Scheduled,
    InProgress,
    Completed,
    ImagesReceived,
    Committed,
}

impl Stage {
    fn key(self) -> &'static str {
        match self {
            Stage::Cancelled => "cancelled",
            Stage::Discontinued => "discontinued",
            Stage::Scheduled => "scheduled",
            Stage::InProgress => "in_progress",
            Stage::Completed => "completed",
            Stage::ImagesReceived => "images_received",
            Stage::Committed => "committed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stage::Cancelled => "Đã huỷ / Cancelled",
            Stage::Discontinued => "Dừng giữa chừng / Discontinued",
            Stage::Scheduled => "Đã hẹn / Scheduled",
            Stage::InProgress => "Đang chụp / In progress",
            Stage::Completed => "Đã chụp xong / Completed",
            Stage::ImagesReceived => "Đã nhận ảnh / Images received",
            Stage::Committed => "Đã xác nhận lưu / Committed",
        }
    }
}

/// One exam as the page shows it.
struct Exam {
    order: OrderRecord,
    instances: usize,
    stage: Stage,
}

/// Today's date on the server's clock (local time), `YYYYMMDD`.
fn today() -> String {
    chrono::Local::now().format("%Y%m%d").to_string()
}

async fn page(
    State(archive): State<Archive>,
    principal: Option<Extension<Principal>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            "unknown key: use date=YYYYMMDD and modality",
        )
            .into_response();
    };
    let date = match params.date.filter(|d| !d.trim().is_empty()) {
        Some(d) if pacs_core::orders::is_valid_date(d.trim()) => d.trim().to_owned(),
        Some(_) => return (StatusCode::BAD_REQUEST, "date must be YYYYMMDD").into_response(),
        None => today(),
    };
    let modality = params
        .modality
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty());
    if modality
        .as_deref()
        .is_some_and(|m| m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return (
            StatusCode::BAD_REQUEST,
            "modality is a DICOM code such as CT",
        )
            .into_response();
    }
    let Some(store) = archive.orders() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this archive keeps no orders",
        )
            .into_response();
    };
    let filter = OrderFilter {
        modality: modality.clone(),
        date_from: Some(date.clone()),
        date_to: Some(date.clone()),
        limit: Some(MAX_EXAMS),
        ..OrderFilter::default()
    };
    let orders = match store.list(&filter).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "technologist page: orders unreadable");
            return (StatusCode::SERVICE_UNAVAILABLE, "the orders cannot be read").into_response();
        }
    };
    let exams = match exams(&archive, &date, orders).await {
        Ok(e) => e,
        Err(m) => {
            tracing::error!(error = %m, "technologist page: exam state unreadable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the exams' state cannot be read",
            )
                .into_response();
        }
    };

    let mut event = pacs_core::AuditEvent::new(
        AuditEventId::OrderRecord,
        AuditAction::Read,
        AuditOutcome::Success,
    )
    .describe("technologist worklist page")
    .actor(crate::orders_api::actor(principal));
    let patients: BTreeSet<&str> = exams.iter().map(|e| e.order.patient_id.as_str()).collect();
    for p in patients {
        event = event.object(AuditObject::Patient {
            id: p.to_owned(),
            name: None,
        });
    }
    if record(&archive, event).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written",
        )
            .into_response();
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        render(&date, modality.as_deref(), &exams),
    )
        .into_response()
}

/// Storage Commitment reports created this long before the page's day
/// still count (an exam done ahead of its scheduled day).
const REPORTS_BEFORE_DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Local midnight starting `date` (`YYYYMMDD`), in ms since the epoch.
fn day_start_ms(date: &str) -> Option<u64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    let local = day
        .and_hms_opt(0, 0, 0)?
        .and_local_timezone(chrono::Local)
        .earliest()?;
    u64::try_from(local.timestamp_millis()).ok()
}

/// Each order with its images and stage. Reads the MPPS naming each
/// order's accession number, its studies' records, and the Storage
/// Commitment reports delivered since the day before `date` (each keeps
/// which instances it said were committed, by study): the page costs its
/// own exams, not the archive's history nor their images.
async fn exams(
    archive: &Archive,
    date: &str,
    orders: Vec<OrderRecord>,
) -> Result<Vec<Exam>, String> {
    let workflow = archive.workflow();
    let since = day_start_ms(date).map_or(0, |d| d.saturating_sub(REPORTS_BEFORE_DAY_MS));
    let reports = workflow
        .jobs
        .page(&JobPageQuery {
            kind: Some(dimse_scp::commitment::JOB_KIND.to_owned()),
            state: Some(JobState::Done),
            before: None,
            created_since_ms: Some(since),
            limit: usize::MAX,
        })
        .await
        .map_err(|e| e.to_string())?;
    let delivered = dimse_scp::commitment::delivered(&reports.jobs);
    let mut committed = delivered.committed;
    // Reports delivered by an older build name their instances only: each
    // one's study is looked up (they leave the window within two days).
    for sop in delivered.unresolved {
        let Ok(uid) = Uid::parse(&sop) else {
            continue;
        };
        match archive.instance(&uid).await {
            Ok(r) => {
                *committed
                    .entry(r.study_instance_uid.as_str().to_owned())
                    .or_default() += 1;
            }
            Err(pacs_core::ArchiveError::NotFound(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut out = Vec::with_capacity(orders.len());
    for order in orders {
        // The studies of this step: the worklist's, and those of the series
        // an MPPS for the step reported.
        let mut studies: BTreeSet<String> = BTreeSet::new();
        if !order.study_instance_uid.is_empty() {
            studies.insert(order.study_instance_uid.clone());
        }
        let mpps = if order.accession_number.is_empty() {
            Vec::new()
        } else {
            workflow
                .mpps
                .of_accession(&order.accession_number)
                .await
                .map_err(|e| e.to_string())?
        };
        for m in &mpps {
            let names_step = m.steps.iter().any(|s| {
                s.accession_number == order.accession_number
                    && (s.scheduled_procedure_step_id.is_empty()
                        || s.scheduled_procedure_step_id == order.sps_id)
            });
            if !names_step {
                continue;
            }
            for series in &m.series_uids {
                let Ok(series) = Uid::parse(series) else {
                    continue;
                };
                if let Some(r) = archive.series(&series).await.map_err(|e| e.to_string())? {
                    studies.insert(r.study_instance_uid.as_str().to_owned());
                }
            }
        }
        // Images: the studies' counters. Committed: every study's count
        // of instances reported committed reaches its count of instances.
        // (An instance deleted after its report still counts, so a study
        // that lost one committed instance and gained an uncommitted one
        // the same day would show committed.)
        let mut instances = 0usize;
        let mut all_committed = true;
        for study in &studies {
            let Ok(uid) = Uid::parse(study) else {
                continue;
            };
            let Some(record) = archive.study(&uid).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let held = record.num_instances as usize;
            instances += held;
            if committed.get(study).copied().unwrap_or(0) < held {
                all_committed = false;
            }
        }
        let mut stage = match order.status {
            OrderStatus::Cancelled => Stage::Cancelled,
            OrderStatus::Discontinued => Stage::Discontinued,
            OrderStatus::Scheduled => Stage::Scheduled,
            OrderStatus::InProgress => Stage::InProgress,
            OrderStatus::Completed => Stage::Completed,
        };
        if stage >= Stage::Scheduled && instances > 0 {
            stage = if all_committed {
                Stage::Committed
            } else {
                Stage::ImagesReceived
            };
        }
        out.push(Exam {
            order,
            instances,
            stage,
        });
    }
    Ok(out)
}

fn render(date: &str, modality: Option<&str>, exams: &[Exam]) -> String {
    // Modality, then room (location, else station name, else station AE).
    let mut groups: BTreeMap<(String, String), Vec<&Exam>> = BTreeMap::new();
    for e in exams {
        let o = &e.order;
        let room = [&o.location, &o.station_name, &o.station_ae_title]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        groups
            .entry((o.modality.clone(), room))
            .or_default()
            .push(e);
    }
    let mut body = String::new();
    if exams.is_empty() {
        body.push_str("<p class=\"empty\">Không có ca chụp / No exams</p>");
    }
    for ((modality, room), list) in &groups {
        let _ = write!(
            body,
            "<section class=\"group\" data-modality=\"{}\" data-room=\"{}\"><h2>{} — {}</h2>\
             <table><thead><tr><th>Giờ / Time</th><th>Bệnh nhân / Patient</th>\
             <th>Mã BN / Patient ID</th><th>Số phiếu / Accession</th><th>Chỉ định / Procedure</th>\
             <th>Ảnh / Images</th><th>Trạng thái / Status</th></tr></thead><tbody>",
            esc(modality),
            esc(room),
            esc(if modality.is_empty() { "?" } else { modality }),
            esc(if room.is_empty() { "?" } else { room }),
        );
        for e in list {
            let o = &e.order;
            let time = match o.start_time.get(..4) {
                Some(t) => format!("{}:{}", &t[..2], &t[2..]),
                None => String::new(),
            };
            let procedure = if o.requested_procedure_description.is_empty() {
                &o.sps_description
            } else {
                &o.requested_procedure_description
            };
            let _ = write!(
                body,
                "<tr class=\"exam\" data-accession=\"{}\" data-stage=\"{}\"><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td class=\"images\">{}</td>\
                 <td><span class=\"stage {}\">{}</span></td></tr>",
                esc(&o.accession_number),
                e.stage.key(),
                esc(&time),
                esc(&o.patient_name.replace('^', " ")),
                esc(&o.patient_id),
                esc(&o.accession_number),
                esc(procedure),
                e.instances,
                e.stage.key(),
                e.stage.label(),
            );
        }
        body.push_str("</tbody></table></section>");
    }
    let shown = format!(
        "{}-{}-{}",
        date.get(..4).unwrap_or(""),
        date.get(4..6).unwrap_or(""),
        date.get(6..8).unwrap_or("")
    );
    format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>Danh sách chụp / Worklist</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:.8rem;font-size:1.05rem}}\
         form{{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}}label{{display:flex;flex-direction:column}}\
         input,button{{font-size:1.05rem;padding:.4rem}}h2{{font-size:1.15rem;margin:1rem 0 .3rem}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.45rem .3rem;text-align:left}}\
         .stage{{padding:.15rem .45rem;border-radius:.3rem;white-space:nowrap}}\
         .scheduled{{background:#eee}}.in_progress{{background:#fde68a}}.completed{{background:#bfdbfe}}\
         .images_received{{background:#c7f9cc}}.committed{{background:#34d399}}.cancelled,.discontinued{{background:#fecaca}}\
         @media (max-width:700px){{th:nth-child(3),td:nth-child(3),th:nth-child(5),td:nth-child(5){{display:none}}}}</style>\
         </head><body><h1>Danh sách chụp / Worklist — <span class=\"date\">{shown}</span></h1>\
         <form method=\"get\" action=\"/technologist\">\
         <label>Ngày / Date (YYYYMMDD)<input name=\"date\" value=\"{}\"></label>\
         <label>Thiết bị / Modality<input name=\"modality\" value=\"{}\"></label>\
         <button>Xem / Show</button></form>{body}</body></html>",
        esc(date),
        esc(modality.unwrap_or("")),
    )
}

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    crate::audit::html_escape(s)
}
