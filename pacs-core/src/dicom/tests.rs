//! Tests of the reader on hand-built objects, a bounded fuzz run, and an
//! ignored walk over a real-world corpus (`PACS_CORPUS_DIR`).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::Limits;

// ---- builders -------------------------------------------------------------

fn long_vr(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
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

fn pad(value: &[u8], vr: &[u8; 2]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" || vr == b"OB" || vr == b"UN" {
            0
        } else {
            b' '
        });
    }
    v
}

/// An Explicit VR element (little or big endian), value padded to even length.
fn ex_any(be: bool, tag: u32, vr: &[u8; 2], value: &[u8], len: Option<u32>) -> Vec<u8> {
    let value = pad(value, vr);
    let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = Vec::new();
    out.extend(u16b(tags::group(tag)));
    out.extend(u16b(tags::element(tag)));
    out.extend(vr);
    let len = len.unwrap_or(value.len() as u32);
    if long_vr(vr) {
        out.extend([0, 0]);
        out.extend(u32b(len));
    } else {
        out.extend(u16b(len as u16));
    }
    out.extend(value);
    out
}

fn ex(tag: u32, vr: &[u8; 2], value: &str) -> Vec<u8> {
    ex_any(false, tag, vr, value.as_bytes(), None)
}

fn exb(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    ex_any(false, tag, vr, value, None)
}

/// An Implicit VR Little Endian element.
fn im(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tags::group(tag).to_le_bytes());
    out.extend(tags::element(tag).to_le_bytes());
    out.extend((value.len() as u32).to_le_bytes());
    out.extend(value);
    out
}

fn raw_tag(tag: u32, len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tags::group(tag).to_le_bytes());
    out.extend(tags::element(tag).to_le_bytes());
    out.extend(len.to_le_bytes());
    out
}

fn item(content: &[u8]) -> Vec<u8> {
    let mut out = raw_tag(tags::ITEM, content.len() as u32);
    out.extend(content);
    out
}

fn item_undef(content: &[u8]) -> Vec<u8> {
    let mut out = raw_tag(tags::ITEM, 0xFFFF_FFFF);
    out.extend(content);
    out.extend(raw_tag(tags::ITEM_DELIMITATION_ITEM, 0));
    out
}

fn sq(tag: u32, items: &[u8]) -> Vec<u8> {
    ex_any(false, tag, b"SQ", items, None)
}

fn sq_undef(tag: u32, vr: &[u8; 2], items: &[u8]) -> Vec<u8> {
    let mut out = ex_any(false, tag, vr, &[], Some(0xFFFF_FFFF));
    out.extend(items);
    out.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
    out
}

fn meta(ts: &str) -> FileMeta {
    FileMeta {
        transfer_syntax_uid: ts.to_owned(),
        media_storage_sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".to_owned(),
        media_storage_sop_instance_uid: "1.2.3.4.5".to_owned(),
        implementation_class_uid: "1.2.3.999".to_owned(),
        implementation_version_name: Some("SEN_PACS_0".to_owned()),
        source_ae_title: Some("MODALITY".to_owned()),
    }
}

fn part10(ts: &str, body: &[u8]) -> Vec<u8> {
    let mut out = encode_file_meta(&meta(ts));
    out.extend(body);
    out
}

/// A plain explicit VR LE body with text, numbers, a nested sequence and
/// native pixel data.
fn sample_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 100"));
    b.extend(ex(tags::IMAGE_TYPE, b"CS", "ORIGINAL\\PRIMARY"));
    b.extend(ex(tags::SOP_CLASS_UID, b"UI", "1.2.840.10008.5.1.4.1.1.7"));
    b.extend(ex(tags::SOP_INSTANCE_UID, b"UI", "1.2.3.4.5"));
    b.extend(ex(tags::STUDY_DATE, b"DA", "20240131"));
    b.extend(ex(tags::MODALITY, b"CS", "OT"));
    let mut req = Vec::new();
    req.extend(ex(tags::SCHEDULED_PROCEDURE_STEP_ID, b"SH", "SPS1"));
    req.extend(ex(tags::REQUESTED_PROCEDURE_ID, b"SH", "RP1"));
    let mut pn = ex_any(false, tags::PATIENT_NAME, b"PN", b"Buc^J\xe9r\xf4me", None);
    pn.truncate(pn.len());
    b.extend(pn);
    b.extend(ex(tags::PATIENT_ID, b"LO", " ID42 "));
    b.extend(ex(tags::STUDY_INSTANCE_UID, b"UI", "1.2.3"));
    b.extend(ex(tags::SERIES_INSTANCE_UID, b"UI", "1.2.3.4"));
    b.extend(ex(tags::SERIES_NUMBER, b"IS", " 7"));
    b.extend(ex(tags::INSTANCE_NUMBER, b"IS", "+12"));
    b.extend(ex(tags::NUMBER_OF_FRAMES, b"IS", "1"));
    b.extend(exb(tags::ROWS, b"US", &2u16.to_le_bytes()));
    b.extend(exb(tags::COLUMNS, b"US", &3u16.to_le_bytes()));
    b.extend(exb(tags::BITS_ALLOCATED, b"US", &8u16.to_le_bytes()));
    b.extend(sq(tags::REQUEST_ATTRIBUTES_SEQUENCE, &item(&req)));
    b.extend(exb(tags::PIXEL_DATA, b"OB", &[1, 2, 3, 4, 5, 6]));
    b.extend(ex(0xFFFC_FFFC, b"OB", "padding"));
    b
}

