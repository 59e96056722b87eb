//! Router tests at the public boundary (`oneshot`), over an in-memory
//! archive loaded with the sample studies.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use axum::body::Body;
use axum::http::Request;
use common::*;
use dicomweb::DicomWebConfig;
use pacs_core::dicom::parse_part10;
use pacs_core::Limits;
use serde_json::Value;

fn tag_str(item: &Value, tag: &str) -> String {
    item[tag]["Value"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn loaded_app() -> axum::Router {
    app(loaded_archive().await, DicomWebConfig::default())
}

#[tokio::test]
async fn qido_every_url_form() {
    let app = loaded_app().await;
    let ct = files_of("ct-phantom");
    let study = s(&ct[0]["study_instance_uid"]);
    let series = s(&ct[0]["series_instance_uid"]);

    let r = get(&app, "/dicom-web/studies", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "application/dicom+json");
    let studies = r.json();
    assert_eq!(studies.as_array().unwrap().len(), 5);
    let mine = studies
        .as_array()
        .unwrap()
        .iter()
        .find(|s| tag_str(s, "0020000D") == study)
        .unwrap();
    assert_eq!(mine["00100010"]["Value"][0]["Alphabetic"], "Nguyễn^Văn An");
    assert_eq!(mine["00201208"]["Value"][0], 24, "numbers are numbers");
    assert_eq!(mine["00080061"]["Value"][0], "CT");
    assert_eq!(
        mine["00081190"]["Value"][0],
        format!("http://pacs.test/dicom-web/studies/{study}")
    );

    let r = get(&app, "/dicom-web/series", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let r = get(&app, "/dicom-web/instances", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 50);
    let r = get(&app, &format!("/dicom-web/studies/{study}/series"), &[]).await;
    let rows = r.json();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(tag_str(&rows[0], "0020000E"), series);
    assert_eq!(rows[0]["00201209"]["Value"][0], 24);
    assert_eq!(
        rows[0]["00081190"]["Value"][0],
        format!("http://pacs.test/dicom-web/studies/{study}/series/{series}")
    );
    let r = get(&app, &format!("/dicom-web/studies/{study}/instances"), &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 24);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/{series}/instances"),
        &[],
    )
    .await;
    let rows = r.json();
    assert_eq!(rows.as_array().unwrap().len(), 24);
    assert_eq!(rows[0]["00280010"]["Value"][0], 256);
    assert!(rows[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .ends_with(&format!("/instances/{}", tag_str(&rows[0], "00080018"))));

    // By keyword and by tag; fuzzy matching folds case and diacritics.
    let r = get(&app, "/dicom-web/studies?PatientID=VN-0001", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = get(&app, "/dicom-web/studies?00100020=VN-0001", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = get(
        &app,
        "/dicom-web/studies?PatientName=nguyen&fuzzymatching=true",
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = get(&app, "/dicom-web/studies?PatientName=nguyen", &[]).await;
    assert_eq!(r.status, 204, "no match is 204 (PS3.18 Table 10.6.3-1)");
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-total-count").as_deref(), Some("0"));
    // A page past the last match: 204 too, with the total.
    let r = get(&app, "/dicom-web/studies?offset=100", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-total-count").as_deref(), Some("5"));
    let r = get(&app, "/dicom-web/series?Modality=US", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    // UID list matching, comma-separated (PS3.18 8.3.4.1).
    let prior = s(&files_of("ct-phantom-prior")[0]["study_instance_uid"]);
    let r = get(
        &app,
        &format!("/dicom-web/studies?StudyInstanceUID={study},{prior}"),
        &[],
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn qido_includefield_limit_offset_and_warning() {
    let archive = loaded_archive().await;
    let app = app(archive.clone(), DicomWebConfig::default());
    let r = get(&app, "/dicom-web/studies?includefield=InstitutionName", &[]).await;
    assert!(r.json()[0].get("00080080").is_some());
    assert!(r.json()[0].get("00101010").is_none());
    let r = get(
        &app,
        "/dicom-web/studies?includefield=00101010,InstitutionName",
        &[],
    )
    .await;
    assert!(r.json()[0].get("00101010").is_some());
    assert!(r.json()[0].get("00080080").is_some());
    let r = get(&app, "/dicom-web/studies?includefield=all", &[]).await;
    assert!(r.json()[0].get("00080062").is_some(), "SOPClassesInStudy");
    // A real attribute the index does not keep: ignored, with a warning.
    let r = get(&app, "/dicom-web/studies?includefield=Manufacturer", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("warning").unwrap().contains("Manufacturer"));

    let all = get(&app, "/dicom-web/studies", &[]).await.json();
    let r = get(&app, "/dicom-web/studies?limit=2&offset=1", &[]).await;
    let page = r.json();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0], all[1]);
    assert_eq!(page[1], all[2]);
    assert!(r.header("warning").is_none(), "the client chose the limit");
    // Newest first.
    let dates: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| tag_str(s, "00080020"))
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted);

    let capped = common::app(
        archive,
        DicomWebConfig {
            max_qido_limit: 3,
            ..DicomWebConfig::default()
        },
    );
    let r = get(&capped, "/dicom-web/studies", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    let w = r.header("warning").unwrap();
    assert!(
        w.starts_with("299 pacs.test \"The number of results exceeded the maximum"),
        "{w}"
    );
    let r = get(&capped, "/dicom-web/studies?limit=100&offset=3", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(r.header("warning").is_none());
}

#[tokio::test]
async fn qido_bad_queries_are_400_with_a_reason() {
    let app = loaded_app().await;
    for (uri, needle) in [
        ("/dicom-web/studies?StudyDate=2024-13-45", "StudyDate"),
        ("/dicom-web/studies?offset=-1", "offset"),
        ("/dicom-web/studies?offset=abc", "offset"),
        ("/dicom-web/studies?limit=0", "limit"),
        ("/dicom-web/studies?NoSuchThing=1", "NoSuchThing"),
        ("/dicom-web/studies?Manufacturer=X", "Manufacturer"),
        ("/dicom-web/studies?fuzzymatching=maybe", "fuzzymatching"),
        ("/dicom-web/studies/1.2.abc/series", "StudyInstanceUID"),
        ("/dicom-web/studies?includefield=Bogus", "Bogus"),
    ] {
        let r = get(&app, uri, &[]).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text());
        assert!(r.text().contains(needle), "{uri}: {}", r.text());
    }
    let r = get(&app, "/dicom-web/studies", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 406);
    assert!(r.text().contains("application/dicom+xml"), "{}", r.text());
}

const XML_ACCEPT: &str = r#"multipart/related; type="application/dicom+xml""#;

/// The parts of a `multipart/related; type="application/dicom+xml"`
/// answer, each checked to be an `application/dicom+xml` part.
fn xml_parts(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.header("content-type").unwrap();
    assert!(
        content_type.starts_with(r#"multipart/related; type="application/dicom+xml"; boundary="#),
        "{content_type}"
    );
    parse_multipart(&content_type, &r.body)
        .into_iter()
        .map(|p| {
            assert_eq!(p.content_type(), "application/dicom+xml");
            String::from_utf8(p.body).unwrap()
        })
        .collect()
}

/// Parses one Native DICOM Model document and checks its root.
fn native_model(text: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "NativeDicomModel");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://dicom.nema.org/PS3.19/models/NativeDICOM")
    );
    doc
}

/// The top-level `DicomAttribute` of `tag`.
fn attribute<'a>(doc: &'a roxmltree::Document<'a>, tag: &str) -> roxmltree::Node<'a, 'a> {
    doc.root_element()
        .children()
        .find(|n| n.has_tag_name("DicomAttribute") && n.attribute("tag") == Some(tag))
        .unwrap_or_else(|| panic!("no attribute {tag}"))
}

/// The text of the first child element named `name`, searched in depth.
fn text_of(node: roxmltree::Node<'_, '_>, name: &str) -> String {
    node.descendants()
        .find(|n| n.has_tag_name(name))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no {name}"))
        .to_owned()
}

#[tokio::test]
async fn qido_as_native_dicom_xml() {
    let app = loaded_app().await;
    let study = s(&files_of("ct-phantom")[0]["study_instance_uid"]);
    let uri = format!("/dicom-web/studies?StudyInstanceUID={study}&includefield=Manufacturer");
    let r = get(&app, &uri, &[("accept", XML_ACCEPT)]).await;
    let parts = xml_parts(&r);
    assert_eq!(parts.len(), 1);
    assert_eq!(r.header("x-total-count").as_deref(), Some("1"));
    assert!(r.header("warning").unwrap().contains("Manufacturer"));
    let doc = native_model(&parts[0]);
    let uid = attribute(&doc, "0020000D");
    assert_eq!(uid.attribute("vr"), Some("UI"));
    assert_eq!(uid.attribute("keyword"), Some("StudyInstanceUID"));
    assert_eq!(text_of(uid, "Value"), study);
    let name = attribute(&doc, "00100010");
    assert_eq!(name.attribute("keyword"), Some("PatientName"));
    let alphabetic = name
        .descendants()
        .find(|n| n.has_tag_name("Alphabetic"))
        .unwrap();
    assert_eq!(text_of(alphabetic, "FamilyName"), "Nguyễn");
    assert_eq!(text_of(alphabetic, "GivenName"), "Văn An");
    assert_eq!(
        text_of(attribute(&doc, "00201208"), "Value"),
        "24",
        "NumberOfStudyRelatedInstances"
    );
    assert_eq!(
        text_of(attribute(&doc, "00081190"), "Value"),
        format!("http://pacs.test/dicom-web/studies/{study}")
    );

    // Every study, one part each; a bare application/dicom+xml is taken too.
    let r = get(
        &app,
        "/dicom-web/studies",
        &[("accept", "application/dicom+xml")],
    )
    .await;
    let parts = xml_parts(&r);
    assert_eq!(parts.len(), 5);
    let mut uids: Vec<String> = parts
        .iter()
        .map(|p| text_of(attribute(&native_model(p), "0020000D"), "Value"))
        .collect();
    let json: Vec<String> = get(&app, "/dicom-web/studies", &[])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| tag_str(s, "0020000D"))
        .collect();
    assert_eq!(uids, json, "the same rows in the same order");
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 5);
    let r = get(
        &app,
        "/dicom-web/series?Modality=US",
        &[("accept", XML_ACCEPT)],
    )
    .await;
    let parts = xml_parts(&r);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        text_of(attribute(&native_model(&parts[0]), "00080060"), "Value"),
        "US"
    );

    // No match: 204, with the count.
    let r = get(
        &app,
        "/dicom-web/studies?PatientName=nguyen",
        &[("accept", XML_ACCEPT)],
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-total-count").as_deref(), Some("0"));

    // Negotiation: q decides, a tie and wildcards go to JSON.
    for (accept, json) in [
        (
            r#"multipart/related; type="application/dicom+xml";q=0.5, application/dicom+json"#,
            true,
        ),
        (
            r#"multipart/related; type="application/dicom+xml", application/json"#,
            true,
        ),
        (
            r#"multipart/related; type="application/dicom+xml", */*;q=0.2"#,
            false,
        ),
        ("*/*", true),
    ] {
        let r = get(&app, "/dicom-web/studies", &[("accept", accept)]).await;
        assert_eq!(r.status, 200, "{accept}");
        let content_type = r.header("content-type").unwrap();
        if json {
            assert_eq!(content_type, "application/dicom+json", "{accept}");
            assert_eq!(r.json().as_array().unwrap().len(), 5);
        } else {
            assert_eq!(xml_parts(&r).len(), 5, "{accept}");
        }
    }
    let r = get(&app, "/dicom-web/studies", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 406);
}

#[tokio::test]
async fn metadata_as_native_dicom_xml() {
    let app = loaded_app().await;
    let ct = files_of("ct-phantom");
    let (study, series) = (
        s(&ct[0]["study_instance_uid"]),
        s(&ct[0]["series_instance_uid"]),
    );
    let uri = format!("/dicom-web/studies/{study}/series/{series}/metadata");
    let json = get(&app, &uri, &[]).await;
    let items = json.json();
    let r = get(&app, &uri, &[("accept", XML_ACCEPT)]).await;
    let parts = xml_parts(&r);
    assert_eq!(parts.len(), 24);
    let mut sops = Vec::new();
    for part in &parts {
        let doc = native_model(part);
        let sop = text_of(attribute(&doc, "00080018"), "Value");
        let item = items
            .as_array()
            .unwrap()
            .iter()
            .find(|i| tag_str(i, "00080018") == sop)
            .unwrap();
        let pixels = attribute(&doc, "7FE00010");
        let bulk = pixels
            .children()
            .find(|n| n.has_tag_name("BulkData"))
            .unwrap();
        assert_eq!(
            bulk.attribute("uri"),
            item["7FE00010"]["BulkDataURI"].as_str()
        );
        assert_eq!(
            bulk.attribute("uri").unwrap(),
            format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010")
        );
        assert!(pixels.children().all(|n| !n.has_tag_name("Value")));
        let top = doc
            .root_element()
            .children()
            .filter(|n| n.has_tag_name("DicomAttribute"))
            .count();
        assert_eq!(top, item.as_object().unwrap().len(), "every attribute");
        let name = attribute(&doc, "00100010");
        assert_eq!(text_of(name, "FamilyName"), "Nguyễn");
        sops.push(sop);
    }
    sops.sort();
    let mut expected: Vec<String> = ct.iter().map(|f| s(&f["sop_instance_uid"])).collect();
    expected.sort();
    assert_eq!(sops, expected);

    // Its own strong ETag, stable (the boundary comes from the content).
    let etag = r.header("etag").unwrap();
    assert_ne!(Some(etag.clone()), json.header("etag"));
    let again = get(&app, &uri, &[("accept", XML_ACCEPT)]).await;
    assert_eq!(again.header("etag").as_deref(), Some(etag.as_str()));
    assert!(again.body == r.body);
    let r304 = get(
        &app,
        &uri,
        &[("accept", XML_ACCEPT), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r304.status, 304);
    let json_etag = json.header("etag").unwrap();
    let r200 = get(
        &app,
        &uri,
        &[("accept", XML_ACCEPT), ("if-none-match", &json_etag)],
    )
    .await;
    assert_eq!(r200.status, 200, "the JSON ETag does not match the XML");

    // Study and instance metadata.
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/metadata"),
        &[("accept", XML_ACCEPT)],
    )
    .await;
    assert_eq!(xml_parts(&r).len(), 24);
    let sop = s(&ct[3]["sop_instance_uid"]);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata"),
        &[("accept", XML_ACCEPT)],
    )
    .await;
    let parts = xml_parts(&r);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        text_of(attribute(&native_model(&parts[0]), "00080018"), "Value"),
        sop
    );

    let r = get(&app, &uri, &[("accept", "text/html")]).await;
    assert_eq!(r.status, 406);
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            r#"multipart/related; type="application/dicom+xml";q=0.3, application/json"#,
        )],
    )
    .await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/dicom+json")
    );
}

