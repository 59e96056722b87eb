//! Pixel work the archive does only on demand: transcoding an instance to a
//! transfer syntax a peer accepts ([`transcode`], with the encoders of
//! [`codec`]) and rendering frames to JPEG or PNG for viewers and
//! thumbnails ([`render`]), all run by one bounded service ([`service`]).
//!
//! The archive stores exactly what a modality sent; nothing here runs at
//! ingest. Decoding uses `dicom-pixeldata`; what it cannot decode (12-bit
//! JPEG Extended, 32-bit images, JPEG-LS without CharLS) is refused with a
//! typed error saying why, never a panic.
//!
//! Every decode goes through [`service::PixelService`] (one per server,
//! shared by DIMSE and HTTP: global concurrency and memory bounds) and
//! every object through `object` first: cut after Pixel Data, inflated
//! under a cap, its dimensions and codestreams checked against its
//! attributes before a decoder sees them.
//!
//! Non-goals: storage (objects come through `pacs_core::Archive`),
//! networking, HTTP.

pub mod codec;
mod codestream;
mod object;
pub mod render;
pub mod service;
pub mod transcode;
