//! The DIMSE message layer, without IO (PS3.7 §6, §9 and Annex E; PS3.8
//! Annex E).
//!
//! Bytes in, values out: PDV reassembly and fragmentation ([`pdv`]), the
//! command set codec ([`command_set`]) and the typed commands
//! ([`commands`]). Nothing here touches a socket, a clock or the archive;
//! the association loop in `association.rs` drives it.

pub mod command_set;
pub mod commands;
pub mod ncommands;
pub mod pdv;

pub use command_set::{tags, CommandSet, CommandSetError, FieldError, GroupLength};
pub use commands::{command_field, priority, CEchoRq, CEchoRsp, CStoreRq, CStoreRsp, Response};
pub use ncommands::{NRequest, NResponse};
pub use pdv::{
    can_carry_pdv, fragment, max_fragment_len, Pdv, Reassembled, Reassembler, ReassemblyError,
};

/// Command Data Set Type (0000,0800) meaning "no data set" (PS3.7 E.1).
pub const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type we write when a data set follows (any value other
/// than 0101H means present).
pub const DATA_SET_PRESENT: u16 = 0x0001;
