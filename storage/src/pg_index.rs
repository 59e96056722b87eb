//! The index on PostgreSQL (`index_url = "postgres://…"`): the same
//! [`Index`] port as [`crate::SledIndex`], for archives that outgrow one
//! machine or share one index between several `pacs` nodes.
//!
//! Schema (version [`PG_SCHEMA_VERSION`], in `pacs_schema_version`; see
//! [`MIGRATIONS`]): one table per level (`patients`, `studies`, `series`,
//! `instances`) whose columns are the keys the planner narrows on (Patient
//! ID, accession number, study date and time as a sort key, modalities in
//! study, UIDs) and the maintained counters, plus `rec`, the whole record
//! as a versioned bincode value ([`crate::format`], record version 1).
//! Folded name words (as [`pacs_core::records::name_words`] folds them for
//! the sled index) sit in `study_name_words`, whose primary key is the
//! prefix index name search walks. Landing marks, the journal, the
//! clean-shutdown flag and the global counters (16 rows summed on read,
//! so concurrent stores do not queue on one row) are tables too. Every
//! text column is `COLLATE "C"`: byte order, as sled sorts, and prefix
//! `LIKE` can use the b-tree indexes.
//!
//! Every put and remove is one transaction at READ COMMITTED: counters are
//! changed by `UPDATE … SET n = n + 1` on the row (which locks it until
//! commit), a missing row is created with `INSERT … ON CONFLICT DO
//! NOTHING` and the update tried again, so two nodes storing the same
//! study at once both count. Rows are taken in one order (series, study,
//! patient, then the instance and a counter row); a deadlock or a
//! concurrent insert of the same SOP Instance UID makes the transaction
//! start again, a bounded number of times.
//!
//! Durability: each connection runs with `synchronous_commit = on`, so a
//! write is durable once its commit returns and [`Index::flush`] has
//! nothing left to do.
//!
//! Every SQL text is a constant; values only ever travel as parameters.
//!
//! The credential, order and MPPS records (schema version 2) and the
//! patient changes and coercions (version 4) live in this database too
//! ([`crate::pg_side`]), the browser sessions (version 5) and the records
//! of browser flows (version 7) and the counts of failed sign-ins (version
//! 8, both [`crate::pg_sessions`]) and the job queue (version 6,
//! [`crate::pg_jobs`]), so every node shares them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use pacs_core::matching::{fold_text, Matcher};
use pacs_core::ports::{Index, IndexPut, IndexStats, JournalEntry, PortError};
use pacs_core::query::{FindResult, Level, Match, Query};
use pacs_core::records::{
    name_words, InstanceAttributes, InstanceRecord, PatientRecord, SeriesRecord, StudyRecord,
};
use pacs_core::Uid;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::format::{decode_versioned, encode_versioned, NewerFormat, INDEX_RECORD};
use crate::index::{name_lead_plan, NAME_LEAD_MAX};

/// The schema version this build writes and reads.
pub const PG_SCHEMA_VERSION: i32 = 10;

/// The schema, one step per version: `MIGRATIONS[n]` takes version `n` to
/// `n + 1`. Each step runs in the migrating transaction. Version 2 added
/// the records shared by every node (see [`crate::pg_side`]): users,
/// tokens, shares, grants, orders and MPPS. Version 3 added
/// `study_name_leads`, filled for the studies already held by
/// [`PgIndex::migrate`] in the same transaction, and `study_modalities`
/// (modality, date key, study), filled by the step itself. Version 4 added
/// the patient changes and coercions (see [`crate::pg_side`]). Version 5
/// added the browser sessions (see [`crate::pg_sessions`]), version 6 the
/// job queue (see [`crate::pg_jobs`]), version 7 the records of browser
/// flows (share cookies, pending sign-ins; see [`crate::pg_sessions`]),
/// version 8 the shared sign-in failure counts, version 9 the jobs'
/// `updated_ms` (filled from each job's record by [`PgIndex::migrate`]),
/// indexed for the done jobs, so the runner's sweep deletes old done jobs
/// without reading the others.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE patients (
    patient_key bytea PRIMARY KEY,
    patient_id text COLLATE "C" NOT NULL,
    patient_name text COLLATE "C" NOT NULL,
    num_studies integer NOT NULL,
    num_series integer NOT NULL,
    num_instances integer NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX patients_by_id ON patients (patient_id);
