//! Instance Availability Notification SCU (PS3.4 R): the queue's handler
//! of [`pacs_core::availability::IAN_JOB_KIND`] jobs.
//!
//! A job names a study, the AE to tell, and for an MPPS trigger the MPPS
//! and the series it performed. The data set (PS3.3 C.4.23) is built when
//! the job runs, from the index: Referenced Performed Procedure Step
//! Sequence (the MPPS, or empty), Study Instance UID, Referenced Series
//! Sequence with each stored instance in a Referenced SOP Sequence item
//! (class, instance, Instance Availability `ONLINE`, Retrieve AE Title =
//! our AE title), plus the study's Accession Number, Patient ID and Issuer
//! of Patient ID. It goes as an N-CREATE on a new association through
//! [`crate::outbound`], with the SOP Instance UID fixed in the job so that
//! a repeated attempt repeats it (a 0111H Duplicate SOP Instance answer to
//! a repeat counts as delivered).
//!
//! An MPPS whose series are not all in the archive yet is retried (the
//! modality may complete the step before its last C-STORE); a peer that is
//! unreachable, refuses the association or the context, or answers a
//! failure status is retried with the queue's back-off; a destination that
//! is no `[[remote_ae]]` is a permanent failure.
//!
//! Non-goals: instances NEARLINE / OFFLINE (everything stored is online),
//! Retrieve Location UID and Retrieve URL, one IAN per series.

use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::availability::Notice;
use pacs_core::dicom::IMPLICIT_VR_LITTLE_ENDIAN;
use pacs_core::jobs::{Job, JobDone, JobError, JobHandler};
use pacs_core::records::InstanceRecord;
use pacs_core::{Archive, Uid};
use tracing::info;

use crate::identifier::{encode, OutElement};
use crate::negotiation::{IAN_SOP_CLASS, MPPS_SOP_CLASS};
use crate::outbound::OutboundSettings;
use crate::status::{Status, StatusKind};

const ACCESSION_NUMBER: u32 = 0x0008_0050;
const RETRIEVE_AE_TITLE: u32 = 0x0008_0054;
const INSTANCE_AVAILABILITY: u32 = 0x0008_0056;
const REFERENCED_PPS_SEQUENCE: u32 = 0x0008_1111;
const REFERENCED_SERIES_SEQUENCE: u32 = 0x0008_1115;
const REFERENCED_SOP_CLASS_UID: u32 = 0x0008_1150;
const REFERENCED_SOP_INSTANCE_UID: u32 = 0x0008_1155;
const REFERENCED_SOP_SEQUENCE: u32 = 0x0008_1199;
const PATIENT_ID: u32 = 0x0010_0020;
const ISSUER_OF_PATIENT_ID: u32 = 0x0010_0021;
const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
const SERIES_INSTANCE_UID: u32 = 0x0020_000E;

/// What an IAN says, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Availability {
    pub study_instance_uid: String,
    pub mpps_uid: Option<String>,
    pub accession_number: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    /// (Series Instance UID, [(SOP Class UID, SOP Instance UID)]), in
    /// the order of the index.
    pub series: Vec<(String, Vec<(String, String)>)>,
}

impl Availability {
    /// Groups instances by series.
    pub fn new(
        study_instance_uid: &str,
        mpps_uid: Option<&str>,
        instances: &[InstanceRecord],
    ) -> Availability {
        let mut series: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for i in instances {
            let s = i.series_instance_uid.to_string();
            let r = (i.sop_class_uid.to_string(), i.sop_instance_uid.to_string());
            match series.iter_mut().find(|(uid, _)| *uid == s) {
                Some((_, refs)) => {
                    if !refs.contains(&r) {
                        refs.push(r)
                    }
                }
                None => series.push((s, vec![r])),
            }
        }
        Availability {
            study_instance_uid: study_instance_uid.to_owned(),
            mpps_uid: mpps_uid.map(str::to_owned),
            accession_number: String::new(),
            patient_id: String::new(),
            issuer_of_patient_id: String::new(),
            series,
        }
    }

