//! DIMSE services of Sen PACS over `dicom-ul`.
//!
//! This crate is the archive's DICOM network face: the listener and its
//! association policy (who may associate, how many at once, which
//! presentation contexts and transfer syntaxes), the DIMSE message layer
//! (PDV reassembly and fragmentation, the command set codec, typed
//! commands, statuses) and the service handlers. Served today: Verification
//! (C-ECHO) and Storage (C-STORE) as SCP. Query/Retrieve contexts are
//! accepted but their requests are refused with 0122H until those services
//! land; they plug into the dispatch on Command Field in the association
//! loop.
//!
//! Layers:
//! - [`message`]: bytes in, values out, no IO (PS3.7, PS3.8 Annex E).
//! - [`negotiation`]: the A-ASSOCIATE-RQ policy, no IO (PS3.8 §7.1).
//! - [`status`]: DIMSE status codes.
//! - the association loop and the listener ([`DimseServer`], [`serve`]):
//!   tokio, thin. `dicom-ul` provides the PDU types and their codec.
//!
//! Non-goals: it never touches storage except through
//! [`pacs_core::Archive`]; it never decodes pixel data (instances are
//! stored in the transfer syntax they arrive in); it does not parse HTTP.
//! Not yet: C-FIND, C-MOVE, C-GET, C-CANCEL of pending operations, the SCU
//! side of C-MOVE, storage commitment, MWL, MPPS, TLS, user identity
//! negotiation, asynchronous operations (one request at a time).

#![forbid(unsafe_code)]

mod association;
pub mod message;
pub mod negotiation;
mod server;
pub mod status;
mod store;

pub use server::{serve, DimseConfig, DimseError, DimseServer, RemoteAe};
pub use status::{Status, StatusKind};
