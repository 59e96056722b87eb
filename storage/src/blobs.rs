//! Blobs on `object_store`: local disk (fsync on), memory, and S3 behind the
//! `s3` cargo feature.
//!
//! Keys come only from [`BlobKey`], which is built from validated UIDs, so a
//! client string never becomes a path. Small objects are written with one
//! `put` (temp file, fsync, rename, directory fsync on local disk); objects
//! larger than [`BUFFER_LIMIT`] (on S3: `[s3] multipart_threshold`) switch
//! to a streaming multipart upload so memory stays bounded.
//!
//! On S3 the archive's key layout is recorded in the bucket
//! ([`LAYOUT_MARKER`]): a new archive spreads its keys over 256 prefixes
//! (the first two hex digits of the SHA-256 of the SOP Instance UID, or of
//! a staging key's id, in front of the key), so request rates spread over
//! the store's partitions; an archive written before the marker existed
//! keeps its flat keys. Local disk keeps the flat layout.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use pacs_core::ports::{BlobKey, BlobStore, BlobWriter, PortError};
use pacs_core::Uid;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// Objects up to this size are buffered and written with a single `put`.
pub const BUFFER_LIMIT: usize = 16 * 1024 * 1024;
/// Largest read when streaming a blob from local disk: smaller blobs are
/// read whole, in one positioned read.
const READ_CHUNK: u64 = 4 * 1024 * 1024;
/// Part size of streaming uploads.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Why a storage URL cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported storage URL {0:?}: use file:///path, memory:// or s3://bucket/prefix")]
    Unsupported(String),
    #[error("s3:// storage needs the binary built with `--features s3`")]
    S3NotCompiled,
    #[error("cannot open storage at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the S3 endpoint {endpoint} presented a TLS certificate this machine does not trust \
         ({detail}): give the CA certificate that issued it, as a PEM file, in [s3] ca_file \
         or AWS_CA_BUNDLE (it is trusted besides the system's roots)"
    )]
    UntrustedEndpoint { endpoint: String, detail: String },
    #[error(
        "the CA certificates for the S3 endpoint cannot be used: {file}: {reason}. \
         [s3] ca_file (or AWS_CA_BUNDLE) must name a readable PEM file of one or more \
         certificates"
    )]
    CaFile { file: String, reason: String },
    #[error(
        "S3 bucket {bucket:?} at {endpoint} cannot be used: {reason}. The bucket must exist \
         (pacs does not create it) and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY \
         or [s3] access_key_id / secret_access_key) must allow listing, reading and writing it"
    )]
    Bucket {
        bucket: String,
        endpoint: String,
        /// What the store answered, in short.
        reason: String,
    },
    #[error("the key layout record {LAYOUT_MARKER} in {url} is unreadable: {reason}")]
    Layout { url: String, reason: String },
    #[error(transparent)]
    NewerLayout(#[from] crate::format::NewerFormat),
}

/// The object at the root of an S3 archive (under its prefix) recording its
/// key layout: JSON `{"format": 1, "layout": "spread" | "flat"}`.
pub const LAYOUT_MARKER: &str = "pacs-layout.json";
/// The format version of [`LAYOUT_MARKER`] this build writes and reads.
pub const LAYOUT_FORMAT: u32 = 1;

/// How [`BlobKey`]s map to object paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// The key is the path (local disk; S3 archives from before the marker).
    Flat,
    /// Two hex digits of a SHA-256 in front of the key (new S3 archives).
    Spread,
}

impl KeyLayout {
    fn name(self) -> &'static str {
        match self {
            KeyLayout::Flat => "flat",
            KeyLayout::Spread => "spread",
        }
    }
}

