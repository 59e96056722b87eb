//! Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET,
//! a strict state machine over [`pacs_core::mpps`] records, no IO of its
//! own beyond the store it is given (so it is tested without sockets).
//!
//! - N-CREATE is accepted only with Performed Procedure Step Status
//!   (0040,0252) "IN PROGRESS", otherwise 0106H Invalid attribute value
//!   (F.7.2.1.3); a SOP Instance UID already created gets 0111H Duplicate
//!   SOP instance; an absent status 0120H Missing attribute.
//! - N-SET is accepted only while the stored status is IN PROGRESS,
//!   otherwise 0110H Processing failure with an Error Comment (F.7.2.2.3);
//!   an unknown instance gets 0112H No such SOP instance.
//! - COMPLETED and DISCONTINUED are final. The attributes of an N-SET
//!   replace those of the record at the top level (a sequence is replaced
//!   whole, PS3.4 F.7.2.2.1).
//! - Each record is linked to its scheduled steps (Scheduled Step
//!   Attribute Sequence: Accession Number, SPS ID, Requested Procedure ID,
//!   Study Instance UID) and to the series it produced (Performed Series
//!   Sequence); the [`StepStatusSink`] hears of IN PROGRESS at creation and
//!   of the final status.
//!
//! Non-goals: checking that every Type 1 attribute of Table F.7.2-1 is
//! present (only the status is required), Attribute Lists in responses.

use pacs_core::dicom::DataSet;
use pacs_core::jobs::now_ms;
use pacs_core::mpps::{MppsRecord, MppsStatus, MppsStore, ScheduledStepRef, StepStatusSink};
use pacs_core::Uid;
use tracing::{info, warn};

use crate::identifier::encode_dataset;
use crate::message::{NRequest, NResponse};
use crate::status::Status;

const PPS_STATUS: u32 = 0x0040_0252;
const SCHEDULED_STEP_ATTRIBUTE_SEQUENCE: u32 = 0x0040_0270;
const PERFORMED_SERIES_SEQUENCE: u32 = 0x0040_0340;
const ACCESSION_NUMBER: u32 = 0x0008_0050;
const SPS_ID: u32 = 0x0040_0009;
const REQUESTED_PROCEDURE_ID: u32 = 0x0040_1001;
const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
const SERIES_INSTANCE_UID: u32 = 0x0020_000E;

/// What the MPPS handlers need.
pub(crate) struct MppsContext<'a> {
    pub store: &'a dyn MppsStore,
    pub sink: &'a dyn StepStatusSink,
    pub calling_ae: &'a str,
}

fn steps_of(ds: &DataSet) -> Vec<ScheduledStepRef> {
    ds.sequence(SCHEDULED_STEP_ATTRIBUTE_SEQUENCE)
        .unwrap_or_default()
        .iter()
        .map(|item| ScheduledStepRef {
            accession_number: item.string(ACCESSION_NUMBER).unwrap_or_default(),
            scheduled_procedure_step_id: item.string(SPS_ID).unwrap_or_default(),
            requested_procedure_id: item.string(REQUESTED_PROCEDURE_ID).unwrap_or_default(),
            study_instance_uid: item.uid(STUDY_INSTANCE_UID).unwrap_or_default(),
        })
        .collect()
}

fn series_of(ds: &DataSet) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in ds.sequence(PERFORMED_SERIES_SEQUENCE).unwrap_or_default() {
        if let Some(uid) = item.uid(SERIES_INSTANCE_UID) {
            if Uid::parse(&uid).is_ok() && !out.contains(&uid) {
                out.push(uid);
            }
        }
    }
    out
}

fn refuse(rq: &NRequest, status: Status, comment: &str) -> NResponse {
    rq.response(status, Some(comment))
}

async fn tell(ctx: &MppsContext<'_>, record: &MppsRecord) {
    for step in &record.steps {
        ctx.sink
            .step_status(step, record.status, &record.sop_instance_uid)
            .await;
    }
    if record.status.is_final() {
        ctx.sink.performed(record).await;
    }
}

