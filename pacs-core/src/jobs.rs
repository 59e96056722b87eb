//! The durable job queue: work that must survive a restart and be retried
//! (storage commitment reports, IAN, HL7 "images available", study-stable
//! checks now; forwarding, prior fetching later).
//!
//! A [`Job`] has a kind (which [`JobHandler`] runs it), a versioned JSON
//! payload, a state, a count of attempts, the time of its next run, the
//! last error and an optional destination (a remote AE title, a host) that
//! caps how many jobs run against one peer at once. The [`JobStore`] port
//! keeps them (the `storage` crate puts them in sled); every write is
//! durable before it returns, so a job enqueued is a job that will run,
//! even after a crash. The [`JobRunner`] takes due jobs, runs them, and
//! on failure schedules the next attempt with exponential back-off and
//! jitter; past `max_attempts` a job is dead-lettered (state `dead`, kept
//! for an operator to retry or delete with `pacs queue`).
//!
//! Non-goals: exactly-once delivery (a job interrupted by a crash runs
//! again, so handlers must be idempotent or the peer must tolerate a
//! repeat, which is the case for storage commitment reports, PS3.4 J.3.3),
//! ordering between jobs, priorities, very large queues: each pass of the
//! runner (at least once a second) lists every job, and done jobs are kept
//! seven days, so a queue of tens of thousands of jobs wants a due-time
//! index first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
pub use tokio_util::sync::CancellationToken;

use crate::ports::PortError;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for `next_run_ms`.
    Queued,
    /// A handler is running it (a job found `running` at start was
    /// interrupted and is queued again).
    Running,
    /// Finished successfully.
    Done,
    /// Gave up after `max_attempts`, or failed permanently.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }
}

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Assigned by the store, unique, increasing.
    pub id: u64,
    /// Which handler runs it (e.g. `stgcmt-report`).
    pub kind: String,
    /// The format version of `payload`, for the handler to check.
    pub payload_version: u32,
    /// The handler's input, JSON.
    pub payload: String,
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    pub next_run_ms: u64,
    pub updated_ms: u64,
    pub last_error: Option<String>,
    /// The peer the job talks to; at most `per_destination` jobs run
    /// against one destination at once.
    pub destination: Option<String>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: String,
    pub payload_version: u32,
    pub payload: String,
    pub destination: Option<String>,
    /// `None`: the runner's [`RetryPolicy::max_attempts`].
    pub max_attempts: Option<u32>,
    /// How long the runner leaves it alone first (zero: due now). A caller
    /// that will try the work itself first gives itself this long, then
    /// calls [`JobQueue::complete`] or [`JobQueue::run_now`].
    pub delay: Duration,
}

/// Keeps jobs. Every write is durable before it returns.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores `job` under a fresh id (ignoring `job.id`) and returns it.
    async fn insert(&self, job: Job) -> Result<Job, PortError>;
    /// Replaces the job with the same id; `false` if there is none.
    async fn update(&self, job: &Job) -> Result<bool, PortError>;
    async fn get(&self, id: u64) -> Result<Option<Job>, PortError>;
    /// Every job, oldest first.
    async fn list(&self) -> Result<Vec<Job>, PortError>;
    async fn delete(&self, id: u64) -> Result<bool, PortError>;
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The queue as its users see it: enqueue, list, retry, delete. Cheap to
/// clone; enqueueing wakes the runner.
#[derive(Clone)]
pub struct JobQueue {
    store: Arc<dyn JobStore>,
    wake: Arc<Notify>,
    default_max_attempts: u32,
}

impl JobQueue {
    pub fn new(store: Arc<dyn JobStore>, default_max_attempts: u32) -> JobQueue {
        JobQueue {
            store,
            wake: Arc::new(Notify::new()),
            default_max_attempts: default_max_attempts.max(1),
        }
    }

    /// Stores a job, durably, due now.
    pub async fn enqueue(&self, new: NewJob) -> Result<Job, PortError> {
        let now = now_ms();
        let job = self
            .store
            .insert(Job {
                id: 0,
                kind: new.kind,
                payload_version: new.payload_version,
                payload: new.payload,
                state: JobState::Queued,
                attempts: 0,
                max_attempts: new.max_attempts.unwrap_or(self.default_max_attempts).max(1),
                created_ms: now,
                next_run_ms: now + new.delay.as_millis() as u64,
                updated_ms: now,
                last_error: None,
                destination: new.destination,
            })
            .await?;
        self.wake.notify_one();
        Ok(job)
    }

    pub async fn list(&self) -> Result<Vec<Job>, PortError> {
        self.store.list().await
    }