CREATE INDEX patients_by_name ON patients (patient_name, patient_key);
CREATE TABLE studies (
    study_uid text COLLATE "C" PRIMARY KEY,
    patient_key bytea NOT NULL,
    patient_id text COLLATE "C" NOT NULL,
    patient_name_folded text COLLATE "C" NOT NULL,
    accession_number text COLLATE "C" NOT NULL,
    study_date text COLLATE "C" NOT NULL,
    date_key text COLLATE "C" NOT NULL,
    modalities jsonb NOT NULL,
    sop_classes jsonb NOT NULL,
    num_series integer NOT NULL,
    num_instances integer NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX studies_by_date ON studies (date_key);
CREATE INDEX studies_by_patient_id ON studies (patient_id);
CREATE INDEX studies_by_accession ON studies (accession_number);
CREATE INDEX studies_by_modality ON studies USING gin (modalities);
CREATE TABLE study_name_words (
    word text COLLATE "C" NOT NULL,
    study_uid text COLLATE "C" NOT NULL REFERENCES studies ON DELETE CASCADE,
    PRIMARY KEY (word, study_uid)
);
CREATE INDEX study_name_words_by_study ON study_name_words (study_uid);
CREATE TABLE series (
    series_uid text COLLATE "C" PRIMARY KEY,
    study_uid text COLLATE "C" NOT NULL,
    modality text COLLATE "C" NOT NULL,
    num_instances integer NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX series_by_study ON series (study_uid, series_uid);
CREATE TABLE instances (
    sop_uid text COLLATE "C" PRIMARY KEY,
    series_uid text COLLATE "C" NOT NULL,
    study_uid text COLLATE "C" NOT NULL,
    instance_number bigint,
    size bigint NOT NULL,
    rec bytea NOT NULL,
    metadata bytea NOT NULL
);
CREATE INDEX instances_by_series ON instances (series_uid, sop_uid);
CREATE TABLE landing_marks (sop_uid text COLLATE "C" PRIMARY KEY);
CREATE TABLE journal (id bigserial PRIMARY KEY, entry bytea NOT NULL);
CREATE TABLE index_flags (name text COLLATE "C" PRIMARY KEY);
CREATE TABLE index_counters (
    shard integer PRIMARY KEY,
    patients bigint NOT NULL DEFAULT 0,
    studies bigint NOT NULL DEFAULT 0,
    series bigint NOT NULL DEFAULT 0,
    instances bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0
);
INSERT INTO index_counters (shard) SELECT generate_series(0, 15);
"#,
    r#"
CREATE TABLE users (name bytea PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE tokens (
    id bytea PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE,
    rec bytea NOT NULL
);
CREATE TABLE shares (
    id bytea PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE,
    rec bytea NOT NULL
);
CREATE TABLE grants (id bytea PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE orders (
    id bytea PRIMARY KEY,
    accession_number bytea NOT NULL,
    sps_id bytea NOT NULL,
    start_date bytea NOT NULL,
    start_time bytea NOT NULL,
    created bigint NOT NULL,
    rec bytea NOT NULL,
    UNIQUE (accession_number, sps_id)
);
CREATE INDEX orders_by_start ON orders (start_date, start_time, created, id);
CREATE TABLE mpps (sop_uid bytea PRIMARY KEY, rec bytea NOT NULL);
"#,
    r#"
CREATE TABLE study_name_leads (
    lead text COLLATE "C" NOT NULL,
    date_key text COLLATE "C" NOT NULL,
    study_uid text COLLATE "C" NOT NULL REFERENCES studies ON DELETE CASCADE,
    PRIMARY KEY (lead, date_key, study_uid)
);
CREATE INDEX study_name_leads_by_study ON study_name_leads (study_uid);
CREATE TABLE study_modalities (
    modality text COLLATE "C" NOT NULL,
    date_key text COLLATE "C" NOT NULL,
    study_uid text COLLATE "C" NOT NULL REFERENCES studies ON DELETE CASCADE,
    PRIMARY KEY (modality, date_key, study_uid)
);
CREATE INDEX study_modalities_by_study ON study_modalities (study_uid);
INSERT INTO study_modalities (modality, date_key, study_uid)
    SELECT m, date_key, study_uid FROM studies, jsonb_object_keys(modalities) AS m;
"#,
    r#"
CREATE TABLE patient_changes (
    id bigserial PRIMARY KEY,
    from_key bytea NOT NULL,
    into_key bytea NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX patient_changes_by_from ON patient_changes (from_key, id);
CREATE INDEX patient_changes_by_into ON patient_changes (into_key, id);
CREATE TABLE patient_coercions (original_key bytea PRIMARY KEY, rec bytea NOT NULL);
"#,
    r#"
CREATE TABLE browser_sessions (
    key bytea PRIMARY KEY,
    user_name bytea NOT NULL,
    federated boolean NOT NULL,
    created timestamptz NOT NULL,
    last timestamptz NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX browser_sessions_by_user ON browser_sessions (user_name);
CREATE INDEX browser_sessions_by_last ON browser_sessions (last);
CREATE INDEX browser_sessions_by_created ON browser_sessions (created);
"#,
    r#"
CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    state text COLLATE "C" NOT NULL,
    owner text COLLATE "C",
    rec bytea NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state, id);
"#,
    r#"
CREATE TABLE browser_flows (
    kind smallint NOT NULL,
    key bytea NOT NULL,
    expires timestamptz NOT NULL,
    rec bytea NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX browser_flows_by_expiry ON browser_flows (kind, expires);
"#,
    r#"
CREATE TABLE sign_in_failures (
    key bytea PRIMARY KEY,
    failures integer NOT NULL,
    locked_until_ms bigint NOT NULL,
    last_ms bigint NOT NULL
);
CREATE INDEX sign_in_failures_by_last ON sign_in_failures (last_ms);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN updated_ms bigint NOT NULL DEFAULT 0;
CREATE INDEX jobs_done_by_age ON jobs (updated_ms) WHERE state = 'done';
"#,
    r#"
CREATE TABLE mpps_accessions (
    accession bytea NOT NULL,
    sop_uid bytea NOT NULL REFERENCES mpps ON DELETE CASCADE,
    PRIMARY KEY (accession, sop_uid)
);
CREATE INDEX mpps_accessions_by_mpps ON mpps_accessions (sop_uid);
"#,
];

/// Studies whose name prefix entries one statement of the version 3
/// migration writes.
const LEAD_BACKFILL_BATCH: usize = 5_000;

/// Rows of `index_counters`.
const COUNTER_SHARDS: u64 = 16;
/// A transaction that met a deadlock or a racing insert starts again this
/// many times before the error is returned.
const MAX_ATTEMPTS: usize = 20;
/// Connections per node (the pool's size).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The key of the advisory lock held while the schema is checked or
/// migrated, so that nodes starting together migrate once.
const MIGRATION_LOCK: i64 = 0x5345_4e50_4143_5331;
const CLEAN: &str = "clean_shutdown";

/// Why the PostgreSQL index cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    #[error("index_url is not a usable PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot connect to the PostgreSQL index at {target}: {message}")]
    Connect { target: String, message: String },
    #[error(transparent)]
    Newer(#[from] NewerFormat),
    #[error("cannot migrate the PostgreSQL index at {target} to schema version {PG_SCHEMA_VERSION}: {message}")]
    Migrate { target: String, message: String },
    #[error("the database at {target} holds tables that are not the index's ({tables}): use an empty database")]
    NotOwn { target: String, tables: String },
}

/// `url` without its `sslrootcert=PATH` query parameter (which
/// tokio-postgres does not know), and that path.
fn take_sslrootcert(url: &str) -> Result<(String, Option<std::path::PathBuf>), PgOpenError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                if path.is_empty() {
                    return Err(PgOpenError::Url("sslrootcert= names no file".into()));
                }
                root = Some(std::path::PathBuf::from(path));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, root))
}

/// A rustls connector trusting the system's roots and the certificates of
/// `root_cert` (PEM).
fn rustls_connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgOpenError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::{crypto::aws_lc_rs, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as every client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = root_cert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| PgOpenError::Url(format!("sslrootcert {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(PgOpenError::Url(format!(
                "sslrootcert {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| PgOpenError::Url(format!("sslrootcert {}: {e}", path.display())))?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(std::sync::Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| PgOpenError::Url(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The tables (and views) the migrations create.
const OWN_TABLES: &[&str] = &[
    "pacs_schema_version",
    "patients",
    "studies",
    "study_name_words",
    "study_name_leads",
    "study_modalities",
    "series",
    "instances",
    "landing_marks",
    "journal",
    "index_flags",
    "index_counters",
    "users",
    "tokens",
    "shares",
    "grants",
    "orders",
    "mpps",
    "mpps_accessions",
    "patient_changes",
    "patient_coercions",
    "browser_sessions",
    "jobs",
    "browser_flows",
    "sign_in_failures",
];

/// The PostgreSQL index.
#[derive(Clone)]
pub struct PgIndex {
    pub(crate) pool: Pool,
    target: String,
    next_shard: std::sync::Arc<AtomicU64>,
}

/// What a transaction did to the global counters.
#[derive(Default)]
struct Delta {
    patients: i64,
    studies: i64,
    series: i64,
    instances: i64,
    bytes: i64,
}

pub(crate) type PgResult<T> = Result<T, tokio_postgres::Error>;

pub(crate) fn pg_err(e: tokio_postgres::Error) -> PortError {
    PortError::Index(format!("PostgreSQL: {}", pg_message(&e)))
}

/// The server's message (and SQLSTATE) when there is one: the error's own
/// text is only "db error".
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> PortError {
    PortError::Index(format!("PostgreSQL connection: {e}"))
}

/// A deadlock, a serialization failure or a racing insert of the same key:
/// the whole transaction can simply run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, PortError> {
    encode_versioned(INDEX_RECORD, v).map_err(|e| PortError::Index(e.to_string()))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, PortError> {
    decode_versioned(INDEX_RECORD, b).map_err(|e| PortError::Index(e.to_string()))
}

fn count(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn counts_map(json: &str) -> Result<BTreeMap<String, u32>, PortError> {
    serde_json::from_str(json).map_err(|e| PortError::Index(format!("counts: {e}")))
}

/// Errors of one attempt: the database's (maybe retried) or ours.
pub(crate) enum TxError {
    Pg(tokio_postgres::Error),
    Port(PortError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<PortError> for TxError {
    fn from(e: PortError) -> Self {
        TxError::Port(e)
    }
}

pub(crate) async fn query<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    c.query(&st, params).await
}

pub(crate) async fn query_opt<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Option<Row>> {
    let st = c.prepare_cached(sql).await?;
    c.query_opt(&st, params).await
}

pub(crate) async fn execute<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<u64> {
    let st = c.prepare_cached(sql).await?;
    c.execute(&st, params).await
}

/// Sort key of a study, newest last: `YYYYMMDDHHMMSS` (missing parts as
/// zeros), a space (below every UID character, as the sled index's NUL
/// separator is) and the Study Instance UID.
pub fn study_date_key(study: &StudyRecord) -> String {
    let digits =
        |s: &str, n: usize| -> String { s.chars().filter(char::is_ascii_digit).take(n).collect() };
    format!(
        "{:0<8}{:0<6} {}",
        digits(&study.study_date, 8),
        digits(&study.study_time, 6),
        study.study_instance_uid
    )
}

/// A value as the text columns hold it: PostgreSQL text cannot hold NUL,
/// so it becomes U+FFFD (in stored values and lookups alike; the matcher
/// still checks the record itself).
fn nul_free(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

fn nul_free_all(v: Vec<String>) -> Vec<String> {
    v.iter().map(|s| nul_free(s)).collect()
}

/// A query's OFFSET and LIMIT as SQL takes them.
fn page_bounds(q: &Query) -> (i64, i64) {
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let limit = q
        .limit
        .and_then(|l| i64::try_from(l).ok())
        .unwrap_or(i64::MAX);
    (offset, limit)
}

/// Study-level result rows.
fn study_matches(studies: Vec<StudyRecord>) -> Vec<Match> {
    studies
        .into_iter()
        .map(|s| Match {
            study: Some(s),
            ..Match::default()
        })
        .collect()
}

/// The `study_name_leads` values of a study: the leading runs of its
/// Patient's Name the sled index keys `study_by_name_lead` by.
fn name_leads(s: &StudyRecord) -> Vec<String> {
    pacs_core::matching::pn_lead_prefixes(&s.patient_name, crate::index::NAME_LEAD_MAX)
        .iter()
        .map(|l| nul_free(l))
        .collect()
}

/// Fills `study_name_leads` for the studies a version-2 schema holds (in
/// the migrating transaction), in batches, with progress in the log.
async fn backfill_name_leads(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
) -> Result<(), TxError> {
    let mut after = String::new();
    let mut done = 0usize;
    loop {
        let batch = tx
            .query(
                "SELECT study_uid, date_key, rec FROM studies WHERE study_uid > $1 \
                 ORDER BY study_uid LIMIT $2",
                &[&after, &(LEAD_BACKFILL_BATCH as i64)],
            )
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.get(0);
        let (mut leads, mut keys, mut uids) = (Vec::new(), Vec::new(), Vec::new());
        for r in &batch {
            let s: StudyRecord = dec(r.get(2))?;
            for l in name_leads(&s) {
                leads.push(l);
                keys.push(r.get::<_, String>(1));
                uids.push(r.get::<_, String>(0));
            }
        }
        tx.execute(
            "INSERT INTO study_name_leads (lead, date_key, study_uid) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            &[&leads, &keys, &uids],
        )
        .await?;
        done += batch.len();
        tracing::info!(studies = done, index = %target, "name prefix entries written");
    }
    Ok(())
}

/// A `LIKE` pattern matching values that start with `prefix` literally.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in nul_free(prefix).chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn number_key(s: &str) -> i64 {
    s.trim().parse::<i64>().unwrap_or(i64::MAX)
}

const PATIENT_COLS: &str = "rec, num_studies, num_series, num_instances";
const STUDY_COLS: &str = "rec, num_series, num_instances, modalities::text, sop_classes::text";
const SERIES_COLS: &str = "rec, num_instances";

fn patient_row(r: &Row) -> Result<PatientRecord, PortError> {
    let mut p: PatientRecord = dec(r.get(0))?;
    p.num_studies = count(r.get(1));
    p.num_series = count(r.get(2));
    p.num_instances = count(r.get(3));
    Ok(p)
}

fn study_row(r: &Row) -> Result<StudyRecord, PortError> {
    let mut s: StudyRecord = dec(r.get(0))?;
    s.num_series = count(r.get(1));
    s.num_instances = count(r.get(2));
    s.modalities = counts_map(r.get(3))?;
    s.sop_classes = counts_map(r.get(4))?;
    Ok(s)
}

fn series_row(r: &Row) -> Result<SeriesRecord, PortError> {
    let mut s: SeriesRecord = dec(r.get(0))?;
    s.num_instances = count(r.get(1));
    Ok(s)
}

fn instance_row(r: &Row) -> Result<InstanceRecord, PortError> {
    dec(r.get(0))
}

fn rows<T>(rs: &[Row], f: fn(&Row) -> Result<T, PortError>) -> Result<Vec<T>, PortError> {
    rs.iter().map(f).collect()
}

/// Adds one to a count in a JSON object of counts (`$k`).
const INC: &str =
    "jsonb_set({m}, ARRAY[{k}::text], to_jsonb(COALESCE(({m}->>{k}::text)::int, 0) + 1))";
/// Takes one from a count, dropping the key at zero.
const DEC: &str = "CASE WHEN COALESCE(({m}->>{k}::text)::int, 0) <= 1 THEN {m} - {k}::text \
                   ELSE jsonb_set({m}, ARRAY[{k}::text], to_jsonb(({m}->>{k}::text)::int - 1)) END";

fn counts_expr(template: &str, column: &str, param: &str) -> String {
    template.replace("{m}", column).replace("{k}", param)
}

/// The SQL texts built once from constants (never from values).
struct Sql {
    study_bump: String,
    study_drop: String,
}

fn sql() -> &'static Sql {
    static SQL: std::sync::OnceLock<Sql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| Sql {
        study_bump: format!(
            "UPDATE studies SET num_instances = num_instances + 1, num_series = num_series + $2, \
             sop_classes = {}, \
             modalities = CASE WHEN $4 THEN {} ELSE modalities END \
             WHERE study_uid = $1 RETURNING patient_key",
            counts_expr(INC, "sop_classes", "$3"),
            counts_expr(INC, "modalities", "$5"),
        ),
        study_drop: format!(
            "UPDATE studies SET num_instances = GREATEST(num_instances - 1, 0), \
             num_series = GREATEST(num_series - $2, 0), \
             sop_classes = {}, \
             modalities = CASE WHEN $4 THEN {} ELSE modalities END \
             WHERE study_uid = $1 RETURNING num_series, num_instances, patient_key, modalities ? $5",
            counts_expr(DEC, "sop_classes", "$3"),
            counts_expr(DEC, "modalities", "$5"),
        ),
    })
}

/// Removes one instance inside a transaction, maintaining every counter
/// (the same steps as the sled index's).
async fn tx_remove<C: GenericClient + Sync>(
    tx: &C,
    sop: &str,
    d: &mut Delta,
) -> Result<Option<InstanceRecord>, TxError> {
    let Some(row) = query_opt(
        tx,
        "DELETE FROM instances WHERE sop_uid = $1 RETURNING rec",
        &[&sop],
    )
    .await?
    else {
        return Ok(None);
    };
    let inst = instance_row(&row)?;
    execute(tx, "DELETE FROM landing_marks WHERE sop_uid = $1", &[&sop]).await?;
    d.instances -= 1;
    d.bytes -= inst.size as i64;
    let series_uid = inst.series_instance_uid.as_str();
    let study_uid = inst.study_instance_uid.as_str();

    let mut series_gone = false;
    let mut modality = String::new();
    if let Some(r) = query_opt(
        tx,
        "UPDATE series SET num_instances = GREATEST(num_instances - 1, 0) \
         WHERE series_uid = $1 RETURNING num_instances, modality",
        &[&series_uid],
    )
    .await?
    {
        let n: i32 = r.get(0);
        modality = r.get(1);
        if n == 0 {
            execute(
                tx,
                "DELETE FROM series WHERE series_uid = $1",
                &[&series_uid],
            )
            .await?;
            d.series -= 1;
            series_gone = true;
        }
    }
    let gone_series: i32 = series_gone.into();
    let Some(r) = query_opt(
        tx,
        &sql().study_drop,
        &[
            &study_uid,
            &gone_series,
            &inst.sop_class_uid.as_str(),
            &series_gone,
            &modality,
        ],
    )
    .await?
    else {
        return Ok(Some(inst));
    };
    let (num_series, num_instances, patient_key, has_modality): (i32, i32, Vec<u8>, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    let study_gone = num_series == 0 || num_instances == 0;
    if series_gone && !has_modality && !study_gone {
        execute(
            tx,
            "DELETE FROM study_modalities WHERE study_uid = $1 AND modality = $2",
            &[&study_uid, &modality],
        )
        .await?;
    }
    if study_gone {
        execute(
            tx,
            "DELETE FROM studies WHERE study_uid = $1",
            &[&study_uid],
        )
        .await?;
        d.studies -= 1;
    }
    let gone_study: i32 = study_gone.into();
    if let Some(r) = query_opt(
        tx,
        "UPDATE patients SET num_instances = GREATEST(num_instances - 1, 0), \
         num_series = GREATEST(num_series - $2, 0), num_studies = GREATEST(num_studies - $3, 0) \
         WHERE patient_key = $1 RETURNING num_studies",
        &[&patient_key, &gone_series, &gone_study],
    )
    .await?
    {
        let n: i32 = r.get(0);
        if n == 0 {
            execute(
                tx,
                "DELETE FROM patients WHERE patient_key = $1",
                &[&patient_key],
            )
            .await?;
            d.patients -= 1;
        }
    }
    Ok(Some(inst))
}

/// Inserts one instance (which must not be present) inside a transaction.
async fn tx_insert<C: GenericClient + Sync>(
    tx: &C,
    attrs: &InstanceAttributes,
    d: &mut Delta,
) -> Result<(), TxError> {
    let inst = &attrs.instance;
    let sop = inst.sop_instance_uid.as_str();
    let series_uid = inst.series_instance_uid.as_str();
    let study_uid = inst.study_instance_uid.as_str();

    // The series: count the instance, or create it with one.
    let mut new_series = false;
    loop {
        let bumped = execute(
            tx,
            "UPDATE series SET num_instances = num_instances + 1 WHERE series_uid = $1",
            &[&series_uid],
        )
        .await?;
        if bumped == 1 {
            break;
        }
        let mut s = attrs.series.clone();
        s.num_instances = 0;
        let inserted = execute(
            tx,
            "INSERT INTO series (series_uid, study_uid, modality, num_instances, rec) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT (series_uid) DO NOTHING",
            &[&series_uid, &study_uid, &nul_free(&s.modality), &enc(&s)?],
        )
        .await?;
        if inserted == 1 {
            new_series = true;
            break;
        }
    }
    if new_series {
        d.series += 1;
    }
    let modality = attrs.series.modality.as_str();
    let counts_modality = new_series && !modality.is_empty();
    let added_series: i32 = new_series.into();

    // The study.
    let mut new_study = false;
    let patient_key: Vec<u8> = loop {
        if let Some(r) = query_opt(
            tx,
            &sql().study_bump,
            &[
                &study_uid,
                &added_series,
                &inst.sop_class_uid.as_str(),
                &counts_modality,
                &modality,
            ],
        )
        .await?
        {
            break r.get(0);
        }
        let mut s = attrs.study.clone();
        s.num_series = 0;
        s.num_instances = 0;
        s.modalities.clear();
        s.sop_classes.clear();
        let mut sop_classes = BTreeMap::new();
        sop_classes.insert(inst.sop_class_uid.as_str().to_owned(), 1u32);
        let mut modalities = BTreeMap::new();
        if counts_modality {
            modalities.insert(modality.to_owned(), 1u32);
        }
        let json = |m: &BTreeMap<String, u32>| serde_json::to_string(m).unwrap_or_default();
        let inserted = execute(
            tx,
            "INSERT INTO studies (study_uid, patient_key, patient_id, patient_name_folded, \
             accession_number, study_date, date_key, modalities, sop_classes, num_series, \
             num_instances, rec) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, 1, $11) \
             ON CONFLICT (study_uid) DO NOTHING",
            &[
                &study_uid,
                &s.patient_key.as_bytes(),
                &nul_free(&s.patient_id),
                &nul_free(&fold_text(&s.patient_name)),
                &nul_free(&s.accession_number),
                &nul_free(&s.study_date),
                &study_date_key(&s),
                &json(&modalities),
                &json(&sop_classes),
                &added_series,
                &enc(&s)?,
            ],
        )
        .await?;
        if inserted == 1 {
            new_study = true;
            let words: Vec<String> = name_words(&s.patient_name)
                .iter()
                .map(|w| nul_free(w))
                .collect();
            execute(
                tx,
                "INSERT INTO study_name_words (word, study_uid) \
                 SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
                &[&words, &study_uid],
            )
            .await?;
            execute(
                tx,
                "INSERT INTO study_name_leads (lead, date_key, study_uid) \
                 SELECT unnest($1::text[]), $2, $3 ON CONFLICT DO NOTHING",
                &[&name_leads(&s), &study_date_key(&s), &study_uid],
            )
            .await?;
            d.studies += 1;
            break s.patient_key.into_bytes();
        }
    };
    let added_study: i32 = new_study.into();
    if counts_modality {
        execute(
            tx,
            "INSERT INTO study_modalities (modality, date_key, study_uid) \
             SELECT $1, date_key, study_uid FROM studies WHERE study_uid = $2 \
             ON CONFLICT DO NOTHING",
            &[&modality, &study_uid],
        )
        .await?;
    }

    // The patient.
    loop {
        let bumped = execute(
            tx,
            "UPDATE patients SET num_instances = num_instances + 1, \
             num_series = num_series + $2, num_studies = num_studies + $3 \
             WHERE patient_key = $1",
            &[&patient_key, &added_series, &added_study],
        )
        .await?;
        if bumped == 1 {
            break;
        }
        let mut p = attrs.patient.clone();
        p.num_studies = 0;
        p.num_series = 0;
        p.num_instances = 0;
        let inserted = execute(
            tx,
            "INSERT INTO patients (patient_key, patient_id, patient_name, num_studies, \
             num_series, num_instances, rec) VALUES ($1, $2, $3, $4, $5, 1, $6) \
             ON CONFLICT (patient_key) DO NOTHING",
            &[
                &patient_key,
                &nul_free(&p.patient_id),
                &nul_free(&p.patient_name),
                &added_study,
                &added_series,
                &enc(&p)?,
            ],
        )
        .await?;
        if inserted == 1 {
            d.patients += 1;
            break;
        }
    }

    let number = inst.instance_number.trim().parse::<i64>().ok();
    execute(
        tx,
        "INSERT INTO instances (sop_uid, series_uid, study_uid, instance_number, size, rec, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &sop,
            &series_uid,
            &study_uid,
            &number,
            &(inst.size as i64),
            &enc(inst)?,
            &attrs.metadata,
        ],
    )
    .await?;
    d.instances += 1;
    d.bytes += inst.size as i64;
    Ok(())
}

impl PgIndex {
    /// Connects to `url` (`postgres://user:password@host:port/dbname`),
    /// checks the schema version (refusing a newer one before anything is
    /// written) and migrates an older one, all under an advisory lock.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PgIndex, PgOpenError> {
        let index = Self::pool(url, pool_size)?;
        index.migrate().await?;
        Ok(index)
    }

    /// [`PgIndex::connect`] for a command that may only write to a database
    /// of its own: refused, before anything is created, when the current
    /// schema holds a table this index does not make.
    pub async fn connect_own(url: &str, pool_size: usize) -> Result<PgIndex, PgOpenError> {
        let index = Self::pool(url, pool_size)?;
        let target = index.target.clone();
        let connect = |message: String| PgOpenError::Connect {
            target: target.clone(),
            message,
        };
        let client = index.pool.get().await.map_err(|e| connect(e.to_string()))?;
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = current_schema() \
                 AND NOT (c.relname = ANY($1)) ORDER BY 1",
                &[&OWN_TABLES],
            )
            .await
            .map_err(|e| connect(pg_message(&e)))?;
        drop(client);
        if !rows.is_empty() {
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            return Err(PgOpenError::NotOwn {
                target,
                tables: names.join(", "),
            });
        }
        index.migrate().await?;
        Ok(index)
    }

    /// A pool on `url`; nothing is sent yet. With `sslmode=require` the
    /// connections use TLS (rustls), the server's certificate checked
    /// against the system's roots and the PEM file `sslrootcert=` names (a
    /// libpq parameter, taken out of the URL here); otherwise they are plain
    /// (`disable`, or `prefer`, the default, which then does not try TLS).
    fn pool(url: &str, pool_size: usize) -> Result<PgIndex, PgOpenError> {
        let (url, root_cert) = take_sslrootcert(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => {
                Some(rustls_connector(root_cert.as_deref())?)
            }
            _ if root_cert.is_some() => {
                return Err(PgOpenError::Url(
                    "sslrootcert is only used with sslmode=require".into(),
                ))
            }
            _ => None,
        };
        // Durable at commit, whatever the server's default (see the
        // module doc: `flush` relies on it).
        config.options("-c synchronous_commit=on");
        config.application_name("sen-pacs");
        let target = describe(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| PgOpenError::Url(e.to_string()))?;
        Ok(PgIndex {
            pool,
            target,
            next_shard: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    /// Bytes on disk of the index's tables with their indexes and TOAST
    /// (every table of the current schema), and of the whole database.
    pub async fn disk_usage(&self) -> Result<(u64, u64), PortError> {
        let c = self.client().await?;
        let r = query_opt(
            &c,
            "SELECT (SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname = current_schema()), \
             pg_database_size(current_database())::bigint",
            &[],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| PortError::Index("PostgreSQL: no sizes".into()))?;
        let n = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
        Ok((n(0), n(1)))
    }

    /// Where the index is (host, port, database), for logs; never the
    /// password.
    pub fn describe(&self) -> &str {
        &self.target
    }

    async fn migrate(&self) -> Result<(), PgOpenError> {
        let target = self.target.clone();
        let connect = |message: String| PgOpenError::Connect {
            target: target.clone(),
            message,
        };
        let migrate = |e: tokio_postgres::Error| PgOpenError::Migrate {
            target: target.clone(),
            message: pg_message(&e),
        };
        let mut client = self.pool.get().await.map_err(|e| connect(e.to_string()))?;
        let tx = client.transaction().await.map_err(migrate)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(migrate)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS pacs_schema_version (\
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), \
             version integer NOT NULL)",
        )
        .await
        .map_err(migrate)?;
        let found: i32 = tx
            .query_opt("SELECT version FROM pacs_schema_version", &[])
            .await
            .map_err(migrate)?
            .map_or(0, |r| r.get(0));
        if found > PG_SCHEMA_VERSION {
            return Err(NewerFormat {
                what: format!("the PostgreSQL index at {target}"),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: PG_SCHEMA_VERSION as u32,
            }
            .into());
        }
        for (from, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tracing::info!(from, to = from + 1, index = %target, "migrating the PostgreSQL index schema");
            tx.batch_execute(step).await.map_err(migrate)?;
            let filled = match from {
                2 => backfill_name_leads(&tx, &target).await,
                8 => crate::pg_jobs::backfill_updated(&tx, &target).await,
                9 => crate::pg_side::backfill_mpps_accessions(&tx, &target).await,
                _ => Ok(()),
            };
            filled.map_err(|e| match e {
                TxError::Pg(e) => migrate(e),
                TxError::Port(e) => PgOpenError::Migrate {
                    target: target.clone(),
                    message: e.to_string(),
                },
            })?;
        }
        tx.execute(
            "INSERT INTO pacs_schema_version (singleton, version) VALUES (true, $1) \
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
            &[&PG_SCHEMA_VERSION],
        )
        .await
        .map_err(migrate)?;
        tx.commit().await.map_err(migrate)?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PortError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Adds a transaction's counter changes to one counter row (rows taken
    /// in turn, so concurrent writers rarely wait on each other).
    async fn apply_delta<C: GenericClient + Sync>(&self, tx: &C, d: &Delta) -> PgResult<()> {
        if d.patients == 0 && d.studies == 0 && d.series == 0 && d.instances == 0 && d.bytes == 0 {
            return Ok(());
        }
        let shard = (self.next_shard.fetch_add(1, Ordering::Relaxed) % COUNTER_SHARDS) as i32;
        execute(
            tx,
            "UPDATE index_counters SET patients = patients + $2, studies = studies + $3, \
             series = series + $4, instances = instances + $5, bytes = bytes + $6 \
             WHERE shard = $1",
            &[
                &shard,
                &d.patients,
                &d.studies,
                &d.series,
                &d.instances,
                &d.bytes,
            ],
        )
        .await?;
        Ok(())
    }

    async fn put_inner(
        &self,
        attrs: &InstanceAttributes,
        landing: bool,
    ) -> Result<IndexPut, PortError> {
        let sop = attrs.instance.sop_instance_uid.as_str();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client().await?;
            let result: Result<IndexPut, TxError> = async {
                let tx = client.transaction().await?;
                let mut d = Delta::default();
                let old = tx_remove(&tx, sop, &mut d).await?;
                tx_insert(&tx, attrs, &mut d).await?;
                if landing {
                    execute(
                        &tx,
                        "INSERT INTO landing_marks (sop_uid) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&sop],
                    )
                    .await?;
                }
                self.apply_delta(&tx, &d).await?;
                tx.commit().await?;
                Ok(match old {
                    Some(o) => IndexPut::Replaced(Box::new(o)),
                    None => IndexPut::Inserted,
                })
            }
            .await;
            match result {
                Ok(r) => return Ok(r),
                Err(TxError::Pg(e)) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "index transaction retried");
                }
                Err(TxError::Pg(e)) => return Err(pg_err(e)),
                Err(TxError::Port(e)) => return Err(e),
            }
        }
    }

    async fn studies_where(
        &self,
        condition: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<StudyRecord>, PortError> {
        let c = self.client().await?;
        let sql = format!("SELECT {STUDY_COLS} FROM studies WHERE {condition}");
        rows(&query(&c, &sql, params).await.map_err(pg_err)?, study_row)
    }

    /// Candidate studies for a query, from the most selective key it has
    /// (the same plan as the sled index's; the matcher checks each one).
    async fn candidate_studies(&self, q: &Query) -> Result<Vec<StudyRecord>, PortError> {
        if let Some(uids) = q.key(0x0020_000D).and_then(Matcher::exact_values) {
            return self.studies_where("study_uid = ANY($1)", &[&uids]).await;
        }
        if let Some(ids) = q.key(0x0010_0020).and_then(Matcher::exact_values) {
            let ids = nul_free_all(ids);
            return self.studies_where("patient_id = ANY($1)", &[&ids]).await;
        }
        if let Some(accs) = q.key(0x0008_0050).and_then(Matcher::exact_values) {
            let accs = nul_free_all(accs);
            return self
                .studies_where("accession_number = ANY($1)", &[&accs])
                .await;
        }
        if let Some(p) = q.key(0x0010_0020).and_then(Matcher::literal_prefix) {
            return self
                .studies_where("patient_id LIKE $1", &[&like_prefix(&p)])
                .await;
        }
        if let Some(p) = q.key(0x0008_0050).and_then(Matcher::literal_prefix) {
            return self
                .studies_where("accession_number LIKE $1", &[&like_prefix(&p)])
                .await;
        }
        if let Some(word) = name_search_word(q) {
            return self
                .studies_where(
                    "study_uid IN (SELECT study_uid FROM study_name_words WHERE word LIKE $1)",
                    &[&like_prefix(&word)],
                )
                .await;
        }
        let range = q.key(0x0008_0020).and_then(Matcher::range);
        let date_bounds = |(from, to): (Option<String>, Option<String>)| {
            let lo = from.unwrap_or_default();
            let hi = to.map_or_else(|| "~".to_owned(), |t| format!("{t}~"));
            (lo, hi)
        };
        if let (Some(r), Some(mods)) = (
            range.clone(),
            q.key(0x0008_0061).and_then(Matcher::exact_values),
        ) {
            // Modalities in Study within a Study Date range: the
            // (modality, date key) entries in the range.
            let mods: Vec<String> = mods.iter().map(|m| nul_free(m.trim())).collect();
            let (lo, hi) = date_bounds(r);
            return self
                .studies_where(
                    "study_uid IN (SELECT study_uid FROM study_modalities \
                     WHERE modality = ANY($1) AND date_key >= $2 AND date_key < $3)",
                    &[&mods, &lo, &hi],
                )
                .await;
        }
        if range.is_none() {
            if let Some(mods) = q.key(0x0008_0061).and_then(Matcher::exact_values) {
                let mods: Vec<String> = mods.iter().map(|m| nul_free(m.trim())).collect();
                return self.studies_where("modalities ?| $1", &[&mods]).await;
            }
        }
        match range {
            Some(r) => {
                let (lo, hi) = date_bounds(r);
                self.studies_where("date_key >= $1 AND date_key < $2", &[&lo, &hi])
                    .await
            }
            None => self.studies_where("true", &[]).await,
        }
    }

    async fn counter(&self, column: Counter) -> Result<u64, PortError> {
        let stats = self.stats().await?;
        Ok(match column {
            Counter::Studies => stats.studies,
            Counter::Series => stats.series,
            Counter::Instances => stats.instances,
        })
    }

    /// The series of some studies, each with its study, by study order.
    async fn series_of_studies(
        &self,
        studies: &[StudyRecord],
    ) -> Result<Vec<SeriesRecord>, PortError> {
        let uids: Vec<&str> = studies
            .iter()
            .map(|s| s.study_instance_uid.as_str())
            .collect();
        let c = self.client().await?;
        rows(
            &query(
                &c,
                &format!(
                    "SELECT {SERIES_COLS} FROM series WHERE study_uid = ANY($1) ORDER BY series_uid"
                ),
                &[&uids],
            )
            .await
            .map_err(pg_err)?,
            series_row,
        )
    }

    async fn instances_of_series_list(
        &self,
        series: &[&str],
    ) -> Result<Vec<InstanceRecord>, PortError> {
        let c = self.client().await?;
        rows(
            &query(
                &c,
                "SELECT rec FROM instances WHERE series_uid = ANY($1) ORDER BY series_uid, sop_uid",
                &[&series],
            )
            .await
            .map_err(pg_err)?,
            instance_row,
        )
    }

    /// Every series or every instance, newest study first, reading studies
    /// a page at a time up to `offset + limit` rows; the total is the
    /// counter.
    async fn find_unkeyed(&self, q: &Query) -> Result<FindResult, PortError> {
        let total = self
            .counter(if q.level == Level::Series {
                Counter::Series
            } else {
                Counter::Instances
            })
            .await? as usize;
        let want = q.offset.saturating_add(q.limit.unwrap_or(usize::MAX));
        let mut out: Vec<Match> = Vec::new();
        let mut after = "\u{7f}".to_owned();
        'pages: while out.len() < want {
            let studies = self
                .studies_where("date_key < $1 ORDER BY date_key DESC LIMIT 64", &[&after])
                .await?;
            let Some(last) = studies.last() else { break };
            after = study_date_key(last);
            let mut series = self.series_of_studies(&studies).await?;
            series.sort_by_cached_key(|s| {
                (
                    studies
                        .iter()
                        .position(|st| st.study_instance_uid == s.study_instance_uid),
                    number_key(&s.series_number),
                    s.series_instance_uid.clone(),
                )
            });
            let mut instances: Vec<InstanceRecord> = Vec::new();
            if q.level == Level::Instance {
                let su: Vec<&str> = series
                    .iter()
                    .map(|s| s.series_instance_uid.as_str())
                    .collect();
                instances = self.instances_of_series_list(&su).await?;
                instances.sort_by_cached_key(|i| {
                    (
                        i.series_instance_uid.clone(),
                        number_key(&i.instance_number),
                        i.sop_instance_uid.clone(),
                    )
                });
            }
            for s in series {
                let study = studies
                    .iter()
                    .find(|st| st.study_instance_uid == s.study_instance_uid)
                    .cloned();
                if q.level == Level::Series {
                    out.push(Match {
                        study,
                        series: Some(s),
                        ..Match::default()
                    });
                    if out.len() >= want {
                        break 'pages;
                    }
                    continue;
                }
                for i in instances
                    .iter()
                    .filter(|i| i.series_instance_uid == s.series_instance_uid)
                {
                    out.push(Match {
                        study: study.clone(),
                        series: Some(s.clone()),
                        instance: Some(i.clone()),
                        ..Match::default()
                    });
                    if out.len() >= want {
                        break 'pages;
                    }
                }
            }
        }
        let matches = out.into_iter().skip(q.offset).collect();
        Ok(FindResult { matches, total })
    }

    async fn find_rows(&self, q: &Query) -> Result<FindResult, PortError> {
        let mut rows_out: Vec<Match> = Vec::new();
        match q.level {
            Level::Patient => {
                let c = self.client().await?;
                let found = match q.key(0x0010_0020).and_then(Matcher::exact_values) {
                    Some(ids) => {
                        let ids = nul_free_all(ids);
                        query(
                            &c,
                            &format!(
                                "SELECT {PATIENT_COLS} FROM patients WHERE patient_id = ANY($1) \
                                 ORDER BY patient_name, patient_key"
                            ),
                            &[&ids],
                        )
                        .await
                    }
                    None => {
                        query(
                            &c,
                            &format!(
                                "SELECT {PATIENT_COLS} FROM patients ORDER BY patient_name, patient_key"
                            ),
                            &[],
                        )
                        .await
                    }
                }
                .map_err(pg_err)?;
                for p in rows(&found, patient_row)? {
                    let row = Match {
                        patient: Some(p),
                        ..Match::default()
                    };
                    if q.matches(&row) {
                        rows_out.push(row);
                    }
                }
            }
            Level::Study if q.keys.is_empty() && q.request_attributes.is_none() => {
                // The study list a viewer opens with: newest first, one
                // page read; the total is the counter.
                let total = self.counter(Counter::Studies).await? as usize;
                let (offset, limit) = page_bounds(q);
                let studies = self
                    .studies_where(
                        "true ORDER BY date_key DESC OFFSET $1 LIMIT $2",
                        &[&offset, &limit],
                    )
                    .await?;
                return Ok(FindResult {
                    matches: study_matches(studies),
                    total,
                });
            }
            Level::Study
                if name_lead_plan(q).is_some_and(|(_, p)| p.chars().count() <= NAME_LEAD_MAX) =>
            {
                // A Patient's Name `P*` alone: every entry under `P`
                // matches; the page is read newest first and counted.
                let lead = name_lead_plan(q)
                    .map(|(_, p)| nul_free(&p))
                    .unwrap_or_default();
                let (offset, limit) = page_bounds(q);
                let c = self.client().await?;
                let total: i64 = query_opt(
                    &c,
                    "SELECT count(*) FROM study_name_leads WHERE lead = $1",
                    &[&lead],
                )
                .await
                .map_err(pg_err)?
                .map_or(0, |r| r.get(0));
                drop(c);
                let studies = self
                    .studies_where(
                        "study_uid = ANY(ARRAY(SELECT study_uid FROM study_name_leads \
                         WHERE lead = $1 ORDER BY date_key DESC OFFSET $2 LIMIT $3)) \
                         ORDER BY date_key DESC",
                        &[&lead, &offset, &limit],
                    )
                    .await?;
                return Ok(FindResult {
                    matches: study_matches(studies),
                    total: usize::try_from(total).unwrap_or(0),
                });
            }
            Level::Study => {
                for s in self.candidate_studies(q).await? {
                    let row = Match {
                        study: Some(s),
                        ..Match::default()
                    };
                    if q.matches(&row) {
                        rows_out.push(row);
                    }
                }
                rows_out.sort_by_cached_key(|m| {
                    std::cmp::Reverse(m.study.as_ref().map(study_date_key))
                });
            }
            Level::Series | Level::Instance
                if q.keys.is_empty() && q.request_attributes.is_none() =>
            {
                return self.find_unkeyed(q).await;
            }
            Level::Series | Level::Instance => {
                let series: Vec<SeriesRecord> = if let Some(uids) =
                    q.key(0x0020_000E).and_then(Matcher::exact_values)
                {
                    let c = self.client().await?;
                    rows(
                        &query(
                            &c,
                            &format!("SELECT {SERIES_COLS} FROM series WHERE series_uid = ANY($1)"),
                            &[&uids],
                        )
                        .await
                        .map_err(pg_err)?,
                        series_row,
                    )?
                } else {
                    let sq = q.study_level();
                    let candidates = if sq.keys.is_empty() {
                        self.studies_where("true", &[]).await?
                    } else {
                        self.candidate_studies(&sq).await?
                    };
                    let studies: Vec<StudyRecord> = candidates
                        .into_iter()
                        .filter(|s| {
                            sq.matches(&Match {
                                study: Some(s.clone()),
                                ..Match::default()
                            })
                        })
                        .collect();
                    self.series_of_studies(&studies).await?
                };
                let study_uids: Vec<String> = series
                    .iter()
                    .map(|s| s.study_instance_uid.to_string())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                let studies: BTreeMap<String, StudyRecord> = self
                    .studies_where("study_uid = ANY($1)", &[&study_uids])
                    .await?
                    .into_iter()
                    .map(|s| (s.study_instance_uid.to_string(), s))
                    .collect();
                let study_of =
                    |s: &SeriesRecord| studies.get(s.study_instance_uid.as_str()).cloned();
                if q.level == Level::Series {
                    for s in series {
                        let row = Match {
                            study: study_of(&s),
                            series: Some(s),
                            ..Match::default()
                        };
                        if q.matches(&row) {
                            rows_out.push(row);
                        }
                    }
                } else {
                    let by_uid: BTreeMap<String, &SeriesRecord> = series
                        .iter()
                        .map(|s| (s.series_instance_uid.to_string(), s))
                        .collect();
                    let instances = match q.key(0x0008_0018).and_then(Matcher::exact_values) {
                        Some(sops) => {
                            let c = self.client().await?;
                            rows(
                                &query(
                                    &c,
                                    "SELECT rec FROM instances WHERE sop_uid = ANY($1)",
                                    &[&sops],
                                )
                                .await
                                .map_err(pg_err)?,
                                instance_row,
                            )?
                        }
                        None => {
                            let su: Vec<&str> = by_uid.keys().map(String::as_str).collect();
                            self.instances_of_series_list(&su).await?
                        }
                    };
                    for i in instances {
                        let Some(s) = by_uid.get(i.series_instance_uid.as_str()) else {
                            continue;
                        };
                        let row = Match {
                            study: study_of(s),
                            series: Some((*s).clone()),
                            instance: Some(i),
                            ..Match::default()
                        };
                        if q.matches(&row) {
                            rows_out.push(row);
                        }
                    }
                }
                // Studies newest first, then series and instances by
                // number, UIDs breaking ties.
                rows_out.sort_by_cached_key(|m| {
                    (
                        std::cmp::Reverse(m.study.as_ref().map(study_date_key)),
                        m.series
                            .as_ref()
                            .map(|s| (number_key(&s.series_number), s.series_instance_uid.clone())),
                        m.instance
                            .as_ref()
                            .map(|i| (number_key(&i.instance_number), i.sop_instance_uid.clone())),
                    )
                });
            }
        }
        let total = rows_out.len();
        let matches = rows_out
            .into_iter()
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect();
        Ok(FindResult { matches, total })
    }
}

#[derive(Clone, Copy)]
enum Counter {
    Studies,
    Series,
    Instances,
}

/// The folded word a Patient Name key lets the planner look up by prefix:
/// the first word of a fuzzy key, or the leading word of the key's first
/// component (only that is a safe word prefix of the stored name).
fn name_search_word(q: &Query) -> Option<String> {
    let key = q.keys.iter().find(|k| k.attribute.tag == 0x0010_0010)?;
    let word = if q.fuzzy {
        name_words(&key.raw).into_iter().next()
    } else {
        key.matcher
            .literal_prefix()
            .or_else(|| {
                key.matcher
                    .exact_values()
                    .and_then(|v| v.into_iter().next())
            })
            .and_then(|p| {
                fold_text(&p)
                    .split(['^', '=', ' ', ','])
                    .next()
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
            })
    };
    word.filter(|w| !w.contains(['*', '?']))
}

/// `host:port/dbname` of a connection config.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{host}:{port}/{}",
        config.get_dbname().unwrap_or("")
    )
}