fn limits() -> Limits {
    Limits::default()
}

// ---- basic reading ----------------------------------------------------------

#[test]
fn reads_explicit_le_part10() {
    let file = part10(EXPLICIT_VR_LITTLE_ENDIAN, &sample_body());
    let h = parse_part10(&file, true, &limits()).unwrap();
    assert_eq!(h.meta, meta(EXPLICIT_VR_LITTLE_ENDIAN));
    assert_eq!(h.syntax, TransferSyntax::explicit_vr_little_endian());
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    let ds = &h.dataset;
    assert_eq!(ds.string(tags::PATIENT_NAME).as_deref(), Some("Buc^Jérôme"));
    assert_eq!(ds.string(tags::PATIENT_ID).as_deref(), Some("ID42"));
    assert_eq!(ds.uid(tags::SOP_INSTANCE_UID).as_deref(), Some("1.2.3.4.5"));
    assert_eq!(ds.strings(tags::IMAGE_TYPE), vec!["ORIGINAL", "PRIMARY"]);
    assert_eq!(
        ds.string(tags::IMAGE_TYPE).as_deref(),
        Some("ORIGINAL\\PRIMARY")
    );
    assert_eq!(ds.i32(tags::SERIES_NUMBER), Some(7));
    assert_eq!(ds.i32(tags::INSTANCE_NUMBER), Some(12));
    assert_eq!(ds.u32(tags::NUMBER_OF_FRAMES), Some(1));
    assert_eq!(ds.u16(tags::ROWS), Some(2));
    assert_eq!(ds.u16(tags::COLUMNS), Some(3));
    assert_eq!(ds.f64_values(tags::ROWS), vec![2.0]);
    assert_eq!(ds.string(tags::ACCESSION_NUMBER), None);
    let req = ds.sequence(tags::REQUEST_ATTRIBUTES_SEQUENCE).unwrap();
    assert_eq!(req.len(), 1);
    assert_eq!(
        req[0].string(tags::REQUESTED_PROCEDURE_ID).as_deref(),
        Some("RP1")
    );
    assert_eq!(req[0].charset(), ds.charset());
    let px = h.pixel_data.unwrap();
    let pos = file
        .windows(4)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap() as u64;
    assert_eq!(px.offset, pos);
    assert_eq!(px.value_offset, pos + 12);
    assert_eq!(px.length, Some(6));
    assert_eq!(&px.vr, b"OB");
    assert!(!px.inflated);
    assert!(!ds.contains(tags::PIXEL_DATA));
    assert!(!ds.contains(0xFFFC_FFFC));
    // The elements come in tag order.
    let order: Vec<u32> = ds.iter().map(|e| e.tag).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(
        h.dataset_offset,
        encode_file_meta(&meta(EXPLICIT_VR_LITTLE_ENDIAN)).len() as u64
    );
}

#[test]
fn encode_file_meta_layout() {
    let m = meta(EXPLICIT_VR_LITTLE_ENDIAN);
    let bytes = encode_file_meta(&m);
    assert!(bytes[..128].iter().all(|&b| b == 0));
    assert_eq!(&bytes[128..132], b"DICM");
    assert_eq!(&bytes[132..138], &[0x02, 0x00, 0x00, 0x00, b'U', b'L']);
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    assert_eq!(group_len, bytes.len() - 144);
    assert_eq!(bytes.len() % 2, 0);
    let h = parse_part10(&bytes, true, &limits()).unwrap();
    assert_eq!(h.meta, m);
    assert!(h.dataset.is_empty());
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    // Without the optional elements.
    let m2 = FileMeta {
        implementation_version_name: None,
        source_ae_title: None,
        ..m
    };
    let h = parse_part10(&encode_file_meta(&m2), true, &limits()).unwrap();
    assert_eq!(h.meta, m2);
}

#[test]
fn reads_implicit_le() {
    let mut body = Vec::new();
    body.extend(im(tags::SOP_INSTANCE_UID, b"1.2.3\0"));
    body.extend(im(tags::PATIENT_NAME, b"Doe^John"));
    body.extend(im(0x0011_0010, b"ACME 1.0")); // private creator
    body.extend(im(0x0011_1001, b"\x01\x02")); // private, unknown
    body.extend(im(tags::ROWS, &512u16.to_le_bytes()));
    // A sequence of undefined length with an undefined-length item.
    let mut seq = raw_tag(tags::REQUEST_ATTRIBUTES_SEQUENCE, 0xFFFF_FFFF);
    let mut inner = raw_tag(tags::ITEM, 0xFFFF_FFFF);
    inner.extend(im(tags::REQUESTED_PROCEDURE_ID, b"RP 2"));
    inner.extend(raw_tag(tags::ITEM_DELIMITATION_ITEM, 0));
    seq.extend(inner);
    seq.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
    body.extend(seq);
    body.extend(im(tags::PIXEL_DATA, &[0; 4]));
    let file = part10(IMPLICIT_VR_LITTLE_ENDIAN, &body);
    let h = parse_part10(&file, true, &limits()).unwrap();
    let ds = &h.dataset;
    assert_eq!(&ds.get(tags::PATIENT_NAME).unwrap().vr, b"PN");
    assert_eq!(&ds.get(0x0011_0010).unwrap().vr, b"LO");
    assert_eq!(&ds.get(0x0011_1001).unwrap().vr, b"UN");
    assert_eq!(ds.uid(tags::SOP_INSTANCE_UID).as_deref(), Some("1.2.3"));
    assert_eq!(ds.u16(tags::ROWS), Some(512));
    let seq = ds.sequence(tags::REQUEST_ATTRIBUTES_SEQUENCE).unwrap();
    assert_eq!(
        seq[0].string(tags::REQUESTED_PROCEDURE_ID).as_deref(),
        Some("RP 2")
    );
    let px = h.pixel_data.unwrap();
    assert_eq!(&px.vr, b"OW");
    assert_eq!(px.length, Some(4));
}

