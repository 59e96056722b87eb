//! The DICOMDIR of a downloaded study: a PS3.10 Basic Directory IOD
//! (PS3.3 F.3) built from index data alone, so it can be sent before the
//! instances it lists.
//!
//! One PATIENT record, one STUDY record, a SERIES record per series and a
//! record per instance: IMAGE, or the record type and keys the caller
//! gives (SR DOCUMENT, KEY OBJECT DOC) (PS3.3 F.4, F.5; PS3.11 STD-GEN). Explicit VR Little Endian, defined lengths, the File Meta
//! Information with Media Storage SOP Class 1.2.840.10008.1.3.10. Record
//! offsets count bytes from the first byte of the file (the preamble is
//! part of the File Meta Information, PS3.10 7.1), to the record's Item
//! tag.
//!
//! Type 1 keys the index has no value for are filled the way a media
//! creator must (PS3.3 F.5): the record's ordinal for Study ID, Series and
//! Instance Number, `OT` for Modality, the file-set's creation date and
//! time for Study Date and Time, and `UNKNOWN` for Patient ID. The
//! instances themselves are never changed.

use pacs_core::archive::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use pacs_core::dicom::{encode_file_meta, FileMeta};

/// Media Storage Directory Storage (PS3.4 Annex I).
pub const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// The patient of the file-set, with its one study.
#[derive(Debug, Clone, Default)]
pub struct DirPatient {
    pub id: String,
    pub name: String,
    pub study: DirStudy,
}

#[derive(Debug, Clone, Default)]
pub struct DirStudy {
    pub uid: String,
    pub date: String,
    pub time: String,
    pub description: String,
    pub id: String,
    pub accession_number: String,
    pub series: Vec<DirSeries>,
}

#[derive(Debug, Clone, Default)]
pub struct DirSeries {
    pub uid: String,
    pub modality: String,
    pub number: String,
    pub instances: Vec<DirInstance>,
}

/// A key of a leaf record beyond those every leaf has.
#[derive(Debug, Clone, PartialEq)]
pub enum DirKey {
    /// A text value (tag, VR, value).
    Text(u32, &'static [u8; 2], String),
    /// A code sequence with one item (tag; Code Value, Coding Scheme
    /// Designator, Coding Scheme Version, Code Meaning).
    Code(u32, [String; 4]),
}

#[derive(Debug, Clone, Default)]
pub struct DirInstance {
    /// Directory Record Type (PS3.3 F.4): `IMAGE` when empty.
    pub record_type: &'static str,
    /// Keys of that record type other than Instance Number and the
    /// Referenced File / SOP / Transfer Syntax keys.
    pub keys: Vec<DirKey>,
    pub number: String,
    /// The File ID's components (PS3.10 8.5), e.g. `["DICOM", "SE000001",
    /// "IM000001"]`.
    pub file_id: Vec<String>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
}

/// The DICOMDIR file's bytes. `media_uid` is the Media Storage SOP
/// Instance UID of the file-set; `file_set_id` its File-set ID (up to 16
/// characters of A-Z, 0-9, `_` and space); `now` the `(YYYYMMDD, HHMMSS)`
/// used for a study without date or time.
pub fn encode(
    patient: &DirPatient,
    media_uid: &str,
    file_set_id: &str,
    now: (&str, &str),
) -> Vec<u8> {
    let meta = FileMeta {
        transfer_syntax_uid: EXPLICIT_VR_LE.to_owned(),
        media_storage_sop_class_uid: MEDIA_STORAGE_DIRECTORY.to_owned(),
        media_storage_sop_instance_uid: media_uid.to_owned(),
        implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
        implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
        source_ae_title: None,
    };
    let mut out = encode_file_meta(&meta);

    // The records in the order they are written, each with the indices
    // of the records its offsets point to.
    let records = records(patient, now);
    // Everything before the first record: the header elements and the
    // sequence's own header.
    let fixed = {
        let mut v = Vec::new();
        put(&mut v, 0x0004_1130, b"CS", file_set_id.as_bytes());
        put(&mut v, 0x0004_1200, b"UL", &0u32.to_le_bytes());
        put(&mut v, 0x0004_1202, b"UL", &0u32.to_le_bytes());
        put(&mut v, 0x0004_1212, b"US", &0u16.to_le_bytes());
        v.len() + 12 // (0004,1220) SQ: tag, VR, reserved, 32-bit length
    };
    // Items have a size that does not depend on the offset values, so
    // their positions follow from one pass with zero offsets.
    let sizes: Vec<usize> = records.iter().map(|r| r.encode(&[]).len()).collect();
    let mut at = Vec::with_capacity(sizes.len());
    let mut pos = out.len() + fixed;
    for s in &sizes {
        at.push(u32::try_from(pos).unwrap_or(u32::MAX));
        pos += s;
    }
    let items: Vec<u8> = records.iter().flat_map(|r| r.encode(&at)).collect();
    let root = at.first().copied().unwrap_or(0);
    put(&mut out, 0x0004_1130, b"CS", file_set_id.as_bytes());
    put(&mut out, 0x0004_1200, b"UL", &root.to_le_bytes());
    put(&mut out, 0x0004_1202, b"UL", &root.to_le_bytes());
    put(&mut out, 0x0004_1212, b"US", &0u16.to_le_bytes());
    out.extend_from_slice(&0x0004u16.to_le_bytes());
    out.extend_from_slice(&0x1220u16.to_le_bytes());
    out.extend_from_slice(b"SQ\0\0");
    out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&items);
    out
}

