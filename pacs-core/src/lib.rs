//! The domain of Sen PACS: what an archive is, independent of how bytes reach
//! it or where they are kept.
//!
//! It owns the validated [`Uid`], the minimal Part 10 reader that extracts the
//! attributes the archive indexes ([`dicom`]), the patient / study / series /
//! instance records ([`records`]), the query model with the PS3.4 C.2.2.2
//! matching rules ([`matching`], [`query`]), the [`Archive`] service and the
//! ports it drives ([`BlobStore`], [`Index`]), the [`Limits`] and typed errors.
//!
//! Non-goals: it opens no socket and no file, and knows nothing of HTTP or
//! PDUs. Decoding pixel data is not its business either.

pub mod access;
pub mod archive;
pub mod audit;
pub mod audit_xml;
pub mod availability;
pub mod client;
pub mod credentials;
pub mod dicom;
pub mod jobs;
pub mod json;
pub mod limits;
pub mod matching;
pub mod mpps;
pub mod orders;
pub mod patients;
pub mod ports;
pub mod query;
pub mod records;
pub mod series_metadata;
pub mod sessions;
pub mod uid;

pub use access::{Permission, Principal, Role};
pub use archive::{
    Archive, ArchiveError, InstanceCheck, PatientChangeOutcome, PatientChangeRequest, StoreError,
    StoreOutcome, StoreStatus, Workflow,
};
pub use audit::{AuditEvent, AuditSink};
pub use client::{ClientAddr, ClientScheme};
pub use credentials::Credentials;
pub use limits::Limits;
pub use ports::{BlobKey, BlobStore, Index};
pub use uid::{Uid, UidError};
