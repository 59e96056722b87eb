//! What a decoder is allowed to see of a stored object.
//!
//! The archive stores objects exactly as received, and ingest reads only
//! the attributes before Pixel Data. `dicom-object` would parse the whole
//! file, including whatever follows Pixel Data (sequences nested a million
//! deep, lengths of 4 GB), with recursion and allocations nobody checked.
//! So before any pixel work an object goes through [`bounded`]:
//!
//! 1. its header is read with `pacs_core::dicom` under the [`Limits`]
//!    (sequence depth, element count, element length, header size);
//! 2. a Deflated Explicit VR Little Endian data set (PS3.5 §A.5) is
//!    inflated here, at most [`Limits::max_inflated_object_bytes`], and
//!    handed on as Explicit VR Little Endian, so no decoder inflates
//!    anything itself;
//! 3. the bytes are cut just after the top-level Pixel Data element (after
//!    the sequence delimiter of encapsulated pixel data, PS3.5 §A.4):
//!    elements after it (trailing padding, digital signatures) are not
//!    read, and are not part of a converted object either;
//! 4. Rows × Columns × Samples × Frames × bytes per sample is checked
//!    against [`Limits::max_decoded_pixel_bytes`], native pixel data must
//!    hold that many bytes, and each compressed frame's own dimensions are
//!    checked against the data set ([`crate::codestream`]).
//!
//! What passes is safe to hand to `dicom-object` and the decoders: their
//! recursion is bounded by what the header parser accepted, and their
//! allocations by the checked dimensions.

use std::borrow::Cow;

use flate2::{Decompress, FlushDecompress, Status};
use pacs_core::dicom::{encode_file_meta, parse_part10, tags, Header, EXPLICIT_VR_LITTLE_ENDIAN};
use pacs_core::Limits;

use crate::codestream::{self, Expected};

/// Why an object is not given to a decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectError {
    /// The object cannot be read (malformed, truncated, over a parse limit).
    Unreadable(String),
    /// The object reads, but its pixel data is not what its attributes say.
    Refused(String),
    /// The object is larger, decoded or inflated, than the limits allow.
    TooLarge(String),
}

/// An object cut to what pixel work may read.
pub(crate) struct Bounded<'a> {
    /// A Part 10 file ending with the Pixel Data element (or the whole
    /// object when it has none); never deflated.
    pub bytes: Cow<'a, [u8]>,
    /// The header of `bytes`.
    pub header: Header,
}

const JPEG_FAMILY: &[&str] = &[
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
];
const JPEG_2000_FAMILY: &[&str] = &[
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// Bytes of a compressed frame copied to find its header when the header
/// spans fragments.
const HEADER_SCAN: usize = 1024 * 1024;

/// `part10` cut and checked as the module documentation says.
pub(crate) fn bounded<'a>(part10: &'a [u8], limits: &Limits) -> Result<Bounded<'a>, ObjectError> {
    let unreadable = |e: pacs_core::dicom::ParseError| ObjectError::Unreadable(e.to_string());
    let header = parse_part10(part10, true, limits).map_err(unreadable)?;
    let (bytes, header) = if header.syntax.deflated() {
        let inflated = inflate_dataset(part10, &header, limits)?;
        let header = parse_part10(&inflated, true, limits).map_err(unreadable)?;
        (Cow::Owned(inflated), header)
    } else {
        (Cow::Borrowed(part10), header)
    };
    let Some(pd) = header.pixel_data else {
        return Ok(Bounded { bytes, header });
    };
    let start = usize::try_from(pd.value_offset).unwrap_or(usize::MAX);
    let (end, fragments) = match pd.length {
        Some(len) => {
            let end = start.saturating_add(len as usize);
            if end > bytes.len() {
                return Err(ObjectError::Unreadable(format!(
                    "Pixel Data declares {len} bytes but the object ends {} bytes after its start",
                    bytes.len().saturating_sub(start)
                )));
            }
            (end, None)
        }
        None => {
            let (end, items) = walk_items(&bytes, start, limits)?;
            (end, Some(items))
        }
    };
    if pd.length.is_some() && header.syntax.encapsulated() {
        return Err(ObjectError::Unreadable(
            "Pixel Data of a compressed transfer syntax has a defined length (PS3.5 §A.4 \
             requires encapsulation)"
                .into(),
        ));
    }
    let bytes = match bytes {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
        Cow::Owned(mut v) => {
            v.truncate(end);
            Cow::Owned(v)
        }
    };
    if is_pixel_data(&header) {
        check_pixels(&header, &bytes, pd.length, fragments.as_deref(), limits)?;
    }
    Ok(Bounded { bytes, header })
}