#[test]
fn implicit_defined_length_sequence_and_fallback() {
    let mut body = Vec::new();
    let inner = im(tags::REQUESTED_PROCEDURE_ID, b"RP01");
    body.extend(im(tags::REQUEST_ATTRIBUTES_SEQUENCE, &item(&inner)));
    // The dictionary says SQ but the bytes are not items.
    body.extend(im(0x0040_0260, b"garbage!")); // Performed Protocol Code Sequence
    let h = parse_dataset(
        &body,
        &TransferSyntax::implicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    let seq = h
        .dataset
        .sequence(tags::REQUEST_ATTRIBUTES_SEQUENCE)
        .unwrap();
    assert_eq!(
        seq[0].string(tags::REQUESTED_PROCEDURE_ID).as_deref(),
        Some("RP01")
    );
    let raw = h.dataset.get(0x0040_0260).unwrap();
    assert_eq!(&raw.vr, b"UN");
    assert_eq!(raw.bytes(), Some(&b"garbage!"[..]));
    assert!(matches!(
        h.warnings.as_slice(),
        [Warning::SequenceKeptRaw {
            tag: 0x0040_0260,
            ..
        }]
    ));
}

#[test]
fn reads_explicit_big_endian() {
    let mut body = Vec::new();
    body.extend(ex_any(true, tags::SOP_INSTANCE_UID, b"UI", b"1.2.3", None));
    body.extend(ex_any(true, tags::ROWS, b"US", &300u16.to_be_bytes(), None));
    body.extend(ex_any(
        true,
        0x0018_1310,
        b"US",
        &[0, 1, 0, 2, 0, 3, 0, 4],
        None,
    ));
    body.extend(ex_any(true, 0x0028_0030, b"DS", b"0.5\\0.25", None));
    body.extend(ex_any(
        true,
        0x0018_9087,
        b"FD",
        &1.5f64.to_be_bytes(),
        None,
    ));
    body.extend(ex_any(
        true,
        0x0020_9057,
        b"SL",
        &(-5i32).to_be_bytes(),
        None,
    ));
    body.extend(ex_any(true, 0x0020_0013, b"IS", b"3", None));
    // A sequence, big endian item tags.
    let inner = ex_any(true, tags::ROWS, b"US", &7u16.to_be_bytes(), None);
    let mut it = Vec::new();
    it.extend(0xFFFEu16.to_be_bytes());
    it.extend(0xE000u16.to_be_bytes());
    it.extend((inner.len() as u32).to_be_bytes());
    it.extend(&inner);
    body.extend(ex_any(true, 0x0008_1140, b"SQ", &it, None));
    body.extend(ex_any(true, tags::PIXEL_DATA, b"OW", &[0; 4], None));
    let file = part10(EXPLICIT_VR_BIG_ENDIAN, &body);
    let h = parse_part10(&file, true, &limits()).unwrap();
    let ds = &h.dataset;
    assert!(ds.is_big_endian());
    assert_eq!(ds.u16(tags::ROWS), Some(300));
    assert_eq!(ds.f64_values(0x0018_1310), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(ds.f64_values(0x0028_0030), vec![0.5, 0.25]);
    assert_eq!(ds.f64_values(0x0018_9087), vec![1.5]);
    assert_eq!(ds.i32(0x0020_9057), Some(-5));
    assert_eq!(ds.u16(0x0020_9057), None);
    assert_eq!(
        ds.sequence(0x0008_1140).unwrap()[0].u16(tags::ROWS),
        Some(7)
    );
    assert_eq!(h.pixel_data.unwrap().length, Some(4));
}

#[test]
fn encapsulated_pixel_data_and_icon() {
    let mut icon = Vec::new();
    icon.extend(exb(tags::ROWS, b"US", &1u16.to_le_bytes()));
    let mut px = ex_any(false, tags::PIXEL_DATA, b"OB", &[], Some(0xFFFF_FFFF));
    px.extend(raw_tag(tags::ITEM, 0));
    px.extend(item(&[9, 9, 9, 9]));
    px.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
    icon.extend(px);
    let mut body = Vec::new();
    body.extend(ex(tags::SOP_INSTANCE_UID, b"UI", "1.2"));
    body.extend(sq_undef(0x0088_0200, b"SQ", &item_undef(&icon)));
    let mut top = ex_any(false, tags::PIXEL_DATA, b"OB", &[], Some(0xFFFF_FFFF));
    top.extend(raw_tag(tags::ITEM, 0));
    body.extend(top);
    let file = part10("1.2.840.10008.1.2.4.50", &body);
    let h = parse_part10(&file, true, &limits()).unwrap();
    assert!(h.syntax.encapsulated());
    let px = h.pixel_data.unwrap();
    assert_eq!(px.length, None);
    let icon = &h.dataset.sequence(0x0088_0200).unwrap()[0];
    assert_eq!(
        icon.get(tags::PIXEL_DATA).unwrap().value,
        Value::Fragments(vec![vec![], vec![9, 9, 9, 9]])
    );
}

#[test]
fn un_sequence_of_undefined_length() {
    // PS3.5 §6.2.2: a sequence sent as UN, undefined length, implicit LE inside.
    let inner = im(tags::REQUESTED_PROCEDURE_ID, b"RP03");
    let mut body = Vec::new();
    body.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192"));
    body.extend(sq_undef(
        tags::REQUEST_ATTRIBUTES_SEQUENCE,
        b"UN",
        &item_undef(&inner),
    ));
    // And one with a defined length.
    let inner2 = im(tags::PATIENT_ID, b"P1");
    body.extend(ex_any(false, 0x0040_0260, b"UN", &item(&inner2), None));
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    let el = h.dataset.get(tags::REQUEST_ATTRIBUTES_SEQUENCE).unwrap();
    assert_eq!(&el.vr, b"SQ");
    let seq = el.items().unwrap();
    assert_eq!(
        seq[0].string(tags::REQUESTED_PROCEDURE_ID).as_deref(),
        Some("RP03")
    );
    assert!(!seq[0].is_big_endian());
    let seq2 = h.dataset.sequence(0x0040_0260).unwrap();
    assert_eq!(seq2[0].string(tags::PATIENT_ID).as_deref(), Some("P1"));
}

#[test]
fn implicit_element_inside_explicit_data_set() {
    let mut body = Vec::new();
    body.extend(ex(tags::SOP_INSTANCE_UID, b"UI", "1.2"));
    body.extend(im(tags::PATIENT_NAME, b"Doe^Jane"));
    body.extend(ex(tags::PATIENT_ID, b"LO", "X1"));
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        h.dataset.string(tags::PATIENT_NAME).as_deref(),
        Some("Doe^Jane")
    );
    assert_eq!(h.dataset.string(tags::PATIENT_ID).as_deref(), Some("X1"));
    assert!(matches!(
        h.warnings.as_slice(),
        [Warning::ImplicitVrElement {
            tag: tags::PATIENT_NAME,
            ..
        }]
    ));
}

#[test]
fn nested_items_inherit_or_override_the_charset() {
    let mut inherit = Vec::new();
    inherit.extend(ex_any(
        false,
        tags::PATIENT_NAME,
        b"PN",
        "Müller".as_bytes(),
        None,
    ));
    let mut own = Vec::new();
    own.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 100"));
    own.extend(ex_any(false, tags::PATIENT_NAME, b"PN", b"M\xfcller", None));
    let mut items = item(&inherit);
    items.extend(item(&own));
    let mut body = Vec::new();
    body.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192"));
    body.extend(sq(0x0008_1120, &items));
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    let seq = h.dataset.sequence(0x0008_1120).unwrap();
    assert_eq!(seq[0].string(tags::PATIENT_NAME).as_deref(), Some("Müller"));
    assert_eq!(seq[1].string(tags::PATIENT_NAME).as_deref(), Some("Müller"));
}

#[test]
fn unknown_charset_is_a_warning() {
    let mut body = Vec::new();
    body.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 999"));
    body.extend(ex_any(
        false,
        tags::PATIENT_NAME,
        b"PN",
        b"J\xe9r\xf4me",
        None,
    ));
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        h.dataset.string(tags::PATIENT_NAME).as_deref(),
        Some("Jérôme")
    );
    assert_eq!(
        h.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["unknown Specific Character Set 'ISO_IR 999', decoded as ISO_IR 100"]
    );
}

