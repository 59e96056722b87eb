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
    /// Frames one WADO-RS frames request may name (after duplicates are
    /// removed).
    pub max_frames_per_request: usize,
    /// Largest total of frame bytes one frames (or encapsulated bulk data)
    /// response holds; larger lists are refused with 413.
    pub max_frames_response_bytes: u64,
    /// Largest bulk data value sent in one response, whole or as one byte
    /// range (413 beyond; ask for a smaller range).
    pub max_bulk_value_bytes: u64,
    /// Largest `application/dicom+json` part of a STOW-RS metadata and bulk
    /// data request (413 beyond).
    pub max_stow_metadata_bytes: u64,
    /// Largest total of the parts of one STOW-RS metadata and bulk data
    /// request, all held in memory until the data sets are built (413
    /// beyond).
    pub max_stow_metadata_form_bytes: u64,
    /// Largest inflated header of a Deflated Explicit VR Little Endian
    /// STOW-RS part (a deflate bomb is refused with 0xA700 past it).
    pub max_inflated_header_bytes: u64,
    /// Bytes of STOW-RS parts held in memory at once, across all requests;
    /// a request waits for room, and a part that can never fit is 413.
    pub stow_bytes_in_flight: u64,
    /// HTTP connections open at once; past it a new connection gets a 503
    /// with `Retry-After` and is closed.
    pub max_http_connections: usize,
    /// Time a client has to send a complete request head (also how long an
    /// idle keep-alive connection stays open, and how long a new connection
    /// may stay silent).
    pub http_header_timeout: Duration,
    /// Longest wait for the next piece of a request body; a body that
    /// stalls longer fails the request.
    pub http_body_idle_timeout: Duration,
    /// Requests one HTTP/2 connection may have open at once.
    pub max_http2_streams: u32,
    /// Longest a client may leave its answer unread (no byte taken) before
    /// the connection is closed.
    pub http_send_idle_timeout: Duration,
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
    /// Largest DICOM JSON (the instance metadata the index keeps) of one
    /// object; larger objects are refused at ingest. The index entry holds
    /// this JSON plus copies of some of its values, so the default keeps
    /// the entry under [`MAX_INDEX_ENTRY_BYTES`].
    pub max_metadata_bytes: u64,
    /// Longest an HTTP request's handler may take to produce its answer's
    /// head, counted from the request's last body byte (or its start when
    /// it has none); then 503. A response body being sent is not counted
    /// (`http_send_idle_timeout` guards it), nor a request body arriving
    /// (`http_body_idle_timeout`).
    pub http_handler_timeout: Duration,
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
            max_frames_per_request: 10_000,
            max_frames_response_bytes: 512 * 1024 * 1024,
            max_bulk_value_bytes: 512 * 1024 * 1024,
            max_stow_metadata_bytes: 64 * 1024 * 1024,
            max_stow_metadata_form_bytes: 1024 * 1024 * 1024,
            max_inflated_header_bytes: 64 * 1024 * 1024,
            stow_bytes_in_flight: 512 * 1024 * 1024,
            max_http_connections: 512,
            http_header_timeout: Duration::from_secs(20),
            http_body_idle_timeout: Duration::from_secs(60),
            max_http2_streams: 64,
            http_send_idle_timeout: Duration::from_secs(60),
            render_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 4),
            pixel_memory_budget: 2 * 1024 * 1024 * 1024,
            pixel_queue_wait: Duration::from_secs(30),
            max_decoded_pixel_bytes: 1024 * 1024 * 1024,
            max_inflated_object_bytes: 256 * 1024 * 1024,
            max_metadata_bytes: 64 * 1024 * 1024,
            http_handler_timeout: Duration::from_secs(300),
        }
    }
}
