//! The data set reader: elements, sequences, items and fragments
//! (PS3.5 §7), stopping at top-level Pixel Data.
//!
//! Every read is bounds-checked against the buffer or against the enclosing
//! defined-length sequence or item; lengths are checked against the
//! [`Limits`] before anything is allocated. Each byte of the input is read a
//! bounded number of times (once, plus once per enclosing level where a
//! tolerated re-interpretation is tried), and recursion is bounded by the
//! sequence depth limit.
//!
//! The parser is prefix-consistent: on a prefix of an object it makes the
//! same decisions as on the whole object until it needs a byte beyond the
//! prefix, at which point it returns [`ParseError::Incomplete`] (unless the
//! caller declared the buffer complete). Incomplete is never swallowed by a
//! fallback, so a prefix never yields a different result than the whole.

use super::tags::{self, tag};
use super::{dictionary_vr, DataSet, Element, ParseError, PixelDataInfo, Value, Warning};
use crate::Limits;

/// The value length meaning "undefined, look for a delimiter" (PS3.5 §7.1).
pub(crate) const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Sequence nesting is capped here whatever the limits say, to keep the
/// recursion well inside any thread's stack.
const HARD_MAX_DEPTH: usize = 256;

/// At most this many warnings are kept per parse.
const MAX_WARNINGS: usize = 64;

/// VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length
/// (PS3.5 §7.1.2, Table 7.1-1).
pub fn has_long_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Top-level pixel data elements, at which parsing stops.
pub(crate) fn is_pixel_data(t: u32) -> bool {
    matches!(
        t,
        tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
    )
}

/// Pixel data anywhere (including the retired Variable Pixel Data groups
/// 7F00-7FFE), whose undefined-length form holds fragments, not items.
fn holds_fragments(t: u32) -> bool {
    is_pixel_data(t) || (tags::group(t) & 0xFF01 == 0x7F00 && tags::element(t) == 0x0010)
}

/// `(gggg,eeee)`, for messages.
pub(crate) struct TagFmt(pub u32);

impl std::fmt::Display for TagFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "({:04X},{:04X})",
            tags::group(self.0),
            tags::element(self.0)
        )
    }
}

/// Byte order and VR encoding of the data set being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode {
    pub explicit: bool,
    pub big_endian: bool,
}

impl Mode {
    pub const EXPLICIT_LE: Mode = Mode {
        explicit: true,
        big_endian: false,
    };
    /// The encoding of sequences sent as UN (PS3.5 §6.2.2).
    pub const IMPLICIT_LE: Mode = Mode {
        explicit: false,
        big_endian: false,
    };

    fn u16(self, b: [u8; 2]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn tag(self, b: [u8; 4]) -> u32 {
        tag(self.u16([b[0], b[1]]), self.u16([b[2], b[3]]))
    }
}

/// The defined-length construct a read must stay inside.
#[derive(Debug, Clone, Copy)]
enum Enclosing {
    Sequence { tag: u32, offset: usize },
    Item { offset: usize },
}

impl std::fmt::Display for Enclosing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Enclosing::Sequence { tag, offset } => {
                write!(f, "sequence {} at offset {offset}", TagFmt(*tag))
            }
            Enclosing::Item { offset } => write!(f, "item (FFFE,E000) at offset {offset}"),
        }
    }
}

/// Where reads must end: the end of the buffer (`enclosing` is `None`), or
/// the end of a defined-length sequence or item that is wholly in the buffer.
#[derive(Debug, Clone, Copy)]
struct Bound {
    end: usize,
    enclosing: Option<Enclosing>,
}

/// What ends the run of elements being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// The top-level data set: ends at Pixel Data or at the end of the buffer.
    Top,
    /// File meta information: ends at the first tag outside group 0002.
    Meta,
    /// A defined-length item: ends at its end.
    Bounded,
    /// An undefined-length item: ends at the item delimitation item.
    UntilItemDelimiter,
}

struct ElemHeader {
    tag: u32,
    vr: [u8; 2],
    len: u32,
    header_len: usize,
    /// The VR came from the dictionary, not from the stream.
    implicit: bool,
}

struct Parsed {
    elements: Vec<Element>,
    end: usize,
    pixel_data: Option<PixelDataInfo>,
}

/// What a top-level parse produced.
pub(crate) struct Body {
    pub dataset: DataSet,
    /// Where the parse stopped: the Pixel Data element, or the end of the
    /// meta group / buffer.
    pub end: usize,
    pub pixel_data: Option<PixelDataInfo>,
    pub warnings: Vec<Warning>,
}

