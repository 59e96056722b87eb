//! JPEG Baseline (Process 1) frame encoding: 8-bit monochrome, and RGB as
//! YBR_FULL_422.
//!
//! The RGB → YCbCr (JFIF, full range) conversion is done here in integer
//! arithmetic so that the bytes handed to `jpeg-encoder` (and therefore the
//! output) do not depend on which colour-conversion code path the encoder
//! picks on a given CPU. Chroma is subsampled 2:1 horizontally (4:2:2),
//! matching Photometric Interpretation YBR_FULL_422.

use super::{ensure, CodecError, Result};
use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, Encoder, SamplingFactor};

/// Quality used when the caller has no preference (and by the sample
/// generator, whose output must not change).
pub const QUALITY: u8 = 85;

/// Convert one RGB pixel to full-range YCbCr (ITU-R BT.601 / JFIF),
/// rounding to nearest with 16 fractional bits.
pub fn rgb_to_ycbcr(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    const HALF: i32 = 1 << 15;
    let y = (19_595 * r + 38_470 * g + 7_471 * b + HALF) >> 16;
    let cb = ((-11_059 * r - 21_709 * g + 32_768 * b + HALF) >> 16) + 128;
    let cr = ((32_768 * r - 27_439 * g - 5_329 * b + HALF) >> 16) + 128;
    [clamp_u8(y), clamp_u8(cb), clamp_u8(cr)]
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Encode one interleaved RGB frame (`width * height * 3` bytes) as a
/// baseline JPEG with 4:2:2 chroma subsampling. The result is padded with a
/// trailing zero byte to an even length, as fragments must be.
pub fn encode_rgb_frame(rgb: &[u8], width: u16, height: u16, quality: u8) -> Result<Vec<u8>> {
    let pixels = usize::from(width) * usize::from(height);
    ensure!(
        rgb.len() == pixels * 3,
        "RGB frame has {} bytes, expected {}",
        rgb.len(),
        pixels * 3
    );
    let mut ycbcr = Vec::with_capacity(rgb.len());
    for px in rgb.chunks_exact(3) {
        ycbcr.extend_from_slice(&rgb_to_ycbcr(px[0], px[1], px[2]));
    }
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(SamplingFactor::R_4_2_2);
    encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    encoder
        .encode(&ycbcr, width, height, ColorType::Ycbcr)
        .map_err(|e| CodecError(format!("JPEG encoding failed: {e}")))?;
    if out.len() % 2 == 1 {
        out.push(0);
    }
    Ok(out)
}

/// Encode one 8-bit monochrome frame (`width * height` bytes) as a
/// baseline JPEG with a single component, padded to an even length.
pub fn encode_gray_frame(gray: &[u8], width: u16, height: u16, quality: u8) -> Result<Vec<u8>> {
    let pixels = usize::from(width) * usize::from(height);
    ensure!(
        gray.len() == pixels && pixels > 0,
        "monochrome frame has {} bytes, expected {}",
        gray.len(),
        pixels
    );
    let mut out = Vec::new();
    Encoder::new(&mut out, quality)
        .encode(gray, width, height, ColorType::Luma)
        .map_err(|e| CodecError(format!("JPEG encoding failed: {e}")))?;
    if out.len() % 2 == 1 {
        out.push(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_conversion_reference_points() {
        assert_eq!(rgb_to_ycbcr(0, 0, 0), [0, 128, 128]);
        assert_eq!(rgb_to_ycbcr(255, 255, 255), [255, 128, 128]);
        assert_eq!(rgb_to_ycbcr(255, 0, 0), [76, 85, 255]);
        assert_eq!(rgb_to_ycbcr(0, 0, 255), [29, 255, 107]);
    }

    #[test]
    fn encodes_even_length_jpeg() -> Result<()> {
        let rgb: Vec<u8> = (0..32 * 16 * 3).map(|i| (i % 251) as u8).collect();
        let jpeg = encode_rgb_frame(&rgb, 32, 16, QUALITY)?;
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert_eq!(jpeg.len() % 2, 0);
        assert!(encode_rgb_frame(&rgb, 32, 15, QUALITY).is_err());
        let gray = encode_gray_frame(&rgb[..32 * 16], 32, 16, QUALITY)?;
        assert_eq!(&gray[..2], &[0xff, 0xd8]);
        assert_eq!(gray.len() % 2, 0);
        assert!(encode_gray_frame(&rgb[..32 * 15], 32, 16, QUALITY).is_err());
        Ok(())
    }
}
