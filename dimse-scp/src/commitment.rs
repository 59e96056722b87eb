//! Storage Commitment Push Model SCP (PS3.4 J.3).
//!
//! An N-ACTION (Action Type 1) on the well-known instance names a
//! Transaction UID and the instances to commit (Referenced SOP Sequence).
//! Its success response means only "received" (J.3.2.1.2): the request is
//! first made durable as a job of the queue ([`JOB_KIND`]), then answered.
//! The report (N-EVENT-REPORT, Event Type 1 when every instance is
//! committed, 2 with a Failed SOP Sequence otherwise, J.3.3.1.2) is built
//! when it is sent: each instance must be in the index and its stored
//! bytes must still have the size and SHA-256 recorded at ingest
//! ([`pacs_core::Archive::check_instance`]). Failure reasons: 0112H no
//! such object instance, 0110H processing failure (missing or damaged
//! blob), 0119H class/instance conflict (stored under another SOP class).
//!
//! Where the report goes: on the same association when the requestor took
//! the SCP role for this SOP class (PS3.7 D.3.3.4) and is still there;
//! otherwise the job ([`ReportHandler`]) opens a new association to the
//! `[[remote_ae]]` whose title is the requestor's calling AE, proposing
//! the SCP role by role selection (J.3.3.1.3), retried with back-off by
//! the queue's runner, across restarts. A job held back for the same
//! association is released to the runner when that association ends
//! without the report delivered.
//!
//! Non-goals: the SCU side (requesting commitment from another archive),
//! remembering retired Transaction UIDs (a repeated request gets a fresh
//! report), storage media file-set IDs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pacs_core::dicom::{DataSet, IMPLICIT_VR_LITTLE_ENDIAN};
use pacs_core::jobs::{Job, JobError, JobHandler, NewJob};
use pacs_core::{Archive, InstanceCheck, Uid};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::identifier::{encode, OutElement};
use crate::message::NRequest;
use crate::negotiation::{STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_SOP_CLASS};
use crate::outbound::OutboundSettings;
use crate::status::Status;

/// The job kind of a pending report.
pub const JOB_KIND: &str = "stgcmt-report";
/// The version of [`ReportPayload`]'s JSON.
const PAYLOAD_VERSION: u32 = 1;
/// Event Type IDs (PS3.4 J.3.3.1.1).
pub(crate) const ALL_COMMITTED: u16 = 1;
pub(crate) const SOME_FAILED: u16 = 2;

const RETRIEVE_AE_TITLE: u32 = 0x0008_0054;
const REFERENCED_SOP_CLASS_UID: u32 = 0x0008_1150;
const REFERENCED_SOP_INSTANCE_UID: u32 = 0x0008_1155;
const TRANSACTION_UID: u32 = 0x0008_1195;
const FAILURE_REASON: u32 = 0x0008_1197;
const FAILED_SOP_SEQUENCE: u32 = 0x0008_1198;
const REFERENCED_SOP_SEQUENCE: u32 = 0x0008_1199;

/// Failure Reasons (PS3.4 J.3.3.1.2, PS3.3 C.14.1.1).
pub(crate) const PROCESSING_FAILURE: u16 = 0x0110;
pub(crate) const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
pub(crate) const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;

/// A commitment request as the job keeps it (JSON, version
/// [`PAYLOAD_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReportPayload {
    pub transaction_uid: String,
    /// The calling AE title of the N-ACTION: where the report goes.
    pub requestor_ae: String,
    /// (SOP Class UID, SOP Instance UID) of each referenced instance.
    pub references: Vec<(String, String)>,
}

impl ReportPayload {
    pub fn to_job(&self, delay: Duration) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob {
            kind: JOB_KIND.to_owned(),
            payload_version: PAYLOAD_VERSION,
            payload: serde_json::to_string(self)?,
            destination: Some(self.requestor_ae.clone()),
            max_attempts: None,
            delay,
        })
    }

    fn from_job(job: &Job) -> Result<ReportPayload, JobError> {
        if job.payload_version != PAYLOAD_VERSION {
            return Err(JobError::Permanent(format!(
                "report payload of version {}: this pacs reads version {PAYLOAD_VERSION}",
                job.payload_version
            )));
        }
        serde_json::from_str(&job.payload)
            .map_err(|e| JobError::Permanent(format!("unreadable report payload: {e}")))
    }
}

