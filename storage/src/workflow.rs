//! The job queue and the MPPS records in the index's sled database.
//!
//! Trees: `jobs` (id, big-endian u64 → job) and `mpps` (SOP Instance UID →
//! MPPS record). Like the credential trees they are not part of the index
//! proper: `pacs reindex` leaves them alone, since neither can be rebuilt
//! from the blobs.
//!
//! Every value starts with a format version byte ([`FORMAT`]), then
//! bincode; a record of another version is refused with a clear message.
//! A job's payload is JSON with its own version (`Job::payload_version`),
//! which its handler checks. Every write ends with a sled flush before it
//! returns: an enqueued job or an acknowledged MPPS survives a crash.

use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::jobs::{Job, JobState, JobStore};
use pacs_core::mpps::{MppsRecord, MppsStatus, MppsStore, ScheduledStepRef};
use pacs_core::ports::PortError;
use serde::{Deserialize, Serialize};

use crate::credentials::{db_err, decode};

/// The format version of every record this module writes (the same
/// framing as the credential records, whose `decode` reads them).
const FORMAT: u8 = 1;

const JOBS: &str = "jobs";
const MPPS: &str = "mpps";

#[derive(Serialize, Deserialize)]
struct StoredJob {
    id: u64,
    kind: String,
    payload_version: u32,
    payload: String,
    state: u8,
    attempts: u32,
    max_attempts: u32,
    created_ms: u64,
    next_run_ms: u64,
    updated_ms: u64,
    last_error: Option<String>,
    destination: Option<String>,
}

fn state_code(s: JobState) -> u8 {
    match s {
        JobState::Queued => 0,
        JobState::Running => 1,
        JobState::Done => 2,
        JobState::Dead => 3,
    }
}

fn state_of(code: u8) -> Result<JobState, PortError> {
    Ok(match code {
        0 => JobState::Queued,
        1 => JobState::Running,
        2 => JobState::Done,
        3 => JobState::Dead,
        n => {
            return Err(PortError::Index(format!(
                "job record has unknown state {n}"
            )))
        }
    })
}

fn to_job(s: StoredJob) -> Result<Job, PortError> {
    Ok(Job {
        id: s.id,
        kind: s.kind,
        payload_version: s.payload_version,
        payload: s.payload,
        state: state_of(s.state)?,
        attempts: s.attempts,
        max_attempts: s.max_attempts,
        created_ms: s.created_ms,
        next_run_ms: s.next_run_ms,
        updated_ms: s.updated_ms,
        last_error: s.last_error,
        destination: s.destination,
    })
}

fn from_job(j: &Job) -> StoredJob {
    StoredJob {
        id: j.id,
        kind: j.kind.clone(),
        payload_version: j.payload_version,
        payload: j.payload.clone(),
        state: state_code(j.state),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        created_ms: j.created_ms,
        next_run_ms: j.next_run_ms,
        updated_ms: j.updated_ms,
        last_error: j.last_error.clone(),
        destination: j.destination.clone(),
    }
}

#[derive(Serialize, Deserialize)]
struct StoredStep {
    accession_number: String,
    scheduled_procedure_step_id: String,
    requested_procedure_id: String,
    study_instance_uid: String,
}

#[derive(Serialize, Deserialize)]
struct StoredMpps {
    sop_instance_uid: String,
    status: String,
    creator_ae: String,
    created_ms: u64,
    updated_ms: u64,
    steps: Vec<StoredStep>,
    series_uids: Vec<String>,
    dataset: Vec<u8>,
}

fn to_mpps(s: StoredMpps) -> Result<MppsRecord, PortError> {
    Ok(MppsRecord {
        status: MppsStatus::parse(&s.status).ok_or_else(|| {
            PortError::Index(format!("MPPS record has unknown status {:?}", s.status))
        })?,
        sop_instance_uid: s.sop_instance_uid,
        creator_ae: s.creator_ae,
        created_ms: s.created_ms,
        updated_ms: s.updated_ms,
        steps: s
            .steps
            .into_iter()
            .map(|t| ScheduledStepRef {
                accession_number: t.accession_number,
                scheduled_procedure_step_id: t.scheduled_procedure_step_id,
                requested_procedure_id: t.requested_procedure_id,
                study_instance_uid: t.study_instance_uid,
            })
            .collect(),
        series_uids: s.series_uids,
        dataset: s.dataset,
    })
}

