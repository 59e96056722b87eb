//! Storage adapters of Sen PACS: the ports of `pacs-core` implemented on
//! `object_store` (blobs), sled (index, users and tokens), PostgreSQL (the
//! index, with the `postgres` feature) and a local landing log (ingest).
//!
//! Non-goals: this crate parses no more DICOM than the keys it is given, and
//! knows nothing of DIMSE or HTTP.

pub mod audit_log;
pub mod audit_syslog;
pub mod blobs;
pub mod credentials;
pub mod format;
pub mod index;
pub mod landing;
pub mod locator;
pub mod orders;
pub mod patients;
#[cfg(feature = "postgres")]
pub mod pg_index;
#[cfg(feature = "postgres")]
pub mod pg_jobs;
#[cfg(feature = "postgres")]
pub mod pg_sessions;
#[cfg(feature = "postgres")]
pub mod pg_side;
pub mod space;
pub mod wal;
pub mod workflow;

pub use audit_log::FileAuditLog;
pub use blobs::{KeyLayout, ObjectBlobStore, OpenError, S3Options, LAYOUT_MARKER};
pub use credentials::SledCredentials;
pub use format::{decode_versioned, encode_versioned, NewerFormat};
pub use index::{
    CompactReport, IndexOpenError, SledIndex, DEFAULT_CACHE_CAPACITY as DEFAULT_INDEX_CACHE_BYTES,
    DEFAULT_REOPEN_AFTER as DEFAULT_INDEX_REOPEN_AFTER,
};
pub use landing::LocalLanding;
pub use orders::SledOrders;
pub use patients::SledPatients;
#[cfg(feature = "postgres")]
pub use pg_index::{PgIndex, PgOpenError};
#[cfg(feature = "postgres")]
pub use pg_jobs::PgJobs;
#[cfg(feature = "postgres")]
pub use pg_sessions::PgSessions;
#[cfg(feature = "postgres")]
pub use pg_side::{PgCredentials, PgMpps, PgOrders, PgPatients};
pub use space::LocalSpace;
pub use workflow::SledWorkflow;
