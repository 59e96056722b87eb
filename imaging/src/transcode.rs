//! Transcoding a stored Part 10 object to another transfer syntax, for a
//! peer that does not accept the stored one (PS3.4 B.4.1: the SCU of a
//! C-STORE sub-operation may send in any syntax the receiver accepted) or a
//! DICOMweb client that asks for one (PS3.18 §8.7.3.5).
//!
//! Bytes in, bytes out: [`transcode`] gives the data set alone (what a
//! DIMSE C-STORE carries, PS3.7 §9.1.1), [`transcode_part10`] a whole
//! Part 10 file with a new File Meta Information group.
//!
//! What it does:
//! - between the uncompressed syntaxes (Implicit VR LE, Explicit VR LE,
//!   Explicit VR BE, Deflated Explicit VR LE): the data set is re-encoded,
//!   pixel data untouched;
//! - from JPEG Baseline, JPEG Extended (8-bit), JPEG Lossless (Process 14
//!   and SV1), RLE Lossless and JPEG 2000 to an uncompressed syntax: pixel
//!   data is decoded to native form and the Image Pixel attributes that
//!   describe the encoding are corrected (PS3.5 §8.2; PS3.3 C.7.6.3);
//! - to RLE Lossless, JPEG Lossless (1.2.840.10008.1.2.4.57 and .70, both
//!   written with selection value 1) and JPEG Baseline: native pixel data
//!   (decoded first when the source is compressed) is encoded frame by
//!   frame with the encoders of [`crate::codec`], one fragment per frame
//!   with a Basic Offset Table. JPEG Baseline is lossy and holds 8 bits:
//!   it is produced only for 8-bit unsigned data, only when asked for by
//!   name, and the object is flagged lossy (Lossy Image Compression "01",
//!   ratio and method, PS3.3 C.7.6.1.1.5).
//!
//! What it refuses, with [`TranscodeError::Unsupported`]: other compressed
//! targets (JPEG Extended, JPEG-LS, JPEG 2000, HTJ2K, JPEG XL, video),
//! JPEG Baseline of data over 8 bits (the loss of range would change the
//! image's meaning), 12-bit JPEG Extended and JPEG-LS sources, and pixel
//! data other than 8 or 16 bits allocated (32 bits only for RLE). Decoders
//! run inside `catch_unwind`: a decoder that panics on bad input is an
//! [`TranscodeError::Invalid`], never a crash.
//!
//! Non-goals: choosing the target syntax (the protocol layers do that),
//! lossy compression nobody asked for, I/O.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use pacs_core::dicom::{
    encode_file_meta, parse_part10, Header, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use pacs_core::Limits;

use crate::object::{Bounded, ObjectError};

const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Why an object could not be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The conversion is not one this archive performs (the object may
    /// well be valid).
    #[error("cannot transcode: {reason}")]
    Unsupported { reason: String },
    /// The object or its pixel data could not be read or decoded.
    #[error("cannot transcode, the object is unreadable: {reason}")]
    Invalid { reason: String },
}

impl TranscodeError {
    fn unsupported(reason: impl Into<String>) -> TranscodeError {
        TranscodeError::Unsupported {
            reason: reason.into(),
        }
    }

    fn invalid(reason: impl Into<String>) -> TranscodeError {
        TranscodeError::Invalid {
            reason: reason.into(),
        }
    }
}

/// How a transfer syntax stores pixel data, as far as transcoding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Native pixel data: only the data set encoding changes.
    Native,
    /// JPEG Processes 1 and 2/4: the decoder converts YCbCr to RGB.
    JpegLossy,
    /// JPEG Process 14: samples come out as coded, no colour conversion.
    JpegLossless,
    Rle,
    /// JPEG 2000: YBR_ICT / YBR_RCT come out as RGB (the inverse component
    /// transform is part of the codestream, PS3.5 §8.2.4).
    Jpeg2000,
}