    pub async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        self.store.get(id).await
    }

    /// Queues a job again now, with its attempts reset (a dead or done
    /// job, or one waiting for its back-off). `false` if there is no such
    /// job or it is running.
    pub async fn retry(&self, id: u64) -> Result<bool, PortError> {
        let Some(mut job) = self.store.get(id).await? else {
            return Ok(false);
        };
        if job.state == JobState::Running {
            return Ok(false);
        }
        let now = now_ms();
        job.state = JobState::Queued;
        job.attempts = 0;
        job.next_run_ms = now;
        job.updated_ms = now;
        let ok = self.store.update(&job).await?;
        self.wake.notify_one();
        Ok(ok)
    }

    pub async fn delete(&self, id: u64) -> Result<bool, PortError> {
        self.store.delete(id).await
    }

    /// Marks a queued job done (its work was done outside the runner).
    pub async fn complete(&self, id: u64) -> Result<bool, PortError> {
        let Some(mut job) = self.store.get(id).await? else {
            return Ok(false);
        };
        if job.state != JobState::Queued {
            return Ok(false);
        }
        job.state = JobState::Done;
        job.updated_ms = now_ms();
        self.store.update(&job).await
    }

    /// Makes a queued job due now (the caller that held it back gave up).
    pub async fn run_now(&self, id: u64) -> Result<bool, PortError> {
        let Some(mut job) = self.store.get(id).await? else {
            return Ok(false);
        };
        if job.state != JobState::Queued {
            return Ok(false);
        }
        let now = now_ms();
        job.next_run_ms = now;
        job.updated_ms = now;
        let ok = self.store.update(&job).await?;
        self.wake.notify_one();
        Ok(ok)
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (peer unreachable, busy).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (unreadable payload, unknown destination):
    /// dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
}

/// Runs the jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<(), JobError>;
}

/// Back-off between attempts: `base * 2^(attempts-1)`, capped at `max`,
/// then spread by up to ±`jitter_percent` so that jobs that failed
/// together do not retry together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub jitter_percent: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            max_attempts: 20,
            jitter_percent: 20,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt; `random` picks the
    /// jitter (any u64).
    pub fn delay(&self, attempts: u32, random: u64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let raw = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .as_millis() as u64;
        let spread = raw * u64::from(self.jitter_percent.min(100)) / 100;
        if spread == 0 {
            return Duration::from_millis(raw);
        }
        let offset = random % (2 * spread + 1);
        Duration::from_millis(raw - spread + offset)
    }
}

/// A random u64 from the standard library's per-process hash keys (jitter
/// needs no more).
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u64(now_ms());
    h.finish()
}

/// Runs due jobs with their handlers.
pub struct JobRunner {
    queue: JobQueue,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    policy: RetryPolicy,
    per_destination: usize,
    /// Longest sleep between two looks at the store.
    poll: Duration,
    /// Done jobs older than this are removed.
    keep_done: Duration,
}

impl JobRunner {
    pub fn new(queue: JobQueue, policy: RetryPolicy, per_destination: usize) -> JobRunner {
        JobRunner {
            queue,
            handlers: HashMap::new(),
            policy,
            per_destination: per_destination.max(1),
            poll: Duration::from_secs(1),
            keep_done: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Registers the handler of `kind`.
    pub fn handle(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }

    /// Sets the longest sleep between two looks at the store (tests).
    pub fn with_poll(mut self, poll: Duration) -> JobRunner {
        self.poll = poll;
        self
    }

    /// Runs until `stop`; jobs in flight then finish in the background or
    /// are queued again at the next start.
    pub async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        if let Err(e) = me.requeue_interrupted().await {
            tracing::warn!(error = %e, "job queue: cannot requeue interrupted jobs");
        }
        let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let in_flight: Arc<Mutex<std::collections::HashSet<u64>>> = Arc::default();
        loop {
            let next = match me.pass(&running, &in_flight).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "job queue: store unavailable; retrying");
                    None
                }
            };
            let sleep = next
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(me.poll)
                .min(me.poll);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = me.queue.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Jobs left `running` by the previous run were interrupted.
    async fn requeue_interrupted(&self) -> Result<(), PortError> {
        for mut job in self.queue.store.list().await? {
            if job.state == JobState::Running {
                job.state = JobState::Queued;
                job.next_run_ms = now_ms();
                self.queue.store.update(&job).await?;
            }
        }
        Ok(())
    }