/// N-CREATE (PS3.4 F.7.2.1).
pub(crate) async fn n_create(ctx: &MppsContext<'_>, rq: &NRequest, ds: &DataSet) -> NResponse {
    let Some(uid) = rq.sop_instance_uid.as_deref() else {
        return refuse(
            rq,
            Status::MISSING_ATTRIBUTE,
            "Affected SOP Instance UID is required",
        );
    };
    if Uid::parse(uid).is_err() {
        return refuse(
            rq,
            Status::INVALID_OBJECT_INSTANCE,
            "Affected SOP Instance UID is not a valid UID",
        );
    }
    let status = match ds.string(PPS_STATUS) {
        None => {
            return refuse(
                rq,
                Status::MISSING_ATTRIBUTE,
                "Performed Procedure Step Status is missing",
            )
        }
        Some(s) => MppsStatus::parse(&s),
    };
    if status != Some(MppsStatus::InProgress) {
        return refuse(
            rq,
            Status::INVALID_ATTRIBUTE_VALUE,
            "N-CREATE requires Performed Procedure Step Status IN PROGRESS",
        );
    }
    let now = now_ms();
    let record = MppsRecord {
        sop_instance_uid: uid.to_owned(),
        status: MppsStatus::InProgress,
        creator_ae: ctx.calling_ae.to_owned(),
        created_ms: now,
        updated_ms: now,
        steps: steps_of(ds),
        series_uids: series_of(ds),
        dataset: encode_dataset(ds, true),
    };
    match ctx.store.create(&record).await {
        Ok(true) => {
            info!(mpps = %uid, steps = record.steps.len(), "MPPS created IN PROGRESS");
            tell(ctx, &record).await;
            rq.response(Status::SUCCESS, None)
        }
        Ok(false) => refuse(
            rq,
            Status::DUPLICATE_SOP_INSTANCE,
            "an MPPS with this SOP Instance UID exists",
        ),
        Err(e) => {
            warn!(error = %e, "MPPS not stored");
            refuse(rq, Status::OUT_OF_RESOURCES, "MPPS could not be stored")
        }
    }
}

/// The stored data set with the top-level attributes of `changes` put in
/// place of (or beside) its own.
fn merged(stored: &DataSet, changes: &DataSet) -> DataSet {
    let mut elements: Vec<pacs_core::dicom::Element> = stored
        .iter()
        .filter(|e| !changes.contains(e.tag))
        .cloned()
        .collect();
    elements.extend(changes.iter().cloned());
    DataSet::from_elements(elements)
}

