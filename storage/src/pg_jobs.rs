//! The durable job queue on PostgreSQL, in the database of the PostgreSQL
//! index ([`PgIndex`]), so that every node sharing that index shares one
//! queue: a job enqueued on any node may run on any node, a node that
//! dies leaves its jobs to the others once their lease runs out, and every
//! node's admin view lists, retries and deletes the same jobs.
//!
//! Table (schema version 6, see [`crate::pg_index::MIGRATIONS`]): `jobs`,
//! `id` from the table's sequence (increasing), `state` and `owner` as
//! columns for an operator's `SELECT` (indexed by state), and the whole
//! job in `rec`, in the very bytes the sled store writes (job record
//! version 2, a format version byte then bincode; version 1 is read too,
//! any other refused: [`crate::workflow`]). Since schema version 9 the
//! job's `updated_ms` is a column too, indexed for the done jobs, so the
//! runner's sweep (every node's, every ten minutes) deletes the old done
//! jobs in one statement without reading the history.
//!
//! Every change of a job ([`JobStore::modify`]: a claim, a lease renewal,
//! an owner-checked outcome, a retry) is one transaction that takes the
//! row with `SELECT … FOR UPDATE`, decides on the decoded job and writes
//! it back, so of two nodes claiming one job the second finds it running
//! and backs off. Writes are durable when their commit returns
//! (`synchronous_commit = on`). Every SQL text is a constant. `Index::clear`
//! (reindex) leaves the table alone.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use pacs_core::jobs::{Job, JobChange, JobState, JobStore};
use pacs_core::ports::PortError;

use crate::pg_index::{execute, pg_err, pool_err, query, query_opt, PgIndex, TxError};
use crate::workflow::{decode_job, encode_job};

impl PgIndex {
    /// The job queue of this database.
    pub fn jobs(&self) -> PgJobs {
        PgJobs {
            pool: self.pool.clone(),
        }
    }
}

/// The job queue on PostgreSQL.
#[derive(Clone)]
pub struct PgJobs {
    pool: Pool,
}

fn db_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

fn job_id(id: i64) -> Result<u64, PortError> {
    u64::try_from(id).map_err(|_| PortError::Index(format!("job id {id} is negative")))
}

/// Jobs whose `updated_ms` one statement of the version 9 migration fills.
const UPDATED_BACKFILL_BATCH: i64 = 5_000;

/// A job's `updated_ms` as the column holds it.
fn updated_col(job: &Job) -> i64 {
    i64::try_from(job.updated_ms).unwrap_or(i64::MAX)
}

/// Fills `updated_ms` of the jobs a version-8 schema holds (in the
/// migrating transaction) from their records, in batches.
pub(crate) async fn backfill_updated(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
) -> Result<(), TxError> {
    let mut after = 0i64;
    let mut done = 0usize;
    loop {
        let batch = tx
            .query(
                "SELECT id, rec FROM jobs WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &UPDATED_BACKFILL_BATCH],
            )
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.get(0);
        let (mut ids, mut updated) = (Vec::with_capacity(batch.len()), Vec::new());
        for r in &batch {
            let job = job_of(r).map_err(TxError::Port)?;
            ids.push(r.get::<_, i64>(0));
            updated.push(updated_col(&job));
        }
        tx.execute(
            "UPDATE jobs SET updated_ms = u.ms \
             FROM unnest($1::bigint[], $2::bigint[]) AS u(id, ms) WHERE jobs.id = u.id",
            &[&ids, &updated],
        )
        .await?;
        done += batch.len();
        tracing::info!(jobs = done, index = %target, "jobs' last change written");
    }
    Ok(())
}

/// The job of a row (`id`, `rec`): the id is the row's.
fn job_of(row: &tokio_postgres::Row) -> Result<Job, PortError> {
    let mut job = decode_job(row.get(1))?;
    job.id = job_id(row.get(0))?;
    Ok(job)
}

impl PgJobs {
    async fn client(&self) -> Result<deadpool_postgres::Object, PortError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// The jobs a query of `id, rec` returns.
    async fn jobs_of(&self, sql: &str) -> Result<Vec<Job>, PortError> {
        let c = self.client().await?;
        let rows = query(&c, sql, &[]).await.map_err(pg_err)?;
        rows.iter().map(job_of).collect()
    }
}

#[async_trait]
impl JobStore for PgJobs {
    async fn insert(&self, mut job: Job) -> Result<Job, PortError> {
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT nextval(pg_get_serial_sequence('jobs', 'id'))",
            &[],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| PortError::Index("PostgreSQL: no job id".into()))?;
        let id: i64 = row.get(0);
        job.id = job_id(id)?;
        execute(
            &c,
            "INSERT INTO jobs (id, state, owner, updated_ms, rec) VALUES ($1, $2, $3, $4, $5)",
            &[
                &id,
                &job.state.as_str(),
                &job.owner,
                &updated_col(&job),
                &encode_job(&job)?,
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(job)
    }

    async fn modify(&self, id: u64, change: JobChange) -> Result<Option<Job>, PortError> {
        let Some(key) = db_id(id) else {
            return Ok(None);
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT id, rec FROM jobs WHERE id = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let mut job = job_of(&row)?;
        if !change(&mut job) {
            return Ok(None);
        }
        job.id = id;
        execute(
            &tx,
            "UPDATE jobs SET state = $2, owner = $3, updated_ms = $4, rec = $5 WHERE id = $1",
            &[
                &key,
                &job.state.as_str(),
                &job.owner,
                &updated_col(&job),
                &encode_job(&job)?,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(job))
    }

    async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        let Some(key) = db_id(id) else {
            return Ok(None);
        };
        let c = self.client().await?;
        match query_opt(&c, "SELECT id, rec FROM jobs WHERE id = $1", &[&key])
            .await
            .map_err(pg_err)?
        {
            Some(row) => job_of(&row).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<Job>, PortError> {
        self.jobs_of("SELECT id, rec FROM jobs ORDER BY id").await
    }

    async fn newest(
        &self,
        before: Option<u64>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, PortError> {
        // Backwards on the primary key, or on `jobs_by_state` (state, id).
        let before = before.map_or(i64::MAX, |b| db_id(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.client().await?;
        let rows = match state {
            Some(s) => query(
                &c,
                "SELECT id, rec FROM jobs WHERE state = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&s.as_str(), &before, &limit],
            )
            .await,
            None => {
                query(
                    &c,
                    "SELECT id, rec FROM jobs WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    &[&before, &limit],
                )
                .await
            }
        }
        .map_err(pg_err)?;
        rows.iter().map(job_of).collect()
    }

    async fn active(&self) -> Result<Vec<Job>, PortError> {
        // From the state index: the done jobs kept for their days are not read.
        self.jobs_of("SELECT id, rec FROM jobs WHERE state IN ('queued', 'running') ORDER BY id")
            .await
    }

    async fn delete(&self, id: u64) -> Result<bool, PortError> {
        let Some(key) = db_id(id) else {
            return Ok(false);
        };
        let c = self.client().await?;
        Ok(execute(&c, "DELETE FROM jobs WHERE id = $1", &[&key])
            .await
            .map_err(pg_err)?
            > 0)
    }

    async fn remove_done_before(&self, before_ms: u64) -> Result<usize, PortError> {
        // From `jobs_done_by_age`: one statement, whatever the history.
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let c = self.client().await?;
        let removed = execute(
            &c,
            "DELETE FROM jobs WHERE state = 'done' AND updated_ms < $1",
            &[&before],
        )
        .await
        .map_err(pg_err)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}