/// Options of an `s3://` store: the `[s3]` table of the configuration.
/// Unset fields fall back to the standard AWS environment variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, ...).
#[derive(Clone)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), what most self-hosted
    /// stores want; `false` is virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Objects larger than this are sent as multipart uploads.
    pub multipart_threshold: usize,
    /// Retries of a failed request (with exponential back-off).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: std::time::Duration,
    /// New keys are created with `If-None-Match: *` (turn off for stores
    /// that refuse the header).
    pub conditional_put: bool,
    /// Server-side encryption asked of the store for every object written:
    /// `AES256` (SSE-S3), `aws:kms` (SSE-KMS) or `aws:kms:dsse`; unset,
    /// `AWS_SERVER_SIDE_ENCRYPTION` (else the bucket's default applies).
    pub server_side_encryption: Option<String>,
    /// The KMS key of `aws:kms` / `aws:kms:dsse` (else the account's
    /// default key); unset, `AWS_SSE_KMS_KEY_ID`.
    pub sse_kms_key_id: Option<String>,
    /// S3 Bucket Keys for SSE-KMS (fewer KMS requests); unset,
    /// `AWS_SSE_BUCKET_KEY_ENABLED`.
    pub sse_bucket_key: Option<bool>,
    /// A PEM file of CA certificates trusted for an `https://` endpoint,
    /// besides the system's (a store behind a hospital's own CA); unset,
    /// `AWS_CA_BUNDLE` names it.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            path_style: None,
            allow_http: None,
            access_key_id: None,
            secret_access_key: None,
            multipart_threshold: BUFFER_LIMIT,
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(30),
            conditional_put: true,
            server_side_encryption: None,
            sse_kms_key_id: None,
            sse_bucket_key: None,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("multipart_threshold", &self.multipart_threshold)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("conditional_put", &self.conditional_put)
            .field("server_side_encryption", &self.server_side_encryption)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .field("sse_bucket_key", &self.sse_bucket_key)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What an S3 store is, for its startup check and messages.
struct S3Target {
    bucket: String,
    endpoint: String,
}

impl S3Target {
    /// Why the bucket cannot be used, from the store's error: an endpoint
    /// whose TLS certificate is not trusted, else the bucket's problem.
    fn error(&self, e: &object_store::Error) -> OpenError {
        match untrusted_certificate(e) {
            Some(detail) => OpenError::UntrustedEndpoint {
                endpoint: self.endpoint.clone(),
                detail,
            },
            None => OpenError::Bucket {
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
                reason: bucket_reason(e),
            },
        }
    }
}

/// The TLS library's word when `e` comes of a server certificate that was
/// not accepted (an unknown issuer, a wrong name, an expired one), found
/// down the error's sources.
fn untrusted_certificate(e: &object_store::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if let Some((_, detail)) = text.split_once("invalid peer certificate: ") {
            return Some(format!("invalid peer certificate: {}", detail.trim()));
        }
        next = err.source();
    }
    None
}

/// Counters of one store, reported by `/healthz`.
#[derive(Default)]
struct Counters {
    multipart_uploads: AtomicU64,
    create_conflicts: AtomicU64,
}

/// A [`BlobStore`] over any `object_store` backend.
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// The root directory of a local store: after a delete its parent
    /// directory is fsynced, so an acknowledged deletion cannot be undone
    /// by a crash (object_store syncs writes, not unlinks).
    local_root: Option<std::path::PathBuf>,
    layout: KeyLayout,
    multipart_threshold: usize,
    /// Whether [`BlobStore::writer_new`] creates conditionally.
    conditional: bool,
    s3: Option<S3Target>,
    counters: Arc<Counters>,
}

impl ObjectBlobStore {
    fn with_store(store: Arc<dyn ObjectStore>, description: String) -> Self {
        ObjectBlobStore {
            store,
            description,
            local_root: None,
            layout: KeyLayout::Flat,
            multipart_threshold: BUFFER_LIMIT,
            conditional: false,
            s3: None,
            counters: Arc::default(),
        }
    }

    /// Opens `file:///abs/path`, `memory://` or (feature `s3`)
    /// `s3://bucket/prefix` with the options taken from the environment.
    pub fn open(url: &str) -> Result<Self, OpenError> {
        Self::open_with(url, &S3Options::default())
    }

    /// [`ObjectBlobStore::open`] with the `[s3]` options. An S3 store must
    /// then be checked with [`ObjectBlobStore::connect`].
    pub fn open_with(url: &str, s3: &S3Options) -> Result<Self, OpenError> {
        if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(path)
                .map_err(|source| OpenError::Open {
                    url: url.to_owned(),
                    source,
                })?
                .with_fsync(true);
            let mut store = Self::with_store(Arc::new(fs), url.to_owned());
            store.local_root = Some(std::path::PathBuf::from(path));
            return Ok(store);
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Self::with_store(
                Arc::new(InMemory::new()),
                "memory://".to_owned(),
            ));
        }
        if url.starts_with("s3://") {
            return open_s3(url, s3);
        }
        Err(OpenError::Unsupported(url.to_owned()))
    }
}

