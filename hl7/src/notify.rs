//! "Images available" back to the HIS: an ORU^R01 (HL7 v2.5.1) over MLLP,
//! the queue's handler of [`pacs_core::availability::HL7_JOB_KIND`] jobs.
//!
//! The message is built when the job runs, from the order the accession
//! number names (patient, placer and filler order numbers, requested
//! procedure, SPS ID, modality) or, without one, from the study's record
//! in the index:
//!
//! ```text
//! MSH|^~\&|SENPACS|fac|HIS|fac|ts||ORU^R01^ORU_R01|ctl|P|2.5.1|||AL|NE||UNICODE UTF-8
//! PID|1||patient id^^^issuer||name||birth date|sex
//! ORC|SC|placer|filler||CM
//! OBR|1|placer|filler|procedure id^description|||ts||||||||||||accession|requested procedure id|sps id||||modality|I
//! OBX|1|RP|VIEWER^Viewer link^L||viewer url^SENPACS^IM^HTML||||||F
//! OBX|2|ST|STATUS^Image status^L||IMAGES AVAILABLE||||||F
//! OBX|3|ST|110180^Study Instance UID^DCM||study uid||||||F
//! OBX|4|ST|ACCESSION^Accession Number^L||accession||||||F
//! ```
//!
//! Like the IAN, it waits (retried) until the study, and each series an
//! MPPS performed, has an instance in the archive. It is sent in UTF-8 (MSH-18 `UNICODE UTF-8`) on a new connection, and
//! the job succeeds only on the ACK (original mode) that names our MSH-10
//! in MSA-2 with MSA-1 `AA` (or `CA`). `AR`/`CR` (rejected: the HIS is
//! unable to process it now), no answer within the time-out, a wrong or
//! unreadable answer, or a connection refused are retried with the
//! queue's back-off; `AE`/`CE` (the HIS found an error in the content,
//! which sending it again will not mend) dead-letters the job at once,
//! for an operator to look at and retry with `pacs queue retry`.
//!
//! Non-goals: ORM^O01 status messages, enhanced acknowledgement mode,
//! TLS, keeping the connection open between messages.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pacs_core::availability::Notice;
use pacs_core::jobs::{Job, JobDone, JobError, JobHandler};
use pacs_core::orders::{now_secs, OrderFilter, OrderRecord};
use pacs_core::records::StudyRecord;
use pacs_core::{Archive, Uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use crate::ack::timestamp;
use crate::message::{Delimiters, Message};
use crate::mllp::{frame, next_frame};

/// The `[hl7_out]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7OutConfig {
    /// `host:port` of the HIS's MLLP listener.
    pub address: String,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// The viewer's base URL as the HIS's users reach it (the link is
    /// `<viewer_url>/viewer?StudyInstanceUIDs=<uid>`).
    pub viewer_url: String,
    /// How long to wait to connect, and then for the ACK.
    pub timeout: Duration,
    /// The largest ACK read.
    pub max_ack_bytes: usize,
}

/// Who the message is about: the order's view, or the study's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    pub patient_id: String,
    pub issuer: String,
    /// DICOM PN (`Family^Given^Middle^Prefix^Suffix`, maybe `=` groups).
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub placer: String,
    pub filler: String,
    pub procedure_id: String,
    pub procedure_description: String,
    pub sps_id: String,
    pub modality: String,
}

impl Subject {
    fn from_order(o: &OrderRecord) -> Subject {
        Subject {
            patient_id: o.patient_id.clone(),
            issuer: o.issuer_of_patient_id.clone(),
            patient_name: o.patient_name.clone(),
            birth_date: o.patient_birth_date.clone(),
            sex: o.patient_sex.clone(),
            placer: o.placer_order_number.clone(),
            filler: o.filler_order_number.clone(),
            procedure_id: o.requested_procedure_id.clone(),
            procedure_description: o.requested_procedure_description.clone(),
            sps_id: o.sps_id.clone(),
            modality: o.modality.clone(),
        }
    }

    fn from_study(s: &StudyRecord) -> Subject {
        Subject {
            patient_id: s.patient_id.clone(),
            issuer: s.issuer_of_patient_id.clone(),
            patient_name: s.patient_name.clone(),
            birth_date: s.patient_birth_date.clone(),
            sex: s.patient_sex.clone(),
            procedure_id: s.study_id.clone(),
            procedure_description: s.study_description.clone(),
            modality: s.modalities.keys().next().cloned().unwrap_or_default(),
            ..Subject::default()
        }
    }
}

