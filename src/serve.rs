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

/// 200 `ok`; 200 `degraded` with a reason while stores are refused for
/// lack of free space (reads go on, so a load balancer should keep
/// sending them); 503 `degraded` when the storage cannot be reached.
/// `dependencies` reports each one the node needs (`storage`, `index`),
/// each with its own `status` (`ok` or `error`); the storage's counters
/// (multipart uploads, conditional creates that found the key taken) go
/// with it.
async fn healthz(State(archive): State<Archive>) -> impl IntoResponse {
    let (index, storage) = tokio::join!(archive.index_check(), archive.storage_check());
    let (url, counters) = archive.storage_info();
    let kind = url.split_once("://").map_or("other", |(k, _)| k);
    let mut storage_json = json!({ "status": "ok", "kind": kind });
    for (name, value) in counters {
        storage_json[name] = json!(value);
    }
    let mut index_json = json!({ "status": "ok" });
    let mut failure = None;
    if let Err(e) = &storage {
        storage_json["status"] = json!("error");
        storage_json["error"] = json!(e.to_string());
        failure = Some(e.to_string());
    }
    let stats = match index {
        Ok(s) => Some(s),
        Err(e) => {
            index_json["status"] = json!("error");
            index_json["error"] = json!(e.to_string());
            failure = Some(e.to_string());
            None
        }
    };
    let dependencies = json!({ "storage": storage_json, "index": index_json });
    match (stats, failure) {
        (Some(stats), None) => match archive.space_low() {
            None => (
                StatusCode::OK,
                Json(json!({
                    "status": "ok",
                    "instances": stats.instances,
                    "studies": stats.studies,
                    "dependencies": dependencies,
                })),
            ),
            Some(low) => (
                StatusCode::OK,
                Json(json!({
                    "status": "degraded",
                    "reason": format!(
                        "storage below the free-space watermark ({} bytes available, {} required): stores are refused",
                        low.available, low.required
                    ),
                    "stores_refused": true,
                    "free_space": { "available": low.available, "required": low.required },
                    "instances": stats.instances,
                    "studies": stats.studies,
                    "dependencies": dependencies,
                })),
            ),
        },
        (_, failure) => {
            let reason = failure.unwrap_or_default();
            warn!(error = %reason, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({ "status": "degraded", "reason": reason, "dependencies": dependencies }),
                ),
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

/// Sends `true` on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal(tx: tokio::sync::watch::Sender<bool>) {
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

/// The OpenID Connect resolver of the `[auth] oidc_*` keys.
fn oidc_resolver(o: &crate::config::OidcSettings) -> Result<access::Oidc> {
    let mut role_map = std::collections::HashMap::new();
    for (claim, role) in &o.role_map {
        let r = pacs_core::access::Role::parse(role)
            .ok_or_else(|| anyhow::anyhow!("[auth] oidc_role_map: {role:?} is not a role"))?;
        role_map.insert(claim.clone(), r);
    }
    let allowed_algs = o
        .allowed_algs
        .iter()
        .map(|a| access::OidcConfig::parse_alg(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(access::Oidc::new(access::OidcConfig {
        issuer: o.issuer.clone(),
        audience: o.audience.clone(),
        role_claim: o.role_claim.clone(),
        role_map,
        allowed_algs,
        ca_file: o.ca_file.clone(),
        client: o.client.as_ref().map(|c| access::OidcClient {
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.clone(),
            redirect_url: c.redirect_url.clone(),
            scopes: c.scopes.clone(),
            display_name: c.display_name.clone(),
        }),
    })?)
}

/// The access layer of this configuration. A listener off loopback with
/// nobody to sign in is refused, unless explicitly allowed (then warned
/// about at every start).
async fn access_layer(config: &Config, archive: &Archive) -> Result<access::Access> {
    let a = &config.auth;
    let secs = std::time::Duration::from_secs;
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let mut settings = access::AccessConfig::new(config.http_listen);
    settings.allowed_hosts = config.allowed_hosts.clone();
    settings.https = config.http_tls;
    // A configured identity provider turns authentication on.
    settings.required = a.required || a.oidc.is_some();
    settings.sessions = access::SessionConfig {
        idle: secs(a.session_idle_seconds),
        absolute: secs(a.session_absolute_seconds),
        max_sessions: count(a.max_sessions),
    };
    settings.throttle = access::ThrottleConfig {
        account_threshold: u32::try_from(a.lockout_threshold).unwrap_or(u32::MAX),
        address_threshold: u32::try_from(a.lockout_address_threshold).unwrap_or(u32::MAX),
        base: secs(a.lockout_seconds),
        max: secs(a.lockout_max_seconds),
    };
    settings.hash_concurrency = count(a.password_hash_concurrency);
    settings.min_password_len = count(a.min_password_length);
    settings.shares.max_days = a.share_max_days;
    settings.shares.default_days = settings.shares.default_days.min(a.share_max_days);
    settings.shares.pin_attempts = u32::try_from(a.share_pin_attempts).unwrap_or(u32::MAX);
    settings.shares.pin_lock = secs(a.share_pin_lock_seconds);
    settings.shares.session = secs(a.share_session_seconds);
    settings.shares.max_sessions = count(a.share_max_sessions);
    settings.static_files = viewer_web::ASSETS
        .iter()
        .map(|f| f.path.to_owned())
        .filter(|p| p != "/index.html" && !p.starts_with("/assets/"))
        .collect();
    settings.cors_allowed_origins = config.cors_allowed_origins.clone();
    let access = access::Access::new(archive.clone(), settings).await?;
    if let Some(o) = &a.oidc {
        access.add_oidc(std::sync::Arc::new(oidc_resolver(o)?));
        info!(issuer = %o.issuer, "OpenID Connect bearer tokens accepted");
        if let Some(c) = &o.client {
            info!(client_id = %c.client_id, "the viewer signs in through the identity provider");
        }
    }
    if access.enabled() {
        info!("sign-in required (users or tokens exist, or [auth] required = true)");
    } else if !config.http_listen.ip().is_loopback() {
        if !config.allow_unauthenticated_http {
            bail!(
                "http_listen {} is not a loopback address and there is no authentication (nobody \
                 can sign in): anyone on the network could read patient data. Add a user (`pacs user add NAME --role admin`), \
                 or set allow_unauthenticated_http = true to accept the risk",
                config.http_listen
            );
        }
        warn!(
            http = %config.http_listen,
            "HTTP is served off loopback WITHOUT authentication (allow_unauthenticated_http = true): \
             anyone who can reach this address can read and change patient data"
        );
    }
    Ok(access)
}

/// Resolves once shutdown has been requested.
async fn shutdown_requested(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

pub async fn run(config: Config, demo: bool) -> Result<()> {
    // An invalid hanging protocols file stops the start with the reason.
    viewer_web::hanging::load(config.hanging_protocols.as_ref())?;
    let archive = open_archive(&config).await?;
    // Access: sign-in, the route policy, security headers (the access crate).
    let access = match access_layer(&config, &archive).await {
        Ok(a) => a,
        Err(e) => {
            archive.close().await?;
            return Err(e);
        }
    };
    info!(storage = %archive.describe_storage(), data_dir = %config.data_dir.display(), "archive open");
    crate::audit::open(&config, &archive)?;
    crate::audit::record_activity(&archive, true, &config.ae_title).await;
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

    // One certificate for HTTPS and DICOM TLS, reloaded on SIGHUP.
    let certificate = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) if config.http_tls || config.dimse_tls_listen.is_some() => {
            let c = crate::tls::ReloadableCert::load(cert, key)?;
            crate::tls::reload_on_sighup(c.clone())?;
            Some(c)
        }
        _ => None,
    };
    let dimse_tls = match (config.dimse_tls_listen, &certificate) {
        (Some(listen), Some(cert)) => Some(dimse_scp::DimseTls {
            listen,
            server_config: crate::tls::dimse_config(
                cert.clone(),
                config.tls_client_ca_file.as_deref(),
            )?,
        }),
        _ => None,
    };

    // One pixel-work service (decode, render, convert) for DIMSE and HTTP:
    // its concurrency and memory bounds are global.
    let pixel = std::sync::Arc::new(imaging::service::PixelService::new(
        &pacs_core::Limits {
            render_concurrency: config.pixel_limits.render_concurrency,
            pixel_memory_budget: config.pixel_limits.pixel_memory_budget,
            pixel_queue_wait: config.pixel_limits.pixel_queue_wait,
            max_decoded_pixel_bytes: config.pixel_limits.max_decoded_pixel_bytes,
            max_inflated_object_bytes: config.pixel_limits.max_inflated_object_bytes,
            ..archive.limits().clone()
        },
        dicomweb::DicomWebConfig::default().render_cache_bytes,
    ));
    // Availability notices (IAN, "images available" to the HIS): told of
    // completed MPPS and of every stored instance (the study-stable
    // trigger).
    let availability = pacs_core::availability::Availability::start(
        archive.workflow().jobs,
        config.availability.clone(),
    )
    .await
    .context("cannot read the job queue")?;
    if config.availability.stable_after.is_some() && config.availability.is_active() {
        archive.set_store_observer(availability.clone());
    }
    if config.availability.is_active() {
        info!(
            ian_destinations = config.availability.ian_destinations.len(),
            hl7 = config.hl7_out.is_some(),
            stable_after_secs = config.availability.stable_after.map(|d| d.as_secs()),
            "availability notifications on"
        );
    }
    // DIMSE first, so that /healthz answering means both listeners accept.
    let dimse_config = dimse_scp::DimseConfig {
        listen: config.dimse_listen,
        ae_title: config.ae_title.clone(),
        // Unknown modalities stay welcome only in the demo.
        strict_ae: config.strict_ae.unwrap_or(!demo),
        remote_aes: config
            .remote_ae
            .iter()
            .map(|r| dimse_scp::RemoteAe {
                ae_title: r.ae_title.clone(),
                host: r.host.clone(),
                port: r.port,
                tls_subject: r.tls_subject.clone(),
            })
            .collect(),
        limits: pacs_core::Limits {
            artim_timeout: config.artim_timeout,
            max_pending_connections: config.max_pending_connections,
            ..archive.limits().clone()
        },
        pixel: Some(pixel.clone()),
        drain_timeout: config.drain_timeout,
        tls: dimse_tls,
        // MPPS moves the order steps it names, then (COMPLETED) queues
        // the availability notices.
        step_status: pacs_core::mpps::StepStatusHook(std::sync::Arc::new(
            pacs_core::mpps::SinkFanout(vec![
                std::sync::Arc::new(pacs_core::orders::OrderStepStatus::new(archive.clone())),
                availability.clone(),
            ]),
        )),
        ..dimse_scp::DimseConfig::default()
    };
    // The durable job queue's runner: storage commitment reports (and the
    // other kinds as they come) resume here after a restart.
    let owner = job_owner(&config.data_dir)?;
    info!(
        owner = owner.id(),
        lease_secs = config.jobs.lease.as_secs(),
        "job queue runner"
    );
    let mut runner = pacs_core::jobs::JobRunner::new(
        archive.workflow().jobs,
        config.jobs.retry.clone(),
        config.jobs.per_destination,
    )
    .with_owner(owner)
    .with_lease(config.jobs.lease);
    runner.handle(
        dimse_scp::commitment::JOB_KIND,
        dimse_scp::commitment::ReportHandler::new(archive.clone(), &dimse_config),
    );
    runner.handle(
        pacs_core::availability::IAN_JOB_KIND,
        dimse_scp::ian::IanHandler::new(archive.clone(), &dimse_config),
    );
    runner.handle(
        pacs_core::availability::STABLE_JOB_KIND,
        availability.stable_check(archive.clone()),
    );
    if let Some(h) = &config.hl7_out {
        runner.handle(
            pacs_core::availability::HL7_JOB_KIND,
            hl7::notify::ImagesAvailableHandler::new(archive.clone(), h.clone()),
        );
    }
    let runner_stop = pacs_core::jobs::CancellationToken::new();
    let runner_task = tokio::spawn(runner.run(runner_stop.clone()));
    let compactor_task = tokio::spawn(compact_metadata(
        archive.clone(),
        config.metadata_compact_after,
        runner_stop.clone(),
    ));
    let patients_task = tokio::spawn(refresh_patients(archive.clone(), runner_stop.clone()));
    let dimse = dimse_scp::DimseServer::bind(dimse_config)
        .await
        .with_context(|| format!("cannot start DIMSE on {}", config.dimse_listen))?;
    info!(dimse = %config.dimse_listen, ae_title = %config.ae_title, "DIMSE listening");
    if let Some(addr) = config.dimse_tls_listen {
        info!(dimse_tls = %addr, client_certificate_required = config.tls_client_ca_file.is_some(), "DICOM TLS listening");
    }
    let dimse_task = tokio::spawn(dimse.run(archive.clone(), shutdown_requested(stop_rx.clone())));
    // Orders in: the worklist folder and the HL7 listener.
    let hl7_task = match config.workflow.hl7_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for HL7 on {addr}"))?;
            info!(hl7 = %addr, "HL7 (MLLP) listening");
            if !addr.ip().is_loopback() {
                warn!(hl7 = %addr, "HL7 over MLLP has no authentication: only the HIS should be able \
                    to reach this address (firewall or a dedicated network)");
            }
            let w = &config.workflow;
            let hl7_config = hl7::Hl7Config {
                mapping: hl7::orders::Mapping {
                    issuer: w.hl7_issuer.clone(),
                    station_aes: w.hl7_station_aes.clone(),
                },
                max_message_bytes: w.hl7_max_message_bytes,
                idle_timeout: w.hl7_idle_timeout,
                max_connections: w.hl7_max_connections,
            };
            Some(tokio::spawn(hl7::serve(
                listener,
                archive.clone(),
                hl7_config,
                shutdown_requested(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let worklist_task = config.workflow.worklist_dir.clone().map(|dir| {
        if !dir.is_dir() {
            warn!(dir = %dir.display(), "worklist_dir is not a readable folder (yet): checked again every poll");
        }
        info!(dir = %dir.display(), "worklist folder watched");
        tokio::spawn(crate::worklist_dir::watch(
            archive.clone(),
            dir,
            config.workflow.worklist_poll,
            config.workflow.worklist_max_file_bytes,
            shutdown_requested(stop_rx.clone()),
        ))
    });

    let web_config = dicomweb::DicomWebConfig {
        cors_allowed_origins: config.cors_allowed_origins.clone(),
        pixel: Some(pixel),
        ..dicomweb::DicomWebConfig::default()
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/stats", get(api_stats))
        .with_state(archive.clone())
        .nest(
            "/dicom-web",
            dicomweb::router(archive.clone(), web_config.clone()),
        )
        .merge(dicomweb::wado_uri_router(archive.clone(), web_config))
        .merge(viewer_web::router(archive.clone()))
        .merge(viewer_web::hanging::router(
            config.hanging_protocols.clone(),
        ))
        .merge(crate::audit::router(archive.clone(), &config.audit_dir()))
        .merge(crate::queue::router(archive.clone()))
        .merge(crate::orders_api::router(archive.clone()))
        .merge(crate::technologist::router(archive.clone()))
        .merge(crate::patients_api::router(archive.clone()))
        .merge(crate::studies_api::router(archive.clone()));
    let app = access::protect(app, access)?
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let client = req
                        .extensions()
                        .get::<pacs_core::ClientAddr>()
                        .map(|c| c.0.to_string())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), client = %client)
                })
                .on_response(log_response)
                .on_failure(log_failure),
        )
        // Outermost: every layer above sees the resolved client address.
        .layer(axum::middleware::from_fn_with_state(
            crate::proxy::ClientResolution {
                trusted_proxies: std::sync::Arc::new(config.trusted_proxies.clone()),
                tls: config.http_tls,
            },
            crate::proxy::resolve_client,
        ));
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
    let https = match (&certificate, config.http_tls) {
        (Some(cert), true) => Some(crate::tls::https_config(cert.clone())?),
        _ => None,
    };
    let scheme = if https.is_some() { "https" } else { "http" };
    info!(http = %config.http_listen, tls = https.is_some(), "listening; open {scheme}://{}/", config.http_listen);
    crate::http_server::serve(
        listener,
        app,
        archive.limits().into(),
        https,
        shutdown_requested(stop_rx),
    )
    .await;
    match dimse_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "DIMSE listener ended with an error"),
        Err(e) => warn!(error = %e, "DIMSE task failed"),
    }
    runner_stop.cancel();
    let _ = runner_task.await;
    let _ = compactor_task.await;
    let _ = patients_task.await;
    for t in [worklist_task, hl7_task].into_iter().flatten() {
        let _ = t.await;
    }
    crate::audit::record_activity(&archive, false, &config.ae_title).await;
    archive.close().await?;
    info!("archive closed cleanly");
    Ok(())
}

/// How often a node asks the patient store whether a change was recorded
/// (by another node sharing the PostgreSQL index, or by this one): the
/// longest another node's patient update or merge goes unseen here.
/// The file in `data_dir` holding this node's id (hex, made at its first
/// start): the job queue tells an earlier run of this node, whose running
/// jobs were interrupted, from another live node by it.
pub const NODE_ID_FILE: &str = "node-id";

/// Who this process is to the job queue: `NODE/HOST:PID:RANDOM`, the node
/// from [`NODE_ID_FILE`], the rest unique to this run (and shown by the
/// queue's admin view beside each running job).
fn job_owner(data_dir: &std::path::Path) -> Result<pacs_core::jobs::JobOwner> {
    let path = data_dir.join(NODE_ID_FILE);
    let kept = std::fs::read_to_string(&path).ok().and_then(|t| {
        let id = t.trim();
        (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_owned())
    });
    let node = match kept {
        Some(id) => id,
        None => {
            let id = pacs_core::jobs::JobOwner::new_node_id();
            std::fs::write(&path, format!("{id}\n"))
                .and_then(|()| std::fs::File::open(&path)?.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            id
        }
    };
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    Ok(pacs_core::jobs::JobOwner::of_process(
        &node,
        if host.is_empty() { "host" } else { &host },
    ))
}

const PATIENT_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the archive's patient coercions up to date with the store
/// (`Archive::refresh_patients`: one indexed read when nothing moved),
/// until `stop`.
async fn refresh_patients(archive: pacs_core::Archive, stop: pacs_core::jobs::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PATIENT_REFRESH) => {}
        }
        match archive.refresh_patients().await {
            Ok(0) => {}
            Ok(studies) => {
                tracing::info!(
                    studies,
                    "studies indexed before another node's patient change rebuilt"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "patient changes could not be reloaded; tried again later")
            }
        }
    }
}

/// Moves the DICOM JSON of quiet series out of the index into their
/// metadata blobs (see `pacs_core::series_metadata`), every few seconds,
/// until `stop`.
async fn compact_metadata(
    archive: pacs_core::Archive,
    quiet: std::time::Duration,
    stop: pacs_core::jobs::CancellationToken,
) {
    let tick = (quiet / 4).clamp(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(10),
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        // A bounded batch per pass, so a stop is heard between batches.
        match archive.compact_metadata(quiet, 64).await {
            Ok(r) => {
                if r.series > 0 || r.failed > 0 {
                    tracing::info!(
                        series = r.series,
                        instances = r.instances,
                        bytes = r.bytes,
                        raced = r.raced,
                        failed = r.failed,
                        garbage = r.garbage,
                        "series metadata compacted"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "series metadata compaction failed; tried again later")
            }
        }
    }
}