fn encoding_of(uid: &str) -> Result<Encoding, TranscodeError> {
    Ok(match uid {
        IMPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_BIG_ENDIAN
        | DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => Encoding::Native,
        JPEG_BASELINE | JPEG_EXTENDED => Encoding::JpegLossy,
        JPEG_LOSSLESS | JPEG_LOSSLESS_SV1 => Encoding::JpegLossless,
        RLE_LOSSLESS => Encoding::Rle,
        JPEG_2000_LOSSLESS | JPEG_2000 => Encoding::Jpeg2000,
        JPEG_LS_LOSSLESS | JPEG_LS_NEAR_LOSSLESS => {
            return Err(TranscodeError::unsupported(
                "JPEG-LS pixel data cannot be decoded: this build has no JPEG-LS (CharLS) decoder",
            ))
        }
        other => {
            return Err(TranscodeError::unsupported(format!(
                "pixel data in transfer syntax {} cannot be decoded by this archive",
                syntax_name(other)
            )))
        }
    })
}

fn syntax_name(uid: &str) -> String {
    let name = match uid {
        IMPLICIT_VR_LITTLE_ENDIAN => "Implicit VR Little Endian",
        EXPLICIT_VR_LITTLE_ENDIAN => "Explicit VR Little Endian",
        EXPLICIT_VR_BIG_ENDIAN => "Explicit VR Big Endian",
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => "Deflated Explicit VR Little Endian",
        JPEG_BASELINE => "JPEG Baseline",
        JPEG_EXTENDED => "JPEG Extended",
        JPEG_LOSSLESS => "JPEG Lossless",
        JPEG_LOSSLESS_SV1 => "JPEG Lossless SV1",
        JPEG_LS_LOSSLESS => "JPEG-LS Lossless",
        JPEG_LS_NEAR_LOSSLESS => "JPEG-LS Near-Lossless",
        JPEG_2000_LOSSLESS => "JPEG 2000 Lossless",
        JPEG_2000 => "JPEG 2000",
        RLE_LOSSLESS => "RLE Lossless",
        _ => return uid.to_owned(),
    };
    format!("{name} ({uid})")
}

/// The compressed syntaxes this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Native,
    Rle,
    JpegLossless,
    JpegBaseline,
}

fn target_of(uid: &str) -> Option<Target> {
    match uid {
        IMPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_BIG_ENDIAN
        | DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => Some(Target::Native),
        RLE_LOSSLESS => Some(Target::Rle),
        JPEG_LOSSLESS | JPEG_LOSSLESS_SV1 => Some(Target::JpegLossless),
        JPEG_BASELINE => Some(Target::JpegBaseline),
        _ => None,
    }
}

/// Whether converting `from` to `to` is something this module does, by
/// the syntaxes alone (a particular object may still be refused, e.g. a
/// 12-bit JPEG Extended one, or 16-bit data to JPEG Baseline). Same syntax
/// is trivially possible.
pub fn can_transcode(from: &str, to: &str) -> bool {
    from == to || (target_of(to).is_some() && encoding_of(from).is_ok())
}

/// What can be told from the index alone (Bits Allocated, `None` = no pixel
/// data) about encoding an instance in `to`: a retrieve of many instances
/// is refused up front rather than broken off mid-stream. Objects that pass
/// may still be refused by [`transcode`] for other attributes.
pub fn precheck(to: &str, bits_allocated: Option<u16>) -> Result<(), TranscodeError> {
    let Some(bits) = bits_allocated else {
        return Ok(());
    };
    let fits = match target_of(to) {
        None => return Ok(()), // refused later with the full reason
        Some(Target::Native) => true,
        Some(Target::Rle) => matches!(bits, 8 | 16 | 32),
        Some(Target::JpegLossless) => matches!(bits, 8 | 16),
        Some(Target::JpegBaseline) => bits == 8,
    };
    if fits {
        return Ok(());
    }
    Err(TranscodeError::unsupported(format!(
        "{} cannot hold pixel data of {bits} bits allocated{}",
        syntax_name(to),
        if target_of(to) == Some(Target::JpegBaseline) {
            " (it is 8-bit and lossy); ask for JPEG Lossless (1.2.840.10008.1.2.4.70) or \
             RLE Lossless (1.2.840.10008.1.2.5)"
        } else {
            ""
        }
    )))
}

/// Whether `uid` is a syntax that loses information (JPEG Baseline, the
/// only lossy syntax written here): callers prefer any other choice.
pub fn is_lossy_target(uid: &str) -> bool {
    target_of(uid) == Some(Target::JpegBaseline)
}

