//! Expired share links, which the binary's tests cannot make (a link lives
//! at least one day): the record is written straight into the store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use access::{Access, AccessConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use pacs_core::credentials::{Credentials, ShareRecord};
use pacs_core::{Archive, Limits};
use tower::ServiceExt;

fn req(uri: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri).header("host", "127.0.0.1:8080");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn an_expired_link_is_gone() {
    let blobs = storage::ObjectBlobStore::open("memory://").unwrap();
    let index = storage::SledIndex::temporary().unwrap();
    let creds = Arc::new(index.credentials().unwrap());
    let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
    archive.set_credentials(creds.clone());
    let mut config = AccessConfig::new("127.0.0.1:8080".parse().unwrap());
    config.required = true;
    let access = Access::new(archive, config).await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = "shr_an-expired-link-for-this-test-only-0000";
    let study = "1.2.826.0.1.3680043.8.498.11";
    let mut share = ShareRecord {
        id: "expired".into(),
        secret_sha256: access::secrets::sha256(token.as_bytes()),
        studies: vec![study.into()],
        patient: None,
        creator: "an".into(),
        created: now - 10 * 86_400,
        expires: now - 1,
        revoked: None,
        uses: 0,
        pin_sha256: None,
        pin_salt: None,
        failed_pins: 0,
        locked_until: None,
    };
    assert!(creds.insert_share(share.clone()).await.unwrap());
    let app = Router::new().route(
        "/dicom-web/studies/{study}/metadata",
        get(|| async { "[]" }),
    );
    let app = access::protect(app, access).unwrap();
    let meta = format!("/dicom-web/studies/{study}/metadata");
    let bearer = format!("Bearer {token}");

    let page = app
        .clone()
        .oneshot(req(&format!("/s/{token}"), None))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    let api = app
        .clone()
        .oneshot(req(&meta, Some(&bearer)))
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    // The same record, still valid: both open.
    share.expires = now + 86_400;
    assert!(creds.update_share(share).await.unwrap());
    let page = app
        .clone()
        .oneshot(req(&format!("/s/{token}"), None))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let api = app.oneshot(req(&meta, Some(&bearer))).await.unwrap();
    assert_eq!(api.status(), StatusCode::OK);
}
