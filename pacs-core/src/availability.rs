//! Availability notifications: telling other systems that a study's images
//! are in the archive, through the durable job queue.
//!
//! Two triggers make a [`Notice`]:
//! - an MPPS reaching COMPLETED ([`StepStatusSink::performed`]): one notice
//!   per study its scheduled steps name, carrying the MPPS, the series it
//!   performed and the step's accession number;
//! - a study left alone for `stable_after` (optional): every stored
//!   instance is seen through the [`StoreObserver`]; the first one of a
//!   study enqueues a `study-stable` check job due `stable_after` later,
//!   and the check ([`StableCheck`]) either finds the newest instance of
//!   the study at least that old (notice for the whole study) or sets
//!   itself again for when it will be.
//!
//! Each notice becomes one job per destination: kind [`IAN_JOB_KIND`]
//! per configured IAN AE (the DIMSE side sends the N-CREATE, PS3.4 R) and
//! kind [`HL7_JOB_KIND`] for the HIS (the HL7 side sends the message). So
//! a peer that is down delays only its own notices, which are retried with
//! back-off and survive a restart.
//!
//! Non-goals: exactly-once delivery (a crash between a check's decision
//! and its completion repeats the notice), remembering what was already
//! announced (a study that receives more instances after a notice gets
//! another one once stable again; an MPPS and the stable trigger both
//! announce the same study when both are on), a notice for a store that
//! was acknowledged in the instant before a crash and before its check
//! job was written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::archive::StoreObserver;
use crate::jobs::{now_ms, Job, JobDone, JobError, JobHandler, JobQueue, JobState, NewJob};
use crate::mpps::{MppsRecord, MppsStatus, ScheduledStepRef, StepStatusSink};
use crate::ports::PortError;
use crate::records::InstanceRecord;
use crate::{Archive, Uid};

/// Instance Availability Notification to one AE (payload [`Notice`]).
pub const IAN_JOB_KIND: &str = "ian";
/// "Images available" message to the HIS (payload [`Notice`]).
pub const HL7_JOB_KIND: &str = "hl7-images-available";
/// Whether a study has been left alone long enough (payload
/// [`StableCheckPayload`]).
pub const STABLE_JOB_KIND: &str = "study-stable";
/// The version of the payloads' JSON.
pub const PAYLOAD_VERSION: u32 = 1;

/// What became available, and to whom it is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub study_instance_uid: String,
    /// The MPPS that completed; `None` for the study-stable trigger.
    pub mpps_uid: Option<String>,
    /// The series the MPPS performed; empty: every series of the study.
    pub series: Vec<String>,
    /// The accession number of the step the MPPS performed, or of the
    /// study; may be empty.
    pub accession_number: String,
    /// The AE title an IAN goes to; empty for the HIS.
    pub destination: String,
    /// The SOP Instance UID of the notification (IAN N-CREATE), fixed
    /// when the job is made so that a repeated attempt repeats it.
    pub notification_uid: String,
}

impl Notice {
    fn to_job(&self, kind: &str, destination: String) -> Result<NewJob, PortError> {
        Ok(NewJob {
            kind: kind.to_owned(),
            payload_version: PAYLOAD_VERSION,
            payload: serde_json::to_string(self)
                .map_err(|e| PortError::Index(format!("notice payload: {e}")))?,
            destination: Some(destination),
            max_attempts: None,
            delay: Duration::ZERO,
        })
    }

    /// The notice a job carries; a payload of another version or that does
    /// not read is a permanent failure.
    pub fn from_job(job: &Job) -> Result<Notice, JobError> {
        read_payload(job)
    }
}

fn read_payload<T: for<'de> Deserialize<'de>>(job: &Job) -> Result<T, JobError> {
    if job.payload_version != PAYLOAD_VERSION {
        return Err(JobError::Permanent(format!(
            "{} payload of version {}: this pacs reads version {PAYLOAD_VERSION}",
            job.kind, job.payload_version
        )));
    }
    serde_json::from_str(&job.payload)
        .map_err(|e| JobError::Permanent(format!("unreadable {} payload: {e}", job.kind)))
}