/// Whether the element found is (7FE0,0010) Pixel Data (not Float or
/// Double Float Pixel Data, which no decoder here reads).
fn is_pixel_data(header: &Header) -> bool {
    header
        .pixel_data
        .is_some_and(|pd| pd.vr != *b"OF" && pd.vr != *b"OD")
}

/// The items of encapsulated pixel data from `start`: (end of the
/// element, after the Sequence Delimitation Item; the items' value ranges,
/// Basic Offset Table first).
fn walk_items(
    bytes: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<(usize, Vec<(usize, usize)>), ObjectError> {
    let bad = |what: String| ObjectError::Unreadable(format!("encapsulated Pixel Data: {what}"));
    let mut pos = start;
    let mut items = Vec::new();
    loop {
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| bad("the object ends before the sequence delimiter".into()))?;
        let tag = u32::from(u16::from_le_bytes([head[0], head[1]])) << 16
            | u32::from(u16::from_le_bytes([head[2], head[3]]));
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if tag == tags::SEQUENCE_DELIMITATION_ITEM {
            return Ok((pos + 8, items));
        }
        if tag != tags::ITEM || len == u32::MAX {
            return Err(bad(format!("expected an item at offset {pos}")));
        }
        let end = (pos + 8)
            .checked_add(len as usize)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "the item at offset {pos} runs past the object's end"
                ))
            })?;
        items.push((pos + 8, end));
        if items.len() > limits.max_elements {
            return Err(bad("more fragments than the element limit".into()));
        }
        pos = end;
    }
}

/// Inflates the deflated data set of `part10` (PS3.5 §A.5) into a Part 10
/// file in Explicit VR Little Endian, refusing past
/// `max_inflated_object_bytes`.
fn inflate_dataset(
    part10: &[u8],
    header: &Header,
    limits: &Limits,
) -> Result<Vec<u8>, ObjectError> {
    let cap = usize::try_from(limits.max_inflated_object_bytes).unwrap_or(usize::MAX);
    let input = usize::try_from(header.dataset_offset)
        .ok()
        .and_then(|o| part10.get(o..))
        .ok_or_else(|| ObjectError::Unreadable("data set offset outside the object".into()))?;
    let mut meta = header.meta.clone();
    meta.transfer_syntax_uid = EXPLICIT_VR_LITTLE_ENDIAN.to_owned();
    let mut out = encode_file_meta(&meta);
    let meta_len = out.len();
    let mut inflater = Decompress::new(false);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let rest = usize::try_from(in_before)
            .ok()
            .and_then(|n| input.get(n..))
            .unwrap_or_default();
        let status = inflater
            .decompress(rest, &mut chunk, FlushDecompress::None)
            .map_err(|e| ObjectError::Unreadable(format!("the deflated data set: {e}")))?;
        let produced = usize::try_from(inflater.total_out() - out_before).unwrap_or(0);
        if out.len() - meta_len + produced > cap {
            return Err(ObjectError::TooLarge(format!(
                "the deflated data set inflates past the {cap}-byte limit for pixel work"
            )));
        }
        out.extend_from_slice(chunk.get(..produced).unwrap_or_default());
        if status == Status::StreamEnd || (produced == 0 && inflater.total_in() == in_before) {
            return Ok(out);
        }
    }
}