impl ObjectBlobStore {
    /// The keys under `prefix` (all without one) of the shapes the archive
    /// writes.
    async fn list_under(&self, prefix: Option<&Path>) -> Result<Vec<BlobKey>, PortError> {
        let metas: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(storage_err)?;
        let layout = self.layout;
        Ok(metas
            .into_iter()
            .filter_map(|m| parse_path(layout, m.location.as_ref()))
            .collect())
    }

    /// The object path of a key under this store's layout.
    fn path(&self, key: &BlobKey) -> Path {
        layout_path(self.layout, key)
    }

    /// The key layout in use.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// On S3, checks that the bucket can be used and reads the archive's
    /// key layout from [`LAYOUT_MARKER`], writing it first in an archive
    /// that has none (spread when the bucket prefix is empty, flat when it
    /// holds objects written before the marker existed). Other stores are
    /// returned as they are.
    pub async fn connect(mut self) -> Result<Self, OpenError> {
        let Some(target) = &self.s3 else {
            return Ok(self);
        };
        let bucket_err = |e: object_store::Error| target.error(&e);
        let marker = Path::from(LAYOUT_MARKER);
        let layout = match self.read_marker(&marker).await {
            Ok(Some(layout)) => layout,
            Ok(None) => {
                // No marker: a new archive, one from before the marker, or
                // a bucket that does not exist; listing tells them apart.
                let listed = self
                    .store
                    .list_with_delimiter(None)
                    .await
                    .map_err(bucket_err)?;
                let layout = if listed.objects.is_empty() && listed.common_prefixes.is_empty() {
                    KeyLayout::Spread
                } else {
                    KeyLayout::Flat
                };
                let body = serde_json::json!({ "format": LAYOUT_FORMAT, "layout": layout.name() })
                    .to_string();
                let mode = if self.conditional {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                };
                match self
                    .store
                    .put_opts(&marker, PutPayload::from(body), PutOptions::from(mode))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(store = %self.description, layout = layout.name(), "recorded the archive's key layout");
                        layout
                    }
                    // Another node wrote it first: its choice holds.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        match self.read_marker(&marker).await {
                            Ok(found) => found.unwrap_or(layout),
                            Err(e) => return Err(self.marker_error(e)),
                        }
                    }
                    Err(e) => return Err(bucket_err(e)),
                }
            }
            Err(e) => return Err(self.marker_error(e)),
        };
        self.layout = layout;
        Ok(self)
    }

    fn marker_error(&self, e: MarkerError) -> OpenError {
        match e {
            MarkerError::Store(source) => match &self.s3 {
                Some(target) => target.error(&source),
                None => OpenError::Bucket {
                    bucket: String::new(),
                    endpoint: String::new(),
                    reason: bucket_reason(&source),
                },
            },
            MarkerError::Bad(reason) => OpenError::Layout {
                url: self.description.clone(),
                reason,
            },
            MarkerError::Newer(n) => OpenError::NewerLayout(n),
        }
    }

    async fn read_marker(&self, marker: &Path) -> Result<Option<KeyLayout>, MarkerError> {
        let bytes = match self.store.get(marker).await {
            Ok(r) => r.bytes().await.map_err(MarkerError::Store)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(MarkerError::Store(e)),
        };
        #[derive(serde::Deserialize)]
        struct Marker {
            format: u32,
            layout: String,
        }
        let m: Marker =
            serde_json::from_slice(&bytes).map_err(|e| MarkerError::Bad(e.to_string()))?;
        if m.format > LAYOUT_FORMAT {
            return Err(MarkerError::Newer(crate::format::NewerFormat {
                what: format!(
                    "the key layout record {LAYOUT_MARKER} in {}",
                    self.description
                ),
                found: m.format,
                supported: LAYOUT_FORMAT,
            }));
        }
        match m.layout.as_str() {
            "spread" => Ok(Some(KeyLayout::Spread)),
            "flat" => Ok(Some(KeyLayout::Flat)),
            other => Err(MarkerError::Bad(format!("unknown layout {other:?}"))),
        }
    }
}