/// The data set of `part10` (a whole Part 10 file) encoded in `target_ts`,
/// without preamble or File Meta Information: what a C-STORE-RQ carries.
/// When the object already is in `target_ts` its data set bytes are
/// returned unchanged.
pub fn transcode(part10: &[u8], target_ts: &str) -> Result<Vec<u8>, TranscodeError> {
    transcode_with(part10, target_ts, &Limits::default())
}

/// [`transcode`] under `limits` (what the pixel-work service uses): the
/// object is first cut and checked by [`crate::object`].
pub fn transcode_with(
    part10: &[u8],
    target_ts: &str,
    limits: &Limits,
) -> Result<Vec<u8>, TranscodeError> {
    let header = read_header(part10, limits)?;
    if header.meta.transfer_syntax_uid == target_ts {
        let offset = usize::try_from(header.dataset_offset)
            .ok()
            .filter(|o| *o <= part10.len())
            .ok_or_else(|| TranscodeError::invalid("data set offset outside the file"))?;
        return Ok(part10.get(offset..).unwrap_or_default().to_vec());
    }
    precheck_object(&header, target_ts, limits)?;
    let object = bounded(part10, limits)?;
    guarded(|| transcode_dataset(&object.bytes, &object.header, target_ts))
}

/// `part10` as a whole Part 10 file in `target_ts`: a new File Meta
/// Information group (the original one with the new Transfer Syntax UID,
/// and this archive as the implementation that wrote it, PS3.10 §7.1)
/// followed by [`transcode`]'s data set.
pub fn transcode_part10(part10: &[u8], target_ts: &str) -> Result<Vec<u8>, TranscodeError> {
    transcode_part10_with(part10, target_ts, &Limits::default())
}

/// [`transcode_part10`] under `limits`.
pub fn transcode_part10_with(
    part10: &[u8],
    target_ts: &str,
    limits: &Limits,
) -> Result<Vec<u8>, TranscodeError> {
    let header = read_header(part10, limits)?;
    if header.meta.transfer_syntax_uid == target_ts {
        return Ok(part10.to_vec());
    }
    precheck_object(&header, target_ts, limits)?;
    let object = bounded(part10, limits)?;
    let dataset = guarded(|| transcode_dataset(&object.bytes, &object.header, target_ts))?;
    let mut meta = header.meta.clone();
    meta.transfer_syntax_uid = target_ts.to_owned();
    meta.implementation_class_uid = pacs_core::archive::IMPLEMENTATION_CLASS_UID.to_owned();
    meta.implementation_version_name =
        Some(pacs_core::archive::IMPLEMENTATION_VERSION_NAME.to_owned());
    if meta.media_storage_sop_class_uid.is_empty() {
        meta.media_storage_sop_class_uid = header.dataset.uid(0x0008_0016).unwrap_or_default();
    }
    if meta.media_storage_sop_instance_uid.is_empty() {
        meta.media_storage_sop_instance_uid = header.dataset.uid(0x0008_0018).unwrap_or_default();
    }
    let mut out = encode_file_meta(&meta);
    out.extend_from_slice(&dataset);
    Ok(out)
}

fn read_header(part10: &[u8], limits: &Limits) -> Result<Header, TranscodeError> {
    parse_part10(part10, true, limits).map_err(|e| TranscodeError::invalid(e.to_string()))
}

/// The object cut and checked for decoding ([`crate::object`]).
fn bounded<'a>(part10: &'a [u8], limits: &Limits) -> Result<Bounded<'a>, TranscodeError> {
    crate::object::bounded(part10, limits).map_err(|e| match e {
        ObjectError::Unreadable(r) | ObjectError::Refused(r) => TranscodeError::invalid(r),
        ObjectError::TooLarge(r) => TranscodeError::unsupported(r),
    })
}

/// Runs `f`, turning a panic (a decoder tripping over bad data) into an
/// error.
fn guarded<T>(f: impl FnOnce() -> Result<T, TranscodeError>) -> Result<T, TranscodeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(TranscodeError::invalid(
            "the decoder failed on this object's data (it panicked)",
        ))
    })
}