#[test]
fn japanese_multi_valued_and_strings_split_after_decoding() {
    // A GB18030 value whose second byte is 0x5C must not be split.
    let (bytes, _, _) = encoding_rs::GB18030.encode("乗\\二");
    assert!(bytes.windows(2).any(|w| w[1] == 0x5C && w[0] >= 0x81));
    let mut body = Vec::new();
    body.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "GB18030"));
    body.extend(ex_any(false, tags::STUDY_DESCRIPTION, b"LO", &bytes, None));
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    assert_eq!(h.dataset.strings(tags::STUDY_DESCRIPTION), vec!["乗", "二"]);
    assert_eq!(
        h.dataset.strings(tags::SPECIFIC_CHARACTER_SET),
        vec!["GB18030"]
    );
}

#[test]
fn deflated_part10() {
    use flate2::write::DeflateEncoder;
    use std::io::Write;
    let body = sample_body();
    let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&body).unwrap();
    let compressed = enc.finish().unwrap();
    let file = part10(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, &compressed);
    let h = parse_part10(&file, true, &limits()).unwrap();
    assert!(h.syntax.deflated());
    assert_eq!(
        h.dataset.string(tags::PATIENT_NAME).as_deref(),
        Some("Buc^Jérôme")
    );
    let px = h.pixel_data.unwrap();
    assert!(px.inflated);
    let pos = body
        .windows(4)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap() as u64;
    assert_eq!(px.offset, pos);
    // Incrementally: the same header once enough is there.
    check_incremental(&file);
    // A bare deflated data set.
    let h2 = parse_dataset(
        &compressed,
        &TransferSyntax::deflated_explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    assert_eq!(h2.dataset, h.dataset);
    // Garbage is an error, not a panic.
    let bad = part10(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, &[0xFF; 64]);
    assert!(matches!(
        parse_part10(&bad, true, &limits()),
        Err(ParseError::Deflate { .. })
    ));
}

