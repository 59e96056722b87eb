//! Which engines the archive fixtures open.
//!
//! By default an archive is what one node opens with no configuration: a
//! sled index and blobs on the local disk (or in memory). With
//! `PACS_TEST_ENGINES=postgres-s3`, which `tests/engines.sh` sets for its
//! second pass over the DIMSE and DICOMweb suites, every archive the
//! fixtures open gets a PostgreSQL database and an S3 bucket of its own:
//! the database is created on the server `PACS_TEST_PG` names (the URL of a
//! database there, whose user may create databases), the bucket on the S3
//! server the standard AWS variables name (`AWS_ENDPOINT_URL`, plain HTTP
//! on loopback). The same assertions then hold on the engines a
//! multi-node deployment runs on.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pacs_core::ports::{BlobStore, Index};
use sha2::{Digest, Sha256};

/// The value of `PACS_TEST_ENGINES` that selects PostgreSQL and S3.
pub const POSTGRES_S3: &str = "postgres-s3";

/// Whether the fixtures open PostgreSQL + S3 archives.
pub fn postgres_s3() -> bool {
    match std::env::var("PACS_TEST_ENGINES") {
        Ok(v) if v == POSTGRES_S3 => true,
        Ok(v) if v.is_empty() || v == "embedded" => false,
        Ok(v) => panic!("PACS_TEST_ENGINES={v:?}: expected {POSTGRES_S3:?} or \"embedded\""),
        Err(_) => false,
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("PACS_TEST_ENGINES={POSTGRES_S3} needs {name}"))
}

/// A name no other archive of this run (any process) has: the process id
/// and a counter.
fn fresh_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `postgres://user@host:port/db` → (user, host, port).
fn pg_parts(url: &str) -> (String, String, String) {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("PACS_TEST_PG={url:?} is not a postgres:// URL"));
    let (auth, hostpart) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres").to_owned();
    let hostport = hostpart.split('/').next().unwrap_or("");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    (user, host.to_owned(), port.to_owned())
}

/// How many nodes the servers of the DIMSE and DICOMweb suites run as in
/// the engines pass (`PACS_TEST_NODES`, default 1): several share one
/// database and bucket, behind a round-robin TCP balancer
/// ([`crate::net::RoundRobin`]) for DIMSE and a router that sends each
/// request to the next node for DICOMweb.
pub fn nodes() -> usize {
    if !postgres_s3() {
        return 1;
    }
    std::env::var("PACS_TEST_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

fn database_url(db: &str) -> String {
    let (user, host, port) = pg_parts(&env("PACS_TEST_PG"));
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// A name for a fresh archive's database and bucket, unused in this run.
pub fn fresh_archive_name() -> String {
    fresh_name("t")
}

/// A new, empty PostgreSQL index in a database of its own (named `db`, or
/// a fresh name).
pub async fn postgres_index(db: Option<String>) -> Arc<dyn Index> {
    let base = env("PACS_TEST_PG");
    let (user, host, port) = pg_parts(&base);
    let db = db.unwrap_or_else(fresh_archive_name);
    let createdb = crate::postgres::bindir()
        .map(|b| b.join("createdb"))
        .unwrap_or_else(|| "createdb".into());
    let out = Command::new(&createdb)
        .args(["-h", &host, "-p", &port, "-U", &user, &db])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", createdb.display()));
    assert!(
        out.status.success(),
        "createdb {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Arc::new(
        storage::PgIndex::connect(&database_url(&db), 4)
            .await
            .unwrap(),
    )
}

/// Another node's view of the archive [`crate::fixtures::open_archive`]
/// opened on `dir`: the same database and bucket, its own pool and client.
pub async fn sibling_archive(dir: &Path, limits: pacs_core::Limits) -> pacs_core::Archive {
    sibling_named(&database_for(dir), limits).await
}

async fn sibling_named(name: &str, limits: pacs_core::Limits) -> pacs_core::Archive {
    let index = storage::PgIndex::connect(&database_url(name), 4)
        .await
        .unwrap();
    let blobs = open_bucket(name).await;
    pacs_core::Archive::new(blobs, Arc::new(index), limits)
}

/// The database and bucket (one name) of each archive the fixtures opened
/// on the engines, by [`pacs_core::Archive::identity`]. Not the archives
/// themselves: holding them would hold their connections.
static NAMES: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());

/// Notes that `archive` lives in the database and bucket named `name`.
pub(crate) fn remember(archive: &pacs_core::Archive, name: String) {
    NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(archive.identity(), name);
}

/// Another node's view of `archive`, an archive the fixtures opened on the
/// engines: the same database and bucket, its own pool, client and caches,
/// the same audit sink (every node of a deployment sends its audit trail
/// to the same collector).
pub async fn sibling_of(archive: &pacs_core::Archive) -> pacs_core::Archive {
    let name = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&archive.identity())
        .cloned()
        .expect("sibling_of: the archive was not opened by the fixtures on PostgreSQL + S3");
    let sibling = sibling_named(&name, archive.limits().clone()).await;
    sibling.set_audit(archive.audit());
    sibling
}

fn s3_port() -> u16 {
    let endpoint = env("AWS_ENDPOINT_URL");
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("AWS_ENDPOINT_URL={endpoint:?}: expected http://127.0.0.1:PORT"))
}

/// The bucket of the archive [`crate::fixtures::open_archive`] opens on
/// `dir`: a name derived from the directory, so that a test can list what
/// its archive holds ([`keys_for`]).
pub fn bucket_for(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("d{}", &hex::encode(digest)[..24])
}

/// The database of the archive [`crate::fixtures::open_archive`] opens on
/// `dir` (the same name as its bucket).
pub fn database_for(dir: &Path) -> String {
    bucket_for(dir)
}

/// Every key in the bucket of the archive opened on `dir` (staging and
/// partial uploads included), but the store's layout marker.
pub fn keys_for(dir: &Path) -> Vec<String> {
    let marker = format!("/{}", storage::LAYOUT_MARKER);
    crate::s3::keys_on(s3_port(), &bucket_for(dir))
        .into_iter()
        .filter(|k| !k.ends_with(&marker))
        .collect()
}

/// A new, empty S3 blob store in bucket `bucket` (a fresh name if `None`).
pub async fn s3_blobs(bucket: Option<String>) -> Arc<dyn BlobStore> {
    let bucket = bucket.unwrap_or_else(|| fresh_name("b"));
    crate::s3::create_bucket_on(s3_port(), &bucket);
    open_bucket(&bucket).await
}

async fn open_bucket(bucket: &str) -> Arc<dyn BlobStore> {
    let options = storage::S3Options {
        path_style: Some(true),
        ..storage::S3Options::default()
    };
    Arc::new(
        storage::ObjectBlobStore::open_with(&format!("s3://{bucket}/archive"), &options)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}
