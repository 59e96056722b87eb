//! A minimal, robust, pure DICOM reader for indexing.
//!
//! The archive keeps every object exactly as received; to index it, it needs
//! the attributes that come before Pixel Data and never the pixel data
//! itself. This module reads those attributes from an in-memory prefix of
//! the object and does no I/O.
//!
//! * [`parse_part10`] reads a DICOM file (PS3.10 §7): the 128-byte preamble,
//!   the `DICM` prefix, the File Meta Information (group 0002, always
//!   Explicit VR Little Endian, PS3.10 §7.1) and the data set in the
//!   transfer syntax the meta information names.
//! * [`parse_dataset`] reads a bare data set in a known transfer syntax, as
//!   a DIMSE C-STORE delivers it (PS3.7 §9.1.1); [`encode_file_meta`] builds
//!   the preamble and meta information to store it as a Part 10 file.
//!
//! Both stop at the top-level Pixel Data element ((7FE0,0010), or Float /
//! Double Float Pixel Data), record where it is ([`PixelDataInfo`]) and
//! return: the pixel data bytes need not be in the buffer.
//!
//! # Incremental use
//!
//! The caller streams the object to storage and keeps a growing prefix of
//! it. With `complete == false` the parsers return
//! [`ParseError::Incomplete`] whenever the prefix ends before the header
//! does; the caller appends bytes and calls again. Once the prefix reaches
//! past the Pixel Data element header, the result is the same as for the
//! whole object. An object without Pixel Data ends at the end of the buffer,
//! which is only known when the caller passes `complete == true`. The
//! prefix the parsers look at is capped at [`Limits::max_header_bytes`]
//! ([`ParseError::HeaderTooLarge`] beyond it).
//!
//! # Robustness
//!
//! The readers never panic and never allocate from a length they have not
//! checked against the buffer and the [`Limits`]: an element longer than
//! `max_element_len` is [`ParseError::TooLarge`] before anything is read,
//! sequences deeper than `max_sequence_depth` are [`ParseError::TooDeep`],
//! and more than `max_elements` elements (items and fragments included)
//! are [`ParseError::TooManyElements`]. The work is linear in the input.
//! Where real files bend the standard the reader bends with them and
//! reports a [`Warning`]: missing or wrong group length, implicit VR
//! elements inside explicit VR data sets, UN sequences (PS3.5 §6.2.2),
//! unknown character sets.
//!
//! # Text
//!
//! Text values are decoded with the data set's Specific Character Set
//! (0008,0005), inherited by nested items that do not carry their own; see
//! [`charset`] for the supported sets, ISO 2022 code extensions included.

pub mod charset;
mod dataset;
mod meta;
mod parse;
mod syntax;
pub mod tags;

pub use charset::SpecificCharacterSet;
pub use dataset::{DataSet, Element, Value};
pub use meta::{encode_file_meta, parse_dataset, parse_part10};
pub use syntax::{
    TransferSyntax, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

#[cfg(test)]
mod tests;

pub use parse::has_long_length;
use parse::TagFmt;

/// A Part 10 file's header: everything before Pixel Data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The File Meta Information (PS3.10 §7.1).
    pub meta: FileMeta,
    /// The data set, up to (not including) top-level Pixel Data.
    pub dataset: DataSet,
    /// The transfer syntax of the data set.
    pub syntax: TransferSyntax,
    /// Where top-level Pixel Data is, if the data set has it.
    pub pixel_data: Option<PixelDataInfo>,
    /// File offset of the first byte of the data set (just after group
    /// 0002). For deflated syntaxes, the first byte of the deflate stream.
    pub dataset_offset: u64,
    /// What was tolerated while reading, for the caller to log.
    pub warnings: Vec<Warning>,
}

/// A bare data set's header, as read by [`parse_dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSetHeader {
    /// The data set, up to (not including) top-level Pixel Data.
    pub dataset: DataSet,
    /// The transfer syntax it was read with.
    pub syntax: TransferSyntax,
    /// Where top-level Pixel Data is (offsets from the start of the buffer,
    /// or of the inflated stream for deflated syntaxes).
    pub pixel_data: Option<PixelDataInfo>,
    /// What was tolerated while reading, for the caller to log.
    pub warnings: Vec<Warning>,
}

/// The File Meta Information elements the archive uses (PS3.10 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// (0002,0010), without padding.
    pub transfer_syntax_uid: String,
    /// (0002,0002); empty if the file lacks it (then use the data set's
    /// SOP Class UID).
    pub media_storage_sop_class_uid: String,
    /// (0002,0003); empty if the file lacks it (then use the data set's
    /// SOP Instance UID).
    pub media_storage_sop_instance_uid: String,
    /// (0002,0012); empty if the file lacks it.
    pub implementation_class_uid: String,
    /// (0002,0013).
    pub implementation_version_name: Option<String>,
    /// (0002,0016).
    pub source_ae_title: Option<String>,
}

/// Where the top-level Pixel Data element is (PS3.5 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelDataInfo {
    /// Offset of the element's tag.
    pub offset: u64,
    /// Offset of the first value byte (the first item tag when
    /// encapsulated).
    pub value_offset: u64,
    /// Value length; `None` for undefined length (encapsulated, PS3.5 §A.4).
    pub length: Option<u32>,
    /// The VR: from the stream (OB, OW, OF, OD), or from the dictionary for
    /// implicit VR (OW for (7FE0,0010)).
    pub vr: [u8; 2],
    /// `true` when the data set is deflated (PS3.5 §A.5): the offsets then
    /// count bytes of the inflated data set stream (0 = its first byte),
    /// not of the file or buffer. Otherwise they are file offsets for
    /// [`parse_part10`] and buffer offsets for [`parse_dataset`].
    pub inflated: bool,
}