fn from_mpps(r: &MppsRecord) -> StoredMpps {
    StoredMpps {
        sop_instance_uid: r.sop_instance_uid.clone(),
        status: r.status.as_str().to_owned(),
        creator_ae: r.creator_ae.clone(),
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        steps: r
            .steps
            .iter()
            .map(|t| StoredStep {
                accession_number: t.accession_number.clone(),
                scheduled_procedure_step_id: t.scheduled_procedure_step_id.clone(),
                requested_procedure_id: t.requested_procedure_id.clone(),
                study_instance_uid: t.study_instance_uid.clone(),
            })
            .collect(),
        series_uids: r.series_uids.clone(),
        dataset: r.dataset.clone(),
    }
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, PortError> {
    crate::format::encode_record(FORMAT, what, v)
}

/// An MPPS record as stored (here and in the PostgreSQL store's `rec`).
#[cfg(feature = "postgres")]
pub(crate) fn encode_mpps(r: &MppsRecord) -> Result<Vec<u8>, PortError> {
    encode("MPPS", &from_mpps(r))
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_mpps(raw: &[u8]) -> Result<MppsRecord, PortError> {
    to_mpps(decode("MPPS", raw)?)
}

/// The job and MPPS trees of an open index (`SledIndex::workflow`). Like
/// `SledCredentials` it holds the index's database cell, not a handle, so
/// the index can reopen its database after an I/O error.
#[derive(Clone)]
pub struct SledWorkflow {
    cell: Arc<crate::index::Cell>,
}

struct Trees {
    db: sled::Db,
    jobs: sled::Tree,
    mpps: sled::Tree,
}

impl Trees {
    fn durable(&self) -> Result<(), PortError> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }
}

impl SledWorkflow {
    pub(crate) fn open(cell: Arc<crate::index::Cell>) -> Result<SledWorkflow, PortError> {
        let me = SledWorkflow { cell };
        me.trees()?;
        Ok(me)
    }

    fn trees(&self) -> Result<Trees, PortError> {
        let db = self.cell.current_db()?;
        Ok(Trees {
            jobs: db.open_tree(JOBS).map_err(db_err)?,
            mpps: db.open_tree(MPPS).map_err(db_err)?,
            db,
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, PortError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.trees()?))
            .await
            .map_err(|e| PortError::Index(format!("workflow task failed: {e}")))?
    }
}

#[async_trait]
impl JobStore for SledWorkflow {
    async fn insert(&self, mut job: Job) -> Result<Job, PortError> {
        self.blocking(move |t| {
            // sled's id generator never hands out the same id twice, even
            // across a crash; 0 is kept out of the way.
            job.id = t.db.generate_id().map_err(db_err)? + 1;
            t.jobs
                .insert(job.id.to_be_bytes(), encode("job", &from_job(&job))?)
                .map_err(db_err)?;
            t.durable()?;
            Ok(job)
        })
        .await
    }

    async fn update(&self, job: &Job) -> Result<bool, PortError> {
        let job = job.clone();
        self.blocking(move |t| {
            let key = job.id.to_be_bytes();
            if !t.jobs.contains_key(key).map_err(db_err)? {
                return Ok(false);
            }
            t.jobs
                .insert(key, encode("job", &from_job(&job))?)
                .map_err(db_err)?;
            t.durable()?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        self.blocking(
            move |t| match t.jobs.get(id.to_be_bytes()).map_err(db_err)? {
                Some(raw) => Ok(Some(to_job(decode("job", &raw)?)?)),
                None => Ok(None),
            },
        )
        .await
    }

    async fn list(&self) -> Result<Vec<Job>, PortError> {
        self.blocking(|t| {
            t.jobs
                .iter()
                .map(|kv| to_job(decode("job", &kv.map_err(db_err)?.1)?))
                .collect()
        })
        .await
    }

    async fn delete(&self, id: u64) -> Result<bool, PortError> {
        self.blocking(move |t| {
            let gone = t.jobs.remove(id.to_be_bytes()).map_err(db_err)?.is_some();
            t.durable()?;
            Ok(gone)
        })
        .await
    }
}

#[async_trait]
impl MppsStore for SledWorkflow {
    async fn create(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let key = record.sop_instance_uid.as_bytes().to_vec();
        let value = encode("MPPS", &from_mpps(record))?;
        self.blocking(move |t| {
            // Atomic: two N-CREATEs of one UID cannot both succeed.
            let created = t
                .mpps
                .compare_and_swap(key, None as Option<&[u8]>, Some(value))
                .map_err(db_err)?
                .is_ok();
            if created {
                t.durable()?;
            }
            Ok(created)
        })
        .await
    }

    async fn get(&self, sop_instance_uid: &str) -> Result<Option<MppsRecord>, PortError> {
        let key = sop_instance_uid.as_bytes().to_vec();
        self.blocking(move |t| match t.mpps.get(key).map_err(db_err)? {
            Some(raw) => Ok(Some(to_mpps(decode("MPPS", &raw)?)?)),
            None => Ok(None),
        })
        .await
    }

    async fn update(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let key = record.sop_instance_uid.as_bytes().to_vec();
        let value = encode("MPPS", &from_mpps(record))?;
        self.blocking(move |t| {
            // Compare-and-swap against the record read: a concurrent N-SET
            // that finished the step first is seen on the next round.
            for _ in 0..100 {
                let Some(raw) = t.mpps.get(&key).map_err(db_err)? else {
                    return Ok(false);
                };
                if to_mpps(decode("MPPS", &raw)?)?.status.is_final() {
                    return Ok(false);
                }
                let swapped = t
                    .mpps
                    .compare_and_swap(&key, Some(raw), Some(value.as_slice()))
                    .map_err(db_err)?;
                if swapped.is_ok() {
                    t.durable()?;
                    return Ok(true);
                }
            }
            Err(PortError::Index(
                "MPPS record kept changing during an N-SET".into(),
            ))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<MppsRecord>, PortError> {
        self.blocking(|t| {
            t.mpps
                .iter()
                .map(|kv| to_mpps(decode("MPPS", &kv.map_err(db_err)?.1)?))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SledIndex;

    fn job() -> Job {
        Job {
            id: 0,
            kind: "stgcmt-report".into(),
            payload_version: 1,
            payload: "{\"a\":1}".into(),
            state: JobState::Queued,
            attempts: 0,
            max_attempts: 5,
            created_ms: 1,
            next_run_ms: 2,
            updated_ms: 3,
            last_error: None,
            destination: Some("MODALITY".into()),
        }
    }

    #[tokio::test]
    async fn jobs_and_mpps_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let (a, b);
        {
            let index = SledIndex::open(&path).unwrap();
            let w = index.workflow().unwrap();
            a = JobStore::insert(&w, job()).await.unwrap();
            b = JobStore::insert(&w, job()).await.unwrap();
            assert!(b.id > a.id && a.id > 0);
            let mut done = a.clone();
            done.state = JobState::Dead;
            done.last_error = Some("unreachable".into());
            assert!(JobStore::update(&w, &done).await.unwrap());
            let rec = MppsRecord {
                sop_instance_uid: "1.2.3".into(),
                status: MppsStatus::InProgress,
                creator_ae: "MOD".into(),
                created_ms: 1,
                updated_ms: 1,
                steps: vec![ScheduledStepRef {
                    accession_number: "A1".into(),
                    ..Default::default()
                }],
                series_uids: vec!["1.2.3.4".into()],
                dataset: vec![1, 2, 3, 4],
            };
            assert!(w.create(&rec).await.unwrap());
            assert!(!w.create(&rec).await.unwrap());
        }
        let index = SledIndex::open(&path).unwrap();
        let w = index.workflow().unwrap();
        let jobs = JobStore::list(&w).await.unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].state, JobState::Dead);
        assert_eq!(jobs[0].last_error.as_deref(), Some("unreachable"));
        assert_eq!(jobs[1], b);
        let rec = MppsStore::get(&w, "1.2.3").await.unwrap().unwrap();
        assert_eq!(rec.steps[0].accession_number, "A1");
        assert!(JobStore::delete(&w, a.id).await.unwrap());
        assert_eq!(JobStore::list(&w).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_format_version_is_refused() {
        let index = SledIndex::temporary().unwrap();
        let w = index.workflow().unwrap();
        let t = w.trees().unwrap();
        t.jobs.insert(7u64.to_be_bytes(), vec![9u8, 0, 0]).unwrap();
        let err = JobStore::get(&w, 7).await.unwrap_err().to_string();
        assert!(err.contains("format version 9"), "{err}");
    }
}