/// One directory record before encoding: `next` and `lower` are indices
/// into the written records.
struct Record {
    kind: &'static str,
    next: Option<usize>,
    lower: Option<usize>,
    /// Record keys (text unpadded).
    keys: Vec<DirKey>,
}

impl Record {
    fn new(kind: &'static str) -> Record {
        Record {
            kind,
            next: None,
            lower: None,
            keys: Vec::new(),
        }
    }

    fn key(mut self, tag: u32, vr: &'static [u8; 2], value: &str) -> Record {
        self.keys.push(DirKey::Text(tag, vr, value.to_owned()));
        self
    }

    /// The record as an Item; `at` gives the offset of each record
    /// (empty: zeros, to measure).
    fn encode(&self, at: &[u32]) -> Vec<u8> {
        let offset = |i: Option<usize>| i.and_then(|i| at.get(i).copied()).unwrap_or(0);
        let mut keys: Vec<(u32, &[u8; 2], Vec<u8>)> = vec![
            (0x0004_1400, b"UL", offset(self.next).to_le_bytes().to_vec()),
            // Record In-use Flag: FFFFH, in use (PS3.3 F.5).
            (0x0004_1410, b"US", 0xFFFFu16.to_le_bytes().to_vec()),
            (
                0x0004_1420,
                b"UL",
                offset(self.lower).to_le_bytes().to_vec(),
            ),
            (0x0004_1430, b"CS", self.kind.as_bytes().to_vec()),
        ];
        // PS3.3 F.5: Specific Character Set is required in a record whose
        // keys use characters beyond the default repertoire; the values
        // come from the index as Unicode, so they are written as UTF-8.
        let texts = self.keys.iter().flat_map(|k| match k {
            DirKey::Text(_, _, v) => std::slice::from_ref(v),
            DirKey::Code(_, v) => &v[..],
        });
        if texts.into_iter().any(|v| !v.is_ascii()) {
            keys.push((0x0008_0005, b"CS", b"ISO_IR 192".to_vec()));
        }
        let mut sequences: Vec<(u32, Vec<u8>)> = Vec::new();
        for k in &self.keys {
            match k {
                DirKey::Text(t, vr, v) => keys.push((*t, *vr, v.as_bytes().to_vec())),
                DirKey::Code(t, code) => sequences.push((*t, code_item(code))),
            }
        }
        keys.sort_by_key(|(t, _, _)| *t);
        sequences.sort_by_key(|(t, _)| *t);
        let mut body = Vec::new();
        let mut seqs = sequences.into_iter().peekable();
        for (tag, vr, value) in keys {
            while let Some((t, item)) = seqs.next_if(|(t, _)| *t < tag) {
                put_sequence(&mut body, t, &item);
            }
            put(&mut body, tag, vr, &value);
        }
        for (t, item) in seqs {
            put_sequence(&mut body, t, &item);
        }
        item(&body)
    }
}