/// Errors after which no re-interpretation is attempted: they are about the
/// input as a whole, not about one reading of some bytes.
fn is_fatal(e: &ParseError) -> bool {
    matches!(
        e,
        ParseError::Incomplete
            | ParseError::TooDeep { .. }
            | ParseError::TooManyElements { .. }
            | ParseError::HeaderTooLarge { .. }
    )
}

pub(crate) struct Parser<'a> {
    buf: &'a [u8],
    complete: bool,
    limits: &'a Limits,
    max_depth: usize,
    elements: usize,
    warnings: Vec<Warning>,
    inflated: bool,
}

impl<'a> Parser<'a> {
    /// `inflated` marks a buffer that is an inflated deflate stream, for
    /// [`PixelDataInfo::inflated`].
    pub(crate) fn new(buf: &'a [u8], complete: bool, limits: &'a Limits, inflated: bool) -> Self {
        Parser {
            buf,
            complete,
            limits,
            max_depth: limits.max_sequence_depth.min(HARD_MAX_DEPTH),
            elements: 0,
            warnings: Vec::new(),
            inflated,
        }
    }

    /// Reads a top-level data set from `start` (Pixel Data or end of buffer).
    pub(crate) fn parse_dataset(mut self, start: usize, mode: Mode) -> Result<Body, ParseError> {
        self.parse_top(start, mode, Ctx::Top)
    }

    /// Reads the group 0002 elements from `start` (explicit VR LE).
    pub(crate) fn parse_meta(mut self, start: usize) -> Result<Body, ParseError> {
        self.parse_top(start, Mode::EXPLICIT_LE, Ctx::Meta)
    }

    fn parse_top(&mut self, start: usize, mode: Mode, ctx: Ctx) -> Result<Body, ParseError> {
        let bound = Bound {
            end: self.buf.len(),
            enclosing: None,
        };
        let parsed = self.parse_elements(start, bound, ctx, mode, 0)?;
        Ok(Body {
            dataset: DataSet::from_parsed(parsed.elements, mode.big_endian),
            end: parsed.end,
            pixel_data: parsed.pixel_data,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn warn(&mut self, w: Warning) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }

    fn count(&mut self, pos: usize) -> Result<(), ParseError> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(ParseError::TooManyElements {
                offset: pos as u64,
                limit: self.limits.max_elements,
            });
        }
        Ok(())
    }

    /// `N` bytes at `pos`, part of the header of the element or item that
    /// starts at `elem`; they must lie inside `bound`.
    fn fixed<const N: usize>(
        &self,
        pos: usize,
        elem: usize,
        bound: Bound,
    ) -> Result<[u8; N], ParseError> {
        let bytes = pos
            .checked_add(N)
            .filter(|&end| end <= bound.end)
            .and_then(|end| self.buf.get(pos..end))
            .and_then(|s| <[u8; N]>::try_from(s).ok());
        match bytes {
            Some(b) => Ok(b),
            None => Err(match bound.enclosing {
                Some(enclosing) => ParseError::Malformed {
                    offset: elem as u64,
                    reason: format!(
                        "the element header at offset {elem} runs past the end of the {enclosing}, which ends at offset {}",
                        bound.end
                    ),
                },
                None if self.complete => ParseError::TruncatedHeader { offset: elem as u64 },
                None => ParseError::Incomplete,
            }),
        }
    }