    /// The N-CREATE data set (PS3.3 C.4.23.1), elements in tag order.
    pub fn encode(&self, our_ae: &str, explicit_vr: bool) -> Vec<u8> {
        let pps = self
            .mpps_uid
            .iter()
            .map(|uid| {
                vec![
                    OutElement::text(REFERENCED_SOP_CLASS_UID, *b"UI", MPPS_SOP_CLASS),
                    OutElement::text(REFERENCED_SOP_INSTANCE_UID, *b"UI", uid),
                ]
            })
            .collect();
        let series = self
            .series
            .iter()
            .map(|(uid, refs)| {
                let items = refs
                    .iter()
                    .map(|(class, instance)| {
                        vec![
                            OutElement::text(RETRIEVE_AE_TITLE, *b"AE", our_ae),
                            OutElement::text(INSTANCE_AVAILABILITY, *b"CS", "ONLINE"),
                            OutElement::text(REFERENCED_SOP_CLASS_UID, *b"UI", class),
                            OutElement::text(REFERENCED_SOP_INSTANCE_UID, *b"UI", instance),
                        ]
                    })
                    .collect();
                vec![
                    OutElement::sequence(REFERENCED_SOP_SEQUENCE, items),
                    OutElement::text(SERIES_INSTANCE_UID, *b"UI", uid),
                ]
            })
            .collect();
        let elements = vec![
            OutElement::text(ACCESSION_NUMBER, *b"SH", &self.accession_number),
            OutElement::sequence(REFERENCED_PPS_SEQUENCE, pps),
            OutElement::sequence(REFERENCED_SERIES_SEQUENCE, series),
            OutElement::text(PATIENT_ID, *b"LO", &self.patient_id),
            OutElement::text(ISSUER_OF_PATIENT_ID, *b"LO", &self.issuer_of_patient_id),
            OutElement::text(STUDY_INSTANCE_UID, *b"UI", &self.study_instance_uid),
        ];
        encode(&elements, explicit_vr)
    }

    pub fn instance_count(&self) -> usize {
        self.series.iter().map(|(_, r)| r.len()).sum()
    }
}

/// Collects what a notice announces from the index. `Err(Retry)` while an
/// MPPS series or the study has no instance yet.
pub(crate) async fn collect(archive: &Archive, notice: &Notice) -> Result<Availability, JobError> {
    let study = Uid::parse(&notice.study_instance_uid)
        .map_err(|e| JobError::Permanent(format!("study UID: {e}")))?;
    let unavailable =
        |e: pacs_core::ArchiveError| JobError::Retry(format!("archive unavailable: {e}"));
    let mut instances = Vec::new();
    if notice.series.is_empty() {
        instances = archive
            .instances_of_study(&study)
            .await
            .map_err(unavailable)?;
    } else {
        for s in &notice.series {
            let uid = Uid::parse(s).map_err(|e| JobError::Permanent(format!("series UID: {e}")))?;
            let found = archive
                .instances_of_series(&uid)
                .await
                .map_err(unavailable)?;
            if found.is_empty() {
                return Err(JobError::Retry(format!(
                    "series {s} of the MPPS has no instance in the archive yet"
                )));
            }
            instances.extend(found.into_iter().filter(|i| i.study_instance_uid == study));
        }
    }
    if instances.is_empty() {
        return Err(JobError::Retry(
            "the study has no instance in the archive yet".into(),
        ));
    }
    let mut a = Availability::new(
        &notice.study_instance_uid,
        notice.mpps_uid.as_deref(),
        &instances,
    );
    if let Some(record) = archive.study(&study).await.map_err(unavailable)? {
        a.accession_number = record.accession_number;
        a.patient_id = record.patient_id;
        a.issuer_of_patient_id = record.issuer_of_patient_id;
    }
    if !notice.accession_number.is_empty() {
        a.accession_number = notice.accession_number.clone();
    }
    Ok(a)
}

/// Sends IANs on new associations (the queue's handler of
/// [`pacs_core::availability::IAN_JOB_KIND`]).
pub struct IanHandler {
    archive: Archive,
    outbound: OutboundSettings,
}

impl IanHandler {
    pub fn new(archive: Archive, config: &crate::DimseConfig) -> Arc<IanHandler> {
        Arc::new(IanHandler {
            archive,
            outbound: OutboundSettings::from_config(config),
        })
    }
}