/// The SOP Instance UIDs named by commitment reports already delivered
/// (jobs of [`JOB_KIND`] in state done), for pages that show which exams
/// the modality has been told are safe. A report names failed instances
/// too; callers check that an instance is still in the index.
pub fn reported_instances(jobs: &[Job]) -> std::collections::HashSet<String> {
    jobs.iter()
        .filter(|j| j.kind == JOB_KIND && j.state == pacs_core::jobs::JobState::Done)
        .filter_map(|j| ReportPayload::from_job(j).ok())
        .flat_map(|p| p.references.into_iter().map(|(_, sop)| sop))
        .collect()
}

/// Reads an N-ACTION-RQ and its data set (PS3.4 J.3.2.1.1), or says which
/// status refuses it.
pub(crate) fn parse_action(
    rq: &NRequest,
    ds: &DataSet,
    calling_ae: &str,
) -> Result<ReportPayload, (Status, String)> {
    let refuse = |s: Status, m: &str| Err((s, m.to_owned()));
    if rq.sop_instance_uid.as_deref() != Some(STORAGE_COMMITMENT_INSTANCE) {
        return refuse(
            Status::NO_SUCH_SOP_INSTANCE,
            "Requested SOP Instance UID must be the well-known instance 1.2.840.10008.1.20.1.1",
        );
    }
    if rq.type_id != Some(1) {
        return refuse(Status::NO_SUCH_ACTION_TYPE, "Action Type ID must be 1");
    }
    let transaction_uid = match ds.uid(TRANSACTION_UID) {
        None => return refuse(Status::MISSING_ATTRIBUTE, "Transaction UID is missing"),
        Some(t) if Uid::parse(&t).is_err() => {
            return refuse(
                Status::INVALID_ATTRIBUTE_VALUE,
                "Transaction UID is not a valid UID",
            )
        }
        Some(t) => t,
    };
    let items = ds.sequence(REFERENCED_SOP_SEQUENCE).unwrap_or_default();
    if items.is_empty() {
        return refuse(
            Status::MISSING_ATTRIBUTE,
            "Referenced SOP Sequence is missing or empty",
        );
    }
    let mut references = Vec::with_capacity(items.len());
    for item in items {
        match (
            item.uid(REFERENCED_SOP_CLASS_UID),
            item.uid(REFERENCED_SOP_INSTANCE_UID),
        ) {
            (Some(c), Some(i)) if Uid::parse(&c).is_ok() && Uid::parse(&i).is_ok() => {
                references.push((c, i))
            }
            _ => {
                return refuse(
                    Status::INVALID_ATTRIBUTE_VALUE,
                    "a Referenced SOP Sequence item lacks valid SOP Class and Instance UIDs",
                )
            }
        }
    }
    Ok(ReportPayload {
        transaction_uid,
        requestor_ae: calling_ae.to_owned(),
        references,
    })
}

/// The outcome for every referenced instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub transaction_uid: String,
    pub committed: Vec<(String, String)>,
    /// (class, instance, Failure Reason)
    pub failed: Vec<(String, String, u16)>,
}

impl Report {
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            ALL_COMMITTED
        } else {
            SOME_FAILED
        }
    }

    /// The Event Information (PS3.4 Table J.3-2).
    pub fn encode(&self, our_ae: &str, explicit_vr: bool) -> Vec<u8> {
        let mut elements = Vec::new();
        if !self.committed.is_empty() {
            elements.push(OutElement::text(RETRIEVE_AE_TITLE, *b"AE", our_ae));
        }
        elements.push(OutElement::text(
            TRANSACTION_UID,
            *b"UI",
            &self.transaction_uid,
        ));
        if !self.failed.is_empty() {
            let items = self
                .failed
                .iter()
                .map(|(c, i, reason)| {
                    vec![
                        OutElement::text(REFERENCED_SOP_CLASS_UID, *b"UI", c),
                        OutElement::text(REFERENCED_SOP_INSTANCE_UID, *b"UI", i),
                        OutElement::text(FAILURE_REASON, *b"US", &reason.to_string()),
                    ]
                })
                .collect();
            elements.push(OutElement::sequence(FAILED_SOP_SEQUENCE, items));
        }
        if !self.committed.is_empty() {
            let items = self
                .committed
                .iter()
                .map(|(c, i)| {
                    vec![
                        OutElement::text(REFERENCED_SOP_CLASS_UID, *b"UI", c),
                        OutElement::text(REFERENCED_SOP_INSTANCE_UID, *b"UI", i),
                    ]
                })
                .collect();
            elements.push(OutElement::sequence(REFERENCED_SOP_SEQUENCE, items));
        }
        encode(&elements, explicit_vr)
    }
}