/// Something the reader tolerated; worth logging, not worth refusing the
/// object for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A Specific Character Set defined term we do not know.
    UnknownCharacterSet { term: String },
    /// The File Meta Information has no (0002,0000) group length.
    MissingGroupLength,
    /// (0002,0000) disagrees with the group 0002 elements actually present.
    GroupLengthMismatch { declared: u64, actual: u64 },
    /// A File Meta Information element that should be there is absent or
    /// empty.
    MissingMetaElement { tag: u32, name: &'static str },
    /// An element without a VR inside an explicit VR data set, read as
    /// implicit VR (as are any later ones; only the first is reported).
    ImplicitVrElement { tag: u32, offset: u64 },
    /// A value the dictionary calls a sequence could not be read as one;
    /// its raw bytes were kept with VR UN.
    SequenceKeptRaw {
        tag: u32,
        offset: u64,
        reason: String,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::UnknownCharacterSet { term } => {
                write!(f, "unknown Specific Character Set '{term}', decoded as ISO_IR 100")
            }
            Warning::MissingGroupLength => write!(
                f,
                "the file meta information has no group length (0002,0000); read group 0002 up to its last element"
            ),
            Warning::GroupLengthMismatch { declared, actual } => write!(
                f,
                "the file meta group length (0002,0000) says {declared} bytes but the group 0002 elements take {actual}; used the elements"
            ),
            Warning::MissingMetaElement { tag, name } => {
                write!(f, "the file meta information has no value for {name} {}", TagFmt(*tag))
            }
            Warning::ImplicitVrElement { tag, offset } => write!(
                f,
                "element {} at offset {offset} has no explicit VR although the transfer syntax is explicit VR; read it (and any like it) as implicit VR",
                TagFmt(*tag)
            ),
            Warning::SequenceKeptRaw { tag, offset, reason } => write!(
                f,
                "element {} at offset {offset} is not a readable sequence ({reason}); kept its bytes as UN",
                TagFmt(*tag)
            ),
        }
    }
}

/// Why an object could not be read. Offsets are byte offsets in the file
/// (or the buffer given to [`parse_dataset`]); inside a deflated data set
/// they count bytes of the inflated stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer ends before the header does and the caller said more
    /// bytes may come: call again with a longer prefix.
    #[error("incomplete: the header continues past the bytes received so far")]
    Incomplete,
    /// Not a Part 10 file (PS3.10 §7.1).
    #[error("{detail}: not a DICOM Part 10 file")]
    NotPart10 { detail: String },
    /// The File Meta Information has no Transfer Syntax UID.
    #[error(
        "the file meta information has no Transfer Syntax UID (0002,0010), so the data set encoding is unknown"
    )]
    MissingTransferSyntax,
    /// A transfer syntax this reader cannot decode.
    #[error("unsupported transfer syntax '{uid}'")]
    UnsupportedTransferSyntax { uid: String },
    /// An element longer than [`crate::Limits::max_element_len`].
    #[error("element {} at offset {offset} declares {len} bytes, beyond the {limit}-byte limit", TagFmt(*.tag))]
    TooLarge {
        tag: u32,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// The attributes before Pixel Data exceed
    /// [`crate::Limits::max_header_bytes`].
    #[error("the attributes before Pixel Data take more than the {limit}-byte header limit")]
    HeaderTooLarge { limit: u64 },
    /// A value runs past the end of a complete buffer.
    #[error(
        "element {} at offset {offset} declares {len} bytes but only {available} remain: the object is truncated",
        TagFmt(*.tag)
    )]
    Truncated {
        tag: u32,
        offset: u64,
        len: u64,
        available: u64,
    },
    /// A complete buffer ends inside an element header.
    #[error(
        "the object ends inside the element header at offset {offset}: the object is truncated"
    )]
    TruncatedHeader { offset: u64 },
    /// Sequences nested deeper than [`crate::Limits::max_sequence_depth`].
    #[error("sequence {} at offset {offset} nests deeper than the limit of {limit} levels", TagFmt(*.tag))]
    TooDeep { tag: u32, offset: u64, limit: usize },
    /// More elements than [`crate::Limits::max_elements`].
    #[error("more than {limit} elements (the element limit) by offset {offset}")]
    TooManyElements { offset: u64, limit: usize },
    /// The bytes do not follow the encoding rules of PS3.5.
    #[error("malformed data set at offset {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    /// The deflated data set (PS3.5 §A.5) is not a valid DEFLATE stream.
    #[error("the deflated data set starting at offset {offset} cannot be inflated: {reason}")]
    Deflate { offset: u64, reason: String },
}

/// The VR the standard dictionary (PS3.6) gives a tag, as used for implicit
/// VR data sets: `UN` for tags it does not know, LO for private creators,
/// UL for group lengths. Context-dependent VRs are resolved as US (US or
/// SS) and OW (OB or OW).
pub fn dictionary_vr(tag: u32) -> [u8; 2] {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    let t = dicom_core::Tag(tags::group(tag), tags::element(tag));
    match dicom_dictionary_std::StandardDataDictionary.by_tag(t) {
        Some(entry) => entry.vr().relaxed().to_bytes(),
        None => *b"UN",
    }
}