/// An Item (FFFE,E000) of defined length around `body` (PS3.5 7.5.1).
fn item(body: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(body.len() + 8);
    item.extend_from_slice(&0xFFFEu16.to_le_bytes());
    item.extend_from_slice(&0xE000u16.to_le_bytes());
    item.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    item.extend_from_slice(body);
    item
}

/// `value` if it is not empty, else `fallback`.
fn or(value: &str, fallback: &str) -> String {
    let v = value.trim();
    if v.is_empty() {
        fallback.to_owned()
    } else {
        v.to_owned()
    }
}

/// The records in the order written: PATIENT, STUDY, then each SERIES
/// followed by its IMAGE records.
fn records(p: &DirPatient, now: (&str, &str)) -> Vec<Record> {
    let s = &p.study;
    let mut out = vec![
        Record::new("PATIENT").key(0x0010_0010, b"PN", &p.name).key(
            0x0010_0020,
            b"LO",
            &or(&p.id, "UNKNOWN"),
        ),
        Record::new("STUDY")
            .key(0x0008_0020, b"DA", &or(&s.date, now.0))
            .key(0x0008_0030, b"TM", &or(&s.time, now.1))
            .key(0x0008_0050, b"SH", &s.accession_number)
            .key(0x0008_1030, b"LO", &s.description)
            .key(0x0020_000D, b"UI", &s.uid)
            .key(0x0020_0010, b"SH", &or(&s.id, "1")),
    ];
    out[0].lower = Some(1);
    let mut previous_series: Option<usize> = None;
    for (i, series) in s.series.iter().enumerate() {
        let here = out.len();
        match previous_series {
            Some(prev) => out[prev].next = Some(here),
            None => out[1].lower = Some(here),
        }
        previous_series = Some(here);
        out.push(
            Record::new("SERIES")
                .key(0x0008_0060, b"CS", &or(&series.modality, "OT"))
                .key(0x0020_000E, b"UI", &series.uid)
                .key(
                    0x0020_0011,
                    b"IS",
                    &or(&series.number, &(i + 1).to_string()),
                ),
        );
        let first_image = out.len();
        for (j, inst) in series.instances.iter().enumerate() {
            let here = out.len();
            if j > 0 {
                out[here - 1].next = Some(here);
            }
            let kind = if inst.record_type.is_empty() {
                "IMAGE"
            } else {
                inst.record_type
            };
            let mut record = Record::new(kind);
            record.keys.extend(inst.keys.iter().cloned());
            out.push(
                record
                    .key(0x0004_1500, b"CS", &inst.file_id.join("\\"))
                    .key(0x0004_1510, b"UI", &inst.sop_class_uid)
                    .key(0x0004_1511, b"UI", &inst.sop_instance_uid)
                    .key(0x0004_1512, b"UI", &inst.transfer_syntax_uid)
                    .key(0x0020_0013, b"IS", &or(&inst.number, &(j + 1).to_string())),
            );
        }
        if !series.instances.is_empty() {
            out[here].lower = Some(first_image);
        }
    }
    out
}

/// One Item of a code sequence (PS3.3 8.8: Code Value, Coding Scheme
/// Designator, Coding Scheme Version when there is one, Code Meaning).
fn code_item(code: &[String; 4]) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, 0x0008_0100, b"SH", code[0].as_bytes());
    put(&mut body, 0x0008_0102, b"SH", code[1].as_bytes());
    if !code[2].is_empty() {
        put(&mut body, 0x0008_0103, b"SH", code[2].as_bytes());
    }
    put(&mut body, 0x0008_0104, b"LO", code[3].as_bytes());
    item(&body)
}

/// A sequence element of defined length holding `items` (PS3.5 7.5).
fn put_sequence(out: &mut Vec<u8>, tag: u32, items: &[u8]) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(b"SQ\0\0");
    out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(items);
}