/// One segment from (field number, value already escaped) pairs.
fn segment(name: &str, fields: &[(usize, String)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut out = vec![String::new(); last + 1];
    out[0] = name.to_owned();
    for (n, v) in fields {
        out[*n] = v.clone();
    }
    out.join("|")
}

/// The viewer link of a study.
pub fn viewer_link(viewer_url: &str, study_instance_uid: &str) -> String {
    format!(
        "{}/viewer?StudyInstanceUIDs={study_instance_uid}",
        viewer_url.trim_end_matches('/')
    )
}

/// The ORU^R01 text (segments ended by CR).
pub(crate) fn images_available(
    config: &Hl7OutConfig,
    notice: &Notice,
    subject: &Subject,
    accession: &str,
    control_id: &str,
    now: u64,
) -> String {
    let d = Delimiters::default();
    let e = |s: &str| d.escape(s);
    let ts = timestamp(now);
    // DICOM PN components are HL7 XPN components in the same order; the
    // ideographic and phonetic groups are left out.
    let name = subject
        .patient_name
        .split('=')
        .next()
        .unwrap_or("")
        .split('^')
        .map(&e)
        .collect::<Vec<_>>()
        .join("^");
    let sex = match subject.sex.as_str() {
        s @ ("M" | "F" | "O") => s,
        "" => "",
        _ => "U",
    };
    let link = viewer_link(&config.viewer_url, &notice.study_instance_uid);
    let msh = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{ts}||ORU^R01^ORU_R01|{}|P|2.5.1|||AL|NE||UNICODE UTF-8",
        e(&config.sending_application),
        e(&config.sending_facility),
        e(&config.receiving_application),
        e(&config.receiving_facility),
        e(control_id),
    );
    let pid_3 = if subject.issuer.is_empty() {
        e(&subject.patient_id)
    } else {
        format!("{}^^^{}", e(&subject.patient_id), e(&subject.issuer))
    };
    let pid = segment(
        "PID",
        &[
            (1, "1".into()),
            (3, pid_3),
            (5, name),
            (7, e(&subject.birth_date)),
            (8, sex.to_owned()),
        ],
    );
    let orc = segment(
        "ORC",
        &[
            (1, "SC".into()),
            (2, e(&subject.placer)),
            (3, e(&subject.filler)),
            (5, "CM".into()),
        ],
    );
    let procedure = if subject.procedure_description.is_empty() {
        e(&subject.procedure_id)
    } else {
        format!(
            "{}^{}",
            e(&subject.procedure_id),
            e(&subject.procedure_description)
        )
    };
    let obr = segment(
        "OBR",
        &[
            (1, "1".into()),
            (2, e(&subject.placer)),
            (3, e(&subject.filler)),
            (4, procedure),
            (7, ts.clone()),
            (18, e(accession)),
            (19, e(&subject.procedure_id)),
            (20, e(&subject.sps_id)),
            (24, e(&subject.modality)),
            (25, "I".into()),
        ],
    );
    let obx = |n: usize, kind: &str, id: &str, value: String| {
        segment(
            "OBX",
            &[
                (1, n.to_string()),
                (2, kind.into()),
                (3, id.into()),
                (5, value),
                (11, "F".into()),
                (14, ts.clone()),
            ],
        )
    };
    let segments = [
        msh,
        pid,
        orc,
        obr,
        obx(
            1,
            "RP",
            "VIEWER^Viewer link^L",
            format!("{}^{}^IM^HTML", e(&link), e(&config.sending_application)),
        ),
        obx(2, "ST", "STATUS^Image status^L", "IMAGES AVAILABLE".into()),
        obx(
            3,
            "ST",
            "110180^Study Instance UID^DCM",
            e(&notice.study_instance_uid),
        ),
        obx(4, "ST", "ACCESSION^Accession Number^L", e(accession)),
    ];
    let mut text = segments.join("\r");
    text.push('\r');
    text
}

/// What an ACK said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    Accepted,
    /// AE / CE, with ERR-8 or MSA-3 text.
    Error(String),
    /// AR / CR.
    Rejected(String),
    /// Not an ACK of our message.
    Unexpected(String),
}

pub(crate) fn read_ack(bytes: &[u8], control_id: &str) -> AckOutcome {
    let Ok(m) = Message::parse(bytes) else {
        return AckOutcome::Unexpected("the answer is not an HL7 message".into());
    };
    let Some(msa) = m.segment("MSA") else {
        return AckOutcome::Unexpected("the answer has no MSA segment".into());
    };
    let code = m.get(msa, 1, 0, 1, 1);
    let answered = m.get(msa, 2, 0, 1, 1);
    if answered != control_id {
        return AckOutcome::Unexpected(format!(
            "the ACK answers {answered:?}, not our message {control_id:?}"
        ));
    }
    let text = m
        .segment("ERR")
        .map(|err| m.get(err, 8, 0, 1, 1))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| m.get(msa, 3, 0, 1, 1));
    match code.as_str() {
        "AA" | "CA" => AckOutcome::Accepted,
        "AE" | "CE" => AckOutcome::Error(text),
        "AR" | "CR" => AckOutcome::Rejected(text),
        other => AckOutcome::Unexpected(format!("MSA-1 {other:?} is not an acknowledgement code")),
    }
}