/// A short account of why a bucket cannot be used: the S3 error code when
/// the answer names one, else the first line of the error.
fn bucket_reason(e: &object_store::Error) -> String {
    let text = e.to_string();
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_owned());
    match code.as_deref() {
        Some("NoSuchBucket") => "the bucket does not exist (NoSuchBucket)".to_owned(),
        // NotSignedUp: what some stores (s3s) answer for an unknown key.
        Some(
            c @ ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "NotSignedUp"),
        ) => {
            format!("access denied ({c}): check the credentials")
        }
        Some(c) => format!("the store answered {c}"),
        None => {
            let first = text.lines().next().unwrap_or_default();
            first.chars().take(300).collect()
        }
    }
}

enum MarkerError {
    Store(object_store::Error),
    Bad(String),
    Newer(crate::format::NewerFormat),
}

/// The part of a key its spread prefix is computed from: the SOP Instance
/// UID (instances and history, so one instance's versions list under one
/// prefix) or a staging key's id.
fn spread_source(key: &str) -> &str {
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("history"), Some(sop), Some(_), None) => sop,
        (Some("staging"), Some(name), None, None) => name.trim_end_matches(".dcm"),
        (Some(_), Some(_), Some(name), None) => name.trim_end_matches(".dcm"),
        _ => key,
    }
}

/// Two lowercase hex digits: the first byte of SHA-256 of `source`.
fn spread_prefix(source: &str) -> String {
    hex::encode(&Sha256::digest(source.as_bytes())[..1])
}

fn layout_path(layout: KeyLayout, key: &BlobKey) -> Path {
    match layout {
        KeyLayout::Flat => Path::from(key.as_str()),
        KeyLayout::Spread => Path::from(format!(
            "{}/{}",
            spread_prefix(spread_source(key.as_str())),
            key.as_str()
        )),
    }
}

/// The key stored at an object path, if it has a shape the archive writes.
fn parse_path(layout: KeyLayout, path: &str) -> Option<BlobKey> {
    match layout {
        KeyLayout::Flat => BlobKey::parse(path),
        KeyLayout::Spread => {
            let (prefix, rest) = path.split_once('/')?;
            let key = BlobKey::parse(rest)?;
            (prefix == spread_prefix(spread_source(rest))).then_some(key)
        }
    }
}

#[cfg(feature = "s3")]
fn open_s3(url: &str, opts: &S3Options) -> Result<ObjectBlobStore, OpenError> {
    use object_store::aws::{
        AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut, S3CopyIfNotExists,
    };
    use object_store::{BackoffConfig, RetryConfig};
    let rest = url.trim_start_matches("s3://");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(v) = &opts.endpoint {
        builder = builder.with_endpoint(v);
    }
    if let Some(v) = &opts.region {
        builder = builder.with_region(v);
    }
    if let Some(v) = opts.path_style {
        builder = builder.with_virtual_hosted_style_request(!v);
    }
    if let Some(v) = opts.allow_http {
        builder = builder.with_allow_http(v);
    }
    if let Some(v) = &opts.access_key_id {
        builder = builder.with_access_key_id(v);
    }
    if let Some(v) = &opts.secret_access_key {
        builder = builder.with_secret_access_key(v);
    }
    // Set by name: object_store does not export its encryption key type.
    for (name, value) in [
        (
            "aws_server_side_encryption",
            opts.server_side_encryption.clone(),
        ),
        ("aws_sse_kms_key_id", opts.sse_kms_key_id.clone()),
        (
            "aws_sse_bucket_key_enabled",
            opts.sse_bucket_key.map(|v| v.to_string()),
        ),
    ] {
        if let Some(value) = value {
            let key: AmazonS3ConfigKey = name.parse().map_err(|source| OpenError::Open {
                url: url.to_owned(),
                source,
            })?;
            builder = builder.with_config(key, value);
        }
    }
    let ca_file = opts.ca_file.clone().or_else(|| {
        std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    if let Some(file) = ca_file {
        builder = with_ca_file(builder, &file)?;
    }
    builder = builder
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: opts.max_retries,
            retry_timeout: opts.retry_timeout,
        })
        .with_conditional_put(if opts.conditional_put {
            S3ConditionalPut::ETagMatch
        } else {
            S3ConditionalPut::Disabled
        })
        // A multipart upload of a new key completes through a copy that
        // is itself conditional (UploadPartCopy, then
        // CompleteMultipartUpload with If-None-Match).
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| {
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".to_owned());
            format!("the AWS endpoint of region {region}")
        });
    let s3 = builder.build().map_err(|source| OpenError::Open {
        url: url.to_owned(),
        source,
    })?;
    let prefix = prefix.trim_end_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    };
    let mut out = ObjectBlobStore::with_store(store, format!("s3://{bucket}/{prefix}"));
    out.multipart_threshold = opts.multipart_threshold;
    out.conditional = opts.conditional_put;
    out.s3 = Some(S3Target {
        bucket: bucket.to_owned(),
        endpoint,
    });
    Ok(out)
}

