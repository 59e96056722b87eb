//! Part 10 framing (PS3.10 §7.1): preamble, `DICM`, File Meta Information;
//! deflated data sets (PS3.5 §A.5); and the entry points.

use super::parse::{Body, Mode, Parser};
use super::{
    tags, DataSetHeader, FileMeta, Header, ParseError, SpecificCharacterSet, TransferSyntax,
    Warning,
};
use crate::Limits;
use flate2::{Decompress, FlushDecompress, Status};

/// Length of the preamble (PS3.10 §7.1).
const PREAMBLE_LEN: usize = 128;
/// Offset of the first File Meta Information element.
const META_START: usize = PREAMBLE_LEN + 4;
/// Size of the (0002,0000) element: tag, VR, 2-byte length, UL value.
const GROUP_LENGTH_ELEMENT_LEN: usize = 12;
/// First amount of a deflated data set inflated before trying to parse it.
const FIRST_INFLATE: usize = 64 * 1024;

/// Reads the header of a DICOM Part 10 file (PS3.10 §7): the 128-byte
/// preamble, `DICM`, the File Meta Information and the data set up to
/// top-level Pixel Data.
///
/// `buf` is the file or a prefix of it; `complete` says whether it is the
/// whole file. With `complete == false` a prefix that ends before the header
/// does gives [`ParseError::Incomplete`]. Only the first
/// [`Limits::max_header_bytes`] bytes are looked at.
///
/// The meta group is read as Explicit VR Little Endian while tags are in
/// group 0002, whatever (0002,0000) says (a missing or wrong group length
/// is only a [`Warning`]). A missing Transfer Syntax UID is
/// [`ParseError::MissingTransferSyntax`]; missing Media Storage SOP Class /
/// Instance UIDs are left empty.
///
/// For deflated transfer syntaxes (PS3.5 §A.5) the bytes after the meta
/// group are inflated — as much as the prefix holds — and the data set read
/// from the inflated stream; [`PixelDataInfo`](super::PixelDataInfo)
/// offsets then count bytes of that stream (its `inflated` flag is set).
pub fn parse_part10(buf: &[u8], complete: bool, limits: &Limits) -> Result<Header, ParseError> {
    capped(buf, complete, limits, |buf, complete| {
        parse_part10_capped(buf, complete, limits)
    })
}

/// Reads a bare data set (no preamble, no meta group) in a known transfer
/// syntax, as DIMSE C-STORE delivers it (PS3.7 §9.1.1, PS3.8 §9.3.1), up
/// to top-level Pixel Data. `complete` and the limits work as for
/// [`parse_part10`]; a deflated `syntax` means `buf` is the raw DEFLATE
/// stream.
pub fn parse_dataset(
    buf: &[u8],
    syntax: &TransferSyntax,
    complete: bool,
    limits: &Limits,
) -> Result<DataSetHeader, ParseError> {
    capped(buf, complete, limits, |buf, complete| {
        let body = parse_body(buf, 0, syntax, complete, limits)?;
        Ok(finish(
            body,
            syntax.clone(),
            |dataset, syntax, pixel_data, warnings| DataSetHeader {
                dataset,
                syntax,
                pixel_data,
                warnings,
            },
        ))
    })
}

