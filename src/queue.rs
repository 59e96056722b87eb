//! `pacs queue` and `/api/v1/queue`: the durable job queue seen by an
//! operator (list, retry a dead job, delete one). With the sled index the
//! CLI works on the data dir while `pacs serve` is stopped (the database
//! admits one process; while it runs, the HTTP routes do the same); on
//! PostgreSQL the queue is shared by every node, and the CLI and any
//! node's routes see and change the same jobs.

use std::process::ExitCode;

use anyhow::Result;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use clap::Subcommand;
use pacs_core::jobs::{Job, JobQueue};
use pacs_core::Archive;
use serde_json::json;

use crate::config::Config;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List the jobs (queued, running, done, dead).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
        QueueCommand::List { json } => {
            let jobs = queue.list().await?;
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

async fn list(State(archive): State<Archive>) -> Response {
    match archive.workflow().jobs.list().await {
        Ok(jobs) => Json(jobs.iter().map(job_json).collect::<Vec<_>>()).into_response(),
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