/// Sends "images available" messages (the queue's handler of
/// [`pacs_core::availability::HL7_JOB_KIND`]).
pub struct ImagesAvailableHandler {
    pub archive: Archive,
    pub config: Hl7OutConfig,
}

impl ImagesAvailableHandler {
    pub fn new(archive: Archive, config: Hl7OutConfig) -> Arc<ImagesAvailableHandler> {
        Arc::new(ImagesAvailableHandler { archive, config })
    }

    /// The order of the accession number (the step the MPPS performed, or
    /// the first step of that accession), if the archive has one.
    async fn order(
        &self,
        notice: &Notice,
        accession: &str,
    ) -> Result<Option<OrderRecord>, JobError> {
        let Some(store) = self.archive.orders() else {
            return Ok(None);
        };
        if accession.is_empty() {
            return Ok(None);
        }
        let filter = OrderFilter {
            accession_numbers: vec![accession.to_owned()],
            ..OrderFilter::default()
        };
        let orders = store
            .list(&filter)
            .await
            .map_err(|e| JobError::Retry(format!("order store unavailable: {e}")))?;
        Ok(orders
            .iter()
            .find(|o| o.study_instance_uid == notice.study_instance_uid)
            .or(orders.first())
            .cloned())
    }

    async fn exchange(&self, message: &[u8], control_id: &str) -> Result<AckOutcome, String> {
        let addr = &self.config.address;
        let t = self.config.timeout;
        let mut stream = tokio::time::timeout(t, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to the HIS at {addr} timed out"))?
            .map_err(|e| format!("cannot connect to the HIS at {addr}: {e}"))?;
        tokio::time::timeout(t, stream.write_all(&frame(message)))
            .await
            .map_err(|_| "sending to the HIS timed out".to_owned())?
            .map_err(|e| format!("sending to the HIS: {e}"))?;
        let deadline = tokio::time::Instant::now() + t;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            match next_frame(&mut buf, self.config.max_ack_bytes) {
                Ok(Some(ack)) => return Ok(read_ack(&ack, control_id)),
                Ok(None) => {}
                Err(e) => return Err(format!("the HIS's answer: {e}")),
            }
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .map_err(|_| format!("no ACK from the HIS within {} s", t.as_secs()))?
                .map_err(|e| format!("reading the HIS's ACK: {e}"))?;
            if n == 0 {
                return Err("the HIS closed the connection without an ACK".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[async_trait]
impl JobHandler for ImagesAvailableHandler {
    async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
        let notice = Notice::from_job(job)?;
        let study_uid = Uid::parse(&notice.study_instance_uid)
            .map_err(|e| JobError::Permanent(format!("study UID: {e}")))?;
        let study = self
            .archive
            .study(&study_uid)
            .await
            .map_err(|e| JobError::Retry(format!("archive unavailable: {e}")))?;
        let Some(study) = study else {
            return Err(JobError::Retry(
                "the study has no instance in the archive yet".into(),
            ));
        };
        // As for the IAN: an MPPS's series must all have arrived.
        for s in &notice.series {
            let uid = Uid::parse(s).map_err(|e| JobError::Permanent(format!("series UID: {e}")))?;
            let found = self
                .archive
                .instances_of_series(&uid)
                .await
                .map_err(|e| JobError::Retry(format!("archive unavailable: {e}")))?;
            if found.is_empty() {
                return Err(JobError::Retry(format!(
                    "series {s} of the MPPS has no instance in the archive yet"
                )));
            }
        }
        let accession = if notice.accession_number.is_empty() {
            study.accession_number.clone()
        } else {
            notice.accession_number.clone()
        };
        let subject = match self.order(&notice, &accession).await? {
            Some(o) => Subject::from_order(&o),
            None => Subject::from_study(&study),
        };
        // MSH-10 (ST, 20 characters): the job and the attempt.
        let control_id = format!("SENIA{}-{}", job.id, job.attempts);
        let text = images_available(
            &self.config,
            &notice,
            &subject,
            &accession,
            &control_id,
            now_secs(),
        );
        let outcome = self
            .exchange(text.as_bytes(), &control_id)
            .await
            .map_err(JobError::Retry)?;
        match outcome {
            AckOutcome::Accepted => {
                info!(his = %self.config.address, control = %control_id, "images available message acknowledged (AA)");
                Ok(JobDone::Kept)
            }
            AckOutcome::Rejected(t) => Err(JobError::Retry(format!(
                "the HIS rejected the message (AR): {t}"
            ))),
            AckOutcome::Error(t) => Err(JobError::Permanent(format!(
                "the HIS found an error in the message (AE): {t}"
            ))),
            AckOutcome::Unexpected(t) => Err(JobError::Retry(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> Hl7OutConfig {
        Hl7OutConfig {
            address: "127.0.0.1:2575".into(),
            sending_application: "SENPACS".into(),
            sending_facility: "BV".into(),
            receiving_application: "HIS".into(),
            receiving_facility: "BV".into(),
            viewer_url: "https://pacs.bv.vn/".into(),
            timeout: Duration::from_secs(5),
            max_ack_bytes: 65536,
        }
    }

    fn notice() -> Notice {
        Notice {
            study_instance_uid: "1.2.3".into(),
            mpps_uid: None,
            series: Vec::new(),
            accession_number: "ACC|1".into(),
            destination: String::new(),
            notification_uid: "2.25.1".into(),
        }
    }

    #[test]
    fn the_oru_carries_the_accession_and_the_viewer_link() {
        let subject = Subject {
            patient_id: "P1".into(),
            issuer: "CCCD".into(),
            patient_name: "Nguyễn^Văn An=NGUYEN".into(),
            sex: "M".into(),
            placer: "PL1".into(),
            filler: "FL1".into(),
            sps_id: "SPS1".into(),
            modality: "CT".into(),
            ..Subject::default()
        };
        let text = images_available(&config(), &notice(), &subject, "ACC|1", "SENIA7-1", 0);
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.msh(9, 1), "ORU");
        assert_eq!(m.msh(9, 2), "R01");
        assert_eq!(m.msh(10, 1), "SENIA7-1");
        assert_eq!(m.msh(12, 1), "2.5.1");
        assert_eq!(m.msh(18, 1), "UNICODE UTF-8");
        let pid = m.segment("PID").unwrap();
        assert_eq!(m.get(pid, 3, 0, 1, 1), "P1");
        assert_eq!(m.get(pid, 3, 0, 4, 1), "CCCD");
        assert_eq!(m.get(pid, 5, 0, 1, 1), "Nguyễn");
        assert_eq!(m.get(pid, 5, 0, 2, 1), "Văn An");
        let obr = m.segment("OBR").unwrap();
        assert_eq!(m.get(obr, 18, 0, 1, 1), "ACC|1");
        assert_eq!(m.get(obr, 20, 0, 1, 1), "SPS1");
        assert_eq!(m.get(obr, 24, 0, 1, 1), "CT");
        let obx = m.segment("OBX").unwrap();
        assert_eq!(m.get(obx, 2, 0, 1, 1), "RP");
        assert_eq!(
            m.get(obx, 5, 0, 1, 1),
            "https://pacs.bv.vn/viewer?StudyInstanceUIDs=1.2.3"
        );
        assert!(text.contains("OBX|4|ST|ACCESSION^Accession Number^L||ACC\\F\\1"));
        assert!(text.contains("ORC|SC|PL1|FL1||CM\r"));
    }

    #[test]
    fn acks_are_read_by_their_code() {
        let ack = |code: &str, ctl: &str| {
            format!("MSH|^~\\&|HIS|BV|SENPACS|BV|20260101||ACK^R01^ACK|A1|P|2.5.1\rMSA|{code}|{ctl}\rERR|||207|E||||busy\r")
        };
        assert_eq!(
            read_ack(ack("AA", "C1").as_bytes(), "C1"),
            AckOutcome::Accepted
        );
        assert_eq!(
            read_ack(ack("CA", "C1").as_bytes(), "C1"),
            AckOutcome::Accepted
        );
        assert_eq!(
            read_ack(ack("AE", "C1").as_bytes(), "C1"),
            AckOutcome::Error("busy".into())
        );
        assert_eq!(
            read_ack(ack("AR", "C1").as_bytes(), "C1"),
            AckOutcome::Rejected("busy".into())
        );
        assert!(matches!(
            read_ack(ack("AA", "C2").as_bytes(), "C1"),
            AckOutcome::Unexpected(_)
        ));
        assert!(matches!(
            read_ack(b"hello", "C1"),
            AckOutcome::Unexpected(_)
        ));
    }
}
