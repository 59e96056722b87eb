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
//! Several nodes may share one store (PostgreSQL): a runner takes a job
//! with [`JobStore::claim`] (queued and due → running, under its
//! [`JobOwner`] with a lease, compare-and-set, so two nodes never run one
//! attempt), renews the lease every third of it while the handler runs,
//! and records the outcome only while it still owns the job
//! ([`JobStore::finish`]). A job whose lease ran out (its node died or
//! lost the store) is queued again by any runner; at start a runner also
//! queues again the jobs an earlier run of its own node left running.
//! Lease times are node clocks: nodes must keep them synchronised (NTP)
//! to well within the lease. The per-destination limit is per node.
//!
//! Non-goals: exactly-once delivery (a job interrupted by a crash runs
//! again, so handlers must be idempotent or the peer must tolerate a
//! repeat, which is the case for storage commitment reports, PS3.4 J.3.3),
//! ordering between jobs, priorities. Each pass of the runner (at least
//! once a second) reads the queued and running jobs
//! ([`JobStore::active`]: on PostgreSQL from the state index, so done
//! jobs kept for their seven days cost nothing there; sled reads its whole
//! tree and keeps the active ones); done jobs past their time are removed
//! by a sweep every [`SWEEP_EVERY`].

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
    /// A handler is running it under `owner` until `lease_until_ms` (a
    /// job whose lease ran out, or left running by an earlier run of the
    /// same node, was interrupted and is queued again).
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

    /// The name [`JobState::as_str`] gives.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            _ => return None,
        })
    }
}

/// Which jobs [`JobQueue::page`] lists: newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPageQuery {
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs with a smaller id (the `next` of the page before).
    pub before: Option<u64>,
    /// Only jobs created at or after this time (ms since the epoch). Ids
    /// follow creation, so the walk stops once it meets jobs created
    /// [`CREATED_SLACK_MS`] before it: a page of recent jobs reads only
    /// the recent ones, whatever the history.
    pub created_since_ms: Option<u64>,
    pub limit: usize,
}

/// How far out of creation order two jobs' ids may be (nodes' clocks, a
/// clock stepped back) before [`JobQueue::page`]'s walk by
/// `created_since_ms` stops early.
pub const CREATED_SLACK_MS: u64 = 10 * 60 * 1000;

/// One page of [`JobQueue::page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// The `before` of the next page; `None` when this one is the last.
    pub next: Option<u64>,
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
    /// against one destination at once (on each node).
    pub destination: Option<String>,
    /// While `running`: the [`JobOwner::id`] of the runner holding it;
    /// `None` otherwise.
    pub owner: Option<String>,
    /// While `running`: milliseconds since the epoch until which `owner`
    /// holds it (then any runner may queue it again); 0 otherwise.
    pub lease_until_ms: u64,
}

impl Job {
    /// Queued or running: a runner still has work with it.
    pub fn is_active(&self) -> bool {
        matches!(self.state, JobState::Queued | JobState::Running)
    }
}

/// A change of one job, applied by [`JobStore::modify`]: it returns
/// `false` to leave the job as it is. It may be called more than once
/// (a store that compares and swaps tries again), so it must only look at
/// the job it is given.
pub type JobChange = Arc<dyn Fn(&mut Job) -> bool + Send + Sync>;

/// Who runs a job: one run of one node. `node` stays the same across
/// restarts of a node (the id of its data dir); the whole id is unique to
/// one process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOwner {
    node: String,
    id: String,
}

impl JobOwner {
    /// The owner `node/run`.
    pub fn new(node: &str, run: &str) -> JobOwner {
        JobOwner {
            node: node.to_owned(),
            id: format!("{node}/{run}"),
        }
    }

    /// This process, on node `node` of host `host`:
    /// `node/host:pid:random`.
    pub fn of_process(node: &str, host: &str) -> JobOwner {
        let random = random_u64(u64::from(std::process::id())) as u32;
        JobOwner::new(node, &format!("{host}:{}:{random:08x}", std::process::id()))
    }

