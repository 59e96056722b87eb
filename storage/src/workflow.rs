//! The job queue and the MPPS records in the index's sled database.
//!
//! Trees: `jobs` (id, big-endian u64 → job), `mpps` (SOP Instance UID →
//! MPPS record) and `mpps_by_accession` (accession number, a zero byte,
//! SOP Instance UID → nothing: one entry per accession number an MPPS's
//! steps name, index format 5). Like the credential trees they are not part of the index
//! proper: `pacs reindex` leaves them alone, since neither can be rebuilt
//! from the blobs.
//!
//! Every value starts with a format version byte, then bincode: MPPS
//! records version [`FORMAT`] (1), jobs [`JOB_RECORD`] (2: version 1
//! lacked the owner and the lease, and is still read); a record of
//! another version is refused with a clear message. A job changes by
//! compare-and-swap against the record read ([`JobStore::modify`]), so a
//! claim and an owner-checked outcome are atomic here too.
//! A job's payload is JSON with its own version (`Job::payload_version`),
//! which its handler checks. Every write ends with a sled flush before it
//! returns: an enqueued job or an acknowledged MPPS survives a crash.
//!
//! The runner asks for the queued and running jobs every second
//! ([`JobStore::active`]), while the done ones stay for days. The ids of
//! the active ones are kept in memory ([`ActiveJobs`]), read from the tree
//! once when the index opens: only this process writes the database (sled
//! holds a lock on it), so the set is exact without a tree of its own.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::jobs::{Job, JobChange, JobState, JobStore};
use pacs_core::mpps::{MppsRecord, MppsStatus, MppsStore, ScheduledStepRef};
use pacs_core::ports::PortError;
use serde::{Deserialize, Serialize};

use crate::credentials::{db_err, decode};

/// The format version of every record this module writes (the same
/// framing as the credential records, whose `decode` reads them).
const FORMAT: u8 = 1;

/// The format version of a job record (version 1 had no owner and no
/// lease; it is read as a job no one holds).
pub const JOB_RECORD: u8 = 2;

const JOBS: &str = "jobs";
const MPPS: &str = "mpps";
const MPPS_BY_ACCESSION: &str = "mpps_by_accession";

/// `meta` key set once `mpps_by_accession` holds an entry for every MPPS
/// (built at open for an index migrated from format 4).
pub(crate) const MPPS_ACCESSIONS_BUILT: &[u8] = b"built/mpps_by_accession";

/// The `mpps_by_accession` key of one accession number and MPPS.
fn accession_key(accession: &str, sop: &str) -> Vec<u8> {
    [accession.as_bytes(), b"\0", sop.as_bytes()].concat()
}

/// The `mpps_by_accession` keys a record needs.
fn accession_keys(record: &MppsRecord) -> Vec<Vec<u8>> {
    record
        .accessions()
        .into_iter()
        .map(|a| accession_key(a, &record.sop_instance_uid))
        .collect()
}

/// Writes the `mpps_by_accession` entries of every MPPS held, once (an
/// index migrated from format 4 has none); a record that cannot be read
/// is left out with a warning, as reading it would fail anyway.
pub(crate) fn build_mpps_accessions(db: &sled::Db, meta: &sled::Tree) -> sled::Result<()> {
    if meta.contains_key(MPPS_ACCESSIONS_BUILT)? {
        return Ok(());
    }
    let mpps = db.open_tree(MPPS)?;
    let by_accession = db.open_tree(MPPS_BY_ACCESSION)?;
    let mut records = 0u64;
    for kv in mpps.iter() {
        let (key, raw) = kv?;
        match decode("MPPS", &raw).and_then(to_mpps) {
            Ok(record) => {
                for k in accession_keys(&record) {
                    by_accession.insert(k, &[])?;
                }
                records += 1;
            }
            Err(e) => tracing::warn!(mpps = %String::from_utf8_lossy(&key), error = %e,
                "an MPPS record is unreadable; it gets no accession entry"),
        }
    }
    meta.insert(MPPS_ACCESSIONS_BUILT, crate::index::PRESENT)?;
    db.flush()?;
    if records > 0 {
        tracing::info!(records, "MPPS accession entries built");
    }
    Ok(())
}