/// Encodes the 128-byte zero preamble, `DICM` and the File Meta
/// Information group in Explicit VR Little Endian with a correct
/// (0002,0000) group length (PS3.10 §7.1), for wrapping a bare data set
/// (in `meta.transfer_syntax_uid`) into a Part 10 file: append the data
/// set's bytes to the result.
///
/// Writes (0002,0001) version `00 01`, (0002,0002), (0002,0003), (0002,0010),
/// (0002,0012), and (0002,0013) and (0002,0016) when present. UIDs are
/// padded with NUL, other strings with spaces, to even length. A string
/// longer than a 16-bit length allows (never the case for valid values) is
/// cut to fit.
pub fn encode_file_meta(meta: &FileMeta) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8], pad: u8) {
        let mut value = value.get(..0xFFFE).unwrap_or(value).to_vec();
        if value.len() % 2 == 1 {
            value.push(pad);
        }
        out.extend_from_slice(&tags::group(tag).to_le_bytes());
        out.extend_from_slice(&tags::element(tag).to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&value);
    }
    let mut group = Vec::new();
    element(
        &mut group,
        tags::FILE_META_INFORMATION_VERSION,
        b"OB",
        &[0, 1],
        0,
    );
    let uids = [
        (
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            &meta.media_storage_sop_class_uid,
        ),
        (
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            &meta.media_storage_sop_instance_uid,
        ),
        (tags::TRANSFER_SYNTAX_UID, &meta.transfer_syntax_uid),
        (
            tags::IMPLEMENTATION_CLASS_UID,
            &meta.implementation_class_uid,
        ),
    ];
    for (tag, uid) in uids {
        element(&mut group, tag, b"UI", uid.as_bytes(), 0);
    }
    if let Some(name) = &meta.implementation_version_name {
        element(
            &mut group,
            tags::IMPLEMENTATION_VERSION_NAME,
            b"SH",
            name.as_bytes(),
            b' ',
        );
    }
    if let Some(ae) = &meta.source_ae_title {
        element(
            &mut group,
            tags::SOURCE_APPLICATION_ENTITY_TITLE,
            b"AE",
            ae.as_bytes(),
            b' ',
        );
    }
    let mut out = vec![0u8; PREAMBLE_LEN];
    out.extend_from_slice(b"DICM");
    let mut length = Vec::with_capacity(GROUP_LENGTH_ELEMENT_LEN);
    element(
        &mut length,
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        b"UL",
        &(group.len() as u32).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&length);
    out.extend_from_slice(&group);
    out
}

/// Runs `f` on at most `max_header_bytes` of `buf`, turning "needs more"
/// beyond that cap into [`ParseError::HeaderTooLarge`].
fn capped<T>(
    buf: &[u8],
    complete: bool,
    limits: &Limits,
    f: impl FnOnce(&[u8], bool) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let cap = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    let (view, complete) = match buf.get(..cap) {
        Some(view) if view.len() < buf.len() => (view, false),
        _ => (buf, complete),
    };
    match f(view, complete) {
        Err(ParseError::Incomplete) if view.len() >= cap => Err(ParseError::HeaderTooLarge {
            limit: limits.max_header_bytes,
        }),
        r => r,
    }
}

fn parse_part10_capped(buf: &[u8], complete: bool, limits: &Limits) -> Result<Header, ParseError> {
    match buf.get(PREAMBLE_LEN..META_START) {
        Some(b"DICM") => {}
        Some(_) => {
            return Err(ParseError::NotPart10 {
                detail: "no DICM prefix at offset 128".to_owned(),
            })
        }
        None if !complete => return Err(ParseError::Incomplete),
        None => {
            return Err(ParseError::NotPart10 {
                detail: format!(
                    "only {} bytes, fewer than the 128-byte preamble and DICM prefix",
                    buf.len()
                ),
            })
        }
    }
    let meta_body = Parser::new(buf, complete, limits, false).parse_meta(META_START)?;
    let mut warnings = meta_body.warnings;
    let meta_ds = meta_body.dataset;
    let dataset_offset = meta_body.end;

    let actual = dataset_offset.saturating_sub(META_START);
    match meta_ds.u32(tags::FILE_META_INFORMATION_GROUP_LENGTH) {
        None => warnings.push(Warning::MissingGroupLength),
        Some(declared) => {
            let actual = actual.saturating_sub(GROUP_LENGTH_ELEMENT_LEN) as u64;
            if u64::from(declared) != actual {
                warnings.push(Warning::GroupLengthMismatch {
                    declared: u64::from(declared),
                    actual,
                });
            }
        }
    }

    let Some(transfer_syntax_uid) = meta_ds.uid(tags::TRANSFER_SYNTAX_UID) else {
        return Err(ParseError::MissingTransferSyntax);
    };
    let mut required = |tag, name| -> String {
        meta_ds.uid(tag).unwrap_or_else(|| {
            warnings.push(Warning::MissingMetaElement { tag, name });
            String::new()
        })
    };
    let meta = FileMeta {
        media_storage_sop_class_uid: required(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            "Media Storage SOP Class UID",
        ),
        media_storage_sop_instance_uid: required(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            "Media Storage SOP Instance UID",
        ),
        implementation_class_uid: required(
            tags::IMPLEMENTATION_CLASS_UID,
            "Implementation Class UID",
        ),
        implementation_version_name: meta_ds.string(tags::IMPLEMENTATION_VERSION_NAME),
        source_ae_title: meta_ds.string(tags::SOURCE_APPLICATION_ENTITY_TITLE),
        transfer_syntax_uid,
    };
    let Some(syntax) = TransferSyntax::from_uid(&meta.transfer_syntax_uid) else {
        return Err(ParseError::UnsupportedTransferSyntax {
            uid: meta.transfer_syntax_uid,
        });
    };

    let mut body = parse_body(buf, dataset_offset, &syntax, complete, limits)?;
    warnings.append(&mut body.warnings);
    body.warnings = warnings;
    Ok(finish(
        body,
        syntax,
        |dataset, syntax, pixel_data, warnings| Header {
            meta,
            dataset,
            syntax,
            pixel_data,
            dataset_offset: dataset_offset as u64,
            warnings,
        },
    ))
}