    /// The end of a value of `len` bytes at `vstart` (element header at
    /// `elem`), which must lie inside `bound`.
    fn value_end(
        &self,
        t: u32,
        elem: usize,
        vstart: usize,
        len: u32,
        bound: Bound,
    ) -> Result<usize, ParseError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| vstart.checked_add(l))
            .filter(|&end| end <= bound.end);
        match end {
            Some(end) => Ok(end),
            None => Err(match bound.enclosing {
                Some(enclosing) => ParseError::Malformed {
                    offset: elem as u64,
                    reason: format!(
                        "element {} at offset {elem} declares {len} bytes, past the end of the {enclosing}, which ends at offset {}",
                        TagFmt(t),
                        bound.end
                    ),
                },
                None if self.complete => ParseError::Truncated {
                    tag: t,
                    offset: elem as u64,
                    len: u64::from(len),
                    available: bound.end.saturating_sub(vstart) as u64,
                },
                None => ParseError::Incomplete,
            }),
        }
    }

    fn check_len(&self, t: u32, elem: usize, len: u32) -> Result<(), ParseError> {
        if u64::from(len) > self.limits.max_element_len {
            return Err(ParseError::TooLarge {
                tag: t,
                offset: elem as u64,
                len: u64::from(len),
                limit: self.limits.max_element_len,
            });
        }
        Ok(())
    }

    fn read_header(
        &mut self,
        pos: usize,
        bound: Bound,
        mode: Mode,
    ) -> Result<ElemHeader, ParseError> {
        let t = mode.tag(self.fixed::<4>(pos, pos, bound)?);
        if tags::group(t) == 0xFFFE {
            // Items and delimiters never carry a VR (PS3.5 §7.5).
            let len = mode.u32(self.fixed::<4>(pos + 4, pos, bound)?);
            return Ok(ElemHeader {
                tag: t,
                vr: [0, 0],
                len,
                header_len: 8,
                implicit: true,
            });
        }
        if mode.explicit {
            let vr = self.fixed::<2>(pos + 4, pos, bound)?;
            if vr.iter().all(u8::is_ascii_uppercase) {
                if has_long_length(vr) {
                    let len = mode.u32(self.fixed::<4>(pos + 8, pos, bound)?);
                    return Ok(ElemHeader {
                        tag: t,
                        vr,
                        len,
                        header_len: 12,
                        implicit: false,
                    });
                }
                let len = mode.u16(self.fixed::<2>(pos + 6, pos, bound)?);
                return Ok(ElemHeader {
                    tag: t,
                    vr,
                    len: u32::from(len),
                    header_len: 8,
                    implicit: false,
                });
            }
            // Not a VR: some writers slip implicit-VR elements into explicit
            // data sets (or write implicit VR under an explicit syntax). Read
            // this one as implicit; report the first such element only.
            if !self
                .warnings
                .iter()
                .any(|w| matches!(w, Warning::ImplicitVrElement { .. }))
            {
                self.warn(Warning::ImplicitVrElement {
                    tag: t,
                    offset: pos as u64,
                });
            }
        }
        let len = mode.u32(self.fixed::<4>(pos + 4, pos, bound)?);
        Ok(ElemHeader {
            tag: t,
            vr: dictionary_vr(t),
            len,
            header_len: 8,
            implicit: true,
        })
    }

    fn parse_elements(
        &mut self,
        start: usize,
        bound: Bound,
        ctx: Ctx,
        mode: Mode,
        depth: usize,
    ) -> Result<Parsed, ParseError> {
        let mut elements = Vec::new();
        let mut pos = start;
        loop {
            let done = |elements| {
                Ok(Parsed {
                    elements,
                    end: pos,
                    pixel_data: None,
                })
            };
            match ctx {
                Ctx::Bounded if pos >= bound.end => return done(elements),
                Ctx::Top | Ctx::Meta if pos >= bound.end => {
                    return if self.complete {
                        done(elements)
                    } else {
                        Err(ParseError::Incomplete)
                    };
                }
                _ => {}
            }
            if ctx == Ctx::Meta {
                let group = mode.u16(self.fixed::<2>(pos, pos, bound)?);
                if group != 0x0002 {
                    return done(elements);
                }
            }
            let h = self.read_header(pos, bound, mode)?;
            if tags::group(h.tag) == 0xFFFE {
                if h.tag == tags::ITEM_DELIMITATION_ITEM && ctx == Ctx::UntilItemDelimiter {
                    return Ok(Parsed {
                        elements,
                        end: pos + 8,
                        pixel_data: None,
                    });
                }
                return Err(ParseError::Malformed {
                    offset: pos as u64,
                    reason: format!(
                        "unexpected {} at offset {pos} among the elements of a data set",
                        TagFmt(h.tag)
                    ),
                });
            }
            if ctx == Ctx::Top && is_pixel_data(h.tag) {
                return Ok(Parsed {
                    elements,
                    end: pos,
                    pixel_data: Some(PixelDataInfo {
                        offset: pos as u64,
                        value_offset: (pos + h.header_len) as u64,
                        length: (h.len != UNDEFINED).then_some(h.len),
                        vr: h.vr,
                        inflated: self.inflated,
                    }),
                });
            }
            self.count(pos)?;
            let (value, vr, next) = self.read_value(&h, pos, bound, mode, depth)?;
            elements.push(Element {
                tag: h.tag,
                vr,
                value,
            });
            pos = next;
        }
    }

    fn read_value(
        &mut self,
        h: &ElemHeader,
        pos: usize,
        bound: Bound,
        mode: Mode,
        depth: usize,
    ) -> Result<(Value, [u8; 2], usize), ParseError> {
        let vstart = pos + h.header_len;
        if h.len == UNDEFINED {
            return self.read_undefined(h, pos, vstart, bound, mode, depth);
        }
        if &h.vr == b"SQ" {
            let end = self.value_end(h.tag, pos, vstart, h.len, bound)?;
            let region = Bound {
                end,
                enclosing: Some(Enclosing::Sequence {
                    tag: h.tag,
                    offset: pos,
                }),
            };
            if h.implicit {
                // Only the dictionary says SQ: the bytes may be something
                // else (a private or mis-encoded value).
                return self.attempt_items(h, pos, vstart, region, mode, depth);
            }
            let (items, _) =
                self.parse_items((h.tag, pos), vstart, region, true, mode, depth + 1)?;
            return Ok((Value::Sequence(items), h.vr, end));
        }
        self.check_len(h.tag, pos, h.len)?;
        let end = self.value_end(h.tag, pos, vstart, h.len, bound)?;
        if &h.vr == b"UN" && dictionary_vr(h.tag) == *b"SQ" {
            // A sequence that went through a system that did not know it:
            // its value is implicit VR little endian (PS3.5 §6.2.2).
            let region = Bound {
                end,
                enclosing: Some(Enclosing::Sequence {
                    tag: h.tag,
                    offset: pos,
                }),
            };
            return self.attempt_items(h, pos, vstart, region, Mode::IMPLICIT_LE, depth);
        }
        let bytes = self.buf.get(vstart..end).unwrap_or_default().to_vec();
        Ok((Value::Bytes(bytes), h.vr, end))
    }

    /// Tries to read a defined-length value as a sequence; if it is not one,
    /// keeps the raw bytes with VR UN.
    fn attempt_items(
        &mut self,
        h: &ElemHeader,
        pos: usize,
        vstart: usize,
        region: Bound,
        mode: Mode,
        depth: usize,
    ) -> Result<(Value, [u8; 2], usize), ParseError> {
        let (saved_count, saved_warnings) = (self.elements, self.warnings.len());
        match self.parse_items((h.tag, pos), vstart, region, true, mode, depth + 1) {
            Ok((items, _)) => Ok((Value::Sequence(items), *b"SQ", region.end)),
            Err(e) if is_fatal(&e) => Err(e),
            Err(e) => {
                self.elements = saved_count;
                self.warnings.truncate(saved_warnings);
                self.check_len(h.tag, pos, h.len)?;
                self.warn(Warning::SequenceKeptRaw {
                    tag: h.tag,
                    offset: pos as u64,
                    reason: e.to_string(),
                });
                let bytes = self
                    .buf
                    .get(vstart..region.end)
                    .unwrap_or_default()
                    .to_vec();
                Ok((Value::Bytes(bytes), *b"UN", region.end))
            }
        }
    }

    fn read_undefined(
        &mut self,
        h: &ElemHeader,
        pos: usize,
        vstart: usize,
        bound: Bound,
        mode: Mode,
        depth: usize,
    ) -> Result<(Value, [u8; 2], usize), ParseError> {
        if &h.vr == b"SQ" {
            let (items, end) =
                self.parse_items((h.tag, pos), vstart, bound, false, mode, depth + 1)?;
            return Ok((Value::Sequence(items), h.vr, end));
        }
        if holds_fragments(h.tag) {
            // Encapsulated pixel data below the top level (an icon image).
            let (fragments, end) = self.parse_fragments(h.tag, pos, vstart, bound, mode)?;
            return Ok((Value::Fragments(fragments), h.vr, end));
        }
        // UN of undefined length is an implicit VR little endian sequence
        // (PS3.5 §6.2.2); so, in practice, are OB/OW of undefined length
        // outside pixel data. Anything else of undefined length is read as a
        // sequence in the data set's own encoding. Failing that: fragments.
        let seq_mode = match &h.vr {
            b"UN" | b"OB" | b"OW" if !h.implicit => Mode::IMPLICIT_LE,
            _ => mode,
        };
        let (saved_count, saved_warnings) = (self.elements, self.warnings.len());
        let first = match self.parse_items((h.tag, pos), vstart, bound, false, seq_mode, depth + 1)
        {
            Ok((items, end)) => return Ok((Value::Sequence(items), *b"SQ", end)),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => e,
        };
        self.elements = saved_count;
        self.warnings.truncate(saved_warnings);
        match self.parse_fragments(h.tag, pos, vstart, bound, mode) {
            Ok((fragments, end)) => Ok((Value::Fragments(fragments), h.vr, end)),
            Err(e) if is_fatal(&e) => Err(e),
            Err(_) => Err(first),
        }
    }

    /// Items of a sequence starting at `start`: up to the end of `bound` for
    /// a `defined` length (then `bound` is the sequence's own extent), up to
    /// the sequence delimitation item otherwise (then `bound` is the extent
    /// of whatever encloses the sequence).
    fn parse_items(
        &mut self,
        (seq_tag, seq_pos): (u32, usize),
        start: usize,
        bound: Bound,
        defined: bool,
        mode: Mode,
        depth: usize,
    ) -> Result<(Vec<DataSet>, usize), ParseError> {
        if depth > self.max_depth {
            return Err(ParseError::TooDeep {
                tag: seq_tag,
                offset: seq_pos as u64,
                limit: self.max_depth,
            });
        }
        let mut items = Vec::new();
        let mut pos = start;
        loop {
            if defined && pos >= bound.end {
                return Ok((items, pos));
            }
            let t = mode.tag(self.fixed::<4>(pos, pos, bound)?);
            let len = mode.u32(self.fixed::<4>(pos + 4, pos, bound)?);
            match t {
                tags::ITEM => {
                    self.count(pos)?;
                    let body = pos + 8;
                    if len == UNDEFINED {
                        let parsed = self.parse_elements(body, bound, Ctx::UntilItemDelimiter, mode, depth)?;
                        items.push(DataSet::from_parsed(parsed.elements, mode.big_endian));
                        pos = parsed.end;
                    } else {
                        let end = self.value_end(t, pos, body, len, bound)?;
                        let item = Bound {
                            end,
                            enclosing: Some(Enclosing::Item { offset: pos }),
                        };
                        let parsed = self.parse_elements(body, item, Ctx::Bounded, mode, depth)?;
                        items.push(DataSet::from_parsed(parsed.elements, mode.big_endian));
                        pos = end;
                    }
                }
                tags::SEQUENCE_DELIMITATION_ITEM if !defined => return Ok((items, pos + 8)),
                // A delimiter inside a defined-length sequence is redundant;
                // skip it.
                tags::SEQUENCE_DELIMITATION_ITEM => pos += 8,
                other => {
                    return Err(ParseError::Malformed {
                        offset: pos as u64,
                        reason: format!(
                            "expected an item (FFFE,E000) in sequence {} at offset {seq_pos}, found {} at offset {pos}",
                            TagFmt(seq_tag),
                            TagFmt(other)
                        ),
                    })
                }
            }
        }
    }

    /// Fragments of encapsulated data (PS3.5 §A.4): defined-length items up
    /// to the sequence delimitation item.
    fn parse_fragments(
        &mut self,
        t: u32,
        elem: usize,
        start: usize,
        bound: Bound,
        mode: Mode,
    ) -> Result<(Vec<Vec<u8>>, usize), ParseError> {
        let mut fragments = Vec::new();
        let mut pos = start;
        loop {
            let item = mode.tag(self.fixed::<4>(pos, pos, bound)?);
            let len = mode.u32(self.fixed::<4>(pos + 4, pos, bound)?);
            match item {
                tags::ITEM if len == UNDEFINED => {
                    return Err(ParseError::Malformed {
                        offset: pos as u64,
                        reason: format!(
                            "fragment item at offset {pos} of {} (offset {elem}) has an undefined length",
                            TagFmt(t)
                        ),
                    })
                }
                tags::ITEM => {
                    self.check_len(item, pos, len)?;
                    let end = self.value_end(item, pos, pos + 8, len, bound)?;
                    self.count(pos)?;
                    fragments.push(self.buf.get(pos + 8..end).unwrap_or_default().to_vec());
                    pos = end;
                }
                tags::SEQUENCE_DELIMITATION_ITEM => return Ok((fragments, pos + 8)),
                other => {
                    return Err(ParseError::Malformed {
                        offset: pos as u64,
                        reason: format!(
                            "expected a fragment item (FFFE,E000) in {} at offset {elem}, found {} at offset {pos}",
                            TagFmt(t),
                            TagFmt(other)
                        ),
                    })
                }
            }
        }
    }
}