#[tokio::test]
async fn series_metadata_is_the_instances_with_absolute_bulkdata_uris() {
    let app = loaded_app().await;
    let ct = files_of("ct-phantom");
    let (study, series) = (
        s(&ct[0]["study_instance_uid"]),
        s(&ct[0]["series_instance_uid"]),
    );
    let uri = format!("/dicom-web/studies/{study}/series/{series}/metadata");
    let started = std::time::Instant::now();
    let r = get(&app, &uri, &[]).await;
    eprintln!("series metadata of 24 CT slices: {:?}", started.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").unwrap(), "no-cache");
    let items = r.json();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 24);
    let mut sops: Vec<String> = items.iter().map(|i| tag_str(i, "00080018")).collect();
    sops.sort();
    let mut expected: Vec<String> = ct.iter().map(|f| s(&f["sop_instance_uid"])).collect();
    expected.sort();
    assert_eq!(sops, expected);
    for item in items {
        assert_eq!(tag_str(item, "0020000D"), study);
        assert_eq!(tag_str(item, "0020000E"), series);
        let sop = tag_str(item, "00080018");
        assert_eq!(
            item["7FE00010"]["BulkDataURI"],
            format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010")
        );
    }

    // ETag and 304.
    let etag = r.header("etag").unwrap();
    let r304 = get(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(r304.status, 304);
    assert!(r304.body.is_empty());

    // gzip.
    let gz = get(&app, &uri, &[("accept-encoding", "gzip, deflate")]).await;
    assert_eq!(gz.header("content-encoding").as_deref(), Some("gzip"));
    assert!(gz.body.len() < r.body.len() / 2);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, r.body);
    let gz_etag = gz.header("etag").unwrap();
    let r304 = get(
        &app,
        &uri,
        &[("if-none-match", &gz_etag), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(r304.status, 304);

    // Study and instance metadata.
    let r = get(&app, &format!("/dicom-web/studies/{study}/metadata"), &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 24);
    let sop = s(&ct[3]["sop_instance_uid"]);
    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata"),
        &[],
    )
    .await;
    let one = r.json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(tag_str(&one[0], "00080018"), sop);
    assert_eq!(
        one[0]["00100010"]["Value"][0]["Alphabetic"],
        "Nguyễn^Văn An"
    );
}

#[tokio::test]
async fn metadata_404_for_unknown_or_mismatched_parents() {
    let app = loaded_app().await;
    let ct = files_of("ct-phantom");
    let mr = files_of("mr-head");
    let (study, series, sop) = (
        s(&ct[0]["study_instance_uid"]),
        s(&ct[0]["series_instance_uid"]),
        s(&ct[0]["sop_instance_uid"]),
    );
    let other_study = s(&mr[0]["study_instance_uid"]);
    let other_series = s(&mr[0]["series_instance_uid"]);
    for uri in [
        "/dicom-web/studies/1.2.3/metadata".to_owned(),
        format!("/dicom-web/studies/{other_study}/series/{series}/metadata"),
        format!("/dicom-web/studies/{study}/series/{other_series}/instances/{sop}/metadata"),
        format!("/dicom-web/studies/{other_study}/series/{series}/instances/{sop}/metadata"),
        format!("/dicom-web/studies/{study}/series/{series}/instances/1.2.3/metadata"),
        format!("/dicom-web/studies/{other_study}/series/{series}/instances/{sop}"),
    ] {
        let r = get(&app, &uri, &[]).await;
        assert_eq!(r.status, 404, "{uri}: {}", r.text());
    }
    let r = get(&app, "/dicom-web/studies/../../etc/metadata", &[]).await;
    assert!(r.status == 400 || r.status == 404);
    assert!(!r.text().contains("/tmp"));
}

#[tokio::test]
async fn instance_series_and_study_retrieve_are_byte_identical() {
    let app = loaded_app().await;
    let ct = files_of("ct-phantom");
    let (study, series, sop) = (
        s(&ct[5]["study_instance_uid"]),
        s(&ct[5]["series_instance_uid"]),
        s(&ct[5]["sop_instance_uid"]),
    );
    let file = std::fs::read(samples_dir().join(s(&ct[5]["path"]))).unwrap();
    let uri = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    for accept in [
        None,
        Some("*/*"),
        Some("multipart/related; type=\"application/dicom\""),
        Some("multipart/related; type=\"application/dicom\"; transfer-syntax=*"),
        Some("multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1"),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let r = get(&app, &uri, &headers).await;
        assert_eq!(r.status, 200, "{accept:?}: {}", r.text());
        let ct_header = r.header("content-type").unwrap();
        assert!(ct_header.starts_with("multipart/related; type=\"application/dicom\""));
        let parts = parse_multipart(&ct_header, &r.body);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].content_type(),
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        );
        assert!(parts[0].body == file, "byte-identical to the sample file");
        assert!(r
            .header("cache-control")
            .unwrap()
            .starts_with("private, max-age="));
        let etag = r.header("etag").unwrap();
        let r304 = get(&app, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(r304.status, 304);
    }
    let r = get(
        &app,
        &uri,
        &[(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )],
    )
    .await;
    assert_eq!(r.status, 406);
    assert!(r.text().contains("cannot convert"), "{}", r.text());

    let r = get(
        &app,
        &format!("/dicom-web/studies/{study}/series/{series}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 24);
    for (part, f) in parts.iter().zip(&ct) {
        let expected = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
        assert!(part.body == expected, "{}", s(&f["path"]));
    }
    let r = get(&app, &format!("/dicom-web/studies/{study}"), &[]).await;
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 24);
    let r = get(&app, "/dicom-web/studies/1.2.3.4", &[]).await;
    assert_eq!(r.status, 404);
}

fn pixel_slice(file: &[u8], frame: usize, frame_len: usize) -> Vec<u8> {
    let h = parse_part10(file, true, &Limits::default()).unwrap();
    let p = h.pixel_data.unwrap();
    let start = p.value_offset as usize + frame * frame_len;
    file[start..start + frame_len].to_vec()
}

#[tokio::test]
async fn frames_native_rle_and_jpeg() {
    let app = loaded_app().await;
    // Native CT: frame 1 is the pixel data value.
    let ct = files_of("ct-phantom");
    let f = &ct[2];
    let file = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
    let base = instance_path(f);
    let r = get(
        &app,
        &format!("{base}/frames/1"),
        &[(
            "accept",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
        )],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        parts[0].content_type(),
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    );
    assert!(parts[0].body == pixel_slice(&file, 0, 256 * 256 * 2));
    for (list, status) in [("0", 400), ("2", 404), ("x", 400)] {
        let r = get(&app, &format!("{base}/frames/{list}"), &[]).await;
        assert_eq!(r.status, status, "{list}: {}", r.text());
    }
    let r = get(
        &app,
        &format!("{base}/frames/1"),
        &[(
            "accept",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )],
    )
    .await;
    assert_eq!(r.status, 406);

    // Bulk data of native pixel data, whole and by range.
    let whole = pixel_slice(&file, 0, 256 * 256 * 2);
    let r = get(&app, &format!("{base}/bulkdata/7FE00010"), &[]).await;
    assert_eq!(r.status, 200);
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert!(parts[0].body == whole);
    let r = get(
        &app,
        &format!("{base}/bulkdata/7FE00010"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, whole[100..200]);
    assert_eq!(
        r.header("content-range").unwrap(),
        format!("bytes 100-199/{}", whole.len())
    );
    let r = get(
        &app,
        &format!("{base}/bulkdata/7FE00010"),
        &[("range", "bytes=999999999-")],
    )
    .await;
    assert_eq!(r.status, 416);
    let r = get(&app, &format!("{base}/bulkdata/00291010"), &[]).await;
    assert_eq!(r.status, 404);

    // US cine, JPEG baseline, 24 frames.
    let us = &files_of("us-cine")[0];
    let base = instance_path(us);
    let r = get(&app, &format!("{base}/frames/1,3,24"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 3);
    for p in &parts {
        assert_eq!(
            p.content_type(),
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
        );
        assert_eq!(&p.body[..2], &[0xFF, 0xD8]);
        // EOI, possibly followed by the even-length pad byte.
        let tail = &p.body[p.body.len() - 3..];
        assert!(tail.windows(2).any(|w| w == [0xFF, 0xD9]), "{tail:?}");
    }
    assert_ne!(parts[0].body, parts[1].body);
    let r = get(
        &app,
        &format!("{base}/frames/2"),
        &[(
            "accept",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert_eq!(
        parts[0].content_type(),
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    );
    assert_eq!(&parts[0].body[..2], &[0xFF, 0xD8]);
    let r = get(&app, &format!("{base}/frames/25"), &[]).await;
    assert_eq!(r.status, 404);

    // MR, RLE: one fragment per frame, as image/dicom-rle (PS3.18 Table
    // 8.7.3-5), or application/octet-stream when asked so.
    let mr = &files_of("mr-head")[0];
    let base = instance_path(mr);
    for (accept, media) in [
        (None, "image/dicom-rle"),
        (
            Some(r#"multipart/related; type="image/dicom-rle"; transfer-syntax=*"#),
            "image/dicom-rle",
        ),
        (
            Some(r#"multipart/related; type="image/x-dicom-rle""#),
            "image/dicom-rle",
        ),
        (
            Some(r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#),
            "application/octet-stream",
        ),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let r = get(&app, &format!("{base}/frames/1"), &headers).await;
        assert_eq!(r.status, 200, "{accept:?}: {}", r.text());
        let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
        assert_eq!(
            parts[0].content_type(),
            format!("{media}; transfer-syntax=1.2.840.10008.1.2.5")
        );
        // An RLE frame starts with its 64-byte header: the segment count.
        assert!((1..=15).contains(&parts[0].body[0]));
    }

    // Asked as uncompressed bytes (PS3.18 8.7.3), the RLE frame is decoded:
    // the same bytes as frame 1 of the instance retrieved in Explicit VR
    // Little Endian.
    let native = "1.2.840.10008.1.2.1";
    for accept in [
        format!("multipart/related; type=\"application/octet-stream\"; transfer-syntax={native}"),
        format!("application/octet-stream; transfer-syntax={native}"),
    ] {
        let r = get(&app, &format!("{base}/frames/1"), &[("accept", &accept)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].content_type(),
            format!("application/octet-stream; transfer-syntax={native}")
        );
        let whole = get(
            &app,
            &base,
            &[(
                "accept",
                &format!("multipart/related; type=\"application/dicom\"; transfer-syntax={native}"),
            )],
        )
        .await;
        let file = &parse_multipart(&whole.header("content-type").unwrap(), &whole.body)[0].body;
        let h = parse_part10(file, true, &Limits::default()).unwrap();
        let frames: usize = h
            .dataset
            .string(0x0028_0008)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        let frame_len = h.pixel_data.unwrap().length.unwrap() as usize / frames;
        assert_eq!(parts[0].body.len(), frame_len);
        assert!(parts[0].body == pixel_slice(file, 0, frame_len));
    }
    // A compressed syntax other than the stored one is still refused.
    let r = get(
        &app,
        &format!("{base}/frames/1"),
        &[(
            "accept",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.4.80",
        )],
    )
    .await;
    assert_eq!(r.status, 406);

    let r = get(&app, &format!("{base}/rendered"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
}

fn stow_request(uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header("host", "pacs.test")
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn stow_round_trip_and_partial_failures() {
    let archive = empty_archive().await;
    let app = app(archive.clone(), DicomWebConfig::default());
    let ct = files_of("ct-phantom");
    let f = &ct[0];
    let file = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
    let ctype = "multipart/related; type=\"application/dicom\"; boundary=XyZ";
    let body = stow_body("XyZ", &[("application/dicom", file.clone())]);
    let r = send(&app, stow_request("/dicom-web/studies", ctype, body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let item = &j["00081199"]["Value"][0];
    assert_eq!(tag_str(item, "00081155"), s(&f["sop_instance_uid"]));
    assert_eq!(tag_str(item, "00081150"), s(&f["sop_class_uid"]));
    let url = tag_str(item, "00081190");
    let path = url.strip_prefix("http://pacs.test").unwrap();
    let r = get(&app, path, &[]).await;
    let parts = parse_multipart(&r.header("content-type").unwrap(), &r.body);
    assert!(parts[0].body == file, "retrieved byte-identical");

    // Good, garbage, and another good part: 202 with one failure.
    let file2 = std::fs::read(samples_dir().join(s(&ct[1]["path"]))).unwrap();
    let body = stow_body(
        "b0undary",
        &[
            ("application/dicom", file2.clone()),
            ("application/dicom", b"this is not DICOM at all".to_vec()),
            ("application/dicom", file.clone()),
        ],
    );
    let r = send(
        &app,
        stow_request(
            "/dicom-web/studies",
            "multipart/related; type=application/dicom; boundary=b0undary",
            body,
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let j = r.json();
    assert_eq!(j["00081199"]["Value"].as_array().unwrap().len(), 2);
    let failed = &j["00081198"]["Value"];
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000);

    // Only garbage: 409.
    let body = stow_body("b", &[("application/dicom", b"nope".to_vec())]);
    let r = send(
        &app,
        stow_request("/dicom-web/studies", "multipart/related; boundary=b", body),
    )
    .await;
    assert_eq!(r.status, 409);

    // An instance of another study than the URL's: 0xC122.
    let mr = std::fs::read(samples_dir().join(s(&files_of("mr-head")[0]["path"]))).unwrap();
    let body = stow_body(
        "b",
        &[("application/dicom", mr), ("application/dicom", file2)],
    );
    let r = send(
        &app,
        stow_request(
            &format!("/dicom-web/studies/{}", s(&f["study_instance_uid"])),
            "multipart/related; type=\"application/dicom\"; boundary=b",
            body,
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let j = r.json();
    assert_eq!(j["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC122);
    assert!(j["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .ends_with(&s(&f["study_instance_uid"])));

    // Framing errors.
    let body = stow_body("right", &[("application/dicom", file.clone())]);
    let r = send(
        &app,
        stow_request(
            "/dicom-web/studies",
            "multipart/related; boundary=wrong",
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("boundary"));
    let r = send(
        &app,
        stow_request(
            "/dicom-web/studies",
            "multipart/related; type=\"application/dicom\"",
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &app,
        stow_request("/dicom-web/studies", "application/dicom", body.clone()),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = send(
        &app,
        stow_request(
            "/dicom-web/studies",
            "multipart/related; type=\"application/dicom+xml\"; boundary=right",
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 415);
    // Metadata and bulk data declared, but no metadata part: 400.
    let r = send(
        &app,
        stow_request(
            "/dicom-web/studies",
            "multipart/related; type=\"application/dicom+json\"; boundary=right",
            body,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn stow_body_limit_is_413() {
    let archive = empty_archive().await;
    let app = app(
        archive,
        DicomWebConfig {
            max_stow_body: Some(10_000),
            ..DicomWebConfig::default()
        },
    );
    let f = &files_of("ct-phantom")[0];
    let file = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
    let body = stow_body("b", &[("application/dicom", file)]);
    let r = send(
        &app,
        stow_request("/dicom-web/studies", "multipart/related; boundary=b", body),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
}

#[tokio::test]
async fn wado_uri() {
    let app = loaded_app().await;
    let f = &files_of("cr-chest")[0];
    let file = std::fs::read(samples_dir().join(s(&f["path"]))).unwrap();
    let q = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}",
        s(&f["study_instance_uid"]),
        s(&f["series_instance_uid"]),
        s(&f["sop_instance_uid"])
    );
    let r = get(&app, &format!("{q}&contentType=application/dicom"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "application/dicom");
    assert!(r.body == file);
    let r = get(&app, &q, &[]).await;
    assert_eq!(r.status, 200, "image/jpeg is the default: {}", r.text());
    assert_eq!(r.header("content-type").unwrap(), "image/jpeg");
    assert_eq!(&r.body[..2], &[0xFF, 0xD8]);
    // An RLE object: Explicit VR LE by default (PS3.18 8.2.11), the syntax
    // asked for when it can be made, as stored for `*` or its own syntax.
    let mr = &files_of("mr-head")[0];
    let q = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&contentType=application/dicom",
        s(&mr["study_instance_uid"]),
        s(&mr["series_instance_uid"]),
        s(&mr["sop_instance_uid"])
    );
    for (extra, expected) in [
        ("", "1.2.840.10008.1.2.1"),
        ("&transferSyntax=1.2.840.10008.1.2", "1.2.840.10008.1.2"),
        (
            "&transferSyntax=1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.70",
        ),
        // Not producible: Explicit VR LE instead.
        (
            "&transferSyntax=1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.1",
        ),
        ("&transferSyntax=1.2.840.10008.1.2.5", "1.2.840.10008.1.2.5"),
        ("&transferSyntax=*", "1.2.840.10008.1.2.5"),
    ] {
        let r = get(&app, &format!("{q}{extra}"), &[]).await;
        assert_eq!(r.status, 200, "{extra}: {}", r.text());
        let h =
            pacs_core::dicom::parse_part10(&r.body, true, &pacs_core::Limits::default()).unwrap();
        assert_eq!(h.meta.transfer_syntax_uid, expected, "{extra}");
    }
    let r = get(&app, &format!("{q}&transferSyntax=../x"), &[]).await;
    assert_eq!(r.status, 400, "a transferSyntax that is not a UID");
    let r = get(&app, "/wado?requestType=WADO&studyUID=1&seriesUID=2", &[]).await;
    assert_eq!(r.status, 400);
    let r = get(
        &app,
        "/wado?requestType=WADO&studyUID=1&seriesUID=2&objectUID=x/../y&contentType=application/dicom",
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let archive = empty_archive().await;
    let off = app(archive.clone(), DicomWebConfig::default());
    let r = get(
        &off,
        "/dicom-web/studies",
        &[("origin", "http://viewer.test")],
    )
    .await;
    assert!(r.header("access-control-allow-origin").is_none());
    let on = app(
        archive,
        DicomWebConfig {
            cors_allowed_origins: vec!["http://viewer.test".into()],
            ..DicomWebConfig::default()
        },
    );
    let r = get(
        &on,
        "/dicom-web/studies",
        &[("origin", "http://viewer.test")],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://viewer.test")
    );
}
