//! The one place where every size and time limit of the archive lives.
//!
//! Every allocation sized by the wire is checked against a field here. The
//! defaults are conservative and documented in CONFORMANCE.md; each has a test.

use std::time::Duration;

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
    /// Pixel work (decoding, rendering, converting between transfer
    /// syntaxes) running at once, DIMSE and HTTP together.
    pub render_concurrency: usize,
    /// Memory pixel work may hold at once, in bytes: each job reserves an
    /// estimate from the object's size and decoded size before it starts,
    /// and waits while the budget is spent. A job that could never fit is
    /// refused.
    pub pixel_memory_budget: u64,
    /// Longest wait for a pixel-work slot and memory; then the request is
    /// refused as busy (HTTP 503, DIMSE out of resources).
    pub pixel_queue_wait: Duration,
    /// Largest decoded pixel data of one object (Rows × Columns × Samples
    /// per Pixel × Number of Frames × bytes per sample), checked from the
    /// header before anything is decoded.
    pub max_decoded_pixel_bytes: u64,
    /// Largest inflated data set of a Deflated Explicit VR Little Endian
    /// object taken into pixel work (a deflate bomb stops there).
    pub max_inflated_object_bytes: u64,
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
            render_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 4),
            pixel_memory_budget: 2 * 1024 * 1024 * 1024,
            pixel_queue_wait: Duration::from_secs(30),
            max_decoded_pixel_bytes: 1024 * 1024 * 1024,
            max_inflated_object_bytes: 256 * 1024 * 1024,
        }
    }
}