#[async_trait]
impl JobHandler for IanHandler {
    async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
        let notice = Notice::from_job(job)?;
        let Some(remote) = self.outbound.remote(&notice.destination) else {
            return Err(JobError::Permanent(format!(
                "no [[remote_ae]] with ae_title {:?} to send the IAN to",
                notice.destination
            )));
        };
        let availability = collect(&self.archive, &notice).await?;
        let (mut out, context) = self
            .outbound
            .open_one(remote, IAN_SOP_CLASS, Vec::new())
            .await
            .map_err(JobError::Retry)?;
        let data = availability.encode(
            &self.outbound.our_ae,
            context.transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN,
        );
        let rsp = out
            .n_create(
                context.id,
                IAN_SOP_CLASS,
                Some(&notice.notification_uid),
                &data,
            )
            .await
            .map_err(|e| JobError::Retry(format!("sending the IAN: {e}")))?;
        out.release().await;
        match rsp.status.kind() {
            StatusKind::Success | StatusKind::Warning => {}
            // A repeat of an attempt whose answer was lost.
            _ if rsp.status == Status::DUPLICATE_SOP_INSTANCE => {}
            _ => {
                return Err(JobError::Retry(format!(
                    "{} answered the IAN with status {}{}",
                    remote.ae_title,
                    rsp.status,
                    rsp.error_comment
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                )))
            }
        }
        info!(peer = %remote.ae_title, study = %notice.study_instance_uid,
            instances = availability.instance_count(), mpps = notice.mpps_uid.is_some(),
            "instance availability notification delivered");
        Ok(JobDone::Kept)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pacs_core::dicom::{parse_dataset, TransferSyntax};
    use pacs_core::Limits;

    #[test]
    fn the_data_set_lists_every_instance_by_series() {
        let a = Availability {
            study_instance_uid: "1.2.3".into(),
            mpps_uid: Some("1.2.9".into()),
            accession_number: "ACC1".into(),
            patient_id: "P1".into(),
            issuer_of_patient_id: "CCCD".into(),
            series: vec![
                (
                    "1.2.3.1".into(),
                    vec![("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.1.1".into())],
                ),
                (
                    "1.2.3.2".into(),
                    vec![
                        ("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.2.1".into()),
                        ("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.2.2".into()),
                    ],
                ),
            ],
        };
        assert_eq!(a.instance_count(), 3);
        for explicit in [true, false] {
            let ts = if explicit {
                TransferSyntax::explicit_vr_little_endian()
            } else {
                TransferSyntax::implicit_vr_little_endian()
            };
            let ds = parse_dataset(&a.encode("PACS", explicit), &ts, true, &Limits::default())
                .unwrap()
                .dataset;
            assert_eq!(ds.uid(STUDY_INSTANCE_UID).as_deref(), Some("1.2.3"));
            assert_eq!(ds.string(ACCESSION_NUMBER).as_deref(), Some("ACC1"));
            assert_eq!(ds.string(PATIENT_ID).as_deref(), Some("P1"));
            let pps = ds.sequence(REFERENCED_PPS_SEQUENCE).unwrap();
            assert_eq!(
                pps[0].uid(REFERENCED_SOP_INSTANCE_UID).as_deref(),
                Some("1.2.9")
            );
            assert_eq!(
                pps[0].uid(REFERENCED_SOP_CLASS_UID).as_deref(),
                Some(MPPS_SOP_CLASS)
            );
            let series = ds.sequence(REFERENCED_SERIES_SEQUENCE).unwrap();
            assert_eq!(series.len(), 2);
            assert_eq!(
                series[1].uid(SERIES_INSTANCE_UID).as_deref(),
                Some("1.2.3.2")
            );
            let sops = series[1].sequence(REFERENCED_SOP_SEQUENCE).unwrap();
            assert_eq!(sops.len(), 2);
            assert_eq!(
                sops[1].uid(REFERENCED_SOP_INSTANCE_UID).as_deref(),
                Some("1.2.3.2.2")
            );
            assert_eq!(
                sops[1].string(INSTANCE_AVAILABILITY).as_deref(),
                Some("ONLINE")
            );
            assert_eq!(sops[1].string(RETRIEVE_AE_TITLE).as_deref(), Some("PACS"));
        }
        // No MPPS: the sequence is present and empty (Type 2).
        let stable = Availability {
            mpps_uid: None,
            ..a
        };
        let ds = parse_dataset(
            &stable.encode("PACS", true),
            &TransferSyntax::explicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset;
        assert!(ds.contains(REFERENCED_PPS_SEQUENCE));
        assert_eq!(
            ds.sequence(REFERENCED_PPS_SEQUENCE)
                .unwrap_or_default()
                .len(),
            0
        );
    }
}
