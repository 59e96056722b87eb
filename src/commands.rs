//! The offline commands: import, reindex, verify, stats. Each opens the
//! archive on the data dir (the server must not be running on it: the index
//! allows one process at a time).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use pacs_core::archive::{Progress, StoreStatus};
use pacs_core::Archive;
use serde::Serialize;
use storage::{LocalLanding, LocalSpace, ObjectBlobStore, SledIndex};

use crate::config::Config;

/// Opens the archive on the configured storage and index, and runs recovery
/// if the last shutdown was not clean.
pub async fn open_archive(config: &Config) -> Result<Archive> {
    Ok(open_archive_and_index(config).await?.0)
}

/// [`open_archive`], also handing out the index it opened.
async fn open_archive_and_index(config: &Config) -> Result<(Archive, Arc<dyn pacs_core::Index>)> {
    let url = config.effective_storage_url()?;
    // An S3 store is checked here (the bucket must exist): a clear error,
    // not a failure at the first store.
    let blobs = ObjectBlobStore::open_with(&url, &config.s3)?
        .connect()
        .await?;
    let remote = url.starts_with("s3://");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    SledIndex::set_cache_capacity(config.index_cache_bytes);
    // The credentials, orders, MPPS, patient changes and jobs live with
    // the index (shared by every node on PostgreSQL); the sled database is
    // opened either way (the index itself, or what a node held before it
    // moved to PostgreSQL, copied once).
    let sled = SledIndex::open(&config.index_dir())?;
    sled.set_reopen_after(config.index_reopen_after_bytes);
    let (index, shared) = open_index(config, sled).await?;
    // On S3 a store is acknowledged once the PUT is, never on the
    // strength of this node's disk: no landing log (ARCHITECTURE.md,
    // "Durability on S3").
    if remote && config.landing_log {
        tracing::info!("landing log off: objects on S3 are acknowledged once their PUT is");
    }
    let landing = if config.landing_log && !remote {
        let dir = config.landing_dir();
        Some(
            LocalLanding::open(&dir)
                .with_context(|| format!("cannot open the landing log in {}", dir.display()))?,
        )
    } else {
        None
    };
    let archive = match landing {
        Some(l) => Archive::with_landing(
            Arc::new(blobs),
            index.clone(),
            Arc::new(l),
            config.limits.clone(),
        ),
        None => Archive::new(Arc::new(blobs), index.clone(), config.limits.clone()),
    };
    archive.set_credentials(shared.credentials);
    if let Some(sessions) = shared.sessions {
        archive.set_sessions(sessions);
    }
    archive.set_workflow(pacs_core::Workflow {
        jobs: pacs_core::jobs::JobQueue::new(shared.jobs.clone(), config.jobs.retry.max_attempts),
        mpps: shared.mpps,
    });
    archive.set_orders(shared.orders);
    // Before recovery, so the entries it rebuilds carry patient changes.
    archive.set_patients(shared.patients.clone()).await?;
    archive.set_duplicate_policy(config.on_duplicate);
    // The free-space watermark covers the data dir (index, landing log)
    // and a local blob store's root.
    let mut dirs = vec![config.data_dir.clone()];
    if let Some(root) = url.strip_prefix("file://") {
        dirs.push(PathBuf::from(root));
    }
    archive.set_space_guard(Arc::new(LocalSpace::new(dirs)), config.min_free_space);
    let bar = Bar::new("recovery scan");
    let recovered = archive.recover(&bar).await?;
    bar.hide();
    if let Some(report) = recovered.filter(|r| {
        r.landed_replayed + r.adopted + r.staging_removed + r.journal_replayed > 0
            || !r.unreadable.is_empty()
    }) {
        tracing::info!(
            landed_replayed = report.landed_replayed,
            adopted = report.adopted,
            staging_removed = report.staging_removed,
            journal_replayed = report.journal_replayed,
            unreadable = report.unreadable.len(),
            "recovered after an unclean shutdown"
        );
    }
    Ok((archive, index))
}