/// Step 4 of the module documentation.
fn check_pixels(
    header: &Header,
    bytes: &[u8],
    native_len: Option<u32>,
    items: Option<&[(usize, usize)]>,
    limits: &Limits,
) -> Result<(), ObjectError> {
    let ds = &header.dataset;
    let refused = |r: String| Err(ObjectError::Refused(r));
    let rows = ds.u16(tags::ROWS).unwrap_or(0);
    let columns = ds.u16(tags::COLUMNS).unwrap_or(0);
    let samples = ds.u16(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits_allocated = ds.u16(tags::BITS_ALLOCATED).unwrap_or(0);
    let frames = ds
        .string(tags::NUMBER_OF_FRAMES)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    if rows == 0 || columns == 0 || samples == 0 || bits_allocated == 0 {
        return refused(
            "Rows, Columns, Samples per Pixel or Bits Allocated is missing or zero".into(),
        );
    }
    let bits = u64::from(rows)
        .saturating_mul(u64::from(columns))
        .saturating_mul(u64::from(samples))
        .saturating_mul(frames)
        .saturating_mul(u64::from(bits_allocated));
    // Decoders give at least a byte per sample.
    let decoded = bits.div_ceil(8).max(bits / u64::from(bits_allocated));
    if decoded > limits.max_decoded_pixel_bytes {
        return Err(ObjectError::TooLarge(format!(
            "Rows × Columns × Samples × Frames make {decoded} bytes of decoded pixel data, \
             more than the {} this archive decodes",
            limits.max_decoded_pixel_bytes
        )));
    }
    let Some(items) = items else {
        let len = u64::from(native_len.unwrap_or(0));
        if len < bits.div_ceil(8) {
            return refused(format!(
                "Pixel Data holds {len} bytes where Rows × Columns × Samples × Frames × Bits \
                 Allocated call for {}",
                bits.div_ceil(8)
            ));
        }
        return Ok(());
    };
    let ts = header.meta.transfer_syntax_uid.as_str();
    let expected = Expected {
        rows,
        columns,
        samples,
        bits_allocated,
    };
    let fragments: Vec<&[u8]> = items
        .iter()
        .skip(1) // the Basic Offset Table
        .map(|&(s, e)| bytes.get(s..e).unwrap_or_default())
        .collect();
    if fragments.is_empty() {
        return refused("encapsulated Pixel Data has no fragment".into());
    }
    let check = |r: Result<(), String>| r.map_err(ObjectError::Refused);
    if JPEG_FAMILY.contains(&ts) || JPEG_2000_FAMILY.contains(&ts) {
        let jpeg = JPEG_FAMILY.contains(&ts);
        let starts = |f: &[u8]| {
            if jpeg {
                f.starts_with(&[0xFF, 0xD8])
            } else {
                f.starts_with(&[0xFF, 0x4F]) || f.get(4..8) == Some(b"jP  ")
            }
        };
        if !starts(fragments[0]) {
            return refused("the first fragment does not start a codestream".into());
        }
        // Every codestream a decoder could be given: each fragment that
        // starts one, with the fragments that continue it.
        for (i, f) in fragments.iter().enumerate() {
            if !starts(f) {
                continue;
            }
            let mut stream = Cow::Borrowed(*f);
            let mut complete = true;
            for next in fragments[i + 1..].iter().take_while(|n| !starts(n)) {
                let room = HEADER_SCAN.saturating_sub(stream.len());
                if room < next.len() {
                    complete = false;
                }
                stream
                    .to_mut()
                    .extend_from_slice(&next[..room.min(next.len())]);
                if !complete {
                    break;
                }
            }
            check(if jpeg {
                codestream::check_jpeg(&stream, complete, &expected)
            } else {
                codestream::check_j2k(&stream, &expected)
            })?;
        }
    } else if ts == RLE_LOSSLESS {
        for (first, len) in rle_frames(&fragments, frames) {
            check(codestream::check_rle(first, len, &expected))?;
        }
    }
    Ok(())
}

/// The frames of RLE pixel data as (first fragment, length of all its
/// fragments): one fragment each when the counts agree (PS3.5 Annex G:
/// one fragment per frame), all fragments for one frame, else every
/// fragment that starts with an RLE header (a decoder finds frames the
/// same way or fails).
fn rle_frames<'a>(fragments: &[&'a [u8]], frames: u64) -> Vec<(&'a [u8], usize)> {
    if fragments.len() as u64 == frames {
        return fragments.iter().map(|f| (*f, f.len())).collect();
    }
    if frames == 1 {
        let total = fragments.iter().map(|f| f.len()).sum();
        return vec![(fragments[0], total)];
    }
    fragments
        .iter()
        .filter(|f| f.get(4..8) == Some(&64u32.to_le_bytes()))
        .map(|f| (*f, f.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::render::{render_frame_with, RenderError, RenderOptions};
    use crate::transcode::{transcode_with, TranscodeError};

    fn element(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
    }

    /// A 16 × 16 MONOCHROME2 8-bit image in `ts` with `pixel_data` (the
    /// element, header included) and `trailer` after it.
    fn object(ts: &str, rows: u16, pixel_data: &[u8], trailer: &[u8]) -> Vec<u8> {
        let mut meta = pacs_core::dicom::FileMeta {
            transfer_syntax_uid: ts.to_owned(),
            media_storage_sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".to_owned(),
            media_storage_sop_instance_uid: "1.2.3.4".to_owned(),
            implementation_class_uid: "1.2.3".to_owned(),
            ..Default::default()
        };
        meta.implementation_version_name = None;
        let mut ds = Vec::new();
        element(&mut ds, 0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0");
        element(&mut ds, 0x0008_0018, b"UI", b"1.2.3.4\0");
        element(&mut ds, 0x0028_0002, b"US", &1u16.to_le_bytes());
        element(&mut ds, 0x0028_0004, b"CS", b"MONOCHROME2 ");
        element(&mut ds, 0x0028_0010, b"US", &rows.to_le_bytes());
        element(&mut ds, 0x0028_0011, b"US", &16u16.to_le_bytes());
        element(&mut ds, 0x0028_0100, b"US", &8u16.to_le_bytes());
        element(&mut ds, 0x0028_0101, b"US", &8u16.to_le_bytes());
        element(&mut ds, 0x0028_0102, b"US", &7u16.to_le_bytes());
        element(&mut ds, 0x0028_0103, b"US", &0u16.to_le_bytes());
        ds.extend_from_slice(pixel_data);
        ds.extend_from_slice(trailer);
        let mut out = encode_file_meta(&meta);
        if ts == pacs_core::dicom::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
            use std::io::Write;
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&ds).unwrap();
            out.extend_from_slice(&z.finish().unwrap());
        } else {
            out.extend_from_slice(&ds);
        }
        out
    }

    fn native(len: usize) -> Vec<u8> {
        let mut e = Vec::new();
        element(&mut e, 0x7FE0_0010, b"OB", &vec![7u8; len]);
        e
    }

    fn encapsulated(fragment: &[u8]) -> Vec<u8> {
        let mut e = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        e.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        e.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        e.extend_from_slice(&(fragment.len() as u32).to_le_bytes());
        e.extend_from_slice(fragment);
        e.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        e
    }

    fn deep(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            out.extend_from_slice(&[
                0xFA, 0xFF, 0xFA, 0xFF, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        out
    }

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn bytes_after_pixel_data_are_never_read() {
        let pixels = native(256);
        let file = object(EXPLICIT_LE, 16, &pixels, &deep(200_000));
        let cut = bounded(&file, &Limits::default()).unwrap();
        assert_eq!(cut.bytes.len(), file.len() - 200_000 * 20);
        // Rendering and converting see only the cut object.
        let r = render_frame_with(&file, 1, &RenderOptions::default(), &Limits::default()).unwrap();
        assert_eq!((r.width, r.height), (16, 16));
        let out = transcode_with(&file, "1.2.840.10008.1.2", &Limits::default()).unwrap();
        assert!(out.len() < 1000);
        // Encapsulated: cut after the sequence delimiter.
        let jpeg = crate::codec::jpeg_baseline::encode_gray_frame(&[9u8; 256], 16, 16, 90).unwrap();
        let mut fragment = jpeg.clone();
        if fragment.len() % 2 == 1 {
            fragment.push(0);
        }
        let file = object(
            "1.2.840.10008.1.2.4.50",
            16,
            &encapsulated(&fragment),
            &deep(1000),
        );
        let cut = bounded(&file, &Limits::default()).unwrap();
        assert_eq!(cut.bytes.len(), file.len() - 1000 * 20);
        assert!(render_frame_with(&file, 1, &RenderOptions::default(), &Limits::default()).is_ok());
    }

    #[test]
    fn codestreams_that_lie_about_their_size_are_refused_before_decoding() {
        // A JPEG frame header of 60000 × 60000 in a 16 × 16 image.
        let mut sof = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0xEA, 0x60, 0xEA, 0x60, 1, 1, 0x11, 0,
        ];
        sof.extend_from_slice(&[0xFF, 0xD9]);
        sof.push(0);
        let file = object("1.2.840.10008.1.2.4.50", 16, &encapsulated(&sof), &[]);
        match render_frame_with(&file, 1, &RenderOptions::default(), &Limits::default()) {
            Err(RenderError::Malformed { reason }) => {
                assert!(reason.contains("60000 × 60000"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match transcode_with(&file, EXPLICIT_LE, &Limits::default()) {
            Err(TranscodeError::Invalid { reason }) => assert!(reason.contains("JPEG"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // RLE declaring more segments than one 8-bit sample has.
        let mut rle = vec![0u8; 80];
        rle[0] = 3;
        rle[4] = 64;
        rle[8] = 70;
        rle[12] = 75;
        let file = object("1.2.840.10008.1.2.5", 16, &encapsulated(&rle), &[]);
        assert!(matches!(
            render_frame_with(&file, 1, &RenderOptions::default(), &Limits::default()),
            Err(RenderError::Malformed { .. })
        ));
    }

    #[test]
    fn sizes_are_capped_before_anything_is_allocated() {
        let limits = Limits {
            max_inflated_object_bytes: 1 << 20,
            max_decoded_pixel_bytes: 1 << 19,
            ..Limits::default()
        };
        // A deflate bomb: 4 MiB of pixel data inflate past the 1 MiB cap.
        let file = object(
            pacs_core::dicom::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            16,
            &native(4 << 20),
            &[],
        );
        assert!(file.len() < 64 * 1024);
        assert!(matches!(
            bounded(&file, &limits),
            Err(ObjectError::TooLarge(_))
        ));
        assert!(matches!(
            render_frame_with(&file, 1, &RenderOptions::default(), &limits),
            Err(RenderError::Unsupported { .. })
        ));
        // Under the default cap the same object renders.
        assert!(render_frame_with(&file, 1, &RenderOptions::default(), &Limits::default()).is_ok());
        // 65535 rows of 16 columns is over 512 KiB decoded.
        let file = object(EXPLICIT_LE, 65535, &native(256), &[]);
        assert!(matches!(
            bounded(&file, &limits),
            Err(ObjectError::TooLarge(_))
        ));
        // Native pixel data shorter than the attributes say.
        let file = object(EXPLICIT_LE, 64, &native(256), &[]);
        assert!(matches!(
            bounded(&file, &Limits::default()),
            Err(ObjectError::Refused(_))
        ));
    }
}
