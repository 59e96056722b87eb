//! Pixel work the archive does only on demand: transcoding an instance to a
//! transfer syntax a peer accepts ([`transcode`], with the encoders of
//! [`codec`]) and rendering frames to JPEG or PNG for viewers and
//! thumbnails ([`render`]).
//!
//! The archive stores exactly what a modality sent; nothing here runs at
//! ingest. Decoding uses `dicom-pixeldata`; what it cannot decode (12-bit
//! JPEG Extended, 32-bit images, JPEG-LS without CharLS) is refused with a
//! typed error saying why, never a panic.
//!
//! Non-goals: storage, networking, HTTP.

pub mod codec;
pub mod render;
pub mod transcode;