/// What can be refused from the header alone, before the object is cut
/// and its codestreams checked: the target, the source encoding, and the
/// decoders' own limits.
fn precheck_object(
    header: &Header,
    target_ts: &str,
    limits: &Limits,
) -> Result<(), TranscodeError> {
    if target_of(target_ts).is_none() {
        return Err(TranscodeError::unsupported(format!(
            "the archive cannot encode {}: it writes Implicit VR LE, Explicit VR LE, \
             Explicit VR BE, Deflated Explicit VR LE, RLE Lossless, JPEG Lossless \
             (1.2.840.10008.1.2.4.57, .70) and, for 8-bit data, JPEG Baseline",
            syntax_name(target_ts)
        )));
    }
    let source = encoding_of(&header.meta.transfer_syntax_uid)?;
    if source != Encoding::Native && header.pixel_data.is_some() {
        check_decodable(header, source, limits)?;
    }
    Ok(())
}

fn transcode_dataset(
    part10: &[u8],
    header: &Header,
    target_ts: &str,
) -> Result<Vec<u8>, TranscodeError> {
    let source_ts = header.meta.transfer_syntax_uid.as_str();
    let target_kind = target_of(target_ts)
        .ok_or_else(|| TranscodeError::unsupported(format!("cannot encode {target_ts}")))?;
    let source = encoding_of(source_ts)?;
    let target = TransferSyntaxRegistry.get(target_ts).ok_or_else(|| {
        TranscodeError::unsupported(format!("unknown transfer syntax {target_ts}"))
    })?;
    let mut obj: DefaultDicomObject = OpenFileOptions::new()
        .from_reader(part10)
        .map_err(|e| TranscodeError::invalid(e.to_string()))?;
    if source != Encoding::Native && obj.get(tags::PIXEL_DATA).is_some() {
        decode_in_place(&mut obj, header, source)?;
    }
    if target_kind != Target::Native && obj.get(tags::PIXEL_DATA).is_some() {
        encode::encode_in_place(&mut obj, target_kind, number_of_frames(header))?;
    }
    drop_group_lengths(&mut obj);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, target)
        .map_err(|e| TranscodeError::invalid(format!("cannot encode the data set: {e}")))?;
    Ok(out)
}

/// Refuses, from the header alone, what the decoders cannot do, with a
/// reason a person can act on.
fn check_decodable(
    header: &Header,
    source: Encoding,
    limits: &Limits,
) -> Result<(), TranscodeError> {
    let ds = &header.dataset;
    let name = syntax_name(&header.meta.transfer_syntax_uid);
    let bits_allocated = ds
        .u16(0x0028_0100)
        .ok_or_else(|| TranscodeError::invalid("Bits Allocated (0028,0100) is missing"))?;
    let bits_stored = ds.u16(0x0028_0101).unwrap_or(bits_allocated);
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(TranscodeError::unsupported(format!(
            "{name} pixel data with {bits_allocated} bits allocated cannot be decoded \
             (only 8 and 16 bits are)"
        )));
    }
    if source == Encoding::JpegLossy && bits_stored > 8 {
        return Err(TranscodeError::unsupported(format!(
            "{name} pixel data with {bits_stored} bits stored (12-bit JPEG, Process 4) \
             cannot be decoded: only 8-bit JPEG lossy is supported"
        )));
    }
    let rows = u64::from(ds.u16(0x0028_0010).unwrap_or(0));
    let columns = u64::from(ds.u16(0x0028_0011).unwrap_or(0));
    let samples = u64::from(ds.u16(0x0028_0002).unwrap_or(1));
    let frames = number_of_frames(header);
    let bytes = rows
        .saturating_mul(columns)
        .saturating_mul(samples)
        .saturating_mul(frames)
        .saturating_mul(u64::from(bits_allocated / 8));
    if bytes == 0 {
        return Err(TranscodeError::invalid(
            "Rows, Columns or Samples per Pixel is missing or zero",
        ));
    }
    if bytes > limits.max_decoded_pixel_bytes {
        return Err(TranscodeError::unsupported(format!(
            "decoded pixel data would take {bytes} bytes, more than the {} this archive \
             decodes in memory",
            limits.max_decoded_pixel_bytes
        )));
    }
    Ok(())
}