/// The payload of a [`STABLE_JOB_KIND`] job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableCheckPayload {
    pub study_instance_uid: String,
}

/// Who is told, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvailabilityConfig {
    /// AE titles (of `[[remote_ae]]` entries) that get an IAN.
    pub ian_destinations: Vec<String>,
    /// The HIS endpoint (`host:port`) of "images available" messages;
    /// `None`: none are sent.
    pub hl7_destination: Option<String>,
    /// The study-stable trigger: a study whose newest instance is this old
    /// is announced; `None`: only MPPS COMPLETED announces.
    pub stable_after: Option<Duration>,
}

impl AvailabilityConfig {
    /// Whether anybody is to be told anything.
    pub fn is_active(&self) -> bool {
        !self.ian_destinations.is_empty() || self.hl7_destination.is_some()
    }
}

/// A fresh UID under `2.25` (PS3.5 B.2): 128 bits from a SHA-256 of the
/// time, a counter and the process's random hash keys.
pub fn new_uid() -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut sha = Sha256::new();
    sha.update(h.finish().to_le_bytes());
    sha.update(nanos.to_le_bytes());
    sha.update(std::process::id().to_le_bytes());
    let digest = sha.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

/// The triggers: an MPPS sink, a store observer, and the maker of the
/// notification jobs.
pub struct Availability {
    queue: JobQueue,
    config: AvailabilityConfig,
    /// Studies with a check job queued.
    pending: Mutex<HashSet<String>>,
    /// Studies whose first instance was just seen, to the task that
    /// writes their check job (a store does not wait for it).
    arrivals: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Availability {
    /// Starts the task that writes check jobs (inside a Tokio runtime) and
    /// learns which studies already have one queued.
    pub async fn start(
        queue: JobQueue,
        config: AvailabilityConfig,
    ) -> Result<Arc<Availability>, PortError> {
        let mut pending = HashSet::new();
        for job in queue.active().await? {
            if job.kind == STABLE_JOB_KIND
                && matches!(job.state, JobState::Queued | JobState::Running)
            {
                if let Ok(p) = read_payload::<StableCheckPayload>(&job) {
                    pending.insert(p.study_instance_uid);
                }
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let me = Arc::new(Availability {
            queue: queue.clone(),
            config,
            pending: Mutex::new(pending),
            arrivals: tx,
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            while let Some(study) = rx.recv().await {
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.schedule_check(&study, me.stable_after()).await {
                    warn!(error = %e, "study-stable check not queued");
                    me.lock().remove(&study);
                }
            }
        });
        Ok(me)
    }

    fn stable_after(&self) -> Duration {
        self.config.stable_after.unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn schedule_check(&self, study: &str, delay: Duration) -> Result<(), PortError> {
        let payload = StableCheckPayload {
            study_instance_uid: study.to_owned(),
        };
        self.queue
            .enqueue(NewJob {
                kind: STABLE_JOB_KIND.to_owned(),
                payload_version: PAYLOAD_VERSION,
                payload: serde_json::to_string(&payload)
                    .map_err(|e| PortError::Index(format!("check payload: {e}")))?,
                destination: Some(STABLE_JOB_KIND.to_owned()),
                max_attempts: None,
                delay,
            })
            .await?;
        debug!("study-stable check queued");
        Ok(())
    }

    /// Enqueues the jobs of one notice: an IAN per destination AE and the
    /// HIS message. Returns how many.
    pub async fn announce(
        &self,
        study_instance_uid: &str,
        mpps_uid: Option<&str>,
        series: &[String],
        accession_number: &str,
    ) -> Result<usize, PortError> {
        let mut n = 0;
        for ae in &self.config.ian_destinations {
            let notice = Notice {
                study_instance_uid: study_instance_uid.to_owned(),
                mpps_uid: mpps_uid.map(str::to_owned),
                series: series.to_vec(),
                accession_number: accession_number.to_owned(),
                destination: ae.clone(),
                notification_uid: new_uid(),
            };
            self.queue
                .enqueue(notice.to_job(IAN_JOB_KIND, ae.clone())?)
                .await?;
            n += 1;
        }
        if let Some(his) = &self.config.hl7_destination {
            let notice = Notice {
                study_instance_uid: study_instance_uid.to_owned(),
                mpps_uid: mpps_uid.map(str::to_owned),
                series: series.to_vec(),
                accession_number: accession_number.to_owned(),
                destination: String::new(),
                notification_uid: new_uid(),
            };
            self.queue
                .enqueue(notice.to_job(HL7_JOB_KIND, his.clone())?)
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// The handler of [`STABLE_JOB_KIND`] jobs.
    pub fn stable_check(self: &Arc<Self>, archive: Archive) -> Arc<StableCheck> {
        Arc::new(StableCheck {
            availability: self.clone(),
            archive,
        })
    }
}

/// The studies an MPPS performed, each with the accession number of its
/// first step naming it.
fn studies_of(steps: &[ScheduledStepRef]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in steps {
        if s.study_instance_uid.is_empty() || Uid::parse(&s.study_instance_uid).is_err() {
            continue;
        }
        if !out.iter().any(|(uid, _)| *uid == s.study_instance_uid) {
            out.push((s.study_instance_uid.clone(), s.accession_number.clone()));
        }
    }
    out
}

#[async_trait]
impl StepStatusSink for Availability {
    async fn step_status(&self, _: &ScheduledStepRef, _: MppsStatus, _: &str) {}

    async fn performed(&self, record: &MppsRecord) {
        if record.status != MppsStatus::Completed || !self.config.is_active() {
            return;
        }
        let studies = studies_of(&record.steps);
        if studies.is_empty() {
            warn!(mpps = %record.sop_instance_uid, "completed MPPS names no Study Instance UID: no availability notice");
            return;
        }
        for (study, accession) in studies {
            match self
                .announce(
                    &study,
                    Some(&record.sop_instance_uid),
                    &record.series_uids,
                    &accession,
                )
                .await
            {
                Ok(n) => {
                    info!(mpps = %record.sop_instance_uid, study = %study, jobs = n, "MPPS completed: availability notices queued")
                }
                Err(e) => {
                    warn!(mpps = %record.sop_instance_uid, error = %e, "availability notices not queued")
                }
            }
        }
    }
}

impl StoreObserver for Availability {
    fn stored(&self, record: &InstanceRecord) {
        if self.config.stable_after.is_none() || !self.config.is_active() {
            return;
        }
        let study = record.study_instance_uid.to_string();
        if self.lock().insert(study.clone()) {
            // Unbounded, but one message per study at a time.
            let _ = self.arrivals.send(study);
        }
    }
}

/// Runs [`STABLE_JOB_KIND`] jobs.
pub struct StableCheck {
    availability: Arc<Availability>,
    archive: Archive,
}

#[async_trait]
impl JobHandler for StableCheck {
    async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
        let p: StableCheckPayload = read_payload(job)?;
        let uid = Uid::parse(&p.study_instance_uid)
            .map_err(|e| JobError::Permanent(format!("study UID: {e}")))?;
        let a = &self.availability;
        // Forget the study first: an instance stored from here on queues
        // a check of its own.
        a.lock().remove(&p.study_instance_uid);
        let instances = match self.archive.instances_of_study(&uid).await {
            Ok(i) => i,
            Err(e) => {
                a.lock().insert(p.study_instance_uid.clone());
                return Err(JobError::Retry(format!("archive unavailable: {e}")));
            }
        };
        let Some(newest) = instances.iter().map(|i| i.received_at_ms).max() else {
            debug!("study-stable check: the study is gone");
            return Ok(JobDone::Kept);
        };
        let stable_after = a.stable_after().as_millis() as u64;
        let due = newest.saturating_add(stable_after);
        let now = now_ms();
        if now < due {
            // Still receiving: look again when it would be stable, unless
            // a store since the removal above queued its own check.
            if a.lock().insert(p.study_instance_uid.clone()) {
                a.schedule_check(&p.study_instance_uid, Duration::from_millis(due - now))
                    .await
                    .map_err(|e| {
                        a.lock().remove(&p.study_instance_uid);
                        JobError::Retry(format!("cannot queue the next check: {e}"))
                    })?;
            }
            return Ok(JobDone::Kept);
        }
        let accession = match self.archive.study(&uid).await {
            Ok(Some(s)) => s.accession_number,
            Ok(None) => String::new(),
            Err(e) => return Err(JobError::Retry(format!("archive unavailable: {e}"))),
        };
        let n = a
            .announce(&p.study_instance_uid, None, &[], &accession)
            .await
            .map_err(|e| JobError::Retry(format!("notices not queued: {e}")))?;
        info!(study = %p.study_instance_uid, instances = instances.len(), jobs = n, "study stable: availability notices queued");
        Ok(JobDone::Kept)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::jobs::MemoryJobStore;

    fn step(study: &str, acc: &str) -> ScheduledStepRef {
        ScheduledStepRef {
            accession_number: acc.into(),
            study_instance_uid: study.into(),
            ..ScheduledStepRef::default()
        }
    }

    #[test]
    fn studies_of_an_mpps() {
        let s = studies_of(&[
            step("1.2.3", "A1"),
            step("1.2.3", "A2"),
            step("", "A3"),
            step("not a uid", "A4"),
            step("1.2.4", ""),
        ]);
        assert_eq!(
            s,
            vec![
                ("1.2.3".to_owned(), "A1".to_owned()),
                ("1.2.4".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn uids_are_fresh_and_valid() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert!(a.starts_with("2.25.") && a.len() <= 64, "{a}");
        Uid::parse(&a).unwrap();
    }

    #[tokio::test]
    async fn a_completed_mpps_queues_one_job_per_destination() {
        let queue = JobQueue::new(Arc::new(MemoryJobStore::default()), 5);
        let a = Availability::start(
            queue.clone(),
            AvailabilityConfig {
                ian_destinations: vec!["RIS".into(), "VNA".into()],
                hl7_destination: Some("127.0.0.1:2575".into()),
                stable_after: None,
            },
        )
        .await
        .unwrap();
        let mut record = MppsRecord {
            sop_instance_uid: "1.2.9".into(),
            status: MppsStatus::InProgress,
            creator_ae: "CT".into(),
            created_ms: 0,
            updated_ms: 0,
            steps: vec![step("1.2.3", "ACC1")],
            series_uids: vec!["1.2.3.1".into()],
            dataset: Vec::new(),
        };
        a.performed(&record).await;
        assert!(queue.list().await.unwrap().is_empty());
        record.status = MppsStatus::Completed;
        a.performed(&record).await;
        let jobs = queue.list().await.unwrap();
        let kinds: Vec<(&str, Option<&str>)> = jobs
            .iter()
            .map(|j| (j.kind.as_str(), j.destination.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (IAN_JOB_KIND, Some("RIS")),
                (IAN_JOB_KIND, Some("VNA")),
                (HL7_JOB_KIND, Some("127.0.0.1:2575"))
            ]
        );
        let n = Notice::from_job(&jobs[0]).unwrap();
        assert_eq!(n.mpps_uid.as_deref(), Some("1.2.9"));
        assert_eq!(n.accession_number, "ACC1");
        assert_eq!(n.series, vec!["1.2.3.1".to_owned()]);
        assert_eq!(n.destination, "RIS");
        assert_ne!(
            n.notification_uid,
            Notice::from_job(&jobs[1]).unwrap().notification_uid
        );
    }
}