/// A job record of version 1.
#[derive(Serialize, Deserialize)]
struct StoredJobV1 {
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

/// A job record of version 2: version 1's fields, then the owner and the
/// lease (bincode writes a nested struct's fields in place, so version 1
/// is a prefix of version 2).
#[derive(Serialize, Deserialize)]
struct StoredJob {
    v1: StoredJobV1,
    owner: Option<String>,
    lease_until_ms: u64,
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
    let v1 = s.v1;
    Ok(Job {
        id: v1.id,
        kind: v1.kind,
        payload_version: v1.payload_version,
        payload: v1.payload,
        state: state_of(v1.state)?,
        attempts: v1.attempts,
        max_attempts: v1.max_attempts,
        created_ms: v1.created_ms,
        next_run_ms: v1.next_run_ms,
        updated_ms: v1.updated_ms,
        last_error: v1.last_error,
        destination: v1.destination,
        owner: s.owner,
        lease_until_ms: s.lease_until_ms,
    })
}

fn from_job(j: &Job) -> StoredJob {
    StoredJob {
        v1: StoredJobV1 {
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
        },
        owner: j.owner.clone(),
        lease_until_ms: j.lease_until_ms,
    }
}

/// A job as stored (here and in the PostgreSQL store's `rec`).
pub(crate) fn encode_job(j: &Job) -> Result<Vec<u8>, PortError> {
    crate::format::encode_record(JOB_RECORD, "job", &from_job(j))
}

/// A job record of version 2 or 1; any other version is refused.
pub(crate) fn decode_job(raw: &[u8]) -> Result<Job, PortError> {
    if raw.first() == Some(&1) {
        return to_job(StoredJob {
            v1: crate::format::decode_record(1, "job", raw)?,
            owner: None,
            lease_until_ms: 0,
        });
    }
    to_job(crate::format::decode_record(JOB_RECORD, "job", raw)?)
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

/// The ids of the queued and running jobs, or more: every write that
/// leaves a job active adds its id after the write (even a failed one,
/// which may have landed), and [`JobStore::active`] removes the ids whose
/// job it finds done, dead or gone, holding the lock from that read to the
/// removal. A write that makes a job active again while it runs is thus
/// either seen by that read or adds the id after the removal: no active
/// job is ever missing. `None` until read from the tree.
#[derive(Default)]
pub(crate) struct ActiveJobs(std::sync::Mutex<Option<BTreeSet<u64>>>);

impl ActiveJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<u64>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes `job` after a write of it, if it is active.
    fn wrote(&self, job: &Job) {
        if job.is_active() {
            if let Some(ids) = self.lock().as_mut() {
                ids.insert(job.id);
            }
        }
    }
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
    mpps_by_accession: sled::Tree,
    cell: Arc<crate::index::Cell>,
}

impl Trees {
    fn durable(&self) -> Result<(), PortError> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }

    /// Writes accession entries (made durable by the record's flush).
    fn add_accessions(&self, keys: &[Vec<u8>]) -> Result<(), PortError> {
        for k in keys {
            self.mpps_by_accession
                .insert(k.as_slice(), &[])
                .map_err(db_err)?;
        }
        Ok(())
    }
}

impl SledWorkflow {
    pub(crate) fn open(cell: Arc<crate::index::Cell>) -> Result<SledWorkflow, PortError> {
        let me = SledWorkflow { cell };
        let t = me.trees()?;
        let mut active = t.cell.active_jobs.lock();
        if active.is_none() {
            let mut ids = BTreeSet::new();
            for kv in t.jobs.iter() {
                let (key, raw) = kv.map_err(db_err)?;
                if decode_job(&raw)?.is_active() {
                    if let Ok(id) = <[u8; 8]>::try_from(key.as_ref()) {
                        ids.insert(u64::from_be_bytes(id));
                    }
                }
            }
            *active = Some(ids);
        }
        drop(active);
        Ok(me)
    }