/// The records kept beside the index: in its sled database, or with the
/// PostgreSQL index (then shared by every node on that database).
pub struct SharedStores {
    pub credentials: Arc<dyn pacs_core::credentials::Credentials>,
    pub orders: Arc<dyn pacs_core::orders::OrderStore>,
    pub mpps: Arc<dyn pacs_core::mpps::MppsStore>,
    pub patients: Arc<dyn pacs_core::patients::PatientStore>,
    /// The durable job queue (on PostgreSQL, one queue for every node).
    pub jobs: Arc<dyn pacs_core::jobs::JobStore>,
    /// Browser sessions shared by every node (PostgreSQL); on sled the
    /// access layer keeps them in memory.
    pub sessions: Option<Arc<dyn pacs_core::sessions::SessionStore>>,
    /// The PostgreSQL patient store itself, for the one-time copy of a
    /// node's own changes ([`copy_patient_changes`]).
    #[cfg(feature = "postgres")]
    pg_patients: Option<storage::PgPatients>,
}

impl SharedStores {
    fn of_sled(sled: &SledIndex) -> Result<SharedStores> {
        Ok(SharedStores {
            credentials: Arc::new(sled.credentials()?),
            orders: Arc::new(sled.orders()?),
            mpps: Arc::new(sled.workflow()?),
            patients: Arc::new(sled.patients()?),
            jobs: Arc::new(sled.workflow()?),
            sessions: None,
            #[cfg(feature = "postgres")]
            pg_patients: None,
        })
    }
}

/// The index `index_url` names (the sled one when empty, or PostgreSQL),
/// with the credential, order and MPPS stores that go with it.
async fn open_index(
    config: &Config,
    sled: SledIndex,
) -> Result<(Arc<dyn pacs_core::Index>, SharedStores)> {
    if config.index_url.is_empty() {
        let shared = SharedStores::of_sled(&sled)?;
        return Ok((Arc::new(sled), shared));
    }
    let (index, shared) = connect_pg(&config.index_url, config.index_pool_size).await?;
    copy_node_records(config, &sled, &shared).await?;
    copy_node_jobs(config, &sled, &shared).await?;
    #[cfg(feature = "postgres")]
    if let Some(pg) = &shared.pg_patients {
        copy_patient_changes(config, &sled, pg).await?;
    }
    Ok((index, shared))
}

/// The file in `data_dir` saying this node's sled records were copied to
/// the PostgreSQL store (so they are copied once, and a record removed
/// there later does not come back).
pub const COPIED_MARKER: &str = "records-copied-to-postgres";

