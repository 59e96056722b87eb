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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pacs_core::dicom::{DataSet, IMPLICIT_VR_LITTLE_ENDIAN};
use pacs_core::jobs::{Job, JobDone, JobError, JobHandler, NewJob};
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
/// The version of [`ReportPayload`]'s JSON while the report waits.
const PAYLOAD_VERSION: u32 = 1;
/// The version a delivered report's job keeps: the request and its
/// [`Outcome`]. Requests are still written as version 1, so that a node of
/// an older build sharing the queue can send them.
const DELIVERED_VERSION: u32 = 2;
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
    /// What the delivered report said (version 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// What a delivered report said, kept on its done job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Study Instance UID → the SOP Instance UIDs reported committed in
    /// it (their study when the report was built).
    pub committed: BTreeMap<String, Vec<String>>,
    /// SOP Instance UIDs reported failed.
    pub failed: Vec<String>,
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
        if job.payload_version != PAYLOAD_VERSION && job.payload_version != DELIVERED_VERSION {
            return Err(JobError::Permanent(format!(
                "report payload of version {}: this pacs reads versions \
                 {PAYLOAD_VERSION} and {DELIVERED_VERSION}",
                job.payload_version
            )));
        }
        serde_json::from_str(&job.payload)
            .map_err(|e| JobError::Permanent(format!("unreadable report payload: {e}")))
    }
}

/// What the Storage Commitment reports already delivered told the
/// modalities, for pages that show which exams are safe to delete there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Study Instance UID → how many of its instances the latest report
    /// naming each one said were committed.
    pub committed: HashMap<String, usize>,
    /// Instances named by reports delivered by an older build (payload
    /// version 1 keeps no outcome) and by no later report: the caller
    /// finds their study, and cannot tell whether they were reported
    /// failed.
    pub unresolved: HashSet<String>,
}

/// A delivered report's outcome, borrowed from its payload (the JSON this
/// module wrote: UIDs, no escapes); the request's references are skipped.
#[derive(Deserialize)]
struct Said<'a> {
    #[serde(borrow, default)]
    outcome: Option<SaidOutcome<'a>>,
}

#[derive(Deserialize)]
struct SaidOutcome<'a> {
    #[serde(borrow)]
    committed: BTreeMap<&'a str, Vec<&'a str>>,
    #[serde(borrow)]
    failed: Vec<&'a str>,
}

/// Reads the delivered reports among `jobs` (done jobs of [`JOB_KIND`]),
/// in the order they were delivered, so that a later report's word on an
/// instance stands.
pub fn delivered(jobs: &[Job]) -> Delivered {
    let mut done: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.kind == JOB_KIND && j.state == pacs_core::jobs::JobState::Done)
        .collect();
    done.sort_by_key(|j| (j.updated_ms, j.id));
    // Each instance's latest word: committed in a study, or failed (None).
    let mut latest: HashMap<&str, Option<&str>> = HashMap::new();
    let mut unresolved: HashSet<String> = HashSet::new();
    for job in done {
        if job.payload_version != DELIVERED_VERSION {
            // An older build's report: its references, unless a later
            // report has already said more.
            if let Ok(request) = ReportPayload::from_job(job) {
                unresolved.extend(
                    request
                        .references
                        .into_iter()
                        .map(|(_, sop)| sop)
                        .filter(|sop| !latest.contains_key(sop.as_str())),
                );
            }
            continue;
        }
        let Ok(Said {
            outcome: Some(outcome),
        }) = serde_json::from_str::<Said>(&job.payload)
        else {
            continue;
        };
        for sop in outcome.failed {
            unresolved.remove(sop);
            latest.insert(sop, None);
        }
        for (study, sops) in outcome.committed {
            for sop in sops {
                unresolved.remove(sop);
                latest.insert(sop, Some(study));
            }
        }
    }
    let mut committed: HashMap<String, usize> = HashMap::new();
    for study in latest.into_values().flatten() {
        match committed.get_mut(study) {
            Some(n) => *n += 1,
            None => {
                committed.insert(study.to_owned(), 1);
            }
        }
    }
    Delivered {
        committed,
        unresolved,
    }
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
        outcome: None,
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
    /// The study of each `committed` instance, in the same order.
    pub studies: Vec<String>,
    /// (class, instance, Failure Reason)
    pub failed: Vec<(String, String, u16)>,
}