    fn trees(&self) -> Result<Trees, PortError> {
        let db = self.cell.current_db()?;
        Ok(Trees {
            jobs: db.open_tree(JOBS).map_err(db_err)?,
            mpps: db.open_tree(MPPS).map_err(db_err)?,
            mpps_by_accession: db.open_tree(MPPS_BY_ACCESSION).map_err(db_err)?,
            db,
            cell: self.cell.clone(),
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
            let written = t
                .jobs
                .insert(job.id.to_be_bytes(), encode_job(&job)?)
                .map_err(db_err)
                .and_then(|_| t.durable());
            t.cell.active_jobs.wrote(&job);
            written.map(|()| job)
        })
        .await
    }

    async fn modify(&self, id: u64, change: JobChange) -> Result<Option<Job>, PortError> {
        self.blocking(move |t| {
            let key = id.to_be_bytes();
            // Compare-and-swap against the record read: a change that
            // came between is seen on the next round.
            for _ in 0..100 {
                let Some(raw) = t.jobs.get(key).map_err(db_err)? else {
                    return Ok(None);
                };
                let mut job = decode_job(&raw)?;
                if !change(&mut job) {
                    return Ok(None);
                }
                job.id = id;
                let swapped = t
                    .jobs
                    .compare_and_swap(key, Some(raw), Some(encode_job(&job)?))
                    .map_err(db_err)?;
                if swapped.is_ok() {
                    let durable = t.durable();
                    t.cell.active_jobs.wrote(&job);
                    return durable.map(|()| Some(job));
                }
            }
            Err(PortError::Index(format!("job {id} kept changing")))
        })
        .await
    }