// ---- meta information -------------------------------------------------------

#[test]
fn not_part10() {
    let e = parse_part10(&[0u8; 200], true, &limits()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no DICM prefix at offset 128: not a DICOM Part 10 file"
    );
    let e = parse_part10(&[0u8; 20], true, &limits()).unwrap_err();
    assert!(matches!(e, ParseError::NotPart10 { .. }), "{e}");
    assert_eq!(
        parse_part10(&[0u8; 20], false, &limits()),
        Err(ParseError::Incomplete)
    );
    assert!(matches!(
        parse_part10(&[0u8; 200], false, &limits()),
        Err(ParseError::NotPart10 { .. })
    ));
}

fn raw_meta(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0u8; 128];
    out.extend(b"DICM");
    for e in elements {
        out.extend(e);
    }
    out
}

#[test]
fn meta_without_group_length_or_with_a_wrong_one() {
    let ts = ex(tags::TRANSFER_SYNTAX_UID, b"UI", EXPLICIT_VR_LITTLE_ENDIAN);
    let body = ex(tags::PATIENT_ID, b"LO", "P");
    let mut file = raw_meta(std::slice::from_ref(&ts));
    file.extend(&body);
    let h = parse_part10(&file, true, &limits()).unwrap();
    assert_eq!(h.dataset.string(tags::PATIENT_ID).as_deref(), Some("P"));
    assert!(h.warnings.contains(&Warning::MissingGroupLength));
    assert_eq!(h.meta.media_storage_sop_class_uid, "");
    assert!(h.warnings.iter().any(|w| matches!(
        w,
        Warning::MissingMetaElement {
            tag: tags::MEDIA_STORAGE_SOP_CLASS_UID,
            ..
        }
    )));

    let wrong = exb(
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        b"UL",
        &1000u32.to_le_bytes(),
    );
    let mut file = raw_meta(&[wrong, ts]);
    file.extend(&body);
    let h = parse_part10(&file, true, &limits()).unwrap();
    assert_eq!(h.dataset.string(tags::PATIENT_ID).as_deref(), Some("P"));
    assert!(h.warnings.contains(&Warning::GroupLengthMismatch {
        declared: 1000,
        actual: 28
    }));
}

#[test]
fn meta_errors() {
    let file = raw_meta(&[ex(tags::MEDIA_STORAGE_SOP_CLASS_UID, b"UI", "1.2")]);
    let e = parse_part10(&file, true, &limits()).unwrap_err();
    assert_eq!(e, ParseError::MissingTransferSyntax);
    assert!(e.to_string().contains("(0002,0010)"));
    let file = raw_meta(&[ex(
        tags::TRANSFER_SYNTAX_UID,
        b"UI",
        "1.2.840.10008.1.2.6.1",
    )]);
    let e = parse_part10(&file, true, &limits()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported transfer syntax '1.2.840.10008.1.2.6.1'"
    );
}

// ---- limits and damage --------------------------------------------------------

#[test]
fn huge_length_is_refused_before_allocation() {
    let mut body = ex(tags::SOP_INSTANCE_UID, b"UI", "1.2");
    body.extend(ex_any(
        false,
        tags::PATIENT_NAME,
        b"UT",
        &[],
        Some(0xFFFF_FFF0),
    ));
    let lim = Limits {
        max_element_len: 65536,
        ..Limits::default()
    };
    for complete in [true, false] {
        let e = parse_dataset(
            &body,
            &TransferSyntax::explicit_vr_little_endian(),
            complete,
            &lim,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "element (0010,0010) at offset 12 declares 4294967280 bytes, beyond the 65536-byte limit"
        );
    }
}

#[test]
fn truncated_value() {
    let mut body = ex(tags::PATIENT_ID, b"LO", "ABCDEFGH");
    body.truncate(body.len() - 3);
    let ts = TransferSyntax::explicit_vr_little_endian();
    let e = parse_dataset(&body, &ts, true, &limits()).unwrap_err();
    assert_eq!(
        e,
        ParseError::Truncated {
            tag: tags::PATIENT_ID,
            offset: 0,
            len: 8,
            available: 5
        }
    );
    assert_eq!(
        parse_dataset(&body, &ts, false, &limits()),
        Err(ParseError::Incomplete)
    );
    let e = parse_dataset(&body[..5], &ts, true, &limits()).unwrap_err();
    assert_eq!(e, ParseError::TruncatedHeader { offset: 0 });
}

