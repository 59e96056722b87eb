//! `pacs queue` and `/api/v1/queue`: the durable job queue seen by an
//! operator (list, retry a dead job, delete one). With the sled index the
//! CLI works on the data dir while `pacs serve` is stopped (the database
//! admits one process; while it runs, the HTTP routes do the same); on
//! PostgreSQL the queue is shared by every node, and the CLI and any
//! node's routes see and change the same jobs.

use std::process::ExitCode;

use anyhow::Result;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use clap::Subcommand;
use pacs_core::jobs::{Job, JobPageQuery, JobQueue, JobState};
use pacs_core::Archive;
use serde::Deserialize;
use serde_json::json;

/// Jobs one listing shows unless told otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// The most jobs one listing shows.
const MAX_LIMIT: u32 = 1_000;

use crate::config::Config;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List the jobs (queued, running, done, dead), newest first.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Only jobs in this state.
        #[arg(long, value_parser = ["queued", "running", "done", "dead"])]
        state: Option<String>,
        /// Only jobs of this kind (e.g. stgcmt-report, forward, hl7-notify).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=MAX_LIMIT as i64))]
        limit: u32,
        /// Only jobs with a smaller id (the next page: the id printed at the end of the page before).
        #[arg(long)]
        before: Option<u64>,
    },
    /// Queue a job again now, its attempts reset (a dead-lettered job).
    Retry { id: u64 },
    /// Delete a job.
    Delete { id: u64 },
}

async fn open(config: &Config) -> Result<JobQueue> {
    Ok(JobQueue::new(
        crate::commands::open_job_store(config).await?,
        config.jobs.retry.max_attempts,
    ))
}

/// A job as JSON (the payload is the handler's; it names peers and UIDs,
/// never patient names).
fn job_json(j: &Job) -> serde_json::Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "state": j.state.as_str(),
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "destination": j.destination,
        "created_ms": j.created_ms,
        "next_run_ms": j.next_run_ms,
        "updated_ms": j.updated_ms,
        "last_error": j.last_error,
        "payload_version": j.payload_version,
        "owner": j.owner,
        "lease_until_ms": (j.lease_until_ms > 0).then_some(j.lease_until_ms),
    })
}

pub async fn queue(config: &Config, cmd: QueueCommand) -> Result<ExitCode> {
    let queue = open(config).await?;
    match cmd {
        QueueCommand::List {
            json,
            state,
            kind,
            limit,
            before,
        } => {
            let page = queue
                .page(&JobPageQuery {
                    kind,
                    state: state.as_deref().and_then(JobState::parse),
                    before,
                    created_since_ms: None,
                    limit: limit as usize,
                })
                .await?;
            let jobs = page.jobs;
            if let Some(next) = page.next {
                eprintln!("more jobs: --before {next}");
            }
            if json {
                let list: Vec<_> = jobs.iter().map(job_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("ID\tKIND\tSTATE\tATTEMPTS\tDESTINATION\tOWNER\tLAST ERROR");
                for j in &jobs {
                    println!(
                        "{}\t{}\t{}\t{}/{}\t{}\t{}\t{}",
                        j.id,
                        j.kind,
                        j.state.as_str(),
                        j.attempts,
                        j.max_attempts,
                        j.destination.as_deref().unwrap_or("-"),
                        j.owner.as_deref().unwrap_or("-"),
                        j.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Retry { id } => {
            if queue.retry(id).await? {
                println!("job {id} queued again");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no job {id} (or it is running)");
                Ok(ExitCode::from(1))
            }
        }
        QueueCommand::Delete { id } => {
            if queue.delete(id).await? {
                println!("job {id} deleted");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no job {id}");
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": format!("job queue unavailable: {e}") })),
    )
        .into_response()
}

/// The query of `GET /api/v1/queue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Reads `GET /api/v1/queue`'s query, or says what is wrong with it.
fn page_query(p: ListParams) -> Result<JobPageQuery, String> {
    let state = match p.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            JobState::parse(s)
                .ok_or_else(|| "state must be one of queued, running, done, dead".to_owned())?,
        ),
    };
    let kind = p.kind.filter(|k| !k.is_empty());
    if kind.as_ref().is_some_and(|k| {
        k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return Err("kind is a job kind such as stgcmt-report (letters, digits, - and _)".into());
    }
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT as usize,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT as usize).contains(&n) => n,
            _ => return Err(format!("limit must be a number from 1 to {MAX_LIMIT}")),
        },
    };
    let before = match p.before.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| "before must be a job id".to_owned())?,
        ),
    };
    Ok(JobPageQuery {
        kind,
        state,
        before,
        created_since_ms: None,
        limit,
    })
}

/// The jobs, newest first, a page at a time: `?state=`, `?kind=`,
/// `?limit=` (default [`DEFAULT_LIMIT`]), `?before=` (an id: the jobs
/// older than it). A `Link: <…>; rel="next"` header names the next page.
async fn list(
    State(archive): State<Archive>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("unknown query key: use state, kind, limit and before");
    };
    let q = match page_query(params) {
        Ok(q) => q,
        Err(m) => return bad_request(&m),
    };
    match archive.workflow().jobs.page(&q).await {
        Ok(page) => {
            let body = Json(page.jobs.iter().map(job_json).collect::<Vec<_>>());
            match page.next {
                Some(next) => {
                    let mut link = format!("</api/v1/queue?limit={}&before={next}", q.limit);
                    if let Some(s) = q.state {
                        link.push_str(&format!("&state={}", s.as_str()));
                    }
                    if let Some(k) = &q.kind {
                        link.push_str(&format!("&kind={k}"));
                    }
                    link.push_str(">; rel=\"next\"");
                    ([(header::LINK, link)], body).into_response()
                }
                None => body.into_response(),
            }
        }
        Err(e) => unavailable(e),
    }
}

async fn retry(State(archive): State<Archive>, Path(id): Path<u64>) -> Response {
    match archive.workflow().jobs.retry(id).await {
        Ok(true) => Json(json!({ "id": id, "state": "queued" })).into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such job, or it is running" })),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn remove(State(archive): State<Archive>, Path(id): Path<u64>) -> Response {
    match archive.workflow().jobs.delete(id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such job" })),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/queue`, `POST /api/v1/queue/{id}/retry`,
/// `DELETE /api/v1/queue/{id}` (administrators).
pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/api/v1/queue", get(list))
        .route("/api/v1/queue/{id}/retry", post(retry))
        .route("/api/v1/queue/{id}", delete(remove))
        .with_state(archive)
}