    async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        self.blocking(
            move |t| match t.jobs.get(id.to_be_bytes()).map_err(db_err)? {
                Some(raw) => Ok(Some(decode_job(&raw)?)),
                None => Ok(None),
            },
        )
        .await
    }

    async fn list(&self) -> Result<Vec<Job>, PortError> {
        self.blocking(|t| {
            t.jobs
                .iter()
                .map(|kv| decode_job(&kv.map_err(db_err)?.1))
                .collect()
        })
        .await
    }

    async fn newest(
        &self,
        before: Option<u64>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, PortError> {
        self.blocking(move |t| {
            let end = before.unwrap_or(u64::MAX).to_be_bytes();
            let mut out = Vec::new();
            // Ids are big-endian keys: backwards from `before`.
            for kv in t.jobs.range(..end.as_slice()).rev() {
                if out.len() == limit {
                    break;
                }
                let job = decode_job(&kv.map_err(db_err)?.1)?;
                if state.is_none_or(|s| job.state == s) {
                    out.push(job);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn active(&self) -> Result<Vec<Job>, PortError> {
        self.blocking(|t| {
            let mut guard = t.cell.active_jobs.lock();
            let Some(ids) = guard.as_mut() else {
                return Err(PortError::Index("the job ids were not read".into()));
            };
            let mut out = Vec::new();
            let mut finished = Vec::new();
            // Ascending ids: oldest first.
            for &id in ids.iter() {
                match t.jobs.get(id.to_be_bytes()).map_err(db_err)? {
                    Some(raw) => {
                        let job = decode_job(&raw)?;
                        if job.is_active() {
                            out.push(job);
                        } else {
                            finished.push(id);
                        }
                    }
                    None => finished.push(id),
                }
            }
            for id in finished {
                ids.remove(&id);
            }
            Ok(out)
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
        let entries = accession_keys(record);
        self.blocking(move |t| {
            // The accession entries first: one without its record (a crash
            // between, a refused create) is passed over on reading.
            t.add_accessions(&entries)?;
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
        let entries = accession_keys(record);
        self.blocking(move |t| {
            // The new steps' entries first (an entry a step no longer
            // names is passed over on reading).
            t.add_accessions(&entries)?;
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

    async fn of_accession(&self, accession: &str) -> Result<Vec<MppsRecord>, PortError> {
        let accession = accession.to_owned();
        let prefix = accession_key(&accession, "");
        self.blocking(move |t| {
            let mut out = Vec::new();
            for kv in t.mpps_by_accession.scan_prefix(&prefix) {
                let (k, _) = kv.map_err(db_err)?;
                let Some(raw) = t.mpps.get(&k[prefix.len()..]).map_err(db_err)? else {
                    continue;
                };
                let record = to_mpps(decode("MPPS", &raw)?)?;
                if record.names_accession(&accession) {
                    out.push(record);
                }
            }
            Ok(out)
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
            owner: None,
            lease_until_ms: 0,
        }
    }

    /// The active jobs from the ids kept in memory: right after a job is
    /// finished and pruned, then queued again; under writers changing jobs
    /// while runners ask; after a reopen (read again from the tree); and
    /// through a second handle on the same index.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn active_jobs_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let ids_of = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<u64>>();
        let truth = |jobs: Vec<Job>| {
            jobs.into_iter()
                .filter(Job::is_active)
                .map(|j| j.id)
                .collect::<Vec<u64>>()
        };
        let set = |w: &SledWorkflow, id: u64, state: JobState| {
            let w = w.clone();
            async move {
                JobStore::modify(
                    &w,
                    id,
                    Arc::new(move |j: &mut Job| {
                        j.state = state;
                        true
                    }),
                )
                .await
                .unwrap()
                .unwrap()
            }
        };
        {
            let index = SledIndex::open(&path).unwrap();
            let w = index.workflow().unwrap();
            let a = JobStore::insert(&w, job()).await.unwrap();
            let b = JobStore::insert(&w, job()).await.unwrap();
            assert_eq!(ids_of(w.active().await.unwrap()), vec![a.id, b.id]);
            set(&w, a.id, JobState::Done).await;
            assert_eq!(ids_of(w.active().await.unwrap()), vec![b.id]);
            // Pruned above; queued again (an operator's retry): back.
            set(&w, a.id, JobState::Queued).await;
            assert_eq!(ids_of(w.active().await.unwrap()), vec![a.id, b.id]);
            assert!(JobStore::delete(&w, b.id).await.unwrap());
            assert_eq!(ids_of(w.active().await.unwrap()), vec![a.id]);

            // Writers flipping jobs between states while runners ask.
            let mut ids = Vec::new();
            for _ in 0..40 {
                ids.push(JobStore::insert(&w, job()).await.unwrap().id);
            }
            let mut tasks = Vec::new();
            for (n, chunk) in ids.chunks(10).enumerate() {
                let (w, chunk) = (w.clone(), chunk.to_vec());
                tasks.push(tokio::spawn(async move {
                    for round in 0..6 {
                        for (k, &id) in chunk.iter().enumerate() {
                            let state = match (n + k + round) % 4 {
                                0 => JobState::Queued,
                                1 => JobState::Running,
                                2 => JobState::Done,
                                _ => JobState::Dead,
                            };
                            set(&w, id, state).await;
                        }
                    }
                }));
            }
            let reader = {
                let w = w.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        w.active().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            };
            for t in tasks {
                t.await.unwrap();
            }
            reader.await.unwrap();
            let want = truth(JobStore::list(&w).await.unwrap());
            assert!(want.len() > 1 && want.len() < 41, "{want:?}");
            assert_eq!(ids_of(w.active().await.unwrap()), want);
            let other = index.workflow().unwrap();
            assert_eq!(ids_of(other.active().await.unwrap()), want);
        }
        let index = SledIndex::open(&path).unwrap();
        let w = index.workflow().unwrap();
        let want = truth(JobStore::list(&w).await.unwrap());
        assert_eq!(ids_of(w.active().await.unwrap()), want);
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

    /// A job written by a build before leases (record version 1) is read
    /// as a job no one holds, and written back as version 2.
    #[tokio::test]
    async fn a_version_1_job_is_read_and_rewritten_as_version_2() {
        let index = SledIndex::temporary().unwrap();
        let w = index.workflow().unwrap();
        let t = w.trees().unwrap();
        let j = job();
        let v1 = StoredJobV1 {
            id: 5,
            kind: j.kind.clone(),
            payload_version: 1,
            payload: j.payload.clone(),
            state: 1,
            attempts: 2,
            max_attempts: 5,
            created_ms: 1,
            next_run_ms: 2,
            updated_ms: 3,
            last_error: Some("x".into()),
            destination: j.destination.clone(),
        };
        t.jobs
            .insert(
                5u64.to_be_bytes(),
                crate::format::encode_versioned(1, &v1).unwrap(),
            )
            .unwrap();
        let read = JobStore::get(&w, 5).await.unwrap().unwrap();
        assert_eq!(read.state, JobState::Running);
        assert_eq!(
            (read.owner, read.lease_until_ms, read.attempts),
            (None, 0, 2)
        );
        let mut seen = JobStore::get(&w, 5).await.unwrap().unwrap();
        assert!(w.release(&seen, 10).await.unwrap());
        assert_eq!(
            t.jobs.get(5u64.to_be_bytes()).unwrap().unwrap()[0],
            JOB_RECORD
        );
        seen = JobStore::get(&w, 5).await.unwrap().unwrap();
        assert_eq!((seen.state, seen.next_run_ms), (JobState::Queued, 10));
    }
}

/// A benchmark, not a test (`cargo test -p storage --release --lib
/// active_jobs_cost -- --ignored --nocapture`): the runner's pass with
/// 40,000 done jobs kept and 10 queued, from the ids in memory, against
/// reading every job as the pass did before (what `list` still does).
#[cfg(test)]
mod bench {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark"]
    async fn active_jobs_cost() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::SledIndex::open(&dir.path().join("index")).unwrap();
        let w = index.workflow().unwrap();
        let t = w.trees().unwrap();
        for i in 0..40_010u64 {
            let job = Job {
                id: t.db.generate_id().unwrap() + 1,
                kind: "study-stable".into(),
                payload_version: 1,
                payload: format!("{{\"study\":\"1.2.826.0.1.3680043.10.{i}\"}}"),
                state: if i % 4001 == 0 {
                    JobState::Queued
                } else {
                    JobState::Done
                },
                attempts: 1,
                max_attempts: 5,
                created_ms: 1,
                next_run_ms: 2,
                updated_ms: 3,
                last_error: None,
                destination: Some("WAREHOUSE".into()),
                owner: None,
                lease_until_ms: 0,
            };
            t.jobs
                .insert(job.id.to_be_bytes(), encode_job(&job).unwrap())
                .unwrap();
            t.cell.active_jobs.wrote(&job);
        }
        t.db.flush().unwrap();
        let median = |mut v: Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (mut pass, mut scan) = (Vec::new(), Vec::new());
        for _ in 0..21 {
            let t0 = std::time::Instant::now();
            let active = w.active().await.unwrap();
            pass.push(t0.elapsed());
            let t0 = std::time::Instant::now();
            let all: Vec<Job> = JobStore::list(&w)
                .await
                .unwrap()
                .into_iter()
                .filter(Job::is_active)
                .collect();
            scan.push(t0.elapsed());
            assert_eq!(active.len(), 10);
            assert_eq!(all, active);
        }
        eprintln!(
            "active jobs of 40,010: from the ids {:?}, reading every job {:?} (medians of 21)",
            median(pass),
            median(scan)
        );
    }
}