#[test]
fn element_overrunning_its_item_is_malformed() {
    let inner = ex_any(false, tags::PATIENT_ID, b"LO", b"AB", Some(40));
    let body = sq(0x0008_1120, &item(&inner));
    let mut body = body;
    body.extend([0u8; 64]);
    let e = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(e, ParseError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("item (FFFE,E000)"), "{e}");
}

#[test]
fn depth_and_element_limits() {
    // 40 nested sequences.
    let mut inner = ex(tags::PATIENT_ID, b"LO", "deep");
    for _ in 0..40 {
        inner = sq_undef(0x0008_1120, b"SQ", &item_undef(&inner));
    }
    let ts = TransferSyntax::explicit_vr_little_endian();
    let e = parse_dataset(&inner, &ts, true, &limits()).unwrap_err();
    assert!(matches!(e, ParseError::TooDeep { limit: 32, .. }), "{e}");
    let lim = Limits {
        max_sequence_depth: 64,
        ..Limits::default()
    };
    assert!(parse_dataset(&inner, &ts, true, &lim).is_ok());

    let mut many = Vec::new();
    for i in 0..100u16 {
        many.extend(ex(tags::tag(0x0009, 0x1000 + i), b"LO", "x"));
    }
    let lim = Limits {
        max_elements: 50,
        ..Limits::default()
    };
    let e = parse_dataset(&many, &ts, true, &lim).unwrap_err();
    assert!(
        matches!(e, ParseError::TooManyElements { limit: 50, .. }),
        "{e}"
    );
}

#[test]
fn header_byte_limit() {
    let file = part10(EXPLICIT_VR_LITTLE_ENDIAN, &sample_body());
    let px = parse_part10(&file, true, &limits())
        .unwrap()
        .pixel_data
        .unwrap();
    let needed = px.value_offset;
    let lim = Limits {
        max_header_bytes: needed - 1,
        ..Limits::default()
    };
    for complete in [true, false] {
        assert_eq!(
            parse_part10(&file, complete, &lim),
            Err(ParseError::HeaderTooLarge { limit: needed - 1 })
        );
    }
    let lim = Limits {
        max_header_bytes: needed,
        ..Limits::default()
    };
    assert!(parse_part10(&file, true, &lim).is_ok());
    assert!(parse_part10(&file[..needed as usize], false, &lim).is_ok());
}

// ---- incremental --------------------------------------------------------------

/// Every prefix gives Incomplete or exactly the full parse (for a file with
/// pixel data the full parse must eventually come from a prefix).
fn check_incremental(file: &[u8]) {
    let full = parse_part10(file, true, &limits()).unwrap();
    let mut first_ok = None;
    let step = (file.len() / 400).max(1);
    let mut len = 0;
    while len <= file.len() {
        match parse_part10(&file[..len], false, &limits()) {
            Err(ParseError::Incomplete) => {
                assert!(first_ok.is_none(), "Incomplete after Ok at {len}")
            }
            Ok(h) => {
                assert_eq!(h, full, "prefix {len}");
                first_ok.get_or_insert(len);
            }
            Err(e) => panic!("prefix {len}: {e}"),
        }
        len += if first_ok.is_some() { step * 10 } else { step };
    }
    if full.pixel_data.is_some() {
        assert!(first_ok.is_some());
    }
}

#[test]
fn incremental_parsing() {
    let file = part10(EXPLICIT_VR_LITTLE_ENDIAN, &sample_body());
    let full = parse_part10(&file, true, &limits()).unwrap();
    let needed = full.pixel_data.unwrap().value_offset as usize;
    for len in 0..needed {
        assert_eq!(
            parse_part10(&file[..len], false, &limits()),
            Err(ParseError::Incomplete),
            "{len}"
        );
    }
    for len in needed..=file.len() {
        assert_eq!(
            parse_part10(&file[..len], false, &limits()).as_ref(),
            Ok(&full),
            "{len}"
        );
    }
    check_incremental(&file);
    // Without pixel data, never done until complete.
    let body = ex(tags::PATIENT_ID, b"LO", "P");
    let file = part10(EXPLICIT_VR_LITTLE_ENDIAN, &body);
    assert_eq!(
        parse_part10(&file, false, &limits()),
        Err(ParseError::Incomplete)
    );
    assert!(parse_part10(&file, true, &limits()).is_ok());
}

// ---- fuzz ---------------------------------------------------------------------