    /// Starts every due job that has room; returns when the next queued
    /// job is due.
    async fn pass(
        self: &Arc<Self>,
        running: &Arc<Mutex<HashMap<String, usize>>>,
        in_flight: &Arc<Mutex<std::collections::HashSet<u64>>>,
    ) -> Result<Option<u64>, PortError> {
        let now = now_ms();
        let mut next: Option<u64> = None;
        for job in self.queue.store.list().await? {
            match job.state {
                JobState::Done => {
                    if now.saturating_sub(job.updated_ms) > self.keep_done.as_millis() as u64 {
                        self.queue.store.delete(job.id).await?;
                    }
                    continue;
                }
                JobState::Queued => {}
                _ => continue,
            }
            if lock(in_flight).contains(&job.id) {
                continue;
            }
            if job.next_run_ms > now {
                next = Some(next.map_or(job.next_run_ms, |n| n.min(job.next_run_ms)));
                continue;
            }
            let dest = job.destination.clone().unwrap_or_default();
            {
                let mut r = lock(running);
                let n = r.entry(dest.clone()).or_default();
                if *n >= self.per_destination {
                    continue;
                }
                *n += 1;
            }
            lock(in_flight).insert(job.id);
            let me = self.clone();
            let running = running.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let id = job.id;
                if let Err(e) = me.attempt(job).await {
                    tracing::warn!(job = id, error = %e, "job queue: cannot record a job's outcome");
                }
                if let Some(n) = lock(&running).get_mut(&dest) {
                    *n = n.saturating_sub(1);
                }
                lock(&in_flight).remove(&id);
                me.queue.wake.notify_one();
            });
        }
        Ok(next)
    }

    /// One attempt of one job, and its outcome recorded.
    async fn attempt(&self, mut job: Job) -> Result<(), PortError> {
        let handler = self.handlers.get(&job.kind).cloned();
        job.state = JobState::Running;
        job.attempts += 1;
        job.updated_ms = now_ms();
        self.queue.store.update(&job).await?;
        let outcome = match handler {
            None => Err(JobError::Permanent(format!(
                "no handler for job kind {:?}",
                job.kind
            ))),
            Some(h) => {
                // A panicking handler fails its attempt, not the runner.
                let j = job.clone();
                match tokio::spawn(async move { h.run(&j).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(JobError::Retry(format!("handler failed: {e}"))),
                }
            }
        };
        let now = now_ms();
        job.updated_ms = now;
        match outcome {
            Ok(()) => {
                job.state = JobState::Done;
                job.last_error = None;
                tracing::info!(job = job.id, kind = %job.kind, attempts = job.attempts, "job done");
            }
            Err(JobError::Permanent(e)) => {
                job.state = JobState::Dead;
                tracing::warn!(job = job.id, kind = %job.kind, error = %e, "job failed permanently; dead-lettered");
                job.last_error = Some(e);
            }
            Err(JobError::Retry(e)) if job.attempts >= job.max_attempts => {
                job.state = JobState::Dead;
                tracing::warn!(job = job.id, kind = %job.kind, attempts = job.attempts, error = %e,
                    "job failed its last attempt; dead-lettered");
                job.last_error = Some(e);
            }
            Err(JobError::Retry(e)) => {
                let wait = self.policy.delay(job.attempts, random_u64(job.id));
                job.state = JobState::Queued;
                job.next_run_ms = now + wait.as_millis() as u64;
                tracing::info!(job = job.id, kind = %job.kind, attempts = job.attempts, error = %e,
                    retry_in_ms = wait.as_millis() as u64, "job failed; will retry");
                job.last_error = Some(e);
            }
        }
        self.queue.store.update(&job).await?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A [`JobStore`] in memory (tests, memory archives): nothing survives the
/// process.
#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<(u64, std::collections::BTreeMap<u64, Job>)>,
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn insert(&self, mut job: Job) -> Result<Job, PortError> {
        let mut g = lock(&self.jobs);
        g.0 += 1;
        job.id = g.0;
        g.1.insert(job.id, job.clone());
        Ok(job)
    }
    async fn update(&self, job: &Job) -> Result<bool, PortError> {
        let mut g = lock(&self.jobs);
        Ok(match g.1.get_mut(&job.id) {
            Some(j) => {
                *j = job.clone();
                true
            }
            None => false,
        })
    }
    async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        Ok(lock(&self.jobs).1.get(&id).cloned())
    }
    async fn list(&self) -> Result<Vec<Job>, PortError> {
        Ok(lock(&self.jobs).1.values().cloned().collect())
    }
    async fn delete(&self, id: u64) -> Result<bool, PortError> {
        Ok(lock(&self.jobs).1.remove(&id).is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn back_off_doubles_up_to_the_cap_within_the_jitter() {
        let p = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            max_attempts: 10,
            jitter_percent: 20,
        };
        for (attempts, nominal) in [
            (1u64, 2u64),
            (2, 4),
            (3, 8),
            (4, 16),
            (5, 32),
            (6, 60),
            (20, 60),
        ] {
            for random in [0u64, 1, 7_777, u64::MAX / 3, u64::MAX] {
                let d = p.delay(attempts as u32, random).as_millis() as u64;
                let n = nominal * 1000;
                assert!(
                    d >= n - n / 5 && d <= n + n / 5,
                    "attempt {attempts}: {d} ms vs {n}"
                );
            }
        }
        // The jitter really spreads.
        let spread: std::collections::BTreeSet<u128> = (0..50u64)
            .map(|r| p.delay(3, r * 997).as_millis())
            .collect();
        assert!(spread.len() > 10);
        let none = RetryPolicy {
            jitter_percent: 0,
            ..p
        };
        assert_eq!(none.delay(3, 12345), Duration::from_secs(8));
    }

    struct Flaky {
        fail_first: u32,
        calls: AtomicU32,
    }

    #[async_trait]
    impl JobHandler for Flaky {
        async fn run(&self, _job: &Job) -> Result<(), JobError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                Err(JobError::Retry(format!("failure {n}")))
            } else {
                Ok(())
            }
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
            max_attempts: 4,
            jitter_percent: 20,
        }
    }

    async fn wait_for(queue: &JobQueue, id: u64, state: JobState) -> Job {
        for _ in 0..2000 {
            let j = queue.get(id).await.unwrap().unwrap();
            if j.state == state {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("job {id} never reached {state:?}");
    }

    fn new_job(kind: &str) -> NewJob {
        NewJob {
            kind: kind.into(),
            payload_version: 1,
            payload: "{}".into(),
            destination: Some("PEER".into()),
            max_attempts: None,
            delay: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_failing_job_is_retried_then_succeeds() {
        let queue = JobQueue::new(Arc::new(MemoryJobStore::default()), fast().max_attempts);
        let handler = Arc::new(Flaky {
            fail_first: 2,
            calls: AtomicU32::new(0),
        });
        let mut runner =
            JobRunner::new(queue.clone(), fast(), 1).with_poll(Duration::from_millis(5));
        runner.handle("flaky", handler.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        let job = queue.enqueue(new_job("flaky")).await.unwrap();
        let done = wait_for(&queue, job.id, JobState::Done).await;
        assert_eq!(done.attempts, 3);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
        assert_eq!(done.last_error, None);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_job_failing_every_attempt_is_dead_lettered_and_can_be_retried() {
        let queue = JobQueue::new(Arc::new(MemoryJobStore::default()), fast().max_attempts);
        let handler = Arc::new(Flaky {
            fail_first: u32::MAX,
            calls: AtomicU32::new(0),
        });
        let mut runner =
            JobRunner::new(queue.clone(), fast(), 1).with_poll(Duration::from_millis(5));
        runner.handle("flaky", handler.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        let job = queue.enqueue(new_job("flaky")).await.unwrap();
        let dead = wait_for(&queue, job.id, JobState::Dead).await;
        assert_eq!(dead.attempts, 4);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 4);
        assert_eq!(dead.last_error.as_deref(), Some("failure 4"));
        // An operator's retry runs it again from zero attempts.
        assert!(queue.retry(job.id).await.unwrap());
        for _ in 0..2000 {
            if handler.calls.load(Ordering::SeqCst) == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let dead = wait_for(&queue, job.id, JobState::Dead).await;
        assert_eq!(dead.attempts, 4);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 8);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn unknown_kind_is_dead_at_once_and_running_jobs_resume() {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), 5);
        let orphan = queue.enqueue(new_job("nobody")).await.unwrap();
        // A job the previous process was running when it stopped.
        let mut interrupted = queue.enqueue(new_job("flaky")).await.unwrap();
        interrupted.state = JobState::Running;
        interrupted.attempts = 1;
        store.update(&interrupted).await.unwrap();
        let handler = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicU32::new(0),
        });
        let mut runner =
            JobRunner::new(queue.clone(), fast(), 1).with_poll(Duration::from_millis(5));
        runner.handle("flaky", handler);
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        let dead = wait_for(&queue, orphan.id, JobState::Dead).await;
        assert_eq!(dead.attempts, 1);
        assert!(dead.last_error.unwrap().contains("no handler"));
        let done = wait_for(&queue, interrupted.id, JobState::Done).await;
        assert_eq!(done.attempts, 2);
        stop.cancel();
        task.await.unwrap();
    }

    struct Gate {
        running: AtomicU32,
        most: AtomicU32,
    }

    #[async_trait]
    impl JobHandler for Gate {
        async fn run(&self, _job: &Job) -> Result<(), JobError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrency_is_capped_per_destination() {
        let queue = JobQueue::new(Arc::new(MemoryJobStore::default()), 3);
        let gate = Arc::new(Gate {
            running: AtomicU32::new(0),
            most: AtomicU32::new(0),
        });
        let mut runner =
            JobRunner::new(queue.clone(), fast(), 2).with_poll(Duration::from_millis(5));
        runner.handle("gate", gate.clone());
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(queue.enqueue(new_job("gate")).await.unwrap().id);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        for id in ids {
            wait_for(&queue, id, JobState::Done).await;
        }
        let most = gate.most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} ran at once");
        stop.cancel();
        task.await.unwrap();
    }
}