/// `builder` trusting the CA certificates in the PEM file `file` besides
/// the system's. The builder's client options (those the AWS variables
/// set, `allow_http` among them) are carried over: object_store takes root
/// certificates only with a whole `ClientOptions`.
#[cfg(feature = "s3")]
fn with_ca_file(
    builder: object_store::aws::AmazonS3Builder,
    file: &std::path::Path,
) -> Result<object_store::aws::AmazonS3Builder, OpenError> {
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::{Certificate, ClientConfigKey, ClientOptions};
    let fail = |reason: String| OpenError::CaFile {
        file: file.display().to_string(),
        reason,
    };
    let pem = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(fail("it holds no PEM certificate".to_owned()));
    }
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    let mut client = ClientOptions::new();
    for key in [
        ClientConfigKey::AllowHttp,
        ClientConfigKey::AllowInvalidCertificates,
        ClientConfigKey::NoSystemCertificates,
        ClientConfigKey::ConnectTimeout,
        ClientConfigKey::DefaultContentType,
        ClientConfigKey::Http1Only,
        ClientConfigKey::Http2KeepAliveInterval,
        ClientConfigKey::Http2KeepAliveTimeout,
        ClientConfigKey::Http2KeepAliveWhileIdle,
        ClientConfigKey::Http2MaxFrameSize,
        ClientConfigKey::Http2Only,
        ClientConfigKey::PoolIdleTimeout,
        ClientConfigKey::PoolMaxIdlePerHost,
        ClientConfigKey::ProxyUrl,
        ClientConfigKey::ProxyCaCertificate,
        ClientConfigKey::ProxyExcludes,
        ClientConfigKey::RandomizeAddresses,
        ClientConfigKey::ReadTimeout,
        ClientConfigKey::Timeout,
        ClientConfigKey::UserAgent,
    ] {
        if let Some(v) = builder.get_config_value(&AmazonS3ConfigKey::Client(key)) {
            client = client.with_config(key, v);
        }
    }
    for cert in certs {
        client = client.with_root_certificate(cert);
    }
    Ok(builder.with_client_options(client))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_url: &str, _opts: &S3Options) -> Result<ObjectBlobStore, OpenError> {
    Err(OpenError::S3NotCompiled)
}

fn storage_err(e: object_store::Error) -> PortError {
    match e {
        object_store::Error::NotFound { path, .. } => PortError::NotFound(path),
        object_store::Error::AlreadyExists { path, .. } => PortError::AlreadyExists(path),
        other => PortError::Storage(other.to_string()),
    }
}

enum WriterState {
    Buffering(Vec<Bytes>, usize),
    Streaming(WriteMultipart),
}

struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: WriterState,
    threshold: usize,
    /// Create only (`If-None-Match: *`): a buffered object is put with
    /// [`PutMode::Create`]; a multipart one is uploaded to `staging` and
    /// then copied to `path` with copy-if-not-exists.
    create: bool,
    staging: Option<Path>,
    layout: KeyLayout,
    counters: Arc<Counters>,
}

