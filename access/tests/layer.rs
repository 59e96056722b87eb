//! The access layer in front of a real router (`tower::ServiceExt::oneshot`),
//! over an archive with a recording audit sink: one audit event per
//! patient-data request, no answer without its record, the principal in
//! the request extensions, and no start with a route the policy lacks.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use access::{Access, AccessConfig};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use pacs_core::audit::{AuditAction, AuditError, AuditEvent, AuditEventId, AuditObject, AuditSink};
use pacs_core::{Archive, Limits, Principal};
use tower::ServiceExt;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<AuditEvent>>,
    broken: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl AuditSink for Recorder {
    async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError::Write("disk full".into()));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

async fn setup() -> (Router, Arc<Recorder>, Arc<Mutex<u32>>) {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    let recorder = Arc::new(Recorder::default());
    archive.set_audit(recorder.clone());
    let stored = Arc::new(Mutex::new(0u32));
    let s = stored.clone();
    let app = Router::new()
        .route(
            "/dicom-web/studies",
            get(|Extension(p): Extension<Principal>| async move { p.name }).post(
                move || async move {
                    *s.lock().unwrap() += 1;
                    "stored"
                },
            ),
        )
        .route(
            "/dicom-web/studies/{study}/metadata",
            get(|| async { "[]" }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let access = Access::new(
        archive,
        AccessConfig::new("127.0.0.1:8080".parse().unwrap()),
    )
    .await
    .unwrap();
    (access::protect(app, access).unwrap(), recorder, stored)
}

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:8080")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn each_phi_request_is_audited_with_its_principal() {
    let (app, recorder, _) = setup().await;
    let res = app
        .clone()
        .oneshot(req("GET", "/dicom-web/studies?PatientID=P1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(
        &body[..],
        b"anonymous",
        "the principal is in the extensions"
    );
    let res = app
        .clone()
        .oneshot(req("GET", "/dicom-web/studies/1.2.3/metadata"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.clone().oneshot(req("GET", "/healthz")).await.unwrap();

    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "health is not patient data: {events:?}");
    assert_eq!(events[0].id, AuditEventId::Query);
    assert!(events[0].objects.contains(&AuditObject::Query {
        text: "PatientID=P1".into()
    }));
    assert_eq!(events[0].actors[0].user_id, "anonymous");
    assert_eq!(events[1].id, AuditEventId::InstancesAccessed);
    assert_eq!(events[1].action, AuditAction::Read);
    assert!(events[1].objects.contains(&AuditObject::Study {
        uid: "1.2.3".into()
    }));
}

#[tokio::test]
async fn no_record_no_answer() {
    let (app, recorder, stored) = setup().await;
    recorder
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let res = app
        .clone()
        .oneshot(req("GET", "/dicom-web/studies"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = app
        .clone()
        .oneshot(req("POST", "/dicom-web/studies"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*stored.lock().unwrap(), 0, "the store did not run");
    let res = app.oneshot(req("GET", "/healthz")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "non-PHI routes still answer");
}

#[tokio::test]
async fn a_route_without_policy_stops_the_start() {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    let access = Access::new(
        archive,
        AccessConfig::new("127.0.0.1:8080".parse().unwrap()),
    )
    .await
    .unwrap();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/secret/export", get(|| async { "all the data" }));
    let err = access::protect(app, access).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("/secret/export")),
        "{err:?}"
    );
}

/// An archive with a credential store holding one user (sign-in on).
async fn with_user(threshold: u32) -> (Router, Arc<Recorder>) {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let creds = index.credentials().unwrap();
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    archive.set_credentials(Arc::new(creds));
    let recorder = Arc::new(Recorder::default());
    archive.set_audit(recorder.clone());
    let mut config = AccessConfig::new("127.0.0.1:8080".parse().unwrap());
    config.throttle.account_threshold = threshold;
    let access = Access::new(archive, config).await.unwrap();
    access
        .accounts()
        .unwrap()
        .add_user("an", pacs_core::Role::Radiologist, "a long password")
        .await
        .unwrap();
    access.refresh_enabled().await.unwrap();
    let app = Router::new().route("/dicom-web/studies", get(|| async { "[]" }));
    (access::protect(app, access).unwrap(), recorder)
}

fn with_auth(uri: &str, user: &str, password: &str) -> Request<Body> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Request::builder()
        .uri(uri)
        .header("host", "127.0.0.1:8080")
        .header("authorization", format!("Basic {b}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn failures_and_lock_outs_are_audited() {
    let (app, recorder) = with_user(2).await;
    for _ in 0..2 {
        app.clone()
            .oneshot(with_auth("/dicom-web/studies", "an", "wrong"))
            .await
            .unwrap();
    }
    let res = app
        .clone()
        .oneshot(with_auth("/dicom-web/studies", "an", "a long password"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let events = recorder.events.lock().unwrap().clone();
    let failures = events
        .iter()
        .filter(|e| {
            e.id == AuditEventId::UserAuthentication
                && e.event_type == Some(("110122".into(), "Login".into()))
                && e.outcome == pacs_core::audit::AuditOutcome::MinorFailure
        })
        .count();
    assert_eq!(failures, 2, "{events:?}");
    assert!(
        events.iter().any(|e| e.id == AuditEventId::SecurityAlert
            && e.outcome_description
                .as_deref()
                .is_some_and(|d| d.contains("account an locked"))),
        "{events:?}"
    );
    // A bad bearer token is a security alert too.
    let res = app
        .oneshot(
            Request::builder()
                .uri("/dicom-web/studies")
                .header("host", "127.0.0.1:8080")
                .header("authorization", "Bearer senpacs_not-a-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let events = recorder.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.id == AuditEventId::SecurityAlert
        && e.event_type == Some(("110126".into(), "Node Authentication".into()))));
}

#[tokio::test]
async fn cors_preflights_need_no_credentials() {
    let (app, _) = with_user(5).await;
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method("OPTIONS")
                .uri("/dicom-web/studies")
                .header("host", "127.0.0.1:8080")
                .header("origin", "https://ohif.example")
                .header("access-control-request-method", "GET")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.oneshot(req("GET", "/dicom-web/studies")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
