//! The archive's study scope, with no access layer in front: a principal
//! confined to one study (a share link, a partner hospital) finds nothing
//! of another study at any DICOMweb read route, because every handler reads
//! through the archive confined to the request principal's scope.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pacs_core::access::{PrincipalKind, StudyScope};
use pacs_core::{Principal, Role, Uid};

/// Every GET route of the DICOMweb and WADO-URI routers, for one instance.
fn read_paths(f: &serde_json::Value) -> Vec<String> {
    let (st, se, sop) = (
        s(&f["study_instance_uid"]),
        s(&f["series_instance_uid"]),
        s(&f["sop_instance_uid"]),
    );
    let i = format!("/dicom-web/studies/{st}/series/{se}/instances/{sop}");
    vec![
        format!("/dicom-web/studies/{st}"),
        format!("/dicom-web/studies/{st}/series"),
        format!("/dicom-web/studies/{st}/instances"),
        format!("/dicom-web/studies/{st}/metadata"),
        format!("/dicom-web/studies/{st}/rendered"),
        format!("/dicom-web/studies/{st}/thumbnail"),
        format!("/dicom-web/studies/{st}/series/{se}"),
        format!("/dicom-web/studies/{st}/series/{se}/instances"),
        format!("/dicom-web/studies/{st}/series/{se}/metadata"),
        format!("/dicom-web/studies/{st}/series/{se}/rendered"),
        format!("/dicom-web/studies/{st}/series/{se}/thumbnail"),
        i.clone(),
        format!("{i}/metadata"),
        format!("{i}/rendered"),
        format!("{i}/thumbnail"),
        format!("{i}/frames/1"),
        format!("{i}/frames/1/rendered"),
        format!("{i}/frames/1/thumbnail"),
        format!("{i}/bulkdata/7FE00010"),
        format!("/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}"),
        format!("/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}&contentType=image/jpeg"),
    ]
}

#[tokio::test]
async fn a_scoped_principal_finds_nothing_of_another_study_at_any_route() {
    let archive = loaded_archive().await;
    let ct = files_of("ct-phantom")[0].clone();
    let mr = files_of("mr-head")[0].clone();
    let partner = Principal {
        kind: PrincipalKind::Token,
        name: "bv-cho-ray".into(),
        role: Some(Role::Partner),
        address: None,
        scope: StudyScope::Studies([Uid::parse(&s(&ct["study_instance_uid"])).unwrap()].into()),
    };
    let app = app(archive, dicomweb::DicomWebConfig::default()).layer(axum::Extension(partner));
    let mr_study = s(&mr["study_instance_uid"]);
    let mr_series = s(&mr["series_instance_uid"]);
    let mr_sop = s(&mr["sop_instance_uid"]);
    // Each answer is the one a study that does not exist gets (404, or an
    // empty search), so the scope does not reveal that the study exists.
    let ghost = serde_json::json!({
        "study_instance_uid": "1.2.3.999",
        "series_instance_uid": "1.2.3.999.1",
        "sop_instance_uid": "1.2.3.999.1.1",
    });
    for (path, absent) in read_paths(&mr).into_iter().zip(read_paths(&ghost)) {
        let r = get(&app, &path, &[]).await;
        let a = get(&app, &absent, &[]).await;
        assert_eq!(r.status, a.status, "{path}: {}", r.text());
        assert!([404, 204].contains(&r.status), "{path}: {}", r.status);
    }
    // A WADO-RS path naming the shared study but an instance of the other
    // one: still nothing.
    let crossed = format!(
        "/dicom-web/studies/{}/series/{mr_series}/instances/{mr_sop}/metadata",
        s(&ct["study_instance_uid"])
    );
    assert_eq!(get(&app, &crossed, &[]).await.status, 404);
    // Searches at every level find the shared study only, whatever the keys.
    for q in [
        "/dicom-web/studies".to_owned(),
        format!("/dicom-web/studies?StudyInstanceUID={mr_study}"),
        "/dicom-web/series".to_owned(),
        format!("/dicom-web/series?SeriesInstanceUID={mr_series}"),
        "/dicom-web/instances".to_owned(),
        format!("/dicom-web/instances?SOPInstanceUID={mr_sop}"),
    ] {
        let r = get(&app, &q, &[]).await;
        assert!([200, 204].contains(&r.status), "{q}: {}", r.status);
        assert!(!r.text().contains(&mr_study), "{q}: {}", r.text());
    }
    let r = get(&app, "/dicom-web/studies", &[]).await;
    assert!(r.text().contains(&s(&ct["study_instance_uid"])));
    // The shared study reads as usual.
    for path in read_paths(&ct).iter().take(4) {
        assert_eq!(get(&app, path, &[]).await.status, 200, "{path}");
    }
}