impl ObjectWriter {
    /// Where a multipart upload goes: the key itself, or a fresh staging
    /// key when the create must be conditional.
    fn upload_path(&mut self) -> Path {
        if !self.create {
            return self.path.clone();
        }
        let staging = layout_path(
            self.layout,
            &BlobKey::staging(uuid::Uuid::new_v4().as_u128()),
        );
        self.staging = Some(staging.clone());
        staging
    }
}

#[async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), PortError> {
        match &mut self.state {
            WriterState::Buffering(parts, len) => {
                *len += chunk.len();
                parts.push(chunk);
                if *len > self.threshold {
                    let parts = std::mem::take(parts);
                    let target = self.upload_path();
                    let upload = self
                        .store
                        .put_multipart(&target)
                        .await
                        .map_err(storage_err)?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    for p in parts {
                        w.put(p);
                    }
                    self.state = WriterState::Streaming(w);
                }
            }
            WriterState::Streaming(w) => {
                w.wait_for_capacity(2).await.map_err(storage_err)?;
                w.put(chunk);
            }
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), PortError> {
        let result = match self.state {
            WriterState::Buffering(parts, _) => {
                let payload: PutPayload = parts.into_iter().collect();
                let mode = if self.create {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                };
                self.store
                    .put_opts(&self.path, payload, PutOptions::from(mode))
                    .await
                    .map(|_| ())
            }
            WriterState::Streaming(w) => {
                let done = w.finish().await.map(|_| ());
                match (&self.staging, done) {
                    (Some(staging), Ok(())) => {
                        let copied = self.store.copy_if_not_exists(staging, &self.path).await;
                        if let Err(e) = self.store.delete(staging).await {
                            // recovery removes staging keys left behind
                            tracing::warn!(error = %e, key = %staging, "removing a staging upload failed");
                        }
                        copied
                    }
                    (_, done) => done,
                }
                .inspect(|()| {
                    self.counters.multipart_uploads.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = %self.path, "stored by multipart upload");
                })
            }
        };
        if let Err(object_store::Error::AlreadyExists { .. }) = &result {
            self.counters
                .create_conflicts
                .fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(storage_err)
    }

    async fn abort(self: Box<Self>) {
        if let WriterState::Streaming(w) = self.state {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "aborting an upload failed");
            }
        }
    }
}

/// `len` bytes of a local file from `start`, as a stream of chunks of up to
/// [`READ_CHUNK`] bytes. Each chunk is one read on the blocking
/// pool straight into a buffer of its exact size: one copy out of the page
/// cache, one allocation, and one blocking task per chunk. Chunks are read
/// one after the other, so the shared file offset is never raced.
fn local_file_stream(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = Result<Bytes, PortError>> + Send + 'static {
    let file = Arc::new(file);
    let end = start.saturating_add(len);
    futures::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let n = (end - pos).min(READ_CHUNK);
            let chunk = tokio::task::spawn_blocking(move || read_at(&file, pos, n))
                .await
                .map_err(|e| PortError::Storage(format!("reading blob: {e}")))?
                .map_err(|e| PortError::Storage(format!("reading blob: {e}")))?;
            Ok(Some((chunk, pos + n)))
        }
    })
}

/// Reads exactly `n` bytes at `pos` (`n` is at most [`READ_CHUNK`]) into a
/// buffer of that capacity, without zeroing it first.
impl ObjectBlobStore {
    fn object_writer(&self, key: &BlobKey, create: bool) -> Box<dyn BlobWriter> {
        Box::new(ObjectWriter {
            store: self.store.clone(),
            path: self.path(key),
            state: WriterState::Buffering(Vec::new(), 0),
            threshold: self.multipart_threshold,
            create,
            staging: None,
            layout: self.layout,
            counters: self.counters.clone(),
        })
    }
}