    /// A fresh node id: 12 hex digits.
    pub fn new_node_id() -> String {
        format!("{:012x}", random_u64(0x6e6f_6465) >> 16)
    }

    /// What is stored in [`Job::owner`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `owner` is another run of this node: a job it holds was
    /// interrupted when that run ended (one node runs one process).
    fn is_earlier_run(&self, owner: &str) -> bool {
        owner != self.id
            && owner
                .strip_prefix(self.node.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
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

/// Keeps jobs. Every write is durable before it returns. A store may be
/// shared by several nodes: every change of a job goes through
/// [`JobStore::modify`], atomic against every other change of it.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores `job` under a fresh id (ignoring `job.id`; ids increase) and
    /// returns it.
    async fn insert(&self, job: Job) -> Result<Job, PortError>;
    /// Reads job `id`, applies `change` and, if it accepted, writes the
    /// result, atomically: no other change of the job comes between the
    /// read and the write. The job written; `None` if there is no such
    /// job or `change` declined.
    async fn modify(&self, id: u64, change: JobChange) -> Result<Option<Job>, PortError>;
    async fn get(&self, id: u64) -> Result<Option<Job>, PortError>;
    /// Every job, oldest first.
    async fn list(&self) -> Result<Vec<Job>, PortError>;
    /// At most `limit` jobs with an id below `before` (all when `None`),
    /// in `state` if given, newest first. This default reads every job; a
    /// store walks its ids backwards instead, so a page costs its length.
    async fn newest(
        &self,
        before: Option<u64>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, PortError> {
        let mut jobs = self.list().await?;
        jobs.retain(|j| before.is_none_or(|b| j.id < b) && state.is_none_or(|s| j.state == s));
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        jobs.truncate(limit);
        Ok(jobs)
    }
    /// The queued and running jobs, oldest first: what a runner looks at
    /// on every pass (a store keeps them apart from the done and dead
    /// ones when it can, so the pass does not grow with the history).
    async fn active(&self) -> Result<Vec<Job>, PortError>;
    async fn delete(&self, id: u64) -> Result<bool, PortError>;

    /// Deletes the done jobs last changed before `before_ms`; how many.
    /// This default reads every job; a store that keeps the done jobs
    /// apart by age answers from them, so the runner's periodic sweep
    /// does not read the whole history (on a shared store, every node's).
    async fn remove_done_before(&self, before_ms: u64) -> Result<usize, PortError> {
        let mut removed = 0;
        for job in self.list().await? {
            if job.state == JobState::Done
                && job.updated_ms < before_ms
                && self.delete(job.id).await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Replaces the job with the same id unless the stored one is running
    /// (only its owner changes a running job); `false` if there is none
    /// or it is running.
    async fn update(&self, job: &Job) -> Result<bool, PortError> {
        let new = job.clone();
        let changed = self
            .modify(
                job.id,
                Arc::new(move |j: &mut Job| {
                    if j.state == JobState::Running {
                        return false;
                    }
                    *j = new.clone();
                    true
                }),
            )
            .await?;
        Ok(changed.is_some())
    }

    /// Takes job `id` for `owner` if it is queued and due at `now_ms`:
    /// running, one more attempt, held until `lease_until_ms`. Of several
    /// runners claiming one job, one gets it; the others get `None`.
    async fn claim(
        &self,
        id: u64,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<Option<Job>, PortError> {
        let owner = owner.to_owned();
        self.modify(
            id,
            Arc::new(move |j: &mut Job| {
                if j.state != JobState::Queued || j.next_run_ms > now_ms {
                    return false;
                }
                j.state = JobState::Running;
                j.attempts = j.attempts.saturating_add(1);
                j.owner = Some(owner.clone());
                j.lease_until_ms = lease_until_ms;
                j.updated_ms = now_ms;
                true
            }),
        )
        .await
    }

    /// Moves the lease of a job `owner` runs to `lease_until_ms`; `false`
    /// if it no longer runs it (the lease ran out and another took it).
    async fn renew(&self, id: u64, owner: &str, lease_until_ms: u64) -> Result<bool, PortError> {
        let owner = owner.to_owned();
        let renewed = self
            .modify(
                id,
                Arc::new(move |j: &mut Job| {
                    if j.state != JobState::Running || j.owner.as_deref() != Some(owner.as_str()) {
                        return false;
                    }
                    j.lease_until_ms = lease_until_ms;
                    true
                }),
            )
            .await?;
        Ok(renewed.is_some())
    }

    /// Records the outcome of an attempt (`outcome`'s state, attempts,
    /// next run, error; owner and lease cleared) if the job still runs
    /// under `owner`; `false` (nothing written) if it was taken over.
    async fn finish(&self, outcome: &Job, owner: &str) -> Result<bool, PortError> {
        let (new, owner) = (outcome.clone(), owner.to_owned());
        let finished = self
            .modify(
                outcome.id,
                Arc::new(move |j: &mut Job| {
                    if j.state != JobState::Running || j.owner.as_deref() != Some(owner.as_str()) {
                        return false;
                    }
                    *j = Job {
                        owner: None,
                        lease_until_ms: 0,
                        ..new.clone()
                    };
                    true
                }),
            )
            .await?;
        Ok(finished.is_some())
    }

    /// Queues a running job again, due at `now_ms`, if it is still held
    /// as `seen` was (same owner, same lease): a runner that renewed its
    /// lease meanwhile keeps the job.
    async fn release(&self, seen: &Job, now_ms: u64) -> Result<bool, PortError> {
        let (owner, lease) = (seen.owner.clone(), seen.lease_until_ms);
        let released = self
            .modify(
                seen.id,
                Arc::new(move |j: &mut Job| {
                    if j.state != JobState::Running || j.owner != owner || j.lease_until_ms != lease
                    {
                        return false;
                    }
                    j.state = JobState::Queued;
                    j.owner = None;
                    j.lease_until_ms = 0;
                    j.next_run_ms = now_ms;
                    j.updated_ms = now_ms;
                    true
                }),
            )
            .await?;
        Ok(released.is_some())
    }
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
                owner: None,
                lease_until_ms: 0,
            })
            .await?;
        self.wake.notify_one();
        Ok(job)
    }

    pub async fn list(&self) -> Result<Vec<Job>, PortError> {
        self.store.list().await
    }

    /// A page of jobs, newest first ([`JobPageQuery`]). Reads the store
    /// backwards in batches until the page is full, the jobs run out, or
    /// they are older than `created_since_ms` allows.
    pub async fn page(&self, q: &JobPageQuery) -> Result<JobPage, PortError> {
        const BATCH: usize = 256;
        let mut jobs = Vec::new();
        let mut before = q.before;
        let floor = q
            .created_since_ms
            .map(|since| since.saturating_sub(CREATED_SLACK_MS));
        let mut next = None;
        'walk: loop {
            let batch = self.store.newest(before, q.state, BATCH).await?;
            let full = batch.len() == BATCH;
            for job in batch {
                if floor.is_some_and(|f| job.created_ms < f) {
                    break 'walk;
                }
                before = Some(job.id);
                let wanted = q.kind.as_ref().is_none_or(|k| *k == job.kind)
                    && q.created_since_ms.is_none_or(|s| job.created_ms >= s);
                if !wanted {
                    continue;
                }
                if jobs.len() == q.limit {
                    // One more exists: the page ends before it.
                    next = jobs.last().map(|j: &Job| j.id);
                    break 'walk;
                }
                jobs.push(job);
            }
            if !full {
                break;
            }
        }
        Ok(JobPage { jobs, next })
    }

    /// The queued and running jobs, oldest first.
    pub async fn active(&self) -> Result<Vec<Job>, PortError> {
        self.store.active().await
    }

    pub async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        self.store.get(id).await
    }

    /// Queues a job again now, with its attempts reset (a dead or done
    /// job, or one waiting for its back-off). `false` if there is no such
    /// job or it is running.
    pub async fn retry(&self, id: u64) -> Result<bool, PortError> {
        let now = now_ms();
        let queued = self
            .store
            .modify(
                id,
                Arc::new(move |job: &mut Job| {
                    if job.state == JobState::Running {
                        return false;
                    }
                    job.state = JobState::Queued;
                    job.attempts = 0;
                    job.next_run_ms = now;
                    job.updated_ms = now;
                    true
                }),
            )
            .await?;
        self.wake.notify_one();
        Ok(queued.is_some())
    }

    pub async fn delete(&self, id: u64) -> Result<bool, PortError> {
        self.store.delete(id).await
    }

    /// Marks queued job `id` done (its work was done outside the runner),
    /// keeping `done`'s outcome as [`JobHandler::run`] would; whether it
    /// was queued.
    pub async fn complete(&self, id: u64, done: JobDone) -> Result<bool, PortError> {
        self.change_queued(id, move |job, _| {
            job.state = JobState::Done;
            done.keep_on(job);
        })
        .await
    }

    /// Makes a queued job due now (the caller that held it back gave up).
    pub async fn run_now(&self, id: u64) -> Result<bool, PortError> {
        let due = self
            .change_queued(id, |job, now| job.next_run_ms = now)
            .await?;
        self.wake.notify_one();
        Ok(due)
    }

    /// Applies `f` (with the time now) to job `id` if it is queued, in
    /// one atomic change; whether it did.
    async fn change_queued(
        &self,
        id: u64,
        f: impl Fn(&mut Job, u64) + Send + Sync + 'static,
    ) -> Result<bool, PortError> {
        let now = now_ms();
        let changed = self
            .store
            .modify(
                id,
                Arc::new(move |job: &mut Job| {
                    if job.state != JobState::Queued {
                        return false;
                    }
                    f(job, now);
                    job.updated_ms = now;
                    true
                }),
            )
            .await?;
        Ok(changed.is_some())
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

/// What a successful attempt leaves on its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDone {
    /// The done job keeps its payload.
    Kept,
    /// The done job keeps this payload instead, in this format version:
    /// what the work found, for pages that show it (a Storage Commitment
    /// report keeps which instances it said were committed). A handler
    /// that reads its payload again (a retry of a done job) must read
    /// this version too.
    Outcome {
        payload_version: u32,
        payload: String,
    },
}

impl JobDone {
    /// Writes the outcome, if any, into the done `job`.
    fn keep_on(&self, job: &mut Job) {
        if let JobDone::Outcome {
            payload_version,
            payload,
        } = self
        {
            job.payload_version = *payload_version;
            job.payload.clone_from(payload);
        }
    }
}

/// Runs the jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<JobDone, JobError>;
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

/// How long a runner holds a job it runs before another may take it,
/// unless it renews the lease (every third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// How often a runner removes the done jobs past their time.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

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
    owner: JobOwner,
    lease: Duration,
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
            owner: JobOwner::of_process("local", "localhost"),
            lease: DEFAULT_LEASE,
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

    /// Sets who this runner is (by default a node called `local`).
    pub fn with_owner(mut self, owner: JobOwner) -> JobRunner {
        self.owner = owner;
        self
    }

    /// Sets how long a claimed job is held without a renewal (at least
    /// 30 ms).
    pub fn with_lease(mut self, lease: Duration) -> JobRunner {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    pub fn owner(&self) -> &JobOwner {
        &self.owner
    }

    /// Runs until `stop`; jobs in flight then finish in the background or
    /// are queued again at the next start (or once their lease ran out).
    pub async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        if let Err(e) = me.requeue_interrupted().await {
            tracing::warn!(error = %e, "job queue: cannot requeue interrupted jobs");
        }
        let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let in_flight: Arc<Mutex<std::collections::HashSet<u64>>> = Arc::default();
        let mut swept: Option<std::time::Instant> = None;
        loop {
            if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                swept = Some(std::time::Instant::now());
                if let Err(e) = me.sweep().await {
                    tracing::warn!(error = %e, "job queue: cannot remove old done jobs; retrying later");
                }
            }
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

    /// Removes the done jobs older than `keep_done`; how many.
    async fn sweep(&self) -> Result<usize, PortError> {
        let keep = u64::try_from(self.keep_done.as_millis()).unwrap_or(u64::MAX);
        let before = now_ms().saturating_sub(keep);
        let removed = self.queue.store.remove_done_before(before).await?;
        if removed > 0 {
            tracing::debug!(removed, "job queue: old done jobs removed");
        }
        Ok(removed)
    }

    /// Jobs left `running` by an earlier run of this node were
    /// interrupted, and so were those whose lease ran out; another live
    /// node's running jobs are left alone.
    async fn requeue_interrupted(&self) -> Result<(), PortError> {
        let now = now_ms();
        for job in self.queue.store.active().await? {
            if job.state != JobState::Running {
                continue;
            }
            let earlier = match job.owner.as_deref() {
                Some(o) => self.owner.is_earlier_run(o),
                None => true,
            };
            if (earlier || job.lease_until_ms <= now) && self.queue.store.release(&job, now).await?
            {
                tracing::info!(job = job.id, kind = %job.kind, owner = job.owner.as_deref().unwrap_or("-"),
                    "interrupted job queued again");
            }
        }
        Ok(())
    }

    /// Starts every due job that has room, and queues again the running
    /// jobs whose lease ran out; returns when the next queued job is due.
    async fn pass(
        self: &Arc<Self>,
        running: &Arc<Mutex<HashMap<String, usize>>>,
        in_flight: &Arc<Mutex<std::collections::HashSet<u64>>>,
    ) -> Result<Option<u64>, PortError> {
        let now = now_ms();
        let mut next: Option<u64> = None;
        for job in self.queue.store.active().await? {
            match job.state {
                JobState::Done | JobState::Dead => continue,
                JobState::Running => {
                    if job.lease_until_ms <= now && self.queue.store.release(&job, now).await? {
                        tracing::warn!(job = job.id, kind = %job.kind, owner = job.owner.as_deref().unwrap_or("-"),
                            "job's lease ran out (its node stopped?); queued again");
                        next = Some(now);
                    }
                    continue;
                }
                JobState::Queued => {}
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

    /// One attempt of one job, if this runner wins its claim, and its
    /// outcome recorded if this runner still owns it then.
    async fn attempt(&self, seen: Job) -> Result<(), PortError> {
        let lease_ms = self.lease.as_millis() as u64;
        let owner = self.owner.id();
        let now = now_ms();
        let Some(mut job) = self
            .queue
            .store
            .claim(seen.id, owner, now, now + lease_ms)
            .await?
        else {
            tracing::debug!(job = seen.id, "job claimed by another runner; skipped");
            return Ok(());
        };
        let handler = self.handlers.get(&job.kind).cloned();
        let outcome = match handler {
            None => Err(JobError::Permanent(format!(
                "no handler for job kind {:?}",
                job.kind
            ))),
            Some(h) => {
                // A panicking handler fails its attempt, not the runner.
                let j = job.clone();
                let mut task = tokio::spawn(async move { h.run(&j).await });
                let every = self.lease / 3;
                loop {
                    tokio::select! {
                        r = &mut task => break match r {
                            Ok(r) => r,
                            Err(e) => Err(JobError::Retry(format!("handler failed: {e}"))),
                        },
                        _ = tokio::time::sleep(every) => {
                            match self.queue.store.renew(job.id, owner, now_ms() + lease_ms).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    task.abort();
                                    tracing::warn!(job = job.id, kind = %job.kind,
                                        "job's lease lost to another runner; attempt abandoned");
                                    return Ok(());
                                }
                                Err(e) => tracing::warn!(job = job.id, error = %e,
                                    "job queue: cannot renew a job's lease"),
                            }
                        }
                    }
                }
            }
        };
        let now = now_ms();
        job.updated_ms = now;
        match outcome {
            Ok(done) => {
                job.state = JobState::Done;
                job.last_error = None;
                done.keep_on(&mut job);
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
        if !self.queue.store.finish(&job, owner).await? {
            tracing::warn!(job = job.id, kind = %job.kind,
                "job's outcome not recorded: another runner took it over");
        }
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
    async fn modify(&self, id: u64, change: JobChange) -> Result<Option<Job>, PortError> {
        let mut g = lock(&self.jobs);
        let Some(stored) = g.1.get_mut(&id) else {
            return Ok(None);
        };
        let mut job = stored.clone();
        if !change(&mut job) {
            return Ok(None);
        }
        job.id = id;
        *stored = job.clone();
        Ok(Some(job))
    }
    async fn get(&self, id: u64) -> Result<Option<Job>, PortError> {
        Ok(lock(&self.jobs).1.get(&id).cloned())
    }
    async fn list(&self) -> Result<Vec<Job>, PortError> {
        Ok(lock(&self.jobs).1.values().cloned().collect())
    }
    async fn newest(
        &self,
        before: Option<u64>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, PortError> {
        let g = lock(&self.jobs);
        Ok(g.1
            .range(..before.unwrap_or(u64::MAX))
            .rev()
            .map(|(_, j)| j)
            .filter(|j| state.is_none_or(|s| j.state == s))
            .take(limit)
            .cloned()
            .collect())
    }
    async fn active(&self) -> Result<Vec<Job>, PortError> {
        Ok(lock(&self.jobs)
            .1
            .values()
            .filter(|j| j.is_active())
            .cloned()
            .collect())
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
        async fn run(&self, _job: &Job) -> Result<JobDone, JobError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                Err(JobError::Retry(format!("failure {n}")))
            } else {
                Ok(JobDone::Kept)
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

    /// A runner removes the done jobs past their time when it starts (and
    /// every sweep after), and leaves the recent ones and the dead ones.
    #[tokio::test]
    async fn old_done_jobs_are_swept() {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), fast().max_attempts);
        let mut ids = Vec::new();
        for (state, updated_ms) in [
            (JobState::Done, 1),
            (JobState::Done, now_ms()),
            (JobState::Dead, 1),
        ] {
            let job = queue.enqueue(new_job("none")).await.unwrap();
            let mut changed = job.clone();
            changed.state = state;
            changed.updated_ms = updated_ms;
            assert!(store.update(&changed).await.unwrap());
            ids.push(job.id);
        }
        let runner = JobRunner::new(queue.clone(), fast(), 1).with_poll(Duration::from_millis(5));
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        for _ in 0..200 {
            if queue.get(ids[0]).await.unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let left: Vec<u64> = queue.list().await.unwrap().iter().map(|j| j.id).collect();
        assert_eq!(left, [ids[1], ids[2]], "the old done job is gone");
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

    struct Finds;

    #[async_trait]
    impl JobHandler for Finds {
        async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
            Ok(JobDone::Outcome {
                payload_version: job.payload_version + 1,
                payload: format!("found for {}", job.payload),
            })
        }
    }

    #[tokio::test]
    async fn a_done_job_keeps_its_outcome() {
        let queue = JobQueue::new(Arc::new(MemoryJobStore::default()), fast().max_attempts);
        let mut runner =
            JobRunner::new(queue.clone(), fast(), 1).with_poll(Duration::from_millis(5));
        runner.handle("finds", Arc::new(Finds));
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        let job = queue.enqueue(new_job("finds")).await.unwrap();
        let done = wait_for(&queue, job.id, JobState::Done).await;
        assert_eq!(done.payload_version, job.payload_version + 1);
        assert_eq!(done.payload, format!("found for {}", job.payload));
        stop.cancel();
        task.await.unwrap();
        // Work done outside the runner (a report sent on its association)
        // keeps its outcome the same way; only a queued job is completed.
        let held = queue.enqueue(new_job("held")).await.unwrap();
        let outcome = JobDone::Outcome {
            payload_version: 7,
            payload: "{}".into(),
        };
        assert!(queue.complete(held.id, outcome.clone()).await.unwrap());
        let got = queue.get(held.id).await.unwrap().unwrap();
        assert_eq!(
            (got.state, got.payload_version, got.payload.as_str()),
            (JobState::Done, 7, "{}")
        );
        assert!(!queue.complete(held.id, JobDone::Kept).await.unwrap());
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
        async fn run(&self, _job: &Job) -> Result<JobDone, JobError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(JobDone::Kept)
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
    fn owner(node: &str, run: &str) -> JobOwner {
        JobOwner::new(node, run)
    }

    /// A handler that takes its job over for another node while it runs
    /// (as if this node's lease had run out and another claimed it), then
    /// succeeds, or waits for `hold` first.
    struct TakenOver {
        store: Arc<MemoryJobStore>,
        hold: Duration,
        calls: AtomicU32,
        finished: AtomicU32,
    }

    #[async_trait]
    impl JobHandler for TakenOver {
        async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.store
                .modify(
                    job.id,
                    Arc::new(|j: &mut Job| {
                        j.owner = Some("b/other".into());
                        j.lease_until_ms = now_ms() + 3_600_000;
                        true
                    }),
                )
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(self.hold).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(JobDone::Kept)
        }
    }

    #[tokio::test]
    async fn a_lost_claim_is_skipped() {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), 5);
        let seen = queue.enqueue(new_job("flaky")).await.unwrap();
        // Another node claims it between this runner's listing and its claim.
        let theirs = store
            .claim(seen.id, "b/run", now_ms(), now_ms() + 3_600_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(theirs.attempts, 1);
        assert!(store
            .claim(seen.id, "a/run", now_ms(), now_ms() + 3_600_000)
            .await
            .unwrap()
            .is_none());
        let handler = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicU32::new(0),
        });
        let mut runner = JobRunner::new(queue.clone(), fast(), 1).with_owner(owner("a", "run"));
        runner.handle("flaky", handler.clone());
        runner.attempt(seen.clone()).await.unwrap();
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0, "ran a job it lost");
        assert_eq!(queue.get(seen.id).await.unwrap().unwrap(), theirs);
    }

    /// A queued job of kind `taken`, and a runner `a/run` with `lease`
    /// whose [`TakenOver`] handler waits `hold`.
    async fn taken_over(
        hold: Duration,
        lease: Duration,
    ) -> (
        Arc<MemoryJobStore>,
        JobQueue,
        Job,
        Arc<TakenOver>,
        JobRunner,
    ) {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), 5);
        let job = queue.enqueue(new_job("taken")).await.unwrap();
        let handler = Arc::new(TakenOver {
            store: store.clone(),
            hold,
            calls: AtomicU32::new(0),
            finished: AtomicU32::new(0),
        });
        let mut runner = JobRunner::new(queue.clone(), fast(), 1)
            .with_owner(owner("a", "run"))
            .with_lease(lease);
        runner.handle("taken", handler.clone());
        (store, queue, job, handler, runner)
    }

    #[tokio::test]
    async fn an_outcome_from_a_non_owner_is_not_recorded() {
        let (store, queue, job, handler, runner) =
            taken_over(Duration::ZERO, Duration::from_secs(3600)).await;
        runner.attempt(job.clone()).await.unwrap();
        assert_eq!(handler.finished.load(Ordering::SeqCst), 1);
        let after = queue.get(job.id).await.unwrap().unwrap();
        assert_eq!(after.state, JobState::Running, "{after:?}");
        assert_eq!(after.owner.as_deref(), Some("b/other"));
        assert_eq!(after.attempts, 1);
        // The owner's outcome is recorded, and clears the lease.
        let mut done = after.clone();
        done.state = JobState::Done;
        assert!(!store.finish(&done, "a/run").await.unwrap());
        assert!(store.finish(&done, "b/other").await.unwrap());
        let done = queue.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            (done.state, done.owner, done.lease_until_ms),
            (JobState::Done, None, 0)
        );
    }