fn number_of_frames(header: &Header) -> u64 {
    header
        .dataset
        .string(0x0028_0008)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Replaces encapsulated Pixel Data with its decoded native form and fixes
/// the attributes that described the encoding.
fn decode_in_place(
    obj: &mut DefaultDicomObject,
    header: &Header,
    source: Encoding,
) -> Result<(), TranscodeError> {
    let ds = &header.dataset;
    let bits_allocated = ds.u16(0x0028_0100).unwrap_or(0);
    let samples = ds.u16(0x0028_0002).unwrap_or(1);
    let expected = u64::from(ds.u16(0x0028_0010).unwrap_or(0))
        * u64::from(ds.u16(0x0028_0011).unwrap_or(0))
        * u64::from(samples)
        * number_of_frames(header)
        * u64::from(bits_allocated / 8);
    let decoded = obj.decode_pixel_data().map_err(|e| {
        TranscodeError::invalid(format!(
            "the {} pixel data cannot be decoded: {e}",
            syntax_name(&header.meta.transfer_syntax_uid)
        ))
    })?;
    let data = decoded.data();
    if data.len() as u64 != expected {
        return Err(TranscodeError::invalid(format!(
            "decoded pixel data has {} bytes where Rows, Columns, Samples per Pixel, \
             Number of Frames and Bits Allocated call for {expected}",
            data.len()
        )));
    }
    let pixel_data = if bits_allocated == 16 {
        // As values, so that a big endian target gets them swapped.
        let words: Vec<u16> = data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OW,
            Length::defined(checked_len(words.len() * 2)?),
            PrimitiveValue::U16(words.into()),
        )
    } else {
        let mut bytes = data.to_vec();
        if bytes.len() % 2 == 1 {
            // PS3.5 §7.1.1: values have even length.
            bytes.push(0);
        }
        DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::defined(checked_len(bytes.len())?),
            PrimitiveValue::U8(bytes.into()),
        )
    };
    obj.put(pixel_data);
    // The offset tables of encapsulated pixel data no longer apply.
    for tag in [
        Tag(0x7FE0, 0x0001), // Extended Offset Table
        Tag(0x7FE0, 0x0002), // Extended Offset Table Lengths
        Tag(0x7FE0, 0x0003), // Encapsulated Pixel Data Value Total Length
    ] {
        obj.remove_element(tag);
    }
    if samples > 1 {
        // Decoders give colour-by-pixel (PS3.3 C.7.6.3.1.3).
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ));
        let pmi = photometric(obj);
        let rgb = match source {
            Encoding::JpegLossy => true,
            Encoding::Jpeg2000 => pmi == "YBR_ICT" || pmi == "YBR_RCT",
            _ => false,
        };
        if rgb {
            obj.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("RGB"),
            ));
        }
    }
    if source == Encoding::JpegLossy && obj.get(tags::LOSSY_IMAGE_COMPRESSION).is_none() {
        // PS3.3 C.7.6.1.1.5: once lossy compressed, always flagged so.
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            PrimitiveValue::from("01"),
        ));
    }
    Ok(())
}

fn photometric(obj: &DefaultDicomObject) -> String {
    obj.get(tags::PHOTOMETRIC_INTERPRETATION)
        .and_then(|e| e.to_str().ok())
        .map(|s: Cow<'_, str>| s.trim().to_owned())
        .unwrap_or_default()
}

fn checked_len(len: usize) -> Result<u32, TranscodeError> {
    u32::try_from(len)
        .ok()
        .filter(|l| *l < u32::MAX)
        .ok_or_else(|| TranscodeError::unsupported("decoded pixel data exceeds 4 GiB"))
}

/// Top-level group length elements (gggg,0000) are retired in data sets
/// (PS3.5 §7.2) and would be wrong once the encoding changes.
fn drop_group_lengths(obj: &mut DefaultDicomObject) {
    let stale: Vec<Tag> = obj.tags().filter(|t| t.element() == 0).collect();
    for tag in stale {
        obj.remove_element(tag);
    }
}

mod encode;
#[cfg(test)]
mod tests;
