//! A study (or series) as a ZIP of DICOM files plus a DICOMDIR, for a
//! patient or a hospital to carry to another hospital: `GET
//! /studies/{study}` and `GET /studies/{study}/series/{series}` when the
//! client asks for `application/zip` explicitly (the `Accept` header or
//! the `accept` query parameter, PS3.18 8.3.3.1); `multipart/related`
//! stays the default.
//!
//! The archive is a PS3.10 file-set: each instance exactly as stored (its
//! Part 10 file) under a File ID of upper-case components of at most eight
//! characters (PS3.10 8.5, PS3.11 STD-GEN: `DICOM/ST000001/SE000001/
//! IM000001`), and a `DICOMDIR` at the root built from the index
//! (`dicomdir.rs`), written first. Entries are stored uncompressed and
//! streamed with data descriptors (`writer.rs`): memory per download is
//! a few chunks and the central directory, whatever the study's size.
//! The length is known from the index, so the answer has a
//! Content-Length.
//!
//! Every download is audited (PS3.15 A.5.3 Export) before a byte is sent;
//! when the record cannot be written the answer is 503.
//!
//! Non-goals: no compression, no conversion (instances go as stored), no
//! icon images in the DICOMDIR.

mod dicomdir;
mod writer;

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Query as UrlQuery;
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use pacs_core::audit::{
    AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::query::{Level, Match, Query};
use pacs_core::records::{InstanceRecord, SeriesRecord, StudyRecord};
use pacs_core::{Permission, Principal, Uid};

use crate::error::{ApiError, ApiResult};
use crate::negotiate::{accept, parse_media_type, MediaRange};
use crate::AppState;
use dicomdir::{DirInstance, DirKey, DirPatient, DirSeries, DirStudy};
use writer::{archive_len, ZipWriter};

const ZIP: &str = "application/zip";
/// The File-set ID of every download (PS3.10 8.2: CS, up to 16 characters).
const FILE_SET_ID: &str = "SENPACS";
/// Largest ordinal a File ID component can carry (two letters and six
/// digits: PS3.10 8.5 allows eight characters per component).
const MAX_ORDINAL: usize = 999_999;
/// Chunks queued between the task that reads the blobs and the response.
const QUEUED_CHUNKS: usize = 4;

/// Whether the client asked for the ZIP: the `accept` query parameter
/// when present (it replaces the header, PS3.18 8.3.3.1), else the
/// `Accept` header, where `application/zip` must rank before every range
/// that would give `multipart/related` (wildcards included).
pub fn requested(headers: &HeaderMap, query: Option<&str>) -> bool {
    let from_query: Option<Vec<MediaRange>> = query.and_then(|q| {
        // Decoded as axum's `Query` extractor decodes the other resources'
        // parameters.
        let uri: Uri = format!("/?{q}").parse().ok()?;
        let UrlQuery(params) = UrlQuery::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
        let values: Vec<MediaRange> = params
            .iter()
            .filter(|(k, _)| k == "accept")
            .flat_map(|(_, v)| v.split(','))
            .filter_map(parse_media_type)
            .collect();
        (!values.is_empty()).then_some(values)
    });
    let ranges = from_query.unwrap_or_else(|| accept(headers));
    ranges
        .iter()
        .find(|r| {
            r.essence == ZIP
                || r.is_wildcard()
                || r.essence == "multipart/related"
                || r.essence == "application/dicom"
        })
        .is_some_and(|r| r.essence == ZIP)
}

/// The ZIP of a study; `head`: a HEAD request (the headers alone,
/// nothing exported, nothing audited).
pub async fn study(
    st: &AppState,
    extensions: &Extensions,
    study: Uid,
    head: bool,
) -> ApiResult<Response> {
    download(st, extensions, study, None, head).await
}

/// The ZIP of one series of a study.
pub async fn series(
    st: &AppState,
    extensions: &Extensions,
    study: Uid,
    series: Uid,
    head: bool,
) -> ApiResult<Response> {
    download(st, extensions, study, Some(series), head).await
}

/// One instance of the file-set: where it goes in the ZIP.
struct Member {
    name: String,
    record: InstanceRecord,
}

async fn download(
    st: &AppState,
    extensions: &Extensions,
    study: Uid,
    only_series: Option<Uid>,
    head: bool,
) -> ApiResult<Response> {
    let principal = extensions.get::<Principal>();
    let what = match &only_series {
        Some(s) => format!("series {s} in study {study}"),
        None => format!("study {study}"),
    };
    // A principal scoped to other studies does not learn this one exists.
    if principal.is_some_and(|p| !p.may_on_study(Permission::Read, &study)) {
        return Err(ApiError::not_found(format!("{what} not found")));
    }
    let (study_record, mut series_records) = study_and_series(st, &study).await?;
    if let Some(s) = &only_series {
        series_records.retain(|r| &r.series_instance_uid == s);
    }
    let mut instances = match &only_series {
        Some(s) => st.archive.instances_of_series(s).await?,
        None => st.archive.instances_of_study(&study).await?,
    };
    instances.retain(|r| r.study_instance_uid == study);
    let Some(study_record) = study_record.filter(|_| !instances.is_empty()) else {
        return Err(ApiError::not_found(format!("{what} not found")));
    };
    let leaves = leaf_records(st, &instances).await?;
    let (patient, members) = file_set(&study_record, series_records, instances, &leaves)?;

    let now = SystemTime::now();
    let media_uid = media_storage_uid(uuid::Uuid::new_v4().as_u128());
    let (date, time) = da_tm(now);
    let dicomdir = Bytes::from(dicomdir::encode(
        &patient,
        &media_uid,
        FILE_SET_ID,
        (&date, &time),
    ));
    let filename = format!("{}.zip", sanitize(study.as_str()));
    let length = archive_len(
        std::iter::once(("DICOMDIR", dicomdir.len() as u64))
            .chain(members.iter().map(|m| (m.name.as_str(), m.record.size))),
    );
    let response = Response::builder()
        .header(header::CONTENT_TYPE, ZIP)
        .header(header::CONTENT_LENGTH, length)
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                .map_err(ApiError::internal)?,
        )
        .header(header::CACHE_CONTROL, "no-store");
    if head {
        return response.body(Body::empty()).map_err(ApiError::internal);
    }

    // PS3.15 A.5.3.7: the export is recorded before anything is sent.
    let event = export_event(principal, &study_record, &what, &filename);
    if let Err(e) = st.archive.audit().record(event).await {
        tracing::warn!(error = %e, "study download refused: its audit record could not be written");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the download cannot be recorded in the audit trail; try again later",
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    tokio::spawn(produce(st.clone(), now, dicomdir, members, tx));
    response
        .body(Body::from_stream(rx))
        .map_err(ApiError::internal)
}

/// The study record and the records of its series, from the index.
async fn study_and_series(
    st: &AppState,
    study: &Uid,
) -> ApiResult<(Option<StudyRecord>, Vec<SeriesRecord>)> {
    let mut q = Query::new(Level::Series);
    q.add_key(pacs_core::dicom::tags::STUDY_INSTANCE_UID, study.as_str())
        .map_err(ApiError::internal)?;
    let found = st.archive.find(&q).await?;
    let mut study_record = None;
    let mut series = Vec::new();
    for Match {
        study: s,
        series: se,
        ..
    } in found.matches
    {
        if study_record.is_none() {
            study_record = s;
        }
        series.extend(se);
    }
    Ok((study_record, series))
}

/// SR classes (PS3.4 Annex O): every `1.2.840.10008.5.1.4.1.1.88.x`.
const SR_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.88.";
/// Key Object Selection Document Storage.
const KEY_OBJECT: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// The record type and keys of instances that are not images, by SOP
/// Instance UID: SR documents get an `SR DOCUMENT` record and key object
/// selections a `KEY OBJECT DOC` record (PS3.3 F.4, F.5), with their keys
/// from the DICOM JSON kept at ingest. Other instances get IMAGE records.
async fn leaf_records(
    st: &AppState,
    instances: &[InstanceRecord],
) -> ApiResult<BTreeMap<Uid, (&'static str, Vec<DirKey>)>> {
    let mut out = BTreeMap::new();
    for inst in instances {
        let class = inst.sop_class_uid.as_str();
        if !class.starts_with(SR_PREFIX) {
            continue;
        }
        let json = st.archive.instance_metadata(&inst.sop_instance_uid).await?;
        let meta: serde_json::Value = serde_json::from_slice(&json).map_err(ApiError::internal)?;
        out.insert(inst.sop_instance_uid.clone(), document_keys(class, &meta));
    }
    Ok(out)
}

/// The first value of `tag` (`GGGGEEEE`) in a DICOM JSON object, as text.
fn json_text(ds: &serde_json::Value, tag: &str) -> String {
    match &ds[tag]["Value"][0] {
        serde_json::Value::String(v) => v.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Keys of an SR DOCUMENT or KEY OBJECT DOC record (PS3.3 F.5: Content
/// Date and Time, Concept Name Code Sequence; for SR also Completion and
/// Verification Flags and, when verified, the Verification DateTime).
fn document_keys(class: &str, meta: &serde_json::Value) -> (&'static str, Vec<DirKey>) {
    let text =
        |tag: u32, vr: &'static [u8; 2], key: &str| DirKey::Text(tag, vr, json_text(meta, key));
    let concept = &meta["0040A043"]["Value"][0];
    let mut keys = vec![
        text(0x0008_0023, b"DA", "00080023"),
        text(0x0008_0033, b"TM", "00080033"),
        DirKey::Code(
            0x0040_A043,
            ["00080100", "00080102", "00080103", "00080104"].map(|t| json_text(concept, t)),
        ),
    ];
    if class == KEY_OBJECT {
        return ("KEY OBJECT DOC", keys);
    }
    keys.push(text(0x0040_A491, b"CS", "0040A491"));
    let verified = json_text(meta, "0040A493");
    if verified == "VERIFIED" {
        let observer = &meta["0040A073"]["Value"][0];
        keys.push(DirKey::Text(
            0x0040_A030,
            b"DT",
            json_text(observer, "0040A030"),
        ));
    }
    keys.push(DirKey::Text(0x0040_A493, b"CS", verified));
    ("SR DOCUMENT", keys)
}

/// An IS value as a number for ordering (unparsable ones last).
fn number(s: &str) -> i64 {
    s.trim().parse::<i64>().unwrap_or(i64::MAX)
}

/// Orders series and instances by number, gives each instance its File
/// ID, and builds the records of the DICOMDIR.
fn file_set(
    study: &StudyRecord,
    mut series: Vec<SeriesRecord>,
    instances: Vec<InstanceRecord>,
    leaves: &BTreeMap<Uid, (&'static str, Vec<DirKey>)>,
) -> ApiResult<(DirPatient, Vec<Member>)> {
    series.sort_by(|a, b| {
        (number(&a.series_number), a.series_instance_uid.as_str())
            .cmp(&(number(&b.series_number), b.series_instance_uid.as_str()))
    });
    // Instances whose series record is missing still go in, under a
    // series record made from the instance.
    let mut by_series: Vec<(Option<SeriesRecord>, Uid, Vec<InstanceRecord>)> = series
        .into_iter()
        .map(|s| {
            let uid = s.series_instance_uid.clone();
            (Some(s), uid, Vec::new())
        })
        .collect();
    for inst in instances {
        match by_series
            .iter_mut()
            .find(|(_, uid, _)| *uid == inst.series_instance_uid)
        {
            Some((_, _, list)) => list.push(inst),
            None => by_series.push((None, inst.series_instance_uid.clone(), vec![inst])),
        }
    }
    by_series.retain(|(_, _, list)| !list.is_empty());
    if by_series.len() > MAX_ORDINAL || by_series.iter().any(|(_, _, l)| l.len() > MAX_ORDINAL) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many series or instances for one DICOMDIR file-set",
        ));
    }
    let mut members = Vec::new();
    let mut dir_series = Vec::new();
    for (si, (record, uid, mut list)) in by_series.into_iter().enumerate() {
        list.sort_by(|a, b| {
            (number(&a.instance_number), a.sop_instance_uid.as_str())
                .cmp(&(number(&b.instance_number), b.sop_instance_uid.as_str()))
        });
        let se = format!("SE{:06}", si + 1);
        let mut dir_instances = Vec::with_capacity(list.len());
        for (ii, inst) in list.into_iter().enumerate() {
            let file_id = vec![
                "DICOM".to_owned(),
                "ST000001".to_owned(),
                se.clone(),
                format!("IM{:06}", ii + 1),
            ];
            let (record_type, keys) = leaves
                .get(&inst.sop_instance_uid)
                .cloned()
                .unwrap_or(("IMAGE", Vec::new()));
            dir_instances.push(DirInstance {
                record_type,
                keys,
                number: inst.instance_number.clone(),
                file_id: file_id.clone(),
                sop_class_uid: inst.sop_class_uid.to_string(),
                sop_instance_uid: inst.sop_instance_uid.to_string(),
                transfer_syntax_uid: inst.transfer_syntax_uid.clone(),
            });
            members.push(Member {
                name: file_id.join("/"),
                record: inst,
            });
        }
        dir_series.push(DirSeries {
            uid: uid.to_string(),
            modality: record
                .as_ref()
                .map(|r| r.modality.clone())
                .unwrap_or_default(),
            number: record.map(|r| r.series_number).unwrap_or_default(),
            instances: dir_instances,
        });
    }
    let patient = DirPatient {
        id: study.patient_id.clone(),
        name: study.patient_name.clone(),
        study: DirStudy {
            uid: study.study_instance_uid.to_string(),
            date: study.study_date.clone(),
            time: study.study_time.clone(),
            description: study.study_description.clone(),
            id: study.study_id.clone(),
            accession_number: study.accession_number.clone(),
            series: dir_series,
        },
    };
    Ok((patient, members))
}

/// Sends the archive: the DICOMDIR, each instance as stored (one chunk at
/// a time, its CRC-32 computed on the way), the central directory. Stops
/// when the client goes away; a failed read ends the body with an error,
/// so the client sees a truncated download, never a wrong file.
async fn produce(
    st: AppState,
    now: SystemTime,
    dicomdir: Bytes,
    members: Vec<Member>,
    mut tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut zip = ZipWriter::new(now);
    let result: Result<(), String> = async {
        let send_err = |_| "client went away".to_owned();
        tx.send(Ok(zip.begin_entry("DICOMDIR", dicomdir.len() as u64)))
            .await
            .map_err(send_err)?;
        let crc = crc32fast::hash(&dicomdir);
        let len = dicomdir.len() as u64;
        tx.send(Ok(dicomdir)).await.map_err(send_err)?;
        let descriptor = zip.end_entry(crc, len).map_err(|e| e.to_string())?;
        tx.send(Ok(descriptor)).await.map_err(send_err)?;
        for m in &members {
            let (_, mut blob) = st
                .archive
                .retrieve(&m.record.sop_instance_uid)
                .await
                .map_err(|e| format!("instance {}: {e}", m.record.sop_instance_uid))?;
            tx.send(Ok(zip.begin_entry(&m.name, m.record.size)))
                .await
                .map_err(send_err)?;
            let mut hasher = crc32fast::Hasher::new();
            let mut written = 0u64;
            while let Some(chunk) = blob.next().await {
                let chunk =
                    chunk.map_err(|e| format!("instance {}: {e}", m.record.sop_instance_uid))?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                tx.send(Ok(chunk)).await.map_err(send_err)?;
            }
            let descriptor = zip
                .end_entry(hasher.finalize(), written)
                .map_err(|e| e.to_string())?;
            tx.send(Ok(descriptor)).await.map_err(send_err)?;
        }
        let end = std::mem::replace(&mut zip, ZipWriter::new(now)).finish();
        tx.send(Ok(end)).await.map_err(send_err)?;
        Ok(())
    }
    .await;
    if let Err(why) = result {
        tracing::warn!(error = %why, "study download ended early");
        let _ = tx.send(Err(std::io::Error::other(why))).await;
    }
}

/// The Export audit event of a download (PS3.15 A.5.3.7): the requestor,
/// the destination (the downloaded file), the patient and the study.
fn export_event(
    principal: Option<&Principal>,
    study: &StudyRecord,
    what: &str,
    filename: &str,
) -> AuditEvent {
    let requestor = match principal {
        Some(p) => AuditActor {
            user_id: p.name.clone(),
            alt_user_id: None,
            role: p.role.map(|r| r.as_str().to_owned()),
            address: p.address.map(|a| a.to_string()),
            requestor: true,
        },
        None => AuditActor {
            user_id: "anonymous".to_owned(),
            requestor: true,
            ..AuditActor::default()
        },
    };
    AuditEvent::new(
        AuditEventId::Export,
        AuditAction::Read,
        AuditOutcome::Success,
    )
    .describe(format!("ZIP download of {what}"))
    .actor(requestor)
    .actor(AuditActor {
        user_id: filename.to_owned(),
        // DCM 110154 Destination Media.
        role: Some("Destination Media".to_owned()),
        ..AuditActor::default()
    })
    .object(AuditObject::Patient {
        id: study.patient_id.clone(),
        name: None,
    })
    .object(AuditObject::Study {
        uid: study.study_instance_uid.to_string(),
    })
}

/// A `2.25.` UID (PS3.5 B.2) of always 39 digits from a random number, so
/// the DICOMDIR, and the ZIP, of a study always have the same length (a
/// HEAD and the GET that follows agree on Content-Length).
fn media_storage_uid(random: u128) -> String {
    const E38: u128 = 10u128.pow(38);
    format!("2.25.{}", E38 + random % (2 * E38))
}

/// A file name with only letters, digits, `.`, `-` and `_`.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(120)
        .collect();
    if s.is_empty() {
        "study".to_owned()
    } else {
        s
    }
}

/// `(YYYYMMDD, HHMMSS)` of `t` in UTC.
fn da_tm(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = writer::civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let r = secs % 86_400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", r / 3600, (r % 3600) / 60, r % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn zip_only_when_asked_for_first() {
        assert!(requested(&with_accept("application/zip"), None));
        assert!(requested(&with_accept("application/zip, */*;q=0.5"), None));
        assert!(!requested(&HeaderMap::new(), None));
        assert!(!requested(&with_accept("*/*"), None));
        assert!(!requested(&with_accept("*/*, application/zip"), None));
        assert!(!requested(
            &with_accept("multipart/related; type=\"application/dicom\""),
            None
        ));
        assert!(!requested(&with_accept("text/html"), None));
        // The query parameter replaces the header (a plain link).
        assert!(requested(
            &with_accept("text/html,*/*;q=0.8"),
            Some("accept=application%2Fzip")
        ));
        assert!(requested(
            &HeaderMap::new(),
            Some("x=1&accept=application/zip")
        ));
        assert!(!requested(
            &with_accept("application/zip"),
            Some("accept=multipart%2Frelated%3B%20type%3D%22application%2Fdicom%22")
        ));
    }

    #[test]
    fn media_storage_uids_have_one_length() {
        for r in [0, 1, u128::MAX, u128::MAX / 3, 10u128.pow(38) * 2 - 1] {
            let uid = media_storage_uid(r);
            assert_eq!(uid.len(), 5 + 39, "{uid}");
            assert!(Uid::parse(&uid).is_ok(), "{uid}");
        }
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("1.2.840.113"), "1.2.840.113");
        assert_eq!(sanitize("a\"b;c/../d"), "abc..d");
        assert_eq!(sanitize("\"/"), "study");
    }

    #[test]
    fn dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_765_000_000);
        assert_eq!(da_tm(t), ("20251206".to_owned(), "054640".to_owned()));
    }
}