/// Resolves character sets and hands the pieces to `build`.
fn finish<T>(
    body: Body,
    syntax: TransferSyntax,
    build: impl FnOnce(super::DataSet, TransferSyntax, Option<super::PixelDataInfo>, Vec<Warning>) -> T,
) -> T {
    let Body {
        mut dataset,
        pixel_data,
        mut warnings,
        ..
    } = body;
    dataset.resolve_charsets(&SpecificCharacterSet::default(), &mut warnings);
    build(dataset, syntax, pixel_data, warnings)
}

/// Reads the data set that starts at `start` in `buf`.
fn parse_body(
    buf: &[u8],
    start: usize,
    syntax: &TransferSyntax,
    complete: bool,
    limits: &Limits,
) -> Result<Body, ParseError> {
    if syntax.deflated() {
        return parse_deflated(
            buf.get(start..).unwrap_or_default(),
            start,
            complete,
            limits,
        );
    }
    let mode = Mode {
        explicit: syntax.explicit_vr(),
        big_endian: syntax.big_endian(),
    };
    Parser::new(buf, complete, limits, false).parse_dataset(start, mode)
}

/// Inflates a deflated data set (raw DEFLATE, RFC 1951; PS3.5 §A.5) and
/// reads it. It inflates a little, tries to parse, and inflates more
/// (doubling) only while the parse needs more, so the work stays
/// proportional to the header rather than to the whole object, and the
/// inflated size is capped at `max_header_bytes`.
fn parse_deflated(
    input: &[u8],
    offset: usize,
    complete: bool,
    limits: &Limits,
) -> Result<Body, ParseError> {
    let cap = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::new();
    let mut target = FIRST_INFLATE.min(cap);
    loop {
        let ended =
            inflate(&mut inflater, input, &mut out, target).map_err(|e| ParseError::Deflate {
                offset: offset as u64,
                reason: e.to_string(),
            })?;
        // Short of the target without reaching the end: the input ran out.
        let starved = !ended && out.len() < target;
        let result = Parser::new(&out, ended || (complete && starved), limits, true)
            .parse_dataset(0, Mode::EXPLICIT_LE);
        match result {
            Err(ParseError::Incomplete) if !ended && !starved => {
                if out.len() >= cap {
                    return Err(ParseError::HeaderTooLarge {
                        limit: limits.max_header_bytes,
                    });
                }
                target = target.saturating_mul(2).min(cap);
            }
            r => return r,
        }
    }
}

/// Inflates from where `inflater` stopped until `out` holds `target` bytes,
/// the stream ends (`Ok(true)`), or the input runs out.
fn inflate(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    target: usize,
) -> Result<bool, flate2::DecompressError> {
    let mut chunk = [0u8; 16 * 1024];
    while out.len() < target {
        let want = (target - out.len()).min(chunk.len());
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let rest = usize::try_from(in_before)
            .ok()
            .and_then(|consumed| input.get(consumed..))
            .unwrap_or_default();
        let status = inflater.decompress(rest, &mut chunk[..want], FlushDecompress::None)?;
        let produced = usize::try_from(inflater.total_out() - out_before).unwrap_or(0);
        out.extend_from_slice(chunk.get(..produced).unwrap_or_default());
        if status == Status::StreamEnd {
            return Ok(true);
        }
        if produced == 0 && inflater.total_in() == in_before {
            break;
        }
    }
    Ok(false)
}
