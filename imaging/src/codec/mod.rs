//! Pixel data encoders the archive carries itself, for conversions to
//! compressed transfer syntaxes on request (see [`crate::transcode`]) and
//! for the sample generator: RLE Lossless (PS3.5 Annex G), JPEG Lossless
//! Process 14 with selection value 1 (PS3.5 §8.2.1, ITU-T T.81 Annex H)
//! and JPEG Baseline for 8-bit data.
//!
//! Each encoder turns one native little-endian frame into one fragment
//! (even length, as PS3.5 §A.4 wants). Non-goals: choosing a syntax, data
//! set attributes (the caller fixes those), decoding for display.

pub mod jpeg_baseline;
pub mod jpeg_lossless;
pub mod rle;

/// Layout of one uncompressed frame as it would appear in native
/// (little-endian) Pixel Data with Planar Configuration 0.
#[derive(Debug, Clone, Copy)]
pub struct FrameLayout {
    /// Rows (0028,0010).
    pub rows: usize,
    /// Columns (0028,0011).
    pub columns: usize,
    /// Samples per Pixel (0028,0002).
    pub samples_per_pixel: usize,
    /// Bits Allocated (0028,0100) divided by 8.
    pub bytes_per_sample: usize,
}

impl FrameLayout {
    /// Number of bytes of one native frame.
    pub fn frame_len(&self) -> usize {
        self.rows * self.columns * self.samples_per_pixel * self.bytes_per_sample
    }
}

/// Why a frame could not be encoded; the text says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Result of the codecs.
pub type Result<T> = std::result::Result<T, CodecError>;

macro_rules! bail {
    ($($arg:tt)+) => {
        return Err($crate::codec::CodecError(format!($($arg)+)))
    };
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::codec::bail!($($arg)+);
        }
    };
}

pub(crate) use bail;
pub(crate) use ensure;