impl Report {
    /// What the job of `request` keeps once this report is delivered.
    pub fn delivered(&self, request: &ReportPayload) -> JobDone {
        let mut committed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((_, sop), study) in self.committed.iter().zip(&self.studies) {
            committed
                .entry(study.clone())
                .or_default()
                .push(sop.clone());
        }
        let kept = ReportPayload {
            outcome: Some(Outcome {
                committed,
                failed: self.failed.iter().map(|(_, sop, _)| sop.clone()).collect(),
            }),
            ..request.clone()
        };
        match serde_json::to_string(&kept) {
            Ok(payload) => JobDone::Outcome {
                payload_version: DELIVERED_VERSION,
                payload,
            },
            // Plain strings always serialise; the request stays as it was.
            Err(_) => JobDone::Kept,
        }
    }

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

/// A checked report and what its job keeps once it is delivered; or why
/// the archive could not be read.
pub(crate) type Checked = Result<(Report, JobDone), String>;

/// Checks every referenced instance. `Err` when the archive cannot be
/// read at all (worth retrying later).
pub(crate) async fn check(archive: &Archive, payload: &ReportPayload) -> Result<Report, String> {
    let mut report = Report {
        transaction_uid: payload.transaction_uid.clone(),
        committed: Vec::new(),
        studies: Vec::new(),
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
        let checked = match archive.check_instance(&uid).await {
            Ok(InstanceCheck::Intact(record)) if record.sop_class_uid.as_str() == class => {
                Ok(record.study_instance_uid.as_str().to_owned())
            }
            Ok(InstanceCheck::Intact(_)) => Err(CLASS_INSTANCE_CONFLICT),
            Ok(InstanceCheck::Missing) => Err(NO_SUCH_OBJECT_INSTANCE),
            Ok(InstanceCheck::Damaged(why)) => {
                warn!(sop = %uid, problem = %why, "storage commitment: stored object does not verify");
                Err(PROCESSING_FAILURE)
            }
            Err(e) => return Err(format!("archive unavailable: {e}")),
        };
        match checked {
            Ok(study) => {
                report.committed.push((class.clone(), instance.clone()));
                report.studies.push(study);
            }
            Err(r) => report.failed.push((class.clone(), instance.clone(), r)),
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
    async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
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
        Ok(report.delivered(&payload))
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
            studies: vec!["1.2.7".into()],
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

    fn report_job(id: u64, updated_ms: u64, version: u32, payload: &ReportPayload) -> Job {
        let job = payload.to_job(Duration::ZERO).unwrap();
        Job {
            id,
            kind: job.kind,
            payload_version: version,
            payload: serde_json::to_string(payload).unwrap(),
            state: pacs_core::jobs::JobState::Done,
            attempts: 1,
            max_attempts: 20,
            created_ms: updated_ms,
            next_run_ms: updated_ms,
            updated_ms,
            last_error: None,
            destination: job.destination,
            owner: None,
            lease_until_ms: 0,
        }
    }

    #[test]
    fn a_delivered_report_keeps_what_it_said() {
        let request = ReportPayload {
            transaction_uid: "1.2.9".into(),
            requestor_ae: "CT1".into(),
            references: vec![
                ("1.2.1".into(), "1.2.3".into()),
                ("1.2.1".into(), "1.2.4".into()),
                ("1.2.1".into(), "1.2.5".into()),
            ],
            outcome: None,
        };
        let report = Report {
            transaction_uid: "1.2.9".into(),
            committed: vec![
                ("1.2.1".into(), "1.2.3".into()),
                ("1.2.1".into(), "1.2.5".into()),
            ],
            studies: vec!["1.2.7".into(), "1.2.8".into()],
            failed: vec![("1.2.1".into(), "1.2.4".into(), PROCESSING_FAILURE)],
        };
        let JobDone::Outcome {
            payload_version,
            payload,
        } = report.delivered(&request)
        else {
            panic!("a delivered report keeps its outcome");
        };
        assert_eq!(payload_version, DELIVERED_VERSION);
        let kept: ReportPayload = serde_json::from_str(&payload).unwrap();
        assert_eq!(kept.references, request.references);
        let outcome = kept.outcome.clone().unwrap();
        assert_eq!(outcome.failed, ["1.2.4"]);
        assert_eq!(outcome.committed["1.2.7"], ["1.2.3"]);
        assert_eq!(outcome.committed["1.2.8"], ["1.2.5"]);
        // A request is written as version 1, without an outcome, for
        // nodes of the older build; both versions read back.
        let job = request.to_job(Duration::ZERO).unwrap();
        assert_eq!(job.payload_version, PAYLOAD_VERSION);
        assert!(!job.payload.contains("outcome"), "{}", job.payload);
        let as_job = report_job(1, 10, DELIVERED_VERSION, &kept);
        assert_eq!(ReportPayload::from_job(&as_job).unwrap(), kept);
        let old = report_job(1, 10, 3, &kept);
        assert!(matches!(
            ReportPayload::from_job(&old),
            Err(JobError::Permanent(_))
        ));
    }

    #[test]
    fn delivered_reports_are_read_in_the_order_they_were_sent() {
        let with = |committed: &[(&str, &str)], failed: &[&str]| {
            let mut outcome = Outcome::default();
            for (study, sop) in committed {
                outcome
                    .committed
                    .entry((*study).to_owned())
                    .or_default()
                    .push((*sop).to_owned());
            }
            outcome.failed = failed.iter().map(|s| (*s).to_owned()).collect();
            ReportPayload {
                transaction_uid: "1.2.9".into(),
                requestor_ae: "CT1".into(),
                references: Vec::new(),
                outcome: Some(outcome),
            }
        };
        let older_build = ReportPayload {
            transaction_uid: "1.2.10".into(),
            requestor_ae: "CT1".into(),
            references: vec![
                ("1.2.1".into(), "9.1".into()),
                ("1.2.1".into(), "9.2".into()),
            ],
            outcome: None,
        };
        // Newest first, as the queue lists them; ids do not follow
        // delivery (a report held for its association is done later).
        let jobs = vec![
            // Delivered last: 7.2 now fails, 9.2 is committed after all.
            report_job(2, 300, DELIVERED_VERSION, &with(&[("7", "9.2")], &["7.2"])),
            report_job(3, 200, PAYLOAD_VERSION, &older_build),
            report_job(
                1,
                100,
                DELIVERED_VERSION,
                &with(&[("7", "7.1"), ("7", "7.2"), ("8", "8.1")], &["8.2"]),
            ),
        ];
        let seen = delivered(&jobs);
        // Study 7: 7.1 and 9.2 (7.2 failed later); study 8: 8.1.
        assert_eq!(seen.committed["7"], 2);
        assert_eq!(seen.committed["8"], 1);
        assert_eq!(seen.committed.len(), 2);
        assert_eq!(seen.unresolved, HashSet::from(["9.1".to_owned()]));
        // Jobs of other kinds or states are not reports delivered.
        let mut queued = jobs[0].clone();
        queued.state = pacs_core::jobs::JobState::Queued;
        let mut other = jobs[2].clone();
        other.kind = "ian".into();
        assert_eq!(delivered(&[queued, other]), Delivered::default());
    }

    /// Benchmark (ignored): what the technologist's page parses of a day's
    /// delivered reports, 200 exams of 500 images each.
    /// `cargo test -p dimse-scp --release --lib delivered_day_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark"]
    fn delivered_day_cost() {
        let jobs: Vec<Job> = (0..200u64)
            .map(|e| {
                let study = format!("1.2.826.0.1.3680043.10.77.{e}");
                let sops: Vec<String> = (0..500).map(|i| format!("{study}.1.{i}")).collect();
                let request = ReportPayload {
                    transaction_uid: format!("{study}.9"),
                    requestor_ae: "CT1".into(),
                    references: sops
                        .iter()
                        .map(|s| ("1.2.840.10008.5.1.4.1.1.2".to_owned(), s.clone()))
                        .collect(),
                    outcome: None,
                };
                let kept = ReportPayload {
                    outcome: Some(Outcome {
                        committed: [(study, sops)].into_iter().collect(),
                        failed: Vec::new(),
                    }),
                    ..request
                };
                report_job(e + 1, 1_000 + e, DELIVERED_VERSION, &kept)
            })
            .collect();
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let seen = delivered(&jobs);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(seen.committed.values().sum::<usize>(), 100_000);
        }
        times.sort_by(f64::total_cmp);
        let bytes: usize = jobs.iter().map(|j| j.payload.len()).sum();
        println!(
            "200 reports of 500 instances ({:.1} MB of payload): {:.1} ms (median of 5)",
            bytes as f64 / 1e6,
            times[2]
        );
    }
}