/// N-SET (PS3.4 F.7.2.2).
pub(crate) async fn n_set(
    ctx: &MppsContext<'_>,
    rq: &NRequest,
    ds: &DataSet,
    limits: &pacs_core::Limits,
) -> NResponse {
    let Some(uid) = rq.sop_instance_uid.as_deref() else {
        return refuse(
            rq,
            Status::MISSING_ATTRIBUTE,
            "Requested SOP Instance UID is required",
        );
    };
    let mut record = match ctx.store.get(uid).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return refuse(
                rq,
                Status::NO_SUCH_SOP_INSTANCE,
                "no MPPS with this SOP Instance UID",
            )
        }
        Err(e) => {
            warn!(error = %e, "MPPS store unavailable");
            return refuse(rq, Status::OUT_OF_RESOURCES, "MPPS store unavailable");
        }
    };
    if record.status.is_final() {
        // F.7.2.2.3: no N-SET once COMPLETED or DISCONTINUED.
        let comment = format!("MPPS is {}: no further N-SET", record.status.as_str());
        return refuse(rq, Status::PROCESSING_FAILURE, &comment);
    }
    let new_status = match ds.string(PPS_STATUS) {
        None => record.status,
        Some(s) => match MppsStatus::parse(&s) {
            Some(st) => st,
            None => {
                return refuse(
                    rq,
                    Status::INVALID_ATTRIBUTE_VALUE,
                    "Performed Procedure Step Status is not a defined term",
                )
            }
        },
    };
    let stored = match pacs_core::dicom::parse_dataset(
        &record.dataset,
        &pacs_core::dicom::TransferSyntax::explicit_vr_little_endian(),
        true,
        limits,
    ) {
        Ok(h) => h.dataset,
        Err(e) => {
            warn!(mpps = %uid, error = %e, "stored MPPS data set unreadable");
            return refuse(rq, Status::PROCESSING_FAILURE, "stored MPPS is unreadable");
        }
    };
    let all = merged(&stored, ds);
    record.status = new_status;
    record.updated_ms = now_ms();
    record.steps = steps_of(&all);
    record.series_uids = series_of(&all);
    record.dataset = encode_dataset(&all, true);
    match ctx.store.update(&record).await {
        Ok(true) => {
            info!(mpps = %uid, status = new_status.as_str(), series = record.series_uids.len(), "MPPS updated");
            if new_status.is_final() {
                tell(ctx, &record).await;
            }
            rq.response(Status::SUCCESS, None)
        }
        // Finished meanwhile (an N-SET on another node or association),
        // or removed.
        Ok(false) => match ctx.store.get(uid).await {
            Ok(Some(r)) if r.status.is_final() => {
                let comment = format!("MPPS is {}: no further N-SET", r.status.as_str());
                refuse(rq, Status::PROCESSING_FAILURE, &comment)
            }
            _ => refuse(
                rq,
                Status::NO_SUCH_SOP_INSTANCE,
                "no MPPS with this SOP Instance UID",
            ),
        },
        Err(e) => {
            warn!(error = %e, "MPPS not stored");
            refuse(rq, Status::OUT_OF_RESOURCES, "MPPS could not be stored")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::identifier::{encode, OutElement};
    use crate::message::command_field;
    use pacs_core::dicom::{parse_dataset, TransferSyntax};
    use pacs_core::mpps::MemoryMppsStore;
    use pacs_core::Limits;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<(String, &'static str)>>);

    #[async_trait::async_trait]
    impl StepStatusSink for Sink {
        async fn step_status(&self, step: &ScheduledStepRef, status: MppsStatus, _: &str) {
            self.0
                .lock()
                .unwrap()
                .push((step.accession_number.clone(), status.as_str()));
        }
    }

    fn ds(status: Option<&str>, series: &[&str]) -> DataSet {
        let mut elements = vec![OutElement::sequence(
            SCHEDULED_STEP_ATTRIBUTE_SEQUENCE,
            vec![vec![
                OutElement::text(ACCESSION_NUMBER, *b"SH", "ACC1"),
                OutElement::text(STUDY_INSTANCE_UID, *b"UI", "1.2.3"),
                OutElement::text(SPS_ID, *b"SH", "SPS1"),
            ]],
        )];
        if let Some(s) = status {
            elements.push(OutElement::text(PPS_STATUS, *b"CS", s));
        }
        if !series.is_empty() {
            elements.push(OutElement::sequence(
                PERFORMED_SERIES_SEQUENCE,
                series
                    .iter()
                    .map(|s| vec![OutElement::text(SERIES_INSTANCE_UID, *b"UI", s)])
                    .collect(),
            ));
        }
        elements.sort_by_key(|e| e.tag());
        let bytes = encode(&elements, true);
        parse_dataset(
            &bytes,
            &TransferSyntax::explicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset
    }

    fn rq(field: u16, uid: &str) -> NRequest {
        NRequest {
            field,
            message_id: 1,
            sop_class_uid: crate::negotiation::MPPS_SOP_CLASS.into(),
            sop_instance_uid: Some(uid.into()),
            type_id: None,
            has_data_set: true,
        }
    }

    #[tokio::test]
    async fn the_state_machine() {
        let store = MemoryMppsStore::default();
        let sink = Sink::default();
        let ctx = MppsContext {
            store: &store,
            sink: &sink,
            calling_ae: "CT1",
        };
        let limits = Limits::default();
        let create = rq(command_field::N_CREATE_RQ, "1.2.3.4");
        let set = rq(command_field::N_SET_RQ, "1.2.3.4");
        let status = |r: NResponse| r.status;
        assert_eq!(
            status(
                n_create(
                    &ctx,
                    &rq(command_field::N_CREATE_RQ, "1.2.3.9"),
                    &ds(Some("COMPLETED"), &[])
                )
                .await
            ),
            Status::INVALID_ATTRIBUTE_VALUE
        );
        assert_eq!(
            status(n_create(&ctx, &create, &ds(None, &[])).await),
            Status::MISSING_ATTRIBUTE
        );
        assert_eq!(
            status(n_create(&ctx, &create, &ds(Some("IN PROGRESS"), &[])).await),
            Status::SUCCESS
        );
        assert_eq!(
            status(n_create(&ctx, &create, &ds(Some("IN PROGRESS"), &[])).await),
            Status::DUPLICATE_SOP_INSTANCE
        );
        assert_eq!(
            status(
                n_set(
                    &ctx,
                    &rq(command_field::N_SET_RQ, "1.2.3.5"),
                    &ds(None, &[]),
                    &limits
                )
                .await
            ),
            Status::NO_SUCH_SOP_INSTANCE
        );
        assert_eq!(
            status(n_set(&ctx, &set, &ds(Some("BOGUS"), &[]), &limits).await),
            Status::INVALID_ATTRIBUTE_VALUE
        );
        assert_eq!(
            status(
                n_set(
                    &ctx,
                    &set,
                    &ds(Some("IN PROGRESS"), &["1.2.3.4.1"]),
                    &limits
                )
                .await
            ),
            Status::SUCCESS
        );
        assert_eq!(
            status(
                n_set(
                    &ctx,
                    &set,
                    &ds(Some("COMPLETED"), &["1.2.3.4.1", "1.2.3.4.2"]),
                    &limits
                )
                .await
            ),
            Status::SUCCESS
        );
        let after = n_set(&ctx, &set, &ds(Some("IN PROGRESS"), &[]), &limits).await;
        assert_eq!(after.status, Status::PROCESSING_FAILURE);
        assert!(after.error_comment.unwrap().contains("COMPLETED"));
        let record = store.get("1.2.3.4").await.unwrap().unwrap();
        assert_eq!(record.status, MppsStatus::Completed);
        assert_eq!(record.series_uids, vec!["1.2.3.4.1", "1.2.3.4.2"]);
        assert_eq!(record.steps[0].scheduled_procedure_step_id, "SPS1");
        assert_eq!(record.creator_ae, "CT1");
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![
                ("ACC1".to_owned(), "IN PROGRESS"),
                ("ACC1".to_owned(), "COMPLETED")
            ]
        );
    }
}
