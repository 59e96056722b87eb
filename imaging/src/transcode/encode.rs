//! Native pixel data of an in-memory object encoded to a compressed
//! syntax, with the Image Pixel attributes made to match.

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::{checked_len, photometric, Target, TranscodeError};
use crate::codec::{jpeg_baseline, jpeg_lossless, rle, FrameLayout};

/// The Image Pixel attributes the encoders need.
struct Pixels {
    rows: usize,
    columns: usize,
    samples: usize,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    planar: bool,
    photometric: String,
}

fn u16_of(obj: &DefaultDicomObject, tag: Tag) -> Option<u16> {
    obj.get(tag).and_then(|e| e.to_int::<u16>().ok())
}

impl Pixels {
    fn of(obj: &DefaultDicomObject) -> Result<Pixels, TranscodeError> {
        let need = |tag: Tag, name: &str| {
            u16_of(obj, tag).ok_or_else(|| {
                TranscodeError::invalid(format!("{name} is missing or not a number"))
            })
        };
        let bits_allocated = need(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
        let bits_stored = u16_of(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
        Ok(Pixels {
            rows: usize::from(need(tags::ROWS, "Rows (0028,0010)")?),
            columns: usize::from(need(tags::COLUMNS, "Columns (0028,0011)")?),
            samples: usize::from(u16_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1)),
            bits_allocated,
            bits_stored,
            high_bit: u16_of(obj, tags::HIGH_BIT).unwrap_or(bits_stored.saturating_sub(1)),
            signed: u16_of(obj, tags::PIXEL_REPRESENTATION) == Some(1),
            planar: u16_of(obj, tags::PLANAR_CONFIGURATION) == Some(1),
            photometric: photometric(obj),
        })
    }

    fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    fn frame_len(&self) -> usize {
        self.rows * self.columns * self.samples * self.bytes_per_sample()
    }
}

/// Native Pixel Data as little-endian bytes, whatever VR the object was
/// read with.
fn native_bytes(obj: &DefaultDicomObject) -> Result<Vec<u8>, TranscodeError> {
    let value = obj
        .get(tags::PIXEL_DATA)
        .map(|e| e.value())
        .ok_or_else(|| TranscodeError::invalid("Pixel Data is missing"))?;
    match value.primitive() {
        Some(PrimitiveValue::U8(b)) => Ok(b.to_vec()),
        Some(PrimitiveValue::U16(w)) => Ok(w.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Some(PrimitiveValue::I16(w)) => Ok(w.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Some(PrimitiveValue::U32(w)) => Ok(w.iter().flat_map(|v| v.to_le_bytes()).collect()),
        _ => Err(TranscodeError::invalid(
            "Pixel Data is neither native bytes nor words",
        )),
    }
}

/// Colour-by-plane frames rearranged colour-by-pixel.
fn interleave(frame: &[u8], p: &Pixels) -> Vec<u8> {
    let bps = p.bytes_per_sample();
    let plane = p.rows * p.columns * bps;
    let mut out = Vec::with_capacity(frame.len());
    for px in 0..p.rows * p.columns {
        for s in 0..p.samples {
            let at = s * plane + px * bps;
            out.extend_from_slice(&frame[at..at + bps]);
        }
    }
    out
}

fn set_u16(obj: &mut DefaultDicomObject, tag: Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

fn set_cs(obj: &mut DefaultDicomObject, tag: Tag, v: &str) {
    obj.put(DataElement::new(tag, VR::CS, PrimitiveValue::from(v)));
}

/// Checks `target` can hold this object's pixels, with a reason a person
/// can act on when it cannot.
fn check(p: &Pixels, target: Target) -> Result<(), TranscodeError> {
    let unsupported = |why: String| Err(TranscodeError::unsupported(why));
    if p.rows == 0 || p.columns == 0 {
        return unsupported("Rows or Columns is zero".into());
    }
    if p.photometric.ends_with("_422") || p.photometric.ends_with("_420") {
        return unsupported(format!(
            "native {} pixel data (subsampled chroma) is not re-encoded",
            p.photometric
        ));
    }
    match target {
        Target::Native => Ok(()),
        Target::Rle => {
            if !matches!(p.bits_allocated, 8 | 16 | 32) || p.samples * p.bytes_per_sample() > 15 {
                return unsupported(format!(
                    "RLE Lossless holds 8, 16 or 32 bits allocated in at most 15 byte planes; \
                     this object has {} bits allocated and {} samples per pixel",
                    p.bits_allocated, p.samples
                ));
            }
            Ok(())
        }
        Target::JpegLossless => {
            if !matches!(p.bits_allocated, 8 | 16)
                || !(2..=16).contains(&p.bits_stored)
                || p.bits_stored > p.bits_allocated
                || !matches!(p.samples, 1 | 3)
            {
                return unsupported(format!(
                    "JPEG Lossless holds 2 to 16 bits stored in 8 or 16 bits allocated, 1 or 3 \
                     samples per pixel; this object has {} bits stored in {} allocated, {} \
                     samples per pixel",
                    p.bits_stored, p.bits_allocated, p.samples
                ));
            }
            if p.high_bit + 1 != p.bits_stored {
                return unsupported(format!(
                    "High Bit {} is not Bits Stored - 1 ({}): the samples are not in the low \
                     bits, which JPEG Lossless requires",
                    p.high_bit,
                    p.bits_stored - 1
                ));
            }
            Ok(())
        }
        Target::JpegBaseline => {
            if p.bits_allocated != 8 || p.bits_stored > 8 || p.signed {
                return unsupported(format!(
                    "JPEG Baseline holds 8-bit unsigned samples; this object has {} bits stored \
                     ({}): it would lose its range. Ask for JPEG Lossless \
                     (1.2.840.10008.1.2.4.70) or RLE Lossless (1.2.840.10008.1.2.5) instead",
                    p.bits_stored,
                    if p.signed { "signed" } else { "unsigned" }
                ));
            }
            if p.high_bit + 1 != p.bits_stored {
                return unsupported(format!(
                    "High Bit {} is not Bits Stored - 1: the samples are not in the low bits",
                    p.high_bit
                ));
            }
            match (p.samples, p.photometric.as_str()) {
                (1, "MONOCHROME1" | "MONOCHROME2") | (3, "RGB") => Ok(()),
                (s, pmi) => unsupported(format!(
                    "JPEG Baseline is written for MONOCHROME1/2 and RGB images, not {s} \
                     samples per pixel in {pmi}"
                )),
            }
        }
    }
}

/// Replaces native Pixel Data with `target`'s encapsulated form: one
/// fragment per frame, and a Basic Offset Table.
pub(super) fn encode_in_place(
    obj: &mut DefaultDicomObject,
    target: Target,
    frames: u64,
) -> Result<(), TranscodeError> {
    if target == Target::Native {
        return Ok(());
    }
    let p = Pixels::of(obj)?;
    check(&p, target)?;
    let data = native_bytes(obj)?;
    let frame_len = p.frame_len();
    let frames = usize::try_from(frames).unwrap_or(usize::MAX);
    if frame_len == 0 || data.len() / frame_len < frames {
        return Err(TranscodeError::invalid(format!(
            "Pixel Data has {} bytes, fewer than {frames} frame(s) of {frame_len}",
            data.len()
        )));
    }
    let codec_err = |e: crate::codec::CodecError| TranscodeError::invalid(e.to_string());
    let mut fragments = Vec::with_capacity(frames);
    let mut native_total = 0usize;
    for frame in data.chunks_exact(frame_len).take(frames) {
        let interleaved;
        let frame = if p.planar && p.samples > 1 {
            interleaved = interleave(frame, &p);
            &interleaved[..]
        } else {
            frame
        };
        native_total += frame.len();
        let layout = FrameLayout {
            rows: p.rows,
            columns: p.columns,
            samples_per_pixel: p.samples,
            bytes_per_sample: p.bytes_per_sample(),
        };
        let fragment = match target {
            // Returned above: native data stays as it is.
            Target::Native => return Ok(()),
            Target::Rle => rle::encode_frame(frame, layout),
            Target::JpegLossless => jpeg_lossless::encode_frame(frame, layout, p.bits_stored as u8),
            Target::JpegBaseline => {
                let (w, h) = (p.columns as u16, p.rows as u16);
                if p.samples == 3 {
                    jpeg_baseline::encode_rgb_frame(frame, w, h, jpeg_baseline::QUALITY)
                } else {
                    jpeg_baseline::encode_gray_frame(frame, w, h, jpeg_baseline::QUALITY)
                }
            }
        }
        .map_err(codec_err)?;
        fragments.push(fragment);
    }
    let mut offsets = Vec::with_capacity(fragments.len());
    let mut at = 0u64;
    for f in &fragments {
        offsets.push(
            u32::try_from(at)
                .map_err(|_| TranscodeError::unsupported("encoded pixel data exceeds 4 GiB"))?,
        );
        at += 8 + f.len() as u64;
    }
    checked_len(usize::try_from(at).unwrap_or(usize::MAX))?;
    let compressed: usize = fragments.iter().map(Vec::len).sum();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(offsets, fragments),
    ));
    if p.samples > 1 {
        set_u16(obj, tags::PLANAR_CONFIGURATION, 0);
    }
    if target == Target::JpegBaseline {
        set_u16(obj, tags::BITS_STORED, 8);
        set_u16(obj, tags::HIGH_BIT, 7);
        if p.samples == 3 {
            // The encoder writes YCbCr with 4:2:2 chroma (PS3.5 §8.2.1).
            set_cs(obj, tags::PHOTOMETRIC_INTERPRETATION, "YBR_FULL_422");
        }
        flag_lossy(obj, native_total as f64 / compressed.max(1) as f64);
    }
    Ok(())
}

/// PS3.3 C.7.6.1.1.5: Lossy Image Compression "01", and this step's ratio
/// and method appended to any earlier ones.
fn flag_lossy(obj: &mut DefaultDicomObject, ratio: f64) {
    let previous = |tag: Tag| -> Vec<String> {
        obj.get(tag)
            .and_then(|e| e.to_multi_str().ok())
            .map(|v| v.iter().map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut ratios = previous(tags::LOSSY_IMAGE_COMPRESSION_RATIO);
    let mut methods = previous(tags::LOSSY_IMAGE_COMPRESSION_METHOD);
    ratios.push(format!("{ratio:.2}"));
    methods.push("ISO_10918_1".to_owned());
    set_cs(obj, tags::LOSSY_IMAGE_COMPRESSION, "01");
    obj.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION_RATIO,
        VR::DS,
        PrimitiveValue::Strs(ratios.into()),
    ));
    obj.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION_METHOD,
        VR::CS,
        PrimitiveValue::Strs(methods.into()),
    ));
}
