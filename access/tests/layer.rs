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
