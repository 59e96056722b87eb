//! The one place where every size and time limit of the archive lives.
//!
//! Every allocation sized by the wire is checked against a field here. The
//! defaults are conservative and documented in CONFORMANCE.md; each has a test.

use std::time::Duration;

/// Largest index entry (an instance's records with its DICOM JSON) the
/// storage adapters persist in one record: the index log and the landing
/// log refuse longer ones when writing and when replaying. Fixed by the
/// on-disk formats, so not configurable; [`Limits::max_metadata_bytes`]
/// keeps ingest well below it.
pub const MAX_INDEX_ENTRY_BYTES: u64 = 256 * 1024 * 1024;

/// Limits enforced wherever input sizes an allocation or holds a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single element value we will hold in memory while parsing a
    /// header (everything before Pixel Data). Larger values are refused.
    pub max_element_len: u64,
    /// Largest part of an object held in memory for indexing: the bytes before
    /// Pixel Data, or the whole object when it has none.
    pub max_header_bytes: u64,
    /// Deepest nesting of sequences accepted.
    pub max_sequence_depth: usize,
    /// Largest object accepted by `store` (all ingest paths).
    pub max_object_bytes: u64,
    /// Largest number of elements in one data set (including nested items).
    pub max_elements: usize,
    /// Largest PDU we accept on a DIMSE association.
    pub max_pdu_len: u32,
    /// Associations open at once, and per peer IP.
    pub max_associations: usize,
    pub max_associations_per_peer: usize,
    /// Largest HTTP request body.
    pub max_http_body: u64,
    /// Idle time-out on a network peer.
    pub idle_timeout: Duration,
    /// ARTIM time-out (PS3.8 §9.1.5): how long a new DIMSE connection has
    /// to deliver its whole A-ASSOCIATE-RQ before it is closed.
    pub artim_timeout: Duration,
    /// DIMSE connections accepted but not associated yet (reading their
    /// A-ASSOCIATE-RQ, or being refused), apart from the association caps.
    /// Past it a new connection is closed unanswered.
    pub max_pending_connections: usize,
    /// Largest DICOM JSON (the instance metadata the index keeps) of one
    /// object; larger objects are refused at ingest. The index entry holds
    /// this JSON plus copies of some of its values, so the default keeps
    /// the entry under [`MAX_INDEX_ENTRY_BYTES`].
    pub max_metadata_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_element_len: 64 * 1024 * 1024,
            max_header_bytes: 256 * 1024 * 1024,
            max_sequence_depth: 32,
            max_object_bytes: 4 * 1024 * 1024 * 1024,
            max_elements: 1_000_000,
            max_pdu_len: 256 * 1024,
            max_associations: 64,
            max_associations_per_peer: 16,
            max_http_body: 4 * 1024 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            artim_timeout: Duration::from_secs(10),
            max_pending_connections: 256,
            max_metadata_bytes: 64 * 1024 * 1024,
        }
    }
}
