//! The audit trail in the binary: the log opened by `pacs serve`, the
//! application start/stop events, `pacs audit verify|search`, and the JSON
//! search route for auditors (`GET /api/v1/audit`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::{Extension, Router};
use pacs_core::audit::{
    event_type, AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::{Archive, Permission, Principal};
use serde::Deserialize;
use serde_json::json;
use storage::audit_log::{self, AuditFilter};

use crate::config::Config;

/// Most records one HTTP search returns.
const MAX_HTTP_RESULTS: usize = 10_000;

/// Opens the audit log of `config` and makes it the archive's sink.
pub fn open(config: &Config, archive: &Archive) -> Result<()> {
    let dir = config.audit_dir();
    let log = storage::FileAuditLog::open(&dir, &config.ae_title)
        .with_context(|| format!("cannot open the audit trail in {}", dir.display()))?;
    if let Some(syslog) = &config.audit.syslog {
        forward_to_syslog(&dir, syslog, &log)?;
    }
    archive.set_audit(Arc::new(log));
    Ok(())
}

/// Starts sending the log to the `[audit] syslog_tls` collector (PS3.15
/// A.6: RFC 5424 messages over TLS, RFC 5425), spooled in the local log.
fn forward_to_syslog(
    dir: &Path,
    syslog: &crate::config::SyslogConfig,
    log: &storage::FileAuditLog,
) -> Result<()> {
    use dimse_scp::rustls::pki_types::ServerName;
    use storage::audit_syslog::{SyslogConnect, SyslogSettings, SyslogStream};

    let client = crate::tls::syslog_client_config(
        &syslog.ca_file,
        syslog.cert_file.as_deref().zip(syslog.key_file.as_deref()),
    )?;
    let name = ServerName::try_from(syslog.host.clone()).with_context(|| {
        format!(
            "[audit] syslog_tls host {:?} is not a DNS name or IP address",
            syslog.host
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let (host, port) = (syslog.host.clone(), syslog.port);
    let connect: SyslogConnect = Arc::new(move || {
        let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
        Box::pin(async move {
            let tcp = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
            let _ = tcp.set_nodelay(true);
            let tls = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                connector.connect(name, tcp),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
            Ok(Box::new(tls) as Box<dyn SyslogStream>)
        })
    });
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into());
    let settings = SyslogSettings {
        app_name: syslog.app_name.clone(),
        hostname,
        facility: syslog.facility,
        max_backlog: syslog.max_backlog,
        retry_max: syslog.retry_max,
    };
    storage::audit_syslog::spawn(dir, settings, log.written(), connect)
        .context("cannot start forwarding the audit trail to syslog")?;
    tracing::info!(collector = %format!("{}:{}", syslog.host, syslog.port), "audit trail forwarded to syslog over TLS");
    Ok(())
}

/// Application Activity (PS3.15 A.5.3.1): 110120 Application Start or
/// 110121 Application Stop.
pub fn application_activity(start: bool, ae_title: &str) -> AuditEvent {
    let kind = if start {
        event_type::APPLICATION_START
    } else {
        event_type::APPLICATION_STOP
    };
    let launcher = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    AuditEvent::new(
        AuditEventId::ApplicationActivity,
        AuditAction::Execute,
        AuditOutcome::Success,
    )
    .with_type(kind)
    .actor(AuditActor {
        user_id: ae_title.to_owned(),
        alt_user_id: Some(std::process::id().to_string()),
        role: Some("Application".into()),
        address: None,
        requestor: false,
    })
    .actor(AuditActor {
        user_id: launcher,
        role: Some("Application Launcher".into()),
        requestor: true,
        ..AuditActor::default()
    })
}

/// Records an application start or stop; a failure is logged (the server
/// still starts: PHI reads are refused while the log cannot be written).
pub async fn record_activity(archive: &Archive, start: bool, ae_title: &str) {
    if let Err(e) = archive
        .audit()
        .record(application_activity(start, ae_title))
        .await
    {
        tracing::error!(error = %e, "audit trail cannot be written: queries and retrieves will be refused");
    }
}

/// `pacs audit verify`: exit 0 when the chain holds, 1 (naming the first
/// bad line) when it does not.
pub fn verify(config: &Config, as_json: bool) -> Result<ExitCode> {
    let dir = config.audit_dir();
    let report = audit_log::verify(&dir)
        .with_context(|| format!("cannot read the audit trail in {}", dir.display()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report.broken {
            None => println!(
                "audit trail intact: {} records in {} files ({})",
                report.records,
                report.files,
                dir.display()
            ),
            Some(b) => println!(
                "audit trail BROKEN at {} line {}: {} ({} records before it verified)",
                b.file.display(),
                b.line,
                b.reason,
                report.records
            ),
        }
    }
    Ok(if report.broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A date or timestamp given to a search: `YYYY-MM-DD` or a UTC timestamp
/// as the log writes them.
fn check_date(key: &str, v: &str) -> std::result::Result<(), String> {
    let b = v.as_bytes();
    let ok = b.len() >= 10
        && b.len() <= 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b':' | b'T' | b'.' | b'Z'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {v:?} is not a date: write YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ (UTC)"
        ))
    }
}

/// The filter of a search, checked.
fn filter(p: SearchParams) -> std::result::Result<AuditFilter, String> {
    for (key, v) in [("from", &p.from), ("to", &p.to)] {
        if let Some(v) = v {
            check_date(key, v)?;
        }
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(AuditFilter {
        patient: nonempty(p.patient),
        user: nonempty(p.user),
        study: nonempty(p.study),
        from: nonempty(p.from),
        to: nonempty(p.to),
        limit: p.limit.unwrap_or(0),
    })
}

/// Search keys, from the command line or the query string.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub patient: Option<String>,
    pub user: Option<String>,
    pub study: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

/// `pacs audit search`.
pub fn search(config: &Config, params: SearchParams, as_json: bool) -> Result<ExitCode> {
    let dir = config.audit_dir();
    let filter = filter(params).map_err(anyhow::Error::msg)?;
    let found = audit_log::search(&dir, &filter)
        .with_context(|| format!("cannot read the audit trail in {}", dir.display()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for r in &found {
            println!(
                "{}\t{}\t{}\toutcome={}\tusers={}\tpatients={}\tstudies={}",
                r.seq,
                r.time,
                r.event,
                r.outcome,
                r.users.join(","),
                r.patients.join(","),
                r.studies.join(",")
            );
        }
        eprintln!("{} records", found.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct AuditRoute {
    archive: Archive,
    dir: PathBuf,
}

/// `GET /api/v1/audit?patient=&user=&study=&from=&to=&limit=`: the records
/// that match, as JSON, oldest first (at most 10 000). For principals with
/// the ReadAudit permission (auditor, admin) once authentication puts a
/// [`Principal`] in the request; each search is itself audited (Audit Log
/// Used, PS3.15 A.5.3.5) and refused when that record cannot be written.
pub fn router(archive: Archive, dir: &Path) -> Router {
    Router::new()
        .route("/api/v1/audit", get(audit_search))
        .route("/audit", get(audit_page))
        .with_state(AuditRoute {
            archive,
            dir: dir.to_path_buf(),
        })
}

/// One audit search for the JSON route and the page: checks the principal,
/// records the search itself (Audit Log Used), then reads the log.
async fn run_search(
    route: &AuditRoute,
    principal: Option<Principal>,
    params: SearchParams,
) -> std::result::Result<Vec<storage::audit_log::AuditRecord>, Response> {
    if principal
        .as_ref()
        .is_some_and(|p| !p.may(Permission::ReadAudit))
    {
        return Err((
            StatusCode::FORBIDDEN,
            "reading the audit trail needs the auditor or admin role",
        )
            .into_response());
    }
    let mut filter = match filter(params) {
        Ok(f) => f,
        Err(m) => return Err((StatusCode::BAD_REQUEST, m).into_response()),
    };
    filter.limit = match filter.limit {
        0 => MAX_HTTP_RESULTS,
        n => n.min(MAX_HTTP_RESULTS),
    };
    let who = principal.unwrap_or_else(|| Principal::unauthenticated(None));
    let used = AuditEvent::new(
        AuditEventId::AuditLogUsed,
        AuditAction::Read,
        AuditOutcome::Success,
    )
    .actor(AuditActor {
        user_id: who.name.clone(),
        role: who.role.map(|r| r.as_str().to_owned()),
        address: who.address.map(|a| a.to_string()),
        requestor: true,
        ..AuditActor::default()
    })
    .object(AuditObject::Other {
        kind: "Audit Log".into(),
        id: "audit".into(),
    });
    if let Err(e) = route.archive.audit().record(used).await {
        tracing::error!(error = %e, "audit search refused: its own audit record could not be written");
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written",
        )
            .into_response());
    }
    let dir = route.dir.clone();
    match tokio::task::spawn_blocking(move || audit_log::search(&dir, &filter)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit search failed");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail cannot be read",
            )
                .into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "audit search task failed");
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

async fn audit_search(
    State(route): State<AuditRoute>,
    principal: Option<Extension<Principal>>,
    params: std::result::Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            "unknown search key: use patient, user, study, from, to, limit",
        )
            .into_response();
    };
    match run_search(&route, principal.map(|Extension(p)| p), params).await {
        Ok(found) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(json!(found)),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `GET /audit?patient=&user=&study=&from=&to=`: the same search as a page
/// for auditors and admins (Vietnamese and English labels), newest last,
/// at most 500 rows.
async fn audit_page(
    State(route): State<AuditRoute>,
    principal: Option<Extension<Principal>>,
    params: std::result::Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(mut params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            "unknown search key: use patient, user, study, from, to, limit",
        )
            .into_response();
    };
    // Empty form fields mean "any".
    for v in [
        &mut params.patient,
        &mut params.user,
        &mut params.study,
        &mut params.from,
        &mut params.to,
    ] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *v = None;
        }
    }
    params.limit = Some(params.limit.unwrap_or(500).min(500));
    let form = params.clone();
    let found = match run_search(&route, principal.map(|Extension(p)| p), params).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let field = |name: &str, label: &str, value: &Option<String>| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\"></label>",
            html_escape(value.as_deref().unwrap_or(""))
        )
    };
    let mut rows = String::new();
    for r in &found {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&r.time),
            html_escape(&r.event),
            r.outcome,
            html_escape(&r.users.join(", ")),
            html_escape(&r.patients.join(", ")),
            html_escape(&r.studies.join(", ")),
        ));
    }
    let page = format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Nhật ký truy cập / Audit trail</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1rem}}label{{display:inline-block;margin:0 .5rem .5rem 0}}\
         input{{display:block}}table{{border-collapse:collapse;font-size:.9rem}}td,th{{border:1px solid #ccc;padding:.2rem .4rem;text-align:left}}</style>\
         </head><body><h1>Nhật ký truy cập / Audit trail</h1>\
         <form method=\"get\" action=\"/audit\">{}{}{}{}{}<button>Tìm / Search</button></form>\
         <p class=\"count\">{} bản ghi / records</p>\
         <table><thead><tr><th>Thời điểm / Time</th><th>Sự kiện / Event</th><th>Kết quả / Outcome</th>\
         <th>Người dùng / Users</th><th>Bệnh nhân / Patients</th><th>Ca chụp / Studies</th></tr></thead>\
         <tbody>{rows}</tbody></table></body></html>",
        field("patient", "Mã bệnh nhân / Patient ID", &form.patient),
        field("user", "Người dùng / User", &form.user),
        field("study", "Study Instance UID", &form.study),
        field("from", "Từ ngày / From (YYYYMMDD)", &form.from),
        field("to", "Đến ngày / To (YYYYMMDD)", &form.to),
        found.len(),
    );
    (
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        page,
    )
        .into_response()
}

/// Text for HTML content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