/// Checks every referenced instance. `Err` when the archive cannot be
/// read at all (worth retrying later).
pub(crate) async fn check(archive: &Archive, payload: &ReportPayload) -> Result<Report, String> {
    let mut report = Report {
        transaction_uid: payload.transaction_uid.clone(),
        committed: Vec::new(),
        failed: Vec::new(),
    };
    for (class, instance) in &payload.references {
        let uid = match Uid::parse(instance) {
            Ok(u) => u,
            Err(_) => {
                report
                    .failed
                    .push((class.clone(), instance.clone(), NO_SUCH_OBJECT_INSTANCE));
                continue;
            }
        };
        let reason = match archive.check_instance(&uid).await {
            Ok(InstanceCheck::Intact(record)) if record.sop_class_uid.as_str() == class => None,
            Ok(InstanceCheck::Intact(_)) => Some(CLASS_INSTANCE_CONFLICT),
            Ok(InstanceCheck::Missing) => Some(NO_SUCH_OBJECT_INSTANCE),
            Ok(InstanceCheck::Damaged(why)) => {
                warn!(sop = %uid, problem = %why, "storage commitment: stored object does not verify");
                Some(PROCESSING_FAILURE)
            }
            Err(e) => return Err(format!("archive unavailable: {e}")),
        };
        match reason {
            None => report.committed.push((class.clone(), instance.clone())),
            Some(r) => report.failed.push((class.clone(), instance.clone(), r)),
        }
    }
    Ok(report)
}

/// Sends pending reports on new associations (the queue's handler of
/// [`JOB_KIND`]).
pub struct ReportHandler {
    archive: Archive,
    outbound: OutboundSettings,
}

impl ReportHandler {
    pub fn new(archive: Archive, config: &crate::DimseConfig) -> Arc<ReportHandler> {
        Arc::new(ReportHandler {
            archive,
            outbound: OutboundSettings::from_config(config),
        })
    }
}

