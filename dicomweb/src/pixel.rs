//! Cutting frames and bulk data out of a stored Part 10 object without
//! decoding it: the header is parsed from a streamed prefix, then only the
//! byte ranges asked for are kept (memory stays bounded by the header plus
//! the frames requested).
//!
//! Frames of encapsulated pixel data (PS3.5 A.4) are delimited by this
//! rule, first match wins:
//! 1. the Basic Offset Table has one entry per frame: a frame is the
//!    fragments from its offset up to the next frame's;
//! 2. there are as many fragments as frames: one fragment per frame;
//! 3. a single frame: all fragments;
//! 4. otherwise a fragment starting with a JPEG SOI (FFD8) or JPEG 2000
//!    SOC (FF4F) marker starts a new frame, if that yields the right count.
//!
//! The Extended Offset Table (7FE0,0001) is not used.

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use pacs_core::dicom::{parse_part10, tags, Header, ParseError};
use pacs_core::ports::PortError;
use pacs_core::Limits;

use crate::error::ApiError;

/// A forward-only reader over a blob stream that can skip and take byte
/// ranges by file offset.
pub struct BlobReader {
    stream: BoxStream<'static, Result<Bytes, PortError>>,
    buf: BytesMut,
    /// File offset of `buf[0]`.
    pos: u64,
    eof: bool,
}

impl BlobReader {
    pub fn new(stream: BoxStream<'static, Result<Bytes, PortError>>) -> BlobReader {
        BlobReader {
            stream,
            buf: BytesMut::new(),
            pos: 0,
            eof: false,
        }
    }

    /// Reads one more chunk; `false` at the end of the blob.
    async fn fill(&mut self) -> Result<bool, ApiError> {
        if self.eof {
            return Ok(false);
        }
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(ApiError::unavailable(e)),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// Reads the Part 10 header (everything before Pixel Data). The reader
    /// stays at offset 0 with the prefix buffered.
    pub async fn header(&mut self, limits: &Limits) -> Result<Header, ApiError> {
        let mut next_attempt = 64 * 1024;
        loop {
            while self.buf.len() < next_attempt {
                if !self.fill().await? {
                    break;
                }
            }
            match parse_part10(&self.buf, self.eof, limits) {
                Ok(h) => return Ok(h),
                Err(ParseError::Incomplete) if !self.eof => {
                    if self.buf.len() as u64 > limits.max_header_bytes {
                        return Err(ApiError::internal("stored object header too large"));
                    }
                    next_attempt = self.buf.len().saturating_mul(2);
                }
                Err(e) => return Err(ApiError::internal(format!("stored object unreadable: {e}"))),
            }
        }
    }

    /// Drops everything before file offset `off` (which must not be behind
    /// the reader).
    async fn skip_to(&mut self, off: u64) -> Result<(), ApiError> {
        if off < self.pos {
            return Err(ApiError::internal("blob reader cannot seek backwards"));
        }
        loop {
            let end = self.pos + self.buf.len() as u64;
            if off <= end {
                let n = (off - self.pos) as usize;
                self.buf.advance(n);
                self.pos = off;
                return Ok(());
            }
            self.pos = end;
            self.buf.clear();
            if !self.fill().await? {
                return Err(ApiError::internal(
                    "stored object shorter than its header says",
                ));
            }
        }
    }

    /// The `len` bytes at file offset `off`.
    pub async fn take(&mut self, off: u64, len: usize) -> Result<Bytes, ApiError> {
        self.skip_to(off).await?;
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(ApiError::internal(
                    "stored object shorter than its header says",
                ));
            }
        }
        self.pos += len as u64;
        Ok(self.buf.split_to(len).freeze())
    }
}

/// The image attributes that size a native frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameGeometry {
    pub frames: u32,
    /// Bytes per frame (native only).
    pub frame_len: u64,
}

impl FrameGeometry {
    pub fn of(header: &Header) -> Result<FrameGeometry, ApiError> {
        let ds = &header.dataset;
        let frames = ds
            .string(tags::NUMBER_OF_FRAMES)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let rows = u64::from(ds.u16(tags::ROWS).unwrap_or(0));
        let cols = u64::from(ds.u16(tags::COLUMNS).unwrap_or(0));
        let spp = u64::from(ds.u16(tags::SAMPLES_PER_PIXEL).unwrap_or(1));
        let bits = u64::from(ds.u16(tags::BITS_ALLOCATED).unwrap_or(0));
        let frame_bits = rows * cols * spp * bits;
        if header.syntax.encapsulated() {
            return Ok(FrameGeometry {
                frames,
                frame_len: 0,
            });
        }
        if frame_bits == 0 {
            return Err(ApiError::not_found(
                "the instance has no image attributes (Rows, Columns, BitsAllocated)",
            ));
        }
        if frame_bits % 8 != 0 {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "frames that do not end on a byte boundary (BitsAllocated 1) are not supported",
            ));
        }
        Ok(FrameGeometry {
            frames,
            frame_len: frame_bits / 8,
        })
    }
}

