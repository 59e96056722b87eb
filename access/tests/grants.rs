//! Expired partner grants, which the binary's tests cannot make (a grant
//! lives at least one day): the record is written straight into the store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use access::{Access, AccessConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use pacs_core::credentials::{Credentials, GrantRecord};
use pacs_core::{Archive, Limits, Role};
use tower::ServiceExt;

fn req(uri: &str, auth: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header("host", "127.0.0.1:8080")
        .header("authorization", auth)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_expired_grant_opens_nothing() {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let creds = Arc::new(index.credentials().unwrap());
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    archive.set_credentials(creds.clone());
    let mut config = AccessConfig::new("127.0.0.1:8080".parse().unwrap());
    config.required = true;
    let access = Access::new(archive, config).await.unwrap();
    let (_, secret) = access
        .accounts()
        .unwrap()
        .create_token("bv-cho-ray", Role::Partner, None)
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let study = "1.2.826.0.1.3680043.8.498.11";
    let mut grant = GrantRecord {
        id: "gexpired".into(),
        partner: "bv-cho-ray".into(),
        studies: vec![study.into()],
        patient: None,
        creator: "an".into(),
        created: now - 10 * 86_400,
        expires: now - 1,
        revoked: None,
        uses: 0,
    };
    assert!(creds.insert_grant(grant.clone()).await.unwrap());
    let app = Router::new().route(
        "/dicom-web/studies/{study}/metadata",
        get(|| async { "[]" }),
    );
    let app = access::protect(app, access).unwrap();
    let meta = format!("/dicom-web/studies/{study}/metadata");
    let bearer = format!("Bearer {secret}");

    let r = app.clone().oneshot(req(&meta, &bearer)).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The same record, still valid: it opens, and the use is counted.
    grant.expires = now + 86_400;
    assert!(creds.update_grant(grant).await.unwrap());
    let r = app.oneshot(req(&meta, &bearer)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(creds.grants().await.unwrap()[0].uses, 1);
}
