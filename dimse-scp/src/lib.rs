//! DIMSE services of Sen PACS over `dicom-ul`.
//!
//! This crate is the archive's DICOM network face: the listener and its
//! association policy (who may associate, how many at once, which
//! presentation contexts and transfer syntaxes, SCP/SCU role selection),
//! the DIMSE message layer (PDV reassembly and fragmentation, the command
//! set codec, typed commands, statuses) and the service handlers.
//! Served as SCP: Verification (C-ECHO), Storage (C-STORE), and
//! Query/Retrieve in the Patient Root and Study Root models: C-FIND,
//! C-GET (sub-operations on the same association) and C-MOVE (with the
//! SCU side that opens an association to the destination), with C-CANCEL;
//! Modality Performed Procedure Step (N-CREATE, N-SET) and Storage
//! Commitment Push (N-ACTION, with the N-EVENT-REPORT on the same
//! association or, through the job queue, on a new one).
//!
//! Access policy (design invariant 5): any calling AE may C-ECHO and
//! C-STORE (unless `strict_ae`); C-FIND, C-GET and C-MOVE are answered
//! only for calling AEs listed in `remote_aes`, others get 0124H "Refused:
//! not authorized" per request (the contexts are still accepted, so the
//! refusal is explicit).
//!
//! Layers:
//! - [`message`]: bytes in, values out, no IO (PS3.7, PS3.8 Annex E).
//! - [`negotiation`]: the A-ASSOCIATE-RQ policy, no IO (PS3.8 §7.1).
//! - [`identifier`]: Q/R identifiers to queries and back, no IO (PS3.4 C).
//! - [`status`]: DIMSE status codes.
//! - one module per service: verification, store, qr, mpps,
//!   [`commitment`]; `nservice` routes DIMSE-N requests (pure);
//!   `outbound` opens the associations we request (C-MOVE, reports).
//! - the association loop, the Q/R operations and the listener
//!   ([`DimseServer`], [`serve`]): tokio, thin. `dicom-ul` provides the PDU
//!   types and their codec.
//!
//! Non-goals: it never touches storage except through
//! [`pacs_core::Archive`]; it never decodes pixel data (instances are
//! stored, and sent, in the transfer syntax they arrived in); it does not
//! parse HTTP. Not yet: transcoding for C-GET / C-MOVE when the peer does
//! not accept the stored transfer syntax (that sub-operation fails),
//! relational queries, MWL, TLS for the associations we open, certificate revocation checks, user identity
//! negotiation, asynchronous operations (one operation at a time; a request
//! arriving during a Q/R operation is refused with 0110H).

#![forbid(unsafe_code)]

mod association;
mod audit;
pub mod binding;
pub mod commitment;
pub mod ian;
pub mod identifier;
pub mod message;
mod mpps;
pub mod negotiation;
mod nservice;
mod outbound;
mod qr;
mod server;
pub mod status;
mod store;
mod tls;
mod verification;
mod worklist;

pub use server::{serve, DimseConfig, DimseError, DimseServer, RemoteAe, DEFAULT_MAX_FIND_RESULTS};
pub use status::{Status, StatusKind};
pub use tls::DimseTls;
pub use tokio_rustls::rustls;