/// One Explicit VR Little Endian element with a 16-bit length (every VR
/// written here has one, PS3.5 7.1.2), padded to even length: UIDs with
/// NUL, text with a space. A value beyond the 16-bit length is cut at a
/// character boundary (never the case for valid values).
fn put(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
    let mut v = value.to_vec();
    if v.len() > 0xFFFE {
        let mut cut = 0xFFFE;
        while cut > 0 && (v[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        v.truncate(cut);
    }
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" { 0 } else { b' ' });
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&u16::try_from(v.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&v);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pacs_core::dicom::parse_part10;
    use pacs_core::Limits;

    fn sample() -> DirPatient {
        let instance = |s: usize, i: usize| DirInstance {
            record_type: "",
            keys: Vec::new(),
            number: if i == 2 { String::new() } else { i.to_string() },
            file_id: vec!["DICOM".into(), format!("SE{s:06}"), format!("IM{i:06}")],
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("1.2.3.{s}.{i}"),
            transfer_syntax_uid: EXPLICIT_VR_LE.into(),
        };
        DirPatient {
            id: "P1".into(),
            name: "Nguyễn^Văn An".into(),
            study: DirStudy {
                uid: "1.2.3".into(),
                date: "20240101".into(),
                time: String::new(),
                description: "CT".into(),
                id: String::new(),
                accession_number: "A1".into(),
                series: (1..=2)
                    .map(|s| DirSeries {
                        uid: format!("1.2.3.{s}"),
                        modality: "CT".into(),
                        number: s.to_string(),
                        instances: (1..=3).map(|i| instance(s, i)).collect(),
                    })
                    .collect(),
            },
        }
    }

    fn ul(ds: &pacs_core::dicom::DataSet, tag: u32) -> u32 {
        ds.u32(tag).unwrap()
    }

    #[test]
    fn offsets_point_at_the_records_they_name() {
        let bytes = encode(&sample(), "2.25.1", "SENPACS", ("20250101", "120000"));
        let header = parse_part10(&bytes, true, &Limits::default()).unwrap();
        assert_eq!(
            header
                .meta
                .media_storage_sop_class_uid
                .trim_end_matches('\0'),
            MEDIA_STORAGE_DIRECTORY
        );
        let root = ul(&header.dataset, 0x0004_1200) as usize;
        // Each offset lands on an Item tag (FFFE,E000).
        let item_at = |o: usize| bytes[o..o + 4] == [0xFE, 0xFF, 0x00, 0xE0];
        assert!(item_at(root));
        // Walk the tree through the offsets: 1 patient, 1 study, 2 series
        // of 3 images each.
        let seq = header.dataset.sequence(0x0004_1220).unwrap();
        assert_eq!(seq.len(), 1 + 1 + 2 + 2 * 3);
        let kinds: Vec<String> = seq.iter().map(|i| i.string(0x0004_1430).unwrap()).collect();
        assert_eq!(kinds[..4], ["PATIENT", "STUDY", "SERIES", "IMAGE"]);
        // Offsets of the written records, in order: recomputed by scanning.
        let mut positions = Vec::new();
        let mut p = root;
        for _ in seq {
            positions.push(p);
            let len = u32::from_le_bytes(bytes[p + 4..p + 8].try_into().unwrap()) as usize;
            assert!(item_at(p));
            p += 8 + len;
        }
        assert_eq!(p, bytes.len());
        let pos = |i: usize| positions[i] as u32;
        assert_eq!(ul(&seq[0], 0x0004_1420), pos(1)); // patient → study
        assert_eq!(ul(&seq[1], 0x0004_1420), pos(2)); // study → series 1
        assert_eq!(ul(&seq[2], 0x0004_1400), pos(6)); // series 1 → series 2
        assert_eq!(ul(&seq[2], 0x0004_1420), pos(3)); // series 1 → image 1
        assert_eq!(ul(&seq[3], 0x0004_1400), pos(4));
        assert_eq!(ul(&seq[5], 0x0004_1400), 0); // last image of series 1
        assert_eq!(ul(&seq[6], 0x0004_1400), 0); // last series
        assert_eq!(ul(&seq[6], 0x0004_1420), pos(7));
        // Filled Type 1 keys, UTF-8 names.
        assert_eq!(seq[1].string(0x0008_0030).unwrap(), "120000");
        assert_eq!(seq[1].string(0x0020_0010).unwrap(), "1");
        assert_eq!(seq[5].string(0x0020_0013).unwrap(), "3");
        assert_eq!(seq[4].string(0x0020_0013).unwrap(), "2");
        assert_eq!(seq[0].string(0x0010_0010).unwrap(), "Nguyễn^Văn An");
        assert_eq!(
            seq[3].strings(0x0004_1500),
            ["DICOM", "SE000001", "IM000001"]
        );
    }
}