/// xorshift64*, enough randomness for mutation testing without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fuzz_bases() -> Vec<Vec<u8>> {
    let mut bases = vec![part10(EXPLICIT_VR_LITTLE_ENDIAN, &sample_body())];
    let mut implicit = Vec::new();
    implicit.extend(im(tags::PATIENT_NAME, b"Doe^John"));
    let mut seq = raw_tag(tags::REQUEST_ATTRIBUTES_SEQUENCE, 0xFFFF_FFFF);
    seq.extend(item_undef(&im(tags::REQUESTED_PROCEDURE_ID, b"RP 2")));
    seq.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
    implicit.extend(seq);
    implicit.extend(im(0x0040_0260, &item(&im(tags::PATIENT_ID, b"P1"))));
    implicit.extend(im(tags::PIXEL_DATA, &[0; 4]));
    bases.push(part10(IMPLICIT_VR_LITTLE_ENDIAN, &implicit));
    let mut un = Vec::new();
    un.extend(ex(tags::SPECIFIC_CHARACTER_SET, b"CS", "\\ISO 2022 IR 87"));
    un.extend(ex_any(
        false,
        tags::PATIENT_NAME,
        b"PN",
        b"\x1b$B;3ED\x1b(B^X",
        None,
    ));
    un.extend(sq_undef(
        tags::REQUEST_ATTRIBUTES_SEQUENCE,
        b"UN",
        &item_undef(&im(tags::PATIENT_ID, b"P1")),
    ));
    let mut px = ex_any(false, tags::PIXEL_DATA, b"OB", &[], Some(0xFFFF_FFFF));
    px.extend(item(&[1, 2, 3, 4]));
    px.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
    un.extend(sq_undef(0x0088_0200, b"SQ", &item_undef(&px)));
    bases.push(part10("1.2.840.10008.1.2.4.70", &un));
    {
        use flate2::write::DeflateEncoder;
        use std::io::Write;
        let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&sample_body()).unwrap();
        bases.push(part10(
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            &enc.finish().unwrap(),
        ));
    }
    bases
}

#[test]
fn fuzz_mutations_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tight = Limits {
        max_element_len: 4096,
        max_header_bytes: 1 << 20,
        max_sequence_depth: 8,
        max_elements: 500,
        ..Limits::default()
    };
    let bases = fuzz_bases();
    for base in &bases {
        assert!(parse_part10(base, true, &limits()).is_ok());
    }
    let interesting: [&[u8]; 6] = [
        &[0xFF, 0xFF, 0xFF, 0xFF],
        &[0xF0, 0xFF, 0xFF, 0xFF],
        &[0xFE, 0xFF, 0x00, 0xE0],
        &[0xFE, 0xFF, 0xDD, 0xE0],
        b"SQ",
        b"UN",
    ];
    let mut outcomes = [0usize; 2];
    for round in 0..4000 {
        let base = &bases[round % bases.len()];
        let mut data = base.clone();
        for _ in 0..1 + rng.below(4) {
            if data.is_empty() {
                break;
            }
            let pos = rng.below(data.len());
            match rng.below(5) {
                0 => data[pos] ^= 1 << rng.below(8),
                1 => data[pos] = rng.next() as u8,
                2 => {
                    let pat = interesting[rng.below(interesting.len())];
                    for (i, b) in pat.iter().enumerate() {
                        if let Some(slot) = data.get_mut(pos + i) {
                            *slot = *b;
                        }
                    }
                }
                3 => data.truncate(pos),
                _ => {
                    let n = rng.below(16);
                    data.splice(pos..pos, std::iter::repeat_n(rng.next() as u8, n));
                }
            }
        }
        let lim = if round % 2 == 0 { &tight } else { &limits() };
        let complete = round % 3 != 0;
        let r = parse_part10(&data, complete, lim);
        outcomes[usize::from(r.is_ok())] += 1;
        // Anything that parses yields usable accessors.
        if let Ok(h) = r {
            for e in h.dataset.iter() {
                let _ = h.dataset.string(e.tag);
                let _ = h.dataset.strings(e.tag);
                let _ = h.dataset.f64_values(e.tag);
                let _ = h.dataset.u32(e.tag);
            }
        }
        // The bare data set path too.
        let start = data.len().min(300);
        let _ = parse_dataset(
            &data[start..],
            &TransferSyntax::implicit_vr_little_endian(),
            complete,
            lim,
        );
    }
    // Both outcomes happen, so the mutations reach past the meta group.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for round in 0..2000 {
        let len = rng.below(600);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 && data.len() >= 132 {
            data[128..132].copy_from_slice(b"DICM");
        }
        let _ = parse_part10(&data, round % 3 == 0, &limits());
        for ts in [
            TransferSyntax::implicit_vr_little_endian(),
            TransferSyntax::explicit_vr_little_endian(),
            TransferSyntax::explicit_vr_big_endian(),
            TransferSyntax::deflated_explicit_vr_little_endian(),
        ] {
            let _ = parse_dataset(&data, &ts, round % 3 == 0, &limits());
        }
    }
}

// ---- corpus ---------------------------------------------------------------------

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Prints every value affected by the character set, with its path.
fn dump_text(file: &str, path: &str, ds: &DataSet) {
    for e in ds.iter() {
        let here = format!(
            "{path}({:04X},{:04X})",
            tags::group(e.tag),
            tags::element(e.tag)
        );
        if let Some(items) = e.items() {
            for (i, item) in items.iter().enumerate() {
                dump_text(file, &format!("{here}[{i}]"), item);
            }
        } else if charset::is_text_vr(e.effective_vr()) {
            println!(
                "TEXT\t{file}\t{here}\t{}",
                ds.string(e.tag).unwrap_or_default()
            );
        }
    }
}

