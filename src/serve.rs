//! `pacs serve`: opens the archive, runs recovery, optionally loads the demo
//! studies, serves HTTP (DICOMweb, viewer, health) and shuts down gracefully
//! on SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use pacs_core::Archive;
use serde_json::json;
use tracing::{info, warn};

use crate::commands::{import_into, open_archive};
use crate::config::Config;

/// The sample studies shipped in the repository.
fn demo_dir() -> PathBuf {
    std::env::var_os("PACS_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/studies"))
        })
}

async fn healthz(State(archive): State<Archive>) -> impl IntoResponse {
    match archive.health().await {
        Ok(stats) => (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "instances": stats.instances,
                "studies": stats.studies,
            })),
        ),
        Err(e) => {
            warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "degraded", "reason": e.to_string() })),
            )
        }
    }
}

async fn api_stats(State(archive): State<Archive>) -> impl IntoResponse {
    match archive.stats().await {
        Ok(s) => (StatusCode::OK, Json(json!(s))).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn shutdown_signal(tx: tokio::sync::watch::Sender<bool>) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutdown requested: finishing in-flight requests");
    let _ = tx.send(true);
}

/// Logs each answer at a level that says whether someone should look:
/// 500 (a fault of ours) at ERROR; 503 (busy, storage unavailable) at
/// WARN; 501 (a deliberate "not supported") and client errors (4xx) at
/// INFO and DEBUG; everything else at DEBUG.
fn log_response<B>(
    res: &axum::http::Response<B>,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    let status = res.status().as_u16();
    let ms = latency.as_secs_f64() * 1000.0;
    match status {
        500 => tracing::error!(status, ms, "request failed"),
        503 => tracing::warn!(status, ms, "service unavailable"),
        501 => info!(status, ms, "not supported"),
        400..=499 => tracing::debug!(status, ms, "client error"),
        _ if status >= 500 => tracing::warn!(status, ms, "server error"),
        _ => tracing::debug!(status, ms, "answered"),
    }
}

/// Statuses are logged by [`log_response`]; this logs only a body that
/// failed while streaming (e.g. a blob unreadable mid-retrieve).
fn log_failure(
    failure: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    if let tower_http::classify::ServerErrorsFailureClass::Error(e) = failure {
        warn!(error = %e, ms = latency.as_secs_f64() * 1000.0, "response body failed");
    }
}

/// Resolves once shutdown has been requested.
async fn shutdown_requested(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

pub async fn run(config: Config, demo: bool) -> Result<()> {
    if !config.http_listen.ip().is_loopback() && !config.allow_unauthenticated_http {
        bail!(
            "http_listen {} is not a loopback address, and this server has no authentication yet: \
             anyone on the network could read patient data. Put it behind a reverse proxy that \
             authenticates, or set allow_unauthenticated_http = true to accept the risk",
            config.http_listen
        );
    }
    let archive = open_archive(&config).await?;
    info!(storage = %archive.describe_storage(), data_dir = %config.data_dir.display(), "archive open");
    if demo {
        let stats = archive.stats().await?;
        if stats.instances == 0 {
            let dir = demo_dir();
            info!(dir = %dir.display(), "archive is empty: loading the demo studies");
            let report = import_into(&archive, std::slice::from_ref(&dir), 4, false)
                .await
                .with_context(|| format!("cannot load demo studies from {}", dir.display()))?;
            info!(
                imported = report.imported,
                rejected = report.rejected.len(),
                "demo studies loaded"
            );
        } else {
            info!(
                instances = stats.instances,
                "archive not empty: demo studies not loaded again"
            );
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_signal(stop_tx));

    // DIMSE first, so that /healthz answering means both listeners accept.
    let dimse_config = dimse_scp::DimseConfig {
        listen: config.dimse_listen,
        ae_title: config.ae_title.clone(),
        strict_ae: config.strict_ae,
        remote_aes: config
            .remote_ae
            .iter()
            .map(|r| dimse_scp::RemoteAe {
                ae_title: r.ae_title.clone(),
                host: r.host.clone(),
                port: r.port,
            })
            .collect(),
        limits: pacs_core::Limits {
            artim_timeout: config.artim_timeout,
            max_pending_connections: config.max_pending_connections,
            ..archive.limits().clone()
        },
        drain_timeout: config.drain_timeout,
        ..dimse_scp::DimseConfig::default()
    };
    let dimse = dimse_scp::DimseServer::bind(dimse_config)
        .await
        .with_context(|| format!("cannot start DIMSE on {}", config.dimse_listen))?;
    info!(dimse = %config.dimse_listen, ae_title = %config.ae_title, "DIMSE listening");
    let dimse_task = tokio::spawn(dimse.run(archive.clone(), shutdown_requested(stop_rx.clone())));

    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/stats", get(api_stats))
        .with_state(archive.clone())
        .nest(
            "/dicom-web",
            dicomweb::router(
                archive.clone(),
                dicomweb::DicomWebConfig {
                    cors_allowed_origins: config.cors_allowed_origins.clone(),
                    ..dicomweb::DicomWebConfig::default()
                },
            ),
        )
        .merge(dicomweb::wado_uri_router(archive.clone()))
        .merge(viewer_web::router(archive.clone()))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_response(log_response)
                .on_failure(log_failure),
        );
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running?)",
                config.http_listen
            )
        })?;
    info!(
        files = viewer_web::ASSETS.len(),
        bytes = viewer_web::BUNDLE_BYTES,
        gzip_bytes = viewer_web::BUNDLE_GZIP_BYTES,
        "viewer embedded"
    );
    info!(http = %config.http_listen, "listening; open http://{}/", config.http_listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_requested(stop_rx))
        .await
        .context("HTTP server failed")?;
    match dimse_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "DIMSE listener ended with an error"),
        Err(e) => warn!(error = %e, "DIMSE task failed"),
    }
    archive.close().await?;
    info!("archive closed cleanly");
    Ok(())
}