/// On the first start on PostgreSQL (after `pacs migrate`, or an upgrade
/// of a node that kept its credentials, orders and MPPS in its sled
/// database), copies those records into the shared store: each one the
/// store does not hold yet (a user name, token or share id or secret,
/// grant id, (accession, SPS ID) or MPPS UID already there is left as it
/// is there). Then writes [`COPIED_MARKER`].
async fn copy_node_records(config: &Config, sled: &SledIndex, to: &SharedStores) -> Result<()> {
    use pacs_core::orders::{OrderError, OrderFilter};
    let marker = config.data_dir.join(COPIED_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let from = SharedStores::of_sled(sled)?;
    let count = |done: &[bool]| done.iter().filter(|d| **d).count();
    let mut users = Vec::new();
    for u in from.credentials.users().await? {
        users.push(to.credentials.insert_user(u).await?);
    }
    let mut tokens = Vec::new();
    for t in from.credentials.tokens().await? {
        tokens.push(to.credentials.insert_token(t).await?);
    }
    let mut shares = Vec::new();
    for s in from.credentials.shares().await? {
        shares.push(to.credentials.insert_share(s).await?);
    }
    let mut grants = Vec::new();
    for g in from.credentials.grants().await? {
        grants.push(to.credentials.insert_grant(g).await?);
    }
    let mut orders = Vec::new();
    for o in from.orders.list(&OrderFilter::default()).await? {
        orders.push(match to.orders.insert(o).await {
            Ok(_) => true,
            Err(OrderError::Duplicate { .. }) => false,
            Err(e) => return Err(e.into()),
        });
    }
    let mut mpps = Vec::new();
    for m in from.mpps.list().await? {
        mpps.push(to.mpps.create(&m).await?);
    }
    let all = [&users, &tokens, &shares, &grants, &orders, &mpps];
    if all.iter().any(|v| !v.is_empty()) {
        tracing::info!(
            users = count(&users),
            tokens = count(&tokens),
            shares = count(&shares),
            grants = count(&grants),
            orders = count(&orders),
            mpps = count(&mpps),
            skipped = all.iter().map(|v| v.len() - count(v)).sum::<usize>(),
            "this node's users, tokens, shares, grants, orders and MPPS copied to PostgreSQL"
        );
    }
    write_marker(
        &marker,
        "the sled records of this node were copied to PostgreSQL\n",
    )
}

/// The file in `data_dir` saying this node's sled jobs were copied to the
/// shared PostgreSQL queue. Apart from [`COPIED_MARKER`], so a node that
/// copied its other records before the queue was shared still copies its
/// jobs once.
pub const JOBS_COPIED_MARKER: &str = "jobs-copied-to-postgres";

/// On the first start on PostgreSQL, copies the queued, running (they
/// were interrupted: queued again) and dead jobs this node's sled
/// database held into the shared queue, under new ids; done jobs stay.
/// Then writes [`JOBS_COPIED_MARKER`].
async fn copy_node_jobs(config: &Config, sled: &SledIndex, to: &SharedStores) -> Result<()> {
    use pacs_core::jobs::{now_ms, JobState, JobStore};
    let marker = config.data_dir.join(JOBS_COPIED_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let now = now_ms();
    let mut copied = 0usize;
    for mut job in JobStore::list(&sled.workflow()?).await? {
        match job.state {
            JobState::Done => continue,
            JobState::Running => {
                job.state = JobState::Queued;
                job.next_run_ms = now;
            }
            JobState::Queued | JobState::Dead => {}
        }
        job.owner = None;
        job.lease_until_ms = 0;
        to.jobs.insert(job).await?;
        copied += 1;
    }
    if copied > 0 {
        tracing::info!(
            jobs = copied,
            "this node's queued and dead jobs copied to the shared queue on PostgreSQL"
        );
    }
    write_marker(
        &marker,
        "the sled jobs of this node were copied to PostgreSQL\n",
    )
}

/// The job store of the configuration, for `pacs queue`: the sled one on
/// the data dir, or the PostgreSQL one (shared with every running node,
/// so it may be changed while they run).
pub async fn open_job_store(config: &Config) -> Result<Arc<dyn pacs_core::jobs::JobStore>> {
    if config.index_url.is_empty() {
        let sled = SledIndex::open(&config.index_dir()).map_err(|e| match e {
            storage::IndexOpenError::Open { .. } => anyhow::anyhow!(
                "{e}. `pacs queue` works on the data dir while `pacs serve` is stopped; while it \
                 runs, use /api/v1/queue"
            ),
            e => anyhow::anyhow!(e),
        })?;
        return Ok(Arc::new(sled.workflow()?));
    }
    Ok(connect_pg(&config.index_url, 2).await?.1.jobs)
}

/// Writes a marker file durably.
fn write_marker(marker: &Path, text: &str) -> Result<()> {
    std::fs::write(marker, text)
        .and_then(|()| std::fs::File::open(marker)?.sync_all())
        .with_context(|| format!("cannot write {}", marker.display()))
}

/// The file in `data_dir` saying this node's sled patient changes were
/// copied to (or found already in) the PostgreSQL store. Apart from
/// [`COPIED_MARKER`], so a node that copied its other records before
/// patient changes were shared still copies these once.
pub const PATIENTS_COPIED_MARKER: &str = "patient-changes-copied-to-postgres";

/// On the first start on PostgreSQL, copies this node's patient change
/// history (ids kept, so audit records still name them) and coercions
/// into the shared store, in one transaction, unless it already holds a
/// change (another node's history is not mixed with this one's: the
/// skipped changes are logged). Then writes [`PATIENTS_COPIED_MARKER`].
#[cfg(feature = "postgres")]
async fn copy_patient_changes(
    config: &Config,
    sled: &SledIndex,
    to: &storage::PgPatients,
) -> Result<()> {
    use pacs_core::patients::PatientStore;
    let marker = config.data_dir.join(PATIENTS_COPIED_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let from = sled.patients()?;
    let changes = from.changes().await?;
    let coercions = from.coercions().await?;
    if !changes.is_empty() || !coercions.is_empty() {
        if to.import(&changes, &coercions).await? {
            tracing::info!(
                changes = changes.len(),
                coercions = coercions.len(),
                "this node's patient changes copied to PostgreSQL"
            );
        } else {
            tracing::warn!(
                changes = changes.len(),
                "this node's patient changes were not copied: the PostgreSQL store already holds changes"
            );
        }
    }
    write_marker(
        &marker,
        "the sled patient changes of this node were copied to PostgreSQL\n",
    )
}

/// The credential store of the configuration, for the commands that
/// change users and tokens: the sled one on the data dir, or the
/// PostgreSQL one (shared with every running node, so it may be changed
/// while they run).
pub async fn open_credentials(
    config: &Config,
) -> Result<Arc<dyn pacs_core::credentials::Credentials>> {
    Ok(open_credentials_and_sessions(config).await?.0)
}

/// [`open_credentials`], with the browser session store when it is shared
/// (PostgreSQL), so that a command ending a user's access ends their
/// sessions on every node.
pub async fn open_credentials_and_sessions(
    config: &Config,
) -> Result<(
    Arc<dyn pacs_core::credentials::Credentials>,
    Option<Arc<dyn pacs_core::sessions::SessionStore>>,
)> {
    if config.index_url.is_empty() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let sled = SledIndex::open(&config.index_dir()).map_err(|e| match e {
            storage::IndexOpenError::Open { .. } => anyhow::anyhow!(
                "{e}. `pacs user` and `pacs token` work on the data dir while `pacs serve` is \
                 stopped; while it runs, use its admin page (/admin) or /api/v1/users and /api/v1/tokens"
            ),
            e => anyhow::anyhow!(e),
        })?;
        return Ok((Arc::new(sled.credentials()?), None));
    }
    let shared = connect_pg(&config.index_url, 2).await?.1;
    Ok((shared.credentials, shared.sessions))
}

/// Connects to the PostgreSQL index at `url` (migrating its schema).
pub async fn open_pg_index(url: &str, pool_size: usize) -> Result<Arc<dyn pacs_core::Index>> {
    Ok(connect_pg(url, pool_size).await?.0)
}

/// The PostgreSQL index at `url` (its schema migrated) and its stores.
#[cfg(feature = "postgres")]
async fn connect_pg(
    url: &str,
    pool_size: usize,
) -> Result<(Arc<dyn pacs_core::Index>, SharedStores)> {
    let index = storage::PgIndex::connect(url, pool_size).await?;
    tracing::info!(index = index.describe(), "index on PostgreSQL");
    let shared = SharedStores {
        credentials: Arc::new(index.credentials()),
        orders: Arc::new(index.orders()),
        mpps: Arc::new(index.mpps()),
        patients: Arc::new(index.patients()),
        jobs: Arc::new(index.jobs()),
        sessions: Some(Arc::new(index.sessions())),
        pg_patients: Some(index.patients()),
    };
    Ok((Arc::new(index), shared))
}

#[cfg(not(feature = "postgres"))]
async fn connect_pg(
    _url: &str,
    _pool_size: usize,
) -> Result<(Arc<dyn pacs_core::Index>, SharedStores)> {
    anyhow::bail!(
        "index_url names PostgreSQL, but this pacs was built without the `postgres` feature"
    )
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(what: &str) -> Bar {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Bar(bar)
    }
    pub fn finish(&self) {
        self.0.finish();
    }
    pub fn hide(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn stage(&self, what: &str, total: u64) {
        self.0.set_message(what.to_owned());
        self.0.set_position(0);
        self.0.set_length(total);
        self.0.reset_eta();
    }
}

/// Collects regular files under `paths`, recursively, sorted.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&p).with_context(|| format!("cannot list {}", p.display()))?
            {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    pub already_present: u64,
    pub replaced: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rejected: Vec<Rejection>,
    pub warnings: Vec<Rejection>,
}

#[derive(Debug, Serialize)]
pub struct Rejection {
    pub path: String,
    pub reason: String,
}

/// Imports files into an open archive, with a progress bar.
pub async fn import_into(
    archive: &Archive,
    paths: &[PathBuf],
    jobs: usize,
    print_stored: bool,
) -> Result<ImportReport> {
    let files = collect_files(paths)?;
    let bar = Bar::new("importing");
    bar.set_total(files.len() as u64);
    let started = std::time::Instant::now();
    let mut report = ImportReport::default();
    let mut work = futures::stream::iter(files.into_iter().map(|path| {
        let archive = archive.clone();
        async move {
            let result = match tokio::fs::File::open(&path).await {
                Ok(f) => archive.store(f).await.map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot open: {e}")),
            };
            (path, result)
        }
    }))
    .buffer_unordered(jobs.max(1));
    while let Some((path, result)) = work.next().await {
        let p = path.display().to_string();
        match result {
            Ok(outcome) => {
                if print_stored {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "stored\t{}\t{}\t{}",
                        outcome.record.sop_instance_uid, outcome.record.sha256, p
                    )?;
                    out.flush()?;
                }
                match outcome.status {
                    StoreStatus::Stored => report.imported += 1,
                    StoreStatus::AlreadyPresent => report.already_present += 1,
                    StoreStatus::Replaced => report.replaced += 1,
                }
                report.bytes += outcome.record.size;
                for w in outcome.warnings {
                    tracing::warn!(path = %p, warning = %w, "imported with a warning");
                    report.warnings.push(Rejection {
                        path: p.clone(),
                        reason: w,
                    });
                }
            }
            Err(reason) => {
                tracing::debug!(path = %p, %reason, "rejected");
                report.rejected.push(Rejection { path: p, reason });
            }
        }
        bar.advance(1);
    }
    bar.finish();
    report.seconds = started.elapsed().as_secs_f64();
    report.rejected.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

pub async fn import(
    config: &Config,
    paths: &[PathBuf],
    report_path: Option<&Path>,
    jobs: usize,
    print_stored: bool,
    landing: bool,
) -> Result<ExitCode> {
    let archive = open_archive(config).await?;
    archive.set_landing_for_new_objects(landing);
    let report = import_into(&archive, paths, jobs, print_stored).await?;
    archive.close().await?;
    let summary = format!(
        "imported {} new, {} already present, {} replaced, {} rejected ({:.1} MB in {:.2} s)",
        report.imported,
        report.already_present,
        report.replaced,
        report.rejected.len(),
        report.bytes as f64 / 1e6,
        report.seconds
    );
    // The summary goes to stderr when stdout carries the machine-readable
    // stored lines.
    if print_stored {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    for r in &report.rejected {
        eprintln!("rejected {}: {}", r.path, r.reason);
    }
    if let Some(p) = report_path {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write report {}", p.display()))?;
    }
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub async fn reindex(config: &Config) -> Result<ExitCode> {
    let archive = open_archive(config).await?;
    let bar = Bar::new("reindexing");
    let report = archive.reindex(&bar).await?;
    bar.finish();
    archive.close().await?;
    println!(
        "reindexed {} instances; {} staging leftovers removed; {} blobs unreadable",
        report.adopted,
        report.staging_removed,
        report.unreadable.len()
    );
    for d in &report.unreadable {
        println!("unreadable {}: {}", d.key, d.problem);
    }
    Ok(if report.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `pacs compact-index`: the sled index rewritten offline to its live data.
pub fn compact_index(config: &Config) -> Result<ExitCode> {
    if !config.index_url.is_empty() {
        anyhow::bail!(
            "index_url names PostgreSQL: its space is the database's to reclaim (VACUUM); \
             compact-index rewrites the embedded sled index"
        );
    }
    let dir = config.index_dir();
    if !dir.exists() {
        anyhow::bail!("no index at {}: nothing to compact", dir.display());
    }
    eprintln!(
        "compacting the index at {} (the server must be stopped)",
        dir.display()
    );
    let report = SledIndex::compact(&dir)?;
    println!(
        "index compacted: {:.1} MB on disk before, {:.1} MB after",
        report.before as f64 / 1e6,
        report.after as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(config: &Config, json: bool) -> Result<ExitCode> {
    let archive = open_archive(config).await?;
    let bar = Bar::new("verifying");
    let report = archive.verify(&bar).await?;
    bar.finish();
    archive.close().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} instances ({:.1} MB): {} problems",
            report.instances_checked,
            report.bytes_checked as f64 / 1e6,
            report.damage.len()
        );
        for d in &report.damage {
            println!("damaged {}: {}", d.key, d.problem);
        }
        if !report.unindexed.is_empty() {
            println!(
                "{} blobs are in the storage but not in the index (objects never acknowledged \
                 before an unclean stop, or removed from the index): `pacs reindex` adopts them",
                report.unindexed.len()
            );
            for k in &report.unindexed {
                println!("unindexed {k}");
            }
        }
    }
    Ok(if report.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn stats(config: &Config, json: bool) -> Result<ExitCode> {
    let archive = open_archive(config).await?;
    let s = archive.stats().await?;
    archive.close().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("storage:   {}", archive.describe_storage());
        println!("patients:  {}", s.patients);
        println!("studies:   {}", s.studies);
        println!("series:    {}", s.series);
        println!("instances: {}", s.instances);
        println!("size:      {:.1} MB", s.total_bytes as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn get(config: &Config, sop: &str, output: Option<&Path>) -> Result<ExitCode> {
    use tokio::io::AsyncWriteExt;
    let uid =
        pacs_core::Uid::parse(sop).with_context(|| format!("{sop:?} is not a SOP Instance UID"))?;
    let archive = open_archive(config).await?;
    let (_, mut stream) = match archive.retrieve(&uid).await {
        Ok(r) => r,
        Err(pacs_core::ArchiveError::NotFound(what)) => {
            eprintln!("error: {what} is not in the archive");
            return Ok(ExitCode::from(4));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match output {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    archive.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// `pacs history UID`: the earlier versions of an instance kept by the
/// duplicate policy, and the current one.
pub async fn history(config: &Config, sop: &str, json: bool) -> Result<ExitCode> {
    let uid =
        pacs_core::Uid::parse(sop).with_context(|| format!("{sop:?} is not a SOP Instance UID"))?;
    let archive = open_archive(config).await?;
    let versions = archive.history(&uid).await?;
    let current = match archive.instance(&uid).await {
        Ok(r) => Some(r),
        Err(pacs_core::ArchiveError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    archive.close().await?;
    if current.is_none() && versions.is_empty() {
        eprintln!("error: instance {sop} is not in the archive and has no history");
        return Ok(ExitCode::from(4));
    }
    if json {
        let out = serde_json::json!({
            "sop_instance_uid": sop,
            "current": current.as_ref().map(|c| serde_json::json!({
                "study_instance_uid": c.study_instance_uid.as_str(),
                "series_instance_uid": c.series_instance_uid.as_str(),
                "size": c.size,
                "sha256": c.sha256,
                "received_at_ms": c.received_at_ms,
            })),
            "versions": versions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("version  received (UTC)        superseded (UTC)      size        sha256            study / patient");
    for v in &versions {
        println!(
            "{:<8} {:<21} {:<21} {:<11} {:<17} {} / {}",
            v.version,
            utc(v.received_at_ms),
            utc(v.superseded_at_ms),
            v.size,
            v.sha256.get(..16).unwrap_or(&v.sha256),
            v.study_instance_uid,
            v.patient_id
        );
    }
    if let Some(c) = &current {
        println!(
            "{:<8} {:<21} {:<21} {:<11} {:<17} {}",
            "current",
            utc(c.received_at_ms),
            "-",
            c.size,
            c.sha256.get(..16).unwrap_or(&c.sha256),
            c.study_instance_uid
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pacs history restore UID VERSION`: makes an earlier version current;
/// the current content is kept as a new history version.
pub async fn history_restore(config: &Config, sop: &str, version: u32) -> Result<ExitCode> {
    let uid =
        pacs_core::Uid::parse(sop).with_context(|| format!("{sop:?} is not a SOP Instance UID"))?;
    let archive = open_archive(config).await?;
    let result = archive.restore_version(&uid, version).await;
    archive.close().await?;
    match result {
        Ok(outcome) => {
            match (outcome.status, outcome.history_version) {
                (StoreStatus::AlreadyPresent, _) => {
                    println!("version {version} of {sop} is already the current content")
                }
                (_, Some(kept)) => println!(
                    "restored version {version} of {sop}; the content it replaced is kept as version {kept}"
                ),
                _ => println!("restored version {version} of {sop}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(pacs_core::StoreError::Storage(pacs_core::ports::PortError::NotFound(_))) => {
            eprintln!("error: {sop} has no version {version} (see `pacs history {sop}`)");
            Ok(ExitCode::from(4))
        }
        Err(e) => Err(e.into()),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_civil_dates() {
        assert_eq!(super::utc(0), "-");
        assert_eq!(super::utc(1_000), "1970-01-01 00:00:01");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_796_601_600_000), "2026-12-07 00:00:00");
    }
}

/// Instances copied at once by `pacs migrate`.
const MIGRATE_CONCURRENCY: usize = 16;
/// A progress line every so many instances.
const MIGRATE_REPORT_EVERY: u64 = 1000;

/// `pacs migrate --to postgres://…`: copies the embedded sled index (every
/// instance with its records and metadata, the journal) into an empty
/// PostgreSQL index, then checks that both hold the same counts.
pub async fn migrate(config: &Config, to: &str) -> Result<ExitCode> {
    use futures::stream::{self, TryStreamExt};
    use pacs_core::query::{Level, Query};
    use std::sync::atomic::AtomicU64;

    let mut source_config = config.clone();
    source_config.index_url = String::new();
    let (archive, source) = open_archive_and_index(&source_config).await?;
    // Every landed object moved and the index flushed: the source is still.
    archive.close().await?;
    let target = open_pg_index(to, config.index_pool_size).await?;
    let before = target.stats().await?;
    if before != pacs_core::ports::IndexStats::default() || !target.journal().await?.is_empty() {
        anyhow::bail!(
            "the PostgreSQL index is not empty ({} instances); migrate into an empty database",
            before.instances
        );
    }
    let patients: std::collections::HashMap<String, pacs_core::records::PatientRecord> = source
        .find(&Query::new(Level::Patient))
        .await?
        .matches
        .into_iter()
        .filter_map(|m| m.patient)
        .map(|p| {
            (
                pacs_core::records::patient_key(&p.issuer_of_patient_id, &p.patient_id),
                p,
            )
        })
        .collect();
    // Study by study, series by series: one series' DICOM JSON is read at
    // once (one read of its metadata blob, not one per instance), and only
    // the studies' records are held, not every instance's.
    let total = source.stats().await?.instances;
    let studies: Vec<pacs_core::Uid> = source
        .find(&Query::new(Level::Study))
        .await?
        .matches
        .into_iter()
        .filter_map(|m| m.study.map(|s| s.study_instance_uid))
        .collect();
    eprintln!(
        "migrating {total} instances of {} studies to the PostgreSQL index",
        studies.len()
    );
    let progress = MigrateProgress {
        done: AtomicU64::new(0),
        total,
        start: std::time::Instant::now(),
    };
    let (source_ref, target_ref, patients_ref, progress_ref, archive_ref) =
        (&source, &target, &patients, &progress, &archive);
    stream::iter(studies.into_iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(MIGRATE_CONCURRENCY, |study| async move {
            migrate_study(
                source_ref.as_ref(),
                archive_ref,
                target_ref.as_ref(),
                patients_ref,
                &study,
                progress_ref,
            )
            .await
        })
        .await?;
    let journal = source.journal().await?;
    for (_, entry) in &journal {
        target.journal_add(entry.clone()).await?;
    }
    eprintln!("migrated {} journal entries", journal.len());
    target.flush().await?;
    let (want, got) = (source.stats().await?, target.stats().await?);
    check_migrated(&want, &got)?;
    if target.journal().await?.len() != journal.len() {
        anyhow::bail!("migration check failed: the journal was not copied whole");
    }
    target.set_clean_shutdown(true).await?;
    println!(
        "migrated and verified: {} patients, {} studies, {} series, {} instances, {} bytes",
        got.patients, got.studies, got.series, got.instances, got.total_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// How far `pacs migrate` is.
struct MigrateProgress {
    done: std::sync::atomic::AtomicU64,
    total: u64,
    start: std::time::Instant,
}

impl MigrateProgress {
    fn one_more(&self) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(MIGRATE_REPORT_EVERY) || n == self.total {
            let rate = n as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
            let left = self.total.saturating_sub(n) as f64 / rate.max(1e-3);
            eprintln!(
                "migrated {n}/{} instances ({rate:.0}/s, about {} min left)",
                self.total,
                (left / 60.0).ceil()
            );
        }
    }
}

/// Copies one study's instances, series by series, with the records the
/// source index holds for them and their DICOM JSON (from the index, or
/// from the series' metadata blob once compacted, read once a series).
async fn migrate_study(
    source: &dyn pacs_core::Index,
    archive: &pacs_core::Archive,
    target: &dyn pacs_core::Index,
    patients: &std::collections::HashMap<String, pacs_core::records::PatientRecord>,
    study_uid: &pacs_core::Uid,
    progress: &MigrateProgress,
) -> Result<()> {
    let study = source
        .study(study_uid)
        .await?
        .with_context(|| format!("study {study_uid} has no study record"))?;
    let patient = match patients.get(&study.patient_key) {
        Some(p) => p.clone(),
        None => pacs_core::records::PatientRecord {
            patient_id: study.patient_id.clone(),
            issuer_of_patient_id: study.issuer_of_patient_id.clone(),
            patient_name: study.patient_name.clone(),
            patient_birth_date: study.patient_birth_date.clone(),
            patient_sex: study.patient_sex.clone(),
            other_patient_ids: Vec::new(),
            num_studies: 0,
            num_series: 0,
            num_instances: 0,
        },
    };
    let mut by_series: std::collections::BTreeMap<String, Vec<pacs_core::records::InstanceRecord>> =
        std::collections::BTreeMap::new();
    for i in source.instances_of_study(study_uid).await? {
        by_series
            .entry(i.series_instance_uid.as_str().to_owned())
            .or_default()
            .push(i);
    }
    for instances in by_series.into_values() {
        let Some(first) = instances.first() else {
            continue;
        };
        let series_uid = first.series_instance_uid.clone();
        let series = source
            .series(&series_uid)
            .await?
            .with_context(|| format!("series {series_uid} has no series record"))?;
        let mut json: std::collections::HashMap<String, Vec<u8>> = archive
            .series_metadata_entries(&series_uid)
            .await?
            .into_iter()
            .map(|(sop, j)| (sop.as_str().to_owned(), j))
            .collect();
        for instance in instances {
            let sop = instance.sop_instance_uid.clone();
            let metadata = match json.remove(sop.as_str()) {
                Some(j) => j,
                None => archive
                    .instance_metadata(&sop)
                    .await
                    .with_context(|| format!("instance {sop} has no metadata"))?,
            };
            target
                .put(pacs_core::records::InstanceAttributes {
                    patient: patient.clone(),
                    study: study.clone(),
                    series: series.clone(),
                    instance,
                    metadata,
                })
                .await?;
            progress.one_more();
        }
    }
    Ok(())
}

/// Fails naming every count that differs between the source and the copy.
fn check_migrated(
    source: &pacs_core::ports::IndexStats,
    target: &pacs_core::ports::IndexStats,
) -> Result<()> {
    let pairs = [
        ("patients", source.patients, target.patients),
        ("studies", source.studies, target.studies),
        ("series", source.series, target.series),
        ("instances", source.instances, target.instances),
        ("bytes", source.total_bytes, target.total_bytes),
    ];
    let wrong: Vec<String> = pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what}: {a} in sled, {b} in PostgreSQL"))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("migration check failed: {}", wrong.join("; "))
    }
}

#[cfg(test)]
mod migrate_tests {
    use super::check_migrated;
    use pacs_core::ports::IndexStats;

    #[test]
    fn a_count_that_differs_fails_the_migration_by_name() {
        let a = IndexStats {
            patients: 2,
            studies: 3,
            series: 4,
            instances: 50,
            total_bytes: 1000,
        };
        assert!(check_migrated(&a, &a).is_ok());
        let mut b = a.clone();
        b.series = 3;
        b.total_bytes = 999;
        let msg = check_migrated(&a, &b).expect_err("differs").to_string();
        assert!(msg.contains("series: 4 in sled, 3 in PostgreSQL"), "{msg}");
        assert!(
            msg.contains("bytes: 1000 in sled, 999 in PostgreSQL"),
            "{msg}"
        );
        assert!(!msg.contains("instances"), "{msg}");
    }
}

/// What `pacs delete` removes: one study, series or instance.
pub enum DeleteTarget {
    Study(String),
    Series(String),
    Instance(String),
}

/// `pacs delete`: removes a study, a series or an instance from the index
/// and the blob store (offline, like the other commands), and records a
/// DICOM Instances Accessed audit event with action Delete.
pub async fn delete(config: &Config, target: DeleteTarget) -> Result<ExitCode> {
    use pacs_core::audit::AuditActor;
    let (what, raw) = match &target {
        DeleteTarget::Study(u) => ("study", u),
        DeleteTarget::Series(u) => ("series", u),
        DeleteTarget::Instance(u) => ("instance", u),
    };
    let uid = pacs_core::Uid::parse(raw).with_context(|| format!("{raw:?} is not a UID"))?;
    let archive = open_archive(config).await?;
    crate::audit::open(config, &archive)?;
    let result = match target {
        DeleteTarget::Study(_) => archive.delete_study(&uid).await,
        DeleteTarget::Series(_) => archive.delete_series(&uid).await,
        DeleteTarget::Instance(_) => archive.delete_instance(&uid).await.map(u64::from),
    };
    let n = match result {
        Ok(n) => n,
        Err(e) => {
            archive.close().await?;
            return Err(e.into());
        }
    };
    if n > 0 {
        let actor = AuditActor {
            user_id: "pacs delete".to_owned(),
            role: Some("Operator".to_owned()),
            ..AuditActor::default()
        };
        let event = crate::studies_api::deletion_event(what, &uid, n, actor);
        archive.audit().record(event).await?;
    }
    archive.close().await?;
    if n == 0 {
        eprintln!("error: the archive holds no {what} {uid}");
        return Ok(ExitCode::from(4));
    }
    println!("deleted {n} instances of {what} {uid}");
    Ok(ExitCode::SUCCESS)
}