/// `PACS_CORPUS_DIR=/path cargo test -p pacs-core corpus -- --ignored --nocapture`
/// parses every file under the directory (complete), prints one line per
/// file, and checks prefix-consistency on every file that parses.
#[test]
#[ignore]
fn corpus() {
    let Ok(dir) = std::env::var("PACS_CORPUS_DIR") else {
        eprintln!("PACS_CORPUS_DIR not set");
        return;
    };
    let mut files = Vec::new();
    walk(std::path::Path::new(&dir), &mut files);
    let (mut ok, mut err) = (0, 0);
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match parse_part10(&data, true, &limits()) {
            Ok(h) => {
                ok += 1;
                let pn = h.dataset.string(tags::PATIENT_NAME).unwrap_or_default();
                let px = h
                    .pixel_data
                    .map(|p| {
                        format!(
                            "{}@{}+{:?}",
                            String::from_utf8_lossy(&p.vr),
                            p.offset,
                            p.length
                        )
                    })
                    .unwrap_or_else(|| "-".to_owned());
                println!(
                    "ok\t{name}\t{}\t{}\tpx={px}\tPN={pn:?}",
                    h.syntax.uid(),
                    h.dataset.len()
                );
                for w in &h.warnings {
                    println!("  warning: {w}");
                }
                if std::env::var_os("PACS_CORPUS_DUMP").is_some() {
                    dump_text(&name, "", &h.dataset);
                    let d = &h.dataset;
                    let opt = |v: Option<String>| v.unwrap_or_default();
                    let num = |v: Option<i32>| v.map(|n| n.to_string()).unwrap_or_default();
                    println!(
                        "IDX\t{name}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        opt(d.uid(tags::SOP_INSTANCE_UID)),
                        opt(d.uid(tags::STUDY_INSTANCE_UID)),
                        opt(d.uid(tags::SERIES_INSTANCE_UID)),
                        num(d.u16(tags::ROWS).map(i32::from)),
                        num(d.u16(tags::COLUMNS).map(i32::from)),
                        num(d.i32(tags::NUMBER_OF_FRAMES)),
                        num(d.i32(tags::INSTANCE_NUMBER)),
                        opt(d.string(tags::MODALITY)),
                        opt(d.string(tags::STUDY_DATE)),
                        opt(d.string(tags::PATIENT_ID)),
                    );
                }
                check_incremental(&data);
            }
            Err(e) => {
                err += 1;
                println!("err\t{name}\t{e}");
            }
        }
    }
    println!("{ok} ok, {err} errors");
}

#[test]
fn deepest_allowed_nesting_fits_the_stack() {
    // Whatever the configured limit, nesting is capped (256 levels); reaching
    // the cap must not exhaust a test thread's 2 MiB stack, through the
    // plain, the UN (implicit re-read) and the defined-length paths alike.
    let lim = Limits {
        max_sequence_depth: usize::MAX,
        ..Limits::default()
    };
    let ts = TransferSyntax::explicit_vr_little_endian();
    for kind in 0..3 {
        let mut inner = if kind == 2 {
            im(tags::PATIENT_ID, b"deep")
        } else {
            ex(tags::PATIENT_ID, b"LO", "deep")
        };
        for _ in 0..255 {
            inner = match kind {
                0 => sq_undef(0x0008_1120, b"SQ", &item_undef(&inner)),
                1 => sq(0x0008_1120, &item(&inner)),
                _ => {
                    // Implicit VR inside a UN sequence.
                    let mut s = raw_tag(0x0008_1120, 0xFFFF_FFFF);
                    s.extend(item_undef(&inner));
                    s.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
                    s
                }
            };
        }
        if kind == 2 {
            let mut s = ex_any(false, 0x0009_1010, b"UN", &[], Some(0xFFFF_FFFF));
            s.extend(item_undef(&inner));
            s.extend(raw_tag(tags::SEQUENCE_DELIMITATION_ITEM, 0));
            inner = s;
        }
        let r = parse_dataset(&inner, &ts, true, &lim);
        assert!(r.is_ok(), "kind {kind}: {r:?}");
        // One more level is refused, not overflowed.
        let deeper = sq_undef(0x0008_1120, b"SQ", &item_undef(&inner));
        let deeper = sq_undef(0x0008_1120, b"SQ", &item_undef(&deeper));
        let e = parse_dataset(&deeper, &ts, true, &lim).unwrap_err();
        assert!(matches!(e, ParseError::TooDeep { limit: 256, .. }), "{e}");
    }
}

#[test]
fn linear_time_on_a_large_data_set() {
    // 200k small elements and a 20k-item sequence parse quickly.
    let mut body = Vec::new();
    for i in 0..200_000u32 {
        body.extend(ex(0x0009_0000 | (0x1000 + (i % 0xE000)), b"LO", "v"));
    }
    let mut items = Vec::new();
    for _ in 0..20_000 {
        items.extend(item(&ex(tags::PATIENT_ID, b"LO", "x")));
    }
    body.extend(sq(0x0029_1010, &items));
    let started = std::time::Instant::now();
    let h = parse_dataset(
        &body,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        h.dataset.sequence(0x0029_1010).map(<[DataSet]>::len),
        Some(20_000)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
