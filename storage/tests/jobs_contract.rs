//! The contract of the `JobStore` port (claim, lease renewal, an outcome
//! recorded only by the job's owner, release of a stale job), run against
//! the sled store and the PostgreSQL store (on a throwaway cluster), each
//! through two handles, as two nodes would use it: the same assertions on
//! each. The PostgreSQL run adds a record of an unknown format version.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use pacs_core::jobs::{now_ms, Job, JobPageQuery, JobQueue, JobState, JobStore, CREATED_SLACK_MS};

fn job(next_run_ms: u64) -> Job {
    Job {
        id: 0,
        kind: "stgcmt-report".into(),
        payload_version: 1,
        payload: "{\"a\":1}".into(),
        state: JobState::Queued,
        attempts: 0,
        max_attempts: 5,
        created_ms: 1,
        next_run_ms,
        updated_ms: 1,
        last_error: None,
        destination: Some("MODALITY".into()),
        owner: None,
        lease_until_ms: 0,
    }
}

async fn jobs_contract(a: Arc<dyn JobStore>, b: Arc<dyn JobStore>) {
    let now = now_ms();
    let first = a.insert(job(1)).await.unwrap();
    let later = b.insert(job(now + 3_600_000)).await.unwrap();
    assert!(first.id > 0 && later.id > first.id, "ids increase");
    assert_eq!(b.get(first.id).await.unwrap(), Some(first.clone()));

    // A job not yet due is not claimed.
    assert!(a
        .claim(later.id, "a/1", now, now + 1_000)
        .await
        .unwrap()
        .is_none());

    // One claim wins: running, one attempt, the owner and the lease.
    let claimed = a
        .claim(first.id, "a/1", now, now + 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.state, JobState::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.owner.as_deref(), Some("a/1"));
    assert_eq!(claimed.lease_until_ms, now + 1_000);
    assert_eq!(b.get(first.id).await.unwrap(), Some(claimed.clone()));
    assert!(
        b.claim(first.id, "b/1", now, now + 1_000)
            .await
            .unwrap()
            .is_none(),
        "a running job is not claimed again"
    );

    // Only the owner renews; the other node sees the new lease.
    assert!(!b.renew(first.id, "b/1", now + 9_000).await.unwrap());
    assert!(a.renew(first.id, "a/1", now + 2_000).await.unwrap());
    let renewed = b.get(first.id).await.unwrap().unwrap();
    assert_eq!(renewed.lease_until_ms, now + 2_000);
    assert_eq!(renewed.owner.as_deref(), Some("a/1"));

    // A running job is not replaced by a plain update.
    let mut overwrite = renewed.clone();
    overwrite.state = JobState::Queued;
    assert!(!b.update(&overwrite).await.unwrap());

    // A release against a stale view (the lease was renewed since) keeps
    // the job with its owner.
    assert!(!b.release(&claimed, now + 5_000).await.unwrap());
    assert_eq!(b.get(first.id).await.unwrap(), Some(renewed.clone()));

    // Only the owner's outcome is recorded; it clears owner and lease.
    let mut outcome = renewed.clone();
    outcome.state = JobState::Done;
    outcome.updated_ms = now + 10;
    assert!(!b.finish(&outcome, "b/1").await.unwrap());
    assert_eq!(a.get(first.id).await.unwrap(), Some(renewed.clone()));
    assert!(a.finish(&outcome, "a/1").await.unwrap());
    let done = b.get(first.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Done);
    assert_eq!((done.owner, done.lease_until_ms), (None, 0));
    assert_eq!(done.attempts, 1);
    assert!(!a.renew(first.id, "a/1", now + 3_000).await.unwrap());
    assert!(!a.finish(&outcome, "a/1").await.unwrap(), "recorded once");

    // A stale job (its node died) is queued again by another node, due
    // then; its next claim is the second attempt.
    let mut due = later.clone();
    due.next_run_ms = now;
    assert!(b.update(&due).await.unwrap());
    let held = a
        .claim(later.id, "a/1", now, now + 100)
        .await
        .unwrap()
        .unwrap();
    assert!(b.release(&held, now + 200).await.unwrap());
    let released = a.get(later.id).await.unwrap().unwrap();
    assert_eq!(released.state, JobState::Queued);
    assert_eq!((released.owner, released.lease_until_ms), (None, 0));
    assert_eq!(released.next_run_ms, now + 200);
    assert!(
        !a.finish(&held, "a/1").await.unwrap(),
        "the old owner lost it"
    );
    let again = b
        .claim(later.id, "b/1", now + 200, now + 1_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 2);

    // Unknown ids.
    assert_eq!(a.get(999_999).await.unwrap(), None);
    assert!(a.claim(999_999, "a/1", now, now).await.unwrap().is_none());
    assert!(!a.renew(999_999, "a/1", now).await.unwrap());
    assert!(!a.delete(999_999).await.unwrap());

    // Listing, oldest first; the active ones (queued, running) apart.
    let ids: Vec<u64> = b.list().await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, [first.id, later.id]);
    let active: Vec<u64> = a.active().await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(active, [later.id], "done: not active");
    let mut dead = job(1);
    dead.state = JobState::Dead;
    let dead = b.insert(dead).await.unwrap();
    let queued = b.insert(job(1)).await.unwrap();
    let active: Vec<u64> = a.active().await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(
        active,
        [later.id, queued.id],
        "running and queued, oldest first"
    );
    assert!(a.delete(dead.id).await.unwrap());
    assert!(a.delete(queued.id).await.unwrap());
    // Delete.
    assert!(a.delete(first.id).await.unwrap());
    assert_eq!(b.get(first.id).await.unwrap(), None);

    // Two nodes claiming the same jobs at once: one wins each.
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(a.insert(job(1)).await.unwrap().id);
    }
    let mut tasks = Vec::new();
    for (node, store) in [("a/1", a.clone()), ("b/1", b.clone())] {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for id in ids {
                let now = now_ms();
                if store
                    .claim(id, node, now, now + 60_000)
                    .await
                    .unwrap()
                    .is_some()
                {
                    won.push(id);
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    won.sort_unstable();
    assert_eq!(won, ids, "every job claimed exactly once");
    for id in ids {
        assert_eq!(a.get(id).await.unwrap().unwrap().attempts, 1);
    }
}

/// The sweep of old done jobs: only done jobs changed before the cut-off
/// go, whatever else the store holds; a second sweep finds none.
async fn sweep_contract(a: Arc<dyn JobStore>, b: Arc<dyn JobStore>) {
    let now = now_ms();
    let with = |state: JobState, updated_ms: u64| Job {
        state,
        updated_ms,
        ..job(1)
    };
    let old_done = a.insert(with(JobState::Done, 1_000)).await.unwrap().id;
    let edge_done = a.insert(with(JobState::Done, 5_000)).await.unwrap().id;
    let new_done = a.insert(with(JobState::Done, now)).await.unwrap().id;
    let old_dead = a.insert(with(JobState::Dead, 1_000)).await.unwrap().id;
    let old_queued = a.insert(with(JobState::Queued, 1_000)).await.unwrap().id;
    // A done job retried: queued again, so no longer swept as done.
    let retried = a.insert(with(JobState::Done, 1_000)).await.unwrap();
    assert!(b
        .update(&Job {
            state: JobState::Queued,
            ..retried.clone()
        })
        .await
        .unwrap());
    let expected = b
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|j| j.state == JobState::Done && j.updated_ms < 5_000)
        .count();
    assert!(expected >= 1);
    assert_eq!(b.remove_done_before(5_000).await.unwrap(), expected);
    assert_eq!(a.get(old_done).await.unwrap(), None, "old done job swept");
    for kept in [edge_done, new_done, old_dead, old_queued, retried.id] {
        assert!(a.get(kept).await.unwrap().is_some(), "job {kept} kept");
    }
    assert_eq!(a.remove_done_before(5_000).await.unwrap(), 0);
    // Once past the cut-off, the job changed at it goes too.
    assert_eq!(a.remove_done_before(5_001).await.unwrap(), 1);
    assert_eq!(b.get(edge_done).await.unwrap(), None);
}

/// Pages of jobs, newest first: `newest` walks ids backwards from any id,
/// in a state or all; `JobQueue::page` filters by kind and creation time,
/// chains pages by `next`, and stops its walk at jobs created well before
/// `created_since_ms`. The expected answers come from `list`, filtered
/// here. Run on a store holding nothing else.
async fn page_contract(a: Arc<dyn JobStore>, b: Arc<dyn JobStore>) {
    let day = 86_400_000u64;
    let base = 100 * day;
    // 600 jobs (more than the queue's batch of 256), one a minute, three
    // kinds, every fourth one dead; the last 50 a day later.
    let mut made = Vec::new();
    for i in 0..600u64 {
        let created_ms = if i < 550 {
            base + i * 60_000
        } else {
            base + day + i * 60_000
        };
        let j = Job {
            kind: ["stgcmt-report", "forward", "ian"][(i % 3) as usize].into(),
            state: if i % 4 == 0 {
                JobState::Dead
            } else {
                JobState::Done
            },
            created_ms,
            ..job(1)
        };
        let store = if i % 2 == 0 { &a } else { &b };
        made.push(store.insert(j).await.unwrap());
    }
    let mut all = a.list().await.unwrap();
    all.sort_by_key(|j| std::cmp::Reverse(j.id));
    assert_eq!(all.len(), 600);
    // `newest` from the top, from the middle, by state.
    let ids = |v: &[Job]| v.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&b.newest(None, None, 10).await.unwrap()),
        ids(&all[..10])
    );
    let mid = all[300].id;
    assert_eq!(
        ids(&a.newest(Some(mid), None, 7).await.unwrap()),
        ids(&all[301..308])
    );
    let dead: Vec<Job> = all
        .iter()
        .filter(|j| j.state == JobState::Dead)
        .cloned()
        .collect();
    assert_eq!(
        ids(&b.newest(None, Some(JobState::Dead), 1000).await.unwrap()),
        ids(&dead)
    );
    assert_eq!(
        ids(&a.newest(Some(all[599].id), None, 10).await.unwrap()),
        Vec::<u64>::new(),
        "nothing below the oldest"
    );
    // Pages of one kind chained by `next` cover every such job once.
    let queue = JobQueue::new(b.clone(), 5);
    let forwards: Vec<u64> = all
        .iter()
        .filter(|j| j.kind == "forward")
        .map(|j| j.id)
        .collect();
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..100 {
        let page = queue
            .page(&JobPageQuery {
                kind: Some("forward".into()),
                state: None,
                before,
                created_since_ms: None,
                limit: 37,
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 37);
        seen.extend(ids(&page.jobs));
        match page.next {
            Some(n) => {
                assert_eq!(Some(n), page.jobs.last().map(|j| j.id));
                before = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(seen, forwards);
    // A page that holds every match exactly has no next.
    let exact = queue
        .page(&JobPageQuery {
            kind: Some("forward".into()),
            state: None,
            before: None,
            created_since_ms: None,
            limit: forwards.len(),
        })
        .await
        .unwrap();
    assert_eq!((exact.jobs.len(), exact.next), (forwards.len(), None));
    // Created since: the last day's 50, done and of one kind.
    let since = base + day;
    let recent: Vec<u64> = all
        .iter()
        .filter(|j| j.created_ms >= since && j.state == JobState::Done && j.kind == "stgcmt-report")
        .map(|j| j.id)
        .collect();
    assert!(!recent.is_empty());
    let page = queue
        .page(&JobPageQuery {
            kind: Some("stgcmt-report".into()),
            state: Some(JobState::Done),
            before: None,
            created_since_ms: Some(since),
            limit: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!((ids(&page.jobs), page.next), (recent, None));
    // The walk stops past the slack: a job created long before but with a
    // newer id (out of order) is not reached once older ones are met.
    let stray = a
        .insert(Job {
            created_ms: since + 3 * day,
            ..job(1)
        })
        .await
        .unwrap();
    let late = a
        .insert(Job {
            created_ms: since - CREATED_SLACK_MS - 1,
            ..job(1)
        })
        .await
        .unwrap();
    let page = queue
        .page(&JobPageQuery {
            kind: None,
            state: None,
            before: Some(late.id + 1),
            created_since_ms: Some(since),
            limit: usize::MAX,
        })
        .await
        .unwrap();
    assert!(page.jobs.is_empty(), "the walk went past a job too old");
    let page = queue
        .page(&JobPageQuery {
            kind: None,
            state: None,
            before: Some(late.id),
            created_since_ms: Some(since),
            limit: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.first().map(|j| j.id), Some(stray.id));
    assert_eq!(page.jobs.len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_jobs_page_newest_first() {
    let index = storage::SledIndex::temporary().unwrap();
    page_contract(
        Arc::new(index.workflow().unwrap()),
        Arc::new(index.workflow().unwrap()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_jobs_page_newest_first() {
    let store = Arc::new(pacs_core::jobs::MemoryJobStore::default());
    page_contract(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_jobs_keep_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    jobs_contract(
        Arc::new(index.workflow().unwrap()),
        Arc::new(index.workflow().unwrap()),
    )
    .await;
    sweep_contract(
        Arc::new(index.workflow().unwrap()),
        Arc::new(index.workflow().unwrap()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_jobs_keep_the_contract() {
    let store = Arc::new(pacs_core::jobs::MemoryJobStore::default());
    jobs_contract(store.clone(), store.clone()).await;
    sweep_contract(store.clone(), store).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use pacs_core::Index;
    use pacs_testkit::postgres::TestPostgres;
    use storage::PgIndex;

    /// Two nodes (two pools) keep the contract on one database; a reindex
    /// leaves the jobs alone; a record of an unknown format version is
    /// refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_jobs_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("jobs");
        let a = PgIndex::connect(&url, 4).await.unwrap();
        let b = PgIndex::connect(&url, 4).await.unwrap();
        jobs_contract(Arc::new(a.jobs()), Arc::new(b.jobs())).await;
        sweep_contract(Arc::new(a.jobs()), Arc::new(b.jobs())).await;
        let held = b.jobs().list().await.unwrap();
        b.clear().await.unwrap();
        assert_eq!(a.jobs().list().await.unwrap(), held);
        // The columns follow the record.
        let rows = pg.psql(
            "jobs",
            "SELECT string_agg(id || '|' || state || '|' || coalesce(owner, '') || '|' || updated_ms, \
             ',' ORDER BY id) FROM jobs",
        );
        let expected: Vec<String> = held
            .iter()
            .map(|j| {
                let owner = j.owner.as_deref().unwrap_or("");
                format!("{}|{}|{owner}|{}", j.id, j.state.as_str(), j.updated_ms)
            })
            .collect();
        assert!(held.iter().any(|j| j.owner.is_some()));
        assert_eq!(rows.trim(), expected.join(","));
        pg.psql(
            "jobs",
            "UPDATE jobs SET rec = '\\x090000'::bytea WHERE id = (SELECT min(id) FROM jobs)",
        );
        let e = a.jobs().list().await.unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }

    /// Pages on PostgreSQL, two nodes on one database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_jobs_page_newest_first() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("jobpages");
        let a = PgIndex::connect(&url, 4).await.unwrap();
        let b = PgIndex::connect(&url, 4).await.unwrap();
        page_contract(Arc::new(a.jobs()), Arc::new(b.jobs())).await;
    }

    /// The runner's sweep on a week of history (a benchmark, not a test):
    /// 100,000 done jobs none of which is old enough, against the read of
    /// every job the sweep made before (`JobStore::list`, as the default
    /// `remove_done_before` still does).
    /// The listing's first page is timed beside it.
    /// `cargo test -p storage --release --features postgres --test jobs_contract sweep_cost -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark"]
    async fn sweep_cost() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("sweep");
        let index = PgIndex::connect(&url, 8).await.unwrap();
        let jobs = Arc::new(index.jobs());
        let now = now_ms();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let jobs = jobs.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..12_500u64 {
                    let j = Job {
                        state: JobState::Done,
                        updated_ms: now - (t * 12_500 + i) * 6_000,
                        ..job(1)
                    };
                    jobs.insert(j).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        pg.psql("sweep", "VACUUM ANALYZE jobs");
        let cutoff = now - 8 * 24 * 3_600_000;
        let (mut list, mut delete) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = std::time::Instant::now();
            let old = jobs
                .list()
                .await
                .unwrap()
                .iter()
                .filter(|j| j.state == JobState::Done && j.updated_ms < cutoff)
                .count();
            list.push(t.elapsed());
            assert_eq!(old, 0);
            let t = std::time::Instant::now();
            assert_eq!(jobs.remove_done_before(cutoff).await.unwrap(), 0);
            delete.push(t.elapsed());
        }
        list.sort();
        delete.sort();
        println!(
            "100,000 done jobs, none past the cut-off; medians of 7: every job read {:?}, DELETE on the index {:?}",
            list[3], delete[3]
        );
        // The listing's first page (`GET /api/v1/queue`), newest first,
        // against every job read as the listing did before.
        let queue = JobQueue::new(jobs.clone(), 5);
        let mut page = Vec::new();
        for _ in 0..7 {
            let t = std::time::Instant::now();
            let p = queue
                .page(&JobPageQuery {
                    kind: None,
                    state: None,
                    before: None,
                    created_since_ms: None,
                    limit: 100,
                })
                .await
                .unwrap();
            page.push(t.elapsed());
            assert_eq!(p.jobs.len(), 100);
            assert!(p.next.is_some());
        }
        page.sort();
        println!("a page of 100 newest first: median of 7 {:?}", page[3]);
    }

    /// A schema-8 database (jobs without `updated_ms`) is migrated when a
    /// node connects: each job's column is filled from its record, and the
    /// sweep then deletes by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_jobs_of_schema_8_get_their_last_change() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("jobs8");
        let ids = {
            let index = PgIndex::connect(&url, 2).await.unwrap();
            let jobs = index.jobs();
            let mut ids = Vec::new();
            for (state, updated_ms) in [
                (JobState::Done, 1_000),
                (JobState::Done, 9_000_000_000_000),
                (JobState::Dead, 1_000),
                (JobState::Queued, 2_000),
            ] {
                let j = Job {
                    state,
                    updated_ms,
                    ..job(1)
                };
                ids.push(jobs.insert(j).await.unwrap().id);
            }
            ids
        };
        pg.psql(
            "jobs8",
            "ALTER TABLE jobs DROP COLUMN updated_ms; DROP TABLE mpps_accessions; \
             UPDATE pacs_schema_version SET version = 8",
        );
        let index = PgIndex::connect(&url, 2).await.unwrap();
        let cols = pg.psql(
            "jobs8",
            "SELECT string_agg(updated_ms::text, ',' ORDER BY id) FROM jobs",
        );
        assert!(cols.contains("1000,9000000000000,1000,2000"), "{cols}");
        let version = pg.psql("jobs8", "SELECT version FROM pacs_schema_version");
        assert!(
            version.contains(&storage::pg_index::PG_SCHEMA_VERSION.to_string()),
            "{version}"
        );
        let jobs = index.jobs();
        assert_eq!(jobs.remove_done_before(now_ms()).await.unwrap(), 1);
        assert_eq!(jobs.get(ids[0]).await.unwrap(), None);
        for kept in &ids[1..] {
            assert!(jobs.get(*kept).await.unwrap().is_some());
        }
    }
}
