//! Storage adapters of Sen PACS: the ports of `pacs-core` implemented on
//! `object_store` (blobs) and sled (index).
//!
//! Non-goals: this crate parses no more DICOM than the keys it is given, and
//! knows nothing of DIMSE or HTTP.

pub mod blobs;
pub mod index;
pub mod wal;

pub use blobs::{ObjectBlobStore, OpenError};
pub use index::{IndexOpenError, SledIndex};
