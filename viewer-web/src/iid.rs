//! IHE Invoke Image Display (IID, RAD-106): the launch link of EMRs.
//!
//! `GET /IHEInvokeImageDisplay?requestType=STUDY&studyUID=<uid>[,<uid>...]`,
//! `requestType=STUDY&accessionNumber=<acc>[,<acc>...]` and
//! `requestType=PATIENT&patientID=<id>` look the studies up in the archive and
//! answer `302 Found` into the viewer: `/viewer?StudyInstanceUIDs=<uid>&...`
//! (PATIENT: every study of the patient, newest first). A request the
//! archive cannot answer gets a small HTML page saying why: 400 for a
//! malformed request, 404 when no such study or patient is archived.

use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use pacs_core::dicom::tags;
use pacs_core::query::{Level, Query};
use pacs_core::records::StudyRecord;
use pacs_core::{Archive, Uid};

/// Most studies one link may name, and most a PATIENT link opens.
pub const MAX_STUDIES: usize = 50;

/// A failed launch: the status and the sentence shown to the doctor.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn missing(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::NOT_FOUND,
        message: message.into(),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "IID lookup failed");
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "The archive could not be searched right now. Try again in a moment.".into(),
    }
}

pub async fn invoke_image_display(
    State(archive): State<Archive>,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
) -> Response {
    match resolve(&archive, &params).await {
        Ok(uids) => {
            let mut location = String::from("/viewer?");
            for (i, uid) in uids.iter().enumerate() {
                if i > 0 {
                    location.push('&');
                }
                location.push_str("StudyInstanceUIDs=");
                // UIDs are digits and dots: nothing to escape.
                location.push_str(uid.as_str());
            }
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        Err(r) => (r.status, page(r.status, &r.message)).into_response(),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The studies a request names, in the order the viewer should show them.
pub async fn resolve(archive: &Archive, params: &[(String, String)]) -> Result<Vec<Uid>, Refusal> {
    let request_type = param(params, "requestType").ok_or_else(|| {
        bad("The link has no requestType: use requestType=STUDY or requestType=PATIENT.")
    })?;
    if request_type.eq_ignore_ascii_case("STUDY") {
        if let Some(list) = param(params, "studyUID") {
            let uids = split_list(list)?
                .into_iter()
                .map(|s| {
                    Uid::parse(s)
                        .map_err(|e| bad(format!("studyUID {s:?} is not a valid UID: {e}.")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut unknown = Vec::new();
            for uid in &uids {
                if studies(archive, tags::STUDY_INSTANCE_UID, uid.as_str())
                    .await?
                    .is_empty()
                {
                    unknown.push(uid.as_str().to_owned());
                }
            }
            if !unknown.is_empty() {
                return Err(missing(format!(
                    "No study with StudyInstanceUID {} is archived here.",
                    unknown.join(", ")
                )));
            }
            return Ok(dedup(uids));
        }
        if let Some(list) = param(params, "accessionNumber") {
            let mut found = Vec::new();
            for acc in split_list(list)? {
                check_value("accessionNumber", acc, 16)?;
                let rows = studies(archive, tags::ACCESSION_NUMBER, acc).await?;
                if rows.is_empty() {
                    return Err(missing(format!(
                        "No study with accession number {acc:?} is archived here."
                    )));
                }
                found.extend(newest_first(rows));
            }
            return Ok(dedup(found));
        }
        return Err(bad(
            "requestType=STUDY needs studyUID=<uid>[,<uid>] or accessionNumber=<number>.",
        ));
    }
    if request_type.eq_ignore_ascii_case("PATIENT") {
        let raw = param(params, "patientID")
            .ok_or_else(|| bad("requestType=PATIENT needs patientID=<id>."))?;
        // CX: ID^^^&issuer&ISO; the ID is the first component.
        let id = raw.split('^').next().unwrap_or("").trim();
        check_value("patientID", id, 64)?;
        let mut rows = studies(archive, tags::PATIENT_ID, id).await?;
        if rows.is_empty() {
            return Err(missing(format!(
                "No study of a patient with ID {id:?} is archived here."
            )));
        }
        if let Some(m) = param(params, "modalitiesInStudy") {
            let wanted: Vec<&str> = m.split(',').map(str::trim).collect();
            rows.retain(|s| wanted.iter().any(|w| s.modalities.contains_key(*w)));
        }
        let lower = date_param(params, "lowerDateTime")?;
        let upper = date_param(params, "upperDateTime")?;
        rows.retain(|s| {
            lower.as_deref().is_none_or(|l| s.study_date.as_str() >= l)
                && upper.as_deref().is_none_or(|u| s.study_date.as_str() <= u)
        });
        let mut uids = newest_first(rows);
        if let Some(n) = param(params, "mostRecentResults") {
            let n: usize = n
                .parse()
                .map_err(|_| bad("mostRecentResults must be a whole number."))?;
            uids.truncate(n);
        }
        if uids.is_empty() {
            return Err(missing(format!(
                "The patient with ID {id:?} has no study matching this link's filters."
            )));
        }
        uids.truncate(MAX_STUDIES);
        return Ok(uids);
    }
    Err(bad(format!(
        "requestType={request_type:?} is not supported: use STUDY or PATIENT."
    )))
}

fn split_list(list: &str) -> Result<Vec<&str>, Refusal> {
    let items: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(bad("The list of values is empty."));
    }
    if items.len() > MAX_STUDIES {
        return Err(bad(format!(
            "A link may name at most {MAX_STUDIES} studies."
        )));
    }
    Ok(items)
}

/// An ID used as an exact match key: no wildcards, no multi-value separator.
fn check_value(name: &str, v: &str, max: usize) -> Result<(), Refusal> {
    if v.is_empty() {
        return Err(bad(format!("{name} is empty.")));
    }
    if v.chars().count() > max {
        return Err(bad(format!("{name} is longer than {max} characters.")));
    }
    if v.chars()
        .any(|c| c == '*' || c == '?' || c == '\\' || c.is_control())
    {
        return Err(bad(format!(
            "{name} may not contain '*', '?', '\\' or control characters."
        )));
    }
    Ok(())
}

/// `2026-01-31` or `2026-01-31T08:00:00` → `20260131`.
fn date_param(params: &[(String, String)], name: &str) -> Result<Option<String>, Refusal> {
    let Some(v) = param(params, name) else {
        return Ok(None);
    };
    let digits: String = v
        .split('T')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "{name} must be an ISO 8601 date or date-time such as 2026-01-31T08:00:00."
        )));
    }
    Ok(Some(digits))
}

async fn studies(archive: &Archive, tag: u32, value: &str) -> Result<Vec<StudyRecord>, Refusal> {
    let mut q = Query::new(Level::Study);
    q.add_key(tag, value)
        .map_err(|e| bad(format!("{value:?} cannot be searched for: {e}.")))?;
    let found = archive.find(&q).await.map_err(internal)?;
    Ok(found.matches.into_iter().filter_map(|m| m.study).collect())
}

fn newest_first(mut rows: Vec<StudyRecord>) -> Vec<Uid> {
    rows.sort_by(|a, b| {
        (b.study_date.as_str(), b.study_time.as_str())
            .cmp(&(a.study_date.as_str(), a.study_time.as_str()))
    });
    rows.into_iter().map(|s| s.study_instance_uid).collect()
}

fn dedup(uids: Vec<Uid>) -> Vec<Uid> {
    let mut out: Vec<Uid> = Vec::with_capacity(uids.len());
    for u in uids {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page a doctor sees when a launch link cannot be opened.
fn page(status: StatusCode, message: &str) -> Html<String> {
    let (title_en, title_vi) = if status == StatusCode::NOT_FOUND {
        ("Study not found", "Không tìm thấy ca chụp")
    } else if status == StatusCode::BAD_REQUEST {
        ("The link is not valid", "Liên kết không hợp lệ")
    } else {
        (
            "The archive is not available",
            "Hệ thống lưu trữ tạm thời không phản hồi",
        )
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Sen PACS: {title_en}</title><link rel=\"icon\" type=\"image/svg+xml\" href=\"/favicon.svg\">\
<style>body{{background:#0f1115;color:#e6e8eb;font:16px/1.5 system-ui,sans-serif;margin:0;padding:2rem}}\
main{{max-width:40rem;margin:auto}}h1{{font-size:1.4rem}}p.vi{{color:#9aa3ad}}a{{color:#6cb6ff}}</style>\
</head><body><main><h1>{title_en}</h1><p class=\"vi\" lang=\"vi\">{title_vi}</p>\
<p id=\"message\">{}</p><p><a href=\"/\">Study list / Danh sách ca chụp</a></p></main></body></html>",
        escape(message)
    ))
}