/// Parses a frame list (`1`, `1,3,5`): 1-based, each at most `frames`.
pub fn parse_frame_list(list: &str, frames: u32) -> Result<Vec<u32>, ApiError> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let n: u32 = item.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "frame number {item:?} is not a positive integer; use a list such as 1,3,5"
            ))
        })?;
        if n == 0 {
            return Err(ApiError::bad_request("frame numbers start at 1"));
        }
        if n > frames {
            return Err(ApiError::not_found(format!(
                "frame {n} does not exist: the instance has {frames} frame(s)"
            )));
        }
        out.push(n);
    }
    if out.len() > 10_000 {
        return Err(ApiError::bad_request("at most 10000 frames per request"));
    }
    Ok(out)
}

/// One item of encapsulated pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// File offset of the item's value.
    pub offset: u64,
    pub len: u32,
    /// Whether the value starts with a JPEG SOI or JPEG 2000 SOC marker.
    pub starts_image: bool,
}

/// Walks the items of encapsulated pixel data starting at `value_offset`:
/// the Basic Offset Table entries and the fragments.
pub async fn scan_fragments(
    reader: &mut BlobReader,
    value_offset: u64,
    limits: &Limits,
) -> Result<(Vec<u32>, Vec<Fragment>), ApiError> {
    let bad = |what: &str| ApiError::internal(format!("stored encapsulated pixel data: {what}"));
    let mut off = value_offset;
    let mut bot = Vec::new();
    let mut fragments = Vec::new();
    let mut first = true;
    loop {
        let head = reader.take(off, 8).await?;
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let tag = (u32::from(group) << 16) | u32::from(element);
        if tag == tags::SEQUENCE_DELIMITATION_ITEM {
            break;
        }
        if tag != tags::ITEM || len == u32::MAX {
            return Err(bad("expected an item"));
        }
        off += 8;
        if first {
            if u64::from(len) > limits.max_element_len {
                return Err(bad("offset table too large"));
            }
            let table = reader.take(off, len as usize).await?;
            bot = table
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            first = false;
        } else {
            let starts_image = if len >= 2 {
                let b = reader.take(off, 2).await?;
                b[0] == 0xFF && (b[1] == 0xD8 || b[1] == 0x4F)
            } else {
                false
            };
            fragments.push(Fragment {
                offset: off,
                len,
                starts_image,
            });
            if fragments.len() > limits.max_elements {
                return Err(bad("too many fragments"));
            }
        }
        off += u64::from(len);
    }
    Ok((bot, fragments))
}

/// The fragments of each frame (index 0 = frame 1), by the rule in the
/// module documentation.
pub fn frames_of(
    bot: &[u32],
    fragments: &[Fragment],
    frames: u32,
) -> Result<Vec<Vec<Fragment>>, ApiError> {
    let n = frames as usize;
    let Some(first) = fragments.first() else {
        return Err(ApiError::internal(
            "encapsulated pixel data has no fragment",
        ));
    };
    // Item offsets relative to the first fragment's item tag.
    let base = first.offset - 8;
    if bot.len() == n && bot.first() == Some(&0) && bot.windows(2).all(|w| w[0] < w[1]) {
        let mut out = vec![Vec::new(); n];
        for f in fragments {
            let rel = f.offset - 8 - base;
            let k = bot.partition_point(|&o| u64::from(o) <= rel);
            if k >= 1 {
                out[k - 1].push(*f);
            }
        }
        if out.iter().all(|v| !v.is_empty()) {
            return Ok(out);
        }
    }
    if fragments.len() == n {
        return Ok(fragments.iter().map(|f| vec![*f]).collect());
    }
    if n == 1 {
        return Ok(vec![fragments.to_vec()]);
    }
    let mut out: Vec<Vec<Fragment>> = Vec::new();
    for f in fragments {
        match out.last_mut() {
            Some(cur) if !f.starts_image => cur.push(*f),
            _ => out.push(vec![*f]),
        }
    }
    if out.len() == n {
        return Ok(out);
    }
    Err(ApiError::internal(format!(
        "cannot delimit {n} frames among {} fragments",
        fragments.len()
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frag(offset: u64, len: u32, starts_image: bool) -> Fragment {
        Fragment {
            offset,
            len,
            starts_image,
        }
    }

    #[test]
    fn frame_lists() {
        assert_eq!(parse_frame_list("1,3, 5", 5).unwrap(), vec![1, 3, 5]);
        assert_eq!(parse_frame_list("0", 5).unwrap_err().status, 400);
        assert_eq!(parse_frame_list("x", 5).unwrap_err().status, 400);
        assert_eq!(parse_frame_list("-1", 5).unwrap_err().status, 400);
        assert_eq!(parse_frame_list("6", 5).unwrap_err().status, 404);
    }

    #[test]
    fn delimits_frames_by_the_documented_rule() {
        // Fragments at item offsets 0, 108, 216 (value offset = item + 8).
        let f = [
            frag(108, 100, true),
            frag(216, 100, false),
            frag(324, 100, true),
        ];
        // BOT: frame 1 at 0, frame 2 at 216 (third item).
        let by_bot = frames_of(&[0, 216], &f, 2).unwrap();
        assert_eq!(by_bot, vec![vec![f[0], f[1]], vec![f[2]]]);
        // One fragment per frame.
        assert_eq!(frames_of(&[], &f, 3).unwrap().len(), 3);
        // Single frame.
        assert_eq!(frames_of(&[], &f, 1).unwrap(), vec![f.to_vec()]);
        // Markers.
        let by_marker = frames_of(&[], &f, 2).unwrap();
        assert_eq!(by_marker, by_bot);
        assert!(frames_of(&[], &f, 4).is_err());
    }
}
