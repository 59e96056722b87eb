//! HL7 v2 for Sen PACS: orders in from the HIS over MLLP, "images
//! available" back to it.
//!
//! - [`message`]: ER7 parsing (segments, fields, repetitions, components,
//!   subcomponents, escape sequences) and MSH-18 character sets, no IO;
//! - [`mllp`]: MLLP framing, no IO;
//! - [`ack`]: ACK messages (AA, AE, AR) with ERR;
//! - [`orders`]: ORM^O01 and OMI^O23 to `pacs_core::orders::OrderRecord`;
//! - [`adt`]: ADT^A08 / A31 (update) and A40 (merge) to patient changes;
//! - [`listener`]: the tokio MLLP server that applies orders and patient
//!   changes to the archive and answers each message;
//! - [`notify`]: ORU^R01 "images available" to the HIS (a job of the
//!   durable queue), waiting for its ACK.
//!
//! Non-goals (yet): other ADT events (answered AR); ORM status messages back to the HIS; enhanced
//! acknowledgement mode; character sets other than ASCII, ISO 8859-1 and
//! UTF-8.

pub mod ack;
pub mod adt;
pub mod listener;
pub mod message;
pub mod mllp;
pub mod notify;
pub mod orders;

pub use listener::{serve, Hl7Config};