#[async_trait]
impl Index for PgIndex {
    async fn put(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError> {
        self.put_inner(&attrs, false).await
    }

    async fn replace_study(
        &self,
        study: &Uid,
        rows: Vec<InstanceAttributes>,
    ) -> Result<(), PortError> {
        if rows.iter().any(|r| r.instance.study_instance_uid != *study) {
            return Err(PortError::Index(
                "replace_study: a row of another study".into(),
            ));
        }
        let sops: Vec<String> = rows
            .iter()
            .map(|r| r.instance.sop_instance_uid.as_str().to_owned())
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client().await?;
            let result: Result<(), TxError> = async {
                let tx = client.transaction().await?;
                let mut d = Delta::default();
                // Landing marks survive the replacement (tx_remove drops them).
                let marked: Vec<String> = query(
                    &tx,
                    "SELECT sop_uid FROM landing_marks WHERE sop_uid = ANY($1)",
                    &[&sops],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
                for sop in &sops {
                    tx_remove(&tx, sop, &mut d).await?;
                }
                for attrs in &rows {
                    tx_insert(&tx, attrs, &mut d).await?;
                }
                for sop in &marked {
                    execute(
                        &tx,
                        "INSERT INTO landing_marks (sop_uid) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[sop],
                    )
                    .await?;
                }
                self.apply_delta(&tx, &d).await?;
                tx.commit().await?;
                Ok(())
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(TxError::Pg(e)) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "index transaction retried");
                }
                Err(TxError::Pg(e)) => return Err(pg_err(e)),
                Err(TxError::Port(e)) => return Err(e),
            }
        }
    }

    async fn put_landing(&self, attrs: InstanceAttributes) -> Result<IndexPut, PortError> {
        self.put_inner(&attrs, true).await
    }

    async fn landing_marks(&self) -> Result<Vec<Uid>, PortError> {
        let c = self.client().await?;
        let found = query(
            &c,
            "SELECT sop_uid FROM landing_marks ORDER BY sop_uid",
            &[],
        )
        .await
        .map_err(pg_err)?;
        Ok(found
            .iter()
            .filter_map(|r| Uid::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }

    async fn clear_landing_marks(&self, sops: &[Uid]) -> Result<(), PortError> {
        let sops: Vec<&str> = sops.iter().map(Uid::as_str).collect();
        let c = self.client().await?;
        execute(
            &c,
            "DELETE FROM landing_marks WHERE sop_uid = ANY($1)",
            &[&sops],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Nothing to do: every write committed with `synchronous_commit = on`
    /// is durable when its call returns.
    async fn flush(&self) -> Result<(), PortError> {
        Ok(())
    }

    async fn instance(&self, sop: &Uid) -> Result<Option<InstanceRecord>, PortError> {
        let c = self.client().await?;
        query_opt(
            &c,
            "SELECT rec FROM instances WHERE sop_uid = $1",
            &[&sop.as_str()],
        )
        .await
        .map_err(pg_err)?
        .as_ref()
        .map(instance_row)
        .transpose()
    }

    async fn study(&self, study: &Uid) -> Result<Option<StudyRecord>, PortError> {
        Ok(self
            .studies_where("study_uid = $1", &[&study.as_str()])
            .await?
            .pop())
    }

    async fn series(&self, series: &Uid) -> Result<Option<SeriesRecord>, PortError> {
        let c = self.client().await?;
        query_opt(
            &c,
            &format!("SELECT {SERIES_COLS} FROM series WHERE series_uid = $1"),
            &[&series.as_str()],
        )
        .await
        .map_err(pg_err)?
        .as_ref()
        .map(series_row)
        .transpose()
    }

    async fn instances_of_series(&self, series: &Uid) -> Result<Vec<InstanceRecord>, PortError> {
        self.instances_of_series_list(&[series.as_str()]).await
    }

    async fn instances_of_study(&self, study: &Uid) -> Result<Vec<InstanceRecord>, PortError> {
        let c = self.client().await?;
        rows(
            &query(
                &c,
                "SELECT rec FROM instances WHERE study_uid = $1 ORDER BY series_uid, sop_uid",
                &[&study.as_str()],
            )
            .await
            .map_err(pg_err)?,
            instance_row,
        )
    }

    async fn find(&self, query: &Query) -> Result<FindResult, PortError> {
        self.find_rows(query).await
    }

    async fn metadata(&self, sop: &Uid) -> Result<Option<Vec<u8>>, PortError> {
        let c = self.client().await?;
        Ok(query_opt(
            &c,
            "SELECT metadata FROM instances WHERE sop_uid = $1",
            &[&sop.as_str()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0)))
    }

    async fn metadata_of_series(&self, series: &Uid) -> Result<Vec<Vec<u8>>, PortError> {
        let c = self.client().await?;
        let found = query(
            &c,
            "SELECT metadata FROM instances WHERE series_uid = $1 \
             ORDER BY COALESCE(instance_number, 9223372036854775807), sop_uid",
            &[&series.as_str()],
        )
        .await
        .map_err(pg_err)?;
        Ok(found.iter().map(|r| r.get(0)).collect())
    }

    async fn remove(&self, sop: &Uid) -> Result<Option<(InstanceRecord, u64)>, PortError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client().await?;
            let result: Result<Option<(InstanceRecord, u64)>, TxError> = async {
                let tx = client.transaction().await?;
                let mut d = Delta::default();
                let Some(old) = tx_remove(&tx, sop.as_str(), &mut d).await? else {
                    return Ok(None);
                };
                let entry = enc(&JournalEntry::Delete {
                    key: old.blob_key.clone(),
                })?;
                let id: i64 = query_opt(
                    &tx,
                    "INSERT INTO journal (entry) VALUES ($1) RETURNING id",
                    &[&entry],
                )
                .await?
                .map_or(0, |r| r.get(0));
                self.apply_delta(&tx, &d).await?;
                tx.commit().await?;
                Ok(Some((old, id as u64)))
            }
            .await;
            match result {
                Ok(r) => return Ok(r),
                Err(TxError::Pg(e)) if retryable(&e) && attempt < MAX_ATTEMPTS => {}
                Err(TxError::Pg(e)) => return Err(pg_err(e)),
                Err(TxError::Port(e)) => return Err(e),
            }
        }
    }

    async fn journal_add(&self, entry: JournalEntry) -> Result<u64, PortError> {
        let c = self.client().await?;
        let id: i64 = query_opt(
            &c,
            "INSERT INTO journal (entry) VALUES ($1) RETURNING id",
            &[&enc(&entry)?],
        )
        .await
        .map_err(pg_err)?
        .map_or(0, |r| r.get(0));
        Ok(id as u64)
    }

    async fn journal(&self) -> Result<Vec<(u64, JournalEntry)>, PortError> {
        let c = self.client().await?;
        let found = query(&c, "SELECT id, entry FROM journal ORDER BY id", &[])
            .await
            .map_err(pg_err)?;
        found
            .iter()
            .map(|r| Ok((r.get::<_, i64>(0) as u64, dec(r.get(1))?)))
            .collect()
    }

    async fn journal_clear(&self, id: u64) -> Result<(), PortError> {
        let c = self.client().await?;
        execute(
            &c,
            "DELETE FROM journal WHERE id = $1",
            &[&i64::try_from(id).unwrap_or(-1)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn all_instances(&self) -> Result<Vec<InstanceRecord>, PortError> {
        let c = self.client().await?;
        rows(
            &query(&c, "SELECT rec FROM instances ORDER BY sop_uid", &[])
                .await
                .map_err(pg_err)?,
            instance_row,
        )
    }

    async fn instances_after(
        &self,
        after: Option<&Uid>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, PortError> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // `sop_uid` is `COLLATE "C"`: byte order, as the sled tree's keys.
        let found = match after {
            Some(a) => {
                query(
                    &c,
                    "SELECT rec FROM instances WHERE sop_uid > $1 ORDER BY sop_uid LIMIT $2",
                    &[&nul_free(a.as_str()), &limit],
                )
                .await
            }
            None => {
                query(
                    &c,
                    "SELECT rec FROM instances ORDER BY sop_uid LIMIT $1",
                    &[&limit],
                )
                .await
            }
        };
        rows(&found.map_err(pg_err)?, instance_row)
    }

    /// Empties every index table but the journal (as the sled index does):
    /// the blob work it records is still to be finished.
    async fn clear(&self) -> Result<(), PortError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.batch_execute(
            "TRUNCATE study_name_words, study_name_leads, study_modalities, instances, series, \
             studies, patients, \
             landing_marks, index_flags; \
             UPDATE index_counters SET patients = 0, studies = 0, series = 0, instances = 0, bytes = 0",
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn stats(&self) -> Result<IndexStats, PortError> {
        let c = self.client().await?;
        let r = query_opt(
            &c,
            "SELECT COALESCE(SUM(patients), 0)::bigint, COALESCE(SUM(studies), 0)::bigint, \
             COALESCE(SUM(series), 0)::bigint, COALESCE(SUM(instances), 0)::bigint, \
             COALESCE(SUM(bytes), 0)::bigint FROM index_counters",
            &[],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| PortError::Index("PostgreSQL: no counters".into()))?;
        let n = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
        Ok(IndexStats {
            patients: n(0),
            studies: n(1),
            series: n(2),
            instances: n(3),
            total_bytes: n(4),
        })
    }

    async fn set_clean_shutdown(&self, clean: bool) -> Result<(), PortError> {
        let c = self.client().await?;
        let sql = if clean {
            "INSERT INTO index_flags (name) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM index_flags WHERE name = $1"
        };
        execute(&c, sql, &[&CLEAN]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn was_clean_shutdown(&self) -> Result<bool, PortError> {
        let c = self.client().await?;
        Ok(
            query_opt(&c, "SELECT 1 FROM index_flags WHERE name = $1", &[&CLEAN])
                .await
                .map_err(pg_err)?
                .is_some(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_the_url() {
        let (u, r) = take_sslrootcert("postgres://p@h/db").expect("a usable URL");
        assert_eq!((u.as_str(), r), ("postgres://p@h/db", None));
        let (u, r) = take_sslrootcert("postgres://p@h/db?sslmode=require&sslrootcert=/etc/ca.pem")
            .expect("a usable URL");
        assert_eq!(u, "postgres://p@h/db?sslmode=require");
        assert_eq!(r, Some(std::path::PathBuf::from("/etc/ca.pem")));
        let (u, _) =
            take_sslrootcert("postgres://p@h/db?sslrootcert=/c.pem").expect("a usable URL");
        assert_eq!(u, "postgres://p@h/db");
        assert!(take_sslrootcert("postgres://p@h/db?sslrootcert=").is_err());
        // sslrootcert alone, or an unreadable file, is refused before any connection.
        assert!(PgIndex::pool("postgres://p@h/db?sslrootcert=/c.pem", 1).is_err());
        assert!(PgIndex::pool(
            "postgres://p@h/db?sslmode=require&sslrootcert=/nonexistent.pem",
            1
        )
        .is_err());
        assert!(PgIndex::pool("postgres://p@h/db?sslmode=require", 1).is_ok());
    }

    #[test]
    fn like_prefix_escapes_the_wild_cards_of_like() {
        assert_eq!(like_prefix("A_B%C\\"), "A\\_B\\%C\\\\%");
        assert_eq!(like_prefix("NGUYEN"), "NGUYEN%");
    }

    #[test]
    fn the_date_key_sorts_as_the_sled_index_does() {
        let a = "20240101000000 1.2.3";
        let b = "20240101000000 1.2.3.4";
        let c = "20240102000000 1.2";
        assert!(a < b && b < c);
    }
}