fn read_at(file: &std::fs::File, pos: u64, n: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let cap = usize::try_from(n).map_err(std::io::Error::other)?;
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(cap);
    f.take(n).read_to_end(&mut buf)?;
    if buf.len() != cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its listed size",
        ));
    }
    Ok(Bytes::from(buf))
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn writer(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError> {
        Ok(self.object_writer(key, false))
    }

    async fn writer_new(&self, key: &BlobKey) -> Result<Box<dyn BlobWriter>, PortError> {
        Ok(self.object_writer(key, self.conditional))
    }

    async fn check(&self) -> Result<(), PortError> {
        if self.s3.is_some() {
            // The marker exists in every connected S3 archive: reading its
            // metadata proves the bucket, the credentials and the network.
            self.store
                .head(&Path::from(LAYOUT_MARKER))
                .await
                .map_err(storage_err)?;
            return Ok(());
        }
        match self.size(&BlobKey::staging(0)).await {
            Ok(_) | Err(PortError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "multipart_uploads",
                self.counters.multipart_uploads.load(Ordering::Relaxed),
            ),
            (
                "create_conflicts",
                self.counters.create_conflicts.load(Ordering::Relaxed),
            ),
        ]
    }

    async fn get(
        &self,
        key: &BlobKey,
    ) -> Result<BoxStream<'static, Result<Bytes, PortError>>, PortError> {
        let result = self.store.get(&self.path(key)).await.map_err(storage_err)?;
        let len = result.range.end - result.range.start;
        match result.payload {
            // object_store streams local files in 8 KiB reads through
            // tokio's file buffer, which caps a retrieve at about 200 MB/s;
            // read them with positioned reads of whole chunks instead.
            GetResultPayload::File(file, _) => {
                Ok(local_file_stream(file, result.range.start, len).boxed())
            }
            GetResultPayload::Stream(s) => Ok(s.map_err(storage_err).boxed()),
        }
    }

    async fn get_range(
        &self,
        key: &BlobKey,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, PortError> {
        self.store
            .get_range(&self.path(key), range)
            .await
            .map_err(storage_err)
    }

    async fn size(&self, key: &BlobKey) -> Result<u64, PortError> {
        Ok(self
            .store
            .head(&self.path(key))
            .await
            .map_err(storage_err)?
            .size)
    }

    async fn rename(&self, from: &BlobKey, to: &BlobKey) -> Result<(), PortError> {
        self.store
            .rename(&self.path(from), &self.path(to))
            .await
            .map_err(storage_err)
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), PortError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage_err(e)),
        }
        if let Some(root) = &self.local_root {
            // The key is `<study>/<series>/<sop>.dcm`, `staging/<hex>.dcm`
            // or `history/<sop>/<n>.<ext>`, built from validated UIDs:
            // joining it stays under the root.
            let file = root.join(key.as_str());
            if let Some(dir) = file.parent().map(std::path::Path::to_path_buf) {
                tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
                    Ok(d) => d.sync_all(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                })
                .await
                .map_err(|e| PortError::Storage(format!("syncing after delete: {e}")))?
                .map_err(|e| PortError::Storage(format!("syncing after delete: {e}")))?;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<BlobKey>, PortError> {
        self.list_under(None).await
    }

    fn list_stream(&self) -> BoxStream<'_, Result<BlobKey, PortError>> {
        let layout = self.layout;
        self.store
            .list(None)
            .map_err(storage_err)
            .try_filter_map(move |m| {
                futures::future::ready(Ok(parse_path(layout, m.location.as_ref())))
            })
            .boxed()
    }

    async fn list_history(&self, sop: &Uid) -> Result<Vec<BlobKey>, PortError> {
        // The prefix is built from a validated UID.
        let prefix = BlobKey::history_prefix(sop);
        let prefix = match self.layout {
            KeyLayout::Flat => Path::from(prefix.trim_end_matches('/')),
            KeyLayout::Spread => Path::from(format!(
                "{}/{}",
                spread_prefix(sop.as_str()),
                prefix.trim_end_matches('/')
            )),
        };
        self.list_under(Some(&prefix)).await
    }

    async fn list_staging(&self) -> Result<Vec<BlobKey>, PortError> {
        match self.layout {
            KeyLayout::Flat => self.list_under(Some(&Path::from("staging"))).await,
            // Staging keys spread by their id: one listing per prefix.
            KeyLayout::Spread => {
                let mut out = Vec::new();
                for p in 0..=255u8 {
                    let prefix = Path::from(format!("{p:02x}/staging"));
                    out.extend(self.list_under(Some(&prefix)).await?);
                }
                Ok(out)
            }
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