#[async_trait]
impl JobHandler for ReportHandler {
    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let payload = ReportPayload::from_job(job)?;
        let Some(remote) = self.outbound.remote(&payload.requestor_ae) else {
            return Err(JobError::Permanent(format!(
                "no [[remote_ae]] with ae_title {:?} to send the report to",
                payload.requestor_ae
            )));
        };
        let report = check(&self.archive, &payload)
            .await
            .map_err(JobError::Retry)?;
        // PS3.4 J.3.3.1.3: we act as the SCP on an association we request.
        let (mut out, context) = self
            .outbound
            .open_one(
                remote,
                STORAGE_COMMITMENT_SOP_CLASS,
                vec![(STORAGE_COMMITMENT_SOP_CLASS.to_owned(), false, true)],
            )
            .await
            .map_err(JobError::Retry)?;
        if !out.we_are_scp(STORAGE_COMMITMENT_SOP_CLASS) {
            info!(peer = %remote.ae_title, "the requestor did not confirm the SCP role; sending the report anyway");
        }
        let data = report.encode(
            &self.outbound.our_ae,
            context.transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN,
        );
        let status = out
            .n_event_report(
                context.id,
                STORAGE_COMMITMENT_SOP_CLASS,
                STORAGE_COMMITMENT_INSTANCE,
                report.event_type(),
                &data,
            )
            .await
            .map_err(|e| JobError::Retry(format!("sending the report: {e}")))?;
        out.release().await;
        if status != Status::SUCCESS {
            return Err(JobError::Retry(format!(
                "the requestor answered the report with status {status}"
            )));
        }
        info!(peer = %remote.ae_title, transaction = %report.transaction_uid,
            committed = report.committed.len(), failed = report.failed.len(),
            "storage commitment report delivered on a new association");
        let peer = crate::audit::Peer {
            calling_ae: payload.requestor_ae.clone(),
            address: remote.host.parse().ok(),
            our_ae: self.outbound.our_ae.clone(),
        };
        let event = crate::audit::commitment_report(
            &self.archive,
            &peer,
            &report.transaction_uid,
            &report.committed,
            report.failed.len(),
        )
        .await;
        if let Err(e) = self.archive.audit().record(event).await {
            tracing::error!(error = %e, "audit record not written");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::command_field;
    use pacs_core::dicom::{parse_dataset, TransferSyntax};
    use pacs_core::Limits;

    fn action(instance: &str, type_id: u16) -> NRequest {
        NRequest {
            field: command_field::N_ACTION_RQ,
            message_id: 3,
            sop_class_uid: STORAGE_COMMITMENT_SOP_CLASS.into(),
            sop_instance_uid: Some(instance.into()),
            type_id: Some(type_id),
            has_data_set: true,
        }
    }

    fn parse(bytes: &[u8]) -> DataSet {
        parse_dataset(
            bytes,
            &TransferSyntax::implicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset
    }

    fn request(refs: &[(&str, &str)]) -> DataSet {
        let items = refs
            .iter()
            .map(|(c, i)| {
                vec![
                    OutElement::text(REFERENCED_SOP_CLASS_UID, *b"UI", c),
                    OutElement::text(REFERENCED_SOP_INSTANCE_UID, *b"UI", i),
                ]
            })
            .collect();
        parse(&encode(
            &[
                OutElement::text(TRANSACTION_UID, *b"UI", "1.2.9"),
                OutElement::sequence(REFERENCED_SOP_SEQUENCE, items),
            ],
            false,
        ))
    }

    #[test]
    fn action_requests_are_checked() {
        let ds = request(&[("1.2.840.10008.5.1.4.1.1.2", "1.2.3")]);
        let p = parse_action(&action(STORAGE_COMMITMENT_INSTANCE, 1), &ds, "CT").unwrap();
        assert_eq!(p.transaction_uid, "1.2.9");
        assert_eq!(p.requestor_ae, "CT");
        assert_eq!(
            p.references,
            vec![("1.2.840.10008.5.1.4.1.1.2".to_owned(), "1.2.3".to_owned())]
        );
        let status = |r: Result<ReportPayload, (Status, String)>| r.unwrap_err().0;
        assert_eq!(
            status(parse_action(&action("1.2.3", 1), &ds, "CT")),
            Status::NO_SUCH_SOP_INSTANCE
        );
        assert_eq!(
            status(parse_action(
                &action(STORAGE_COMMITMENT_INSTANCE, 2),
                &ds,
                "CT"
            )),
            Status::NO_SUCH_ACTION_TYPE
        );
        assert_eq!(
            status(parse_action(
                &action(STORAGE_COMMITMENT_INSTANCE, 1),
                &request(&[]),
                "CT"
            )),
            Status::MISSING_ATTRIBUTE
        );
        assert_eq!(
            status(parse_action(
                &action(STORAGE_COMMITMENT_INSTANCE, 1),
                &request(&[("1.2", "not a uid")]),
                "CT"
            )),
            Status::INVALID_ATTRIBUTE_VALUE
        );
    }

    #[test]
    fn report_event_information() {
        let report = Report {
            transaction_uid: "1.2.9".into(),
            committed: vec![("1.2.1".into(), "1.2.3".into())],
            failed: vec![("1.2.1".into(), "1.2.4".into(), NO_SUCH_OBJECT_INSTANCE)],
        };
        assert_eq!(report.event_type(), SOME_FAILED);
        let ds = parse(&report.encode("PACS", false));
        assert_eq!(ds.uid(TRANSACTION_UID).as_deref(), Some("1.2.9"));
        let failed = ds.sequence(FAILED_SOP_SEQUENCE).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].u16(FAILURE_REASON), Some(0x0112));
        assert_eq!(
            failed[0].uid(REFERENCED_SOP_INSTANCE_UID).as_deref(),
            Some("1.2.4")
        );
        let ok = ds.sequence(REFERENCED_SOP_SEQUENCE).unwrap();
        assert_eq!(
            ok[0].uid(REFERENCED_SOP_INSTANCE_UID).as_deref(),
            Some("1.2.3")
        );
        let all = Report {
            failed: Vec::new(),
            ..report
        };
        assert_eq!(all.event_type(), ALL_COMMITTED);
    }
}