    #[tokio::test]
    async fn a_lost_lease_abandons_the_attempt() {
        let (_store, queue, job, handler, runner) =
            taken_over(Duration::from_secs(30), Duration::from_millis(60)).await;
        tokio::time::timeout(Duration::from_secs(20), runner.attempt(job.clone()))
            .await
            .expect("the attempt was not abandoned")
            .unwrap();
        assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
        assert_eq!(handler.finished.load(Ordering::SeqCst), 0);
        let after = queue.get(job.id).await.unwrap().unwrap();
        assert_eq!(after.owner.as_deref(), Some("b/other"));
        assert_eq!(after.state, JobState::Running);
    }

    /// Sleeps, and sees its lease move forward meanwhile.
    struct Renewed {
        store: Arc<MemoryJobStore>,
        renewed: AtomicU32,
    }

    #[async_trait]
    impl JobHandler for Renewed {
        async fn run(&self, job: &Job) -> Result<JobDone, JobError> {
            let first = self
                .store
                .get(job.id)
                .await
                .unwrap()
                .unwrap()
                .lease_until_ms;
            for _ in 0..400 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = self
                    .store
                    .get(job.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .lease_until_ms;
                if now > first {
                    self.renewed.store(1, Ordering::SeqCst);
                    return Ok(JobDone::Kept);
                }
            }
            Err(JobError::Permanent("lease never renewed".into()))
        }
    }

    #[tokio::test]
    async fn a_running_job_has_its_lease_renewed() {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), 5);
        let job = queue.enqueue(new_job("renewed")).await.unwrap();
        let handler = Arc::new(Renewed {
            store: store.clone(),
            renewed: AtomicU32::new(0),
        });
        let mut runner = JobRunner::new(queue.clone(), fast(), 1)
            .with_owner(owner("a", "run"))
            .with_lease(Duration::from_millis(60));
        runner.handle("renewed", handler.clone());
        runner.attempt(job.clone()).await.unwrap();
        assert_eq!(handler.renewed.load(Ordering::SeqCst), 1);
        let done = queue.get(job.id).await.unwrap().unwrap();
        assert_eq!(done.state, JobState::Done, "{done:?}");
    }

    #[tokio::test]
    async fn an_expired_lease_is_requeued_and_live_nodes_jobs_are_left_alone() {
        let store = Arc::new(MemoryJobStore::default());
        let queue = JobQueue::new(store.clone(), 5);
        let now = now_ms();
        // A node killed mid-job: its lease runs out shortly.
        let dead = queue.enqueue(new_job("flaky")).await.unwrap();
        store
            .claim(dead.id, "dead/run", now, now + 150)
            .await
            .unwrap()
            .unwrap();
        // A live node's job, its lease far ahead.
        let live = queue.enqueue(new_job("flaky")).await.unwrap();
        let live = store
            .claim(live.id, "live/run", now, now + 3_600_000)
            .await
            .unwrap()
            .unwrap();
        // This node's previous run left one running.
        let mine = queue.enqueue(new_job("flaky")).await.unwrap();
        store
            .claim(mine.id, "b/old", now, now + 3_600_000)
            .await
            .unwrap()
            .unwrap();
        let handler = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicU32::new(0),
        });
        let mut runner = JobRunner::new(queue.clone(), fast(), 4)
            .with_poll(Duration::from_millis(5))
            .with_owner(owner("b", "new"));
        runner.handle("flaky", handler.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        let m = wait_for(&queue, mine.id, JobState::Done).await;
        assert_eq!(m.attempts, 2);
        let d = wait_for(&queue, dead.id, JobState::Done).await;
        assert_eq!(d.attempts, 2);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(queue.get(live.id).await.unwrap().unwrap(), live);
        // An operator cannot requeue a running job either.
        assert!(!queue.retry(live.id).await.unwrap());
        assert!(!store.update(&live).await.unwrap());
    }
}
